"""The README's example run, produced by running it: the default pipeline in a fresh copy of this
project (nothing cached), then a no-op repro, then the LayerScale experiment and its comparison.

Prints one JSON line of wall times. With ``--write-readme`` it also replaces the block between
the ``example-run`` markers in README.md with the real transcript (commands, their DVC output,
timings and the metric tables as DVC prints them), so the README cannot show numbers that no run
produced. ``tests/test_docs.py`` checks that the block's workspace figures are the ones in
``metrics/`` at this commit.

    python benchmarks/example_run.py                  # timings only
    python benchmarks/example_run.py --write-readme   # and rewrite the README block
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- example-run:begin -->", "<!-- example-run:end -->"
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "GIT_AUTHOR_NAME": "example",
    "GIT_AUTHOR_EMAIL": "example@localhost",
    "GIT_COMMITTER_NAME": "example",
    "GIT_COMMITTER_EMAIL": "example@localhost",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}
# Lines of DVC's output a reader needs; progress bars and blank lines are dropped.
KEEP = re.compile(r"^(Stage |Running stage|> python|Data and pipelines|probe:|report:|\d+ check)")


def sh(cmd: list[str], cwd: Path) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr, took


def copy_project(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, files.split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for generated in ("dvc.lock", "reports/report.md"):
        (dest / generated).unlink(missing_ok=True)
    for old in [*(dest / "metrics").glob("*"), *(dest / "params_read").glob("*.json")]:
        old.unlink()


def minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def kept(output: str) -> list[str]:
    return [line for line in output.splitlines() if KEEP.match(line.strip())]


def transcript(work: Path) -> tuple[list[str], dict[str, float]]:
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=work, env=ENV, check=True)
    out: list[str] = []
    full, t_full = sh(["dvc", "repro"], work)
    out += [f"$ dvc repro                      # from clean: {minutes(t_full)}", *kept(full)[-2:]]
    noop, t_noop = sh(["dvc", "repro"], work)
    out += [f"$ dvc repro                      # nothing changed: {minutes(t_noop)}", *kept(noop)]
    sh(["git", "add", "-A"], work)
    sh(["git", "commit", "-qm", "baseline"], work)
    exp_cmd = ["dvc", "exp", "run", "--temp", "-S", "model.layerscale.use_layerscale=true"]
    exp, t_exp = sh([*exp_cmd, "-n", "layerscale-on"], work)
    out += ["", f"$ {' '.join(exp_cmd)} -n layerscale-on     # {minutes(t_exp)}", *kept(exp)]
    metrics = ["linear_top1", "knn_top1", "gain_over_random_init", "effective_rank", "loss"]
    diff, _ = sh(["dvc", "exp", "diff", "main", "layerscale-on", "--md", "--no-path"], work)
    rows = [
        r
        for r in diff.split("\n\n")[0].splitlines()  # the metrics table; params follow
        if r.startswith("|")
        and ("Metric" in r or "---" in r or any(f"| {m} " in r for m in metrics))
    ]
    out += ["", "$ dvc exp diff main layerscale-on --md --no-path   # (excerpt)", *rows]
    timings = {"repro_from_clean_s": t_full, "noop_repro_s": t_noop, "layerscale_exp_s": t_exp}
    return out, timings


def write_readme(lines: list[str]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"README.md has no {BEGIN} … {END} block to replace")
    today = datetime.date.today().isoformat()
    block = [
        BEGIN,
        "What this looks like (made by `python benchmarks/example_run.py --write-readme` on "
        f"{today}:",
        f"default params, a fresh copy of the project, this {os.cpu_count()}-core machine):",
        "",
        "```",
        *lines,
        "```",
        END,
    ]
    head, rest = text.split(BEGIN, 1)
    readme.write_text(head + "\n".join(block) + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-readme", action="store_true", help="rewrite the README block")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_project(work)
        lines, timings = transcript(work)
    print(json.dumps({k: round(v, 2) for k, v in timings.items()} | {"cores": os.cpu_count()}))
    if args.write_readme:
        write_readme(lines)


if __name__ == "__main__":
    main()
