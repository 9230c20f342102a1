"""rnnha/index.py: index folders built from a folder or a CSV of real images, resumed after a SIGKILL,
sharded over two torchrun processes; exact search equal to Gallery.search, approximate search tuned to
recall@5 >= 0.98; the app serving an index (RNNHA_GALLERY) over HTTP, and the start-up errors."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO

pytest.importorskip("faiss", reason='FAISS is not installed: pip install "rnnha[index]" (faiss-cpu)')

from rnnha import RNNHA, RNNHAConfig  # noqa: E402
from rnnha import index as ix  # noqa: E402
from rnnha.gallery import Gallery, items_from_folder  # noqa: E402
from rnnha.predictor import Predictor  # noqa: E402

GALLERY = REPO / "assets" / "gallery"
VEHICLES = ["car_0139", "car_0016", "car_0036", "car_0045", "car_0046", "car_0062", "truck_0001", "truck_0010",
            "motorcycle_0006", "truck_0011"]


def _images(folder: Path, vehicles=VEHICLES) -> Path:
    """Both camera views of the vehicles, copied from the shipped gallery (20 real images)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{v}_cam{c}.jpg" for v in vehicles for c in (1, 2) if (GALLERY / f"{v}_cam{c}.jpg").is_file()]
    for name in names:
        shutil.copy(GALLERY / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = _images(tmp_path_factory.mktemp("images") / "gallery")
    assert len(list(folder.glob("*.jpg"))) == 20
    return folder


def _tiny(seed: int = 0) -> RNNHA:
    torch.manual_seed(seed)
    return RNNHA(RNNHAConfig(num_classes=[3, 4], hidden_size=32, input_size=64)).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small random model, saved as a model folder (a --model for the command lines), and its predictor."""
    from zoo import load_model
    from rnnha.pretrained import save_pretrained

    folder = save_pretrained(_tiny(), tmp_path_factory.mktemp("tiny") / "model")
    return folder, load_model(str(folder), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def default_index(tmp_path_factory, images):
    """The default model's index of the 20 images, and the predictor."""
    if not (REPO / "assets" / "default" / "config.json").is_file():
        pytest.skip("assets/default (the embedded default model) is missing")
    from zoo import load_model

    predictor = load_model("default", device="cpu")
    out = tmp_path_factory.mktemp("default-index") / "index"
    ix.build(images, out, predictor, model_name="default", chunk=8, progress=False)
    return out, predictor


class Counting:
    """A predictor that counts the images it embeds."""

    def __init__(self, predictor):
        self._predictor, self.images = predictor, 0

    def predict(self, images, topk=5):
        self.images += len(images)
        return self._predictor.predict(images, topk=topk)

    def __getattr__(self, name):
        return getattr(self._predictor, name)


def shard_mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((out / "shards").glob("*.safetensors"))}


# --- build and search -----------------------------------------------------------------------------------

def test_exact_index_of_a_folder_searches_as_the_gallery_does(default_index, images):
    out, predictor = default_index
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == ix.FORMAT and manifest["model"] == predictor.fingerprint
    assert manifest["model_name"] == "default" and manifest["count"] == 20 and manifest["dim"] == 1024
    assert manifest["dtype"] == "float16" and manifest["index"]["kind"] == "flat" and len(manifest["shards"]) == 3
    gallery = ix.IndexGallery.open(out, predictor)
    reference = Gallery.build(predictor, items_from_folder(images))
    assert len(gallery) == len(reference) == 20
    assert [(i.path, i.vehicle, i.camera, i.digest) for i in gallery.items] == \
        [(i.path.resolve(), i.vehicle, i.camera, i.digest) for i in reference.items]
    assert (out / "items.jsonl").read_text().splitlines()[0].startswith('{"path": "car_0016_cam1.jpg"')
    for q in range(len(reference)):
        query, digest = reference.embeddings[q], reference.items[q].digest
        found, expected = gallery.search(query, 5, digest), reference.search(query, 5, digest)
        assert [i for i, _ in found] == [i for i, _ in expected]
        assert np.allclose([s for _, s in found], [s for _, s in expected], atol=2e-3)
        assert q not in {i for i, _ in found}  # the query's own image is not its match
    batch = gallery.search(reference.embeddings[:3].numpy(), 4, [reference.items[0].digest, None, None])
    assert [len(b) for b in batch] == [4, 4, 4] and batch[1][0][0] == 1 and 0 not in {i for i, _ in batch[0]}
    assert torch.allclose(gallery.attention[[2, 5]], reference.attention[[2, 5]], atol=1e-3)


def test_a_csv_source_with_labels_and_an_unreadable_image(tmp_path, tiny, images):
    folder, predictor = tiny
    (tmp_path / "pictures").mkdir()
    shutil.copy(images / "car_0139_cam1.jpg", tmp_path / "pictures" / "a.jpg")
    (tmp_path / "pictures" / "broken.jpg").write_bytes(b"not an image")
    rows = ["path,vehicle,camera", "pictures/a.jpg,car_0139,1", "pictures/broken.jpg,x,1",
            f"{images / 'truck_0010_cam2.jpg'},,", "./pictures/../pictures/a.jpg,copy,9"]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    manifest = ix.build(tmp_path / "list.csv", tmp_path / "index", predictor, chunk=2, progress=False)
    assert manifest["count"] == 3 and manifest["skipped"]["count"] == 1
    assert manifest["skipped"]["first"][0][0] == "pictures/broken.jpg"
    gallery = ix.IndexGallery.open(tmp_path / "index", predictor)
    first, absolute, copy = gallery.items
    assert (first.vehicle, first.camera, first.path) == ("car_0139", "1", tmp_path / "pictures" / "a.jpg")
    assert (absolute.vehicle, absolute.camera) == ("truck_0010", "2")  # empty columns: from the file name
    assert absolute.path == images / "truck_0010_cam2.jpg" and copy.digest == first.digest
    embedding = predictor.embed([images / "car_0139_cam1.jpg"])[0]
    assert [i for i, _ in gallery.search(embedding, 3, first.digest)] == [1]  # both copies skipped
    assert gallery.items.position_of(images / "truck_0010_cam2.jpg") == 1
    assert gallery.items.position_of(tmp_path / "pictures" / "broken.jpg") is None  # beside, not indexed
    with pytest.raises(ix.IndexFolderError, match="no `path` column"):
        (tmp_path / "bad.csv").write_text("file\na.jpg\n")
        ix.build(tmp_path / "bad.csv", tmp_path / "other", predictor, progress=False)


# --- resume -------------------------------------------------------------------------------------------

KILLED_AFTER_FIRST_SHARD = textwrap.dedent("""
    import os, signal, sys
    import rnnha.index as ix
    write = ix._write_shard
    def write_then_die(*args, **kwargs):
        write(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    ix._write_shard = write_then_die
    sys.exit(ix.main(sys.argv[1:]))
""")


def test_a_killed_build_resumes_from_its_finished_shards(tmp_path, tiny, images):
    model, predictor = tiny
    out = tmp_path / "index"
    command = [sys.executable, "-c", KILLED_AFTER_FIRST_SHARD, "build", str(images), str(out), "--model",
               str(model), "--device", "cpu", "--chunk", "6", "--quiet"]
    killed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    finished = shard_mtimes(out)
    assert list(finished) == ["000000.safetensors"] and not (out / "manifest.json").exists()
    with pytest.raises(ix.IndexFolderError, match="unfinished index build"):
        ix.IndexGallery.open(out, predictor)
    (out / "shards" / ".000001.safetensors.x1y2.tmp").write_bytes(b"half a shard")  # killed mid-write
    counting = Counting(predictor)
    manifest = ix.build(images, out, counting, chunk=6, progress=False)
    assert counting.images == 20 - 6  # only the missing chunks were embedded
    assert shard_mtimes(out)["000000.safetensors"] == finished["000000.safetensors"]
    assert manifest["built"] == {"embedded_shards": 3, "kept_shards": 1, "world_size": 1}
    assert not list((out / "shards").glob(".*.tmp")) and manifest["count"] == 20
    assert len(ix.IndexGallery.open(out, predictor)) == 20


def test_a_corrupt_a_foreign_and_a_changed_shard_are_embedded_again(tmp_path, tiny, images):
    from safetensors.torch import load_file, safe_open, save_file

    _, predictor = tiny
    folder = _images(tmp_path / "images", VEHICLES[:6])  # 12 images, 3 chunks of 4
    out = tmp_path / "index"
    ix.build(folder, out, predictor, chunk=4, progress=False)
    before = ix.IndexGallery.open(out, predictor)
    shards = sorted((out / "shards").glob("*.safetensors"))
    shards[0].write_bytes(shards[0].read_bytes()[:-50])  # truncated
    with safe_open(str(shards[1]), "pt") as f:
        metadata = f.metadata()
    save_file(load_file(str(shards[1])), str(shards[1]), metadata={**metadata, "model": "0" * 64})  # another model's
    counting = Counting(predictor)
    ix.build(folder, out, counting, chunk=4, progress=False)
    assert counting.images == 8
    after = ix.IndexGallery.open(out, predictor)
    query = before.index.reconstruct(3)
    assert after.search(query, 5) == before.search(query, 5)
    last = sorted(folder.glob("*.jpg"))[-1]
    last.write_bytes((GALLERY / "truck_0001_cam1.jpg").read_bytes())  # an image changed: its chunk only
    counting = Counting(predictor)
    ix.build(folder, out, counting, chunk=4, progress=False)
    assert counting.images == 4
    counting = Counting(predictor)
    ix.build(folder, out, counting, chunk=4, progress=False)  # nothing changed: nothing embedded, nothing rebuilt
    assert counting.images == 0


def test_torchrun_two_processes_build_the_same_index(tmp_path, tiny, images):
    model, predictor = tiny
    one = tmp_path / "one"
    ix.build(images, one, predictor, chunk=3, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "rnnha.index", "build", str(images), str(tmp_path / "two"), "--model", str(model),
               "--chunk", "3", "--quiet"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "20 images, flat index" in done.stdout and done.stdout.count("images,") == 1  # rank 0 reports
    two = tmp_path / "two"
    manifests = [json.loads((f / "manifest.json").read_text()) for f in (one, two)]
    assert manifests[1]["built"]["world_size"] == 2
    assert (one / "items.jsonl").read_bytes() == (two / "items.jsonl").read_bytes()
    assert [m["shards"] for m in manifests] == [manifests[0]["shards"]] * 2
    a, b = (ix.IndexGallery.open(f, predictor) for f in (one, two))
    vectors = [np.stack([g.index.reconstruct(i) for i in range(len(g))]) for g in (a, b)]
    assert np.allclose(vectors[0], vectors[1], atol=2e-3)
    found = [g.search(vectors[0], 5) for g in (a, b)]  # the same neighbours, up to swaps of near-ties
    assert [r[0][0] for r in found[0]] == [r[0][0] for r in found[1]] == list(range(len(a)))
    assert np.allclose(*[[[score for _, score in r] for r in f] for f in found], atol=5e-3)


# --- FAISS: exact and approximate --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_the_approximate_index_reaches_recall_098_against_exact(kind):
    gallery, queries = ix.synthetic_embeddings(20_000, 64, queries=500, seed=1)
    assert ix.choose_kind(20_000, exact_below=10_000) == ix.APPROXIMATE_KIND and ix.choose_kind(9_999, 10_000) == "flat"
    index, info = ix.build_faiss_index(gallery, kind)
    assert info["kind"] == kind and info["recall_at_5"] >= 0.98 and index.ntotal == 20_000
    exact, _ = ix.exact_topk(gallery, queries, 5)
    found, ids = index.search(queries, 5)  # held-out views of gallery vehicles, as real queries are
    assert ix.recall_at_k(found, exact) >= 0.97
    assert index.search(gallery[1234:1235], 1)[1][0][0] == 1234  # ids are the gallery's rows
    flat = ix.make_faiss_index(gallery, "flat")
    assert ix.recall_at_k(flat.search(queries, 5)[0], exact) == 1.0


# --- errors ------------------------------------------------------------------------------------------

def test_another_models_index_is_refused_with_a_clear_message(tmp_path, tiny, images, capsys):
    from rnnha.pretrained import save_pretrained

    model, predictor = tiny
    ix.build(images, tmp_path / "index", predictor, model_name=str(model), chunk=8, progress=False)
    other = Predictor(_tiny(seed=1), device="cpu", dtype=torch.float32)
    with pytest.raises(ix.IndexFolderError, match="built with another model .* build it again with this model"):
        ix.IndexGallery.open(tmp_path / "index", other)
    other_folder = save_pretrained(_tiny(seed=1), tmp_path / "other")
    code = ix.main(["search", str(tmp_path / "index"), str(images / "car_0139_cam1.jpg"), "--model", str(other_folder)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "built with another model" in err and err.count("\n") == 1
    with pytest.raises(ix.IndexFolderError, match="not an rnnha index folder"):
        ix.IndexGallery.open(tmp_path / "nowhere", predictor)


def test_missing_faiss_is_one_clear_line_and_the_small_gallery_does_not_need_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    with pytest.raises(ix.FaissMissing, match=r'pip install "rnnha\[index\]" \(faiss-cpu\)'):
        ix.import_faiss()
    assert ix.main(["bench", "--n", "100"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {ix.MISSING_FAISS}"
    from rnnha.gallery import GalleryItem

    embeddings = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    small = Gallery([GalleryItem(Path(f"{i}.jpg"), digest=str(i)) for i in range(4)], embeddings, torch.zeros(4, 2, 2))
    assert small.search(embeddings[0], 2, "0")[0][0] != 0


# --- the command line and the app ------------------------------------------------------------------

def test_the_search_command_through_rnnha_index(default_index, images, capsys):
    from zoo.cli import main as rnnha

    out, _ = default_index
    assert rnnha(["index", "search", str(out), str(images / "car_0139_cam1.jpg"), "--k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 20 and result["kind"] == "flat"
    matches = result["results"][0]["matches"]
    assert len(matches) == 3 and Path(matches[0]["image"]).name == "car_0139_cam2.jpg"
    assert all(Path(m["image"]).name != "car_0139_cam1.jpg" for m in matches)
    assert rnnha(["index", "search", str(out / "nowhere"), str(images / "car_0139_cam1.jpg")]) == 2
    assert "not an rnnha index folder" in capsys.readouterr().err
    assert rnnha(["identify", str(images / "truck_0010_cam1.jpg"), "--gallery", str(out), "--json"]) == 0
    matches = json.loads(capsys.readouterr().out)["matches"]  # `rnnha identify --gallery INDEX`
    assert len(matches) == 5 and Path(matches[0]["image"]).name == "truck_0010_cam2.jpg" and matches[0]["correct"]


def test_the_app_serves_a_prebuilt_index(tmp_path, default_index, images):
    """RNNHA_GALLERY over raw HTTP: identify searches the index, its images are shown and may be named
    as inputs, any other file beside them may not; browse pages through it."""
    pytest.importorskip("gradio")
    from apphttp import Served

    out, _ = default_index
    (images / "notes.jpg").write_bytes((GALLERY / "car_0036_cam1.jpg").read_bytes())  # beside, not indexed
    try:
        with Served(tmp_path / "served", {"RNNHA_GALLERY": str(out)}) as app:
            event, result = app.call("identify", app.upload(GALLERY / "car_0139_cam1.jpg"), "default", False)
            assert event == "complete", result
            _, rows, shown, _, note, _ = result
            indexed = {p.name for p in images.glob("*_cam*.jpg")}
            assert len(rows["data"]) == 5 and {row[5] for row in rows["data"]} <= indexed
            assert rows["data"][0][5] == "car_0139_cam2.jpg" and rows["data"][0][4] == "yes" and "car_0139" in note
            assert all(row[5] != "car_0139_cam1.jpg" for row in rows["data"])  # the same bytes: not its match
            assert app.http.get(shown[0]["image"]["url"]).status_code == 200
            event, result = app.call("identify", {"path": str(images / "truck_0010_cam1.jpg")}, "default", False)
            assert event == "complete" and result[1]["data"][0][5] == "truck_0010_cam2.jpg", result
            event, message = app.call("identify", {"path": str(images / "notes.jpg")}, "default", False)
            assert event == "error"
            assert app.call("identify", {"path": str(out / "manifest.json")}, "default", False)[0] == "error"
            event, result = app.call("browse_next", "default", -1, False)
            assert event == "complete" and "Page 1 of 2 (20 images)" in result[2] and len(result[0]) == 12
    finally:
        (images / "notes.jpg").unlink()


def test_the_app_stops_at_start_up_with_one_line_when_its_index_cannot_serve(monkeypatch, tmp_path, tiny, images):
    pytest.importorskip("gradio")
    if not (REPO / "assets" / "default" / "config.json").is_file():
        pytest.skip("assets/default (the embedded default model) is missing")
    import app

    def start(index) -> str:
        monkeypatch.setattr(app, "INDEX", str(index))
        app.index_gallery.cache_clear()
        with pytest.raises(SystemExit) as stopped:
            app.check_index()
        app.index_gallery.cache_clear()
        message = str(stopped.value)
        assert message.startswith(f"error: RNNHA_GALLERY={index}: ") and "\n" not in message
        return message

    assert "not an rnnha index folder" in start(tmp_path / "missing")
    _, predictor = tiny
    ix.build(images, tmp_path / "tiny", predictor, model_name="default", chunk=8, progress=False)
    assert "built with another model" in start(tmp_path / "tiny")  # named "default", other weights
    manifest = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    (tmp_path / "tiny" / "manifest.json").write_text(json.dumps({**manifest, "model_name": "no-such-model"}))
    assert "which this app does not offer" in start(tmp_path / "tiny")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "faiss", None)
        assert 'pip install "rnnha[index]"' in start(tmp_path / "tiny")
    monkeypatch.setattr(app, "INDEX", None)
    assert app.check_index() is None


def test_auto_is_exact_after_all_when_the_approximate_index_does_not_pay():
    gallery, _ = ix.synthetic_embeddings(3000, 32, queries=1)
    index, info = ix.build_faiss_index(gallery, "auto", exact_below=1000, recall_target=1.01)  # unreachable
    assert info["kind"] == "flat" and index.ntotal == 3000 and isinstance(index, ix.import_faiss().IndexFlatIP)
    assert info["approximate_tried"]["kind"] == ix.APPROXIMATE_KIND
    assert info["approximate_tried"]["reason"] == "under the recall target"
