"""Hypothesis strategies of the fuzz suite, and a way to draw many examples from them fast.

* :func:`layer_stacks` - LOOM network configs whose layers mostly fit together (sizes
  follow the running feature count), with odd values mixed in: unknown activations,
  extreme temperatures / epsilons, batch sizes 1-4, nested Parallels.
* :func:`hostile_batches` / :func:`hostile_inputs` - what users pass to ``train`` and
  ``forward``: wrong types, ragged lists, NaN / inf at known places, wrong lengths, 3-D.
* :func:`templates` - small Jinja programs from loops, conditionals, macros, filters and
  operators with sizes from tiny to enormous.

:func:`draw_examples` runs a collecting ``@given`` in the generate phase only, so the
examples are reproducible from a seed and cost about a millisecond each.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

ACTIVATIONS = ["relu", "sigmoid", "tanh", "softplus", "leaky_relu", "linear", "gelu", "silu", "elu", "mish", "bogus"]
SOFTMAX_VARIANTS = [
    "standard",
    "grid",
    "hierarchical",
    "temperature",
    "gumbel",
    "masked",
    "sparse",
    "adaptive",
    "mixture",
    "entmax",
    "sparsemax",
]
MODERATE_FLOATS = st.floats(min_value=0.05, max_value=5.0, allow_nan=False)
ANY_FLOATS = st.one_of(
    MODERATE_FLOATS,
    st.sampled_from([0.0, -1.0, 1e-30, 1e-45, 1e30, 3.4e38, float("nan"), float("inf"), -float("inf"), 1e39]),
)


def draw_examples(strategy: st.SearchStrategy, seed: int, count: int) -> list[Any]:
    """``count`` examples of ``strategy`` (fewer if it cannot produce that many), reproducible from ``seed``."""
    examples: list[Any] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def collect(example: Any) -> None:
        examples.append(example)

    collect()
    return examples[:count]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0] or [1]


@st.composite
def _layer(draw: Any, features: int, depth: int = 0) -> tuple[dict[str, Any], int]:
    """One layer fitting ``features`` inputs per sample, and its output size."""
    kinds = ["dense", "dense", "rnn", "lstm", "softmax", "layer_norm", "rms_norm", "swiglu", "residual", "mha"]
    if depth < 2:
        kinds.append("parallel")
    kind = draw(st.sampled_from(kinds))
    act = draw(st.sampled_from(ACTIVATIONS[:-1]) if draw(st.integers(0, 9)) else st.sampled_from(ACTIVATIONS))
    if kind == "dense":
        out = draw(st.integers(1, 8))
        return {"type": "dense", "output_size": out, "activation": act}, out
    if kind in ("rnn", "lstm"):
        seq = draw(st.sampled_from(_divisors(features)))
        hidden = draw(st.integers(1, 6))
        return {"type": kind, "hidden_size": hidden, "seq_length": seq}, seq * hidden
    if kind == "softmax":
        variant = draw(st.sampled_from(SOFTMAX_VARIANTS))
        layer: dict[str, Any] = {"type": "softmax", "softmax_variant": variant}
        if variant == "grid":
            cols = draw(st.sampled_from(_divisors(features)))
            layer.update(softmax_rows=features // cols, softmax_cols=cols)
        elif variant == "hierarchical":
            cols = draw(st.sampled_from(_divisors(features)))
            layer["hierarchy_levels"] = [features // cols, cols]
        elif variant == "masked":
            layer["mask"] = draw(st.lists(st.booleans(), min_size=features, max_size=features))
        elif variant == "entmax":
            layer["entmax_alpha"] = draw(st.one_of(st.floats(0.5, 2.5), ANY_FLOATS))
        if draw(st.booleans()):
            layer["temperature"] = draw(st.one_of(MODERATE_FLOATS, ANY_FLOATS))
        return layer, features
    if kind in ("layer_norm", "rms_norm"):
        layer = {"type": kind, "norm_size": draw(st.sampled_from(_divisors(features)))}
        if draw(st.booleans()):
            layer["epsilon"] = draw(st.one_of(st.floats(1e-8, 1e-2), ANY_FLOATS))
        return layer, features
    if kind == "swiglu":
        return {
            "type": "swiglu",
            "input_size": draw(st.sampled_from(_divisors(features))),
            "output_size": draw(st.integers(1, 6)),
        }, features
    if kind == "mha":
        d_model = draw(st.sampled_from(_divisors(features)))
        heads = draw(st.sampled_from(_divisors(d_model)))
        layer = {"type": "mha", "d_model": d_model, "num_heads": heads}
        if draw(st.integers(0, 4)) == 0:
            layer["rope_theta"] = draw(ANY_FLOATS)
        return layer, features
    if kind == "residual":
        return {"type": "residual", "activation": act}, features
    mode = draw(st.sampled_from(["concat", "add", "avg", "grid_scatter", ""]))
    count = draw(st.integers(1, 3))
    if mode in ("add", "avg"):
        out = draw(st.integers(1, 6))
        branches = [{"type": "dense", "output_size": out, "activation": act} for _ in range(count)]
        return {"type": "parallel", "combine_mode": mode, "branches": branches}, out
    branches, outs = [], []
    for _ in range(count):
        branch, out = draw(_layer(features, depth + 1))
        branches.append(branch)
        outs.append(out)
    layer = {"type": "parallel", "combine_mode": mode, "branches": branches}
    if mode == "grid_scatter":
        layer.update(grid_output_rows=count, grid_output_cols=1, grid_output_layers=1)
        layer["grid_positions"] = [
            {"branch_index": i, "target_row": i, "target_col": 0, "target_layer": 0} for i in range(count)
        ]
    return layer, sum(outs)


@st.composite
def layer_stacks(draw: Any) -> dict[str, Any]:
    """A LOOM network config (top-level ``input_size``, 1-4 layers) and its input/target sizes."""
    features = draw(st.integers(1, 12))
    batch = draw(st.integers(1, 4))
    layers: list[dict[str, Any]] = []
    current = features
    if draw(st.integers(0, 5)) == 0:
        channels, size, kernel = draw(st.integers(1, 2)), draw(st.integers(2, 5)), draw(st.integers(1, 2))
        features = channels * size * size
        out = (size - kernel) // 1 + 1
        layers.append(
            {
                "type": "conv2d",
                "input_channels": channels,
                "input_height": size,
                "input_width": size,
                "kernel_size": kernel,
                "stride": 1,
                "padding": 0,
                "filters": 2,
                "output_height": out,
                "output_width": out,
            }
        )
        current = 2 * out * out
    for _ in range(draw(st.integers(1, 4))):
        layer, current = draw(_layer(current))
        layers.append(layer)
    return {
        "config": {
            "batch_size": batch,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": len(layers),
            "input_size": features,
            "layers": layers,
        },
        "in": features,
        "out": current,
        "batch": batch,
        "x_seed": draw(st.integers(0, 2**16)),
    }


# ------------------------------------------------------------------ hostile data
def _numbers(n: int) -> st.SearchStrategy:
    return st.lists(st.floats(-3, 3, width=32), min_size=n, max_size=n)


@st.composite
def hostile_array(draw: Any, n: int) -> Any:
    """Something passed as an input or target of ``n`` values: mostly right, often not."""
    choice = draw(st.integers(0, 15))
    if choice <= 5:
        return draw(_numbers(n))
    if choice == 6:  # one non-finite value at a known place
        values = draw(_numbers(n)) or [0.0]
        values[draw(st.integers(0, len(values) - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return values
    if choice == 7:
        return draw(_numbers(draw(st.integers(0, 2 * n + 2))))
    if choice == 8:
        return [draw(_numbers(2)), [1.0]]  # ragged
    if choice == 9:
        return draw(st.sampled_from([None, 5, "abc", b"xy", {"a": 1}, object(), 1j, [None], ["a"], [[[1.0]]]]))
    if choice == 10:
        return np.asarray(draw(_numbers(n)), dtype=draw(st.sampled_from([np.float64, np.int64, np.bool_, np.float16])))
    if choice == 11:
        return np.zeros((1, 1, n), np.float32)
    if choice == 12:
        return [draw(st.sampled_from([1e39, 10**400, -1e300, 3e38])), *draw(_numbers(max(n - 1, 0)))]
    if choice == 13:
        return np.asarray(draw(_numbers(2 * n)), np.float32).reshape(2, n)
    if choice == 14:
        return np.empty(0, np.float32)
    return [True, False] * (n // 2) + [True] * (n % 2)


@st.composite
def hostile_batches(draw: Any, n_in: int, n_out: int) -> dict[str, Any]:
    """``train`` arguments: batches (any shape of wrong) and a config dict."""
    shape = draw(st.integers(0, 9))
    if shape == 0:
        batches: Any = draw(st.sampled_from([None, 5, "abc", {"Input": [1.0], "Target": [1.0]}, [], (), b""]))
    else:
        items = []
        for _ in range(draw(st.integers(1, 3))):
            x, t = draw(hostile_array(n_in)), draw(hostile_array(n_out))
            form = draw(st.integers(0, 5))
            if form <= 2:
                items.append((x, t))
            elif form == 3:
                items.append({draw(st.sampled_from(["Input", "input", "INPUT", "x"])): x, "Target": t})
            elif form == 4:
                items.append((x, t, x))
            else:
                items.append(draw(st.sampled_from([None, 3, "pair", [x]])))
        batches = items
    config: dict[str, Any] = {"epochs": draw(st.integers(0, 3)), "learning_rate": draw(st.floats(1e-4, 0.1))}
    if draw(st.integers(0, 3)) == 0:
        key = draw(
            st.sampled_from(
                [
                    "Epochs",
                    "LearningRate",
                    "GradientClip",
                    "LossType",
                    "loss_type",
                    "epochs",
                    "gradient_clip",
                    "bogus",
                    "raise_on_divergence",
                    "verbose",
                ]
            )
        )
        config[key] = draw(
            st.sampled_from(
                [-1, 0, 1, 2.5, "mse", "cross_entropy", "ce", "hinge", None, True, float("nan"), 1e300, [], "x"]
            )
        )
        if key in ("Epochs", "epochs") and isinstance(config[key], int | float) and not config[key] < 4:
            config[key] = 3  # the epoch count is the caller's choice of time
    return {"batches": batches, "config": config}


@st.composite
def hostile_inputs(draw: Any, n: int) -> Any:
    """A ``forward`` argument for a network of ``n`` inputs per sample."""
    if draw(st.integers(0, 4)) == 0:  # several samples as [batch, n] with a NaN at a known place
        batch = draw(st.integers(1, 4))
        values = np.asarray(draw(_numbers(batch * n)), np.float32).reshape(batch, n)
        if draw(st.booleans()):
            values[draw(st.integers(0, batch - 1)), draw(st.integers(0, n - 1))] = np.nan
        return values
    return draw(hostile_array(n))


# ------------------------------------------------------------------ chat templates
_SIZES = st.sampled_from([0, 1, 3, 10, 100, 1000, 10**5, 10**6, 10**8, 10**12])
_LEAVES = st.one_of(
    st.sampled_from(
        [
            "{{ messages[0]['content'] }}",
            "{{ message['role'] if message is defined else 'x' }}",
            "text ",
            "{{ bos_token }}",
            "{{ messages|tojson }}",
            "{{ (messages|length) ~ '!' }}",
            "{% set x = x ~ x %}",
            "{{ raise_exception('stop') }}",
            "{{ undefined_name.attr }}",
            "{{ 1 / 0 }}",
            "{{ ''.__class__ }}",
            "{% set ns.v = ns.v + ns.v %}",
            "{{ ns.v|length }}",
        ]
    ),
    _SIZES.map(lambda n: f"{{{{ 'ab' * {n} }}}}"),
    _SIZES.map(lambda n: f"{{{{ 'x'|center({n}) }}}}"),
    _SIZES.map(lambda n: f"{{{{ ('a\\n' * 100)|indent({n}) }}}}"),
    _SIZES.map(lambda n: f"{{{{ range({n})|join(',') }}}}"),
    _SIZES.map(lambda n: f"{{{{ '%{n}d' % 1 }}}}"),
    _SIZES.map(lambda n: f"{{{{ 2 ** {n} }}}}"),
    _SIZES.map(lambda n: f"{{{{ ('y' * 100).replace('y', 'z' * {n}) }}}}"),
)


def _compose(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.tuples(children, children).map(lambda t: t[0] + t[1]),
        st.tuples(_SIZES, children).map(lambda t: f"{{% for i in range({t[0]}) %}}{t[1]}{{% endfor %}}"),
        children.map(lambda c: f"{{% for message in messages %}}{c}{{% endfor %}}"),
        children.map(lambda c: f"{{% if messages %}}{c}{{% else %}}none{{% endif %}}"),
        children.map(lambda c: f"{{% set x %}}{c}{c}{{% endset %}}{{{{ x }}}}"),
        children.map(
            lambda c: (
                f"{{% macro m(n) %}}{c}{{% if n > 0 %}}{{{{ m(n - 1) }}}}{{{{ m(n - 1) }}}}"
                f"{{% endif %}}{{% endmacro %}}{{{{ m(30) }}}}"
            )
        ),
        children.map(lambda c: f"{{% filter upper %}}{c}{{% endfilter %}}"),
    )


def templates() -> st.SearchStrategy:
    """Jinja sources of chat-template-like programs (some hostile, some broken)."""
    body = st.recursive(_LEAVES, _compose, max_leaves=6)
    prefix = "{% set x = 'ab' %}{% set ns = namespace(v='cd') %}"
    return st.one_of(body.map(lambda b: prefix + b), body.map(lambda b: prefix + b[: len(b) // 2]))
