"""Start a trainer module as ``__main__`` in a process that dies with its launcher.

``python -m sweep._child MODULE ARGS...``: asks Linux to SIGKILL this process when the process
that started it dies (``PR_SET_PDEATHSIG``), so a killed sweep or Ray worker never leaves a
trainer writing into a run directory that a re-run is about to resume. The trainer itself runs
unchanged, exactly as ``python -m MODULE ARGS...`` would run it.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

PARENT_ENV = "AGSCL_SWEEP_PARENT"


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    expected = os.environ.get(PARENT_ENV)
    if expected is not None and os.getppid() != int(expected):
        sys.exit(f"sweep: launcher {expected} died before the trainer started")


if __name__ == "__main__":
    _die_with_parent()
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
