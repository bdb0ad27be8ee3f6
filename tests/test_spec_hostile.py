"""Hostile feature specs (a spec may come from a model file made by anyone): each is refused with one line that
names the key and says what is allowed, in bounded time and memory, before any file is read."""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np
import pytest

from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.features.root_table.expression import Expression
from cmsdl.features.root_table.read import ReadUnit, compute_chunk
from cmsdl.features.root_table.spec import MAX_COLLECTION_LENGTH, MAX_FEATURES, parse_spec

pytestmark = pytest.mark.timeout(60)

BASE = {"tree": "Events", "files": {"sig": ["s.root"], "bkg": ["b.root"]}, "flat": ["MET_pt"],
        "derived": {"HT": "sum(Jet_pt)"}}
JET = {"fields": {"pt": "Jet_pt"}, "length": 4}


def derived(expression: Any) -> dict[str, Any]:
    return {"derived": {"x": expression}}


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    # (what, change to BASE, the one line expected: a fragment naming the key and what is allowed)
    ("tower of powers hangs", derived("sum(Jet_pt) + 10**10**10"),
     r"data.spec.derived.x: .*the exponent of \*\* must be a number from -64 to 64, got '10 \*\* 10'"),
    ("huge exponent", derived("MET_pt ** 100000"), r"derived.x: .*exponent of \*\* must be a number from -64 to 64"),
    ("exponent from a branch", derived("2 ** MET_pt"), r"derived.x: .*exponent of \*\* must be a number"),
    ("shift asks for 12.5 GB", derived("1 << 10**11"),
     r"derived.x: .*the shift count of << and >> must be a whole number from 0 to 63, got '10 \*\* 11'"),
    ("right shift too far", derived("nJet >> 64"), r"derived.x: .*shift count .* from 0 to 63, got '64'"),
    ("integer beyond 64 bits", derived("MET_pt + 99999999999999999999"), r"derived.x: .*does not fit 64 bits"),
    ("infinite literal", derived("MET_pt * 1e999"), r"derived.x: .*the number inf is not finite"),
    ("100k unary minus", derived("-" * 100_000 + "1"),
     r"derived.x: the expression has 100001 characters; at most 1000 are allowed"),
    ("deep nesting", derived("-" * 200 + "MET_pt"), r"derived.x: .*nests deeper than 32 levels"),
    ("deep parentheses", derived("(" * 300 + "1" + ")" * 300), r"derived.x: .* is not a valid expression"),
    ("function as a value", derived("sum(sum)"), r"derived.x: 'sum\(sum\)': 'sum' is a function; call it"),
    ("too many arguments", derived("max(Jet_pt, 1, 2, 3)"), r"derived.x: .*max\(\) takes 1 or 2 arguments, got 4"),
    ("too few arguments", derived("where(nJet > 2, 1)"), r"derived.x: .*where\(\) takes 3 arguments, got 2"),
    ("keyword argument", derived("max(Jet_pt, pad=1)"), r"derived.x: .*max\(\) takes no keyword arguments"),
    ("dunder name", derived("__import__"), r"derived.x: .*names starting with __ are reserved"),
    ("attribute", derived("Jet_pt.__class__"), r"derived.x: .*uses Attribute, which expressions may not"),
    ("other call", derived("open('f')"), r"derived.x: .*calls open; expressions may call sum, count"),
    ("string constant", derived("'a' * 10"), r"derived.x: .*only numbers may appear as constants"),
    ("bare tuple", derived("(MET_pt, MET_pt)"), r"derived.x: .*a tuple may only index"),
    ("expression not a string", derived(["sum(Jet_pt)"]), r"derived.x: expected an expression"),
    ("null bytes", derived("MET_pt\x00"), r"derived.x: .*is not a valid expression"),
    ("selection", {"selection": "nJet >= 2**99"}, r"data.spec.selection: .*exponent of \*\* must be"),
    ("collection of 10**9 slots", {"collections": {"jet": {**JET, "length": 10**9}}},
     rf"data.spec.collections.jet.length: expected a whole number from 1 to {MAX_COLLECTION_LENGTH}, got 1000000000"),
    ("collection length true", {"collections": {"jet": {**JET, "length": True}}},
     r"collections.jet.length: expected a whole number from 1 to \d+, got True"),
    ("collections too wide together", {"collections": {f"c{i}": {"fields": {f"f{k}": "Jet_pt" for k in range(10)},
                                                                 "length": 1000} for i in range(3)}},
     rf"data.spec: the spec makes 30005 feature columns; at most {MAX_FEATURES} are allowed"),
    ("pad not a number", {"collections": {"jet": {**JET, "pad": "abc"}}},
     r"collections.jet.pad: expected a finite number, got 'abc'"),
    ("pad infinite", {"collections": {"jet": {**JET, "pad": float("inf")}}}, r"collections.jet.pad: expected a finite"),
    ("collections a list", {"collections": [JET]}, r"data.spec.collections: expected a mapping name → ..., got list"),
    ("derived a list", {"derived": ["sum(Jet_pt)"]}, r"data.spec.derived: expected a mapping"),
    ("flat of numbers", {"flat": [1, 2]}, r"data.spec.flat: expected branch names \(strings\), got 1"),
    ("nested alias", {"aliases": {"a": {"b": "c"}}}, r"data.spec.aliases: expected branch names"),
    ("files a number", {"files": {"sig": 5, "bkg": ["b.root"]}}, r"data.spec.files.sig: expected a file, glob or URL"),
    ("classes a number", {"files": ["a.root"], "label": "is_signal", "classes": 5},
     r"data.spec.classes: expected a list of at least two class names, got 5"),
    ("spec a list", None, r"data.spec: expected a mapping"),
]


@pytest.mark.parametrize("change, message", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_spec_is_refused_in_one_line(change: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_spec([BASE] if change is None else {**BASE, **change})
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


ACCEPTED = ["sum(Jet_pt) ** 2", "MET_pt ** -0.5", "2 ** -1 * MET_pt", "(nJet >> 1) & 1", "max(Jet_pt, -1)",
            "where(nJet > 2, sum(Jet_pt), 0)", "first(Jet_pt[Jet_pt > 30])", "Jet_pt[:, 0] if False else MET_pt",
            "-" * 31 + "MET_pt", "9223372036854775807 + nJet"]


@pytest.mark.parametrize("text", ACCEPTED)
def test_ordinary_expressions_still_work(text: str) -> None:
    columns = {"Jet_pt": ak.Array([[40.0, 20.0], [35.0, 31.0, 5.0]]), "MET_pt": np.array([4.0, 9.0]),
               "nJet": np.array([2, 3])}
    value = Expression.parse(text, "data.spec.derived.x").evaluate(columns)
    assert len(np.asarray(ak.to_numpy(value) if isinstance(value, ak.Array) else value).reshape(-1)) in (1, 2)


def test_constants_overflow_to_inf_and_the_reader_names_entry_and_feature() -> None:
    spec = parse_spec({**BASE, "derived": {"big": "MET_pt * 1e300 ** 2"}})
    arrays = {"MET_pt": ak.Array([1.0, 2.0]), "Jet_pt": ak.Array([[1.0], []])}
    with pytest.raises(InputFormatError, match=r"f.root: entry 7: feature 'big' is inf \(expected a finite number\)"):
        compute_chunk(spec, arrays, ReadUnit("f.root", 0, 7, 9))


def test_evaluation_failure_is_one_line() -> None:
    spec = parse_spec({**BASE, "derived": {"step": "sum(Jet_pt[::0])"}})
    arrays = {"MET_pt": ak.Array([1.0, 2.0]), "Jet_pt": ak.Array([[1.0], []])}
    with pytest.raises(ConfigError, match=r"data.spec.derived.step: 'sum\(Jet_pt\[::0\]\)' cannot be evaluated on "
                                          r"these branches \(ValueError: slice step cannot be zero\)"):
        compute_chunk(spec, arrays, ReadUnit("f.root", 0, 0, 2))
