"""Reporting: what a finished (or running) run's files say, never how the run was trained.

``results.py`` (the ``results.json`` schema and the RL metrics), ``metrics.py`` (metrics of a
task-by-task score matrix, shared with the supervised benchmarks), ``aggregate.py`` (seeds x
methods with intervals), ``normalize.py`` (normalized returns into TensorBoard after the fact),
``plot_continual.py`` (Figure 7), ``drift.py`` (the trunk's drift per game, from checkpoints),
``tensorboard_layout.py`` and ``tb_events.py`` (the TensorBoard pages and event writing).

The trainers (``agents/``, ``supervised/``) import this package to write their results; it
imports neither them nor the network, the environments or the methods (``tests/test_layout.py``
enforces it): whatever a report needs from a trainer is passed in.
"""
