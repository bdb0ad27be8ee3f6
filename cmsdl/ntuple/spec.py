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
and calls of those functions are accepted, so a spec read back from a model file cannot run other code. Their
cost is bounded too (a model file may come from anyone): at most MAX_EXPRESSION_CHARS characters nested at
most MAX_DEPTH deep, exponents and shift counts are number literals within MAX_EXPONENT and MAX_SHIFT, integer
constants fit int64, and numbers are evaluated as numpy scalars (fixed width: no unbounded Python integers).
A collection has at most MAX_COLLECTION_LENGTH slots and a spec at most MAX_FEATURES columns.
"""

from __future__ import annotations

import ast
from collections import Counter
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
ARGUMENTS: dict[str, tuple[int, int]] = {  # function → (fewest, most) arguments; 1 where not listed
    "max": (1, 2), "min": (1, 2), "first": (1, 2), "where": (3, 3), "arctan2": (2, 2), "minimum": (2, 2),
    "maximum": (2, 2),
}
ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name, ast.Load, ast.Constant,
    ast.Subscript, ast.Slice, ast.Tuple, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.IfExp,
)
MAX_EXPRESSION_CHARS = 1000
MAX_DEPTH = 32
MAX_EXPONENT = 64
MAX_SHIFT = 63
MAX_INT = 2**63 - 1
MAX_COLLECTION_LENGTH = 1024
MAX_FEATURES = 20_000
CONSTANT_PREFIX = "__cmsdl_k"  # names the evaluator gives to number literals; branch names may not start with "__"


def _is_bool(x: Any) -> bool:
    return str(ak.type(x)).endswith("bool")


@dataclass(frozen=True)
class Expression:
    """A checked expression and the branch identifiers it reads."""

    text: str
    where: str
    code: Any = field(compare=False, repr=False)
    names: tuple[str, ...] = ()
    constants: dict[str, Any] = field(compare=False, repr=False, default_factory=dict)

    @classmethod
    def parse(cls, text: Any, where: str) -> Expression:
        """Check `text` (one ConfigError naming `where` and what is allowed otherwise) and compile it."""
        if not isinstance(text, str | int | float) or isinstance(text, bool):
            raise ConfigError(f"{where}: expected an expression (a string such as 'sum(Jet_pt)'), got "
                              f"{type(text).__name__}")
        source = str(text).strip()
        if len(source) > MAX_EXPRESSION_CHARS:
            raise ConfigError(f"{where}: the expression has {len(source)} characters; at most "
                              f"{MAX_EXPRESSION_CHARS} are allowed")
        tree = _parse_tree(source, where)
        _check_tree(tree, source, where)
        tree, constants = _numbers_as_names(tree)
        names = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(FUNCTIONS) - set(constants))
        return cls(str(text), where, compile(tree, where, "eval"), tuple(names), constants)

    def evaluate(self, columns: Mapping[str, Any]) -> Any:
        """The expression's value on arrays of branches; a failure is one ConfigError naming the expression."""
        scope = {**FUNCTIONS, **self.constants, **{n: columns[n] for n in self.names}}
        try:
            with np.errstate(all="ignore"):  # inf and NaN are reported per entry and feature by the reader
                return eval(self.code, {"__builtins__": {}}, scope)
        except Exception as err:
            raise ConfigError(f"{self.where}: {self.text!r} cannot be evaluated on these branches "
                              f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None


def _parse_tree(source: str, where: str) -> ast.Expression:
    try:
        return ast.parse(source, mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"{where}: {_short(source)} is not a valid expression ({err.msg})") from None
    except (ValueError, MemoryError, RecursionError) as err:
        raise ConfigError(f"{where}: {_short(source)} is not a valid expression ({type(err).__name__})") from None


def _check_tree(tree: ast.Expression, text: str, where: str) -> None:
    """Every node allowed, nesting at most MAX_DEPTH expressions deep (walked without recursion)."""
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: {_short(text)} nests deeper than {MAX_DEPTH} levels; simplify it")
        _check_node(node, text, where)
        stack += [(child, depth + isinstance(child, ast.expr)) for child in _children(node)]


def _children(node: ast.AST) -> list[ast.AST]:
    """The nodes to check below `node`: a call's arguments (its function is checked by name), an index tuple's
    elements (a tuple may only index), else every child."""
    if isinstance(node, ast.Call):
        return list(node.args)
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple):
        return [node.value, *node.slice.elts]
    return list(ast.iter_child_nodes(node))


def _check_node(node: ast.AST, text: str, where: str) -> None:
    """One node of an expression against the whitelist and the bounds (see the module docstring)."""
    if not isinstance(node, ALLOWED_NODES):
        raise ConfigError(f"{where}: {_short(text)} uses {type(node).__name__}, which expressions may not; "
                          "use branch names, numbers, operators and the functions " + ", ".join(FUNCTIONS))
    if isinstance(node, ast.Tuple):
        raise ConfigError(f"{where}: {_short(text)}: a tuple may only index, as in Jet_pt[:, 0]")
    if isinstance(node, ast.Call):
        _check_call(node, text, where)
    elif isinstance(node, ast.Name) and (node.id in FUNCTIONS or node.id.startswith("__")):
        raise ConfigError(f"{where}: {_short(text)}: {node.id!r} " + (
            f"is a function; call it, as in {node.id}(Jet_pt)" if node.id in FUNCTIONS
            else "is not allowed (names starting with __ are reserved); give the branch an alias"))
    elif isinstance(node, ast.Constant):
        _check_constant(node.value, text, where)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        exponent = _literal(node.right)
        if exponent is None or not abs(exponent) <= MAX_EXPONENT:
            raise ConfigError(f"{where}: {_short(text)}: the exponent of ** must be a number from -{MAX_EXPONENT} "
                              f"to {MAX_EXPONENT}, got {_short(ast.unparse(node.right))}")
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.LShift | ast.RShift):
        shift = _literal(node.right)
        if not (isinstance(shift, int) and 0 <= shift <= MAX_SHIFT):
            raise ConfigError(f"{where}: {_short(text)}: the shift count of << and >> must be a whole number from 0 "
                              f"to {MAX_SHIFT}, got {_short(ast.unparse(node.right))}")


def _check_call(node: ast.Call, text: str, where: str) -> None:
    if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
        raise ConfigError(f"{where}: {_short(text)} calls {ast.unparse(node.func)[:80]}; expressions may call "
                          + ", ".join(FUNCTIONS))
    if node.keywords:
        raise ConfigError(f"{where}: {_short(text)}: {node.func.id}() takes no keyword arguments")
    fewest, most = ARGUMENTS.get(node.func.id, (1, 1))
    if not fewest <= len(node.args) <= most:
        allowed = str(fewest) if fewest == most else f"{fewest} or {most}"
        raise ConfigError(f"{where}: {_short(text)}: {node.func.id}() takes {allowed} argument"
                          f"{'s' if most > 1 else ''}, got {len(node.args)}")


def _check_constant(value: Any, text: str, where: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, complex):
        raise ConfigError(f"{where}: {_short(text)}: only numbers may appear as constants")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{where}: {_short(text)}: the integer {str(value)[:60]} does not fit 64 bits "
                          f"(at most {MAX_INT})")
    if isinstance(value, float) and not np.isfinite(value):
        raise ConfigError(f"{where}: {_short(text)}: the number {value} is not finite (at most about 1.8e308)")


def _literal(node: ast.AST) -> int | float | None:
    """The value of a number literal, possibly signed (`2`, `-0.5`); None for anything else."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign, node = (-1 if isinstance(node.op, ast.USub) else 1), node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return sign * node.value
    return None


def _numbers_as_names(tree: ast.Expression) -> tuple[ast.Expression, dict[str, Any]]:
    """The tree with every number literal replaced by a name bound to a numpy scalar (int64, float64 for
    exponents, bool), so that no arithmetic on constants uses unbounded Python integers."""
    exponents = {id(n.right) for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)}
    exponents |= {id(n.right.operand) for n in ast.walk(tree) if isinstance(n, ast.BinOp)
                  and isinstance(n.op, ast.Pow) and isinstance(n.right, ast.UnaryOp)}
    constants: dict[str, Any] = {}

    class Replace(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.AST:
            name = f"{CONSTANT_PREFIX}{len(constants)}"
            value = node.value
            constants[name] = (np.bool_(value) if isinstance(value, bool) else np.float64(value)
                               if id(node) in exponents or isinstance(value, float) else np.int64(value))
            return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)

    return ast.fix_missing_locations(Replace().visit(tree)), constants


def _short(value: Any, limit: int = 80) -> str:
    """`value` as repr, cut to about `limit` characters for error lines."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
        raise ConfigError(f"{where}: expected branch names (strings), got {_short(names[bad])}")
    return names


def _column_name(branch: str) -> str:
    return branch.replace(".", "_").replace("/", "_")


def _file_list(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else []
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{where}: expected a file, glob or URL, or a list of them, got {_short(value)}")
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
                          f"{_short(length)}")
    sort_by = value.get("sort_by")
    if sort_by is not None and sort_by not in fields:
        raise ConfigError(f"{where}.sort_by: {_short(sort_by)} is not one of the fields {', '.join(fields)}")
    pad = value.get("pad", 0.0)
    if not isinstance(pad, int | float) or isinstance(pad, bool) or not np.isfinite(pad):
        raise ConfigError(f"{where}.pad: expected a finite number, got {_short(pad)}")
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
        raise ConfigError(f"data.spec.tree: expected the tree name, e.g. Events, got {_short(raw.get('tree'))}")
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
        raise ConfigError(f"data.spec.classes: expected a list of at least two class names, got {_short(classes)}")
    classes = tuple(classes)
    return {"": _file_list(files, "data.spec.files")}, classes, Expression.parse(raw["label"], "data.spec.label")


def _check_columns(spec: FeatureSpec) -> None:
    names = spec.feature_names
    if not names:
        raise ConfigError("data.spec: no features; give flat branches, derived expressions or collections")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        raise ConfigError(f"data.spec: the column {repeated[0]!r} is defined twice; rename one")
