"""``check_layer``: the one test harness every layer type goes through.

Like Keras' ``run_layer_test``: build a one-layer network from its JSON,
check the output shape, compare the backward pass with central finite
differences in float64 (w.r.t. the input and every parameter), round-trip the
model through LOOM's bundle format bit-exactly, and compare NumPy with CuPy
when a GPU is present.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import loom
from loom.backend import cupy_available, resolve_backend, to_numpy


@dataclass
class LayerCheckReport:
    """What :func:`check_layer` measured (for extra assertions in the calling test)."""

    network: Any
    output: np.ndarray
    max_rel_error: dict[str, float] = field(default_factory=dict)


def _network(
    layer: dict[str, Any], batch_size: int, input_size: int | None, backend: Any, seed: int, extra: list | None
):
    layers = [layer, *(extra or [])]
    config = {
        "batch_size": batch_size,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": len(layers),
        "layers": copy.deepcopy(layers),
    }
    if input_size:
        config["input_size"] = input_size
    return loom.create_network_from_json(config, backend=backend, seed=seed)


def _to_float64(net: Any) -> None:
    xp = net.xp
    for cfg in net.iter_all_layers():
        cfg.params = {k: xp.astype(v, xp.float64) for k, v in cfg.params.items()}
        cfg.grads = {}


def _run(net: Any, x: Any, batch_size: int, seed: int) -> Any:
    net.reset_state()
    net.seed(seed)
    return net._forward(x, batch_size)


def _fd_check(
    net: Any,
    x: Any,
    batch_size: int,
    seed: int,
    rng: np.random.Generator,
    *,
    samples: int,
    eps: float,
    rtol: float,
    atol: float,
) -> dict[str, float]:
    """Finite-difference check of d(sum(y * r))/d(input and every parameter)."""
    xp = net.xp
    y = _run(net, x, batch_size, seed)
    r = net._backend.asarray(rng.standard_normal(y.shape[0]), dtype=xp.float64)

    def objective() -> float:
        return float(xp.sum(_run(net, x, batch_size, seed) * r))

    _run(net, x, batch_size, seed)
    grad_x = to_numpy(net._backward(r, False))
    analytic = {f"{cfg.path}.{name}": to_numpy(g) for cfg in net.iter_all_layers() for name, g in cfg.grads.items()}
    errors: dict[str, float] = {}

    def compare(label: str, array: Any, analytic_grad: np.ndarray) -> None:
        flat_size = int(np.prod(array.shape))
        picks = rng.choice(flat_size, size=min(samples, flat_size), replace=False)
        worst = 0.0
        for flat_index in picks:
            index = np.unravel_index(int(flat_index), array.shape)
            original = float(array[index])
            array[index] = original + eps
            plus = objective()
            array[index] = original - eps
            minus = objective()
            array[index] = original
            numeric = (plus - minus) / (2 * eps)
            got = float(analytic_grad[index])
            err = abs(got - numeric)
            assert err <= atol + rtol * abs(numeric), (
                f"{label}[{index}]: backward gives {got!r}, finite differences {numeric!r} (|diff| {err:.3g})"
            )
            worst = max(worst, err / (abs(numeric) + atol))
        errors[label] = worst

    compare("input", x, grad_x)
    for cfg in net.iter_all_layers():
        for name, param in cfg.params.items():
            label = f"{cfg.path}.{name}"
            assert label in analytic, f"{label}: backward produced no gradient for this parameter"
            assert analytic[label].shape == tuple(param.shape), (
                f"{label}: gradient shape {analytic[label].shape} != parameter shape {tuple(param.shape)}"
            )
            compare(label, param, analytic[label])
    return errors


def check_layer(
    layer: dict[str, Any],
    *,
    input_size: int,
    batch_size: int = 1,
    output_size: int | None = None,
    backend: Any = None,
    seed: int = 0,
    extra_layers: list[dict[str, Any]] | None = None,
    fd_samples: int = 12,
    fd_eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    input_scale: float = 1.0,
) -> LayerCheckReport:
    """Run the standard checks on one layer type.

    Parameters
    ----------
    layer : dict
        The layer's LOOM JSON object.
    input_size : int
        Per-sample input features.
    batch_size : int
        Network batch size (samples per flat input).
    output_size : int, optional
        Expected per-sample output size (checked when given).
    backend : Backend, optional
        Backend under test (the ``backend`` fixture).
    extra_layers : list, optional
        Layers appended after ``layer`` (e.g. a Dense head), checked together.
    """
    be = resolve_backend(backend)
    rng = np.random.default_rng(seed)
    net = _network(layer, batch_size, input_size, be, seed, extra_layers)
    x32 = be.asarray(rng.standard_normal(batch_size * input_size) * input_scale)

    # 1. output shape, finiteness, determinism, 2-D input
    y = to_numpy(_run(net, x32, batch_size, seed))
    assert np.all(np.isfinite(y)), f"{layer['type']}: non-finite output"
    if output_size is not None and not extra_layers:
        assert y.shape == (batch_size * output_size,), f"output shape {y.shape} != {(batch_size * output_size,)}"
    net.reset_state()
    net.seed(seed)
    y2d = to_numpy(net.forward(to_numpy(x32).reshape(batch_size, input_size)))
    assert y2d.shape[0] == batch_size and np.allclose(y2d.reshape(-1), y, rtol=1e-6, atol=1e-7)

    # 2. save / load round trip: bit-identical outputs and text
    text = net.save_model_to_string("check")
    loaded = loom.load_model_from_string(text, "check", backend=be)
    y_loaded = to_numpy(_run(loaded, x32, batch_size, seed))
    np.testing.assert_array_equal(y_loaded, y, err_msg="save/load changed the outputs")
    assert loaded.save_model_to_string("check") == text, "save -> load -> save is not identical"
    json.loads(text)  # valid JSON

    # 3. NumPy <-> CuPy agreement
    if cupy_available():
        other = "numpy" if be.name == "cupy" else "cupy"
        twin = loom.load_model_from_string(text, "check", backend=other)
        twin.batch_size = batch_size
        y_twin = to_numpy(_run(twin, resolve_backend(other).asarray(to_numpy(x32)), batch_size, seed))
        if layer.get("softmax_variant") != "gumbel":
            np.testing.assert_allclose(y_twin, y, rtol=1e-4, atol=1e-5, err_msg=f"{other} disagrees with {be.name}")

    # 4. finite differences in float64
    _to_float64(net)
    x64 = be.asarray(to_numpy(x32), dtype=be.xp.float64)
    errors = _fd_check(net, x64, batch_size, seed, rng, samples=fd_samples, eps=fd_eps, rtol=rtol, atol=atol)
    return LayerCheckReport(
        network=loom.load_model_from_string(text, "check", backend=be), output=y, max_rel_error=errors
    )
