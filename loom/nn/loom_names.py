"""LOOM-name (CamelCase) methods and functions take Python values, never JSON text.

Code ported from LOOM's JavaScript/WASM API passes the JSON text of the argument
list: ``network.ForwardCPU(JSON.stringify([input]))``. loom's native CamelCase
names take the Python values themselves (``net.ForwardCPU(input)``); the JSON
calling convention lives in :mod:`loom.compat`. Without a guard such a call
fails far from its cause (``could not convert string to float``) or, worse,
succeeds with the wrong meaning (``SaveModelToString('["my_model"]')`` saving a
model whose id is ``["my_model"]``).

:func:`takes_python_values` (a class decorator) and :func:`takes_python_values_function`
wrap CamelCase callables so that a string given where numbers, a list or an id
is expected — or a string that is itself the JSON text of a list — raises a
:class:`~loom.errors.ConfigError` that names the method and the parameter and
says: "this method takes Python values; for JSON text use loom.compat".
New CamelCase methods of a decorated class are guarded without new code.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from loom.errors import ConfigError
from loom.nn.introspection import resolved_type_hints  # resolves TYPE_CHECKING-only names too

__all__ = ["JSON_TEXT_HINT", "is_json_list_text", "takes_python_values", "takes_python_values_function"]

JSON_TEXT_HINT = "this method takes Python values; for JSON text use loom.compat"

_T = TypeVar("_T")
_STR_WORDS = re.compile(r"\b(str|Path|PathLike)\b")


def is_json_list_text(value: str) -> bool:
    """True when ``value`` is the JSON text of a list (e.g. ``'[0.1, 0.2]'`` or ``'["my_model"]'``)."""
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return False
    try:
        return isinstance(json.loads(text), list)
    except ValueError:
        return False


def _admits_str(annotation: Any) -> bool:
    """Whether a (resolved, or source-text) annotation accepts a ``str``."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True  # unannotated: only the JSON-list check applies
    if isinstance(annotation, str):
        return bool(_STR_WORDS.search(annotation)) or annotation == "Any"
    if annotation is str or (isinstance(annotation, type) and issubclass(annotation, os.PathLike)):
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(arg, str) for arg in typing.get_args(annotation))
    return any(_admits_str(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def _admitting_params(func: Callable[..., Any], params: list[inspect.Parameter]) -> dict[str, bool]:
    hints = resolved_type_hints(func)
    return {p.name: _admits_str(hints.get(p.name, p.annotation)) for p in params}


def _reject(owner: str, param: str, value: str, admits_str: bool) -> None:
    if admits_str and not is_json_list_text(value):
        return
    shown = value if len(value) <= 60 else value[:57] + "..."
    got = "the JSON text of a list" if is_json_list_text(value) else "a string"
    raise ConfigError(
        f"{owner}: parameter '{param}' got {got} ({shown!r}); {JSON_TEXT_HINT} "
        f"(loom.compat.createNetworkFromJSON(...) or loom.compat.wrap(net) give methods that take and "
        f"return JSON text)"
    )


def _guard(func: Callable[..., _T], owner: str, *, method: bool) -> Callable[..., _T]:
    params = list(inspect.signature(func).parameters.values())
    if method:
        params = params[1:]  # self
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_positional = next((p for p in params if p.kind is p.VAR_POSITIONAL), None)
    admits: dict[str, bool] = {}
    resolved: list[bool] = []

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not resolved:  # annotations are resolved on the first call, once every module is imported
            admits.update(_admitting_params(func, params))
            resolved.append(True)
        for i, value in enumerate(args):
            if isinstance(value, str):
                if i < len(positional):
                    _reject(owner, positional[i].name, value, admits[positional[i].name])
                elif var_positional is not None:
                    _reject(owner, f"*{var_positional.name}[{i - len(positional)}]", value, True)
        for key, value in kwargs.items():
            if isinstance(value, str) and key in admits:
                _reject(owner, key, value, admits[key])

    if method:

        @functools.wraps(func)
        def guarded_method(self: Any, *args: Any, **kwargs: Any) -> _T:
            if args or kwargs:
                check(args, kwargs)
            return func(self, *args, **kwargs)

        return guarded_method

    @functools.wraps(func)
    def guarded_function(*args: Any, **kwargs: Any) -> _T:
        if args or kwargs:
            check(args, kwargs)
        return func(*args, **kwargs)

    return guarded_function


def takes_python_values(cls: type[_T]) -> type[_T]:
    """Class decorator: guard every public CamelCase method of ``cls`` (inherited ones included).

    Examples
    --------
    >>> import loom, json
    >>> net = loom.new_network(2, 1, 1, 1)
    >>> net.SaveModelToString(json.dumps(["my_model"]))   # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    loom.errors.ConfigError: SaveModelToString: parameter 'model_id' got the JSON text of a list ...
    """
    for name in dir(cls):
        if not name[:1].isupper():
            continue
        member = inspect.getattr_static(cls, name)
        if inspect.isfunction(member) and not hasattr(member, "__wrapped__"):
            setattr(cls, name, _guard(member, name, method=True))
    return cls


def takes_python_values_function(func: Callable[..., _T], name: str | None = None) -> Callable[..., _T]:
    """The function guard of :func:`takes_python_values` (for package-level LOOM names)."""
    guarded = _guard(func, name or func.__name__, method=False)
    if name is not None:
        guarded.__name__ = guarded.__qualname__ = name
    return guarded
