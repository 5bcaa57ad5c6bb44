"""Shared fixtures: tiny params, a throw-away copy of the project as its own git+DVC repo, and a
real Prefect server for the flow tests.

End-to-end tests never touch this checkout's DVC state: they copy the tracked files (plus any
untracked, non-ignored ones, so uncommitted work is tested too) into a temporary directory, write
tiny params there, make a first commit, and run DVC / Prefect inside it.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from hjepa.core.config import apply_overrides
from hjepa.data.cifar import BATCHES, cifar10_source
from hjepa.data.sources import Source, digits_source, image_folder_source

ROOT = Path(__file__).resolve().parents[1]

# Small enough that every stage takes seconds on 2 CPU cores.
TINY_OVERRIDES: dict[str, Any] = {
    "data.image_size": 8,
    "model.patch_size": 2,
    "model.width": 16,
    "model.depth": 2,
    "model.heads": 2,
    "model.predictor.width": 8,
    "model.predictor.depth": 1,
    "model.predictor.heads": 2,
    "model.hierarchy": [
        {"depth": 1, "scale": 2, "weight": 0.5},
        {"depth": 2, "scale": 1, "weight": 1.0},
    ],
    "train.epochs": 2,
    "train.warmup_epochs": 1,
    "train.batch_size": 128,
    "train.checkpoint_every": 1,
    "train.log_every": 2,
    "train.num_workers": 0,
    "train.device": "cpu",  # bitwise resume and DDP tests are CPU promises, also on a CUDA host
    "probe.c_values": [1.0],
    "probe.max_iter": 200,
    "probe.knn_k": 5,
}

ENV = {
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "GIT_AUTHOR_NAME": "hjepa-tests",
    "GIT_AUTHOR_EMAIL": "tests@localhost",
    "GIT_COMMITTER_NAME": "hjepa-tests",
    "GIT_COMMITTER_EMAIL": "tests@localhost",
}


def tiny_params(**overrides: Any) -> dict[str, Any]:
    """The project's params.yaml with TINY_OVERRIDES and then ``overrides`` (dotted keys)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = apply_overrides(raw, TINY_OVERRIDES)
    return apply_overrides(raw, overrides)


def project_env() -> dict[str, str]:
    """Environment for subprocesses: offline settings, git identity, this venv's bin on PATH."""
    env = dict(os.environ)
    env.update(ENV)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def run(cmd: list[str], cwd: Path, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with ``project_env()``; on failure show its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=project_env(), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n"
            f"--- stderr\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_project(**dotted_overrides)`` → path of a committed temp project copy."""

    def factory(commit: bool = True, **overrides: Any) -> Path:
        dest = tmp_path / "project"
        for rel in _project_files():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)
        (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(**overrides), sort_keys=False))
        run(["git", "init", "-q", "-b", "main"], dest)
        if commit:
            run(["git", "add", "-A"], dest)
            run(["git", "commit", "-q", "-m", "test project"], dest)
        return dest

    return factory


def write_params(path: Path, **overrides: Any) -> Path:
    """Write tiny params (plus dotted overrides) to ``path``."""
    path.write_text(yaml.safe_dump(tiny_params(**overrides), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding data/prepared for the tiny params (digits), made once per session."""
    work = tmp_path_factory.mktemp("prepared")
    write_params(work / "params.yaml")
    env = project_env()
    env["HJEPA_PARAMS"] = str(work / "params.yaml")
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run(
        [sys.executable, "-m", "pipeline.prepare"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
    )
    return work / "data" / "prepared"


def stage_dir(tmp_path: Path, prepared: Path, **overrides: Any) -> Path:
    """A working directory with tiny params and a link to the prepared data."""
    (tmp_path / "data").mkdir(exist_ok=True)
    link = tmp_path / "data" / "prepared"
    if not link.exists():
        link.symlink_to(prepared, target_is_directory=True)
    write_params(tmp_path / "params.yaml", **overrides)
    return tmp_path


def stage_env(cwd: Path) -> dict[str, str]:
    """Environment for ``python -m pipeline.<stage>`` in ``cwd``: this checkout importable and
    ``cwd/params.yaml`` as the params file."""
    env = project_env()
    env["PYTHONPATH"] = str(ROOT)
    env["HJEPA_PARAMS"] = str(cwd / "params.yaml")
    return env


def run_stage_subprocess(
    module: str, cwd: Path, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess:
    """``python -m <module>`` in ``cwd`` with this checkout importable."""
    env = stage_env(cwd)
    proc = subprocess.run(
        [sys.executable, "-m", module], cwd=cwd, env=env, capture_output=True, text=True, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real ``prefect server start`` on a free port with its own PREFECT_HOME."""
    # Imported here: only the tests that use a server pay for importing Prefect.
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = tmp_path_factory.mktemp("prefect_home")
    url = f"http://127.0.0.1:{_free_port()}/api"
    port = url.split(":")[2].split("/")[0]
    env = project_env()
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
         "--port", port, "--no-ui"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() - started > 90:
                raise RuntimeError(
                    f"Prefect server did not start:\n{(home / 'server.log').read_text()}"
                )
            time.sleep(0.3)
        print(f"\nPrefect server up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_HOME: str(home)}):
            yield {**env, "PREFECT_API_URL": url}
            # Send what is still buffered while the server is up, or the process hangs at exit
            # retrying against a server that is gone.
            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# ------------------------------------------------------------- data sources (image folders, CIFAR)
@dataclass
class Collected:
    """A whole source converted in this process (what prepare's workers would produce)."""

    images: np.ndarray
    labels: np.ndarray
    sources: list[str]
    class_names: list[str]


def collect(source: Source, size: int, channels: int) -> Collected:
    chunks = list(source.chunks)
    return Collected(
        images=np.concatenate([c.convert(c.payload, size, channels) for c in chunks]),
        labels=np.concatenate([c.labels for c in chunks]),
        sources=[s for c in chunks for s in c.sources],
        class_names=source.class_names,
    )


def load_digits(size: int, channels: int) -> Collected:
    return collect(digits_source(), size, channels)


def load_image_folder(root: Path, size: int, channels: int) -> Collected:
    return collect(image_folder_source(root), size, channels)


def load_cifar10(path: Path, size: int, channels: int) -> Collected:
    return collect(cifar10_source(path), size, channels)


def seeded_draws(
    main: Callable[[list[str]], int], source: Path, tmp_path: Path, cls: str
) -> set[tuple[str, ...]]:
    """The distinct sets of file names a converter's command line (``SOURCE OUT --per-class 3
    --seed S``, see benchmarks/balanced_folder.py) writes under ``OUT/cls`` for seeds 0–4: more
    than one means ``--seed`` reaches the draw."""
    draws = set()
    for seed in range(5):
        folder = tmp_path / f"seed{seed}"
        assert main([str(source), str(folder), "--per-class", "3", "--seed", str(seed)]) == 0
        draws.add(tuple(sorted(p.name for p in (folder / cls).iterdir())))
    return draws


def save_image(path: Path, color: tuple[int, int, int] | int, size: tuple[int, int], mode: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def make_folder(root: Path, per_class: int = 4) -> Path:
    """Two classes with distinct images: 'b_gray' (PNG, L) and 'a_rgb' (JPEG, RGB)."""
    for i in range(per_class):
        save_image(root / "b_gray" / f"{i}.png", 10 + 40 * i, (5 + i, 7), "L")
        save_image(root / "a_rgb" / f"{i}.jpg", (200, 20 * i, 0), (9, 6 + i), "RGB")
    return root


def cifar_batch(n: int, offset: int, rng: np.random.Generator) -> dict[bytes, object]:
    return {
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"labels": [(offset + i) % 10 for i in range(n)],
        b"batch_label": b"x",
    }


def make_cifar_members(n: int = 5, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    out = {
        f"cifar-10-batches-py/{b}": pickle.dumps(cifar_batch(n, k * n, rng), protocol=2)
        for k, b in enumerate(BATCHES)
    }
    names = [f"class{k}".encode() for k in range(10)]
    out["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": names}, protocol=2)
    return out


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
