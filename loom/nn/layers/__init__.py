"""Layer kinds: one module per LOOM layer type, registered by type name."""

from loom.nn.layers import dense  # noqa: F401  (registers the kind)
from loom.nn.layers.base import (
    ForwardContext,
    LayerKind,
    add_grad,
    kind_for,
    kind_names,
    register_kind,
)

__all__ = ["ForwardContext", "LayerKind", "add_grad", "kind_for", "kind_names", "register_kind"]
