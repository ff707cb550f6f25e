"""What every output of the project shares: atomic file writes, software versions, the machine.

One module for the agent (``agents/``), the supervised trainer (``supervised/``), the sweep and
the ``bench/`` scripts, so a results file, a checkpoint, a table and a figure are all written
the same way (never seen half-written) and every record says what produced it and where.
Only the standard library at import; torch is imported where a function needs it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any, BinaryIO, Callable

TEMP_PATTERN = re.compile(r"\.tmp\d+$")
ROOT = Path(__file__).resolve().parents[1]


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None], temp_base: str | None = None) -> None:
    """Write ``path`` through ``write(file)`` so that it is never seen half-written: a temporary
    ``<path>.tmp<pid>`` (``<temp_base>.tmp<pid>`` when given, in the same directory: for readers
    that would pick up a file named like ``path``, e.g. TensorBoard's event files) is written,
    flushed and fsynced, renamed over ``path`` with ``os.replace``, and the directory is fsynced
    so the rename survives a power cut. Mode 0644 (not mkstemp's 0600). Missing parent
    directories are created (a report into ``runs/bench/`` of a fresh clone)."""
    path = str(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{temp_base or path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputError(ValueError):
    """An output that cannot be written (a file in the way, no permission, a read-only file
    system): one line naming the path and the reason; every entry point reports it as bad input
    (exit code 2), before any work starts."""


def output_dir_problem(path: str | Path) -> str | None:
    """Why the directory ``path`` could not be created or written into, or None when it can;
    nothing is created. Its nearest existing part (itself or a parent) must be a directory
    in which this process may create files."""
    existing = os.path.abspath(str(path))
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a directory" if os.path.isfile(existing) else f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        except (AttributeError, OSError):
            read_only = False
        return f"{existing} is on a read-only file system" if read_only else f"{existing} is not writable (permission denied)"
    return None


def check_output_dir(path: str | Path, what: str) -> None:
    """:class:`OutputError` ``"<what> <path> cannot be written: <reason>"`` when the directory
    ``path`` cannot be created or written into (:func:`output_dir_problem`); creates nothing."""
    problem = output_dir_problem(path)
    if problem is not None:
        raise OutputError(f"{what} {path} cannot be written: {problem}")


def check_output_file(path: str | Path, what: str) -> None:
    """:class:`OutputError` when the file ``path`` cannot be written: it is a directory, or its
    directory cannot be created or written into; creates nothing."""
    if os.path.isdir(str(path)):
        raise OutputError(f"{what} {path} cannot be written: it is a directory (give a file name)")
    problem = output_dir_problem(os.path.dirname(os.path.abspath(str(path))))
    if problem is not None:
        raise OutputError(f"{what} {path} cannot be written: {problem}")


def first_line(exc: BaseException, limit: int = 120) -> str:
    """An exception as one short line: its class and the first line of its message (the class
    alone when the message is empty, as for an ``EOFError`` of an empty file)."""
    lines = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {lines[0][:limit]}" if lines else exc.__class__.__name__


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """``data`` to ``path`` atomically (:func:`write_atomic`)."""
    write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    """``text`` (UTF-8) to ``path`` atomically (:func:`write_atomic`)."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """``obj`` as strict JSON (no NaN) to ``path`` atomically (:func:`write_atomic`)."""
    write_bytes_atomic(path, json.dumps(obj, indent=1, allow_nan=False).encode())


def save_figure_atomic(fig: Any, path: str | Path, dpi: int = 110, **savefig: Any) -> None:
    """A matplotlib figure as PNG to ``path`` atomically (:func:`write_atomic`)."""
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi, **savefig))


def torch_save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`write_atomic` (never a half-written checkpoint)."""
    import torch

    write_atomic(path, lambda f: torch.save(obj, f))


def remove_stale_temps(*directories: str | Path) -> list[str]:
    """Delete leftovers ``*.tmp<pid>`` of writes that a kill interrupted; returns what was removed."""
    removed = []
    for directory in map(str, directories):
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if TEMP_PATTERN.search(name):
                    os.unlink(os.path.join(directory, name))
                    removed.append(os.path.join(directory, name))
    return removed


def git_commit() -> str:
    """The checkout's commit, ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001 - no git here
        return "unknown"


def versions() -> dict[str, str]:
    """Python, platform, the project's version and commit, and every library whose version
    changes a number (``unavailable`` for one that is not installed)."""
    from importlib.metadata import version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name, dist in (("torch", "torch"), ("numpy", "numpy"), ("tyro", "tyro"), ("envpool", "envpool"),
                       ("ale_py", "ale-py"), ("gymnasium", "gymnasium"), ("minatar", "MinAtar"), ("agscl-atari", "agscl-atari")):
        try:
            out[name] = version(dist)
        except Exception:  # noqa: BLE001 - not installed
            out[name] = "unavailable"
    out["git_commit"] = git_commit()
    return out


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux), empty elsewhere."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


#: The CPU flags that change a benchmark's ratios (vector widths, bf16/fp16 and matrix units).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile", "neon", "asimd", "sve")


def machine() -> dict[str, Any]:
    """Where a benchmark ran: CPU model, its SIMD flags (:data:`SIMD_FLAGS` present), the cores
    this process may use, torch's thread count and the GPU, if any. Benchmarks record it next to
    their ratios, because machines of the same name differ (AVX-512 BF16 on one, AVX2 only on
    another, two vCPUs that may share one physical core)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    out: dict[str, Any] = {
        "cpu_model": info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in SIMD_FLAGS if f in flags],
        "logical_cpus": os.cpu_count() or 0,
        "usable_cpus": usable,
        "threads_per_core": _threads_per_core(),
        "torch_threads": None,
        "gpu": None,
    }
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out


def _threads_per_core() -> int | None:
    """Hardware threads per physical core from sysfs (2: two vCPUs may be one core), None if unknown."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text().strip()
    except OSError:
        return None
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi) - int(lo) + 1 if hi else 1
    return count


def machine_line(info: dict[str, Any] | None = None) -> str:
    """:func:`machine` as one printable line."""
    m = machine() if info is None else info
    flags = " ".join(m["cpu_flags"]) or "none of the listed SIMD flags"
    return (f"machine: {m['cpu_model']}; flags {flags}; {m['usable_cpus']}/{m['logical_cpus']} CPUs usable, "
            f"{m['threads_per_core'] or '?'} threads per core; torch threads {m['torch_threads']}; gpu {m['gpu'] or 'none'}")
