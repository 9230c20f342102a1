"""rnnha/data: every format on real files (VehicleID's label files, real images in VeRi / VehicleID
layouts built here, the two-camera set, Stanford Cars), label spaces, samplers, combined datasets."""
from __future__ import annotations

import shutil
from collections import Counter

import pytest
import torch
from PIL import Image

from rnnha import IGNORE_INDEX, RNNHAConfig
from rnnha.data import DataError, DatasetSpec, LabelSpace, PKSampler, ReidDataset, load_dataset, load_specs
from rnnha.data.vehicleid import read_pairs
from rnnha.transforms import eval_transform


def test_vehicleid_label_files_are_complete(vehicleid_root):
    pairs = read_pairs(vehicleid_root / "attribute" / "img2vid.txt")
    assert len(pairs) == 221_567
    assert len({vehicle for _, vehicle in pairs}) == 26_328
    models = read_pairs(vehicleid_root / "attribute" / "model_attr.txt")
    assert len({vehicle for vehicle, _ in models}) == 10_309


def test_vehicleid_sample_images_load_with_their_ids(vehicleid_root):
    samples = load_dataset("vehicleid", vehicleid_root, split="all", skip_missing=True)
    images = sorted((vehicleid_root / "image").glob("*.jpg"))
    assert len(images) == 78 and len(samples) == 77  # one image is not listed in img2vid.txt
    ids = dict(read_pairs(vehicleid_root / "attribute" / "img2vid.txt"))
    for s in samples:
        assert s.labels["vehicle"] == ids[s.path.stem]
    assert len({s.labels["vehicle"] for s in samples}) == 6
    models = dict(read_pairs(vehicleid_root / "attribute" / "model_attr.txt"))
    assert all(s.labels.get("model") == models.get(s.labels["vehicle"]) for s in samples)
    for path in images:
        Image.open(path).convert("RGB").load()
    with pytest.raises(DataError, match="missing.*skip_missing=True"):
        load_dataset("vehicleid", vehicleid_root, split="all")


def _khoa(khoa_root, names):
    files = {p.name: p for p in (khoa_root / "images").rglob("*.jpg")}
    return [files[n] for n in names]


@pytest.fixture
def veri_folder(tmp_path, khoa_root):
    """A VeRi-776 layout from real crops: 3 vehicles, 3 cameras, GB2312 XML as the official files."""
    root = tmp_path / "VeRi"
    names = (khoa_root / "val.txt").read_text().split()[:6]
    sources = _khoa(khoa_root, names)
    plan = {"train": [("0001", 1), ("0001", 2), ("0002", 1), ("0002", 3)],
            "test": [("0005", 1), ("0005", 2), ("0006", 2), ("0006", 3)],
            "query": [("0005", 3), ("0006", 1)]}
    i = 0
    for split, items in plan.items():
        (root / f"image_{split}").mkdir(parents=True)
        lines = []
        for vid, cam in items:
            name = f"{vid}_c{cam:03d}_{1000 + i:08d}_0.jpg"
            shutil.copy(sources[i % len(sources)], root / f"image_{split}" / name)
            lines.append(name)
            i += 1
        (root / f"name_{split}.txt").write_text("\n".join(lines) + "\n")
    for xml_name, splits in (("train_label.xml", ["train"]), ("test_label.xml", ["test", "query"])):
        items = "".join(
            f'<Item imageName="{n}" vehicleID="{n[:4]}" cameraID="c{n[6:9]}" colorID="{k % 10 + 1}" '
            f'typeID="{int(n[:4]) % 9 + 1}" />\n'
            for k, n in enumerate(n for s in splits for n in (root / f"name_{s}.txt").read_text().split()))
        text = (f'<?xml version="1.0" encoding="gb2312"?>\n<TrainingImages Version="1.0">\n'
                f'<!-- 车辆 -->\n<Items number="{items.count("<Item")}">\n{items}</Items>\n</TrainingImages>\n')
        (root / xml_name).write_bytes(text.encode("gb2312"))
    return root


def test_veri_layout_loads(veri_folder):
    train = load_dataset("veri", veri_folder, split="train")
    assert [(s.labels["vehicle"], s.camera) for s in train] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "3")]
    assert train[0].labels["type"] == "2" and train[0].path.is_file()
    query = load_dataset("veri", veri_folder, split="query")
    assert [s.camera for s in query] == ["3", "1"] and query[1].labels["vehicle"] == "6"
    with pytest.raises(DataError, match="split must be one of"):
        load_dataset("veri", veri_folder, split="validation")
    with pytest.raises(DataError, match="split 'val' needs val_fraction > 0"):
        load_dataset("veri", veri_folder, split="val")
    with pytest.raises(DataError, match="at least 4 training vehicles"):  # this folder trains 2
        load_dataset("veri", veri_folder, split="val", val_fraction=0.5)


def test_veri_protocol_runs_on_the_layout(veri_folder):
    from rnnha import RNNHA
    from rnnha.evaluate import evaluate_veri
    from rnnha.predictor import Predictor

    torch.manual_seed(0)
    model = RNNHA(RNNHAConfig(pretrained_backbone=True, num_classes=[9, 2], level_names=["type", "vehicle"],
                              hidden_size=64, input_size=96))
    result = evaluate_veri(Predictor(model, device="cpu"), veri_folder)
    assert result["num_valid_queries"] == 2 and 0 < result["mAP"] <= 100
    assert 0 < result["veri_matlab_mAP"] <= 100


def test_vehicleid_layout_loads(tmp_path, khoa_root, vehicleid_root):
    root = tmp_path / "VehicleID"
    (root / "image").mkdir(parents=True)
    (root / "attribute").mkdir()
    (root / "train_test_split").mkdir()
    sources = sorted((vehicleid_root / "image").glob("*.jpg"))[:6]
    rows = [(f"{i:07d}", str(100 + i // 2)) for i in range(6)]  # 3 vehicles x 2 images
    for (image, _), source in zip(rows, sources):
        shutil.copy(source, root / "image" / f"{image}.jpg")
    (root / "attribute" / "img2vid.txt").write_text("".join(f"{a} {b}\n" for a, b in rows))
    (root / "attribute" / "model_attr.txt").write_text("100 7\n102 9\n")  # vehicle 101 unlabelled
    (root / "train_test_split" / "train_list.txt").write_text("".join(f"{a} {b}\n" for a, b in rows[:4]))
    (root / "train_test_split" / "test_list_800.txt").write_text("".join(f"{a} {b}\n" for a, b in rows[4:]))
    train = load_dataset("vehicleid", root, split="train")
    assert [s.labels.get("model") for s in train] == ["7", "7", None, None]
    assert len(load_dataset("vehicleid", root, split="train", drop_unlabelled=True)) == 2
    test = load_dataset("vehicleid", root, split="test800")
    assert [s.labels["vehicle"] for s in test] == ["102", "102"] and test[0].labels["model"] == "9"


def test_two_camera_lists(khoa_root):
    train = load_dataset("two-camera", khoa_root, list_file="train.txt")
    val = load_dataset("two-camera", khoa_root, list_file="val.txt")
    assert len(train) == 810 and len(val) == 204
    train_ids, val_ids = {s.labels["vehicle"] for s in train}, {s.labels["vehicle"] for s in val}
    assert len(train_ids) == 405 and len(val_ids) == 102 and not train_ids & val_ids
    assert Counter(s.camera for s in val) == {"1": 102, "2": 102}
    assert {s.labels["type"] for s in train} == {"car", "motorcycle", "truck", "bus"}
    with pytest.raises(DataError, match="list file .* is missing"):
        load_dataset("two-camera", khoa_root, list_file="test.txt")


def test_stanford_cars_holdout_is_a_deterministic_part_of_every_class(cars_root):
    every = load_dataset("stanford-cars", cars_root)
    kept = load_dataset("stanford-cars", cars_root, subset="train")
    held = load_dataset("stanford-cars", cars_root, subset="holdout")
    assert len(every) == 7311 and len(kept) + len(held) == 7311
    assert not {s.path for s in kept} & {s.path for s in held}
    assert len({s.labels["model"] for s in held}) == 196 and 600 < len(held) < 900
    assert held == load_dataset("stanford-cars", cars_root, subset="holdout")
    assert "fine" not in every[0].labels and "vehicle" not in every[0].labels


def test_generic_csv(tmp_path, khoa_pair):
    shutil.copy(khoa_pair[0], tmp_path / "a.jpg")
    (tmp_path / "data.csv").write_text("path,vehicle,camera,type,model\n"
                                       "a.jpg,17,2,car,Audi TT\n"
                                       "a.jpg,17,3,car,\n"
                                       "a.jpg,,,truck,\n")
    samples = load_dataset("csv", tmp_path / "data.csv")
    assert samples[0].labels == {"vehicle": "17", "type": "car", "model": "Audi TT"}
    assert samples[1].camera == "3" and "model" not in samples[1].labels
    assert samples[2].labels == {"type": "truck"} and samples[2].camera is None
    (tmp_path / "bad.csv").write_text("file,vehicle\nx.jpg,1\n")
    with pytest.raises(DataError, match="needs a 'path' column"):
        load_dataset("csv", tmp_path / "bad.csv")


def test_combined_datasets_keep_levels_apart(khoa_root, cars_root):
    specs = [DatasetSpec("two-camera", str(khoa_root), {"list_file": "val.txt"},
                         rename={"type": "model"}, ignore={"model": ["car"]}),
             DatasetSpec("stanford-cars", str(cars_root), {"subset": "holdout"})]
    samples = load_specs(specs)
    space = LabelSpace.from_samples(samples, ["model", "vehicle"])
    assert {"motorcycle", "truck", "Audi TTS Coupe 2012"} <= set(space.classes["model"])
    assert "car" not in space.classes["model"]
    assert all(v.startswith("two-camera0/") for v in space.classes["vehicle"])
    dataset = ReidDataset(samples, space, eval_transform(RNNHAConfig(input_size=64)))
    car = next(i for i, s in enumerate(samples) if s.labels.get("vehicle", "").endswith("car_0139"))
    assert dataset.targets[car, 0] == IGNORE_INDEX and dataset.targets[car, 1] >= 0
    stanford = len(samples) - 1
    assert dataset.targets[stanford, 1] == IGNORE_INDEX and dataset.targets[stanford, 0] >= 0
    image, labels, camera = dataset[car]
    assert image.shape == (3, 64, 64) and camera >= 0
    twice = load_specs([DatasetSpec("two-camera", str(khoa_root), {"list_file": "val.txt"}, repeat=2)])
    assert len(twice) == 2 * 204 and twice[:204] == twice[204:]


def test_three_levels_from_two_datasets(khoa_root, cars_root):
    """The three-level default's data: vehicle class from the two-camera type and, for Stanford Cars
    (every image a car), from `labels`; car model from Stanford Cars only; identity from two-camera."""
    specs = [DatasetSpec("two-camera", str(khoa_root), {"list_file": "train.txt"}, rename={"type": "class"}),
             DatasetSpec("stanford-cars", str(cars_root), {"subset": "holdout"}, labels={"class": "car"})]
    samples = load_specs(specs)
    space = LabelSpace.from_samples(samples, ["class", "model", "vehicle"])
    assert space.classes["class"] == ["bus", "car", "motorcycle", "truck"]
    assert len(space.classes["model"]) == 196 and "truck" not in space.classes["model"]
    stanford = [s for s in samples if "model" in s.labels]
    assert len(stanford) == 742 and all(s.labels["class"] == "car" and "vehicle" not in s.labels for s in stanford)
    assert {s.labels["class"] for s in samples if "vehicle" in s.labels} == {"bus", "car", "motorcycle", "truck"}
    with pytest.raises(DataError, match=r"labels: \['class'\] are levels this dataset labels itself"):
        load_specs([DatasetSpec("two-camera", str(khoa_root), {"list_file": "val.txt"}, rename={"type": "class"},
                                labels={"class": "car"})])


def test_calibration_parts_are_never_trained_on(khoa_root, cars_root):
    """part / subset "calibration" (calibration_fraction 0.1) and "train" split the training data: disjoint,
    together all of it, whole vehicles on the two-camera side, every type and car model represented; the
    Stanford Cars holdout is the same as without a calibration part."""
    from rnnha.data import load_dataset

    every = load_dataset("two-camera", khoa_root, list_file="train.txt")
    train, calibration = (load_dataset("two-camera", khoa_root, list_file="train.txt", part=part,
                                       calibration_fraction=0.1) for part in ("train", "calibration"))
    assert sorted(s.path for s in train + calibration) == sorted(s.path for s in every)
    vehicles = [{s.labels["vehicle"] for s in part} for part in (train, calibration)]
    assert not vehicles[0] & vehicles[1] and {s.labels["type"] for s in calibration} == {"bus", "car", "motorcycle", "truck"}
    assert 0.08 < len(vehicles[1]) / (len(vehicles[0]) + len(vehicles[1])) < 0.13
    old_train = load_dataset("stanford-cars", cars_root, subset="train")
    cars = {part: load_dataset("stanford-cars", cars_root, subset=part, calibration_fraction=0.1)
            for part in ("train", "calibration", "holdout")}
    assert sorted(s.path for s in cars["train"] + cars["calibration"]) == sorted(s.path for s in old_train)
    assert not {s.path for s in cars["calibration"]} & {s.path for s in cars["holdout"]}
    assert cars["holdout"] == load_dataset("stanford-cars", cars_root, subset="holdout")
    assert len({s.labels["model"] for s in cars["calibration"]}) == 196
    with pytest.raises(DataError, match="needs 0 < calibration_fraction < 1"):
        load_dataset("stanford-cars", cars_root, subset="calibration")
    with pytest.raises(DataError, match="calibration_fraction 0.1 sets images aside only from part/subset 'train'"):
        load_dataset("stanford-cars", cars_root, calibration_fraction=0.1)  # subset all: it would train on them
    with pytest.raises(DataError, match="part must be all, train or calibration"):
        load_dataset("two-camera", khoa_root, part="val")


def test_pk_sampler_batches_identities():
    identities = [i // 3 for i in range(30)] + [IGNORE_INDEX] * 5  # 10 ids x 3 images, 5 unlabelled
    sampler = PKSampler(identities, p=4, k=2, seed=1)
    order = list(sampler)
    assert len(order) == len(sampler) == 2 * 4 * 2
    for b in range(0, len(order), 8):
        batch = [identities[i] for i in order[b:b + 8]]
        assert sorted(Counter(batch).values()) == [2, 2, 2, 2]
    assert list(PKSampler(identities, 4, 2, seed=1)) == order
    sampler.set_epoch(1)
    assert list(sampler) != order
    ranks = [set(PKSampler(identities, 2, 2, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    assert not {identities[i] for i in ranks[0]} & {identities[i] for i in ranks[1]}


def test_unknown_kind_and_bad_options(khoa_root):
    with pytest.raises(DataError, match="unknown dataset kind 'market'"):
        load_dataset("market", khoa_root)
    with pytest.raises(DataError, match="bad options"):
        load_dataset("two-camera", khoa_root, split="train")


def test_a_new_dataset_kind_is_one_registration(khoa_root, capsys, monkeypatch):
    """A kind registered in one place is loadable, scored by `rnnha.evaluate` and named in its help."""
    from rnnha import RNNHA
    from rnnha.data import DATASET_KINDS, DatasetKind, evaluate_dataset, get_dataset, register_dataset
    from rnnha.evaluate import main
    from rnnha.predictor import Predictor

    def load(root, vehicles: int = 3):
        return [s for s in load_dataset("two-camera", root, list_file="val.txt")][: 2 * vehicles]

    def evaluate(predictor, root, flip=False, vehicles: int = 3):
        from rnnha.data.two_camera import evaluate_samples

        return evaluate_samples(predictor, load(root, vehicles), flip)

    monkeypatch.delitem(DATASET_KINDS, "toy", raising=False)
    register_dataset(DatasetKind("toy", load, evaluate, protocol="three vehicles, both directions"))
    try:
        assert len(load_dataset("toy", khoa_root, vehicles=2)) == 4
        with pytest.raises(DataError, match="bad options.*it takes vehicles"):
            load_dataset("toy", khoa_root, list_file="val.txt")
        with pytest.raises(DataError, match="already registered"):
            register_dataset(DatasetKind("toy", load, evaluate, protocol=""))
        model = RNNHA(RNNHAConfig(num_classes=[4, 5], level_names=["type", "vehicle"], hidden_size=16,
                                  input_size=64, pretrained_backbone=True))
        result = evaluate_dataset(Predictor(model, device="cpu"), "toy", khoa_root)
        assert result["cam1->cam2"]["num_queries"] == 3 and get_dataset("toy").score(result) == result["mAP"]
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "toy" in capsys.readouterr().out
    finally:
        DATASET_KINDS.pop("toy", None)


def test_veri_validation_holds_out_training_vehicles(tmp_path, khoa_root):
    """split "val" is the held-out vehicles' training images, split "train" the rest: disjoint, complete,
    and the same for a seed."""
    import layouts

    layouts.write_veri(tmp_path / "VeRi", khoa_root, train_vehicles=20)
    everything = load_dataset("veri", tmp_path / "VeRi", split="train")
    train = load_dataset("veri", tmp_path / "VeRi", split="train", val_fraction=0.1)
    val = load_dataset("veri", tmp_path / "VeRi", split="val", val_fraction=0.1)
    vehicles = {s.labels["vehicle"] for s in val}
    assert len(vehicles) == 2 and not vehicles & {s.labels["vehicle"] for s in train}
    assert sorted(map(str, train + val)) == sorted(map(str, everything))
    assert val == load_dataset("veri", tmp_path / "VeRi", split="val", val_fraction=0.1)
    assert {s.labels["vehicle"] for s in load_dataset("veri", tmp_path / "VeRi", split="val", val_fraction=0.1,
                                                      seed=1)} != vehicles
