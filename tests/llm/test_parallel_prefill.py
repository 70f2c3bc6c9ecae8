"""Row-parallel NumPy prefill (loom.llm.parallel_prefill) equals the serial one."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from llm_test_utils import reference

from loom.errors import ConfigError
from loom.llm import Transformer, load_transformer
from loom.llm.parallel_prefill import (
    ENV_THREADS,
    RowParallel,
    balance_blocks,
    parallel_workers,
    prefill_workers,
    single_threaded_blas,
    split_rows,
)

RTOL = 1e-5


def _models(folder: Path, backend) -> tuple[Transformer, Transformer]:
    """The same model twice: serial, and row-parallel from 1 row per worker with small attention blocks."""
    serial = load_transformer(folder, backend=backend)
    serial.parallel_min_rows = 10**9
    parallel = load_transformer(folder, backend=backend)
    parallel.parallel_min_rows = 1
    parallel._attention_block = 2  # several query blocks even for short prompts
    return serial, parallel


def _prompt(folder: Path) -> list[int]:
    ids = max((case["ids"] for case in reference(folder)["cases"]), key=len)
    return list(ids) * 3  # longer than any reference case: more rows and blocks per worker


def _close(a, b) -> None:
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * float(np.abs(b).max()))


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_THREADS, "2")


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_parallel_prefill_equals_serial(name: str, llm_fixtures: Path, backend, two_threads) -> None:
    if backend.name != "numpy":
        pytest.skip("the row-parallel prefill is NumPy-only")
    folder = llm_fixtures / name
    serial, parallel = _models(folder, backend)
    ids = _prompt(folder)
    assert parallel_workers(parallel, len(ids)) == 2
    assert parallel_workers(serial, len(ids)) == 1
    # no cache (full logits), then a cached prefill after a cached prefix (start > 0)
    _close(parallel.logits(ids), serial.logits(ids))
    head = 3
    states = []
    for model in (serial, parallel):
        state = model.new_state(len(ids) + 1)
        model.forward(ids[:head], state)
        last = model.forward(ids[head:], state, last_only=True)
        states.append((state, last))
    (s_state, s_last), (p_state, p_last) = states
    assert p_state.pos == s_state.pos == len(ids)
    _close(p_last, s_last)
    _close(p_state.keys, s_state.keys)
    _close(p_state.values, s_state.values)
    # decoding after a parallel prefill continues the same sequence
    _close(parallel.forward([ids[0]], p_state), serial.forward([ids[0]], s_state))


def test_generation_unchanged_by_parallel_prefill(llm_fixtures: Path, backend, two_threads) -> None:
    if backend.name != "numpy":
        pytest.skip("the row-parallel prefill is NumPy-only")
    folder = llm_fixtures / "tiny-llama"
    serial, parallel = _models(folder, backend)
    ids = _prompt(folder)
    assert parallel.generate(ids, 6, stop_ids=[]) == serial.generate(ids, 6, stop_ids=[])


def test_worker_exception_propagates(llm_fixtures: Path, backend, two_threads) -> None:
    if backend.name != "numpy":
        pytest.skip("the row-parallel prefill is NumPy-only")
    _, model = _models(llm_fixtures / "tiny-llama", backend)
    ids = _prompt(llm_fixtures / "tiny-llama")
    real = model._attention_out_mlp

    def failing(x, att, layer, *args):
        if threading.current_thread() is not threading.main_thread():  # a pool thread's share
            raise RuntimeError("boom in a worker share")
        return real(x, att, layer, *args)

    model._attention_out_mlp = failing
    with pytest.raises(RuntimeError, match="boom in a worker share"):
        model.forward(ids, model.new_state(len(ids)))
    model._attention_out_mlp = real
    serial, _ = _models(llm_fixtures / "tiny-llama", backend)
    _close(model.logits(ids), serial.logits(ids))  # the pool still works afterwards


def test_row_parallel_runs_every_share_and_reraises() -> None:
    pool = RowParallel(3)
    seen = [None] * 3
    pool.run(lambda w: seen.__setitem__(w, w))
    assert seen == [0, 1, 2]

    def fail_in_pool_thread(w: int) -> None:
        if w == 2:
            raise ValueError("share 2")

    with pytest.raises(ValueError, match="share 2"):
        pool.run(fail_in_pool_thread)
    pool.shutdown()


def test_split_rows_and_balance_blocks() -> None:
    assert split_rows(5, 2) == [(0, 3), (3, 5)]
    assert split_rows(1, 2) == [(0, 1), (1, 1)]
    shares = balance_blocks(256, 0, 64, 2)
    assert sorted(b for share in shares for b in share) == [(0, 64), (64, 128), (128, 192), (192, 256)]
    loads = [sum((b1 - b0) * b1 for b0, b1 in share) for share in shares]
    assert loads[0] == loads[1]


def test_prefill_workers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_THREADS, "1")
    assert prefill_workers() == 1
    monkeypatch.setenv(ENV_THREADS, "3")
    assert prefill_workers() == 3
    monkeypatch.delenv(ENV_THREADS)
    assert prefill_workers() >= 1
    monkeypatch.setenv(ENV_THREADS, "two")
    with pytest.raises(ConfigError, match=ENV_THREADS):
        prefill_workers()


def test_threads_1_disables(llm_fixtures: Path, backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_THREADS, "1")
    _, model = _models(llm_fixtures / "tiny-llama", backend)
    assert parallel_workers(model, 100) == 1
    monkeypatch.setenv(ENV_THREADS, "2")
    model.parallel_min_rows = 96
    if backend.name == "numpy":
        assert parallel_workers(model, 192) == 2
    assert parallel_workers(model, 191) == 1  # fewer than 96 tokens per worker: serial


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_single_threaded_blas_is_counted_and_restored() -> None:
    before = _blas_threads()
    with single_threaded_blas():
        with single_threaded_blas():  # e.g. a concurrent prefill in another thread
            assert all(n == 1 for n in _blas_threads())
        assert all(n == 1 for n in _blas_threads())
    assert _blas_threads() == before


def test_parallel_prefill_restores_blas_threads(llm_fixtures: Path, backend, two_threads) -> None:
    if backend.name != "numpy":
        pytest.skip("the row-parallel prefill is NumPy-only")
    _, model = _models(llm_fixtures / "tiny-llama", backend)
    before = _blas_threads()
    model.logits(_prompt(llm_fixtures / "tiny-llama"))
    assert _blas_threads() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_parallel_prefill_in_a_forked_child(llm_fixtures: Path, backend, two_threads) -> None:
    if backend.name != "numpy":
        pytest.skip("the row-parallel prefill is NumPy-only")
    _, parallel = _models(llm_fixtures / "tiny-llama", backend)
    ids = _prompt(llm_fixtures / "tiny-llama")
    expected = np.asarray(parallel.logits(ids))  # the parent's pool threads exist now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not wait for the parent's (absent) pool threads
        ok = np.allclose(np.asarray(parallel.logits(ids)), expected, rtol=RTOL, atol=1e-5)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1" and status == 0
