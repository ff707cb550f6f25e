"""Sweeps: a grid of methods x seeds x settings of either trainer, on Ray or in sequence.

``python -m sweep --help``; the pieces: :mod:`sweep.spec` (what a sweep is),
:mod:`sweep.launch` (one trial: skip, resume, retry), :mod:`sweep.engine` (Ray or sequential),
:mod:`sweep.aggregate` (tables), :mod:`sweep.search` (Ray Tune calibration).
"""
