#!/usr/bin/env bash
# The checks that need a CUDA GPU (issues #9, #12, #13, #14), in steps that each fit one
# 10-minute device call.
#
#   bash tools/device_check.sh prepare   # here, with network: fill .whl/ and .fixtures/ to carry
#   bash tools/device_check.sh suite     # there: the whole suite on CuPy (the Done-when summary line)
#   bash tools/device_check.sh kernels   # there: the opt-in kernels on CuPy (training, LM head, cuBLAS)
#   bash tools/device_check.sh bench     # there: bench/bench_gpu.py (issue #13's table)
#   bash tools/device_check.sh nccl      # there: NCCL data-parallel tests (world size 1, or all GPUs)
#
# On the device machine, run with carry [".whl", ".fixtures"]; both folders are git-ignored.
# The device has CuPy, NumPy, PyTorch, transformers, safetensors, tokenizers, pytest,
# hypothesis and mpi4py, but no package registry, so the pure-Python wheels loom needs beyond
# those travel in .whl/. The serve tests need Starlette and the openai client; they only run
# where those import.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(array-api-compat array-api-strict gguf)
step="${1:-}"

install_carried() {
    export LOOM_SHARED="${LOOM_SHARED:-$PWD/.fixtures}"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if [ ! -d "$LOOM_SHARED/fixtures" ]; then
        echo "device_check: $LOOM_SHARED/fixtures is missing (run 'prepare' here and carry .fixtures)" >&2
        exit 2
    fi
    if compgen -G ".whl/*.whl" >/dev/null; then
        python -m pip install -q --no-index --no-deps .whl/*.whl || exit 2
    fi
    if ! python -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0" 2>/dev/null; then
        echo "device_check: no usable CuPy / CUDA device here" >&2
        exit 2
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
}

serve_ignore() {
    python -c "import starlette, uvicorn, openai" 2>/dev/null || echo "--ignore=tests/serve"
}

case "$step" in
prepare)
    mkdir -p .whl .fixtures
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl "${WHEELS[@]}"
    rm -rf .fixtures/fixtures
    cp -r "${LOOM_SHARED:-../shared}/fixtures" .fixtures/fixtures
    du -sh .whl .fixtures
    ;;
suite)
    install_carried
    # shellcheck disable=SC2046
    python -m pytest -q --backend cupy -p no:cacheprovider $(serve_ignore) tests
    ;;
kernels)
    install_carried
    LOOM_GPU_TRAIN_KERNELS=1 python -m pytest -q --backend cupy -p no:cacheprovider \
        tests/test_gpu_training.py tests/test_optimizers.py tests/test_fit.py tests/test_training_engine.py \
        tests/test_fused_training.py
    LOOM_CUBLAS_DIRECT=1 LOOM_HEAD_BLOCKS_PER_SM=4 python -m pytest -q --backend cupy -p no:cacheprovider \
        tests/llm/test_gpu_kernels.py tests/llm/test_gpu_decode.py
    ;;
bench)
    install_carried
    python bench/bench_gpu.py --time-budget 420 "${@:2}"
    LOOM_GPU_TRAIN_KERNELS=1 LOOM_CUBLAS_DIRECT=1 python bench/bench_gpu.py --skip-compile --skip-hf "${@:2}"
    ;;
nccl)
    install_carried
    python -m pytest -q --backend cupy -p no:cacheprovider tests/test_distributed_nccl.py
    python bench/bench_distributed.py --gpu "${@:2}"   # 1, 2, 4, ... visible GPUs, PyTorch DDP beside
    ;;
*)
    sed -n '2,9p' "$0"
    exit 2
    ;;
esac
