"""Sampling: pure functions with an explicit RNG; top-k / top-p restrict the support."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from loom.errors import ConfigError
from loom.llm.sampling import (
    Sampler,
    SamplingParams,
    apply_temperature,
    greedy,
    probabilities,
    sample,
    sample_from_probabilities,
    top_k_filter,
    top_p_filter,
)

finite_logits = arrays(np.float32, st.integers(2, 40), elements=st.floats(-20, 20, width=32, allow_nan=False))


def test_greedy_and_temperature_zero() -> None:
    logits = np.array([0.5, 3.0, 3.0, -1.0])
    assert greedy(logits) == 1
    assert sample(logits, np.random.default_rng(0), temperature=0.0) == 1
    assert sample(logits, np.random.default_rng(0), temperature=-1.0, top_k=2) == 1


def test_same_seed_same_tokens() -> None:
    logits = np.random.default_rng(1).standard_normal(1000)
    draws = [
        [sample(logits, rng, temperature=0.8, top_p=0.9) for _ in range(50)]
        for rng in (np.random.default_rng(7), np.random.default_rng(7))
    ]
    assert draws[0] == draws[1]
    other = [sample(logits, np.random.default_rng(8), temperature=0.8) for _ in range(50)]
    assert len(set(draws[0])) > 5 and other != draws[0]


def test_draw_frequencies_follow_the_distribution() -> None:
    probs = np.array([0.5, 0.3, 0.2])
    rng = np.random.default_rng(0)
    counts = np.bincount([sample(np.log(probs), rng) for _ in range(4000)], minlength=3)
    np.testing.assert_allclose(counts / 4000, probs, atol=0.03)
    hot = np.bincount([sample(np.log(probs), rng, temperature=0.25) for _ in range(2000)], minlength=3) / 2000
    assert hot[0] > 0.8  # low temperature sharpens


def test_top_k_keeps_k_tokens_and_ties() -> None:
    logits = np.array([1.0, 5.0, 3.0, 3.0, -2.0])
    np.testing.assert_array_equal(np.isfinite(top_k_filter(logits, 2)), [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(top_k_filter(logits, None), logits)
    np.testing.assert_array_equal(top_k_filter(logits, 10), logits)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        top_k_filter(logits, 0)
    rng = np.random.default_rng(3)
    drawn = {sample(logits, rng, temperature=5.0, top_k=1) for _ in range(50)}
    assert drawn == {1}


@settings(max_examples=80, deadline=None)
@given(finite_logits, st.integers(1, 45), st.integers(0, 2**32 - 1))
def test_top_k_support(logits: np.ndarray, k: int, seed: int) -> None:
    kept = np.isfinite(top_k_filter(logits, k))
    kth = np.sort(logits)[::-1][min(k, logits.size) - 1]
    np.testing.assert_array_equal(kept, logits >= kth)
    token = sample(logits, np.random.default_rng(seed), temperature=1.0, top_k=k)
    assert kept[token]


@settings(max_examples=80, deadline=None)
@given(finite_logits, st.floats(0.01, 1.0), st.integers(0, 2**32 - 1))
def test_top_p_keeps_the_smallest_nucleus(logits: np.ndarray, p: float, seed: int) -> None:
    kept = np.isfinite(top_p_filter(logits, p))
    probs = probabilities(logits)
    assert kept[np.argmax(logits)]
    mass = probs[kept].sum()
    assert mass >= p - 1e-9 or kept.all()
    # every kept token is at least as likely as every removed one
    if (~kept).any():
        assert probs[kept].min() >= probs[~kept].max() - 1e-12
        # dropping the least likely kept token would fall below p
        assert mass - probs[kept].min() < p + 1e-9
    token = sample(logits, np.random.default_rng(seed), temperature=1.0, top_p=p)
    assert kept[token]


def test_top_p_example_and_errors() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.75)), [1, 1, 0, 0])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.79)), [1, 1, 0, 0])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.81)), [1, 1, 1, 0])
    np.testing.assert_array_equal(top_p_filter(logits, 1.0), logits)
    with pytest.raises(ValueError, match="top_p must be in"):
        top_p_filter(logits, 0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(logits, 0.0)


def test_sample_from_probabilities_edges() -> None:
    rng = np.random.default_rng(0)
    assert sample_from_probabilities(np.array([0.0, 0.0, 1.0]), rng) == 2
    assert {sample_from_probabilities(np.array([0.0, 1.0, 0.0]), rng) for _ in range(20)} == {1}


# ----------------------------------------------------------------------------- SamplingParams / Sampler
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "0.7"}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_sampling_params_reject_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: expected"):
        SamplingParams(**kwargs)


def test_sampling_params_accept_numpy_scalars_and_replace_fields() -> None:
    params = SamplingParams(np.float32(0.5), np.int64(3), np.float64(0.9), np.int32(1))
    assert not params.greedy and SamplingParams(-1.0).greedy
    assert params.with_options(top_k=None) == SamplingParams(np.float32(0.5), None, np.float64(0.9), np.int32(1))
    assert params.with_options() is params
    with pytest.raises(TypeError, match="unexpected sampling option 'topk'; accepted: temperature, top_k, top_p, seed"):
        params.with_options(topk=3)


def test_sampler_draws_like_sample_and_is_seeded_by_the_params() -> None:
    import array_api_compat.numpy as xp

    logits = np.array([0.5, 3.0, 2.5, -1.0], np.float32)
    params = SamplingParams(1.3, top_k=3, seed=42)
    want = [sample(logits, rng, temperature=1.3, top_k=3) for rng in [np.random.default_rng(42)] for _ in range(8)]
    sampler = Sampler(params)
    assert [sampler.choose(logits, xp) for _ in range(8)] == want
    on_device = Sampler(params)
    assert [int(on_device.pick(logits, xp)) for _ in range(8)] == want
    assert Sampler(SamplingParams()).choose(logits, xp) == 1
