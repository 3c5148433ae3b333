"""Noise-driven escape from a metastable phase (``phaseprobe escape``): first-passage times of a
deep linear network trapped in its lower-rank phase, under Langevin noise at a grid of
temperatures, and the Arrhenius fit ``ln tau = dF / T + c`` against the closed-form barrier.

:mod:`~phaseprobe.escape.spec` (the spec), :mod:`~phaseprobe.escape.theory` (closed forms),
:mod:`~phaseprobe.escape.kind` (the experiment kind), :mod:`~phaseprobe.escape.analysis`
(censored maximum-likelihood fit), :mod:`~phaseprobe.escape.figures`.
"""
