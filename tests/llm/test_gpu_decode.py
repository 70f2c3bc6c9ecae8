"""GPU decoding and prefill of whole models against the NumPy path.

* fused-kernel decode logits equal NumPy's within 1e-4 at every step of a
  64-token generation, and the greedy ids agree (tiny fixtures and a random
  SmolLM2-shaped model);
* the decode step is recorded as a CUDA graph; one device-to-host read per token;
* fused prefill equals the NumPy forward; seeded sampling picks NumPy's tokens;
* float16 / bfloat16 weights: equal to NumPy on the same rounded weights, and
  within the stated tolerance of float32 with the same greedy ids.

Runs with ``--backend cupy`` (or in the CPU emulation with ``LOOM_CUDA_EMULATOR=1``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gpu_kernel_utils import KernelRig, kernel_rig
from llm_test_utils import FIXTURE_MODELS, fixture_tensors, reference

import loom
from loom.backend import Backend
from loom.llm import Transformer, TransformerConfig
from loom.llm.gpu_decode import FusedDecoder, FusedModel, GraphDecoder
from loom.llm.loader import transformer_from_tensors
from loom.llm.sampling import Sampler

ATOL = 1e-4
#: Largest |logit| difference of reduced-precision weights against float32 (tiny fixtures, logits of std ~4).
REDUCED_TOLERANCE = {"float16": 0.05, "bfloat16": 0.5}

SMOLLM2_SHAPES = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 3,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "eos_token_id": 2,
}


@pytest.fixture(scope="module")
def rig(backend_name: str) -> KernelRig:
    return kernel_rig(backend_name)


def smollm2_tensors(seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """SmolLM2-135M layer shapes (3 layers), seeded random Hugging Face-named weights."""
    c = SMOLLM2_SHAPES
    rng = np.random.default_rng(seed)
    d, di, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def normal(*shape: int, scale: float = 0.05) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

    embed = normal(c["vocab_size"], d, scale=0.15)  # logits of std ~4, as in the fixtures
    tensors = {"model.embed_tokens.weight": embed, "model.norm.weight": 1 + normal(d)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": 1 + normal(d),
            p + "post_attention_layernorm.weight": 1 + normal(d),
            p + "self_attn.q_proj.weight": normal(q, d),
            p + "self_attn.k_proj.weight": normal(kv, d),
            p + "self_attn.v_proj.weight": normal(kv, d),
            p + "self_attn.o_proj.weight": normal(d, q),
            p + "mlp.gate_proj.weight": normal(di, d),
            p + "mlp.up_proj.weight": normal(di, d),
            p + "mlp.down_proj.weight": normal(d, di),
        }
    return c, tensors


def _models(rig: KernelRig, config: dict, tensors: dict, dtype: str = "float32") -> tuple[Transformer, Transformer]:
    """(model on the rig with the fused path, the same model on NumPy)."""
    cfg = TransformerConfig.from_dict(config)
    model = transformer_from_tensors(cfg, tensors, backend=rig.backend, dtype=dtype)
    if rig.emulated:
        model._fused = FusedModel(model, rig.kernels)
    assert model._fused_path() is not None, "the fused kernels do not cover this model"
    return model, transformer_from_tensors(cfg, tensors, backend="numpy", dtype=dtype)


def _fixture(llm_fixtures: Path, name: str) -> tuple[dict, dict[str, np.ndarray], list[int]]:
    import json

    folder = llm_fixtures / name
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return config, fixture_tensors(folder), reference(folder)["cases"][1]["ids"]


def _check_decode(model: Transformer, numpy_model: Transformer, prompt: list[int], steps: int) -> list[int]:
    """Teacher-forced decode on both: logits within ATOL at every step, same greedy ids; returns them."""
    state = model.new_state(len(prompt) + steps)
    ref_state = numpy_model.new_state(len(prompt) + steps)
    first = loom.to_numpy(model.forward(prompt, state, last_only=True))[0]
    want = numpy_model.forward(prompt, ref_state, last_only=True)[0]
    np.testing.assert_allclose(first, want, rtol=0, atol=ATOL)
    decoder = FusedDecoder(model._fused_path(), state, Sampler())
    token, ids = int(np.argmax(want)), []
    for step in range(steps):
        got_id = decoder.step(token)
        want = numpy_model.forward([token], ref_state, last_only=True)[0]
        np.testing.assert_allclose(loom.to_numpy(decoder.logits), want, rtol=0, atol=ATOL, err_msg=f"step {step}")
        token = int(np.argmax(want))
        assert got_id == token, f"step {step}: greedy id {got_id} != NumPy's {token}"
        ids.append(token)
    return ids


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_fused_decode_equals_numpy_at_every_step_of_64_tokens(rig, llm_fixtures, name):
    config, tensors, prompt = _fixture(llm_fixtures, name)
    model, numpy_model = _models(rig, config, tensors)
    _check_decode(model, numpy_model, prompt, 12 if rig.emulated else 64)


def test_fused_decode_of_a_smollm2_shaped_model_equals_numpy(rig):
    model, numpy_model = _models(rig, *smollm2_tensors())
    _check_decode(model, numpy_model, [1, 9690, 2115, 253, 655, 28, 281, 253], 8 if rig.emulated else 64)


def test_decode_step_is_recorded_as_a_cuda_graph_and_reads_back_one_value_per_token(rig, llm_fixtures, monkeypatch):
    config, tensors, prompt = _fixture(llm_fixtures, "tiny-llama")
    model, numpy_model = _models(rig, config, tensors)
    if not rig.emulated:
        state = model.new_state(len(prompt) + 4)
        model.forward(prompt, state)
        assert FusedDecoder(model._fused_path(), state).graph is not None, "decode step not recorded as a graph"
    fetches = []
    original = Backend.fetch
    monkeypatch.setattr(Backend, "fetch", lambda self, array: fetches.append(array.size) or original(self, array))
    new = model.generate(prompt, 12, stop_ids=[])
    assert new == numpy_model.generate(prompt, 12, stop_ids=[])
    assert fetches == [1] * 11  # the first token comes from prefill; then one 1-element read per token


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_fused_prefill_equals_numpy_forward(rig, llm_fixtures, name):
    config, tensors, prompt = _fixture(llm_fixtures, name)
    model, numpy_model = _models(rig, config, tensors)
    ids = prompt + prompt[::-1]
    want = numpy_model.logits(ids)
    np.testing.assert_allclose(loom.to_numpy(model.logits(ids)), want, rtol=0, atol=ATOL)
    state = model.new_state(len(ids))
    first = loom.to_numpy(model.forward(ids[:5], state))  # chunked: the second chunk attends to the first
    second = loom.to_numpy(model.forward(ids[5:], state, last_only=True))
    assert state.pos == len(ids)
    np.testing.assert_allclose(first, want[:5], rtol=0, atol=ATOL)
    np.testing.assert_allclose(second, want[-1:], rtol=0, atol=ATOL)


def test_seeded_sampling_on_the_device_picks_numpy_tokens(rig, llm_fixtures):
    config, tensors, prompt = _fixture(llm_fixtures, "tiny-llama")
    model, numpy_model = _models(rig, config, tensors)
    for kwargs in ({"temperature": 1.3}, {"temperature": 0.8, "top_k": 20, "top_p": 0.9}):
        got = model.generate(prompt, 24, seed=7, stop_ids=[], **kwargs)
        assert got == numpy_model.generate(prompt, 24, seed=7, stop_ids=[], **kwargs), kwargs


@pytest.mark.parametrize("weight_dtype", ["float16", "bfloat16"])
def test_reduced_precision_weights(rig, llm_fixtures, weight_dtype):
    config, tensors, prompt = _fixture(llm_fixtures, "tiny-llama")
    model, numpy_model = _models(rig, config, tensors, dtype=weight_dtype)
    assert model._fused_path().format == weight_dtype
    ids = _check_decode(model, numpy_model, prompt, 16)  # same rounded weights: NumPy's numbers
    full = transformer_from_tensors(TransformerConfig.from_dict(config), tensors, backend="numpy")
    for case in reference(llm_fixtures / "tiny-llama")["cases"]:
        reduced = loom.to_numpy(model.logits(case["ids"]))
        assert np.abs(reduced - full.logits(case["ids"])).max() < REDUCED_TOLERANCE[weight_dtype]
        assert model.generate(case["ids"], 16, stop_ids=[]) == case["greedy_new_ids"]
    assert ids == full.generate(prompt, 17, stop_ids=[])[1:]


def test_generic_graph_decoder_equals_eager_decode(rig, llm_fixtures):
    """The fallback for models the kernels do not cover: the array-API step recorded as a graph."""
    if rig.emulated:
        pytest.skip("records CuPy graphs")
    config, tensors, prompt = _fixture(llm_fixtures, "tiny-gpt2")
    model, numpy_model = _models(rig, config, tensors)
    model._fused = False  # force the generic step
    state, ref_state = model.new_state(len(prompt) + 3), numpy_model.new_state(len(prompt) + 3)
    model.forward(prompt, state)
    numpy_model.forward(prompt, ref_state)
    decoder = GraphDecoder(model, state)
    assert decoder.graph is not None, "the generic decode step could not be recorded as a CUDA graph"
    token = prompt[-1]
    for _ in range(3):
        nxt = decoder.step(token)
        want = numpy_model.forward([token], ref_state, last_only=True)[0]
        np.testing.assert_allclose(loom.to_numpy(decoder.logits), want, atol=ATOL, rtol=0)
        assert nxt == int(np.argmax(want))
        token = nxt


# ------------------------------------------------------------------ reduced-precision loading (any backend)
def test_round_weights_rounds_to_nearest_even():
    from loom.llm.loader import round_weights

    one = np.float32(1.0)
    step = np.float32(2.0**-7)  # bfloat16 spacing at 1
    values = np.array([one + step / 2, one + 3 * step / 2, one + step / 4, -(one + 3 * step / 4)], np.float32)
    assert round_weights(values, "bfloat16").tolist() == [1.0, 1.0 + 2 * step, 1.0, -(1.0 + step)]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(round_weights(x, "float16"), x.astype(np.float16).astype(np.float32))
    bf = round_weights(x, "bfloat16")
    assert not (bf.view(np.uint32) & 0xFFFF).any()
    assert np.abs(bf - x).max() <= np.abs(x).max() * 2.0**-8


def test_reduced_precision_loading_rounds_the_matrices_only(llm_fixtures):
    full = loom.llm.load_transformer(llm_fixtures / "tiny-llama", backend="numpy")
    half = loom.llm.load_transformer(llm_fixtures / "tiny-llama", backend="numpy", dtype="bfloat16")
    assert (full.weight_dtype, half.weight_dtype) == ("float32", "bfloat16")
    assert half.dtype == np.float32
    layer, ref = half.weights.layers[0], full.weights.layers[0]
    assert not (layer.qkv.view(np.uint32) & 0xFFFF).any()
    assert not np.array_equal(layer.qkv, ref.qkv)
    np.testing.assert_array_equal(layer.attn_norm, ref.attn_norm)  # norm gains stay float32


def test_unknown_dtype_is_a_config_error_listing_the_choices(llm_fixtures):
    from loom.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dtype: 'int8' is not supported.*bfloat16"):
        loom.llm.load_transformer(llm_fixtures / "tiny-llama", dtype="int8")
