#!/usr/bin/env bash
# The prepared GPU check (issue 16): run it first thing in a session that is lent a device.
#
#   here:       benchmarks/gpu_check.sh --fetch     # wheels the device lacks -> .gpu_wheels/ (git-ignored)
#   device:     run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_wheels"], timeout_s=480)
#
# On the device it installs only the carried wheels of packages that torch's environment lacks
# (no index, no network) into a folder on PYTHONPATH, and runs benchmarks/gpu_check.py, which prints one JSON line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
# What the pretrain and probe code imports beyond torch and numpy (no DVC, Prefect or pandas).
# Fetched without their own dependencies (timm's would pull a whole torch), so pydantic's are named.
NEEDED="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
typing-extensions==4.16.0 PyYAML==6.0.4 timm==1.0.31 safetensors==0.8.0 tqdm==4.70.1"

if [ "${1:-}" = "--fetch" ]; then
  py=${GPU_PYTHON_VERSION:-3.12}  # the device image's python3 (device/KINDS.md)
  rm -rf .gpu_wheels && mkdir -p .gpu_wheels
  # Binary wheels for the device's Python; torch and torchvision are the device's own.
  pip download -q --no-deps -d .gpu_wheels --python-version "$py" --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    $NEEDED
  du -sh .gpu_wheels
  exit 0
fi

# The device's python3 is itself a venv (the one holding torch): a venv made from it would not
# see torch, so the missing packages go to a folder on PYTHONPATH instead.
python3 - <<'PY'
import importlib.util, pathlib, subprocess, sys
need = {"pydantic": ["pydantic", "pydantic_core", "annotated_types", "typing_inspection",
                     "typing_extensions"],
        "yaml": ["pyyaml"], "timm": ["timm"], "safetensors": ["safetensors"], "tqdm": ["tqdm"]}
missing = [m for m in need if importlib.util.find_spec(m) is None]
wheels = [str(w) for m in missing for name in need[m]
          for w in pathlib.Path(".gpu_wheels").glob(f"{name}-*.whl")]
if wheels:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--target", "/tmp/gpu_site", *wheels], check=True)
print(f"gpu_check: missing {missing or 'nothing'}; installed {len(wheels)} wheels", file=sys.stderr)
PY
export PYTHONPATH=/tmp/gpu_site
timeout 460 python3 benchmarks/gpu_check.py
