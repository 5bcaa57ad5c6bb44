#!/usr/bin/env bash
# The prepared GPU check (issue 16): run it first thing in a session that is lent a device.
#
#   here:       benchmarks/gpu_check.sh --fetch     # wheels the device lacks -> .gpu_wheels/ (git-ignored)
#   device:     run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_wheels"], timeout_s=480)
#
# On the device it makes a venv that sees the device's own torch (--system-site-packages),
# installs only the carried wheels of packages that torch's environment lacks (no index, no
# network), and runs benchmarks/gpu_check.py, which prints one JSON line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
# What the pretrain and probe code imports beyond torch and numpy (no DVC, Prefect or pandas).
NEEDED="pydantic==2.14.4 PyYAML==6.0.4 timm==1.0.31 safetensors==0.8.0 tqdm==4.70.1 tensorboard==2.21.0"

if [ "${1:-}" = "--fetch" ]; then
  py=${GPU_PYTHON_VERSION:-3.11}
  rm -rf .gpu_wheels && mkdir -p .gpu_wheels
  # Binary wheels for the device's Python; torch and torchvision are the device's own.
  pip download -q -d .gpu_wheels --python-version "$py" --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    $NEEDED
  rm -f .gpu_wheels/torch-* .gpu_wheels/nvidia_* .gpu_wheels/triton-* .gpu_wheels/numpy-*
  du -sh .gpu_wheels
  exit 0
fi

python3 -m venv --system-site-packages .gpu_venv
.gpu_venv/bin/python - <<'PY'
import importlib.util, subprocess, sys
need = {"pydantic": "pydantic", "yaml": "PyYAML", "timm": "timm", "safetensors": "safetensors",
        "tqdm": "tqdm", "tensorboard": "tensorboard"}
missing = [pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None]
if missing:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                    "--find-links", ".gpu_wheels", *missing], check=True)
print(f"gpu_check: installed {missing or 'nothing'} from .gpu_wheels", file=sys.stderr)
PY
timeout 460 .gpu_venv/bin/python benchmarks/gpu_check.py
