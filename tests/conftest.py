"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RNNHA_DATA", REPO.parent / "shared" / "data"))

# The suite runs in pytest-xdist workers (pyproject: -n auto, one file per worker at a time): the cores are
# shared out among them, and the subprocesses a test starts (OMP_NUM_THREADS) get the worker's share.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(THREADS)


def _data_dir(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real data lives in ../shared/data (set RNNHA_DATA to move it)")
    return path


@pytest.fixture(scope="session")
def khoa_root() -> Path:
    return _data_dir("khoa-vehicle-reid")


@pytest.fixture(scope="session")
def cars_root() -> Path:
    return _data_dir("stanford-cars")


@pytest.fixture(scope="session")
def vehicleid_root() -> Path:
    return _data_dir("vehicleid-sample")


@pytest.fixture(scope="session")
def khoa_pair(khoa_root) -> tuple[Path, Path, Path]:
    """Two views of one validation vehicle and one view of another."""
    names = (khoa_root / "val.txt").read_text().split()
    images = {p.name: p for p in (khoa_root / "images").rglob("*.jpg")}
    return images["car_0139_cam1.jpg"], images["car_0139_cam2.jpg"], images[names[2]]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gallery_cache(tmp_path_factory) -> Path:
    """A cache folder (RNNHA_CACHE's layout) with the shipped gallery embedded by the default model, built
    once per session: app tests that are not about building it start from a copy (seed_cache), as an app
    restarted on a Space's persistent storage does. The app verifies a cache before it uses one."""
    if not (REPO / "assets" / "default" / "config.json").is_file():
        pytest.skip("assets/default (the embedded default model) is missing")
    from rnnha.gallery import Gallery, items_from_folder
    from zoo import load_model

    folder = tmp_path_factory.mktemp("gallery-cache")
    Gallery.build(load_model("default"), items_from_folder(REPO / "assets" / "gallery"), folder / "galleries")
    return folder


def seed_cache(cache: Path, seed: Path) -> Path:
    """Copy the gallery_cache fixture's folder into an app's RNNHA_CACHE."""
    import shutil

    shutil.copytree(seed, cache, dirs_exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, gallery_cache):
    """app.py served in-process on 127.0.0.1, with its caches in a temporary folder."""
    import app

    app.CACHE = seed_cache(tmp_path_factory.mktemp("app-cache"), gallery_cache)
    demo = app.build_demo()
    port = _free_port()
    app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
