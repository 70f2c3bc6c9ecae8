"""The JSON calling convention of LOOM's WASM build, over any Python callable.

One argument in, one string out: the argument is the JSON text of the callable's
argument list, the result the JSON text of its result list. Arguments are
checked and converted by the callable's resolved annotations (the same ones
introspection reports), so every method of :class:`loom.Network` — and every
method added later — is bridged without code of its own.

Results (success)
    ``None`` -> ``"[]"``; a tuple -> one element per item (``ForwardCPU`` ->
    ``[output, duration_ns]``); anything else -> ``[value]``. Arrays become lists of
    floats (the exact float32 values), ``TrainingResult`` / ``DeviationMetrics`` their
    LOOM JSON keys, ``LayerConfig`` Go's field names (:mod:`loom.compat.layer_json`),
    a ``Network`` its grid summary. Go's trailing ``error`` slot is not part of the
    list: a failure is never ``[..., {}]`` but one of the error strings below.

Errors (how LOOM's WASM build returns them: a plain string instead of the JSON)
    =========================================  ========================================================
    ``No arguments provided: ...``             no / empty argument text for a method that needs some
    ``Invalid JSON input: ...``                not JSON, not a JSON array, or not a string at all
    ``Expected N parameters, got M: ...``      wrong arity; names the method and its parameters
    ``Name: parameter i (name): expected ...``  wrong type; names the method and the parameter
    ``Error: Name: <ErrorType>: <message>``    the method raised a ``loom.errors`` exception
    ``Failed to marshal results: ...``         a result JSON cannot hold (NaN / Inf)
    =========================================  ========================================================

    Each is an :class:`ErrorText` (a ``str`` that also carries ``.exception``). With
    the error mode ``"raise"`` (:func:`set_error_mode`, :func:`error_mode`) the
    exception is raised instead: ``ConfigError`` for the argument errors, the
    method's own exception otherwise, ``ModelFormatError`` for marshal failures.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import enum
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import numpy as np

from loom.backend import to_numpy
from loom.compat.layer_json import layer_config_from_json, layer_config_to_json
from loom.errors import ConfigError, LoomError, ModelFormatError
from loom.nn.introspection import resolved_type_hints, type_name
from loom.nn.layer_config import LayerConfig
from loom.nn.network import Network

__all__ = [
    "ErrorMode",
    "ErrorText",
    "JSONCallError",
    "call_with_json",
    "encode_results",
    "encode_value",
    "error_mode",
    "fail",
    "get_error_mode",
    "set_error_mode",
]

ErrorMode = Literal["return", "raise"]
_error_mode: ContextVar[str] = ContextVar("loom_compat_error_mode", default="return")


class JSONCallError(ConfigError):
    """A JSON argument list that does not fit the method (raised in ``"raise"`` mode)."""


class ErrorText(str):
    """An error returned as text, as LOOM's WASM build does; ``.exception`` is the loom exception."""

    __slots__ = ("exception",)

    def __new__(cls, text: str, exception: BaseException | None = None) -> ErrorText:
        obj = super().__new__(cls, text)
        obj.exception = exception
        return obj


def get_error_mode() -> str:
    """``"return"`` (default: errors come back as strings, as in LOOM's WASM build) or ``"raise"``."""
    return _error_mode.get()


def set_error_mode(mode: ErrorMode) -> None:
    """Set how :mod:`loom.compat` reports errors in the current context: ``"return"`` or ``"raise"``."""
    if mode not in ("return", "raise"):
        raise ConfigError(f"error mode: expected 'return' or 'raise', got {mode!r}")
    _error_mode.set(mode)


@contextlib.contextmanager
def error_mode(mode: ErrorMode) -> Iterator[None]:
    """Context manager: ``with loom.compat.error_mode("raise"): ...``."""
    if mode not in ("return", "raise"):
        raise ConfigError(f"error mode: expected 'return' or 'raise', got {mode!r}")
    token = _error_mode.set(mode)
    try:
        yield
    finally:
        _error_mode.reset(token)


def fail(text: str, exception: BaseException, mode: str | None = None) -> ErrorText:
    """Return ``text`` as an :class:`ErrorText`, or raise ``exception`` in ``"raise"`` mode."""
    if (mode or _error_mode.get()) == "raise":
        raise exception
    return ErrorText(text, exception)


# ---------------------------------------------------------------------------------------------- arguments
def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_NUMBER_TYPES = frozenset({float, int})


class _Mismatch(Exception):
    def __init__(self, where: str, expected: str, value: Any) -> None:
        super().__init__(f"{where}: expected {expected}, got {_json_type(value)}")
        self.where = where


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """``value`` (decoded JSON) as ``annotation`` asks, or :class:`_Mismatch` naming ``where``."""
    if annotation is Any or annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return value
    if annotation is type(None) or annotation is None:
        if value is None:
            return None
        raise _Mismatch(where, "null", value)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        deepest: Exception | None = None
        for member in args:
            if member is type(None):
                continue
            try:
                return _convert(value, member, where)
            except (_Mismatch, ConfigError) as exc:
                inner = getattr(exc, "where", "")
                if inner.startswith((where + "[", where + ".")) and (
                    deepest is None or len(inner) > len(deepest.where)  # type: ignore[attr-defined]
                ):
                    deepest = exc
        if deepest is not None:
            raise deepest  # the element that fit no member, e.g. "parameter 0 (x)[3]: expected float, got string"
        raise _Mismatch(where, type_name(annotation), value)
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch(where, type_name(annotation), value)
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, list):
            raise _Mismatch(where, type_name(annotation), value)
        item = args[0] if args else Any
        if item is float and _NUMBER_TYPES.issuperset(map(type, value)):
            return value  # fast path: a list of numbers (an input vector) needs no conversion
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list) or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            raise _Mismatch(where, type_name(annotation), value)
        if args and args[-1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise _Mismatch(where, type_name(annotation), value)
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    return _convert_class(value, annotation, where)


def _convert_class(value: Any, cls: Any, where: str) -> Any:
    if cls is bool:
        if isinstance(value, bool):
            return value
    elif cls is int:
        if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
    elif cls is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif cls is str:
        if isinstance(value, str):
            return value
    elif cls is Path:
        if isinstance(value, str):
            return Path(value)
    elif cls is np.ndarray:
        if isinstance(value, list):
            _check_numbers(value, where)
            return value  # nested lists of numbers; the method checks the shape
    elif cls is LayerConfig:
        if isinstance(value, dict):
            return layer_config_from_json(value, where)
    elif isinstance(cls, type) and isinstance(value, dict) and hasattr(cls, "from_dict"):
        return cls.from_dict(value)
    raise _Mismatch(where, type_name(cls), value)


def _check_numbers(value: list[Any], where: str) -> None:
    """Raise :class:`_Mismatch` at the first element of a nested list that is not a number."""
    for i, item in enumerate(value):
        if isinstance(item, list):
            _check_numbers(item, f"{where}[{i}]")
        elif isinstance(item, bool) or not isinstance(item, int | float):
            raise _Mismatch(f"{where}[{i}]", "float", item)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The positional parameters of a callable and their resolved annotations."""

    owner: str
    names: tuple[str, ...]
    annotations: tuple[Any, ...]
    required: int

    @property
    def signature(self) -> str:
        return f"{self.owner}({', '.join(self.names)})"


def spec_of(func: Callable[..., Any], owner: str) -> _Spec:
    """Positional parameters (``self`` excluded) of ``func`` with resolved annotations."""
    hints = resolved_type_hints(func)
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = sum(1 for p in params if p.default is inspect.Parameter.empty)
    return _Spec(owner, tuple(p.name for p in params), tuple(hints.get(p.name, p.annotation) for p in params), required)


def _plural(n: int) -> str:
    return f"{n} parameter" + ("" if n == 1 else "s")


def _single_text_parameter(spec: _Spec) -> bool:
    """One (positional) parameter, and it takes a string: the bare text may stand for the argument list."""
    return len(spec.names) == 1 and _convertible_to_str(spec.annotations[0])


def _convertible_to_str(annotation: Any) -> bool:
    try:
        _convert("x", annotation, "x")
    except (_Mismatch, ConfigError):
        return False
    return True


def decode_arguments(spec: _Spec, text: Any) -> list[Any]:
    """The converted positional arguments of ``spec`` from the JSON text of their list.

    Raises
    ------
    JSONCallError
        With the WASM build's message prefixes (see the module docstring).
    """
    owner = spec.owner
    if text is None or (isinstance(text, str | bytes) and not text.strip()):
        if spec.required == 0:
            return []
        raise JSONCallError(
            f"No arguments provided: {spec.signature} expects {_plural(spec.required)}; pass the JSON text "
            f"of the argument list, e.g. json.dumps([...])"
        )
    if not isinstance(text, str | bytes | bytearray):
        raise JSONCallError(
            f"Invalid JSON input: {owner} takes the JSON text of its argument list (a string), got a "
            f"{type(text).__name__}; call it as {owner}(json.dumps([...])) or use the native loom.Network "
            f"method with Python values"
        )
    try:
        values = json.loads(text)
    except ValueError as exc:
        if _single_text_parameter(spec) and isinstance(text, str):
            values = [text]  # README style HasMethod("ForwardCPU"): the bare text is the one argument
        else:
            raise JSONCallError(f"Invalid JSON input: {owner}: {exc}") from None
    if not isinstance(values, list):
        if _single_text_parameter(spec) and isinstance(values, str):
            values = [values]
        else:
            raise JSONCallError(
                f"Invalid JSON input: {owner} expects a JSON array of its arguments {list(spec.names)}, "
                f"got a JSON {_json_type(values)}"
            )
    n, most = len(values), len(spec.names)
    if not spec.required <= n <= most:
        expected = str(most) if spec.required == most else f"{spec.required} to {most}"
        if n < spec.required:
            detail = "missing " + ", ".join(spec.names[n : spec.required])
        else:
            detail = f"{n - most} extra argument(s) after {spec.names[-1] if spec.names else 'none'}"
        raise JSONCallError(f"Expected {expected} parameters, got {n}: {spec.signature}: {detail}")
    args = []
    for i, value in enumerate(values):
        where = f"{owner}: parameter {i} ({spec.names[i]})"
        try:
            args.append(_convert(value, spec.annotations[i], where))
        except _Mismatch as exc:
            raise JSONCallError(str(exc)) from None
        except (ConfigError, TypeError, ValueError) as exc:
            raise JSONCallError(str(exc) if str(exc).startswith(owner) else f"{where}: {exc}") from None
    return args


# ---------------------------------------------------------------------------------------------- results
class _MarshalError(Exception):
    pass


def network_summary(net: Any) -> dict[str, int]:
    """Go's GetNetworkInfo: ``{"batch_size", "grid_cols", "grid_rows", "layers_per_cell", "total_layers"}``."""
    return {
        "batch_size": net.batch_size,
        "grid_cols": net.grid_cols,
        "grid_rows": net.grid_rows,
        "layers_per_cell": net.layers_per_cell,
        "total_layers": net.total_layers(),
    }


def encode_value(value: Any) -> Any:
    """A JSON-ready form of one result (see the module docstring); NaN / Inf raise."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return encode_value(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _MarshalError(f"unsupported value: {value}")
        return value
    if isinstance(value, np.generic):
        return encode_value(value.item())
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        array = to_numpy(value)
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise _MarshalError("unsupported value: NaN or Inf in an array")
        return array.tolist()
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode_value(v) for k, v in value.items()}
    if isinstance(value, LayerConfig):
        return layer_config_to_json(value)
    if isinstance(value, Network):
        return network_summary(value)
    if callable(getattr(value, "to_dict", None)):
        return encode_value(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encode_value(dataclasses.asdict(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Iterator):
        return [encode_value(v) for v in value]
    raise _MarshalError(f"unsupported type {type(value).__name__}")


def encode_results(result: Any) -> str:
    """JSON text of the result list: ``None`` -> ``[]``, a tuple -> its items, else ``[result]``."""
    items = [] if result is None else list(result) if isinstance(result, tuple) else [result]
    return json.dumps([encode_value(v) for v in items], allow_nan=False)


# ---------------------------------------------------------------------------------------------- calls
def call_with_json(func: Callable[..., Any], spec: _Spec, text: Any, mode: str | None = None) -> str:
    """Call ``func`` with the arguments decoded from ``text``; the JSON text of its results or an error.

    Parameters
    ----------
    func : callable
        The (bound) callable.
    spec : _Spec
        Its positional parameters (:func:`spec_of`).
    text : str
        The JSON text of the argument list.
    mode : {"return", "raise"}, optional
        Error mode (default: the context's, :func:`get_error_mode`).

    Returns
    -------
    str
        JSON text of the result list, or an :class:`ErrorText`.
    """
    try:
        args = decode_arguments(spec, text)
    except JSONCallError as exc:
        return fail(str(exc), exc, mode)
    try:
        result = func(*args)
    except LoomError as exc:
        return fail(f"Error: {spec.owner}: {type(exc).__name__}: {exc}", exc, mode)
    except (TypeError, ValueError, IndexError, KeyError) as exc:  # bad values the method did not name
        error = ConfigError(f"{spec.owner}: {exc}")
        return fail(f"Error: {spec.owner}: {type(exc).__name__}: {exc}", error, mode)
    try:
        return encode_results(result)
    except _MarshalError as exc:
        error = ModelFormatError(f"{spec.owner}: cannot write the result as JSON ({exc})")
        return fail(f"Failed to marshal results: {spec.owner}: {exc}", error, mode)
