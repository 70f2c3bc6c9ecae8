"""Softmax with batch > 1: every sample is its own distribution, in every variant (issue #11).

Go LOOM normalises the whole flat batch as one vector; loom splits it per sample
(docs/differences-from-go.md). Checked on inputs hypothesis draws: each sample's rows sum
to 1, a batch equals its samples run one by one, and the gradients match finite
differences at batch sizes 2-4.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loom
from tests.layer_harness import check_layer

N = 6
VARIANTS = {
    "standard": {"softmax_variant": "standard"},
    "temperature": {"softmax_variant": "temperature", "temperature": 0.7},
    "grid": {"softmax_variant": "grid", "softmax_rows": 2, "softmax_cols": 3, "temperature": 1.3},
    "hierarchical": {"softmax_variant": "hierarchical", "hierarchy_levels": [3, 2]},
    "gumbel": {"softmax_variant": "gumbel", "temperature": 0.9},
    "masked": {"softmax_variant": "masked", "mask": [True, False, True, True, False, True]},
    "sparse": {"softmax_variant": "sparse"},
    "adaptive": {"softmax_variant": "adaptive"},
    "mixture": {"softmax_variant": "mixture", "mixture_weights": [0.5, 0.5]},
    "entmax": {"softmax_variant": "entmax", "entmax_alpha": 1.5},
}
#: Columns of one distribution (grid rows / hierarchy rows sum to 1 separately).
ROW = {"grid": 3, "hierarchical": 2}


def _net(fields: dict, batch: int) -> loom.Network:
    config = {
        "batch_size": batch,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 1,
        "input_size": N,
        "layers": [{"type": "softmax", **fields}],
    }
    return loom.create_network_from_json(config, seed=0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 8),
    data=st.data(),
)
def test_rows_sum_to_one_per_sample_and_match_single_samples(variant: str, batch: int, data) -> None:
    values = data.draw(st.lists(st.floats(-20, 20, width=32), min_size=batch * N, max_size=batch * N))
    x = np.asarray(values, np.float32)
    fields = VARIANTS[variant]
    batched = _net(fields, batch)
    batched.seed(5)
    p = loom.to_numpy(batched.forward(x)).reshape(batch, N)
    cols = ROW.get(variant, N)
    np.testing.assert_allclose(p.reshape(batch, -1, cols).sum(axis=-1), 1.0, rtol=2e-6, atol=2e-6)
    assert np.all(p >= 0)
    if variant == "masked":
        assert np.all(p[:, ~np.array(fields["mask"])] < 1e-30)
    if variant == "gumbel":
        return  # noise differs between a batch and its samples; the sums above are the claim
    single = _net(fields, 1)
    for b in range(batch):
        np.testing.assert_allclose(p[b], loom.to_numpy(single.forward(x[b * N : (b + 1) * N])), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - {"gumbel"}))
@pytest.mark.parametrize("batch", [2, 4])
def test_per_sample_gradients_match_finite_differences(variant: str, batch: int, backend) -> None:
    head = [{"type": "dense", "input_size": N, "output_size": 3, "activation": "tanh"}]
    check_layer(
        {"type": "softmax", **VARIANTS[variant]},
        input_size=N,
        batch_size=batch,
        backend=backend,
        extra_layers=head,
        input_scale=2.0,
        seed=batch,
    )


def test_batch_one_is_unchanged_and_two_d_input_is_per_row(backend) -> None:
    """At batch 1 the whole vector is one distribution, as in Go; a 2-D input is split per row."""
    x = np.linspace(-1, 2, N, dtype=np.float32)
    one = loom.to_numpy(_net(VARIANTS["standard"], 1).forward(x))
    e = np.exp(x - x.max())
    np.testing.assert_allclose(one, e / e.sum(), rtol=1e-6)
    rows = loom.to_numpy(_net(VARIANTS["standard"], 1).forward(np.stack([x, 2 * x])))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-6)


def test_cross_entropy_training_decreases_the_loss_with_batches() -> None:
    """The stall of issue #11: with per-sample softmax, batched cross-entropy training learns."""
    config = {
        "batch_size": 4,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 2,
        "input_size": 3,
        "layers": [{"type": "dense", "output_size": 3, "activation": "linear"}, {"type": "softmax"}],
    }
    net = loom.create_network_from_json(config, seed=2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    t = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    result = net.train([(x, t)], {"epochs": 60, "learning_rate": 2.0, "loss_type": "cross_entropy"})
    assert result.loss_history[-1] < 0.5 * result.loss_history[0]
    p = loom.to_numpy(net.forward(x)).reshape(4, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert (p.argmax(axis=1) == [0, 1, 2, 0]).all()


def test_flat_input_not_divisible_by_batch_is_a_shape_error() -> None:
    net = _net(VARIANTS["standard"], 4)
    with pytest.raises(
        loom.errors.ShapeError, match=r"layers\[0\] \(softmax\): expected a positive multiple of batch 4"
    ):
        net.forward(np.zeros(6, np.float32))
