#!/usr/bin/env bash
# Wall time of the default pipeline, in a fresh copy of this project (nothing cached):
#   1. `dvc repro` from clean, 2. a no-op `dvc repro`, 3. the LayerScale toggle experiment.
# Prints one JSON line. Usage: benchmarks/bench_pipeline.sh   (from the project root, venv active)
set -euo pipefail
export DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$work"/ 2>/dev/null
cd "$work"
rm -rf params_read metrics/*.json metrics/*.tsv metrics/*.csv dvc.lock reports/report.md
git init -q -b main && git add -A && git -c user.name=bench -c user.email=bench@localhost commit -qm bench

t() { local s=$EPOCHREALTIME; "$@" > /dev/null 2>&1; python -c "print($EPOCHREALTIME - $s)"; }
full=$(t dvc repro)
noop=$(t dvc repro)
git add -A && git -c user.name=bench -c user.email=bench@localhost commit -qm results
toggle=$(t dvc exp run -S model.layerscale.use_layerscale=true)
printf '{"repro_from_clean_s": %.1f, "noop_repro_s": %.2f, "layerscale_experiment_s": %.1f, "cores": %s, "torch": "%s"}\n' \
  "$full" "$noop" "$toggle" "$(nproc)" "$(python -c 'import torch; print(torch.__version__)')"
