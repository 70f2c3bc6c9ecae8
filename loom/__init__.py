"""loom: LOOM grid neural networks and transformer inference on the Python array API.

Quick start::

    import loom
    net = loom.create_network_from_json(config_json)
    result = net.train(batches, {"Epochs": 100, "LearningRate": 0.1})
    text = net.save_model_to_string("my_model")
"""

from loom import errors
from loom._version import __version__
from loom.backend import get_backend, set_backend, to_numpy, use_backend
from loom.nn import (  # training workflows
    Callback,
    DeviationMetrics,
    EarlyStopping,
    GridPosition,
    History,
    LayerConfig,
    ModelCheckpoint,
    Network,
    TrainingBatch,
    TrainingConfig,
    TrainingResult,
    create_network_from_json,
    evaluate_predictions,
    load_model,
    load_model_from_string,
    new_network,
    plot_history,
)
from loom.nn.registry import (
    call_layer_init,
    init_conv2d_layer,
    init_dense_layer,
    init_layer_norm_layer,
    init_lstm_layer,
    init_multi_head_attention_layer,
    init_parallel_layer,
    init_rms_norm_layer,
    init_rnn_layer,
    init_softmax_layer,
    init_swiglu_layer,
    list_layer_init_functions,
)
from loom.ops.activations import Activation

load_loom_network = load_model_from_string
LoadModelFromString = load_model_from_string
CreateNetworkFromJSON = create_network_from_json
createNetworkFromJSON = create_network_from_json
loadLoomNetwork = load_model_from_string
NewNetwork = new_network
CallLayerInit = call_layer_init
ListLayerInitFunctions = list_layer_init_functions

# ---------------------------------------------------------------- LOOM README names (native Python values)
# JSON-text versions of all of these live in loom.compat. The CamelCase functions reject
# JSON text where they expect Python values (ConfigError pointing to loom.compat).
from loom.json_text import JSONText  # noqa: E402
from loom.nn.go_compat import go_compatibility_report  # noqa: E402
from loom.nn.loom_names import takes_python_values_function as _native  # noqa: E402
from loom.nn.registry import (  # noqa: E402
    LAYER_INIT_FUNCTIONS as _INIT,
)
from loom.nn.registry import (  # noqa: E402
    init_entmax_layer,
    init_grid_softmax_layer,
    init_gumbel_softmax_layer,
    init_hierarchical_softmax_layer,
    init_masked_softmax_layer,
    init_sparsemax_layer,
    init_temperature_softmax_layer,
)

createLoomNetwork = create_network_from_json  # a config or a saved bundle, as the README uses it
CallLayerInit = _native(call_layer_init, "CallLayerInit")
InitDenseLayer = _native(_INIT["InitDenseLayer"], "InitDenseLayer")
InitConv2DLayer = _native(_INIT["InitConv2DLayer"], "InitConv2DLayer")
InitMultiHeadAttentionLayer = _native(_INIT["InitMultiHeadAttentionLayer"], "InitMultiHeadAttentionLayer")
InitRNNLayer = _native(_INIT["InitRNNLayer"], "InitRNNLayer")
InitLSTMLayer = _native(_INIT["InitLSTMLayer"], "InitLSTMLayer")
InitSoftmaxLayer = _native(_INIT["InitSoftmaxLayer"], "InitSoftmaxLayer")
InitGridSoftmaxLayer = _native(_INIT["InitGridSoftmaxLayer"], "InitGridSoftmaxLayer")
InitHierarchicalSoftmaxLayer = _native(_INIT["InitHierarchicalSoftmaxLayer"], "InitHierarchicalSoftmaxLayer")
InitTemperatureSoftmaxLayer = _native(_INIT["InitTemperatureSoftmaxLayer"], "InitTemperatureSoftmaxLayer")
InitGumbelSoftmaxLayer = _native(_INIT["InitGumbelSoftmaxLayer"], "InitGumbelSoftmaxLayer")
InitMaskedSoftmaxLayer = _native(_INIT["InitMaskedSoftmaxLayer"], "InitMaskedSoftmaxLayer")
InitSparsemaxLayer = _native(_INIT["InitSparsemaxLayer"], "InitSparsemaxLayer")
InitEntmaxLayer = _native(_INIT["InitEntmaxLayer"], "InitEntmaxLayer")
InitLayerNormLayer = _native(_INIT["InitLayerNormLayer"], "InitLayerNormLayer")
InitRMSNormLayer = _native(_INIT["InitRMSNormLayer"], "InitRMSNormLayer")
InitSwiGLULayer = _native(_INIT["InitSwiGLULayer"], "InitSwiGLULayer")
InitParallelLayer = _native(_INIT["InitParallelLayer"], "InitParallelLayer")

#: Names resolved on first use (importing loom.llm costs ~30 ms; loom.compat pulls in more).
_LAZY = {
    "LoadTokenizerFromBytes": "loom.llm.api",
    "LoadTransformerFromBytes": "loom.llm.api",
    "EncodeText": "loom.llm.api",
    "DecodeTokens": "loom.llm.api",
    "GenerateText": "loom.llm.api",
    "GenerateNextToken": "loom.llm.api",
    "compat": "loom.compat",
    "llm": "loom.llm",
}


def __getattr__(name: str):
    """Lazy names: the LOOM transformer functions (``loom.GenerateText``, ...), ``loom.compat``, ``loom.llm``."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'loom' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(module_name)
    value = module if module_name.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Activation",
    "CallLayerInit",
    "Callback",
    "CreateNetworkFromJSON",
    "DecodeTokens",
    "DeviationMetrics",
    "EarlyStopping",
    "EncodeText",
    "GenerateNextToken",
    "GenerateText",
    "GridPosition",
    "History",
    "InitConv2DLayer",
    "InitDenseLayer",
    "InitEntmaxLayer",
    "InitGridSoftmaxLayer",
    "InitGumbelSoftmaxLayer",
    "InitHierarchicalSoftmaxLayer",
    "InitLSTMLayer",
    "InitLayerNormLayer",
    "InitMaskedSoftmaxLayer",
    "InitMultiHeadAttentionLayer",
    "InitParallelLayer",
    "InitRMSNormLayer",
    "InitRNNLayer",
    "InitSoftmaxLayer",
    "InitSparsemaxLayer",
    "InitSwiGLULayer",
    "InitTemperatureSoftmaxLayer",
    "JSONText",
    "LayerConfig",
    "ListLayerInitFunctions",
    "LoadModelFromString",
    "LoadTokenizerFromBytes",
    "LoadTransformerFromBytes",
    "ModelCheckpoint",
    "Network",
    "NewNetwork",
    "TrainingBatch",
    "TrainingConfig",
    "TrainingResult",
    "__version__",
    "call_layer_init",
    "compat",
    "createLoomNetwork",
    "createNetworkFromJSON",
    "create_network_from_json",
    "errors",
    "evaluate_predictions",
    "get_backend",
    "go_compatibility_report",
    "init_conv2d_layer",
    "init_dense_layer",
    "init_entmax_layer",
    "init_grid_softmax_layer",
    "init_gumbel_softmax_layer",
    "init_hierarchical_softmax_layer",
    "init_layer_norm_layer",
    "init_lstm_layer",
    "init_masked_softmax_layer",
    "init_multi_head_attention_layer",
    "init_parallel_layer",
    "init_rms_norm_layer",
    "init_rnn_layer",
    "init_softmax_layer",
    "init_sparsemax_layer",
    "init_swiglu_layer",
    "init_temperature_softmax_layer",
    "list_layer_init_functions",
    "llm",
    "loadLoomNetwork",
    "load_loom_network",
    "load_model",
    "load_model_from_string",
    "new_network",
    "plot_history",
    "set_backend",
    "to_numpy",
    "use_backend",
]
