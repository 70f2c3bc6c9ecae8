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

__all__ = [
    "Activation",
    "CallLayerInit",
    "Callback",
    "CreateNetworkFromJSON",
    "DeviationMetrics",
    "EarlyStopping",
    "GridPosition",
    "History",
    "LayerConfig",
    "ListLayerInitFunctions",
    "LoadModelFromString",
    "ModelCheckpoint",
    "Network",
    "NewNetwork",
    "TrainingBatch",
    "TrainingConfig",
    "TrainingResult",
    "__version__",
    "call_layer_init",
    "createNetworkFromJSON",
    "create_network_from_json",
    "errors",
    "evaluate_predictions",
    "get_backend",
    "init_conv2d_layer",
    "init_dense_layer",
    "init_layer_norm_layer",
    "init_lstm_layer",
    "init_multi_head_attention_layer",
    "init_parallel_layer",
    "init_rms_norm_layer",
    "init_rnn_layer",
    "init_softmax_layer",
    "init_swiglu_layer",
    "list_layer_init_functions",
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
