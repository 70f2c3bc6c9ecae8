"""Runtime introspection of ``Network`` methods (LOOM's ``ListMethods`` family).

Method names are discovered from the class itself (the Pythonic and the LOOM
CamelCase names), so a new public method is listed with no new code. Parameter
and return types are the resolved Python annotations, written the way they read
in the source (``tuple[list[float], int]``, ``TrainingResult``, ``str | None``),
with the aliases of :mod:`loom.nn.array_types` by name (``ArrayLike`` = a flat
list of numbers, a list of rows or an array); parameter names are the real ones. Keyword-only parameters
are listed after the positional ones with ``"keyword_only": true``.

LOOM's Go build reports Go type strings (``ForwardCPU([]float32) ([]float32,
time.Duration)``) and synthetic names (``param0``); loom reports Python's.
"""

from __future__ import annotations

import ast
import collections.abc
import importlib
import inspect
import json
import sys
import types
import typing
from functools import cache
from typing import Any, TypedDict

from loom.errors import LoomError
from loom.nn import array_types

__all__ = ["IntrospectionMixin", "MethodInfo", "ParameterInfo", "resolved_type_hints", "type_name"]


class ParameterInfo(TypedDict, total=False):
    """One parameter of a method: ``{"name", "type"}`` (``"keyword_only": True`` for keyword-only ones)."""

    name: str
    type: str
    keyword_only: bool


class MethodInfo(TypedDict):
    """One method: ``{"method_name", "parameters": [...], "returns": [...]}`` (LOOM's ``MethodInfo``)."""

    method_name: str
    parameters: list[ParameterInfo]
    returns: list[str]


def type_name(annotation: Any) -> str:
    """Readable text of a resolved annotation (``list[float]``, ``str | None``, ``ndarray``).

    Parameters
    ----------
    annotation : type, typing construct or str
        A resolved annotation (``typing.get_type_hints``) or, when it could not be
        resolved, its source text.

    Returns
    -------
    str
    """
    if annotation is inspect.Parameter.empty or annotation is inspect.Signature.empty:
        return "Any"
    if isinstance(annotation, str):
        return annotation
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Any:
        return "Any"
    alias = _named_aliases().get(_hashable(annotation))
    if alias is not None:
        return alias
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _union_name(args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        if origin is collections.abc.Callable:
            return "Callable"
        if not args:
            return name
        return f"{name}[" + ", ".join("..." if a is Ellipsis else type_name(a) for a in args) + "]"
    return getattr(annotation, "__name__", str(annotation))


def _hashable(annotation: Any) -> Any:
    try:
        hash(annotation)
    except TypeError:
        return None
    return annotation


@cache
def _named_aliases() -> dict[Any, str]:
    """The aliases of :mod:`loom.nn.array_types` (except ``Array``), rendered by name."""
    return {getattr(array_types, name): name for name in array_types.__all__ if name != "Array"}


def _union_name(args: tuple[Any, ...]) -> str:
    """``A | B | ...``, with the members of a named alias (flattened into the union) shown as its name."""
    remaining = list(args)
    parts: list[str] = []
    for alias, name in sorted(_named_aliases().items(), key=lambda item: -len(typing.get_args(item[0]))):
        members = typing.get_args(alias)
        if members and all(m in remaining for m in members):
            parts.append(name)
            remaining = [a for a in remaining if a not in members]
    return " | ".join(parts + [type_name(a) for a in remaining])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _bind_import(node: ast.Import | ast.ImportFrom, package: str | None, namespace: dict[str, Any]) -> None:
    """Run one import statement's binding into ``namespace`` (via :mod:`importlib`)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            module = importlib.import_module(alias.name)
            if alias.asname:
                namespace[alias.asname] = module
            else:
                top = alias.name.split(".")[0]
                namespace[top] = importlib.import_module(top)
        return
    base = ("." * node.level) + (node.module or "")
    module = importlib.import_module(base, package if node.level else None)
    for alias in node.names:
        if alias.name == "*":
            continue
        value = getattr(module, alias.name, None)
        if value is None:  # a submodule not yet imported as an attribute
            value = importlib.import_module(f"{module.__name__}.{alias.name}")
        namespace[alias.asname or alias.name] = value


@cache
def _type_checking_names(module_name: str) -> dict[str, Any]:
    """The names ``module_name`` imports under ``if TYPE_CHECKING:``, imported now (``{}`` when unreadable).

    Annotations may name types their module imports for type checking only (the module of the
    type imports this one: the trainers annotate ``net: Network``). Resolving them means doing
    those imports now, from the source of the module that wrote them — the way documentation
    tools resolve such hints — rather than hard-wiring a list of loom modules here.
    """
    module = sys.modules.get(module_name)
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return {}
    namespace: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                if isinstance(statement, ast.Import | ast.ImportFrom):
                    _bind_import(statement, getattr(module, "__package__", None), namespace)
    return namespace


def resolved_type_hints(func: Any) -> dict[str, Any]:
    """``typing.get_type_hints`` of a ``Network`` method or loom function, ``{}`` when unresolvable.

    Names the function's module imports only for type checking (``TrainingResult``,
    ``ArrayLike``, ...) are resolved from that module's ``if TYPE_CHECKING:`` imports.
    """
    try:
        localns = _type_checking_names(getattr(func, "__module__", "") or "")
        return typing.get_type_hints(func, localns=localns)
    except Exception:  # an unresolvable annotation: fall back to the source text per parameter
        return {}


@cache
def _method_info_of(func: Any, name: str) -> MethodInfo:
    sig = inspect.signature(func)
    hints = resolved_type_hints(func)
    params: list[ParameterInfo] = []
    for p in sig.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        info: ParameterInfo = {"name": p.name, "type": type_name(hints.get(p.name, p.annotation))}
        if p.kind is p.KEYWORD_ONLY:
            info["keyword_only"] = True
        params.append(info)
    ret = hints.get("return", sig.return_annotation)
    returns = [] if ret in (None, "None", type(None), inspect.Signature.empty) else [type_name(ret)]
    return {"method_name": name, "parameters": params, "returns": returns}


class IntrospectionMixin:
    """Adds ``list_methods`` / ``get_methods_json`` / ``get_method_signature`` / ``has_method``."""

    @classmethod
    def _public_methods(cls) -> dict[str, Any]:
        return {
            name: member
            for name, member in inspect.getmembers(cls, predicate=inspect.isfunction)
            if not name.startswith("_")
        }

    def list_methods(self) -> list[str]:
        """Sorted names of every public method (Pythonic and LOOM names)."""
        return sorted(self._public_methods())

    def has_method(self, name: str) -> bool:
        """True if ``name`` is a public method (exact, case-sensitive)."""
        return name in self._public_methods()

    def _method_info(self, name: str) -> MethodInfo:
        return _method_info_of(self._public_methods()[name], name)

    def get_methods(self) -> list[MethodInfo]:
        """``[{"method_name", "parameters": [{"name", "type"}], "returns": [...]}]`` for every method.

        Returns
        -------
        list of dict
            Sorted by name; parameter names are the real ones, types the resolved
            annotations (keyword-only parameters carry ``"keyword_only": True``).
        """
        return [self._method_info(name) for name in self.list_methods()]

    def get_methods_json(self) -> str:
        """:meth:`get_methods` as indented JSON text."""
        return json.dumps(self.get_methods(), indent=2)

    def get_method_signature(self, name: str) -> str:
        """``"name(param: type, ...) -> return"``; unknown names raise ``LoomError``.

        Keyword-only parameters follow a ``*`` as in Python: ``save_model_to_string(model_id: str,
        *, go_compatible: ...) -> str``.
        """
        if not self.has_method(name):
            raise LoomError(f"method {name} not found")
        info = self._method_info(name)
        parts: list[str] = []
        star = False
        for p in info["parameters"]:
            if p.get("keyword_only") and not star:
                parts.append("*")
                star = True
            parts.append(f"{p['name']}: {p['type']}")
        returns = info["returns"]
        return f"{name}({', '.join(parts)})" + (f" -> {returns[0]}" if returns else "")

    # LOOM names
    def ListMethods(self) -> list[str]:
        """LOOM name of :meth:`list_methods`."""
        return self.list_methods()

    def HasMethod(self, name: str) -> bool:
        """LOOM name of :meth:`has_method`."""
        return self.has_method(name)

    def GetMethodSignature(self, name: str) -> str:
        """LOOM name of :meth:`get_method_signature`."""
        return self.get_method_signature(name)

    def GetMethodsJSON(self) -> str:
        """LOOM name of :meth:`get_methods_json`."""
        return self.get_methods_json()

    def GetMethods(self) -> tuple[MethodInfo, ...]:
        """LOOM name of :meth:`get_methods`, as a tuple: one result per method.

        Through :mod:`loom.compat` a tuple becomes one result per item, so the JSON text is
        the list of method objects itself — what the LOOM README's "Runtime Introspection"
        block parses (``JSON.parse(network.GetMethods()).forEach(...)``).
        """
        return tuple(self.get_methods())
