"""Optimizers and learning-rate schedules against ``torch.optim``'s update formulas.

The reference below is written from torch's documented algorithms (``torch.optim.SGD`` with
momentum / Nesterov / weight decay, ``Adam``, ``AdamW``, ``RMSprop``; ``StepLR``,
``CosineAnnealingLR``, ``LinearLR`` warm-up chained by ``SequentialLR``) with torch's defaults,
in float64, on a fixed network of two linear Dense layers whose gradients are written out by
hand. loom trains the same network for three steps (one batch, three epochs) on the fused and
on the layer-by-layer path, through ``train`` and ``fit``; parameters and losses must agree
to rel 1e-5. Runs on the backend under test (``--backend cupy`` on a GPU machine).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import loom
from loom.errors import ConfigError
from loom.nn.lr_schedules import LearningRateSchedule
from loom.nn.optimizers import SGD, Adam, make_optimizer

X = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], dtype=np.float32)  # [B=2, 3]
T = np.array([[0.3, -0.2], [1.0, 0.4]], dtype=np.float32)  # [B=2, 2]
STEPS = 3

TORCH_DEFAULTS = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 1e-2},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "epsilon": 1e-8, "momentum": 0.0, "weight_decay": 0.0},
}


def make_net(backend) -> loom.Network:
    config = {
        "batch_size": 2,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 2,
        "layers": [
            {"type": "dense", "input_size": 3, "output_size": 4, "activation": "linear"},
            {"type": "dense", "input_size": 4, "output_size": 2, "activation": "linear"},
        ],
    }
    return loom.create_network_from_json(config, backend=backend, seed=7)


def weights(net: loom.Network) -> dict[str, np.ndarray]:
    return {name: loom.to_numpy(p).astype(np.float64) for name, p in net.named_parameters()}


# ---------------------------------------------------------------------------------------------- the reference
def loss_and_grads(p: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
    """MSE over the 4 outputs of y = (x W1 + b1) W2 + b2 and its gradient, by hand (float64)."""
    x, t = X.astype(np.float64), T.astype(np.float64)
    w1, b1, w2, b2 = (p[f"layers[{i}].{n}"] for i, n in ((0, "kernel"), (0, "biases"), (1, "kernel"), (1, "biases")))
    h = x @ w1 + b1
    y = h @ w2 + b2
    n = y.size
    gy = 2.0 * (y - t) / n
    gh = gy @ w2.T
    grads = {
        "layers[0].kernel": x.T @ gh,
        "layers[0].biases": gh.sum(axis=0),
        "layers[1].kernel": h.T @ gy,
        "layers[1].biases": gy.sum(axis=0),
    }
    return float(((y - t) ** 2).sum() / n), grads


def torch_lrs(base: float, schedule: dict) -> list[float]:
    """The learning rate of epochs 0..STEPS-1 as torch's schedulers give it."""
    name, warm = schedule.get("lr_schedule", "constant"), schedule.get("warmup_epochs", 0)
    out = []
    for e in range(STEPS):
        if e < warm:  # LinearLR(start_factor=1 / (W + 1), end_factor=1, total_iters=W)
            start = 1.0 / (warm + 1)
            out.append(base * (start + (1.0 - start) * min(e, warm) / warm))
            continue
        k = e - warm  # SequentialLR hands the following scheduler epochs counted from the milestone
        if name == "step":  # StepLR(step_size, gamma)
            out.append(base * schedule.get("lr_gamma", 0.1) ** (k // schedule.get("lr_step_size", 10)))
        elif name == "cosine":  # CosineAnnealingLR(T_max=E - W, eta_min)
            eta, period = schedule.get("lr_min", 0.0), STEPS - warm
            out.append(eta + (base - eta) * (1 + math.cos(math.pi * k / period)) / 2)
        else:
            out.append(base)
    return out


def reference_run(params: dict, optimizer: str, options: dict, lrs: list[float], clip: float = 0.0):
    """Three steps of torch.optim's algorithm; returns the final parameters and the loss per step."""
    hp = {**TORCH_DEFAULTS[optimizer], **options}
    p = {k: v.copy() for k, v in params.items()}
    state: dict[str, dict[str, np.ndarray]] = {k: {} for k in p}
    losses = []
    for step, lr in enumerate(lrs, start=1):
        loss, grads = loss_and_grads(p)
        losses.append(loss)
        if clip > 0:  # torch.nn.utils.clip_grad_norm_
            norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
            if norm > clip:
                grads = {k: g * (clip / norm) for k, g in grads.items()}
        for name, g in grads.items():
            s, w = state[name], p[name]
            wd = hp["weight_decay"]
            if optimizer == "sgd":
                d = g + wd * w
                if hp["momentum"]:
                    s["buf"] = d.copy() if step == 1 else hp["momentum"] * s["buf"] + d
                    d = d + hp["momentum"] * s["buf"] if hp["nesterov"] else s["buf"]
                p[name] = w - lr * d
            elif optimizer in ("adam", "adamw"):
                if optimizer == "adamw":
                    w = w * (1 - lr * wd)
                    d = g
                else:
                    d = g + wd * w
                b1, b2 = hp["beta1"], hp["beta2"]
                s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * d
                s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * d * d
                m_hat, v_hat = s["m"] / (1 - b1**step), s["v"] / (1 - b2**step)
                p[name] = w - lr * m_hat / (np.sqrt(v_hat) + hp["epsilon"])
            else:  # rmsprop
                d = g + wd * w
                s["v"] = hp["alpha"] * s.get("v", 0.0) + (1 - hp["alpha"]) * d * d
                avg = np.sqrt(s["v"]) + hp["epsilon"]
                if hp["momentum"]:
                    s["buf"] = hp["momentum"] * s.get("buf", 0.0) + d / avg
                    p[name] = w - lr * s["buf"]
                else:
                    p[name] = w - lr * d / avg
    return p, losses


# ---------------------------------------------------------------------------------------------- cases
CASES = {
    "sgd": ("sgd", {}, {}, 0.0, 0.1),
    "sgd_momentum": ("sgd", {"momentum": 0.9}, {}, 0.0, 0.1),
    "sgd_nesterov_decay": ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, {}, 0.0, 0.1),
    "adam": ("adam", {}, {}, 0.0, 0.01),
    "adam_beta1_decay": ("adam", {"beta1": 0.8, "beta2": 0.99, "weight_decay": 0.1}, {}, 0.0, 0.01),
    "adamw": ("adamw", {}, {}, 0.0, 0.05),
    "adamw_decay": ("adamw", {"weight_decay": 0.5, "epsilon": 1e-6}, {}, 0.0, 0.05),
    "rmsprop": ("rmsprop", {}, {}, 0.0, None),
    "rmsprop_momentum_decay": ("rmsprop", {"momentum": 0.5, "weight_decay": 0.1, "alpha": 0.9}, {}, 0.0, 0.01),
    "adam_clipped": ("adam", {}, {}, 0.05, 0.01),
    "sgd_step_schedule": ("sgd", {}, {"lr_schedule": "step", "lr_step_size": 1, "lr_gamma": 0.5}, 0.0, 0.1),
    "adam_cosine": ("adam", {}, {"lr_schedule": "cosine"}, 0.0, 0.02),
    "momentum_warmup": ("sgd", {"momentum": 0.9}, {"lr_schedule": "warmup", "warmup_epochs": 2}, 0.0, 0.1),
    "rmsprop_warmup_cosine": ("rmsprop", {}, {"lr_schedule": "cosine", "warmup_epochs": 1, "lr_min": 1e-3}, 0.0, 0.01),
}

LOOM_SPELLING = {
    "momentum": "Momentum",
    "nesterov": "Nesterov",
    "beta1": "Beta1",
    "beta2": "Beta2",
    "epsilon": "Epsilon",
    "weight_decay": "WeightDecay",
    "alpha": "Alpha",
    "lr_schedule": "LRSchedule",
    "warmup_epochs": "WarmupEpochs",
    "lr_step_size": "LRStepSize",
    "lr_gamma": "LRGamma",
    "lr_min": "LRMin",
}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_three_train_steps_equal_torch_formulas(case, fused, backend):
    optimizer, options, schedule, clip, lr = CASES[case]
    net = make_net(backend)
    start = weights(net)
    base = TORCH_DEFAULTS[optimizer]["lr"] if lr is None else lr
    want, want_losses = reference_run(start, optimizer, options, torch_lrs(base, schedule), clip)
    settings = {**options, **schedule}
    if case.endswith(("_decay", "schedule", "momentum")):  # LOOM's CamelCase keys for half of the cases
        config = {"Optimizer": optimizer.upper(), **{LOOM_SPELLING[k]: v for k, v in settings.items()}}
        config.update(Epochs=STEPS, LearningRate=base, GradientClip=clip, Fused=fused)
    else:
        config = {"optimizer": optimizer, **settings, "epochs": STEPS, "learning_rate": base}
        config.update(gradient_clip=clip, fused=fused)
    result = net.train([(X, T)], config)
    np.testing.assert_allclose(result.loss_history, want_losses, rtol=1e-5)
    got = weights(net)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=f"{case}: {name}")


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer"])
@pytest.mark.parametrize("case", ["adam", "sgd_nesterov_decay", "rmsprop_momentum_decay", "adam_cosine"])
def test_three_fit_steps_equal_torch_formulas(case, fused, backend):
    """``fit`` (batch-mean MSE: the same number as LOOM's for MSE) takes the same three steps."""
    optimizer, options, schedule, clip, lr = CASES[case]
    net = make_net(backend)
    start = weights(net)
    base = TORCH_DEFAULTS[optimizer]["lr"] if lr is None else lr
    want, want_losses = reference_run(start, optimizer, options, torch_lrs(base, schedule), clip)
    history = net.fit(
        X, T, epochs=STEPS, batch_size=2, optimizer=optimizer, learning_rate=lr, shuffle=False, verbose=0,
        fused=fused, gradient_clip=clip, **options, **schedule,
    )  # fmt: skip
    np.testing.assert_allclose(history.history["loss"], want_losses, rtol=1e-5)
    np.testing.assert_allclose(history.learning_rates, torch_lrs(base, schedule), rtol=1e-12)
    got = weights(net)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=f"{case}: {name}")


def test_plain_sgd_is_loom_update_weights(backend):
    """SGD without options is LOOM's UpdateWeights: the same weights as the manual loop, bit for bit."""
    trained, manual = make_net(backend), make_net(backend)
    trained.train([(X, T)], {"Epochs": 1, "LearningRate": 0.1, "Optimizer": "sgd"})
    y = loom.to_numpy(manual.forward(X))
    manual.backward(2 * (y - T) / y.size)
    manual.update_weights(0.1)
    for (name, a), (_, b) in zip(weights(trained).items(), weights(manual).items(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_an_optimizer_object_keeps_its_state_between_fit_calls(backend):
    once, twice = make_net(backend), make_net(backend)
    once.fit(X, T, epochs=2, batch_size=2, optimizer=Adam(0.01), shuffle=False, verbose=0)
    adam = Adam(0.01)
    twice.fit(X, T, epochs=1, batch_size=2, optimizer=adam, shuffle=False, verbose=0)
    twice.fit(X, T, epochs=1, batch_size=2, optimizer=adam, shuffle=False, verbose=0)
    assert adam.step_count == 2
    for (name, a), (_, b) in zip(weights(once).items(), weights(twice).items(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------------------------- config keys
def test_both_spellings_build_the_same_optimizer():
    loom_keys = loom.TrainingConfig.from_dict({"Optimizer": "AdamW", "Beta1": 0.8, "WeightDecay": 0.1})
    snake = loom.TrainingConfig(optimizer="adamw", beta1=0.8, weight_decay=0.1)
    assert repr(loom_keys.make_optimizer()) == repr(snake.make_optimizer())
    assert repr(snake.make_optimizer()) == (
        "AdamW(learning_rate=0.001, beta1=0.8, beta2=0.999, epsilon=1e-08, weight_decay=0.1)"
    )
    momentum = loom.TrainingConfig.from_dict({"optimizer": "sgd", "momentum": 0.9})
    assert isinstance(momentum.make_optimizer(), SGD) and momentum.make_optimizer().momentum == 0.9
    assert loom.TrainingConfig.from_dict(snake.to_dict()) == snake  # to_dict round-trips the additions


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"Optimizer": "adma"}, r"training config\.optimizer: unknown optimizer 'adma' \(did you mean 'adam'\?\)"),
        (
            {"optimizer": "sgd", "momentun": 0.9},
            r"training config\.momentun: unknown key \(did you mean 'momentum'\?\)",
        ),
        (
            {"Optimizer": "adam", "Momentum": 0.9},
            r"training config\.momentum: not an option of adam \(its options: beta1",
        ),
        ({"nesterov": True}, r"training config\.nesterov: Nesterov momentum needs momentum > 0"),
        ({"optimizer": "adam", "beta1": 1.0}, r"training config\.beta1: expected a number >= 0.0 and < 1.0, got 1.0"),
        ({"optimizer": "adam", "epsilon": "tiny"}, r"training config\.epsilon: expected a finite number, got 'tiny'"),
        (
            {"LRSchedule": "cosin"},
            r"training config\.lr_schedule: unknown schedule 'cosin' \(did you mean 'cosine'\?\)",
        ),
        ({"lr_schedule": "warmup"}, r"training config\.warmup_epochs: lr_schedule 'warmup' needs warmup_epochs > 0"),
        ({"WarmupEpochs": -1}, r"training config\.warmup_epochs: expected an integer >= 0, got -1"),
        ({"LearningRate": -0.1}, r"training config\.learning_rate: expected a number >= 0.0, got -0.1"),
    ],
)
def test_bad_optimizer_settings_are_config_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        loom.TrainingConfig.from_dict(config)


def test_fit_options_are_checked(backend):
    net = make_net(backend)
    with pytest.raises(ConfigError, match=r"fit\.momentun: unknown option \(did you mean 'momentum'\?\)"):
        net.fit(X, T, momentun=0.9, verbose=0)
    with pytest.raises(ConfigError, match=r"fit\.momentum: not an option of adam"):
        net.fit(X, T, optimizer="adam", momentum=0.9, verbose=0)
    with pytest.raises(ConfigError, match=r"fit\.optimizer: got an optimizer object and learning_rate"):
        net.fit(X, T, optimizer=Adam(), learning_rate=0.1, verbose=0)


def test_make_optimizer_defaults_are_torchs():
    assert repr(make_optimizer("sgd")) == "SGD(learning_rate=0.001, momentum=0.0, nesterov=False, weight_decay=0.0)"
    assert make_optimizer("RMSprop").learning_rate == 0.01
    assert make_optimizer("adamw").weight_decay == 0.01


def test_schedule_values():
    step = LearningRateSchedule("step", 0.1, 30, step_size=10, gamma=0.5)
    assert [step(e) for e in (0, 9, 10, 20)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    cosine = LearningRateSchedule("cosine", 1.0, 10, warmup_epochs=2, min_lr=0.1)
    assert [cosine(e) for e in (0, 1, 2)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert cosine(6) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 4 / 8)) / 2)
    assert LearningRateSchedule("linear_warmup", 0.3, 5, warmup_epochs=2)(4) == 0.3
