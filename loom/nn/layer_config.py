"""``LayerConfig``: one layer's full description (type, activation, sizes, weights).

A LayerConfig carries the hyper-parameters of every LOOM layer type (only the
ones of its ``type`` matter), its parameters (``params``: LOOM weight name ->
backend array), the gradients of the last backward pass (``grads``, same
keys) and recurrent ``state``. Parallel layers hold their branches as nested
LayerConfigs. The math lives in :mod:`loom.nn.layers`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from loom.ops.activations import Activation

__all__ = ["LAYER_TYPE_IDS", "GridPosition", "LayerConfig"]

#: LOOM's LayerType integers, by canonical type name.
LAYER_TYPE_IDS: dict[str, int] = {
    "dense": 0,
    "conv2d": 1,
    "multi_head_attention": 2,
    "rnn": 3,
    "lstm": 4,
    "softmax": 5,
    "layer_norm": 6,
    "residual": 7,
    "rms_norm": 8,
    "swiglu": 9,
    "parallel": 10,
}


@dataclass
class GridPosition:
    """Where a ``grid_scatter`` Parallel puts one branch's output."""

    branch_index: int = 0
    target_row: int = 0
    target_col: int = 0
    target_layer: int = 0


@dataclass(eq=False)
class LayerConfig:
    """Full description of one layer (any LOOM type).

    Sizes follow LOOM's fields: ``input_size`` / ``output_size`` are a Dense
    layer's in/out features, an RNN/LSTM's input features (with ``hidden_size``)
    and a SwiGLU's hidden/intermediate sizes. Arrays live in ``params`` (keys are
    LOOM's weight names, e.g. ``kernel``/``biases`` for Dense) on the network's
    backend.
    """

    type: str = "dense"
    activation: Activation = Activation.SCALED_RELU
    # dense / swiglu / rnn / lstm feature sizes
    input_size: int = 0
    output_size: int = 0
    # conv2d geometry
    input_channels: int = 0
    filters: int = 0
    kernel_size: int = 0
    stride: int = 0
    padding: int = 0
    input_height: int = 0
    input_width: int = 0
    output_height: int = 0
    output_width: int = 0
    # multi-head attention
    d_model: int = 0
    num_heads: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    seq_length: int = 0
    causal: bool = True
    rope_theta: float = 1_000_000.0
    # rnn / lstm
    hidden_size: int = 0
    stateful: bool = False
    # softmax
    softmax_variant: str = "standard"
    softmax_rows: int = 0
    softmax_cols: int = 0
    temperature: float = 0.0
    gumbel_noise: bool = False
    mask: list[bool] | None = None
    hierarchy_levels: list[int] | None = None
    adaptive_clusters: list[list[int]] | None = None
    mixture_weights: list[float] | None = None
    entmax_alpha: float = 0.0
    # layer_norm / rms_norm
    norm_size: int = 0
    epsilon: float = 0.0
    # parallel
    branches: list[LayerConfig] = field(default_factory=list)
    combine_mode: str = "concat"
    grid_positions: list[GridPosition] = field(default_factory=list)
    grid_output_rows: int = 0
    grid_output_cols: int = 0
    grid_output_layers: int = 0
    # arrays (backend arrays, LOOM weight names)
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    grads: dict[str, Any] = field(default_factory=dict, repr=False)
    state: dict[str, Any] = field(default_factory=dict, repr=False)
    #: JSON path of this layer inside its network (``layers[2].branches[0]``), for messages.
    path: str = field(default="layer", repr=False, compare=False)

    @property
    def type_id(self) -> int:
        """LOOM's integer LayerType of this layer."""
        return LAYER_TYPE_IDS.get(self.type, -1)

    def copy(self) -> LayerConfig:
        """Deep copy (arrays included)."""
        return copy.deepcopy(self)

    def iter_layers(self):
        """This layer and, for Parallel, every nested branch (depth first)."""
        yield self
        for branch in self.branches:
            yield from branch.iter_layers()

    def num_parameters(self) -> int:
        """Number of trainable scalars, branches included."""
        return sum(int(p.size) for layer in self.iter_layers() for p in layer.params.values())
