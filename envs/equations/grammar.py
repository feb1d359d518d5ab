"""The expression grammar of a system file: Python's expression syntax, read as sympy, nothing evaluated.

A term is written like ``D_u*laplacian(u) - u*v**2``. The text is parsed by Python's own parser
(``ast.parse``, which builds a syntax tree and runs nothing); the tree is walked here and each node
allowed becomes a sympy object: numbers, the names the file declares (fields, parameters,
constants), the coordinates ``x``, ``y`` and the time ``t``, ``pi``, ``+ - * / **``, the
elementary functions of ``FUNCTIONS`` and the differential operators of ``OPERATORS``. Anything
else (attributes, subscripts, keywords, strings, ``^``) is a one-line error naming the fix.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping

import sympy

from leads.envs.errors import UserError

# Differential operators and the spatial dimensions they need.
OPERATORS: dict[str, int] = {"dx": 1, "dxx": 1, "laplacian": 1, "dy": 2, "dyy": 2, "dxy": 2}
# Elementary functions: name -> sympy function.
FUNCTIONS: dict[str, Callable[..., sympy.Expr]] = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "exp": sympy.exp, "log": sympy.log,
    "sqrt": sympy.sqrt, "tanh": sympy.tanh, "sinh": sympy.sinh, "cosh": sympy.cosh, "abs": sympy.Abs,
}
COORDINATES = ("x", "y")
TIME = "t"
MAX_LENGTH = 2000

_BINARY: dict[type, Callable[[sympy.Expr, sympy.Expr], sympy.Expr]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


def operator(name: str) -> sympy.FunctionClass:
    """The sympy function that stands for the differential operator ``name`` (unevaluated)."""
    return sympy.Function(name)


def is_operator(e: sympy.Basic) -> bool:
    return isinstance(e, sympy.core.function.AppliedUndef) and e.func.__name__ in OPERATORS


def reserved_names(dims: int) -> set[str]:
    """Names a file cannot give to a field, parameter, constant or term of a ``dims``-D system."""
    return {*OPERATORS, *FUNCTIONS, "pi", TIME, *COORDINATES[:dims]}


class Namespace:
    """The names an expression may use: ``symbols`` (name -> kind) and the grid's dimensions."""

    def __init__(self, symbols: Mapping[str, str], dims: int) -> None:
        self.symbols = dict(symbols)
        self.dims = dims
        for c in COORDINATES[:dims]:
            self.symbols.setdefault(c, "coordinate")
        self.symbols.setdefault(TIME, "time")


def parse_term(text: object, names: Namespace, where: str) -> sympy.Expr:
    """The sympy expression of one term.

    Args:
        text: the term as written (a string, or a number).
        names: what it may refer to.
        where: the file, field and term, for errors (``"systems/gs.yaml: term 'feed' of field u"``).

    Returns:
        The expression; fields, parameters, constants, coordinates and time as ``sympy.Symbol``,
        operators as unevaluated functions (``laplacian(u)``).
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UserError(f"{where} must be an expression written as text (e.g. \"-k*v\"), got {text!r}")
    if isinstance(text, (int, float)):
        if not math.isfinite(text):
            raise UserError(f"{where} is {text!r}; write a finite number or an expression")
        return sympy.Integer(text) if isinstance(text, int) else sympy.Float(text)
    if len(text) > MAX_LENGTH:
        raise UserError(f"{where} is {len(text)} characters long; write at most {MAX_LENGTH} (split it into terms)")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        msg = getattr(e, "msg", None) or type(e).__name__
        raise UserError(f"{where}: '{text}' is not an expression ({msg}); "
                        "write e.g. \"D*laplacian(u) - u*v**2\"") from None
    try:
        return _Builder(names, where, text).build(tree.body)
    except RecursionError:
        raise UserError(f"{where}: '{text[:80]}' is nested too deeply; split it into terms") from None


class _Builder:
    def __init__(self, names: Namespace, where: str, text: str) -> None:
        self.names, self.where, self.text = names, where, text

    def fail(self, what: str, fix: str) -> UserError:
        return UserError(f"{self.where}: {what} in '{self.text}'; {fix}")

    def build(self, node: ast.AST) -> sympy.Expr:
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self.fail(f"{v!r} is not a number", "write numbers, names and operators only")
            return sympy.Integer(v) if isinstance(v, int) else sympy.Float(v)
        if isinstance(node, ast.Name):
            return self.symbol(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.build(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.BitXor):
                raise self.fail("'^' is not a power", "write ** for powers (u**2)")
            op = _BINARY.get(type(node.op))
            if op is None:
                raise self.fail(f"operator {type(node.op).__name__} is not allowed", "use + - * / ** only")
            return op(self.build(node.left), self.build(node.right))
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(f"{type(node).__name__} syntax is not allowed",
                        "write numbers, names, + - * / **, functions and operators only")

    def symbol(self, name: str) -> sympy.Expr:
        if name == "pi":
            return sympy.pi
        kind = self.names.symbols.get(name)
        if kind is None:
            if name in OPERATORS or name in FUNCTIONS:
                raise self.fail(f"'{name}' is a function", f"call it, e.g. {name}(u)")
            if name in COORDINATES:
                raise self.fail(f"'{name}' is a coordinate of a grid with {COORDINATES.index(name) + 1} dimensions "
                                f"but this system has {self.names.dims}", "declare a grid that has it, or remove it")
            raise self.fail(f"'{name}' is neither a field, a parameter, a constant nor an operator",
                            "declare it under fields, parameters or constants, or fix its spelling")
        return sympy.Symbol(name)

    def call(self, node: ast.Call) -> sympy.Expr:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name is None:
            raise self.fail("only named functions can be called", "call an operator or function by its name")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise self.fail(f"{name}() takes exactly one argument", f"write {name}(expression)")
        if name in OPERATORS:
            dims = OPERATORS[name]
            if self.names.dims == 0:
                raise self.fail(f"operator {name} needs a grid but this system has none (an ODE)",
                                "declare grid: {dims: 1 or 2, size, length}, or remove the operator")
            if dims > self.names.dims:
                raise self.fail(f"operator {name} needs a 2-D grid but this system's grid is 1-D",
                                "declare grid dims: 2, or use dx, dxx, laplacian")
            return operator(name)(self.build(node.args[0]))
        if name in FUNCTIONS:
            return FUNCTIONS[name](self.build(node.args[0]))
        known = ", ".join([*OPERATORS, *FUNCTIONS])
        raise self.fail(f"'{name}' is not an operator or function", f"use one of: {known}")
