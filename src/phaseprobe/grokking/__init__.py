"""Grokking as a metastable phase (modular arithmetic, learned token embeddings, AdamW).

* :mod:`~phaseprobe.grokking.spec` -- the spec, named setups (Power et al., Nanda et al.,
  Omnigrok-style, quick) and the embedded default of ``phaseprobe grok``;
* :mod:`~phaseprobe.grokking.phase` -- the (weight decay x init scale x seed) grid as one
  ensemble (units of chunks stored in stretches), phases of every record, the grokking delay;
* :mod:`~phaseprobe.grokking.metastable` -- plateau vs solution geometry, and the warm-started
  weight-decay sweep (hysteresis) with the sweep machinery;
* :mod:`~phaseprobe.grokking.kind` -- :data:`GROK`, the experiment kind ``phaseprobe grok`` runs
  (resumable, any engine, ``--grid``);
* :mod:`~phaseprobe.grokking.run` -- :func:`run_grok` (the command from Python) and the analysis of
  a run folder: tables, figures, report.
"""

from phaseprobe.grokking.phase import (
    PHASES,
    GridUnit,
    GrokContext,
    crossing_step,
    delay_table,
    grid_members,
    grokking_summary,
    phase_label,
    plan_grid_units,
    train_grok_grid,
)
from phaseprobe.grokking.run import GrokResult, analyse_grok, grok_result, load_grok, run_grok
from phaseprobe.grokking.spec import DEFAULT_GROK_SPEC, SETUPS, GrokSpec, load_grok_file, make_grok_spec

__all__ = ["DEFAULT_GROK_SPEC", "PHASES", "SETUPS", "GridUnit", "GrokContext", "GrokResult", "GrokSpec", "analyse_grok",
           "crossing_step", "delay_table", "grid_members", "grok_result", "grokking_summary", "load_grok",
           "load_grok_file", "make_grok_spec", "phase_label", "plan_grid_units", "run_grok", "train_grok_grid"]
