# Shared by the one-GPU benchmarks (bench/gpu_study.sh, bench/gpu_campaign.sh), sourced after ROOT is set:
# `fail` (one `error:` line, exit 2) and `require_gpu DATA_DIR`, which fails unless an NVIDIA GPU, the CUDA build
# of torch, this checkout's ddrm package (and its dependencies) and DATA_DIR/ml-1m_noisy are all here; it sets
# GPU_NAME and DDRM (the command running this checkout's ddrm, not whichever `ddrm` is installed).

fail() { echo "error: $*" >&2; exit 2; }

require_gpu() {
  local data_dir=$1
  command -v nvidia-smi >/dev/null 2>&1 ||
    fail "no NVIDIA GPU visible (nvidia-smi not found); this benchmark needs one GPU"
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) || true
  [ -n "$GPU_NAME" ] || fail "no NVIDIA GPU visible (nvidia-smi lists none); this benchmark needs one GPU"
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || \
    fail "torch $(python -c 'import torch; print(torch.__version__)') sees no CUDA device next to '$GPU_NAME' (a CPU-only build?)"
  DDRM=(env "PYTHONPATH=$ROOT/platform${PYTHONPATH:+:$PYTHONPATH}" python -m ddrm.cli)  # this checkout's code
  "${DDRM[@]}" --help >/dev/null 2>&1 || fail "ddrm does not run from $ROOT/platform (pip install -e $ROOT)"
  [ -d "$data_dir/ml-1m_noisy" ] ||
    fail "$data_dir/ml-1m_noisy not found (DATA_DIR must hold the prepared ML-1M split)"
}
