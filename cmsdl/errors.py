"""User-facing errors: one line that names the file or field, what was found and what was expected."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SHOW_BAD = 10  # skipped records listed by name in a report; the rest are counted
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong, _SHORT.maxlevel = 200, 60, 40, 3


class CmsdlError(Exception):
    """An error caused by user input or configuration; the CLI prints it as one line, without a traceback."""


class InputFormatError(CmsdlError, ValueError):
    """An input file does not follow its documented format."""


class ConfigError(CmsdlError, ValueError):
    """A configuration value is missing or out of range."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The choices closest to `name`, best first, for 'did you mean' hints."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


@dataclass(frozen=True)
class BadRecord:
    """A skipped input record: the 1-based line it starts on and why it was skipped (naming the field)."""

    line: int
    reason: str


def describe_bad_records(source: str, bad: Sequence[BadRecord], show: int = SHOW_BAD) -> str:
    """One line: how many records of `source` were skipped, with the first few line numbers and reasons."""
    listed = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:show])
    more = f"; ... {len(bad) - show} more" if len(bad) > show else ""
    return f"{source}: skipped {len(bad)} bad records ({listed}{more})"


def shown(value: object) -> str:
    """A short repr of a user's value for an error line: long texts, numbers and deep nesting are abbreviated."""
    try:
        return _SHORT.repr(value)
    except ValueError:  # an integer beyond Python's digit limit for conversion to text
        return f"<{type(value).__name__} too long to show>"
