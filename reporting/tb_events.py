"""TensorBoard events written through torch's public ``SummaryWriter``: the one place that does it.

Two users: the agent's :class:`agents.lean.EpisodeLog` (several scalars of one finished
episode in one event of the run's own writer) and :mod:`reporting.normalize` (the normalized
returns and Figure 7, written after the fact as an event file of a fixed name).

- :func:`add_scalars` writes several scalars at one step as one event: the same tags, values and
  step as one ``add_scalar`` per value, in fewer records;
- :func:`add_png` puts an already encoded PNG into the Images tab as it is (``add_image`` would
  decode and re-encode it: not the same bytes as the file beside it);
- :func:`write_event_file` writes a whole event file at a fixed path, replaced atomically, so
  writing it again replaces its points instead of adding them twice. A ``SummaryWriter`` names
  its files by time, host and process, so it writes into a temporary directory outside the log
  directory (a directory with an event file inside the log directory would show up in an open
  TensorBoard as a run of its own) and the bytes are then written over the fixed path through
  :func:`common.runio.write_atomic`, under a temporary name TensorBoard does not read.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any, Callable, Iterable

from common.runio import write_atomic


def add_scalars(writer: Any, values: Iterable[tuple[str, float]], step: int, walltime: float | None = None) -> None:
    """One event at ``step`` holding every ``(tag, value)`` of ``values`` as a scalar (what
    ``writer.add_scalar`` writes as one event per value); nothing when ``values`` is empty."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard.summary import scalar

    summary = Summary(value=[v for tag, value in values for v in scalar(tag, float(value)).value])
    if summary.value:
        writer.file_writer.add_summary(summary, step, walltime)


def add_png(writer: Any, tag: str, png: bytes, step: int = 0, walltime: float | None = None) -> None:
    """The PNG image ``png`` (encoded bytes) in the Images tab under ``tag``, byte for byte."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
        channels = len(image.getbands())
    proto = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=proto)]), step, walltime)


def write_event_file(path: str, fill: Callable[[Any], None]) -> None:
    """Write one TensorBoard event file at ``path`` holding what ``fill(writer)`` writes with a
    fresh ``SummaryWriter``; atomic (see the module docstring), replacing any file at ``path``."""
    from torch.utils.tensorboard import SummaryWriter

    with tempfile.TemporaryDirectory(prefix="tb_events") as tmp:
        with SummaryWriter(tmp) as writer:
            fill(writer)
        (name,) = os.listdir(tmp)
        with open(os.path.join(tmp, name), "rb") as f:
            data = f.read()
    directory = os.path.dirname(os.path.abspath(path))
    write_atomic(path, lambda f: f.write(data), temp_base=os.path.join(directory, ".tb_events"))
