"""Grokking as a metastable phase (modular arithmetic, learned token embeddings, AdamW).

* :mod:`~phaseprobe.grokking.spec` -- the spec, named setups (Power et al., Nanda et al.,
  Omnigrok-style, quick) and the embedded default of ``phaseprobe grok``;
* :mod:`~phaseprobe.grokking.phase` -- the (weight decay x init scale x seed) grid as one
  ensemble, phases of every record, the grokking delay;
* :mod:`~phaseprobe.grokking.metastable` -- plateau vs solution geometry, and the warm-started
  weight-decay sweep (hysteresis) with the sweep machinery;
* :mod:`~phaseprobe.grokking.run` -- :func:`run_grok`: everything into one folder (Parquet,
  figures, report).
"""

from phaseprobe.grokking.phase import (
    PHASES,
    GrokContext,
    crossing_step,
    delay_table,
    grid_members,
    grokking_summary,
    phase_label,
    run_grid,
)
from phaseprobe.grokking.run import GrokResult, run_grok
from phaseprobe.grokking.spec import DEFAULT_SPEC, SETUPS, GrokSpec, load_grok_file, make_grok_spec

__all__ = ["DEFAULT_SPEC", "PHASES", "SETUPS", "GrokContext", "GrokResult", "GrokSpec", "crossing_step",
           "delay_table", "grid_members", "grokking_summary", "load_grok_file", "make_grok_spec", "phase_label",
           "run_grid", "run_grok"]
