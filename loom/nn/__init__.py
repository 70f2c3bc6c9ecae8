"""LOOM grid networks: layers, the grid ``Network``, training, evaluation and model files."""

from loom.nn.evaluation import DeviationMetrics, evaluate_predictions
from loom.nn.layer_config import GridPosition, LayerConfig
from loom.nn.network import (
    Network,
    create_network_from_json,
    load_model,
    load_model_from_string,
    network_from_layers,
    new_network,
)
from loom.nn.plots import plot_history
from loom.nn.serialization import save_model, save_model_to_string
from loom.nn.training import TrainingBatch, TrainingConfig, TrainingResult
from loom.nn.training_callbacks import Callback, EarlyStopping, History, ModelCheckpoint

__all__ = [
    "Callback",
    "DeviationMetrics",
    "EarlyStopping",
    "GridPosition",
    "History",
    "LayerConfig",
    "ModelCheckpoint",
    "Network",
    "TrainingBatch",
    "TrainingConfig",
    "TrainingResult",
    "create_network_from_json",
    "evaluate_predictions",
    "load_model",
    "load_model_from_string",
    "network_from_layers",
    "new_network",
    "plot_history",
    "save_model",
    "save_model_to_string",
]
