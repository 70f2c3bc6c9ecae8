"""One run on a GPU machine: issue #13's table, loom CuPy against its peers in the same process.

LLM rows (SmolLM2-135M shapes, seeded random weights, batch 1, greedy, 128 new tokens):

* **decode tokens/s** of loom CuPy with float32 weights and with float16 / bfloat16
  weights; transformers eager and with a static cache + ``torch.compile`` in float32
  and bfloat16; and the **bandwidth limit**: measured device-to-device copy
  bandwidth (bytes read + written) divided by the weight bytes one token reads;
* **prefill** of 256 tokens (ms, logits of the last position) for loom (plain float32,
  and with TF32 GEMMs) and transformers eager float32.

Training rows (measured with today's ``Network.train``; the training engine is #9's):

* a 4096→4096→4096→10 Dense network, batch 256, SGD, MSE, float32: samples/s of loom
  CuPy and of the same network in torch CUDA eager;
* the seed README grid-scatter demo (800 epochs × 4 samples): loom CuPy vs loom NumPy.

Rates are the best of ``--repeats`` runs (the spread is printed beside them). A
decode rate counts the tokens after the first one, timed at each yielded token, for
loom and transformers alike. ``--profile`` adds the GPU time of each decode kernel.

Usage::

    python bench/bench_gpu.py [--repeats 3] [--peer-repeats 2] [--skip-compile] [--skip-hf]
                              [--skip-training] [--profile]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_llm import SMOLLM2_135M, random_smollm2

import loom
from loom.backend import resolve_backend
from loom.llm.config import TransformerConfig
from loom.llm.loader import transformer_from_tensors

PROMPT = [1, 9690, 2115, 253, 655, 28, 281, 253]


def spread(values: list[float]) -> str:
    return f"{min(values):.4g}–{max(values):.4g}"


# ---------------------------------------------------------------------------------------- device
def copy_bandwidth(cupy: Any, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written (median)."""
    src = cupy.random.default_rng(0).random(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(repeats + 2):
        start.record()
        dst[...] = src
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return 2 * nbytes / float(np.median(times[2:])) / 1e9


def decode_bytes(model: Any) -> int:
    """Weight bytes one fused decode step reads: every layer matrix and the LM head, in their storage format."""
    fused = model._fused_path()
    if fused is None:
        return int(model.weights.nbytes)
    arrays = [fused.head] + [a for m in fused.layers for a in (m.qkv, m.out, m.mlp_in, m.mlp_out)]
    return sum(int(a.nbytes) for a in arrays)


# ------------------------------------------------------------------------------------------ loom
def loom_decode(model: Any, new_tokens: int, repeats: int) -> list[float]:
    """Tokens/s of ``model.stream`` after the first token, one value per repeat."""
    model.generate(PROMPT, 4, stop_ids=[])  # warm-up: kernels, weights, graph
    rates = []
    for _ in range(repeats):
        stamps = []
        model.backend.synchronize()
        for _token in model.stream(PROMPT, new_tokens + 1, stop_ids=[]):
            stamps.append(time.perf_counter())
        rates.append(new_tokens / (stamps[-1] - stamps[0]))
    return rates


def loom_prefill(model: Any, ids: list[int], repeats: int) -> list[float]:
    """Milliseconds of a prefill of ``ids`` (cache filled, last-position logits, argmax read back)."""
    be = model.backend
    times = []
    for _ in range(repeats + 1):
        state = model.new_state(len(ids) + 1)
        be.synchronize()
        t0 = time.perf_counter()
        int(be.xp.argmax(model.forward(ids, state, last_only=True)[0]))
        times.append((time.perf_counter() - t0) * 1e3)
    return times[1:]


def profile_decode(model: Any, cupy: Any, context: int, repeats: int = 20) -> list[tuple[str, float]]:
    """GPU microseconds per launch of each decode kernel, run over every layer's weights (from memory, not L2)."""
    from loom.llm.gpu_decode import FusedDecoder

    state = model.new_state(context + 2)
    model.forward([int(i) % 1000 + 3 for i in range(context)], state)
    d = FusedDecoder(model._fused_path(), state)
    f, k, w = d.fused, d.fused.kernels, model.weights
    fmt, heads, pairs = f.format, f.heads, list(zip(w.layers, f.layers, strict=True))

    def per_layer(launch: Callable[[int, Any, Any], None]) -> Callable[[], None]:
        return lambda: [launch(i, layer, m) for i, (layer, m) in enumerate(pairs)]

    def qkv(i: int, layer: Any, m: Any) -> None:
        norm = f.norm(layer.attn_norm, None)
        k.qkv_rope(fmt, d.x, norm, m.qkv, None, heads, d._rope, d.io, d.q, state.keys[i], state.values[i])

    def attention(i: int, layer: Any, m: Any) -> None:
        k.decode_attention(d.q, state.keys[i], state.values[i], d.io, heads, f.scales[i], d.part_o, d.part_ml)

    steps: list[tuple[str, Callable[[], None], int]] = [
        ("embed", lambda: k.embed(w.head, True, None, d.io, d.x, d.best), 1),
        ("qkv + rope + cache", per_layer(qkv), len(pairs)),
        ("attention", per_layer(attention), len(pairs)),
        (
            "attn out + residual",
            per_layer(lambda i, la, m: k.attn_out(fmt, d.part_o, d.part_ml, m.out, None, d.x)),
            len(pairs),
        ),
        (
            "norm + gate/up + silu",
            per_layer(lambda i, la, m: k.mlp_in(fmt, d.x, f.norm(la.mlp_norm, None), m.mlp_in, None, True, d.act)),
            len(pairs),
        ),
        ("down + residual", per_layer(lambda i, la, m: k.mlp_out(fmt, d.act, m.mlp_out, None, d.x)), len(pairs)),
        (
            "final norm + head + argmax",
            lambda: k.lm_head(fmt, d.x, f.norm(w.final_norm, None), f.head, d.logits, d.best),
            1,
        ),
    ]
    rows = []
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()

    def timed(graph: Any) -> float:
        with graph.stream:
            graph.run()
            start.record(graph.stream)
            for _ in range(repeats):
                graph.run()
            stop.record(graph.stream)
        stop.synchronize()
        return cupy.cuda.get_elapsed_time(start, stop) * 1e3 / repeats

    for name, launch, count in steps:
        rows.append((name, timed(model.backend.capture(launch)) / count))
    rows.append(("whole step (graph replay)", timed(d.graph)))
    return rows


# ---------------------------------------------------------------------------------- transformers
def hf_model(config: dict[str, Any], tensors: dict[str, np.ndarray], dtype: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    keys = [k for k in SMOLLM2_135M if k not in ("architectures", "model_type", "hidden_act")]
    model = LlamaForCausalLM(LlamaConfig(**{k: config[k] for k in keys}))
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, strict=False
    )
    if [m for m in missing if m != "lm_head.weight"] or unexpected:
        raise RuntimeError(f"weights did not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    return model.to("cuda", getattr(torch, dtype)).eval()


class _Stamps:
    """A transformers streamer that records when each new token arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def hf_decode(model: Any, new_tokens: int, repeats: int, warmups: int = 1) -> list[float]:
    """Tokens/s of ``model.generate`` after the first new token (timed by a streamer)."""
    import torch

    prompt = torch.tensor([PROMPT], device="cuda")
    kwargs = dict(
        do_sample=False,
        max_new_tokens=new_tokens + 1,
        min_new_tokens=new_tokens + 1,
        pad_token_id=0,
        eos_token_id=None,
    )
    rates = []
    with torch.inference_mode():
        for i in range(warmups + repeats):
            stamps = _Stamps()
            model.generate(prompt, streamer=stamps, **kwargs)
            torch.cuda.synchronize()
            if i >= warmups:  # stamps[0] is the prompt, stamps[1] the first new token
                rates.append(new_tokens / (stamps.times[-1] - stamps.times[1]))
    return rates


def hf_prefill(model: Any, ids: list[int], repeats: int) -> list[float]:
    import torch

    long_t = torch.tensor([ids], device="cuda")
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            logits = model(long_t, use_cache=True, logits_to_keep=1).logits
            int(logits[0, -1].argmax())
            times.append((time.perf_counter() - t0) * 1e3)
    return times[1:]


def hf_compiled(model: Any) -> Any:
    """A static KV cache: ``generate`` then compiles the forward pass itself (``torch.compile``, CUDA graphs).

    transformers compiles automatically when the cache is static and the model is on a GPU; wrapping
    ``model.forward`` in ``torch.compile(mode="reduce-overhead")`` by hand as well failed on
    transformers 5.17 ("accessing tensor output of CUDAGraphs that has been overwritten").
    """
    model.generation_config.cache_implementation = "static"
    model.generation_config.disable_compile = False
    return model


# -------------------------------------------------------------------------------------- training
MLP_WIDTH, MLP_OUT, MLP_BATCH, MLP_BATCHES, MLP_LR = 4096, 10, 256, 40, 0.01


def mlp_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = MLP_BATCH * MLP_BATCHES
    x = rng.random((n, MLP_WIDTH), dtype=np.float32)
    t = np.zeros((n, MLP_OUT), np.float32)
    t[np.arange(n), rng.integers(0, MLP_OUT, n)] = 1.0
    return x, t


def loom_mlp(repeats: int) -> list[float]:
    """Samples/s of ``Network.train`` (one epoch) on the 4096-wide MLP, loom CuPy."""
    x, t = mlp_data()
    net = loom.create_network_from_json(
        {
            "batch_size": MLP_BATCH,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 3,
            "layers": [
                {"type": "dense", "input_size": MLP_WIDTH, "output_size": MLP_WIDTH, "activation": "relu"},
                {"type": "dense", "input_size": MLP_WIDTH, "output_size": MLP_WIDTH, "activation": "relu"},
                {"type": "dense", "input_size": MLP_WIDTH, "output_size": MLP_OUT, "activation": "sigmoid"},
            ],
        },
        backend="cupy",
        seed=1,
    )
    batches = [
        loom.TrainingBatch(x[i : i + MLP_BATCH].reshape(-1), t[i : i + MLP_BATCH].reshape(-1))
        for i in range(0, len(x), MLP_BATCH)
    ]
    config = loom.TrainingConfig(epochs=1, learning_rate=MLP_LR, loss_type="mse", use_gpu=True)
    sync = resolve_backend("cupy").synchronize
    net.train(batches[:2], config)  # warm-up
    rates = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        net.train(batches, config)
        sync()
        rates.append(len(x) / (time.perf_counter() - t0))
    return rates


def torch_mlp(repeats: int) -> list[float]:
    """Samples/s of a standard torch CUDA eager SGD loop on the same network."""
    import torch

    class ScaledReLU(torch.nn.Module):
        def forward(self, v: Any) -> Any:
            return torch.relu(v) * 1.1

    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(MLP_WIDTH, MLP_WIDTH),
        ScaledReLU(),
        torch.nn.Linear(MLP_WIDTH, MLP_WIDTH),
        ScaledReLU(),
        torch.nn.Linear(MLP_WIDTH, MLP_OUT),
        torch.nn.Sigmoid(),
    ).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=MLP_LR)
    loss_fn = torch.nn.MSELoss()
    x, t = mlp_data()
    xs, ts = torch.from_numpy(x).cuda(), torch.from_numpy(t).cuda()

    def epoch(n: int) -> None:
        for i in range(0, n, MLP_BATCH):
            opt.zero_grad()
            loss = loss_fn(model(xs[i : i + MLP_BATCH]), ts[i : i + MLP_BATCH])
            loss.backward()
            opt.step()
            loss.item()  # one loss fetch per batch, as Network.train does

    epoch(2 * MLP_BATCH)
    rates = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        epoch(len(x))
        torch.cuda.synchronize()
        rates.append(len(x) / (time.perf_counter() - t0))
    return rates


def seed_demo(backend: str, repeats: int) -> list[float] | None:
    """Seconds of the seed README grid-scatter demo (800 epochs), or None without the fixture."""
    from bench_layers import demo_seconds

    sync = resolve_backend(backend).synchronize
    times = [demo_seconds(backend, 1, sync) for _ in range(repeats)]
    return None if times[0] is None else times


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prefill-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loom measurement")
    parser.add_argument("--peer-repeats", type=int, default=2, help="timed runs of each peer and training row")
    parser.add_argument("--skip-hf", action="store_true", help="no transformers rows")
    parser.add_argument("--skip-compile", action="store_true", help="no static-cache + torch.compile rows")
    parser.add_argument("--skip-training", action="store_true", help="no training rows")
    parser.add_argument("--profile", action="store_true", help="GPU time of each decode kernel")
    parser.add_argument(
        "--time-budget", type=float, default=float("inf"), help="seconds after which no torch.compile row starts"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    be = resolve_backend("cupy")
    cupy = be.raw
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    bandwidth = copy_bandwidth(cupy)
    print(f"device: {props['name'].decode()}; copy bandwidth {bandwidth:.0f} GB/s (read + written)")
    config_dict, tensors = random_smollm2()
    config = TransformerConfig.from_dict(config_dict)
    long = np.random.default_rng(1).integers(3, config.vocab_size, args.prefill_tokens).tolist()
    rows: list[tuple[str, str, str, str, str]] = []

    decode: dict[str, list[float]] = {}
    limit: dict[str, float] = {}
    prefill: dict[str, list[float]] = {}
    greedy = last_logits = None
    for dtype in ("float32", "bfloat16", "float16"):
        model = transformer_from_tensors(config, tensors, backend=be, dtype=dtype)
        decode[dtype] = loom_decode(model, args.new_tokens, args.repeats)
        limit[dtype] = bandwidth * 1e9 / decode_bytes(model)
        print(
            f"loom CuPy {dtype:8s} decode {spread(decode[dtype])} tok/s "
            f"({decode_bytes(model) / 1e6:.0f} MB/token; limit {limit[dtype]:.0f} tok/s)"
        )
        if dtype == "float32":
            greedy = model.generate(PROMPT, 8, stop_ids=[])
            last_logits = loom.to_numpy(model.forward(long, model.new_state(len(long)), last_only=True))[0]
            prefill["float32"] = loom_prefill(model, long, args.repeats)
            model.allow_tf32 = True
            prefill["tf32"] = loom_prefill(model, long, args.repeats)
            model.allow_tf32 = False
            times = f"{spread(prefill['float32'])} ms (TF32 {spread(prefill['tf32'])})"
            print(f"loom CuPy prefill {len(long)} tokens: {times}")
            if args.profile:
                try:
                    for name, us in profile_decode(model, cupy, len(PROMPT) + args.new_tokens // 2):
                        print(f"  profile  {name:28s} {us:8.2f} us")
                except Exception as exc:  # a diagnostic only: the table still prints
                    print(f"  profile failed: {type(exc).__name__}: {exc}")
        del model
        gc.collect()
        cupy.get_default_memory_pool().free_all_blocks()

    training: dict[str, Any] = {}
    if not args.skip_training:
        # TRAINING ROWS: measured through today's Network.train; the engine is rewritten in #9.
        training["loom"] = loom_mlp(args.peer_repeats)
        try:
            training["torch"] = torch_mlp(args.peer_repeats)
        except ImportError:
            training["torch"] = None
        training["gpu_demo"], training["cpu_demo"] = seed_demo("cupy", 1), seed_demo("numpy", args.peer_repeats)
        print(f"training rows measured ({time.perf_counter() - started:.0f} s since start)")

    hf: dict[str, list[float] | str] = {}
    if not args.skip_hf:
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError as exc:
            args.skip_hf = True
            print(f"transformers rows skipped: {exc}")
    if not args.skip_hf:
        import torch

        for dtype in ("float32", "bfloat16"):
            model = hf_model(config_dict, tensors, dtype)
            hf[f"eager {dtype}"] = hf_decode(model, args.new_tokens, args.peer_repeats)
            if dtype == "float32":
                hf["prefill"] = hf_prefill(model, long, args.repeats)
                with torch.inference_mode():
                    out = model.generate(
                        torch.tensor([PROMPT], device="cuda"), max_new_tokens=8, do_sample=False, pad_token_id=0
                    )
                    ref = model(torch.tensor([long], device="cuda")).logits[0, -1].float().cpu().numpy()
                diff = float(np.abs(ref - last_logits).max())
                same = out[0, len(PROMPT) :].tolist() == greedy
                verdict = "agree" if same else "DIFFER"
                print(f"check vs transformers float32: max |logit diff| {diff:.2e}; greedy ids {verdict}")
            print(f"transformers eager {dtype}: decode {spread(hf[f'eager {dtype}'])} tok/s")
            if not args.skip_compile and time.perf_counter() - started > args.time_budget:
                hf[f"compiled {dtype}"] = "skipped (time budget)"
                print(f"transformers static+compile {dtype}: skipped (--time-budget {args.time_budget:.0f} s spent)")
            elif not args.skip_compile:
                t0 = time.perf_counter()
                try:
                    rates = hf_decode(hf_compiled(model), args.new_tokens, args.peer_repeats, warmups=2)
                except Exception as exc:  # a peer's failure must not lose the other rows
                    hf[f"compiled {dtype}"] = f"failed ({type(exc).__name__})"
                    print(f"transformers static+compile {dtype}: failed: {type(exc).__name__}: {exc}")
                else:
                    hf[f"compiled {dtype}"] = rates
                    print(
                        f"transformers static+compile {dtype}: decode {spread(rates)} tok/s "
                        f"(compile and warm-up included, the step took {time.perf_counter() - t0:.0f} s)"
                    )
            del model
            gc.collect()
            torch.cuda.empty_cache()

    def ratio(a: list[float] | None, b: Any) -> str:
        return f"{max(a) / max(b):.2f}×" if a and isinstance(b, list) and b else "—"

    def best(v: Any, fmt: str = "{:.0f}") -> str:
        if isinstance(v, list) and v:
            return fmt.format(max(v))
        return v if isinstance(v, str) else "skipped"

    for dtype, peer in (("float32", "float32"), ("bfloat16", "bfloat16"), ("float16", None)):
        peers = "—"
        ratios = "—"
        if peer is not None and hf:
            eager, comp = hf.get(f"eager {peer}"), hf.get(f"compiled {peer}")
            peers = f"eager {best(eager)}; static+compile {best(comp)}"
            ratios = f"{ratio(decode[dtype], eager)} / {ratio(decode[dtype], comp)}"
        rows.append(
            (f"decode tok/s, {dtype} weights", best(decode[dtype]), peers, ratios, f"{limit[dtype]:,.0f} tok/s")
        )
    pre_hf = hf.get("prefill")
    pre_ratio = f"{min(pre_hf) / min(prefill['float32']):.2f}× faster" if isinstance(pre_hf, list) else "—"
    rows.append(
        (
            f"prefill {len(long)} tokens, ms",
            f"{min(prefill['float32']):.2f} (TF32 {min(prefill['tf32']):.2f})",
            f"eager float32 {min(pre_hf):.2f}" if isinstance(pre_hf, list) else "skipped",
            pre_ratio,
            "—",
        )
    )

    if training:
        loom_rates, torch_rates = training["loom"], training["torch"]
        rows.append(
            (
                "4096→4096→4096→10 MLP, batch 256, SGD, samples/s",
                f"{max(loom_rates) / 1e3:.1f}k",
                f"torch CUDA eager {max(torch_rates) / 1e3:.1f}k" if torch_rates else "skipped",
                ratio(loom_rates, torch_rates),
                "—",
            )
        )
        gpu_demo, cpu_demo = training["gpu_demo"], training["cpu_demo"]
        if gpu_demo is None or cpu_demo is None:
            rows.append(("seed grid-scatter demo, 800 epochs, s", "skipped (no fixture)", "", "", ""))
        else:
            rows.append(
                (
                    "seed grid-scatter demo, 800 epochs, s",
                    f"{min(gpu_demo):.2f}",
                    f"loom NumPy {min(cpu_demo):.2f}",
                    f"{min(cpu_demo) / min(gpu_demo):.2f}× (>1: GPU faster)",
                    "—",
                )
            )

    print()
    print("| workload | loom CuPy | peer | loom vs peer | bandwidth limit |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
