"""The feature spec: which ROOT files, tree and branches make a table of model features, as a config gives it.

Example (configs/data/root_table.yaml holds the NanoAOD version with every key explained)::

    tree: Events
    files: {ttbar: [data/top/ttbar_*.root], qcd: ["root://eos.example//store/qcd_*.root"]}   # class → files
    flat: [MET_pt, PV_npvs]                       # one value per event (a list, or {column: branch})
    collections:                                  # jagged branches → fixed-length columns + multiplicity
      jet: {fields: {pt: Jet_pt, eta: Jet_eta, btag: Jet_btagDeepFlavB}, sort_by: pt, length: 6, pad: 0.0}
    derived: {HT: sum(Jet_pt), n_btag: "count(Jet_btagDeepFlavB > 0.3)"}
    selection: nJet >= 4
    weight: genWeight                             # optional; each class is normalised to the same total
    aliases: {}                                   # identifier → branch name, for names such as "Jet.PT"

Columns, in this order: flat, derived, then per collection `<name>_n` and `<name><i>_<field>` for i = 1..length
(element-major: jet1_pt, jet1_eta, ..., jet2_pt, ...). Instead of one class per file list, `files` may be a plain
list with `label` an expression giving the class index and `classes` the class names.

Expressions (derived, selection, weight, label) are checked and bounded by cmsdl/features/root_table/expression.py (a spec
read back from a model file can run no other code, nor hang or exhaust memory). A collection has at most
MAX_COLLECTION_LENGTH slots and a spec at most MAX_FEATURES columns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmsdl.errors import ConfigError, closest, shown
from cmsdl.features.root_table.expression import Expression

MAX_COLLECTION_LENGTH = 1024
MAX_FEATURES = 20_000


@dataclass(frozen=True)
class Collection:
    """A jagged collection (e.g. jets) turned into `length` fixed slots of `fields`, sorted by one field."""

    name: str
    fields: dict[str, str]
    length: int
    sort_by: str | None = None
    pad: float = 0.0

    @property
    def count_column(self) -> str:
        return f"{self.name}_n"

    def slot_columns(self) -> list[str]:
        return [f"{self.name}{i + 1}_{f}" for i in range(self.length) for f in self.fields]


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that turns ROOT files into (features, label, weight) rows; see the module docstring."""

    tree: str
    class_names: tuple[str, ...]
    files: dict[str, tuple[str, ...]]
    flat: dict[str, str]
    derived: dict[str, Expression]
    collections: tuple[Collection, ...]
    selection: Expression | None
    weight: Expression | None
    label: Expression | None
    aliases: dict[str, str]
    raw: dict[str, Any] = field(compare=False, repr=False, default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        names = [*self.flat, *self.derived]
        for c in self.collections:
            names += [c.count_column, *c.slot_columns()]
        return names

    def branch(self, name: str) -> str:
        """The branch behind an identifier (an alias or the branch's own name)."""
        return self.aliases.get(name, name)

    def expressions(self) -> list[Expression]:
        return [e for e in (*self.derived.values(), self.selection, self.weight, self.label) if e is not None]

    def branches(self) -> list[str]:
        """Every branch the spec reads, each once."""
        names = [*self.flat.values(), *(b for c in self.collections for b in c.fields.values())]
        names += [self.branch(n) for e in self.expressions() for n in e.names]
        return list(dict.fromkeys(names))

    def set_layout(self) -> dict[str, int] | None:
        """Where the first collection's slots are among the features (for permutation-invariant networks)."""
        if not self.collections:
            return None
        names = self.feature_names
        c = self.collections[0]
        return {"count_index": names.index(c.count_column), "start": names.index(c.count_column) + 1,
                "length": c.length, "fields": len(c.fields)}

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (for checkpoints and ONNX metadata); parse_spec(to_dict()) gives it back."""
        return self.raw


def _names(value: Any, where: str) -> dict[str, str]:
    """A list of branch names or a {column: branch} mapping, as {column: branch}."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        names = {str(k): v for k, v in value.items()}
    elif isinstance(value, Sequence) and not isinstance(value, str):
        names = {_column_name(v) if isinstance(v, str) else repr(v): v for v in value}
    else:
        raise ConfigError(f"{where}: expected a list of branch names or a mapping column → branch, got {value!r}")
    bad = next((k for k, v in names.items() if not isinstance(v, str) or not v), None)
    if bad is not None:
        raise ConfigError(f"{where}: expected branch names (strings), got {shown(names[bad])}")
    return names


def _column_name(branch: str) -> str:
    return branch.replace(".", "_").replace("/", "_")


def _file_list(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else []
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{where}: expected a file, glob or URL, or a list of them, got {shown(value)}")
    return tuple(items)


def _collection(name: str, value: Mapping[str, Any]) -> Collection:
    where = f"data.spec.collections.{name}"
    if not isinstance(value, Mapping) or "fields" not in value:
        raise ConfigError(f"{where}: expected a mapping with fields, length, sort_by, pad")
    unknown = set(value) - {"fields", "length", "sort_by", "pad"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r}; expected fields, length, sort_by, pad")
    fields = _names(value["fields"], f"{where}.fields")
    length = value.get("length", 4)
    if not fields:
        raise ConfigError(f"{where}.fields: expected at least one field")
    if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= MAX_COLLECTION_LENGTH:
        raise ConfigError(f"{where}.length: expected a whole number from 1 to {MAX_COLLECTION_LENGTH}, got "
                          f"{shown(length)}")
    sort_by = value.get("sort_by")
    if sort_by is not None and sort_by not in fields:
        raise ConfigError(f"{where}.sort_by: {shown(sort_by)} is not one of the fields {', '.join(fields)}")
    pad = value.get("pad", 0.0)
    if not isinstance(pad, int | float) or isinstance(pad, bool) or not np.isfinite(pad):
        raise ConfigError(f"{where}.pad: expected a finite number, got {shown(pad)}")
    return Collection(str(name), fields, int(length), sort_by, float(pad))


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The spec's `key` as a mapping (empty if not given); anything else is one ConfigError."""
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"data.spec.{key}: expected a mapping name → ..., got {type(value).__name__}")
    return value


SPEC_KEYS = ("tree", "files", "classes", "label", "flat", "collections", "derived", "selection", "weight", "aliases")


def parse_spec(raw: Mapping[str, Any]) -> FeatureSpec:
    """Check a spec (a mapping, e.g. the `data.spec` config node) and build the FeatureSpec; one ConfigError
    naming the key otherwise. Branches are checked against the files later, when they are opened."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"data.spec: expected a mapping with {', '.join(SPEC_KEYS)}, got {type(raw).__name__}")
    raw = dict(raw)
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        key = str(unknown[0])[:40]
        hint = closest(key, SPEC_KEYS)
        raise ConfigError(f"data.spec.{key}: unknown key"
                          + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; expected some of {', '.join(SPEC_KEYS)}")
    if not isinstance(raw.get("tree"), str) or not raw["tree"]:
        raise ConfigError(f"data.spec.tree: expected the tree name, e.g. Events, got {shown(raw.get('tree'))}")
    files, class_names, label = _files_and_classes(raw)
    flat = _names(raw.get("flat"), "data.spec.flat")
    derived_raw = _mapping(raw, "derived")
    collections = tuple(_collection(str(k), v) for k, v in _mapping(raw, "collections").items())
    _check_width(len(flat) + len(derived_raw) + sum(1 + c.length * len(c.fields) for c in collections))
    derived = {str(k): Expression.parse(v, f"data.spec.derived.{k}") for k, v in derived_raw.items()}
    spec = FeatureSpec(
        tree=raw["tree"], class_names=class_names, files=files, flat=flat, derived=derived, collections=collections,
        selection=Expression.parse(raw["selection"], "data.spec.selection") if raw.get("selection") else None,
        weight=Expression.parse(raw["weight"], "data.spec.weight") if raw.get("weight") else None,
        label=label, aliases=_names(raw.get("aliases"), "data.spec.aliases"), raw=raw)
    _check_columns(spec)
    return spec


def _check_width(n_columns: int) -> None:
    if n_columns > MAX_FEATURES:
        raise ConfigError(f"data.spec: the spec makes {n_columns} feature columns; at most {MAX_FEATURES} are allowed "
                          "(shorten the collections)")


def _files_and_classes(raw: Mapping[str, Any]) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...], Expression | None]:
    files = raw.get("files")
    if isinstance(files, Mapping):
        if raw.get("label"):
            raise ConfigError("data.spec.label: with files given per class the class comes from the file; "
                              "give files as a plain list to take it from a branch")
        if len(files) < 2:
            raise ConfigError(f"data.spec.files: expected files for at least two classes, got {list(files)}")
        return {str(k): _file_list(v, f"data.spec.files.{k}") for k, v in files.items()}, tuple(map(str, files)), None
    if not raw.get("label") or not raw.get("classes"):
        raise ConfigError("data.spec.files: give files per class ({signal: [...], background: [...]}), or a list of "
                          "files with data.spec.label (an expression giving the class index) and data.spec.classes")
    classes = raw["classes"]
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 2 \
            or not all(isinstance(c, str) and c for c in classes):
        raise ConfigError(f"data.spec.classes: expected a list of at least two class names, got {shown(classes)}")
    classes = tuple(classes)
    return {"": _file_list(files, "data.spec.files")}, classes, Expression.parse(raw["label"], "data.spec.label")


def _check_columns(spec: FeatureSpec) -> None:
    names = spec.feature_names
    if not names:
        raise ConfigError("data.spec: no features; give flat branches, derived expressions or collections")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        raise ConfigError(f"data.spec: the column {repeated[0]!r} is defined twice; rename one")
