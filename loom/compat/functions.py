"""The global functions of LOOM's WASM/JavaScript API, over loom's Pythonic API.

===============================================  ==============================================
LOOM (JavaScript)                                here
===============================================  ==============================================
``createNetworkFromJSON(jsonConfig)``            :func:`createNetworkFromJSON` -> CompatNetwork
``createLoomNetwork(jsonConfigOrBundle)``        :func:`createLoomNetwork` (config **or** saved bundle)
``loadLoomNetwork(json, id)``                    :func:`loadLoomNetwork` -> CompatNetwork
``LoadModelFromString(json, id)``                :func:`LoadModelFromString` -> CompatNetwork
``NewNetwork(inputSize, rows, cols, lpc)``       :func:`NewNetwork` -> CompatNetwork
``CallLayerInit(name, argsJSON)``                :func:`CallLayerInit` -> JSON text of a LayerConfig
``InitDenseLayer(784, 128, 0)`` & every          JSON text of a LayerConfig (Go field names)
``Init*Layer`` of the registry
``ListLayerInitFunctions()``                     JSON text ``[{"Name", "NumArgs", "ArgTypes"}]``
===============================================  ==============================================

Arguments are native (``NewNetwork(784, 1, 1, 2)``, ``InitDenseLayer(784, 128, 0)``)
except where LOOM passes JSON text (the config, the bundle, ``CallLayerInit``'s
argument list). Failures come back as LOOM's WASM build returns them —
``"Error: failed to create network: ..."``, ``"Error: failed to load network: ..."``,
``"Error: <Function>: ..."`` (an :class:`~loom.compat.bridge.ErrorText`) — or are
raised in the ``"raise"`` error mode.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from loom.backend import Backend
from loom.compat.bridge import ErrorText, JSONCallError, decode_arguments, fail, spec_of
from loom.compat.layer_json import layer_config_to_json
from loom.compat.network import CompatNetwork
from loom.errors import LoomError
from loom.nn.network import create_network_from_json, load_model_from_string, new_network
from loom.nn.registry import LAYER_INIT_FUNCTIONS

__all__ = [
    "INIT_LAYER_FUNCTIONS",
    "CallLayerInit",
    "ListLayerInitFunctions",
    "LoadModelFromString",
    "NewNetwork",
    "createLoomNetwork",
    "createNetworkFromJSON",
    "loadLoomNetwork",
]


def createNetworkFromJSON(
    json_config: str | bytes | dict[str, Any],
    *,
    seed: int | None = None,
    backend: str | Backend | None = None,
    errors: str | None = None,
) -> CompatNetwork | ErrorText:
    """Build a network from LOOM JSON (a config, or a saved bundle) and wrap it in LOOM's JSON convention.

    Parameters
    ----------
    json_config : str, bytes or dict
        ``JSON.stringify(config)`` of a network config, or the text of a saved bundle.
    seed : int, optional
        Seed of the initial weights (the same seed gives the same weights as
        ``loom.create_network_from_json(config, seed=seed)``).
    backend : str, optional
        ``"numpy"`` or ``"cupy"``.
    errors : {"return", "raise"}, optional
        Error mode (default: the context's).

    Returns
    -------
    CompatNetwork or ErrorText
        ``"Error: failed to create network: <why>"`` on failure (``"return"`` mode).
    """
    try:
        network = create_network_from_json(json_config, backend=backend, seed=seed)
    except LoomError as exc:
        return fail(f"Error: failed to create network: {exc}", exc, errors)
    return CompatNetwork(network, errors=errors)


def createLoomNetwork(
    json_config: str | bytes | dict[str, Any],
    *,
    seed: int | None = None,
    backend: str | Backend | None = None,
    errors: str | None = None,
) -> CompatNetwork | ErrorText:
    """LOOM WASM's ``createLoomNetwork``: a config **or** a saved bundle (``localStorage`` round trip).

    See :func:`createNetworkFromJSON` (the same function under the README's other name).
    """
    return createNetworkFromJSON(json_config, seed=seed, backend=backend, errors=errors)


def loadLoomNetwork(
    json_string: str | bytes,
    model_id: str | None = None,
    *,
    backend: str | Backend | None = None,
    errors: str | None = None,
) -> CompatNetwork | ErrorText:
    """Load a saved bundle (``SaveModelToString`` output) as a JSON-convention network.

    Parameters
    ----------
    json_string : str
        The bundle text (Go LOOM's or loom's).
    model_id : str, optional
        Which model of the bundle (default: the first).

    Returns
    -------
    CompatNetwork or ErrorText
        ``"Error: failed to load network: <why>"`` on failure (``"return"`` mode).
    """
    try:
        network = load_model_from_string(json_string, model_id, backend=backend)
    except LoomError as exc:
        return fail(f"Error: failed to load network: {exc}", exc, errors)
    return CompatNetwork(network, errors=errors)


def LoadModelFromString(
    json_string: str | bytes,
    model_id: str | None = None,
    *,
    backend: str | Backend | None = None,
    errors: str | None = None,
) -> CompatNetwork | ErrorText:
    """The README's ``LoadModelFromString(modelJSONString, "model_id")``; see :func:`loadLoomNetwork`."""
    return loadLoomNetwork(json_string, model_id, backend=backend, errors=errors)


def NewNetwork(
    input_size: int,
    grid_rows: int,
    grid_cols: int,
    layers_per_cell: int,
    *,
    batch_size: int = 1,
    backend: str | Backend | None = None,
    errors: str | None = None,
) -> CompatNetwork | ErrorText:
    """An empty grid network (size-less Dense placeholders) to fill with ``SetLayer``.

    ``NewNetwork(784, 1, 1, 2)`` as in the README's "Creating Networks from Scratch".
    """
    try:
        for name, value in (
            ("input_size", input_size),
            ("grid_rows", grid_rows),
            ("grid_cols", grid_cols),
            ("layers_per_cell", layers_per_cell),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise JSONCallError(f"NewNetwork: {name}: expected a non-negative integer, got {value!r}")
        network = new_network(input_size, grid_rows, grid_cols, layers_per_cell, batch_size=batch_size, backend=backend)
    except (LoomError, TypeError, ValueError) as exc:
        error = exc if isinstance(exc, LoomError) else JSONCallError(f"NewNetwork: {exc}")
        return fail(f"Error: failed to create network: {exc}", error, errors)
    return CompatNetwork(network, errors=errors)


def _layer_json_text(value: Any) -> str:
    return json.dumps(layer_config_to_json(value), allow_nan=False)


def CallLayerInit(name: str, args_json: str | bytes | Sequence[Any] = "[]", *, errors: str | None = None) -> str:
    """Call a layer-init function by name with the JSON text of its arguments.

    Parameters
    ----------
    name : str
        ``"InitDenseLayer"``, ``"InitMultiHeadAttentionLayer"``, ... (``ListLayerInitFunctions()``).
    args_json : str
        ``JSON.stringify([784, 392, 0])`` (a Python list is accepted too).

    Returns
    -------
    str
        The JSON text of the new ``LayerConfig`` (Go field names), ready for
        ``network.SetLayer(json.dumps([row, col, layer, json.loads(text)]))``; or an
        ``"Error: ..."`` text.
    """
    func = LAYER_INIT_FUNCTIONS.get(name) if isinstance(name, str) else None
    if func is None:
        error = JSONCallError(f"layer init function {name!r} not found; available: {sorted(LAYER_INIT_FUNCTIONS)}")
        return fail(f"Error: {error}", error, errors)
    spec = spec_of(func, name)
    try:
        if isinstance(args_json, list | tuple):
            args_json = json.dumps(list(args_json))
        args = decode_arguments(spec, args_json)
    except (JSONCallError, TypeError, ValueError) as exc:
        error = exc if isinstance(exc, JSONCallError) else JSONCallError(f"{name}: {exc}")
        return fail(str(error), error, errors)
    return _call_init(name, func, args, errors)


def _call_init(name: str, func: Callable[..., Any], args: Sequence[Any], errors: str | None) -> str:
    try:
        return _layer_json_text(func(*args))
    except LoomError as exc:
        return fail(f"Error: {name}: {type(exc).__name__}: {exc}", exc, errors)
    except (TypeError, ValueError) as exc:
        error = JSONCallError(f"{name}: {exc}")
        return fail(f"Error: {name}: {exc}", error, errors)


def _json_init_function(name: str, func: Callable[..., Any]) -> Callable[..., str]:
    """``name`` with native arguments, returning the JSON text of the LayerConfig (as in LOOM's WASM)."""

    @functools.wraps(func)
    def init_layer(*args: Any, **kwargs: Any) -> str:
        return _call_init(name, functools.partial(func, **kwargs), args, None)

    init_layer.__name__ = init_layer.__qualname__ = name
    init_layer.__annotations__ = {**getattr(func, "__annotations__", {}), "return": "str"}
    init_layer.__doc__ = (
        f"LOOM's ``{name}`` with native arguments, returning the JSON text of the ``LayerConfig`` "
        f'(Go field names; failures as ``"Error: ..."`` text).\n\n{func.__doc__ or ""}'
    )
    return init_layer


#: Every ``Init*Layer`` of the registry, returning JSON text: ``InitDenseLayer(784, 128, 0)`` -> ``'{"Type": 0, ...}'``.
INIT_LAYER_FUNCTIONS: dict[str, Callable[..., str]] = {
    name: _json_init_function(name, func) for name, func in sorted(LAYER_INIT_FUNCTIONS.items())
}


def ListLayerInitFunctions() -> str:
    """JSON text of ``[{"Name", "NumArgs", "ArgTypes"}]`` for every registered function (sorted by name)."""
    entries = []
    for name, func in sorted(LAYER_INIT_FUNCTIONS.items()):
        spec = spec_of(func, name)
        entries.append(
            {
                "Name": name,
                "NumArgs": len(spec.names),
                "ArgTypes": [_type_text(a) for a in spec.annotations],
                "ArgNames": list(spec.names),
            }
        )
    return json.dumps(entries)


def _type_text(annotation: Any) -> str:
    from loom.nn.introspection import type_name

    return type_name(annotation)
