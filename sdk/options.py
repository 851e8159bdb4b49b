"""Checked command-line values: argparse ``type=`` factories and the parser every command uses.

Standard library only (command definitions import it on devices without numpy). A bad value is
refused while the arguments are parsed, before any work starts, with one line that names the
option, what it got and what it needs; ``OneLineParser`` prints argparse's own errors the same
way (``robis-edge inspect: error: ...``) and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr and exit status 2 (no usage dump);
    sub-parsers made by ``add_subparsers`` inherit it."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see {self.prog} --help)" if "--help" not in message else ""
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


def _words(minimum: float | None, maximum: float | None, above: float | None, below: float | None) -> str:
    parts = []
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if above is not None:
        parts.append(f"> {above:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    if below is not None:
        parts.append(f"< {below:g}")
    return " and ".join(parts)


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """``type=`` for an integer within [minimum, maximum]."""
    bounds = _words(minimum, maximum, None, None)
    kind = "an integer" + (f" {bounds}" if bounds else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def number(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None,
           below: float | None = None) -> Callable[[str], float]:
    """``type=`` for a finite number within the given bounds (``above``/``below`` are exclusive)."""
    bounds = _words(minimum, maximum, above, below)
    kind = "a finite number" + (f" {bounds}" if bounds else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if (not math.isfinite(value) or (minimum is not None and value < minimum)
                or (maximum is not None and value > maximum) or (above is not None and value <= above)
                or (below is not None and value >= below)):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = integer(minimum=1)
non_negative_int = integer(minimum=0)
port = integer(minimum=0, maximum=65535)
positive_float = number(above=0.0)
non_negative_float = number(minimum=0.0)
fraction = number(minimum=0.0, maximum=1.0)
overlap = number(minimum=0.0, below=1.0)
map_threshold = number(minimum=0.0, maximum=255.0)
mask_scale = number(minimum=0.01, maximum=1.0)  # 1.0 = full frame; never more, never a dot


def existing_dir(text: str) -> Path:
    """``type=`` for a folder that must exist."""
    p = Path(text)
    if p.is_dir():
        return p
    if p.exists():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    raise argparse.ArgumentTypeError(f"no such folder: {text}")


def existing_file(text: str) -> Path:
    """``type=`` for a file that must exist (a folder is refused)."""
    return named_file("file")(text)


def named_file(noun: str) -> Callable[[str], Path]:
    """``type=`` for an existing file, named in messages (``no such checkpoint file: X``)."""

    def parse(text: str) -> Path:
        p = Path(text)
        if p.is_file():
            return p
        if p.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder, not a {noun}")
        raise argparse.ArgumentTypeError(f"no such {noun}: {text}")

    parse.__name__ = noun
    return parse


def output_dir(text: str) -> Path:
    """``type=`` for a folder to write into: it may exist as a folder or not yet, never as a file;
    its nearest existing parent must be a folder."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder; give a folder to write into")
    parent = next((a for a in p.absolute().parents if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, so no folder can be made under it")
    return p


def output_file(text: str) -> Path:
    """``type=`` for a file to write: not an existing folder, its parent not a file."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name to write")
    parent = next((a for a in p.absolute().parents if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, so nothing can be written under it")
    return p


def print_error(command: str, message: str) -> None:
    """The one error line of a command: ``robis-edge COMMAND: error: MESSAGE``."""
    line = " ".join(str(message).split())  # one line, whatever the message held
    print(f"robis-edge {command}: error: {line}", file=sys.stderr, flush=True)
