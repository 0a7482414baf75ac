"""How a setting is declared once: a dataclass field whose metadata names its flag, help and checks.

``setting(default, "--population", "help", parse=int, low=2)`` is a ``dataclasses.field`` carrying
everything the command line needs; ``orchestrate.py`` builds its parser from these fields, and
``check_fields`` validates a config from the same metadata, so adding a flag is one edit in one dataclass
and every range check lives in one place. Errors name the flag: ``--population must be >= 2, got 1``.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable, Iterator, Optional, Sequence

from evolve.errors import ConfigError


@dataclass(frozen=True)
class Flag:
    """The command-line side of one setting."""

    flag: str  # "--population"
    help: str
    parse: Callable[[str], Any] = str  # turns the flag's text into the field's type (no range checks)
    choices: Optional[Sequence[str]] = None
    metavar: Optional[str] = None
    low: Optional[float] = None  # smallest allowed value (inclusive unless low_open)
    low_open: bool = False
    high: Optional[float] = None  # largest allowed value (inclusive)
    optional: bool = False  # None is allowed
    whole: bool = False  # whole numbers only (set by itself for parse=int)
    group: str = ""  # the --help section; empty: the dataclass's own


def setting(default: Any = MISSING, flag: str = "", help: str = "", *, factory: Any = MISSING,
            **kwargs: Any) -> Any:
    """A dataclass field declared with its flag (see ``Flag`` for the keywords)."""
    if kwargs.get("parse") is int:
        kwargs.setdefault("whole", True)
    meta = {"flag": Flag(flag, help, **kwargs)} if flag else {}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: Field) -> Optional[Flag]:
    return f.metadata.get("flag")


def flagged_fields(cls: type) -> Iterator[tuple[Field, Flag]]:
    """The fields of a config dataclass that have a flag, in declaration order."""
    for f in fields(cls):
        spec = flag_of(f)
        if spec is not None:
            yield f, spec


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, str) else str(value)


def check_value(spec: Flag, value: Any) -> None:
    """ConfigError naming the flag unless ``value`` fits its choices and bounds (pairs: each half)."""
    if value is None and spec.optional:
        return
    if spec.choices is not None:
        if value not in spec.choices:
            raise ConfigError(f"{spec.flag} must be one of {', '.join(spec.choices)}, got {_show(value)}")
        return
    if spec.low is None and spec.high is None:
        return
    for part in value if isinstance(value, (tuple, list)) else (value,):
        if not _is_number(part) or (spec.whole and int(part) != part):
            kind = "a whole number" if spec.whole else "a number"
            raise ConfigError(f"{spec.flag} must be {kind}, got {_show(value)}")
        if spec.low is not None and (part <= spec.low if spec.low_open else part < spec.low):
            raise ConfigError(f"{spec.flag} must be {'>' if spec.low_open else '>='} {spec.low:g}, "
                              f"got {_show(value)}")
        if spec.high is not None and part > spec.high:
            raise ConfigError(f"{spec.flag} must be <= {spec.high:g}, got {_show(value)}")


def check_fields(obj: Any) -> None:
    """Check every flagged field of a config dataclass instance against its metadata."""
    for f, spec in flagged_fields(type(obj)):
        check_value(spec, getattr(obj, f.name))


def pair(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, Any]]:
    """Parser of START,END (a schedule from the first to the last generation) or one value for both."""

    def parse(text: str) -> tuple[Any, Any]:
        parts = [p.strip() for p in str(text).split(",")]
        try:
            if len(parts) in (1, 2):
                return kind(parts[0]), kind(parts[-1])
        except ValueError:
            pass
        raise ValueError(f"expected START,END such as 2,5 (or one value), got {text!r}")

    parse.__name__ = f"pair of {getattr(kind, '__name__', 'value')}"
    return parse


def vector(kind: Callable[[str], Any], size: int) -> Callable[[str], tuple[Any, ...]]:
    """Parser of exactly ``size`` comma-separated values, such as the four fitness weights."""

    def parse(text: str) -> tuple[Any, ...]:
        parts = [p.strip() for p in str(text).split(",")]
        try:
            if len(parts) == size:
                return tuple(kind(p) for p in parts)
        except ValueError:
            pass
        raise ValueError(f"expected {size} comma-separated numbers, got {text!r}")

    parse.__name__ = f"{size} of {getattr(kind, '__name__', 'value')}"
    return parse
