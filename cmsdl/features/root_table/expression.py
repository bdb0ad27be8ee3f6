"""Feature-spec expressions (derived columns, selection, weight, label): Python syntax over branch arrays, checked
against a whitelist and bounded in cost before it is compiled, because a spec may come from a model file made by
anyone.

    e = Expression.parse("sum(Jet_pt[Jet_pt > 30])", "data.spec.derived.HT")   # ConfigError naming the key if refused
    e.names                                                                    # ('Jet_pt',): the identifiers it reads
    e.evaluate({"Jet_pt": jagged_array})                                       # one value per entry

Accepted: names, numbers, operators, comparisons, subscripts and calls of FUNCTIONS (with their number of
arguments; no keywords); no attributes, strings, lambdas or other calls, so nothing else can run. Bounded: at most
MAX_EXPRESSION_CHARS characters nested at most MAX_DEPTH deep, exponents and shift counts are number literals within
MAX_EXPONENT and MAX_SHIFT, integer constants fit int64, and numbers are evaluated as numpy scalars (fixed width: no
unbounded Python integers). Imports numpy and awkward only.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from cmsdl.errors import ConfigError, shown

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
        if not isinstance(text, str | int | float):
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
        raise ConfigError(f"{where}: {shown(source)} is not a valid expression ({err.msg})") from None
    except (ValueError, MemoryError, RecursionError) as err:
        raise ConfigError(f"{where}: {shown(source)} is not a valid expression ({type(err).__name__})") from None


def _check_tree(tree: ast.Expression, text: str, where: str) -> None:
    """Every node allowed, nesting at most MAX_DEPTH expressions deep (walked without recursion)."""
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: {shown(text)} nests deeper than {MAX_DEPTH} levels; simplify it")
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
        raise ConfigError(f"{where}: {shown(text)} uses {type(node).__name__}, which expressions may not; "
                          "use branch names, numbers, operators and the functions " + ", ".join(FUNCTIONS))
    if isinstance(node, ast.Tuple):
        raise ConfigError(f"{where}: {shown(text)}: a tuple may only index, as in Jet_pt[:, 0]")
    if isinstance(node, ast.Call):
        _check_call(node, text, where)
    elif isinstance(node, ast.Name) and (node.id in FUNCTIONS or node.id.startswith("__")):
        raise ConfigError(f"{where}: {shown(text)}: {node.id!r} " + (
            f"is a function; call it, as in {node.id}(Jet_pt)" if node.id in FUNCTIONS
            else "is not allowed (names starting with __ are reserved); give the branch an alias"))
    elif isinstance(node, ast.Constant):
        _check_constant(node.value, text, where)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        exponent = _literal(node.right)
        if exponent is None or not abs(exponent) <= MAX_EXPONENT:
            raise ConfigError(f"{where}: {shown(text)}: the exponent of ** must be a number from -{MAX_EXPONENT} "
                              f"to {MAX_EXPONENT}, got {shown(ast.unparse(node.right))}")
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.LShift | ast.RShift):
        shift = _literal(node.right)
        if not (isinstance(shift, int) and 0 <= shift <= MAX_SHIFT):
            raise ConfigError(f"{where}: {shown(text)}: the shift count of << and >> must be a whole number from 0 "
                              f"to {MAX_SHIFT}, got {shown(ast.unparse(node.right))}")


def _check_call(node: ast.Call, text: str, where: str) -> None:
    if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
        raise ConfigError(f"{where}: {shown(text)} calls {ast.unparse(node.func)[:80]}; expressions may call "
                          + ", ".join(FUNCTIONS))
    if node.keywords:
        raise ConfigError(f"{where}: {shown(text)}: {node.func.id}() takes no keyword arguments")
    fewest, most = ARGUMENTS.get(node.func.id, (1, 1))
    if not fewest <= len(node.args) <= most:
        allowed = str(fewest) if fewest == most else f"{fewest} or {most}"
        raise ConfigError(f"{where}: {shown(text)}: {node.func.id}() takes {allowed} argument"
                          f"{'s' if most > 1 else ''}, got {len(node.args)}")


def _check_constant(value: Any, text: str, where: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, complex):
        raise ConfigError(f"{where}: {shown(text)}: only numbers may appear as constants")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{where}: {shown(text)}: the integer {str(value)[:60]} does not fit 64 bits "
                          f"(at most {MAX_INT})")
    if isinstance(value, float) and not np.isfinite(value):
        raise ConfigError(f"{where}: {shown(text)}: the number {value} is not finite (at most about 1.8e308)")


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
