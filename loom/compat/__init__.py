"""LOOM's JSON calling convention (WASM / JavaScript / TypeScript / C#) on loom's Pythonic API.

Code written against LOOM's browser build passes the JSON text of each argument
list and parses the JSON text of each result list. ``loom.compat`` keeps that
convention so such code ports line by line — ``JSON.stringify`` becomes
``json.dumps``, ``JSON.parse`` becomes ``json.loads``::

    import json
    from loom.compat import createNetworkFromJSON, loadLoomNetwork

    network = createNetworkFromJSON(json.dumps(config))
    result = json.loads(network.Train(json.dumps([batches, training_config])))[0]
    output, duration_ns = json.loads(network.ForwardCPU(json.dumps([[0.2] * 4 + [0.8] * 4])))
    model_json = json.loads(network.SaveModelToString(json.dumps(["my_model"])))[0]
    loaded = loadLoomNetwork(model_json, "my_model")

It is one thin layer: a network's methods are bridged by introspection of
:class:`loom.Network` (:mod:`loom.compat.bridge`, :class:`CompatNetwork`), the
``Init*Layer`` functions are generated from the layer-init registry, and nothing
is computed twice. ``network.native`` is the underlying :class:`loom.Network`.

Errors come back the way LOOM's WASM build returns them — a plain string instead
of the JSON (``"Invalid JSON input: ..."``, ``"Expected 2 parameters, got 1: ..."``,
``"Error: failed to create network: ..."``; transformer functions return
``{"error": ..., "success": false}``), each an :class:`ErrorText` carrying the
exception — or are raised with ``loom.compat.set_error_mode("raise")`` /
``with loom.compat.error_mode("raise"):``.

The ``welvet`` package's API lives in :mod:`loom.compat.welvet`.
"""

from loom.compat.bridge import (
    ErrorMode,
    ErrorText,
    JSONCallError,
    error_mode,
    get_error_mode,
    set_error_mode,
)
from loom.compat.functions import (
    INIT_LAYER_FUNCTIONS,
    CallLayerInit,
    ListLayerInitFunctions,
    LoadModelFromString,
    NewNetwork,
    createLoomNetwork,
    createNetworkFromJSON,
    loadLoomNetwork,
)
from loom.compat.layer_json import layer_config_from_json, layer_config_to_json
from loom.compat.network import CompatNetwork, wrap
from loom.compat.transformer import (
    DecodeTokens,
    EncodeText,
    ErrorJSONText,
    GenerateNextToken,
    GenerateText,
    LoadTokenizerFromBytes,
    LoadTransformerFromBytes,
)
from loom.json_text import JSONText

# InitDenseLayer, InitConv2DLayer, InitMultiHeadAttentionLayer, ... : one per registry entry.
globals().update(INIT_LAYER_FUNCTIONS)

__all__ = [  # the Init*Layer names are generated above
    "CallLayerInit",
    "CompatNetwork",
    "DecodeTokens",
    "EncodeText",
    "ErrorJSONText",
    "ErrorMode",
    "ErrorText",
    "GenerateNextToken",
    "GenerateText",
    "JSONCallError",
    "JSONText",
    "ListLayerInitFunctions",
    "LoadModelFromString",
    "LoadTokenizerFromBytes",
    "LoadTransformerFromBytes",
    "NewNetwork",
    "createLoomNetwork",
    "createNetworkFromJSON",
    "error_mode",
    "get_error_mode",
    "layer_config_from_json",
    "layer_config_to_json",
    "loadLoomNetwork",
    "set_error_mode",
    "wrap",
    *sorted(INIT_LAYER_FUNCTIONS),
]
