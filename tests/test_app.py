"""app.py in-process: every endpoint through gradio_client on real images, and every bad input the
issue lists, each answered with a clear message while the app keeps serving."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

GALLERY = REPO / "assets" / "gallery"


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


def identify(client, path):
    return client.predict(handle_file(str(path)), api_name="/identify")


def test_named_endpoints(client):
    assert {"/identify", "/compare"} <= set(client.view_api(return_format="dict")["named_endpoints"])


def test_identify_gives_a_car_model_and_five_sorted_matches(client):
    label, matches, images, overlay, note, path = identify(client, GALLERY / "car_0139_cam1.jpg")
    assert label["label"] and len(label["confidences"]) == 5
    # the three-level default's path, calibrated: the type first ("car 99 % → ..."), then the car model,
    # whose top-5 the label shows once the type is sure; the headline is the deepest level it is sure of
    top = label["confidences"][0]
    assert re.match(r"\*\*.+\*\* · car \d+ % → ", path) and "not calibrated" not in path, path
    step = f"{top['label']} {100 * top['confidence']:.0f} %"
    assert path.endswith(step if top["confidence"] >= 0.5 else step + " (not sure)"), path
    assert path.startswith(f"**{top['label']}** · " if top["confidence"] >= 0.5 else "**car** · "), path
    confidences = [c["confidence"] for c in label["confidences"]]
    assert confidences == sorted(confidences, reverse=True) and 0 < confidences[0] <= 1
    rows = matches["data"]
    similarities = [row[1] for row in rows]
    assert len(rows) == 5 and similarities == sorted(similarities, reverse=True)
    assert all(-1 <= s <= 1 for s in similarities)
    assert all(row[5] != "car_0139_cam1.jpg" for row in rows)  # the query itself is not a match
    assert {row[4] for row in rows} <= {"yes", "no"} and "car_0139" in note
    assert len(images) == 5
    with Image.open(overlay) as shown, Image.open(GALLERY / "car_0139_cam1.jpg") as original:
        assert shown.size == original.size


def test_compare_ranks_one_vehicle_above_two(client):
    same = client.predict(handle_file(str(GALLERY / "car_0139_cam1.jpg")),
                          handle_file(str(GALLERY / "car_0139_cam2.jpg")), api_name="/compare")
    different = client.predict(handle_file(str(GALLERY / "car_0139_cam1.jpg")),
                               handle_file(str(GALLERY / "truck_0010_cam2.jpg")), api_name="/compare")
    assert -1 <= different[0] < same[0] <= 1
    assert same[1].split(" (")[0] in {"same vehicle", "different vehicles"} and "Threshold" in same[4]
    # the verdict with its probability, and the pair among the default's calibration pairs
    assert re.search(r"\(probability of the same vehicle \d+ %\)", same[1]) and same[5] is not None
    with Image.open(same[5]) as picture:
        assert picture.width > 200 and picture.height > 100
    with Image.open(same[2]) as a, Image.open(GALLERY / "car_0139_cam1.jpg") as original:
        assert a.size == original.size


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def photo() -> Image.Image:
    return Image.open(GALLERY / "car_0139_cam1.jpg").convert("RGB")


def good_inputs() -> dict[str, bytes]:
    p = photo()
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [p, p.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "grey.png": encoded(p.convert("L"), "PNG"),
        "rgba.png": encoded(p.convert("RGBA"), "PNG"),
        "cmyk.jpg": encoded(p.convert("CMYK"), "JPEG"),
        "deep.png": encoded(Image.fromarray(np.asarray(p.convert("L"), dtype=np.uint16) * 257), "PNG"),
        "rotated.jpg": encoded(p, "JPEG", exif=exif),
        "animated.gif": encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
    }


def bad_inputs() -> dict[str, tuple[bytes, str]]:
    jpeg = encoded(photo(), "JPEG")
    return {
        "notes.txt": (b"this is not an image", "not an image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "empty.jpg": (b"", "empty"),
        "dot.png": (encoded(Image.new("RGB", (1, 1)), "PNG"), "1x1 pixels"),
        "bomb.png": (encoded(Image.new("1", (20000, 20000)), "PNG"), "too large to decode safely"),
    }


@pytest.mark.parametrize("name", list(good_inputs()))
def test_unusual_but_valid_images_are_identified(client, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(good_inputs()[name])
    label, matches, _, overlay, *_ = identify(client, path)
    assert len(matches["data"]) == 5
    with Image.open(overlay) as shown:
        expected = (photo().height, photo().width) if name == "rotated.jpg" else photo().size
        assert shown.size == expected  # EXIF-rotated photos are shown upright


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_bad_inputs_get_a_clear_message_and_the_app_keeps_serving(client, tmp_path, name):
    data, message = bad_inputs()[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(AppError, match=message):
        identify(client, path)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), handle_file(str(GALLERY / "car_0139_cam2.jpg")), api_name="/compare")
    assert len(identify(client, GALLERY / "truck_0001_cam1.jpg")[1]["data"]) == 5  # still serving


def test_missing_image_is_a_clear_message(client):
    with pytest.raises(AppError, match="No image"):
        client.predict(None, api_name="/identify")


def test_own_gallery_from_a_zip(client, tmp_path):
    import zipfile

    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("car_0139_cam2.jpg", "truck_0010_cam2.jpg", "truck_0001_cam2.jpg"):
            z.write(GALLERY / name, f"nested/{name}")
        z.writestr("readme.txt", "not an image")
    note = client.predict([handle_file(str(archive))], api_name="/build_gallery")
    assert "Gallery of 3 images ready" in note
    try:
        rows = identify(client, GALLERY / "car_0139_cam1.jpg")[1]["data"]
        assert {row[5] for row in rows} == {"car_0139_cam2.jpg", "truck_0010_cam2.jpg", "truck_0001_cam2.jpg"}
    finally:
        client.predict(api_name="/reset_gallery")


def test_python_app_py_serves_on_the_port_spaces_set(tmp_path, gallery_cache):
    """The README's command as a Space runs it: GRADIO_SERVER_NAME / _PORT honoured, the queue on,
    and nothing written into the repository (only under RNNHA_CACHE and Gradio's temp folder)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import _free_port, seed_cache

    seed_cache(tmp_path / "cache", gallery_cache)
    before = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True, text=True).stdout
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "RNNHA_CACHE": str(tmp_path / "cache"), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
           "MPLCONFIGDIR": str(tmp_path / "mpl"), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    config = response.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.time() < deadline, "app.py did not start within 180 s"
                time.sleep(1)
        assert json.loads(config)["enable_queue"] is True
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert len(client.predict(handle_file(str(GALLERY / "car_0139_cam1.jpg")), api_name="/identify")[1]["data"]) == 5
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    after = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True, text=True).stdout
    assert after == before
    assert any((tmp_path / "cache").rglob("gallery-*.safetensors"))


def test_attention_browser_and_gallery_reset_endpoints(client):
    # a client is one session: a gallery built by another test is this session's gallery until reset
    client.predict([handle_file(str(GALLERY / "car_0139_cam2.jpg"))], api_name="/build_gallery")
    assert "Page 1 of 1 (1 images)" in client.predict("default", 0, False, api_name="/browse_next")[2]
    assert client.predict(api_name="/reset_gallery") == "Using the shipped gallery."
    tiles, page, status = client.predict("default", 0, False, api_name="/browse_next")
    assert page == 1 and "Page 2 of 17 (204 images)" in status and len(tiles) == 12
    assert tiles[0]["caption"] == "car_0062_cam1.jpg"
    with Image.open(tiles[0]["image"]) as first:
        assert first.size[0] > 16
    raw_tiles, page, _ = client.predict("default", 1, True, api_name="/browse_previous")
    assert page == 0 and len(raw_tiles) == 12
    _, page, _ = client.predict("default", 0, False, api_name="/browse_previous")
    assert page == 0  # clamped at the first page


def test_an_operator_may_allow_hub_models(monkeypatch, tmp_path):
    """RNNHA_ALLOW_MODELS (off by default) lets clients name more models, e.g. any hf-hub:ORG/* repo;
    loaded through the real huggingface_hub client from the tests' Hub server."""
    import gradio as gr
    import torch

    import app
    from hubserver import HubServer, hub_env
    from rnnha import RNNHA, RNNHAConfig
    from rnnha.pretrained import save_pretrained

    torch.manual_seed(0)
    model = RNNHA(RNNHAConfig(num_classes=[3, 4], hidden_size=32, input_size=64)).eval()
    folder = save_pretrained(model, tmp_path / "small")
    a, b = ({"path": str(GALLERY / name)} for name in ("car_0139_cam1.jpg", "car_0139_cam2.jpg"))
    with HubServer() as server:
        sha = server.add_repo("org/small", {n: (folder / n).read_bytes() for n in ("config.json", "model.safetensors")})
        with hub_env(server, tmp_path / "hub"):
            name = f"hf-hub:org/small@{sha}"
            with pytest.raises(gr.Error, match="Unknown model"):
                app.compare(a, b, name, False)
            assert server.requests == []  # off by default: the Hub is never asked
            monkeypatch.setattr(app, "ALLOW_MODELS", ["hf-hub:org/*"])
            similarity, verdict, *_ = app.compare(a, b, name, False)
            assert -1 <= similarity <= 1 and verdict == "no calibrated threshold for this model"
            with pytest.raises(gr.Error, match="Unknown model"):
                app.compare(a, b, "hf-hub:other/small", False)
            with pytest.raises(gr.Error, match="could not be loaded; try another one") as missing:
                app.compare(a, b, "hf-hub:org/missing", False)
            assert str(tmp_path) not in str(missing.value) and "127.0.0.1" not in str(missing.value)


def test_compare_embeds_no_gallery(monkeypatch, khoa_pair):
    """Compare does only the work its answer needs: the two images, no gallery (a cold start used to
    embed the whole shipped gallery before the first comparison)."""
    from pathlib import Path

    import app

    monkeypatch.setattr(app, "_gallery", lambda *args: pytest.fail("compare built a gallery"))
    monkeypatch.setattr(app, "_upload", lambda image: (Path(image), Path(image).name))
    similarity, verdict, overlay_a, overlay_b, note, picture = app.compare(str(khoa_pair[0]), str(khoa_pair[1]), "default")
    assert verdict.startswith("same vehicle (probability") and 0 < similarity <= 1 and "Threshold" in note
