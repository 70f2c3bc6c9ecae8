"""Dense layers: finite-difference gradients for every activation (the activation and loss ops: tests/ops)."""

from __future__ import annotations

import pytest

from loom.ops.activations import ACTIVATION_NAMES
from tests.layer_harness import check_layer

ACTIVATIONS = sorted(set(ACTIVATION_NAMES))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_gradients_every_activation(backend, activation):
    layer = {"type": "dense", "input_size": 5, "output_size": 4, "activation": activation}
    check_layer(layer, input_size=5, output_size=4, backend=backend, batch_size=2, input_scale=2.0)


def test_dense_stack_with_size_inference(backend):
    layer = {"type": "dense", "input_size": 6, "output_size": 5, "activation": "tanh"}
    extra = [{"type": "dense", "output_size": 3, "activation": "sigmoid"}]
    report = check_layer(layer, input_size=6, backend=backend, extra_layers=extra, batch_size=3)
    assert report.output.shape == (9,)
