"""Typed reads of ``bundle.json`` values: each one names the key and the value it expects.

A ``Section`` wraps one JSON object at a dotted path (``postprocess.binarize``); its getters
return the value in the expected type or raise ``BundleError`` with the path, what was found and
what is expected, so that a hand-edited bundle gets one clear line instead of a traceback.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import BundleError

_MISSING = object()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Section:
    """One JSON object of bundle.json, read with typed getters."""

    def __init__(self, raw: Any, path: str, where: str, *, required: bool = False) -> None:
        self.path = path
        self.where = where
        if raw is None and not required:
            raw = {}
        if not isinstance(raw, dict):
            raise BundleError(f"{where}: '{path}' must be a JSON object, got {_shown(raw)}")
        self.raw = raw

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, expected: str, value: Any = _MISSING) -> BundleError:
        got = "it is missing" if value is _MISSING else f"got {_shown(value)}"
        return BundleError(f"{self.where}: '{self.key(name)}' must be {expected} ({got})")

    def section(self, name: str, *, required: bool = False) -> Section:
        if required and name not in self.raw:
            raise self.fail(name, "a JSON object")
        return Section(self.raw.get(name), self.key(name), self.where, required=required)

    def _get(self, name: str, default: Any, expected: str) -> Any:
        if name not in self.raw:
            if default is _MISSING:
                raise self.fail(name, expected)
            return default
        return self.raw[name]

    def integer(self, name: str, default: Any = _MISSING, *, minimum: int | None = None,
                maximum: int | None = None, nullable: bool = False) -> int | None:
        expected = _range_words("an integer", minimum, maximum, nullable)
        v = self._get(name, default, expected)
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise self.fail(name, expected, v)
        if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
            raise self.fail(name, expected, v)
        return int(v)

    def number(self, name: str, default: Any = _MISSING, *, minimum: float | None = None,
               maximum: float | None = None, above: float | None = None, below: float | None = None,
               nullable: bool = False) -> float | None:
        expected = _range_words("a finite number", minimum, maximum, nullable, above, below)
        v = self._get(name, default, expected)
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(name, expected, v)
        if ((minimum is not None and v < minimum) or (maximum is not None and v > maximum)
                or (above is not None and v <= above) or (below is not None and v >= below)):
            raise self.fail(name, expected, v)
        return float(v)

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        v = self._get(name, default, "true or false")
        if not isinstance(v, bool):
            raise self.fail(name, "true or false", v)
        return v

    def text(self, name: str, default: Any = _MISSING, *, nullable: bool = False,
             choices: tuple[str, ...] | None = None) -> str | None:
        expected = ("one of " + ", ".join(repr(c) for c in choices)) if choices else "a string"
        if nullable:
            expected += " or null"
        v = self._get(name, default, expected)
        if v is None and nullable:
            return None
        if not isinstance(v, str) or (choices is not None and v not in choices):
            raise self.fail(name, expected, v)
        return v

    def numbers(self, name: str, length: int, default: Any = _MISSING, *, above: float | None = None,
                nullable: bool = False) -> tuple[float, ...] | None:
        words = f"a list of {length} finite numbers" + (f" > {above:g}" if above is not None else "")
        ok = lambda x: (not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)  # noqa: E731
                        and (above is None or x > above))
        v = self._list(name, length, default, words, ok, nullable)
        return None if v is None else tuple(float(x) for x in v)

    def integers(self, name: str, length: int, default: Any = _MISSING, *, minimum: int | None = None,
                 nullable: bool = False) -> tuple[int, ...] | None:
        words = f"a list of {length} integers" + (f" >= {minimum}" if minimum is not None else "")
        ok = lambda x: (not isinstance(x, bool) and isinstance(x, int)  # noqa: E731
                        and (minimum is None or x >= minimum))
        v = self._list(name, length, default, words, ok, nullable)
        return None if v is None else tuple(int(x) for x in v)

    def _list(self, name: str, length: int, default: Any, words: str, ok, nullable: bool) -> list | None:
        expected = words + (" or null" if nullable else "")
        v = self._get(name, default, expected)
        if v is None and nullable:
            return None
        if not isinstance(v, (list, tuple)) or len(v) != length or not all(ok(x) for x in v):
            raise self.fail(name, expected, v)
        return list(v)

    def relative_path(self, name: str, default: Any = _MISSING) -> str:
        """A path inside the bundle: relative, forward slashes, no '..' component."""
        expected = "a relative path inside the bundle"
        v = self._get(name, default, expected)
        if not is_inside_path(v):
            raise self.fail(name, expected, v)
        return v


def is_inside_path(rel: Any) -> bool:
    """A non-empty relative path without '..' components, absolute roots or drive letters."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return False
    return all(part not in ("", "..") for part in rel.split("/"))


def _range_words(kind: str, minimum, maximum, nullable: bool, above=None, below=None) -> str:
    parts = [kind]
    if minimum is not None and maximum is not None:
        parts.append(f"from {minimum:g} to {maximum:g}")
    elif minimum is not None:
        parts.append(f">= {minimum:g}")
    elif maximum is not None:
        parts.append(f"<= {maximum:g}")
    if above is not None:
        parts.append(f"> {above:g}")
    if below is not None:
        parts.append(f"< {below:g}")
    text = " ".join(parts)
    return text + " or null" if nullable else text
