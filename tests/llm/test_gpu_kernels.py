"""Each fused CUDA kernel against the array-API ops it replaces (``loom.ops.transformer``).

Fresh random inputs per case; outputs poisoned before each launch so unwritten
elements show. Runs on the GPU with ``--backend cupy`` (or, slowly, in the CPU
emulation with ``LOOM_CUDA_EMULATOR=1``); skipped otherwise.
"""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest
from gpu_kernel_utils import KernelRig, kernel_rig

from loom.backend.cuda_llm import argmax_from_key, columns_per_block
from loom.llm.gpu_decode import _to_format
from loom.llm.loader import round_weights
from loom.ops.transformer import (
    causal_attention,
    gelu_tanh,
    layer_norm,
    rms_norm,
    rope_apply,
    rope_tables,
    swiglu,
)

FORMATS = ("float32", "float16", "bfloat16")
POISON = np.float32(np.nan)


@pytest.fixture(scope="module")
def rig(backend_name: str) -> KernelRig:
    return kernel_rig(backend_name)


def _rng(request: pytest.FixtureRequest) -> np.random.Generator:
    return np.random.default_rng(abs(hash(request.node.name)) % (2**32))


def _weights(rig: KernelRig, w: np.ndarray, fmt: str) -> tuple[np.ndarray, object]:
    """(float32 reference values, device array in ``fmt``) of a weight matrix."""
    ref = w if fmt == "float32" else round_weights(w, fmt)
    return ref, _to_format(rig.raw, rig.put(ref), fmt, ref.shape[1])


def _tables(rotary: int, positions: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    inv_freq = (1.0 / theta ** (np.arange(0, rotary, 2, dtype=np.float32) / rotary)).astype(np.float32)
    return rope_tables(inv_freq, positions, 1.0, xp)


def _norm(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, kind: int) -> np.ndarray:
    return rms_norm(x, w, 1e-5, xp) if kind == 0 else layer_norm(x, w, b, 1e-5, xp)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("kind", "heads", "rotary", "bias", "d"),
    [
        (0, (4, 2, 16), 16, False, 64),
        (0, (6, 2, 32), 16, True, 64),
        (1, (4, 4, 16), 0, True, 64),
        (0, (8, 1, 64), 64, False, 64),
        (0, (2, 1, 16), 16, False, 2100),  # more rows than one register fetch holds
    ],
)
def test_qkv_rope_equals_norm_matmul_rope_and_writes_one_cache_row(rig, request, fmt, kind, heads, rotary, bias, d):
    rng = _rng(request)
    h, hk, hd = heads
    s_max, pos = 12, 7
    n = (h + 2 * hk) * hd
    x = rng.standard_normal(d, dtype=np.float32)
    nw = 1 + 0.1 * rng.standard_normal(d, dtype=np.float32)
    nb = 0.1 * rng.standard_normal(d, dtype=np.float32)
    w_ref, w_dev = _weights(rig, 0.2 * rng.standard_normal((d, n), dtype=np.float32), fmt)
    b = 0.1 * rng.standard_normal(n, dtype=np.float32) if bias else None
    cos, sin = _tables(rotary, s_max) if rotary else (None, None)

    qkv = _norm(x[None], nw, nb, kind) @ w_ref + (b if bias else 0)  # [1, N]
    qk = qkv[:, : (h + hk) * hd].reshape(1, h + hk, hd)
    if rotary:
        qk = rope_apply(qk, cos[pos : pos + 1], sin[pos : pos + 1], xp)
    cache_k = rng.standard_normal((hk, s_max, hd), dtype=np.float32)
    cache_v = rng.standard_normal((hk, s_max, hd), dtype=np.float32)
    want_k, want_v = cache_k.copy(), cache_v.copy()
    want_k[:, pos] = qk[0, h:]
    want_v[:, pos] = qkv[0, (h + hk) * hd :].reshape(hk, hd)

    q = rig.put(np.full(h * hd, POISON))
    k_dev, v_dev = rig.put(cache_k), rig.put(cache_v)
    io = rig.put(np.array([3, pos], np.int32))
    rope = (rig.put(cos), rig.put(sin), rotary) if rotary else None
    norm = (rig.put(nw), rig.put(nb) if kind == 1 else None, 1e-5, kind)
    bias_dev = rig.put(b) if bias else None
    rig.kernels.qkv_rope(fmt, rig.put(x), norm, w_dev, bias_dev, heads, rope, io, q, k_dev, v_dev)
    np.testing.assert_allclose(rig.get(q), qk[0, :h].reshape(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rig.get(k_dev), want_k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rig.get(v_dev), want_v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("heads", "s_max", "pos", "splits"),
    [((4, 2, 16), 300, 257, 3), ((6, 3, 64), 40, 0, 4), ((2, 1, 128), 50, 37, 2), ((2, 2, 256), 20, 9, 1)],
)
def test_decode_attention_then_output_projection_equals_attention_matmul_residual(
    rig, request, fmt, heads, s_max, pos, splits
):
    rng = _rng(request)
    h, hk, hd = heads
    d, scale = 64, 0.3
    q = rng.standard_normal(h * hd, dtype=np.float32)
    keys = rng.standard_normal((hk, s_max, hd), dtype=np.float32)
    values = rng.standard_normal((hk, s_max, hd), dtype=np.float32)
    keys[:, pos + 1 :] = 1e4  # never visible: would dominate any score that read them
    w_ref, w_dev = _weights(rig, 0.2 * rng.standard_normal((h * hd, d), dtype=np.float32), fmt)
    b = 0.1 * rng.standard_normal(d, dtype=np.float32)
    x = rng.standard_normal(d, dtype=np.float32)
    att = causal_attention(q.reshape(1, h, hd), keys[:, : pos + 1], values[:, : pos + 1], pos, scale, xp)
    want = x + (att @ w_ref + b)[0]

    part_o = rig.put(np.full((h, splits, hd), POISON))
    part_ml = rig.put(np.full((h, splits, 2), POISON))
    io = rig.put(np.array([0, pos], np.int32))
    k_dev, v_dev, x_dev = rig.put(keys), rig.put(values), rig.put(x)
    rig.kernels.decode_attention(rig.put(q), k_dev, v_dev, io, heads, scale, part_o, part_ml)
    rig.kernels.attn_out(fmt, part_o, part_ml, w_dev, rig.put(b), x_dev)
    np.testing.assert_allclose(rig.get(x_dev), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("gated", "bias"), [(True, False), (True, True), (False, True)])
def test_mlp_in_equals_norm_matmul_swiglu_or_gelu(rig, request, fmt, gated, bias):
    rng = _rng(request)
    d, di = 64, 96
    kind = 0 if gated else 1
    x = rng.standard_normal(d, dtype=np.float32)
    nw = 1 + 0.1 * rng.standard_normal(d, dtype=np.float32)
    nb = 0.1 * rng.standard_normal(d, dtype=np.float32)
    cols = 2 * di if gated else di
    w_ref, w_dev = _weights(rig, 0.3 * rng.standard_normal((d, cols), dtype=np.float32), fmt)
    b = 0.1 * rng.standard_normal(cols, dtype=np.float32) if bias else None
    a = _norm(x[None], nw, nb, kind) @ w_ref + (b if bias else 0)
    want = swiglu(a[:, :di], a[:, di:], xp)[0] if gated else gelu_tanh(a, xp)[0]

    out = rig.put(np.full(di, POISON))
    norm = (rig.put(nw), rig.put(nb) if kind else None, 1e-5, kind)
    rig.kernels.mlp_in(fmt, rig.put(x), norm, w_dev, rig.put(b) if bias else None, gated, out)
    np.testing.assert_allclose(rig.get(out), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("di", [160, 4200])  # 4200: more rows than one register fetch holds
def test_mlp_out_adds_the_down_projection_to_the_residual(rig, request, fmt, di):
    rng = _rng(request)
    d = 64
    a = rng.standard_normal(di, dtype=np.float32)
    x = rng.standard_normal(d, dtype=np.float32)
    w_ref, w_dev = _weights(rig, 0.2 * rng.standard_normal((di, d), dtype=np.float32), fmt)
    b = 0.1 * rng.standard_normal(d, dtype=np.float32)
    x_dev = rig.put(x)
    rig.kernels.mlp_out(fmt, rig.put(a), w_dev, rig.put(b), x_dev)
    np.testing.assert_allclose(rig.get(x_dev), x + a @ w_ref + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("vocab", "d"), [(100, 64), (512, 64), (4100, 64), (4100, 600)])
def test_lm_head_gives_logits_and_the_first_argmax(rig, request, fmt, vocab, d):
    rng = _rng(request)
    x = rng.standard_normal(d, dtype=np.float32)
    nw = 1 + 0.1 * rng.standard_normal(d, dtype=np.float32)
    head = 0.3 * rng.standard_normal((d, vocab), dtype=np.float32)
    h = rms_norm(x[None], nw, 1e-5, xp)[0]
    head[:, vocab // 3] = head[:, 2 * vocab // 3] = h  # the largest logit, twice: the first index wins
    ref = head if fmt == "float32" else round_weights(head, fmt)
    vw = 4 if fmt == "float32" else 8
    w_dev = _to_format(rig.raw, rig.put(ref), fmt, -(-vocab // vw) * vw)
    want = rms_norm(x[None], nw, 1e-5, xp)[0] @ ref
    logits = rig.put(np.full(vocab, POISON))
    best = rig.put(np.zeros(1, np.uint64))
    rig.kernels.lm_head(fmt, rig.put(x), (rig.put(nw), None, 1e-5, 0), w_dev, logits, best)
    np.testing.assert_allclose(rig.get(logits), want, rtol=1e-5, atol=1e-4)
    assert argmax_from_key(rig.get(best)[0]) == int(np.argmax(rig.get(logits))) == vocab // 3


@pytest.mark.parametrize(("tied", "with_positions"), [(True, False), (False, True)])
def test_embed_gathers_the_token_and_resets_the_argmax_slot(rig, request, tied, with_positions):
    rng = _rng(request)
    d, vocab, token, pos = 64, 100, 37, 5
    table = rng.standard_normal((d, vocab) if tied else (vocab, d), dtype=np.float32)
    positions = rng.standard_normal((16, d), dtype=np.float32)
    want = (table[:, token] if tied else table[token]) + (positions[pos] if with_positions else 0)
    x = rig.put(np.full(d, POISON))
    best = rig.put(np.array([12345], np.uint64))
    io = rig.put(np.array([token, pos], np.int32))
    rig.kernels.embed(rig.put(table), tied, rig.put(positions) if with_positions else None, io, x, best)
    np.testing.assert_array_equal(rig.get(x), want)
    assert rig.get(best)[0] == 0


def test_set_step_writes_token_and_position(rig):
    io = rig.put(np.array([-1, -1], np.int32))
    rig.kernels.set_step(io, 4321, 17)
    assert rig.get(io).tolist() == [4321, 17]


@pytest.mark.parametrize("kind", [0, 1])
def test_norm_rows_equals_rms_and_layer_norm(rig, request, kind):
    rng = _rng(request)
    x = rng.standard_normal((5, 96), dtype=np.float32)
    w = 1 + 0.1 * rng.standard_normal(96, dtype=np.float32)
    b = 0.1 * rng.standard_normal(96, dtype=np.float32)
    out = rig.put(np.full(x.shape, POISON))
    rig.kernels.norm_rows(rig.put(x), rig.put(w), rig.put(b) if kind else None, 1e-5, kind, out)
    np.testing.assert_allclose(rig.get(out), _norm(x, w, b, kind), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("heads", "rotary", "bias"),
    [
        ((4, 2, 16), 16, True),
        ((4, 1, 32), 16, False),
        ((2, 2, 16), 0, True),
        ((2, 1, 128), 64, False),
        ((2, 1, 160), 0, True),
    ],
)
def test_rope_scatter_and_prefill_attention_equal_rope_and_causal_attention(rig, request, heads, rotary, bias):
    rng = _rng(request)
    h, hk, hd = heads
    t, start, s_max, scale = 7, 3, 12, 0.25
    n = (h + 2 * hk) * hd
    qkv = rng.standard_normal((t, n), dtype=np.float32)
    b = 0.1 * rng.standard_normal(n, dtype=np.float32) if bias else None
    cos, sin = _tables(rotary, s_max) if rotary else (None, None)
    full = qkv + (b if bias else 0)
    qk = full[:, : (h + hk) * hd].reshape(t, h + hk, hd)
    if rotary:
        qk = rope_apply(qk, cos[start : start + t], sin[start : start + t], xp)
    cache_k = rng.standard_normal((hk, s_max, hd), dtype=np.float32)
    cache_v = rng.standard_normal((hk, s_max, hd), dtype=np.float32)
    want_k, want_v = cache_k.copy(), cache_v.copy()
    want_k[:, start : start + t] = qk[:, h:].transpose(1, 0, 2)
    want_v[:, start : start + t] = full[:, (h + hk) * hd :].reshape(t, hk, hd).transpose(1, 0, 2)
    want_att = causal_attention(qk[:, :h], want_k[:, : start + t], want_v[:, : start + t], start, scale, xp)

    q = rig.put(np.full((t, h * hd), POISON))
    k_dev, v_dev = rig.put(cache_k), rig.put(cache_v)
    rope = (rig.put(cos), rig.put(sin), rotary) if rotary else None
    rig.kernels.rope_scatter(rig.put(qkv), rig.put(b) if bias else None, heads, rope, start, q, k_dev, v_dev)
    np.testing.assert_allclose(rig.get(q), qk[:, :h].reshape(t, h * hd), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rig.get(k_dev), want_k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rig.get(v_dev), want_v, rtol=1e-5, atol=1e-5)
    att = rig.put(np.full((t, h * hd), POISON))
    rig.kernels.prefill_attention(q, k_dev, v_dev, start, heads, scale, att)
    np.testing.assert_allclose(rig.get(att), want_att, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("gated", "bias"), [(True, False), (False, True)])
def test_gated_activation_equals_swiglu_or_gelu(rig, request, gated, bias):
    rng = _rng(request)
    t, di = 3, 40
    a = 3 * rng.standard_normal((t, 2 * di if gated else di), dtype=np.float32)
    a[0, 0] = -100.0  # exp overflow: silu gives -0
    b = rng.standard_normal(a.shape[1], dtype=np.float32) if bias else None
    full = a + (b if bias else 0)
    with np.errstate(over="ignore"):
        want = swiglu(full[:, :di], full[:, di:], xp) if gated else gelu_tanh(full, xp)
    out = rig.put(np.full((t, di), POISON))
    rig.kernels.gated_activation(rig.put(a), rig.put(b) if bias else None, gated, out)
    np.testing.assert_allclose(rig.get(out), want, rtol=1e-5, atol=1e-6)


def test_gemm_accumulates_into_the_output(rig, request):
    rng = _rng(request)
    a = rng.standard_normal((5, 32), dtype=np.float32)
    b = rng.standard_normal((32, 24), dtype=np.float32)
    c = rng.standard_normal((5, 24), dtype=np.float32)
    out = rig.put(c)
    rig.kernels.gemm(rig.put(a), rig.put(b), out, beta=1.0)
    np.testing.assert_allclose(rig.get(out), c + a @ b, rtol=1e-5, atol=1e-5)


def test_columns_per_block_keeps_every_multiprocessor_busy():
    assert columns_per_block(144, 132) == 2
    assert columns_per_block(12288, 132) == 32
    assert all(columns_per_block(n, 132) in (2, 4, 8, 16, 32) for n in range(1, 5000, 97))
