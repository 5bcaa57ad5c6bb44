"""Prepare benchmark: peak memory and images/s of ``python -m pipeline.prepare`` at N and 2N images.

Makes a synthetic image folder of 2N distinct 96×96 RGB JPEGs in 10 classes (and an N-image
folder of hard links to half of them), then runs the real prepare stage on each, resizing to
64×64 RGB, in a fresh subprocess per run, for each worker count. Prints one JSON line per run and
a summary line with the two targets of issue 16:

- memory: peak RSS growth from N to 2N images as a fraction of the extra raw pixels
  (N·64·64·3 bytes); streaming prepare should stay well under 0.3;
- speed: images/s with 2 workers over images/s with 1 (target ≥ 1.6 on a 2-core machine).

    python benchmarks/bench_prepare.py                   # N = 4000, workers 1 and 2
    python benchmarks/bench_prepare.py --n 200           # a quick functional check

Per configuration (images, workers): one memory run, then ``--repeat`` timing runs.
``peak_rss_mb`` is the largest peak RSS of any process of the memory run (the prepare process or
one of its workers; ``getrusage(RUSAGE_CHILDREN)`` in a fresh wrapper process, exact),
``peak_tree_pss_mb`` the largest sum of PSS over the process tree (prepare and its workers,
which share pages after the fork), sampled every 20 ms with psutil. The timing runs sample
nothing: reading every process's memory map 50 times a second takes CPU from the workers, and on
2 cores that cost the 2-worker run more than the 1-worker run. ``images_per_s`` is the best
timing run over the whole command (interpreter start-up, imports, listing, decoding, split,
writing), ``wall_s`` lists every timing run; ``decode_images_per_s`` is the decoding phase
alone, from prepare's own progress line of that run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hjepa.core.config import apply_overrides  # noqa: E402

SOURCE_PX, STORED_PX, CLASSES = 96, 64, 10
# Run a command as a child and print the largest peak RSS of its process tree (KiB on Linux).
_WRAPPER = (
    "import json, resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(json.dumps({'rc': rc, 'maxrss_kb': "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
)


def make_images(root: Path, count: int, seed: int = 0) -> None:
    """``count`` distinct JPEGs (smooth colour gradients plus noise) in ``CLASSES`` folders."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, SOURCE_PX)
    for i in range(count):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        low, high = rng.uniform(0, 255, size=(2, 3))
        base = low + (high - low) * ramp[:, None, None] * ramp[None, :, None]
        noise = rng.normal(0, 12, size=(SOURCE_PX, SOURCE_PX, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:07d}.jpg", quality=90)


def link_subset(source: Path, target: Path, count: int) -> None:
    """A folder of hard links to images 0..count-1 of ``source`` (every class, same layout)."""
    for path in sorted(p for p in source.rglob("*.jpg") if int(p.stem) < count):
        dest = target / path.parent.name / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, dest)


def _tree_pss(process: psutil.Process) -> int:
    """Proportional set size of the process's children (forked workers share pages with their
    parent: PSS counts a shared page once in all, RSS once per process)."""
    total = 0
    for proc in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total


def run_prepare(project: Path, images: Path, workers: int, sample_memory: bool) -> dict[str, Any]:
    """One ``python -m pipeline.prepare --workers W`` in a fresh project folder (removed after);
    with ``sample_memory`` the process tree's PSS is sampled every 20 ms while it runs."""
    shutil.rmtree(project, ignore_errors=True)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = {
        "data.source": "image_folder",
        "data.path": str(images),
        "data.image_size": STORED_PX,
        "data.channels": 3,
    }
    project.mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(apply_overrides(raw, overrides)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HJEPA_PARAMS": str(project / "params.yaml")}
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "pipeline.prepare"]
    start = time.perf_counter()
    proc = psutil.Popen(
        [*cmd, "--workers", str(workers)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak_tree = 0
    if sample_memory:
        while proc.poll() is None:
            peak_tree = max(peak_tree, _tree_pss(proc))
            time.sleep(0.02)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    result = json.loads(out.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"prepare failed (exit {result['rc']}):\n{err}")
    counts = json.loads((project / "metrics" / "data.json").read_text())
    rates = re.findall(r"prepare image_folder: \d+ images, (\d+) images/s", err)
    shutil.rmtree(project)
    return {
        "images": counts["num_images"],
        "wall_s": wall,
        "decode_images_per_s": float(rates[-1]) if rates else None,
        "peak_rss_mb": round(result["maxrss_kb"] / 1024, 1),
        "peak_tree_pss_mb": round(peak_tree / 2**20, 1),
    }


def measure(work: Path, images: Path, workers: int, repeat: int) -> dict[str, Any]:
    """One memory run and ``repeat`` timing runs of one configuration, as one JSON record."""
    project = work / f"run_{images.name}_w{workers}"
    memory = run_prepare(project, images, workers, sample_memory=True)
    timings = [run_prepare(project, images, workers, sample_memory=False) for _ in range(repeat)]
    best = min(timings, key=lambda run: run["wall_s"])
    return {
        "images": memory["images"],
        "workers": workers,
        "wall_s": [round(run["wall_s"], 2) for run in timings],
        "images_per_s": round(best["images"] / best["wall_s"], 1),
        "decode_images_per_s": best["decode_images_per_s"],
        "peak_rss_mb": memory["peak_rss_mb"],
        "peak_tree_pss_mb": memory["peak_tree_pss_mb"],
    }


def summarise(runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    extra_pixels_mb = n * STORED_PX * STORED_PX * 3 / 2**20
    by = {(r["images"], r["workers"]): r for r in runs}
    out: dict[str, Any] = {
        "summary": True,
        "n": n,
        "extra_raw_pixels_mb": round(extra_pixels_mb, 1),
    }
    for workers in sorted({r["workers"] for r in runs}):
        small, large = by.get((n, workers)), by.get((2 * n, workers))
        if small and large:
            growth = large["peak_rss_mb"] - small["peak_rss_mb"]
            out[f"rss_growth_mb_w{workers}"] = round(growth, 1)
            out[f"rss_growth_of_extra_pixels_w{workers}"] = round(growth / extra_pixels_mb, 3)
    for images in (n, 2 * n):
        one, two = by.get((images, 1)), by.get((images, 2))
        if one and two:
            out[f"speedup_2v1_at_{images}"] = round(two["images_per_s"] / one["images_per_s"], 2)
            if one["decode_images_per_s"] and two["decode_images_per_s"]:
                ratio = two["decode_images_per_s"] / one["decode_images_per_s"]
                out[f"decode_speedup_2v1_at_{images}"] = round(ratio, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="images of the smaller folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temp folder)")
    parser.add_argument("--repeat", type=int, default=2, help="timing runs per configuration")
    args = parser.parse_args()
    if args.repeat < 1 or args.n < 1 or min(args.workers) < 1:
        parser.error("--repeat, --n and --workers must each be at least 1")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_prepare."))
    try:
        large, small = work / f"images_{2 * args.n}", work / f"images_{args.n}"
        if not large.exists():
            make_images(large, 2 * args.n)
            link_subset(large, small, args.n)
        runs = []
        for images in (small, large):
            for workers in args.workers:
                runs.append(measure(work, images, workers, args.repeat))
                print(json.dumps(runs[-1]), flush=True)
        print(json.dumps(summarise(runs, args.n)), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
