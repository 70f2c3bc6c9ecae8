"""Layer kinds: one module per LOOM layer type, registered by type name."""

from loom.nn.layers import (  # noqa: F401  (registers the kinds)
    attention,
    conv2d,
    dense,
    norms,
    parallel,
    recurrent,
    residual,
    softmax,
    swiglu,
)
from loom.nn.layers.base import (
    ForwardContext,
    LayerKind,
    add_grad,
    kind_for,
    kind_names,
    memoized,
    register_kind,
)

__all__ = ["ForwardContext", "LayerKind", "add_grad", "kind_for", "kind_names", "memoized", "register_kind"]
