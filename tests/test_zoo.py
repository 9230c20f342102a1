"""zoo/ and rnnha/export.py, rnnha/hub.py: folders, the Hub through the real huggingface_hub client
(against tests/hubserver.py on 127.0.0.1), offline cache, plugins, and every way loading can fail."""
from __future__ import annotations

import json
import shutil
import sys
import textwrap
import warnings

import pytest
import torch

from conftest import REPO
from hubserver import HubServer, hub_env
from rnnha import RNNHA, RNNHAConfig
from rnnha.pretrained import ModelInfo, ModelLoadError, load_pretrained, model_card, save_pretrained, sha256_file
from rnnha.hub import HubError
from rnnha.predictor import Predictor
import zoo
from zoo import HubSource, LocalSource, ZooEntry, ZooError, get_entry, list_models, load_model, register_model
from zoo.registry import _ENTRIES

FILES = ("config.json", "model.safetensors", "README.md")


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    config = RNNHAConfig(num_classes=[3, 4], class_names=[["car", "truck", "bus"], list("abcd")],
                         hidden_size=32, input_size=64)
    return RNNHA(config).eval()


@pytest.fixture(scope="module")
def folder(small_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "small"
    card = model_card(small_model.config, "small", {"two-camera": {"mAP": 50.0}}, datasets=["khoa-vehicle-reid"])
    return save_pretrained(small_model, path, info=ModelInfo(threshold=0.5, threshold_source="a test"), card=card)


@pytest.fixture(scope="module")
def images(khoa_pair):
    return list(khoa_pair)


def test_card_says_where_the_model_departs_from_the_paper():
    paper = model_card(RNNHAConfig(), "paper")
    tuned = model_card(RNNHAConfig(attention_pool="sum", neck=True), "tuned")
    assert "Beyond the paper" not in paper
    assert "without Eq. 9's 1/(hw)" in tuned and "BN neck" in tuned


def embed(predictor_or_model, images):
    if isinstance(predictor_or_model, RNNHA):
        predictor_or_model = Predictor(predictor_or_model, device="cpu", dtype=torch.float32)
    return predictor_or_model.embed(images)


@pytest.fixture
def registry():
    saved = dict(_ENTRIES)
    yield
    _ENTRIES.clear()
    _ENTRIES.update(saved)


def test_folder_round_trip_gives_identical_embeddings(small_model, folder, images):
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    predictor = load_model(folder, device="cpu", dtype=torch.float32)
    assert torch.equal(embed(predictor, images), embed(small_model, images))
    assert predictor.info.threshold == 0.5 and predictor.info.threshold_source == "a test"
    assert predictor.class_names(0) == ["car", "truck", "bus"]
    assert not predictor.model.training
    top = predictor.predict(images[:1], topk=2)[0].levels["model"]
    assert len(top) == 2 and top[0][0] in {"car", "truck", "bus"}


def test_neck_and_sum_pool_round_trip(images, tmp_path):
    """The BN neck's running statistics travel with the weights; fp16 export keeps the embedding."""
    torch.manual_seed(1)
    model = RNNHA(RNNHAConfig(num_classes=[3, 4], hidden_size=32, input_size=64, attention_pool="sum", neck=True))
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 64, 64))  # moves the necks' running statistics off their initial values
    model.eval()
    loaded, _ = load_pretrained(save_pretrained(model, tmp_path / "neck", dtype=torch.float16))
    assert loaded.config.attention_pool == "sum" and loaded.config.neck
    torch.testing.assert_close(loaded.head.necks[1].running_var, model.head.necks[1].running_var, rtol=1e-3, atol=0)
    assert not torch.allclose(model.head.necks[1].running_var, torch.ones(32))  # the statistics did move
    cosine = (embed(loaded, images) * embed(model, images)).sum(dim=1)
    assert cosine.min() > 0.999


def test_export_leaves_the_training_only_classifier_out(images, tmp_path):
    torch.manual_seed(2)
    config = RNNHAConfig(num_classes=[3, 4], hidden_size=32, input_size=64, neck=True, aux_classifier=True)
    model = RNNHA(config).eval()
    assert "trained with deep supervision" in model_card(config, "aux")
    loaded, _ = load_pretrained(save_pretrained(model, tmp_path / "aux"))  # strict: nothing extra, nothing missing
    assert not loaded.config.aux_classifier and not any("aux" in k for k in loaded.state_dict())
    assert model.config.aux_classifier  # the model itself is left as it was
    assert torch.equal(embed(loaded, images), embed(model, images))


def test_the_card_parses_with_huggingface_hub(folder):
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "rnnha" and card.data.license == "apache-2.0"
    assert card.data.datasets == ["khoa-vehicle-reid"]
    assert card.data.eval_results[0].metric_type == "mAP" and card.data.eval_results[0].metric_value == 50.0
    assert "vehicle-re-identification" in card.data.tags


def test_default_device_and_precision(folder):
    predictor = load_model(folder)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert predictor.device.type == expected
    if expected == "cpu":
        from rnnha.predictor import cpu_supports_bf16

        assert predictor.dtype == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)


def test_hub_download_then_offline(folder, images, tmp_path, small_model):
    reference = embed(small_model, images)
    with HubServer() as server:
        sha = server.add_repo("rnnha/small", {n: (folder / n).read_bytes() for n in FILES})
        with hub_env(server, tmp_path / "cache") as env:
            predictor = load_model(f"hf-hub:rnnha/small@{sha}", device="cpu", dtype=torch.float32)
            assert torch.equal(embed(predictor, images), reference)
            assert any("/resolve/" in path for _, path in server.requests)
            entry = ZooEntry("hub-small", HubSource("rnnha/small", sha, sha256_file(folder / "model.safetensors")))
            assert torch.equal(embed(load_model_entry(entry), images), reference)

            server.clear_requests()
            server.fail_all = True
            env.set_offline(True)
            again = load_model(f"hf-hub:rnnha/small@{sha}", device="cpu", dtype=torch.float32)
            assert torch.equal(embed(again, images), reference)
            assert embed(load_model_entry(entry), images).equal(reference)
            assert server.requests == []  # served from the cache alone


def load_model_entry(entry):
    register_model(entry, replace=True)
    try:
        return load_model(entry.name, device="cpu", dtype=torch.float32)
    finally:
        _ENTRIES.pop(entry.name, None)


def test_unreachable_hub_and_unknown_repo_are_clear(folder, tmp_path):
    with HubServer() as server:
        with hub_env(server, tmp_path / "cache") as env:
            with pytest.raises(HubError, match="no model repository 'rnnha/nope'"):
                load_model("hf-hub:rnnha/nope")
            server.fail_all = True
            with pytest.raises(HubError, match="could not be reached and it is not in the cache"):
                load_model("hf-hub:rnnha/small")
            env.set_offline(True)
            with pytest.raises(HubError, match="offline mode is on"):
                load_model("hf-hub:rnnha/small")


def test_unknown_names_are_clear():
    with pytest.raises(ZooError, match="unknown model 'no-such-model'.*hf-hub:ORG/NAME"):
        load_model("no-such-model")
    with pytest.raises(ZooError, match="no model folder at"):
        load_model("./missing/folder")
    with pytest.raises(ZooError, match="is not hf-hub:ORG/NAME"):
        load_model("hf-hub:justname")


def copy_folder(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_wrong_sha256_is_refused(folder, registry):
    register_model(ZooEntry("pinned", LocalSource(str(folder), "0" * 64)))
    with pytest.raises(ModelLoadError, match="has sha256 .* expected 0000"):
        load_model("pinned")


def test_truncated_weights_are_refused(folder, tmp_path):
    bad = copy_folder(folder, tmp_path)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a readable safetensors file.*truncated"):
        load_model(bad)


@pytest.mark.parametrize("change, message", [
    ({"hidden_size": 48}, "wrong shapes"),
    ({"attention": False}, "unexpected keys head.transformers"),
    ({"num_classes": [3, 4, 5], "level_names": ["a", "b", "c"], "class_names": None}, "missing keys head.classifiers.2"),
])
def test_config_that_does_not_match_the_weights(folder, tmp_path, change, message):
    bad = copy_folder(folder, tmp_path)
    document = json.loads((bad / "config.json").read_text())
    document["config"].update(change)
    (bad / "config.json").write_text(json.dumps(document))
    with pytest.raises(ModelLoadError, match=message):
        load_pretrained(bad)


def test_missing_or_foreign_config(folder, tmp_path):
    bad = copy_folder(folder, tmp_path)
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="does not describe an RNN-HA model"):
        load_model(bad)
    (bad / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        load_model(bad)


def test_plugin_in_a_site_directory_shows_up(folder, tmp_path, monkeypatch, registry):
    site = tmp_path / "site"
    (site / "rnnha_plugin_demo-0.1.dist-info").mkdir(parents=True)
    (site / "rnnha_plugin_demo-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rnnha-plugin-demo\nVersion: 0.1\n")
    (site / "rnnha_plugin_demo-0.1.dist-info" / "entry_points.txt").write_text(
        "[rnnha.zoo]\ndemo = rnnha_plugin_demo:entries\nbroken = rnnha_plugin_demo:missing_attribute\n")
    (site / "rnnha_plugin_demo.py").write_text(textwrap.dedent(f"""
        from zoo import LocalSource, ZooEntry
        def entries():
            return [ZooEntry("plugin-small", LocalSource({str(folder)!r}), license="apache-2.0")]
    """))
    monkeypatch.syspath_prepend(str(site))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zoo.reload_plugins()
    assert "plugin-small" in list_models()
    assert get_entry("plugin-small").license == "apache-2.0"
    messages = [str(w.message) for w in caught]
    assert any("'broken'" in m and "rnnha-plugin-demo" in m and "skipped" in m for m in messages), messages
    assert load_model("plugin-small", device="cpu").config.num_classes == [3, 4]
    sys.modules.pop("rnnha_plugin_demo", None)


def test_register_model_decorator_and_duplicates(folder, registry):
    @register_model
    def mine():
        return ZooEntry("decorated", LocalSource(str(folder)))

    assert "decorated" in list_models("decor*")
    with pytest.raises(ZooError, match="already registered"):
        register_model(ZooEntry("decorated", LocalSource("/elsewhere")))
    with pytest.raises(ZooError, match="invalid model name"):
        register_model(ZooEntry("bad name", LocalSource(str(folder))))


def _checkpoint(tmp_path, model, **config):
    from rnnha.checkpoint import save_checkpoint

    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    record = {"epoch": 3, "history": [{"epoch": 3, "val": {"mAP": 61.5, "rank1": 55.0, "cam1->cam2": {}}}],
              "config": {"train": [{"kind": "two-camera", "root": "x"}], "val": {"kind": "two-camera"}, **config},
              "model_config": model.config.to_dict()}
    save_checkpoint(tmp_path / "last.safetensors", model, optimizer, scheduler, record)
    return tmp_path / "last.safetensors"


def test_export_cli_round_trip_and_push(small_model, images, tmp_path):
    from huggingface_hub import ModelCard, hf_hub_download

    from rnnha.export import main

    checkpoint = _checkpoint(tmp_path, small_model)
    out = tmp_path / "exported"
    with HubServer() as server, hub_env(server, tmp_path / "cache"):
        assert main([str(checkpoint), str(out), "--push", "rnnha/pushed", "--private"]) == 0
        assert torch.equal(embed(load_model(out, device="cpu", dtype=torch.float32), images),
                           embed(small_model, images))
        card = ModelCard.load(out / "README.md")
        assert {(r.metric_type, r.metric_value) for r in card.data.eval_results} == {("mAP", 61.5), ("rank1", 55.0)}
        assert "Trained for 3 epochs on two-camera with `python -m rnnha.train`" in card.text
        for name in FILES:
            downloaded = hf_hub_download("rnnha/pushed", name)
            assert open(downloaded, "rb").read() == (out / name).read_bytes()
        assert server.repo_exists("rnnha/pushed")
        pushed = load_model("hf-hub:rnnha/pushed", device="cpu", dtype=torch.float32)
        assert torch.equal(embed(pushed, images), embed(small_model, images))


def test_fp16_export_stays_close(small_model, images, tmp_path):
    folder = save_pretrained(small_model, tmp_path / "half", dtype=torch.float16)
    half = embed(load_model(folder, device="cpu", dtype=torch.float32), images)
    assert (half * embed(small_model, images)).sum(1).min() > 0.999


def test_export_calibrates_the_threshold_and_records_zoo_metadata(small_model, tmp_path, khoa_root):
    from rnnha.export import main
    from zoo.entries import _from_folder

    checkpoint = _checkpoint(tmp_path, small_model, init_from="runs/stage1/last.safetensors")
    (tmp_path / "cars.json").write_text(json.dumps({"top1": 80.5, "top5": 95.0, "subset": "holdout", "num_images": 731}))
    out = tmp_path / "shipped"
    assert main([str(checkpoint), str(out), "--dtype", "float16", "--calibrate", "two-camera", str(khoa_root),
                 "--calibrate-list", "val.txt", "--metrics", f"stanford-cars={tmp_path / 'cars.json'}",
                 "--training-data", "Stanford Cars (research use only)", "--description", "test"]) == 0
    document = json.loads((out / "config.json").read_text())
    assert -1 < document["same_vehicle_threshold"] < 1
    assert "102 same-vehicle and 20604 different-vehicle pairs" in document["threshold_source"]
    assert document["metrics"]["stanford-cars"] == {"top1": 80.5, "top5": 95.0}
    assert document["zoo"]["sha256"] == sha256_file(out / "model.safetensors")
    entry = _from_folder("shipped", out)
    assert entry.training_data.startswith("Stanford Cars") and entry.metrics["two-camera"]["mAP"] == 61.5
    predictor = load_model(out, device="cpu")
    assert predictor.info.threshold == document["same_vehicle_threshold"]
    card = (out / "README.md").read_text()
    assert "research use only" in card
    assert ("Trained for 3 epochs on two-camera, starting from the weights of `runs/stage1/last.safetensors`, "
            "with `python -m rnnha.train`") in card


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    from rnnha.io import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left behind


def test_rnnha_from_pretrained_save_pretrained_and_push_to_hub(tmp_path, khoa_pair):
    """The Hub convention on the model class: from_pretrained of the default folder embeds exactly as
    load_model("default"); save_pretrained / push_to_hub / from_pretrained("ORG/NAME") round-trip the
    weights and the typed ModelInfo through the tests' Hub server."""
    from rnnha import RNNHA
    from rnnha.predictor import Predictor
    from zoo import load_model

    folder = REPO / "assets" / "default"
    if not (folder / "config.json").is_file():
        pytest.skip("assets/default (the embedded default model) is missing")
    model = RNNHA.from_pretrained(folder)
    assert model.info.threshold is not None and model.info.license == "other"
    reference = load_model("default", device="cpu", dtype=torch.float32)
    ours = Predictor(model, device="cpu", dtype=torch.float32)
    assert torch.equal(ours.embed(list(khoa_pair)), reference.embed(list(khoa_pair)))

    saved = model.save_pretrained(tmp_path / "copy", dtype=torch.float16)
    twice = model.save_pretrained(tmp_path / "copy2", dtype=torch.float16)  # the same bytes, the same sha256
    assert (saved / "model.safetensors").read_bytes() == (twice / "model.safetensors").read_bytes()
    again = RNNHA.from_pretrained(saved)
    assert again.info.threshold == model.info.threshold and again.info.metrics == model.info.metrics
    assert again.info.sha256 == sha256_file(saved / "model.safetensors")
    with HubServer() as server, hub_env(server, tmp_path / "cache"):
        url = again.push_to_hub("my-org/rnnha-copy", dtype=torch.float16)
        assert "my-org/rnnha-copy" in url
        files = server.repo_files("my-org/rnnha-copy")
        assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
        pulled = RNNHA.from_pretrained("my-org/rnnha-copy")
        pinned = RNNHA.from_pretrained(f"hf-hub:my-org/rnnha-copy@{server.resolve('my-org/rnnha-copy')}")
    import hashlib

    assert files["model.safetensors"] == (saved / "model.safetensors").read_bytes()
    for loaded in (pulled, pinned):  # the same info; its sha256 is that of the bytes pushed
        assert loaded.info == again.info
        assert loaded.info.sha256 == hashlib.sha256(files["model.safetensors"]).hexdigest()
        for name, tensor in again.state_dict().items():
            assert torch.equal(tensor, loaded.state_dict()[name]), name
    with pytest.raises(ModelLoadError, match="no model folder at"):
        RNNHA.from_pretrained(tmp_path / "nothing.safetensors")


def test_model_info_round_trips_and_forgets_measurements_of_changed_weights(tmp_path, small_model):
    from rnnha import RNNHA

    info = ModelInfo(threshold=0.4, threshold_source="pairs", metrics={"veri": {"mAP": 50.0}}, license="other",
                     training_data="some data", tags=["a"], sha256="ab" * 32)
    assert ModelInfo.from_document(info.to_document()) == info
    assert ModelInfo.from_document(ModelInfo().to_document()) == ModelInfo() and ModelInfo().to_document() == {}
    with pytest.raises(ValueError, match="tags must be a list"):
        ModelInfo.from_document({"zoo": {"tags": "abc"}})
    folder = save_pretrained(small_model, tmp_path / "a", info=info)
    model = RNNHA.from_pretrained(folder)
    assert RNNHA.from_pretrained(model.save_pretrained(tmp_path / "same")).info.threshold == 0.4
    with torch.no_grad():  # fine-tuned: the threshold and figures were measured on other weights
        next(model.head.parameters()).add_(0.1)
    changed = RNNHA.from_pretrained(model.save_pretrained(tmp_path / "changed")).info
    assert (changed.threshold, changed.metrics, changed.license, changed.training_data) == (None, {}, "other", "some data")


@pytest.mark.parametrize("text, message", [
    ("./missing", "no model folder at"), ("models/missing", "no model folder at"),  # models/ exists here
    ("x.safetensors", "no model folder at"), ("not a repo", "neither a model folder nor a Hub repo id"),
])
def test_from_pretrained_says_what_a_string_is_not(text, message, tmp_path, monkeypatch):
    from rnnha import RNNHA

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelLoadError, match=message):
        RNNHA.from_pretrained(text)
