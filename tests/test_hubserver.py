"""The real huggingface_hub client against tests/hubserver.py (a local Hub-protocol server on 127.0.0.1)."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")

from hubserver import HubServer, hub_env  # noqa: E402  (tests/ is on sys.path: rootdir conftest layout)

from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

WEIGHTS = bytes(range(256)) * 40  # binary, .bin => served as an LFS file (ETag = sha256)
CONFIG = b'{"backbone": "resnet50", "num_classes": 576}\n'  # small text => regular git file (ETag = git sha1)


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server


@pytest.fixture
def hf_env(hub, tmp_path):
    with hub_env(hub, tmp_path / "hub") as env:
        yield env


def test_hub_env_patches_and_restores(tmp_path):
    before = (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_OFFLINE,
              constants.HF_HUB_CACHE, huggingface_hub.hf_api.api.endpoint, os.environ.get("HF_ENDPOINT"))
    with HubServer() as server, hub_env(server, tmp_path / "hub") as env:
        assert constants.ENDPOINT == server.url == env.endpoint
        assert constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith(server.url + "/")
        assert huggingface_hub.hf_api.api.endpoint == server.url
        assert constants.HF_HUB_DISABLE_XET and not constants.HF_HUB_OFFLINE
        assert constants.HF_HUB_CACHE == str(tmp_path / "hub")
        assert os.environ["HF_ENDPOINT"] == server.url and os.environ["HF_HUB_DISABLE_XET"] == "1"
        assert huggingface_hub.hf_hub_url("a/b", "c.txt") == f"{server.url}/a/b/resolve/main/c.txt"
        env.set_offline(True)
        assert constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"
    after = (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_OFFLINE,
             constants.HF_HUB_CACHE, huggingface_hub.hf_api.api.endpoint, os.environ.get("HF_ENDPOINT"))
    assert after == before


def test_hf_hub_download_two_files_then_offline(hub, hf_env):
    sha = hub.add_repo("rnnha/demo", {"config.json": CONFIG, "weights.bin": WEIGHTS})
    cfg = hf_hub_download("rnnha/demo", "config.json")
    wts = hf_hub_download("rnnha/demo", "weights.bin")
    assert Path(cfg).read_bytes() == CONFIG and Path(wts).read_bytes() == WEIGHTS
    assert Path(cfg).parent.name == sha and Path(cfg).is_relative_to(hf_env.cache_dir)
    # the cache blob is named after the ETag: sha256 for an LFS file, git blob sha1 for a regular one
    assert Path(os.path.realpath(wts)).name == hashlib.sha256(WEIGHTS).hexdigest()
    assert Path(os.path.realpath(cfg)).name == hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert ("HEAD", "/rnnha/demo/resolve/main/weights.bin") in hub.requests
    assert ("GET", "/rnnha/demo/resolve/main/weights.bin") in hub.requests

    # HF_HUB_OFFLINE=1 and a broken Hub: served from the cache without a single request
    hub.fail_all = True
    hub.clear_requests()
    hf_env.set_offline(True)
    assert hf_hub_download("rnnha/demo", "config.json") == cfg
    assert hf_hub_download("rnnha/demo", "weights.bin") == wts
    assert hub.requests == []
    with pytest.raises(LocalEntryNotFoundError):  # not cached + offline
        hf_hub_download("rnnha/demo", "other.txt")

    # online but the Hub answers 503: the HEAD fails, the cached file is still returned
    hf_env.set_offline(False)
    assert hf_hub_download("rnnha/demo", "weights.bin") == wts
    assert hub.requests == [("HEAD", "/rnnha/demo/resolve/main/weights.bin")]

    # online but the server is gone (connection refused): same fallback
    hub.close()
    assert hf_hub_download("rnnha/demo", "config.json") == cfg


def test_snapshot_download_pinned_commit(hub, hf_env):
    first = hub.add_repo("rnnha/demo", {"config.json": CONFIG, "weights.bin": WEIGHTS, "sub/notes.txt": "v1"})
    second = hub.add_repo("rnnha/demo", {"config.json": b"{}", "sub/notes.txt": "v2"})
    assert first != second and hub.resolve("rnnha/demo") == second

    pinned = Path(snapshot_download("rnnha/demo", revision=first))
    assert pinned.name == first
    assert sorted(str(p.relative_to(pinned)) for p in pinned.rglob("*") if p.is_file()) == [
        "config.json", "sub/notes.txt", "weights.bin"]
    assert (pinned / "weights.bin").read_bytes() == WEIGHTS and (pinned / "sub/notes.txt").read_text() == "v1"
    # a pinned sha needs no repo_info call: the tree listing is fetched directly at that commit
    assert ("GET", f"/api/models/rnnha/demo/tree/{first}") in hub.requests
    assert ("GET", "/api/models/rnnha/demo") not in hub.requests

    latest = Path(snapshot_download("rnnha/demo"))
    assert latest.name == second and (latest / "sub/notes.txt").read_text() == "v2"
    assert not (latest / "weights.bin").exists()

    info = HfApi().model_info("rnnha/demo", revision=first, files_metadata=True)
    assert info.sha == first and info.id == "rnnha/demo"
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes == {"config.json": len(CONFIG), "sub/notes.txt": 2, "weights.bin": len(WEIGHTS)}
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs["weights.bin"].sha256 == hashlib.sha256(WEIGHTS).hexdigest() and lfs["config.json"] is None
    assert huggingface_hub.model_info("rnnha/demo").sha == second  # module-level api singleton is patched too


def test_missing_file_unknown_repo_unknown_revision(hub, hf_env):
    sha = hub.add_repo("rnnha/demo", {"config.json": CONFIG})
    with pytest.raises(RemoteEntryNotFoundError) as err:
        hf_hub_download("rnnha/demo", "missing.bin")
    assert isinstance(err.value, EntryNotFoundError) and err.value.response.status_code == 404
    # the client caches the non-existence under .no_exist/<commit>
    assert (hf_env.cache_dir / "models--rnnha--demo" / ".no_exist" / sha / "missing.bin").exists()

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("rnnha/nope", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("rnnha/nope")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("rnnha/nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("rnnha/demo", "config.json", revision="v9")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info("rnnha/demo", revision="0" * 40)


def test_broken_hub_raises(hub, hf_env):
    hub.add_repo("rnnha/demo", {"config.json": CONFIG})
    hub.fail_all = True
    # downloads: HEAD fails (503, then 5 retries whose sleeps hub_env removed), nothing cached
    with pytest.raises(LocalEntryNotFoundError) as err:
        hf_hub_download("rnnha/demo", "config.json")
    assert isinstance(err.value.__cause__, HfHubHTTPError) and err.value.__cause__.response.status_code == 503
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download("rnnha/demo")
    # API calls are not retried: the HfHubHTTPError itself
    with pytest.raises(HfHubHTTPError) as err:
        HfApi().model_info("rnnha/demo")
    assert err.value.response.status_code == 503

    httpx2 = pytest.importorskip("httpx2")
    hub.close()  # unreachable Hub: connection refused
    with pytest.raises(LocalEntryNotFoundError) as err:
        hf_hub_download("rnnha/demo", "config.json")
    assert isinstance(err.value.__cause__, httpx2.ConnectError)
    with pytest.raises(httpx2.ConnectError):
        HfApi().model_info("rnnha/demo")


def test_upload_round_trip(hub, hf_env, tmp_path):
    folder = tmp_path / "export"
    (folder / "sub").mkdir(parents=True)
    blob = os.urandom(3000) + b"\x00\xff"
    (folder / "model.safetensors").write_bytes(blob)
    (folder / "sub" / "labels.txt").write_text("car\ntruck\n")

    api = HfApi()
    url = api.create_repo("rnnha/exported", private=True)
    assert url.repo_id == "rnnha/exported" and url.startswith(hub.url)
    api.create_repo("rnnha/exported", exist_ok=True)  # 409 swallowed
    info = api.upload_folder(repo_id="rnnha/exported", folder_path=folder, commit_message="export")
    assert info.oid == hub.resolve("rnnha/exported")
    assert hub.repo_files("rnnha/exported") == {"model.safetensors": blob, "sub/labels.txt": b"car\ntruck\n"}
    assert ("POST", "/api/models/rnnha/exported/preupload/main") in hub.requests
    assert ("POST", "/api/models/rnnha/exported/commit/main") in hub.requests

    assert Path(hf_hub_download("rnnha/exported", "model.safetensors")).read_bytes() == blob
    assert Path(hf_hub_download("rnnha/exported", "sub/labels.txt")).read_text() == "car\ntruck\n"
    assert sorted(api.list_repo_files("rnnha/exported")) == ["model.safetensors", "sub/labels.txt"]

    # same content again: the client sees matching oids from /preupload and skips the commit
    again = api.upload_folder(repo_id="rnnha/exported", folder_path=folder)
    assert again.oid == info.oid
    # a commit with a deletion, through create_commit
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api.create_commit("rnnha/exported", operations=[CommitOperationDelete("sub/labels.txt"),
                                                    CommitOperationAdd("README.md", b"# exported\n")],
                      commit_message="readme")
    assert sorted(hub.repo_files("rnnha/exported")) == ["README.md", "model.safetensors"]
    assert len(hub.commits("rnnha/exported")) == 3  # initial commit, export, readme


def test_resolve_range_and_headers(hub):
    sha = hub.add_repo("rnnha/demo", {"weights.bin": WEIGHTS, "config.json": CONFIG})
    req = urllib.request.Request(f"{hub.url}/rnnha/demo/resolve/main/weights.bin", headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == WEIGHTS[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(WEIGHTS)}"
        assert r.headers["X-Repo-Commit"] == sha
        assert r.headers["X-Linked-Etag"] == r.headers["ETag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    req = urllib.request.Request(f"{hub.url}/rnnha/demo/resolve/{sha}/config.json", method="HEAD")
    with urllib.request.urlopen(req) as r:
        assert int(r.headers["Content-Length"]) == len(CONFIG) and "X-Linked-Etag" not in r.headers
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{hub.url}/rnnha/demo/resolve/main/nope.txt")
    assert err.value.code == 404 and err.value.headers["X-Error-Code"] == "EntryNotFound"
