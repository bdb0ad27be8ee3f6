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

Expressions (derived, selection, weight, label) are Python expressions over branches (or aliases) with the
functions in FUNCTIONS; they are checked, not trusted: only names, numbers, operators, comparisons, subscripts
and calls of those functions are accepted, so a spec read back from a model file cannot run other code.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from cmsdl.errors import ConfigError, closest

FUNCTIONS: dict[str, Any] = {
    "sum": lambda x: ak.sum(x, axis=-1),
    "count": lambda x: ak.sum(x, axis=-1) if _is_bool(x) else ak.num(x, axis=-1),
    "mean": lambda x: ak.mean(x, axis=-1),
    "max": lambda x, pad=0.0: ak.fill_none(ak.max(x, axis=-1), pad),
    "min": lambda x, pad=0.0: ak.fill_none(ak.min(x, axis=-1), pad),
    "any": lambda x: ak.any(x, axis=-1),
    "all": lambda x: ak.all(x, axis=-1),
    "first": lambda x, pad=0.0: ak.fill_none(ak.firsts(x, axis=-1), pad),
    "where": np.where, "abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "log1p": np.log1p,
    "sin": np.sin, "cos": np.cos, "sinh": np.sinh, "cosh": np.cosh, "arctan2": np.arctan2,
    "minimum": np.minimum, "maximum": np.maximum,
}
ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name, ast.Load, ast.Constant,
    ast.Subscript, ast.Slice, ast.Tuple, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.IfExp,
)


def _is_bool(x: Any) -> bool:
    return str(ak.type(x)).endswith("bool")


@dataclass(frozen=True)
class Expression:
    """A checked expression and the branch identifiers it reads."""

    text: str
    where: str
    code: Any = field(compare=False, repr=False)
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, where: str) -> Expression:
        try:
            tree = ast.parse(str(text).strip(), mode="eval")
        except SyntaxError as err:
            raise ConfigError(f"{where}: {text!r} is not a valid expression ({err.msg})") from None
        for node in ast.walk(tree):
            if not isinstance(node, ALLOWED_NODES):
                raise ConfigError(f"{where}: {text!r} uses {type(node).__name__}, which expressions may not; "
                                  "use branch names, numbers, operators and the functions " + ", ".join(FUNCTIONS))
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise ConfigError(f"{where}: {text!r} calls {ast.unparse(node.func)}; expressions may call "
                                  + ", ".join(FUNCTIONS))
            if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool)):
                raise ConfigError(f"{where}: {text!r}: only numbers may appear as constants")
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
        names = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - calls)
        return cls(str(text), where, compile(tree, where, "eval"), tuple(names))

    def evaluate(self, columns: Mapping[str, Any]) -> Any:
        return eval(self.code, {"__builtins__": {}}, {**FUNCTIONS, **{n: columns[n] for n in self.names}})


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
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return {_column_name(str(v)): str(v) for v in value}
    raise ConfigError(f"{where}: expected a list of branch names or a mapping column → branch, got {value!r}")


def _column_name(branch: str) -> str:
    return branch.replace(".", "_").replace("/", "_")


def _file_list(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value or [])
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{where}: expected a file, glob or URL, or a list of them, got {value!r}")
    return tuple(items)


def _collection(name: str, value: Mapping[str, Any]) -> Collection:
    where = f"data.spec.collections.{name}"
    if not isinstance(value, Mapping) or "fields" not in value:
        raise ConfigError(f"{where}: expected a mapping with fields, length, sort_by, pad")
    unknown = set(value) - {"fields", "length", "sort_by", "pad"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; expected fields, length, sort_by, pad")
    fields = _names(value["fields"], f"{where}.fields")
    length = value.get("length", 4)
    if not fields or not isinstance(length, int) or length < 1:
        raise ConfigError(f"{where}: expected at least one field and a positive length, got {len(fields)} and {length!r}")
    sort_by = value.get("sort_by")
    if sort_by is not None and sort_by not in fields:
        raise ConfigError(f"{where}.sort_by: {sort_by!r} is not one of the fields {', '.join(fields)}")
    return Collection(str(name), fields, int(length), sort_by, float(value.get("pad", 0.0)))


SPEC_KEYS = ("tree", "files", "classes", "label", "flat", "collections", "derived", "selection", "weight", "aliases")


def parse_spec(raw: Mapping[str, Any]) -> FeatureSpec:
    """Check a spec (a mapping, e.g. the `data.spec` config node) and build the FeatureSpec; one ConfigError
    naming the key otherwise. Branches are checked against the files later, when they are opened."""
    raw = dict(raw)
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        hint = closest(unknown[0], SPEC_KEYS)
        raise ConfigError(f"data.spec.{unknown[0]}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; expected some of {', '.join(SPEC_KEYS)}")
    if not isinstance(raw.get("tree"), str) or not raw["tree"]:
        raise ConfigError(f"data.spec.tree: expected the tree name, e.g. Events, got {raw.get('tree')!r}")
    files, class_names, label = _files_and_classes(raw)
    derived = {str(k): Expression.parse(v, f"data.spec.derived.{k}") for k, v in (raw.get("derived") or {}).items()}
    collections = tuple(_collection(k, v) for k, v in (raw.get("collections") or {}).items())
    spec = FeatureSpec(
        tree=raw["tree"], class_names=class_names, files=files, flat=_names(raw.get("flat"), "data.spec.flat"),
        derived=derived, collections=collections,
        selection=Expression.parse(raw["selection"], "data.spec.selection") if raw.get("selection") else None,
        weight=Expression.parse(raw["weight"], "data.spec.weight") if raw.get("weight") else None,
        label=label, aliases=_names(raw.get("aliases"), "data.spec.aliases"), raw=raw)
    _check_columns(spec)
    return spec


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
    classes = tuple(map(str, raw["classes"]))
    return {"": _file_list(files, "data.spec.files")}, classes, Expression.parse(raw["label"], "data.spec.label")


def _check_columns(spec: FeatureSpec) -> None:
    names = spec.feature_names
    if not names:
        raise ConfigError("data.spec: no features; give flat branches, derived expressions or collections")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"data.spec: the column {repeated[0]!r} is defined twice; rename one")
