"""Regenerate the README's Prefect screenshots from a real run (a development tool).

Needs a Prefect server with its UI (``prefect server start --host 127.0.0.1 --port PORT``),
Chromium with chromedriver (Debian: ``apt-get install chromium chromium-driver``) and selenium
(``pip install -e .[dev]``). It copies the project into a temp folder with the quick-run
overrides and a smaller model, runs the pipeline flow, commits the result, runs the experiments
flow (LayerScale off and on) and a run with a misspelled key, then screenshots the pages the
README describes into ``docs/``. Prints the wall times of the pipeline and experiments runs as JSON.

    PREFECT_API_URL=http://127.0.0.1:PORT/api python docs/screenshots.py

The UI asks its API at ``PREFECT_UI_API_URL`` (default ``http://127.0.0.1:4200/api``): start the
server with that set to its own address when it does not listen on 4200.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from PIL import Image
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from flows.experiments import MARKDOWN_KEY, SUMMARY_KEY, hjepa_experiments
from flows.pipeline import hjepa_pipeline
from hjepa.core.config import apply_overrides

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
QUICK_RUN: dict[str, Any] = {"train.epochs": 2, "probe.cv_folds": 0, "probe.c_values": [1.0]}
# A smaller model on top, so the screenshots take minutes even on a busy shared CPU.
SMALL_MODEL: dict[str, Any] = {
    "model.width": 32,
    "model.depth": 2,
    "model.heads": 2,
    "model.predictor.width": 16,
    "model.predictor.depth": 1,
    "model.predictor.heads": 2,
    "model.hierarchy": [
        {"depth": 1, "scale": 2, "weight": 0.5},
        {"depth": 2, "scale": 1, "weight": 1.0},
    ],
    "train.batch_size": 64,
}
MAX_BYTES = 300_000


def project_copy(dest: Path) -> Path:
    """The tracked and untracked-but-not-ignored files, quick-run params, committed."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = apply_overrides(apply_overrides(raw, QUICK_RUN), SMALL_MODEL)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "quick-run params")
    return dest


def git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "docs", "GIT_AUTHOR_EMAIL": "docs@localhost",
           "GIT_COMMITTER_NAME": "docs", "GIT_COMMITTER_EMAIL": "docs@localhost"}  # fmt: skip
    subprocess.run(["git", *args], cwd=cwd, check=True, env=env, capture_output=True)


def shoot(
    driver: webdriver.Chrome, url: str, name: str, click: str | None = None, scroll: str = ""
) -> Path:
    """Open ``url`` (click the tab labelled ``click``, scroll the heading ``scroll`` to the
    top), wait, save ``docs/<name>.png``."""
    driver.get(url)
    time.sleep(8)
    if click:
        tabs = driver.find_elements(By.XPATH, f"//*[normalize-space(.)='{click}']")
        if not tabs:
            raise RuntimeError(f"{url}: no '{click}' tab")
        tabs[-1].click()  # the innermost element with that text
        time.sleep(5)
    if scroll:
        heading = driver.find_element(By.XPATH, f"//h2[normalize-space(.)='{scroll}']")
        driver.execute_script("arguments[0].scrollIntoView(true);", heading)
        time.sleep(2)
    path = DOCS / f"{name}.png"
    driver.save_screenshot(str(path))
    shrink(path)
    return path


def shrink(path: Path) -> None:
    """Palette PNG (UI screenshots have few colours) so each stays under ``MAX_BYTES``."""
    image = Image.open(path).convert("RGB")
    while True:
        image.quantize(colors=64).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES or image.width < 800:
            return
        image = image.resize((image.width * 9 // 10, image.height * 9 // 10))


def run_flows() -> tuple[UUID, UUID, UUID]:
    """Pipeline, experiments (LayerScale off, on) and a misspelled key on a fresh copy; the
    three flow run ids."""
    with tempfile.TemporaryDirectory() as tmp:
        root = project_copy(Path(tmp))
        started = time.monotonic()
        state = hjepa_pipeline(project_dir=str(root), return_state=True)
        pipeline_s = time.monotonic() - started
        assert state.is_completed(), state.message
        pipeline_run = state.state_details.flow_run_id
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "quick-run results")
        overrides = [
            {"model.layerscale.use_layerscale": False},
            {"model.layerscale.use_layerscale": True},
        ]
        started = time.monotonic()
        state = hjepa_experiments(overrides=overrides, project_dir=str(root), return_state=True)
        experiments_s = time.monotonic() - started
        assert state.is_completed(), state.message
        bad = hjepa_experiments(
            overrides=[{"model.layerscale.use_layerscal": True}],
            project_dir=str(root),
            return_state=True,
        )
    print(json.dumps({"small_quick_pipeline_s": round(pipeline_s, 1),
                      "two_experiments_s": round(experiments_s, 1)}))  # fmt: skip
    time.sleep(5)  # logs and artifacts reach the server in batches
    return pipeline_run, state.state_details.flow_run_id, bad.state_details.flow_run_id


def take_screenshots(ui: str, pipeline_run: UUID, exp_run: UUID, bad_run: UUID) -> None:
    """The pages the README shows, in Prefect's v2 UI (served under ``/v2``)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[exp_run]))
        )
    by_key = {a.key: a.id for a in artifacts}
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(flag)
    # The system chromedriver: selenium's own manager would try to download one.
    service = Service(shutil.which("chromedriver") or "chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    runs = f"{ui}/v2/runs/flow-run"
    try:
        shoot(driver, f"{runs}/{exp_run}", "prefect-experiments-run")
        shoot(driver, f"{runs}/{exp_run}", "prefect-experiments-tasks", "Task Runs")
        shoot(driver, f"{runs}/{exp_run}", "prefect-experiments-artifacts", "Artifacts")
        shoot(driver, f"{ui}/v2/artifacts/artifact/{by_key[SUMMARY_KEY]}", "prefect-summary")
        comparison = f"{ui}/v2/artifacts/artifact/{by_key[MARKDOWN_KEY]}"
        shoot(driver, comparison, "prefect-comparison")
        shoot(driver, comparison, "prefect-comparison-figures", scroll="Pretraining loss")
        shoot(driver, f"{runs}/{pipeline_run}", "prefect-pipeline-run")
        shoot(driver, f"{runs}/{bad_run}", "prefect-bad-key")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui", default=os.environ["PREFECT_API_URL"].removesuffix("/api"))
    parser.add_argument(
        "--runs",
        help="PIPELINE,EXPERIMENTS,BAD flow run ids of earlier runs: only take the screenshots",
    )
    args = parser.parse_args()
    ids = tuple(UUID(i) for i in args.runs.split(",")) if args.runs else run_flows()
    take_screenshots(args.ui, *ids)


if __name__ == "__main__":
    main()
