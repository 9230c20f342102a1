"""Miniature datasets in the official layouts, written from real images in ../shared/data, for running
every recipe end to end: VeRi-776, PKU VehicleID, the two-camera folder and Stanford Cars."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

from PIL import Image, ImageOps

TYPE_IDS = {"car": 1, "truck": 2, "bus": 3, "motorcycle": 4}


def _khoa_views(khoa_root: Path, list_name: str, vehicles: int) -> list[tuple[str, Path, Path]]:
    """(type, view 1, view 2) of the first `vehicles` vehicles of a two-camera list file."""
    files = {p.name: p for p in (khoa_root / "images").rglob("*.jpg")}
    names = (khoa_root / list_name).read_text().split()
    by_vehicle: dict[str, list[str]] = {}
    for name in names:
        by_vehicle.setdefault(name.rsplit("_", 1)[0], []).append(name)
    out = []
    for vehicle, views in list(by_vehicle.items())[:vehicles]:
        first, second = sorted(views)[:2]
        out.append((vehicle.split("_")[0], files[first], files[second]))
    return out


def write_veri(root: Path, khoa_root: Path, train_vehicles: int = 8, test_vehicles: int = 4) -> dict:
    """VeRi-776: image_{train,query,test}/, name_*.txt, train_label.xml and test_label.xml declared GB2312.

    Each test vehicle has a query (its first view, camera 1) and two gallery images: its second view
    (camera 2) and the first view mirrored (camera 1: same camera as the query, so junk)."""
    plan: dict[str, list[tuple[int, int, Path, bool]]] = {"train": [], "query": [], "test": []}
    types = {}
    for i, (kind, a, b) in enumerate(_khoa_views(khoa_root, "train.txt", train_vehicles)):
        vid = 1 + i
        types[vid] = TYPE_IDS[kind]
        plan["train"] += [(vid, 1, a, False), (vid, 2, b, False)]
    for i, (kind, a, b) in enumerate(_khoa_views(khoa_root, "val.txt", test_vehicles)):
        vid = 500 + i
        types[vid] = TYPE_IDS[kind]
        plan["query"].append((vid, 1, a, False))
        plan["test"] += [(vid, 2, b, False), (vid, 1, a, True)]
    frame = 0
    for split, items in plan.items():
        (root / f"image_{split}").mkdir(parents=True)
        names = []
        for vid, cam, source, mirror in items:
            name = f"{vid:04d}_c{cam:03d}_{frame:08d}_0.jpg"
            frame += 100
            if mirror:
                ImageOps.mirror(Image.open(source).convert("RGB")).save(root / f"image_{split}" / name, quality=95)
            else:
                shutil.copy(source, root / f"image_{split}" / name)
            names.append(name)
        (root / f"name_{split}.txt").write_text("\n".join(names) + "\n")
    for xml_name, splits in (("train_label.xml", ["train"]), ("test_label.xml", ["test", "query"])):
        items = "".join(
            f'<Item imageName="{n}" vehicleID="{n[:4]}" cameraID="c{n[6:9]}" colorID="1" '
            f'typeID="{types[int(n[:4])]}" />\n'
            for s in splits for n in (root / f"name_{s}.txt").read_text().split())
        text = (f'<?xml version="1.0" encoding="gb2312"?>\n<TrainingImages Version="1.0">\n'
                f'<!-- 车辆 -->\n<Items number="{items.count("<Item")}">\n{items}</Items>\n</TrainingImages>\n')
        (root / xml_name).write_bytes(text.encode("gb2312"))
    return {"train_images": len(plan["train"]), "queries": len(plan["query"]), "gallery": len(plan["test"])}


def write_vehicleid(root: Path, vehicleid_root: Path) -> dict:
    """PKU VehicleID: image/, attribute/img2vid.txt and model_attr.txt, train_test_split/train_list.txt
    and test_list_{800,1600,2400}.txt, from the real sample images with their real vehicle ids.

    The sample's vehicles are split: 1 and 6 (12 of its images) train, 3, 4 and 0 test. Only vehicle 1
    has a car model in VehicleID's own model_attr.txt; 6, 3 and 4 are given made-up models so that
    `drop_unlabelled` keeps two training vehicles (0 stays unlabelled, as most VehicleID vehicles are)."""
    from rnnha.data.vehicleid import read_pairs

    ids = dict(read_pairs(vehicleid_root / "attribute" / "img2vid.txt"))
    real_models = dict(read_pairs(vehicleid_root / "attribute" / "model_attr.txt"))
    images = sorted(p for p in (vehicleid_root / "image").glob("*.jpg") if p.stem in ids)
    by_vehicle: dict[str, list[str]] = {}
    for path in images:
        by_vehicle.setdefault(ids[path.stem], []).append(path.stem)
    train = by_vehicle["1"] + by_vehicle["6"][:12]
    tests = {800: ["3", "4"], 1600: ["3", "4", "0"], 2400: ["3", "4", "0"]}
    (root / "image").mkdir(parents=True)
    (root / "attribute").mkdir()
    (root / "train_test_split").mkdir()
    used = set(train) | {image for vehicles in tests.values() for v in vehicles for image in by_vehicle[v]}
    for stem in sorted(used):
        shutil.copy(vehicleid_root / "image" / f"{stem}.jpg", root / "image" / f"{stem}.jpg")
    (root / "attribute" / "img2vid.txt").write_text("".join(f"{s} {ids[s]}\n" for s in sorted(used)))
    models = {"1": real_models["1"], "6": "900", "3": "901", "4": "900"}
    (root / "attribute" / "model_attr.txt").write_text("".join(f"{v} {m}\n" for v, m in models.items()))
    (root / "train_test_split" / "train_list.txt").write_text("".join(f"{s} {ids[s]}\n" for s in train))
    for size, vehicles in tests.items():
        lines = [f"{s} {v}\n" for v in vehicles for s in by_vehicle[v]]
        (root / "train_test_split" / f"test_list_{size}.txt").write_text("".join(lines))
    return {"train_images": len(train), "test_vehicles": {k: len(v) for k, v in tests.items()}}


def write_two_camera(root: Path, khoa_root: Path, train_vehicles: int = 10, val_vehicles: int = 6) -> dict:
    """The two-camera layout: <type>_<id>_cam<k>.jpg images under images/, train.txt and val.txt. The
    train slice holds every type the real list has (the default recipe maps types onto car models)."""
    (root / "images").mkdir(parents=True)
    lists = {}
    for list_name, count in (("train.txt", train_vehicles), ("val.txt", val_vehicles)):
        views = _khoa_views(khoa_root, list_name, 10_000)
        chosen, seen = [], set()
        for item in views:  # one of each type first, then in list order
            if item[0] not in seen:
                chosen.append(item)
                seen.add(item[0])
        chosen += [v for v in views if v not in chosen][: max(0, count - len(chosen))]
        names = []
        for _, a, b in chosen:
            for source in (a, b):
                shutil.copy(source, root / "images" / source.name)
                names.append(source.name)
        (root / list_name).write_text("\n".join(names) + "\n")
        lists[list_name] = len(chosen)
    return lists


def write_stanford_cars(root: Path, cars_root: Path, classes: int = 6, per_class: int = 4) -> dict:
    """Stanford Cars' labels.csv (path,class_id,class_name) for a few classes. The rows name the real
    images by absolute path: research-use images are never copied."""
    with open(cars_root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    chosen: dict[str, list[dict]] = {}
    for row in rows:
        group = chosen.setdefault(row["class_name"], []) if len(chosen) < classes or row["class_name"] in chosen else None
        if group is not None and len(group) < per_class:
            group.append(row)
    root.mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class_id", "class_name"])
        for group in chosen.values():
            for row in group:
                writer.writerow([str((cars_root / row["path"]).resolve()), row["class_id"], row["class_name"]])
    return {"classes": len(chosen), "images": sum(len(g) for g in chosen.values())}
