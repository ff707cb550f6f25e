"""Command lines of the project's entry points: tyro's parse errors as one line.

tyro reports a bad flag (an unknown method, ``--num-envs abc``, an unknown option) in a box of
five or more lines and exits; every other bad input of the project is one line on stderr and
exit code 2. :func:`parse` runs ``tyro.cli`` and turns its box into :class:`CliError` (a
``ValueError``) carrying the box's message as one line, which the entry point prints as its
other errors. ``--help`` is untouched. Only the standard library at import.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from typing import Any, Sequence, TypeVar

T = TypeVar("T")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOX = "╭╮╰╯│─┃━┏┓┗┛"


class CliError(ValueError):
    """A command line tyro rejected; the message is tyro's, on one line."""


def box_message(text: str) -> str:
    """The message of a tyro error box as one line: the lines before its first rule (the
    title bar and the help pointer dropped), box characters stripped, spaces collapsed."""
    lines = [_ANSI.sub("", line) for line in text.splitlines()]
    body: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("╭", "╰")):
            continue
        inner = stripped.strip(_BOX + " ")
        if stripped and not inner:  # a rule: the message is above it
            if body:
                break
            continue
        if inner:
            body.append(inner)
    message = " ".join(" ".join(body).split())
    return message or " ".join(" ".join(_ANSI.sub("", text).split()).strip(_BOX).split()) or "invalid command line"


def parse(cls: type[T], args: Sequence[str] | None = None, **kwargs: Any) -> T:
    """``tyro.cli(cls, args=args, **kwargs)``; a rejected command line raises :class:`CliError`
    (one line) instead of printing tyro's box and exiting. What tyro prints to stderr on success
    (its warnings) is passed on."""
    import tyro

    argv = list(sys.argv[1:] if args is None else args)
    if "-h" in argv or "--help" in argv:  # the help page as tyro prints it
        return tyro.cli(cls, args=argv, **kwargs)
    captured = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100000"  # no wrapping inside the box: its lines join into the message unbroken
    try:
        with contextlib.redirect_stderr(captured):
            result = tyro.cli(cls, args=argv, **kwargs)
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        raise CliError(box_message(captured.getvalue())) from None
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    if captured.getvalue():
        sys.stderr.write(captured.getvalue())
    return result
