"""`python app.py` as the public Space runs it, attacked over raw HTTP by an anonymous client (no
gradio_client): server files named as inputs, models outside the zoo, inputs of the wrong type, huge
images, zip bombs, refused uploads, a flood, oversized files, a tampered cache. After every attack the app
is still serving and answers a real request exactly as before. Memory is the process's peak resident set
(Linux clear_refs / VmHWM) around one request."""
from __future__ import annotations

import io
import re
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apphttp import REPO, Served, UploadRefused
from hubserver import HubServer

pytestmark = pytest.mark.slow
GALLERY = REPO / "assets" / "gallery"
NOT_AN_UPLOAD = "This image is not an upload of this app, or it has expired: upload the image again."
SERVER_PATH = re.compile(r"/(etc|proc|root|home|tmp|work|usr|var|srv)\b|Traceback|\.py\b")
MB = 2**20
MEMORY_BUDGET = 300 * MB  # the target for one huge image and for a zip bomb
SESSION_TTL = 15


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


@pytest.fixture(scope="module")
def served(tmp_path_factory, hub, gallery_cache):
    if not (REPO / "assets" / "default" / "config.json").is_file():
        pytest.skip("assets/default (the embedded default model) is missing")
    workdir = tmp_path_factory.mktemp("served")
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(workdir / "hf"),
           "RNNHA_QUEUE_SIZE": "8", "RNNHA_MAX_UPLOAD_MB": "20", "RNNHA_SESSION_TTL": str(SESSION_TTL),
           "PYTHONPATH": str(REPO / "tests" / "stubs"), "SPACES_STUB_LOG": str(workdir / "spaces.log"),
           "TMPDIR": str(workdir / "tmp")}  # RNNHA_CACHE outside the temp folder, as on a Space's /data
    (workdir / "tmp").mkdir()
    with Served(workdir, env, seed=gallery_cache) as app:
        yield app


def answers(app: Served, session: str | None = None):
    """One real identify and one real compare, reduced to what a user reads (files have fresh names)."""
    query = app.upload(GALLERY / "car_0139_cam1.jpg")
    event, out = app.call("identify", query, "default", False, session=session)
    assert event == "complete", out
    label, rows, _, _, note, path = out
    event, out = app.call("compare", query, app.upload(GALLERY / "car_0139_cam2.jpg"), "default", False)
    assert event == "complete", out
    return label, rows["data"], note, path, out[0], out[1]


@pytest.fixture(scope="module")
def expected(served):
    return answers(served)


def still_serving(app: Served, expected) -> None:
    assert app.alive(), app.log()[-3000:]
    assert answers(app) == expected


def refused(app: Served, api: str, *data, session: str | None = None) -> str | None:
    event, out = app.call(api, *data, session=session)
    assert event == "error", (api, out)
    message = out.get("error") if isinstance(out, dict) else out
    assert message is None or not SERVER_PATH.search(message), message
    return message


def jpeg(side: int, seed: int = 0) -> bytes:
    """A legal photo-like JPEG (smooth colours) of side x side pixels."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    small.resize((side, side), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png(side: int) -> bytes:
    """A legal side x side PNG that compresses well (gradients), so the upload stays small."""
    ramp = Image.linear_gradient("L").resize((side, side))
    image = Image.merge("RGB", (ramp, ramp.rotate(90), ramp.rotate(180)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def upload_files(app: Served) -> list[Path]:
    folder = Path(app.env["RNNHA_CACHE"]) / "uploads"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


def test_server_files_are_never_read(served, expected, tmp_path):
    secret = tmp_path / "secret.jpg"  # a real image on the server that nobody uploaded
    secret.write_bytes((GALLERY / "car_0139_cam1.jpg").read_bytes())
    uploads = served.env["GRADIO_TEMP_DIR"]
    paths = [str(secret), "/etc/shadow", "/proc/self/environ", "/no/such/file.jpg", str(REPO / "app.py"),
             f"{uploads}/{'../' * 30}{str(secret).lstrip('/')}", f"{uploads}/../../../../etc/passwd",
             str(GALLERY / ".." / "default" / "config.json"), ""]
    good = served.upload(GALLERY / "car_0139_cam2.jpg")
    for path in paths:
        # the same answer whether the file exists or not: nothing to learn about the server's disk
        assert refused(served, "identify", {"path": path}, "default", False) == NOT_AN_UPLOAD, path
        assert refused(served, "compare", good, {"path": path}, "default", False) == NOT_AN_UPLOAD, path
        # with Gradio's file marker, Gradio's own check refuses it before our code runs
        marked = {"path": path, "meta": {"_type": "gradio.FileData"}}
        assert refused(served, "identify", marked, "default", False) in (None, NOT_AN_UPLOAD), path
    for payload in ("/etc/passwd", ["/etc/passwd"], 42, {"url": "http://127.0.0.1:1/x.jpg"}):
        refused(served, "identify", payload, "default", False)
    assert not any(p.name == "secret.jpg" for p in Path(uploads).rglob("*"))  # never copied to be served
    still_serving(served, expected)


def test_only_the_zoo_models_load(served, expected, hub):
    query = served.upload(GALLERY / "car_0139_cam1.jpg")
    hub.requests.clear()
    names = ["hf-hub:org/model", "hf-hub:org/model@main", str(REPO / "assets" / "default"), "/etc",
             "/no/such/folder", "../assets/default", "assets/default", "default ", "DEFAULT", "x" * 10_000]
    messages = {refused(served, "identify", query, name, False) for name in names}
    messages |= {refused(served, "identify", query, name, False) for name in (None, 3, ["default"], {"a": 1})}
    assert messages == {"Unknown model: choose one of default, two-level."}  # no word about which folders exist
    assert refused(served, "compare", query, query, "hf-hub:org/model", False) in messages
    assert refused(served, "browse_next", "/etc", 0, False) in messages
    assert hub.requests == []  # the server never asked the Hub for anything
    still_serving(served, expected)


def test_every_other_input_is_checked_as_the_ui_limits_it(served, expected):
    query = served.upload(GALLERY / "car_0139_cam1.jpg")
    for raw in ("yes", 1, None, [True]):
        assert refused(served, "identify", query, "default", raw) == "The raw-attention checkbox takes true or false."
    for page in ("abc", 1.5, True, None, [1], float("inf")):
        assert refused(served, "browse_next", "default", page, False) == "The page number must be a whole number."
    event, (tiles, page, status) = served.call("browse_next", "default", 10**12, False)
    assert event == "complete" and page == 16 and status.startswith("Page 17 of 17")  # clamped
    still_serving(served, expected)


def test_a_7000_pixel_jpeg_costs_little_memory(served, expected, capsys):
    big = served.upload(jpeg(7000), "big.jpg")
    before = served.reset_peak()
    start = time.perf_counter()
    event, out = served.call("identify", big, "default", False)
    seconds = time.perf_counter() - start
    added = served.peak() - before
    assert event == "complete", out
    with Image.open(out[3]["path"]) as overlay:
        assert max(overlay.size) == 1024  # drawn at display size, not 7000 x 7000
    with capsys.disabled():
        print(f"\n7000x7000 JPEG identify: peak memory +{added / MB:.0f} MB, {seconds:.2f} s")
    assert added < MEMORY_BUDGET
    before = served.reset_peak()
    assert served.call("compare", big, big, "default", False)[0] == "complete"
    assert served.peak() - before < MEMORY_BUDGET
    still_serving(served, expected)


def zip_bomb(path: Path, gib: float = 1.0, extra: bytes | None = None) -> Path:
    """A zip whose member bomb.jpg unpacks to `gib` GiB of zeros (about 1 MB on disk)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb.jpg", "w", force_zip64=True) as member:
            chunk = bytes(MB)
            for _ in range(int(gib * 1024)):
                member.write(chunk)
        if extra:
            archive.writestr("car_0139_cam2.jpg", extra)
    return path


def test_a_zip_bomb_is_refused_unread(served, expected, tmp_path, capsys):
    bomb = served.upload(zip_bomb(tmp_path / "bomb.zip"), "bomb.zip")
    before = served.reset_peak()
    message = refused(served, "build_gallery", [bomb], "default")
    added = served.peak() - before
    assert "none of the uploaded files is a usable image" in message and "over the 50 MiB limit" in message
    with capsys.disabled():
        print(f"\n1 GiB zip bomb: peak memory +{added / MB:.0f} MB")
    assert added < MEMORY_BUDGET and upload_files(served) == []
    # beside a real image, the bomb is skipped and the rest is used
    mixed = served.upload(zip_bomb(tmp_path / "mixed.zip", 0.25, (GALLERY / "car_0139_cam2.jpg").read_bytes()))
    session = "mixed-zip"
    event, out = served.call("build_gallery", [mixed], "default", session=session)
    assert event == "complete" and out[1].startswith("Gallery of 1 images ready. Skipped: bomb.jpg"), out
    event, out = served.call("identify", served.upload(GALLERY / "car_0139_cam1.jpg"), "default", False,
                             session=session)
    assert event == "complete" and [row[5] for row in out[1]["data"]] == ["car_0139_cam2.jpg"]
    shown = served.http.get(out[2][0]["image"]["url"])  # the match, served from the session's gallery
    assert shown.status_code == 200 and shown.content == (GALLERY / "car_0139_cam2.jpg").read_bytes()
    assert served.call("reset_gallery", session=session) == ("complete", [None, "Using the shipped gallery."])
    assert upload_files(served) == []
    still_serving(served, expected)


def test_refused_uploads_leave_nothing_on_disk(served, expected, tmp_path):
    tiny = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(tiny, "PNG")
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(2001):
            z.writestr(f"car_{i:04d}_cam1.png", tiny.getvalue())
    for _ in range(3):
        message = refused(served, "build_gallery", [served.upload(archive)], "default")
        assert "at most 2000 images" in message
    junk = served.upload(b"not an image at all", "notes.jpg")
    assert "none of the uploaded files" in refused(served, "build_gallery", [junk], "default")
    assert upload_files(served) == []  # nothing of 6,000 refused images stays
    still_serving(served, expected)


def test_a_gallery_of_huge_pngs_browses_in_bounded_memory(served, expected, tmp_path, capsys):
    archive = tmp_path / "huge.zip"
    data = png(7000)
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(5):
            z.writestr(f"car_{i:04d}_cam1.png", data)
    session = "huge-pngs"
    before = served.reset_peak()
    event, out = served.call("build_gallery", [served.upload(archive)], "default", session=session)
    build_added = served.peak() - before
    assert event == "complete" and out[1] == "Gallery of 5 images ready.", out
    assert all(max(Image.open(p).size) <= 1024 for p in upload_files(served))  # kept at display size
    before = served.reset_peak()
    start = time.perf_counter()
    event, (tiles, page, status) = served.call("browse_next", "default", -1, False, session=session)
    seconds, added = time.perf_counter() - start, served.peak() - before
    assert event == "complete" and len(tiles) == 5 and status.startswith("Page 1 of 1 (5 images)")
    with capsys.disabled():
        print(f"\nfive 7000x7000 PNGs: build +{build_added / MB:.0f} MB; a browser page +{added / MB:.0f} MB, "
              f"{seconds:.2f} s")
    assert added < MEMORY_BUDGET and build_added < MEMORY_BUDGET
    served.call("reset_gallery", session=session)
    still_serving(served, expected)


def test_a_session_gallery_goes_when_the_session_expires(served, expected):
    session = "expiring"
    event, out = served.call("build_gallery", [served.upload(GALLERY / "truck_0010_cam2.jpg")], "default",
                             session=session)
    assert event == "complete" and len(upload_files(served)) == 1
    deadline = time.time() + SESSION_TTL + 30
    while upload_files(served) and time.time() < deadline:
        time.sleep(1)
    assert upload_files(served) == []  # removed by the state's delete_callback after RNNHA_SESSION_TTL
    event, out = served.call("identify", served.upload(GALLERY / "car_0139_cam1.jpg"), "default", False,
                             session=session)
    assert event == "complete" and len(out[1]["data"]) == 5  # back on the shipped gallery
    still_serving(served, expected)


def test_upload_size_is_limited(served, expected):
    with pytest.raises(UploadRefused) as refusal:
        served.upload(bytes(21 * MB), "big.jpg")  # RNNHA_MAX_UPLOAD_MB=20 here
    assert refusal.value.status == 413
    still_serving(served, expected)


def test_a_flood_gets_a_clear_busy_answer(served, expected):
    query = served.upload(GALLERY / "car_0139_cam1.jpg")
    results = []

    def one():
        results.append(served.call("compare", query, query, "default", False))

    threads = [threading.Thread(target=one) for _ in range(40)]  # RNNHA_QUEUE_SIZE=8 here
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    complete = [out for event, out in results if event == "complete"]
    busy = [out for event, out in results if event != "complete"]
    assert len(results) == 40 and complete and busy
    assert all("Queue is full" in str(out) for out in busy), busy[:3]
    assert all(out[:2] == complete[0][:2] for out in complete)
    still_serving(served, expected)


def test_the_zerogpu_path_is_taken_with_the_spaces_package(served, expected):
    log = Path(served.env["SPACES_STUB_LOG"]).read_text().splitlines()
    assert {"identify duration=60", "compare duration=60", "build_gallery duration=300"} <= set(log)


def test_a_tampered_cache_is_rebuilt_after_a_restart(served, expected):
    """Last in the module: restarts the app. Leftovers of the previous process are removed too. (Every
    other way a cache can fail to verify, a truncated file included, is tests/test_overlay_gallery.py's.)"""
    from safetensors.torch import load_file, safe_open, save_file

    cache = Path(served.env["RNNHA_CACHE"])
    shipped = str(len(list(GALLERY.glob("*.jpg"))))
    for cached in (cache / "galleries").glob("gallery-*.safetensors"):  # the shipped gallery's cache
        with safe_open(str(cached), "pt") as f:
            metadata = f.metadata()
        if metadata["count"] == shipped:
            break
    assert metadata["count"] == shipped
    served.stop()
    tensors = load_file(str(cached))  # still a valid safetensors file with the right metadata
    tensors["embeddings"] = tensors["embeddings"].flip(0).contiguous()
    save_file(tensors, str(cached), metadata=metadata)
    leftover = cache / "uploads" / "gallery-old" / "car_0001_cam1.jpg"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"left by a killed process")
    orphan = cache / "galleries" / f".{cached.name}.k1ll3d.tmp"
    orphan.write_bytes(b"half a write")
    served.start()
    assert not leftover.exists() and not orphan.exists()
    assert answers(served) == expected  # the cache was rebuilt, not believed
    assert "does not verify (sha256)" in served.log(), served.log()[-2000:]
    still_serving(served, expected)
