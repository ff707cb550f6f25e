"""supervised package: the supervised continual-learning trainer and its benchmarks.

Importing it registers HAT (:mod:`supervised.hat`) in the :mod:`agscl` registry, so every learner
and listing of methods that imports any ``supervised`` module sees ``hat``."""

from supervised import hat as _hat  # noqa: F401  (registers "hat")
