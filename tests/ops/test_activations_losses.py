"""The activation and loss ops on the namespace under test: LOOM conventions, finite differences, errors."""

from __future__ import annotations

import numpy as np
import pytest

import loom
from loom.ops.activations import ACTIVATION_NAMES, activate, activation_derivative
from loom.ops.losses import clip_by_global_norm, cross_entropy_grad, cross_entropy_loss, mse_grad, mse_loss
from tests.ops.helpers import put

ACTIVATIONS = sorted(set(ACTIVATION_NAMES))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_derivative_matches_finite_differences(xp, activation):
    act = loom.Activation(ACTIVATION_NAMES[activation])
    x = put(xp, np.linspace(-4.3, 4.1, 37), "float64")
    eps = 1e-6
    numeric = (activate(x + eps, act, xp) - activate(x - eps, act, xp)) / (2 * eps)
    np.testing.assert_allclose(loom.to_numpy(activation_derivative(x, act, xp)), loom.to_numpy(numeric), atol=2e-6)


def test_loom_activation_conventions(xp):
    x = put(xp, [-1.0, 0.0, 2.0])
    np.testing.assert_allclose(loom.to_numpy(activate(x, 0, xp)), [0.0, 0.0, 2.2], rtol=1e-6)
    assert loom.to_numpy(activation_derivative(x, 0, xp)).tolist() == pytest.approx([0.0, 0.0, 1.1])
    assert loom.to_numpy(activation_derivative(x, 4, xp)).tolist() == pytest.approx([0.1, 1.0, 1.0])
    np.testing.assert_allclose(loom.to_numpy(activate(x, 4, xp)), [-0.1, 0.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_loss_gradients_match_finite_differences(xp, loss):
    rng = np.random.default_rng(3)
    y = put(xp, rng.uniform(0.05, 0.95, 6), "float64")
    t = put(xp, [0.0, 1.0, 0.0, 0.5, 0.0, 0.25], "float64")
    value, grad = (mse_loss, mse_grad) if loss == "mse" else (cross_entropy_loss, cross_entropy_grad)
    g = loom.to_numpy(grad(y, t, xp))
    eps = 1e-7
    for i in range(6):
        e = np.zeros(6)
        e[i] = eps
        plus = value(y + put(xp, e, "float64"), t, xp)
        minus = value(y - put(xp, e, "float64"), t, xp)
        assert g[i] == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-8)


def test_loss_values_follow_loom(xp):
    y = put(xp, [0.5, 0.0])
    t = put(xp, [1.0, 0.0])
    assert mse_loss(y, t, xp) == pytest.approx(0.125)
    assert cross_entropy_loss(y, t, xp) == pytest.approx(-np.log(0.5) / 2)
    assert loom.to_numpy(cross_entropy_grad(y, t, xp)).tolist() == pytest.approx([-1.0, 0.0])


def test_target_length_mismatch_is_a_shape_error(xp):
    with pytest.raises(loom.errors.ShapeError, match="expected 2 values"):
        mse_loss(put(xp, [0.1, 0.2]), put(xp, [0.1]), xp)


def test_clip_by_global_norm(xp):
    grads = [put(xp, [3.0, 0.0]), put(xp, [4.0])]
    norm = clip_by_global_norm(grads, 1.0, xp)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(loom.to_numpy(grads[0]), [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(loom.to_numpy(grads[1]), [0.8], rtol=1e-6)


def test_backend_fast_paths_equal_the_standard_spelling(xp):
    """loom.backend.fast_paths: NumPy's own methods where they are faster, the same values everywhere."""
    from loom.backend import fast_paths

    x = put(xp, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    np.testing.assert_array_equal(
        loom.to_numpy(fast_paths.reshape(x, (6, 4), xp)), loom.to_numpy(xp.reshape(x, (6, 4)))
    )
    np.testing.assert_array_equal(
        loom.to_numpy(fast_paths.permute_dims(x, (2, 0, 1), xp)), loom.to_numpy(xp.permute_dims(x, (2, 0, 1)))
    )
    np.testing.assert_array_equal(
        loom.to_numpy(fast_paths.matrix_transpose(x, xp)), loom.to_numpy(xp.matrix_transpose(x))
    )
    wide = fast_paths.astype(x, xp.float64, xp)
    assert str(wide.dtype).endswith("float64") and wide is not x
    one = fast_paths.constant(1.5, xp, xp.float32)
    if type(x) is np.ndarray:  # NumPy: a read-only 0-d array of the dtype, and NumPy's own ufunc
        assert one.shape == () and one.dtype == np.float32 and not one.flags.writeable
        assert fast_paths.elementwise(xp, "sign") is np.sign
    else:  # every other namespace: the plain float and the namespace's own function
        assert one == 1.5 and isinstance(one, float)
        assert fast_paths.elementwise(xp, "sign") is xp.sign
