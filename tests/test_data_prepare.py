"""The prepare stage as a whole: determinism, all-or-nothing output, the reader API, and
``python -m pipeline.prepare`` / ``dvc repro prepare`` end to end."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    ROOT,
    make_cifar_members,
    make_folder,
    make_tar,
    project_env,
    run,
    save_image,
    tiny_params,
)

from hjepa.core import prepared
from hjepa.core.config import parse_params
from hjepa.core.errors import UserError
from hjepa.core.prepared import class_names, expected_files, load_manifest, load_split
from hjepa.data import sources
from hjepa.data.build import prepare_dataset
from hjepa.data.stream import (
    WORKERS_ENV,
    ChunkTask,
    convert_chunk,
    decode_to_staging,
    resolve_workers,
)


def params(**overrides):
    return parse_params(tiny_params(**overrides))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(folder.iterdir())}


def test_digits_deterministic_per_seed(tmp_path):
    out = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        prepare_dataset(params(seed=seed), tmp_path / name, tmp_path / f"{name}.json")
        out[name] = digest(tmp_path / name / "manifest.csv")
    assert out["a"] == out["b"]
    assert out["a"] != out["c"]
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_prepared_layout_and_reader(tmp_path):
    root = tmp_path / "prepared"
    metrics = prepare_dataset(params(), root, tmp_path / "m.json")
    assert sorted(p.name for p in root.iterdir()) == sorted(expected_files())
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    assert metrics["image_shape"] == [8, 8, 1] and metrics["num_images"] == 1797
    assert metrics["duplicates"] == {"groups": 0, "images": 0}
    manifest = load_manifest(root)
    names = class_names(root)
    assert names == [str(k) for k in range(10)]
    from sklearn.datasets import load_digits

    targets = load_digits().target
    for split in ("train", "val", "test"):
        images, labels = load_split(root, split)
        assert isinstance(images, np.memmap) and images.dtype == np.uint8
        assert images.shape[1:] == (8, 8, 1) and labels.dtype == np.int64
        rows = manifest[manifest["split"] == split]
        assert len(rows) == len(images) == metrics["counts"][split]
        # The k-th manifest row of a split describes the k-th stored image.
        assert np.array_equal(labels, rows["label"].to_numpy())
        assert np.array_equal(labels, targets[rows["index"].to_numpy()])
        assert hashlib.sha256(images[0].tobytes()).hexdigest() == rows["sha256"].iloc[0]
        assert set(labels.tolist()) == set(range(10))  # stratified: every class everywhere
    assert abs(metrics["counts"]["train"] / 1797 - 0.7) < 0.01


def test_reader_errors(tmp_path):
    with pytest.raises(UserError, match=r"prepared data is missing; run `dvc repro prepare`"):
        load_split(tmp_path / "nothing", "train")
    root = tmp_path / "prepared"
    prepare_dataset(params(), root, tmp_path / "m.json")
    with pytest.raises(UserError, match="unknown split 'dev'"):
        load_split(root, "dev")
    (root / "val_labels.npy").unlink()
    with pytest.raises(UserError, match=r"incomplete \(no val_labels.npy\).*dvc repro prepare"):
        load_split(root, "train")
    with pytest.raises(UserError, match="incomplete"):
        class_names(root)


def test_image_folder_duplicates_grouped_and_counted(tmp_path):
    src = make_folder(tmp_path / "imgs", per_class=5)
    for i in range(3):  # three identical copies in class b_gray
        save_image(src / "b_gray" / f"copy{i}.png", 123, (4, 4), "L")
    metrics = prepare_dataset(
        params(**{"data.source": "image_folder", "data.path": str(src), "data.channels": 3}),
        tmp_path / "out",
        tmp_path / "m.json",
    )
    assert metrics["duplicates"] == {"groups": 1, "images": 3}
    manifest = load_manifest(tmp_path / "out")
    copies = manifest[manifest["source"].str.contains("copy")]
    assert copies["split"].nunique() == 1
    assert load_split(tmp_path / "out", "train")[0].shape[1:] == (8, 8, 3)


def test_output_identical_for_any_worker_count(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_IMAGES", 5)  # many chunks, so the pool's order matters
    src = make_folder(tmp_path / "imgs", per_class=30)
    tar = make_tar(tmp_path / "cifar.tar.gz", make_cifar_members(n=20))
    folder = params(**{"data.source": "image_folder", "data.path": str(src), "data.channels": 3})
    cifar = params(**{"data.source": "cifar10", "data.path": str(tar), "data.channels": 3})
    for name, p in [("folder", folder), ("cifar", cifar)]:
        outputs = []
        for workers in (1, 2, 3):
            out = tmp_path / f"{name}{workers}"
            metrics = prepare_dataset(p, out, tmp_path / f"{name}{workers}.json", workers=workers)
            outputs.append((snapshot(out), metrics))
        assert outputs[0] == outputs[1] == outputs[2]
        assert sorted(os.listdir(tmp_path / "folder1")) == sorted(expected_files())  # no staging


def test_a_worker_writes_its_chunk_at_the_chunks_rows_and_returns_only_hashes(tmp_path):
    """The pixels never travel back to the parent: the worker puts them in the staging file."""
    staging = tmp_path / "staging.raw"
    staging.write_bytes(b"\xff" * 4 * 16)  # four 4x4 grayscale rows, to be overwritten in slot 1-2
    images = np.arange(2 * 16, dtype=np.uint8).reshape(2, 4, 4)
    task = ChunkTask(sources.convert_arrays, images, 2, 4, 1, str(staging), first_row=1)
    hashes = convert_chunk(task)
    assert len(hashes) == 2 and all(isinstance(h, str) for h in hashes)
    rows = np.fromfile(staging, dtype=np.uint8).reshape(4, 4, 4)
    assert (rows[0] == 255).all() and (rows[3] == 255).all()  # other slots untouched
    np.testing.assert_array_equal(rows[1:3], images)
    short = ChunkTask(sources.convert_arrays, images, 3, 4, 1, str(staging), first_row=0)
    with pytest.raises(RuntimeError, match="a chunk of 3 labels decoded to 2 images"):
        convert_chunk(short)


def test_warm_up_runs_in_a_thread_while_a_pool_decodes_and_never_breaks_it(tmp_path, monkeypatch):
    """With a pool, the parent's waiting time does the warm-up (another thread, finished before
    decoding returns); with one worker nothing runs it; a failing warm-up changes nothing."""
    monkeypatch.setattr(sources, "CHUNK_IMAGES", 2)
    folder = make_folder(tmp_path / "imgs", per_class=6)
    seen: list[int] = []  # the thread each warm-up ran in

    def warm_up() -> None:
        seen.append(threading.get_ident())

    def failing() -> None:
        raise RuntimeError("warm-up failed")

    results = {}
    for name, workers, hook in [("one", 1, warm_up), ("pool", 2, warm_up), ("bad", 2, failing)]:
        staging = tmp_path / f"{name}.raw"
        decoded = decode_to_staging(
            sources.image_folder_source(str(folder)), staging, 4, 3, workers, warm_up=hook
        )
        results[name] = (staging.read_bytes(), decoded.hashes, decoded.labels.tolist())
        if name == "one":
            assert seen == []  # one worker: the later validation pays its own set-up
    assert len(seen) == 1 and seen[0] != threading.get_ident()
    assert results["one"] == results["pool"] == results["bad"]


def test_resolve_workers(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert resolve_workers() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert resolve_workers() == 3
    assert resolve_workers(5) == 5  # the flag wins over the environment
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(UserError, match=f"{WORKERS_ENV}='{bad}': expected a positive"):
            resolve_workers()
    with pytest.raises(UserError, match="--workers 0"):
        resolve_workers(0)


def test_cifar_end_to_end(tmp_path):
    tar = make_tar(tmp_path / "cifar.tar.gz", make_cifar_members(n=5))
    metrics = prepare_dataset(
        params(**{"data.source": "cifar10", "data.path": str(tar)}),
        tmp_path / "out",
        tmp_path / "m",
    )
    assert metrics["num_images"] == 30 and metrics["counts"] == {"train": 10, "val": 10, "test": 10}
    assert class_names(tmp_path / "out")[3] == "class3"


def test_failure_leaves_previous_output_intact(tmp_path):
    src = make_folder(tmp_path / "imgs")
    out, metrics_path = tmp_path / "data" / "prepared", tmp_path / "metrics.json"
    p = params(**{"data.source": "image_folder", "data.path": str(src)})
    prepare_dataset(p, out, metrics_path)
    before, metrics_before = snapshot(out), metrics_path.read_text()

    (src / "a_rgb" / "only.txt").write_text("not an image")  # bad input, found by a worker
    with pytest.raises(UserError, match="only.txt"):
        prepare_dataset(p, out, metrics_path, workers=2)
    (src / "a_rgb" / "only.txt").unlink()
    save_image(src / "c_single" / "0.png", 1, (3, 3), "L")  # a class with one image
    with pytest.raises(UserError, match=r"c_single: has 1 image\(s\)"):
        prepare_dataset(p, out, metrics_path)
    assert snapshot(out) == before and metrics_path.read_text() == metrics_before
    assert sorted(os.listdir(out.parent)) == ["prepared"]  # no temp folders left behind


def test_failure_while_writing_leaves_previous_output_intact(tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prepare_dataset(params(), out, tmp_path / "m.json")
    before = snapshot(out)
    real_save, calls = np.save, []

    def failing_save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(prepared.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(params(seed=5), out, tmp_path / "m.json")
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["m.json", "prepared"]


def _stage(
    cwd: Path, params_file: Path, *args: str, **env_vars: str
) -> subprocess.CompletedProcess:
    env = project_env()
    env["PYTHONPATH"] = str(ROOT)
    env["HJEPA_PARAMS"] = str(params_file)
    env.update(env_vars)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.prepare", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_pipeline_prepare_module(tmp_path):
    params_file = tmp_path / "p.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params()))
    proc = _stage(tmp_path, params_file)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "data" / "prepared")) == sorted(expected_files())
    assert json.loads((tmp_path / "metrics" / "data.json").read_text())["num_images"] == 1797
    read = json.loads((tmp_path / "params_read" / "prepare.json").read_text())["params"]
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prepare"]["params"]
    assert sorted(read) == sorted(declared)

    params_file.write_text(
        yaml.safe_dump(tiny_params(**{"data.source": "image_folder", "data.path": "missing"}))
    )
    proc = _stage(tmp_path, params_file)
    assert proc.returncode == 2
    assert "data.path missing: image folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_pipeline_prepare_workers_flag_and_env(tmp_path):
    params_file = tmp_path / "p.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params()))
    proc = _stage(tmp_path, params_file, **{WORKERS_ENV: "1"})
    assert proc.returncode == 0, proc.stderr
    # Not a terminal: a plain progress line instead of a bar.
    assert "prepare digits: 1797 images," in proc.stderr and "images/s" in proc.stderr
    before = snapshot(tmp_path / "data" / "prepared")
    proc = _stage(tmp_path, params_file, "--workers", "2", **{WORKERS_ENV: "nonsense"})
    assert proc.returncode == 0, proc.stderr  # the flag wins; the environment is not read
    assert snapshot(tmp_path / "data" / "prepared") == before
    proc = _stage(tmp_path, params_file, **{WORKERS_ENV: "0"})
    assert proc.returncode == 2 and f"{WORKERS_ENV}='0'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_dvc_repro_prepare(make_project):
    project = make_project()
    run(["dvc", "repro", "prepare"], project)
    assert (project / "data" / "prepared" / "manifest.csv").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["prepare"]
    assert "data/raw" in [d["path"] for d in lock["deps"]]
    assert "Stage 'prepare' didn't change" in run(["dvc", "repro", "prepare"], project).stdout
