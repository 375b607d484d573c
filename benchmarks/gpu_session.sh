#!/usr/bin/env bash
# bash benchmarks/gpu_session.sh       (on a GPU machine, in one go: the device tool's run, carrying .gpu_bundle)
#
# What a session lent a GPU runs, in one call of ~8 minutes:
#   here first:  bash benchmarks/gpu_bundle.sh      (Ray, MLflow, Optuna and the data, which that machine lacks)
#   then:        run(command="bash benchmarks/gpu_session.sh", carry=[".gpu_bundle"], timeout_s=600)
# It writes under $OUT: env.txt (GPU, driver, versions), gpu.json (python -m benchmarks.gpu --json) with
# gpu_stderr.txt, and tests.txt (the CUDA tests: tests/test_gpu.py, tests/test_gpu_sweeps.py, and the device and
# GPU-count rows of tests/test_cli.py). Each step has its own time limit, so one that hangs leaves the others' files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
export PYTHONPATH=$PWD
if [ -f .gpu_bundle/site.tar.xz ]; then
  mkdir -p /tmp/site && tar -xJf .gpu_bundle/site.tar.xz -C /tmp/site && export PYTHONPATH=$PWD:/tmp/site
fi
[ -d .gpu_bundle/data ] && export GPTSWEEP_DATA_DIR=$PWD/.gpu_bundle/data
started=$(date +%s)
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" - <<'PY'
import importlib, platform, torch
from trainer.config import gpu_count
print("gpu_count()", gpu_count(), "torch.cuda.device_count()", torch.cuda.device_count())
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA",
      "bf16 native", torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
for name in ("ray", "mlflow", "optuna", "transformers", "tokenizers", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:
        print(name, "MISSING:", type(error).__name__, error)
PY
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== benchmarks.gpu ($(($(date +%s) - started)) s)"
timeout 330 "$PY" -m benchmarks.gpu --json > "$OUT/gpu.json" 2> "$OUT/gpu_stderr.txt"
echo "benchmark exit $?"
cat "$OUT/gpu.json"; tail -5 "$OUT/gpu_stderr.txt"

echo "== CUDA tests ($(($(date +%s) - started)) s)"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider --durations=5 tests/test_gpu.py tests/test_gpu_sweeps.py \
  2>&1 | tee "$OUT/tests.txt"
timeout 50 "$PY" -m pytest -q -p no:cacheprovider tests/test_cli.py -k "device or gpus" 2>&1 | tee -a "$OUT/tests.txt"
echo "== done in $(($(date +%s) - started)) s"
