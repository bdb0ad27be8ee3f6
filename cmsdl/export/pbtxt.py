"""Protocol-buffer text format (the `.pbtxt` of Triton's config files) ↔ plain Python dicts, without a schema.

    name: "top"                       # comment
    max_batch_size: 64
    input [ { name: "features" data_type: TYPE_FP32 dims: [ 45 ] } ]
    dynamic_batching { max_queue_delay_microseconds: 100 }

parses to ``{"name": "top", "max_batch_size": 64, "input": [{"name": "features", "data_type": "TYPE_FP32",
"dims": [45]}], "dynamic_batching": {"max_queue_delay_microseconds": 100}}``. Strings (adjacent ones joined, C
escapes), integers, floats, ``true``/``false`` and enum names (as strings) are the scalars; a message is
``{...}`` or ``<...>``, with or without ``:`` before it; repeated fields are written as a ``[...]`` list or as the
field repeated. Without the schema a field given once cannot be told from a repeated one, so the caller names
its repeated fields (``repeated``: those always come back as lists). Errors are PbtxtError with the line and column.
Imports the standard library only.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32
TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n\f\v]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?|inf(?:inity)?\b|nan\b))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}\[\]<>:,;])
""", re.VERBOSE)
CLOSING = {"{": "}", "<": ">"}


class PbtxtError(ValueError):
    """Text that is not valid protocol-buffer text format; the message starts with `line L, column C:`."""


@dataclass(frozen=True)
class Token:
    kind: str  # string, number, ident, punct, end
    text: str
    line: int
    column: int


def tokenize(text: str) -> list[Token]:
    """The tokens of `text`, comments and white space dropped, ending with an `end` token."""
    tokens, position, line, line_start = [], 0, 1, 0
    while position < len(text):
        match = TOKEN.match(text, position)
        column = position - line_start + 1
        if match is None:
            raise PbtxtError(f"line {line}, column {column}: unexpected character {text[position]!r}")
        if match.lastgroup != "space":
            tokens.append(Token(match.lastgroup or "", match.group(), line, column))
        newlines = match.group().count("\n")
        if newlines:
            line += newlines
            line_start = match.start() + match.group().rindex("\n") + 1
        position = match.end()
    tokens.append(Token("end", "", line, position - line_start + 1))
    return tokens


class Parser:
    """Recursive descent over the tokens of one text-format message."""

    def __init__(self, text: str, repeated: Collection[str]) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.repeated = set(repeated)

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def fail(self, expected: str) -> PbtxtError:
        token = self.token
        found = "the end of the file" if token.kind == "end" else repr(token.text[:40])
        return PbtxtError(f"line {token.line}, column {token.column}: expected {expected}, found {found}")

    def take(self, text: str) -> bool:
        if self.token.kind == "punct" and self.token.text == text:
            self.index += 1
            return True
        return False

    def message(self, closing: str, depth: int) -> dict[str, Any]:
        """Fields up to `closing` ("" for the end of the text)."""
        if depth > MAX_DEPTH:
            token = self.token
            raise PbtxtError(f"line {token.line}, column {token.column}: messages nested more than {MAX_DEPTH} deep")
        fields: dict[str, list[Any]] = {}
        listed: set[str] = set()
        while not (self.take(closing) if closing else self.token.kind == "end"):
            if self.token.kind != "ident":
                raise self.fail(f"a field name or {closing!r}" if closing else "a field name")
            name = self.token.text
            self.index += 1
            values, is_list = self.field_value(depth)
            fields.setdefault(name, []).extend(values)
            if is_list:
                listed.add(name)
            if not self.take(","):
                self.take(";")
        return {name: values if name in listed or name in self.repeated or len(values) > 1 else values[0]
                for name, values in fields.items()}

    def field_value(self, depth: int) -> tuple[list[Any], bool]:
        """After a field name: `: scalar`, or a message or a `[items]` list with an optional `:`; (values, was a
        list)."""
        colon = self.take(":")
        if self.take("["):
            items: list[Any] = []
            while not self.take("]"):
                if items and not self.take(","):
                    raise self.fail("',' or ']'")
                items.append(self.item(depth))
            return items, True
        if self.token.kind == "punct" and self.token.text in CLOSING:
            return [self.item(depth)], False
        if not colon:
            raise self.fail("':', '{' or '['")
        return [self.scalar()], False

    def item(self, depth: int) -> Any:
        """A message in braces (or angle brackets), or a scalar."""
        for opening, closing in CLOSING.items():
            if self.take(opening):
                return self.message(closing, depth + 1)
        return self.scalar()

    def scalar(self) -> Any:
        token = self.token
        if token.kind == "string":
            parts = []
            while self.token.kind == "string":
                parts.append(unquote(self.token))
                self.index += 1
            return "".join(parts)
        self.index += 1
        if token.kind == "number":
            return number(token.text)
        if token.kind == "ident":
            return {"true": True, "True": True, "false": False, "False": False}.get(token.text, token.text)
        self.index -= 1
        raise self.fail("a value (string, number or name)")


def unquote(token: Token) -> str:
    """A quoted string with its C escapes resolved (those of the text format only)."""
    escapes = re.findall(r"\\(?:[0-7]{1,3}|x[0-9a-fA-F]{1,2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|(.))", token.text)
    bad = [e for e in escapes if e and e not in "abfnrtv\\'\"?"]
    if bad:
        raise PbtxtError(f"line {token.line}, column {token.column}: invalid escape \\{bad[0]} in {token.text[:40]}")
    return ast.literal_eval(re.sub(r"\\(.)", lambda m: "?" if m.group(1) == "?" else m.group(), token.text))


def number(text: str) -> int | float:
    """An integer (decimal or 0x hexadecimal) or a float (with an optional f suffix, inf, infinity, nan)."""
    plain = text.lower()
    if re.fullmatch(r"-?(0x[0-9a-f]+|\d+)", plain):
        return int(plain, 16 if "x" in plain else 10)
    return float(plain if plain.lstrip("-") in ("inf", "infinity", "nan") else plain.removesuffix("f"))


def parse(text: str, repeated: Collection[str] = ()) -> dict[str, Any]:
    """One message in text format as a dict; the fields named in `repeated` are always lists."""
    return Parser(text, repeated).message("", 0)


def dumps(message: dict[str, Any], indent: str = "") -> str:
    """A dict as text format: nested dicts are messages, lists repeated fields, strs quoted unless `Enum` names."""
    lines = []
    for name, value in message.items():
        if isinstance(value, list):
            if all(isinstance(item, dict) for item in value) and value:
                inner = ",\n".join(f"{indent}  {{\n{dumps(item, indent + '    ')}{indent}  }}" for item in value)
                lines.append(f"{indent}{name} [\n{inner}\n{indent}]\n")
            else:
                lines.append(f"{indent}{name}: [ {', '.join(map(scalar_text, value))} ]\n")
        elif isinstance(value, dict):
            lines.append(f"{indent}{name} {{\n{dumps(value, indent + '  ')}{indent}}}\n")
        else:
            lines.append(f"{indent}{name}: {scalar_text(value)}\n")
    return "".join(lines)


class Enum(str):
    """A string written bare (an enum value such as TYPE_FP32), not quoted."""


def scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return repr(value)
