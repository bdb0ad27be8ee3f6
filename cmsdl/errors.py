"""User-facing errors: one line that names the file or field, what was found and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CmsdlError(Exception):
    """An error caused by user input or configuration; the CLI prints it as one line, without a traceback."""


class InputFormatError(CmsdlError, ValueError):
    """An input file does not follow its documented format."""


class ConfigError(CmsdlError, ValueError):
    """A configuration value is missing or out of range."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The choices closest to `name`, best first, for 'did you mean' hints."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
