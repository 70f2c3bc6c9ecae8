"""Transformer forward, KV cache and generation against Hugging Face reference outputs.

The shared fixtures (tiny-llama, tiny-gpt2, tiny-llama-bf16) carry transformers
logits and greedy continuations; ``data/hf_extra_reference.json`` adds LLaMA
with biases + llama3 RoPE, YaRN, Qwen2, Mistral and an untied GPT-2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llm_test_utils import DATA, FIXTURE_MODELS, extra_weights, reference

import loom
from loom.backend import backend_of
from loom.errors import ShapeError
from loom.llm import Transformer, TransformerConfig, load_transformer
from loom.llm.loader import transformer_from_tensors

ATOL = 1e-4


@pytest.fixture(scope="module", params=FIXTURE_MODELS)
def model_dir(request: pytest.FixtureRequest, llm_fixtures: Path) -> Path:
    return llm_fixtures / request.param


@pytest.fixture
def model(model_dir: Path, backend) -> Transformer:
    return load_transformer(model_dir, backend=backend)


def test_config_fields(model: Transformer, model_dir: Path) -> None:
    cfg = model.config
    expected_arch = "gpt2" if "gpt2" in model_dir.name else "llama"
    assert (cfg.architecture, cfg.vocab_size, cfg.hidden_size, cfg.num_layers) == (expected_arch, 512, 64, 2)
    assert cfg.head_dim == 16
    assert cfg.eos_token_ids == (0,)


def test_logits_match_transformers(model: Transformer, model_dir: Path, backend) -> None:
    for case in reference(model_dir)["cases"]:
        logits = model.logits(case["ids"])
        assert backend_of(logits).name == backend.name
        got = loom.to_numpy(logits)
        want = np.asarray(case["logits"], dtype=np.float32)
        assert got.shape == want.shape == (len(case["ids"]), 512)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_greedy_continuation_matches_transformers(model: Transformer, model_dir: Path) -> None:
    for case in reference(model_dir)["cases"]:
        new = model.generate(case["ids"], len(case["greedy_new_ids"]), stop_ids=[])
        assert new == case["greedy_new_ids"]
        assert all(isinstance(i, int) for i in new)


def test_kv_cache_decode_equals_full_forward_at_every_step(model: Transformer, model_dir: Path) -> None:
    case = reference(model_dir)["cases"][1]
    ids = case["ids"] + case["greedy_new_ids"]
    full = loom.to_numpy(model.logits(ids))  # [T, V]
    state = model.new_state(len(ids))
    rows = [loom.to_numpy(model.forward(ids[:4], state))]  # prefill 4 tokens
    rows.append(loom.to_numpy(model.forward(ids[4:9], state)))  # a second chunk
    for token in ids[9:]:  # then one token at a time
        rows.append(loom.to_numpy(model.forward([token], state)))
    assert state.pos == len(ids)
    np.testing.assert_allclose(np.concatenate(rows), full, rtol=0, atol=ATOL)


def test_last_only_gives_the_last_row(model: Transformer) -> None:
    ids = [5, 17, 42, 7]
    full = loom.to_numpy(model.logits(ids))
    state = model.new_state(8)
    last = loom.to_numpy(model.forward(ids, state, last_only=True))
    assert last.shape == (1, 512)
    np.testing.assert_allclose(last[0], full[-1], rtol=0, atol=1e-5)


def test_generate_stops_at_eos_from_config(llm_fixtures: Path, backend) -> None:
    model = load_transformer(llm_fixtures / "tiny-llama", backend=backend)
    case = reference(llm_fixtures / "tiny-llama")["cases"][2]
    greedy = case["greedy_new_ids"]
    stop = greedy.index(0)  # this continuation emits <|endoftext|> (id 0) part-way
    assert model.generate(case["ids"], 16) == greedy[: stop + 1]
    assert model.generate(case["ids"], 16, stop_ids=[greedy[1]]) == greedy[:2]
    assert model.generate(case["ids"], 0) == []
    assert list(model.stream(case["ids"], 3, stop_ids=[])) == greedy[:3]


def test_sampling_is_reproducible_and_top_k_1_is_greedy(llm_fixtures: Path, backend) -> None:
    model = load_transformer(llm_fixtures / "tiny-llama", backend=backend)
    ids = reference(llm_fixtures / "tiny-llama")["cases"][1]["ids"]
    a = model.generate(ids, 12, temperature=1.5, seed=3, stop_ids=[])
    b = model.generate(ids, 12, temperature=1.5, seed=3, stop_ids=[])
    c = model.generate(ids, 12, temperature=1.5, seed=4, stop_ids=[])
    assert a == b
    assert a != c
    greedy = model.generate(ids, 12, stop_ids=[])
    assert model.generate(ids, 12, temperature=1.0, top_k=1, seed=5, stop_ids=[]) == greedy
    assert model.generate(ids, 12, temperature=1.0, top_p=1e-6, seed=5, stop_ids=[]) == greedy


def test_bad_token_ids_raise_shape_error(llm_fixtures: Path, backend) -> None:
    model = load_transformer(llm_fixtures / "tiny-llama", backend=backend)
    with pytest.raises(ShapeError, match="non-empty"):
        model.logits([])
    with pytest.raises(ShapeError, match=r"512 is out of range.*vocab_size \(512\)"):
        model.logits([1, 512])
    with pytest.raises(ShapeError, match="-1 is out of range"):
        model.generate([-1], 3)
    state = model.new_state(2)
    with pytest.raises(ShapeError, match="KV cache holds 2 positions"):
        model.forward([1, 2, 3], state)


def test_gpt2_context_limit(llm_fixtures: Path, backend) -> None:
    model = load_transformer(llm_fixtures / "tiny-gpt2", backend=backend)
    with pytest.raises(ShapeError, match="exceeds the model's context of 128"):
        model.generate([1] * 100, 40)


def test_repr_and_float64(llm_fixtures: Path, backend) -> None:
    model = load_transformer(llm_fixtures / "tiny-llama", backend=backend, dtype="float64")
    assert "llama" in repr(model)
    case = reference(llm_fixtures / "tiny-llama")["cases"][0]
    got = loom.to_numpy(model.logits(case["ids"]))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, case["logits"], rtol=0, atol=ATOL)


EXTRA = json.loads((DATA / "hf_extra_reference.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_more_architectures_match_transformers(name: str, backend) -> None:
    case = EXTRA[name]
    config = TransformerConfig.from_dict(case["config"])
    model = transformer_from_tensors(config, extra_weights(case), backend=backend)
    got = loom.to_numpy(model.logits(case["ids"]))
    np.testing.assert_allclose(got, case["logits"], rtol=0, atol=ATOL)
    # cached decoding agrees with the full pass for these layouts too
    state = model.new_state(len(case["ids"]))
    rows = [loom.to_numpy(model.forward(case["ids"][:5], state))]
    rows += [loom.to_numpy(model.forward([t], state)) for t in case["ids"][5:]]
    np.testing.assert_allclose(np.concatenate(rows), got, rtol=0, atol=ATOL)


def test_graph_decode_step_equals_eager_decode(model: Transformer, model_dir: Path) -> None:
    """The generic fixed-shape decode step (replayed as a device graph on GPUs) gives the eager logits."""
    from loom.llm.gpu_decode import GraphDecoder

    ids = reference(model_dir)["cases"][1]["ids"]
    eager = model.new_state(len(ids) + 3)
    fixed = model.new_state(len(ids) + 3)
    model.forward(ids[:-3], eager)
    model.forward(ids[:-3], fixed)
    decoder = GraphDecoder(model, fixed)
    if model.backend.is_gpu:  # e.g. a cuBLAS call in the step makes the capture fail (and decoding slow)
        assert decoder.graph is not None, "the decode step could not be recorded as a CUDA graph"
    for token in ids[-3:]:
        want = loom.to_numpy(model.forward([token], eager, last_only=True)[0])
        nxt = decoder.step(token)
        np.testing.assert_allclose(loom.to_numpy(decoder.logits), want, atol=1e-5, rtol=1e-5)
        assert nxt == int(np.argmax(want))
    assert fixed.pos == eager.pos
