"""Issue 20: bench_quality's menu of data sets (digits, animal-shape, the cifar-dev colour photos)
and its verdict against both baselines. Each test fails if its feature were removed or ignored."""

from __future__ import annotations

import json
from pathlib import Path

import bench_quality  # noqa: E402
import numpy as np
import pytest
import quality_sets  # noqa: E402
from conftest import load_image_folder, tiny_params

from hjepa.core.errors import UserError


def _npz(path: Path, per_class: int = 12, classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    n = per_class * classes
    # Class-dependent colour, so the set is learnable and the channels matter.
    labels = np.arange(n) % classes
    images = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
    images[np.arange(n), :, :, labels] += 150
    names = np.array(["cat", "dog", "emu", "fox"][:classes])
    np.savez(path, images=images, labels=labels.astype(np.uint8), class_names=names)
    return path


def test_npz_becomes_an_image_folder_the_source_reads_back_exactly(tmp_path):
    npz = _npz(tmp_path / "set.npz")
    assert quality_sets.npz_to_folder(npz, tmp_path / "out") == 36
    raw = load_image_folder(tmp_path / "out", size=32, channels=3)
    assert raw.class_names == ["cat", "dog", "emu"]
    with np.load(npz) as data:
        # File names keep the npz order: <class>/<index>.png.
        index = [int(Path(s).stem) for s in raw.sources]
        np.testing.assert_array_equal(raw.images, data["images"][index])
        np.testing.assert_array_equal(raw.labels, data["labels"][index])


def test_npz_that_is_not_an_image_set_is_a_user_error(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 4, 4, 3), np.float32), labels=[0, 1])
    with pytest.raises(UserError, match="expected an .npz with images, labels, class_names"):
        quality_sets.npz_to_folder(tmp_path / "x.npz", tmp_path / "o")
    np.savez(
        tmp_path / "y.npz",
        images=np.zeros((2, 4, 4, 3), np.float32),
        labels=[0, 1],
        class_names=["a", "b"],
    )
    with pytest.raises(UserError, match="uint8"):
        quality_sets.npz_to_folder(tmp_path / "y.npz", tmp_path / "o")


def test_the_shared_development_set_is_found_from_a_worktree(tmp_path):
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    (shared / quality_sets.CIFAR_DEV_FILE).write_bytes(b"")
    worktree = tmp_path / "wt" / "h20"
    worktree.mkdir(parents=True)
    found = quality_sets.find_shared_file(quality_sets.CIFAR_DEV_FILE, worktree)
    assert found == shared / quality_sets.CIFAR_DEV_FILE
    assert quality_sets.find_shared_file("absent.npz", worktree) is None


def test_menu_entries_and_their_errors(tmp_path):
    digits, path = quality_sets.parse_dataset("digits")
    assert (digits.source, path, digits.overrides) == ("digits", None, {})
    cifar, path = quality_sets.parse_dataset(f"cifar-dev={_npz(tmp_path / 'c.npz')}")
    assert cifar.overrides == {"data.channels": 3, "data.image_size": 32, "model.patch_size": 4}
    assert path == (tmp_path / "c.npz").resolve()
    with pytest.raises(
        UserError,
        match="choose from digits, animal-shape, letters, cifar-dev, cifar-5k, mnist, "
        "fashion-mnist",
    ):
        quality_sets.parse_dataset("kmnist")
    with pytest.raises(UserError, match="digits takes no path"):
        quality_sets.parse_dataset("digits=/x")
    with pytest.raises(UserError, match="needs =PATH: give the animal-mnist 0.4 wheel"):
        quality_sets.parse_dataset("animal-shape")
    with pytest.raises(UserError, match="not found"):
        quality_sets.parse_dataset(f"cifar-dev={tmp_path / 'missing.npz'}")


def test_animal_shape_takes_a_folder_as_is_and_refuses_a_file_that_is_no_wheel(tmp_path):
    folder = tmp_path / "animals"
    (folder / "bear").mkdir(parents=True)
    animal, path = quality_sets.parse_dataset(f"animal-shape={folder}")
    assert animal.materialise(path, tmp_path / "work") == str(folder.resolve())
    (tmp_path / "x.whl").write_text("not a zip")
    animal, path = quality_sets.parse_dataset(f"animal-shape={tmp_path / 'x.whl'}")
    with pytest.raises(UserError, match="not the animal-mnist 0.4 wheel"):
        animal.materialise(path, tmp_path / "work")


def test_quality_sets_cli_writes_the_folder_and_prints_the_dvc_overrides(tmp_path, capsys):
    npz = _npz(tmp_path / "c.npz")
    assert quality_sets.main([f"cifar-dev={npz}", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"-S data.path={tmp_path / 'out'}" in out and "-S model.patch_size=4" in out
    assert len(list((tmp_path / "out/emu").iterdir())) == 12
    assert quality_sets.main(["digits", str(tmp_path / "d")]) == 2


# ------------------------------------------------------------------------------- verdict
def _rows(pre_lin: list[float], init_lin: list[float]) -> list[dict]:
    return [
        {
            "seed": i,
            "dataset": "d",
            "pretrained_linear": p,
            "random_init_linear": r,
            "pixels_linear": 0.96,
            "pretrained_knn": 0.95,
            "random_init_knn": 0.60 + 0.01 * i,
            "pixels_knn": 0.97,
        }
        for i, (p, r) in enumerate(zip(pre_lin, init_lin, strict=True))
    ]


def test_verdict_needs_three_sigma_over_seeds_and_compares_with_pixels():
    s = bench_quality.summarise("x", _rows([0.97, 0.98, 0.99], [0.95, 0.95, 0.95]))
    v = s["verdict"]
    # Paired linear gains 2, 3, 4 points: mean 3, std 1 → exactly 3σ, which is not > 3σ.
    assert v["init_sigmas_linear"] == pytest.approx(3.0) and v["beats_init_linear"] is False
    assert v["beats_init_knn"] is True  # gains 35, 34, 33 points, std 1
    assert v["reaches_pixels_linear"] is True and v["reaches_pixels_knn"] is False
    text = bench_quality.format_table(s)
    assert "verdict vs random init (paired gain > 3σ?): linear +3.0 ± 1.0 = 3.0σ: NO" in text
    assert "k-NN 95.0 vs 97.0: NO" in text
    one = bench_quality.summarise("x", _rows([0.97], [0.95]))
    assert one["verdict"]["beats_init_linear"] is None
    assert "linear +2.0 (one seed: n/a)" in bench_quality.format_table(one)


def test_verdict_holds_the_knn_against_the_plain_pixels_too():
    rows = _rows([0.97, 0.98, 0.99], [0.95, 0.95, 0.95])
    for r, plain in zip(rows, (0.92, 0.94, 0.98), strict=True):
        r["pixels_plain_knn"] = plain  # mean 0.947: pretrained 0.95 reaches it
    s = bench_quality.summarise("x", rows)
    assert s["verdict"]["reaches_plain_pixels_knn"] is True
    assert "k-NN 95.0 vs plain pixels 94.7: yes" in bench_quality.format_table(s)
    rows[2]["pixels_plain_knn"] = 0.99
    stricter = bench_quality.summarise("x", rows)
    assert stricter["verdict"]["reaches_plain_pixels_knn"] is False
    overview = bench_quality.format_overview([{**stricter, "dataset": "d"}])
    assert ">= plain px k-NN" in overview and overview.splitlines()[-1].rstrip().endswith("NO")
    # Rows written before the plain reading existed: no verdict, no line.
    old = bench_quality.summarise("x", _rows([0.97, 0.98, 0.99], [0.95, 0.95, 0.95]))
    assert old["verdict"]["reaches_plain_pixels_knn"] is None
    assert "plain pixels" not in bench_quality.format_table(old)


def test_dataset_flag_excludes_data_source_and_repeats(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(tiny_params()))
    base = ["--params", str(params_file), "--seeds", "1"]
    assert bench_quality.main([*base, "--dataset", "digits", "--data-source", "digits"]) == 2
    assert "leave out --data-source" in capsys.readouterr().err
    assert bench_quality.main([*base, "--dataset", "digits", "--dataset", "digits"]) == 2
    assert "each set once" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_runs_two_sets_with_their_params_and_prints_the_verdicts(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    tiny = tiny_params(**{"train.epochs": 1, "train.warmup_epochs": 0, "train.batch_size": 64})
    params_file.write_text(json.dumps(tiny))
    npz = _npz(tmp_path / "c.npz", per_class=40)  # 84 training images: one batch of 64
    keep, out = tmp_path / "kept", tmp_path / "rows.jsonl"
    argv = ["--params", str(params_file), "--seeds", "1", "--keep", str(keep)]
    argv += ["--json-out", str(out), "--dataset", "digits", "--dataset", f"cifar-dev={npz}"]
    assert bench_quality.main(argv) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["dataset"], "summary" in x) for x in lines] == [
        ("digits", False),
        ("digits", True),
        ("cifar-dev", False),
        ("cifar-dev", True),
    ]
    assert (
        lines[2]["overrides"]["data.channels"] == 3 and "data.channels" not in lines[0]["overrides"]
    )
    # The colour set was prepared as 32 px RGB, digits as params.yaml says (8 px grayscale here).
    colour = np.load(keep / "cifar-dev/seed0/data/prepared/train_images.npy", mmap_mode="r")
    gray = np.load(keep / "digits/seed0/data/prepared/train_images.npy", mmap_mode="r")
    assert colour.shape[1:] == (32, 32, 3) and gray.shape[1:] == (8, 8, 1)
    text = capsys.readouterr().out
    assert "defaults on cifar-dev (seeds [0])" in text
    assert text.count("verdict vs raw pixels") == 2 and "verdict per set" in text
