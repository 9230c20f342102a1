"""Export a training checkpoint as a model folder (rnnha.pretrained's format):
`python -m rnnha.export CHECKPOINT OUT_DIR [--calibrate KIND ROOT] [--push ORG/NAME] [--private]`.
Its validation figures go into the card, the same-vehicle threshold is calibrated on a labelled set,
and the folder can be uploaded with huggingface_hub.

With --format, also export the model to ONNX and/or OpenVINO (rnnha.runtime; needs `pip install
"rnnha[export]"`), and MODEL may be anything the zoo resolves (a zoo name, a folder, hf-hub:ORG/NAME):
`python -m rnnha.export --format onnx [--format openvino] [--int8] MODEL OUT_DIR`. It prints the files
written and each export's agreement with PyTorch fp32 on the shipped gallery images; int8 is calibrated
on half of them and kept only if its embeddings stay within cosine 0.99 on the other half.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .calibration import fit_same_vehicle, similarity_histograms
from .model import RNNHA, RNNHAConfig
from .pretrained import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, ModelInfo, model_card, save_pretrained

PICTURE_NAME = "similarity.png"  # beside the weights: the calibration pairs' similarities (the card shows it)

__all__ = ["calibrate", "calibration_specs", "fit_temperatures", "export_checkpoint", "main"]


# --- CLI ----------------------------------------------------------------------------------------------

def calibrate(model: RNNHA, kind: str, root: str | Path, list_file: str | None = None) -> dict:
    """The same-vehicle threshold on all image pairs of a labelled set (rnnha.verification)."""
    from .data import load_dataset
    from .protocols import extract
    from .predictor import Predictor
    from .verification import calibrate_threshold, pair_similarities

    options = {"list_file": list_file} if list_file else {}
    samples = load_dataset(kind, root, **options)
    features = extract(Predictor(model), samples, desc="calibrate")
    similarities, same = pair_similarities(features.embeddings, [s.labels["vehicle"] for s in samples])
    result = calibrate_threshold(similarities, same)
    where = f"{Path(root).name}" + (f" ({list_file})" if list_file else "")
    return {**result, "source": f"all image pairs of {where}: {result['positive_pairs']} same-vehicle and "
                                f"{result['negative_pairs']} different-vehicle pairs, best balanced accuracy "
                                f"{result['balanced_accuracy']:.1f} %",
            "same_vehicle": fit_same_vehicle(similarities, same), "pairs": similarity_histograms(similarities, same)}


CALIBRATION_OPTION = {"two-camera": "part", "stanford-cars": "subset"}  # the option naming a dataset's part


def calibration_specs(train: list[dict]) -> list[dict]:
    """The calibration parts of a recipe's `train:` datasets: each dataset that sets calibration_fraction,
    with its part (two-camera) or subset (stanford-cars) set to "calibration", listed once."""
    specs = []
    for spec in train:
        options = dict(spec.get("options") or {})
        if options.get("calibration_fraction"):
            key = CALIBRATION_OPTION.get(spec["kind"])
            if key is None:
                raise ValueError(f"{spec['kind']} has no calibration part: calibration_fraction is for "
                                 f"{', '.join(CALIBRATION_OPTION)}")
            options[key] = "calibration"
            specs.append({**spec, "options": options, "repeat": 1})
    if not specs:
        raise ValueError("the recipe's training data has no calibration part: set calibration_fraction in the "
                         "options of a train: dataset (configs/hierarchy/three_level.yaml does)")
    return specs


def fit_temperatures(model: RNNHA, train: list[dict]) -> dict:
    """A softmax temperature for each coarse level, fitted on the calibration parts of the recipe's
    training data (images it never trained on; rnnha.calibration), with the ECE there before and after."""
    from .calibration import expected_calibration_error, fit_temperature
    from .data.registry import load_specs
    from .predictor import Predictor
    from .protocols import extract

    specs = calibration_specs(train)
    samples = load_specs(specs)
    predictor = Predictor(model, dtype=torch.float32)
    features = extract(predictor, samples, desc="temperatures")
    config, temperatures, ece = model.config, {}, {}
    for t, level in enumerate(config.level_names[:-1]):  # the identity level's classes are training ids
        index = {n: i for i, n in enumerate(predictor.class_names(t))}
        targets = torch.tensor([index.get(s.labels.get(level), -100) for s in samples])
        if not (targets >= 0).any():
            continue
        logits = features.logits[t].float()
        temperatures[level] = float(f"{fit_temperature(logits, targets):.4g}")  # never rounded to 0
        ece[level] = {"before": round(expected_calibration_error(logits.softmax(1), targets), 4),
                      "after": round(expected_calibration_error((logits / temperatures[level]).softmax(1), targets), 4),
                      "images": int((targets >= 0).sum())}
    where = "; ".join(f"{spec['kind']} {Path(spec['root']).name} {spec['options']}" for spec in specs)
    return {"temperatures": temperatures, "temperature_source": f"the calibration parts of the training data ({where})",
            "temperature_ece": ece}


def _hierarchy(config: RNNHAConfig, train: list[dict]) -> dict:
    """rnnha.data.base.level_hierarchy of the recipe's training data ({} when it cannot be read here)."""
    from .data.base import level_hierarchy
    from .data.registry import load_specs
    from .errors import DataError

    try:
        return level_hierarchy(load_specs(train), config.level_names) if train else {}
    except (DataError, OSError, TypeError) as exc:
        print(f"warning: the training data is not readable here ({exc}): the folder says no level hierarchy, "
              "so the app shows every level's guess", file=sys.stderr)
        return {}


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32,
                      name: str | None = None, license: str = "apache-2.0", description: str = "",
                      training_data: str = "", extra_metrics: dict | None = None,
                      calibration: tuple[str, str, str | None] | None = None, command: str = "",
                      temperatures: bool = False) -> Path:
    """A model folder from a training checkpoint: weights, config (with the training recipe, metrics,
    the calibrated threshold and same-vehicle probability, the temperatures when asked for, zoo
    metadata) and a model card."""
    from .checkpoint import model_state, read_checkpoint

    tensors, record = read_checkpoint(checkpoint)
    config = RNNHAConfig.from_dict(record["model_config"])
    model = RNNHA(config)
    model.load_state_dict(model_state(tensors), strict=True)
    model.eval()
    history = record.get("history", [])
    val = next((row["val"] for row in reversed(history) if "val" in row), None)
    train_cfg = record.get("config", {})
    val_kind = (train_cfg.get("val") or {}).get("kind", "validation")
    metrics = {val_kind: {k: v for k, v in val.items() if not isinstance(v, (dict, list))}} if val else {}
    metrics.update(extra_metrics or {})
    datasets = sorted({spec["kind"] for spec in train_cfg.get("train", [])})
    start = f", starting from the weights of `{train_cfg['init_from']}`," if train_cfg.get("init_from") else ""
    training = (f"Trained for {record.get('epoch')} epochs on {', '.join(datasets) or 'unknown data'}{start} "
                f"with `{command or 'python -m rnnha.train'}` (the recipe is in config.json, key `training`).")
    if record.get("soup"):  # rnnha.soup: the recipe is the first ingredient's
        training += (f" The weights are the average of {len(record['soup'])} checkpoints fine-tuned from the same "
                     f"weights (a model soup, `python -m rnnha.soup`): {', '.join(f'`{p}`' for p in record['soup'])}.")
    if training_data:
        training += f"\n\n**Training data.** {training_data}"
    info = ModelInfo(training=train_cfg, metrics=metrics, epochs_trained=record.get("epoch"), description=description,
                     license=license, training_data=training_data, tags=[config.backbone, config.variant])
    extra_text = ""
    fitted = fit_temperatures(model, train_cfg.get("train", [])) if temperatures else {}
    if calibration is not None:
        threshold = calibrate(model, *calibration)
        fitted.update(same_vehicle=threshold["same_vehicle"], pairs=threshold["pairs"])
        info = info.replace(threshold=threshold["threshold"], threshold_source=threshold["source"])
        extra_text = (f"\n## Same vehicle or not\n\nCosine similarity >= {threshold['threshold']:.4f} means "
                      f"\"same vehicle\": calibrated on {threshold['source']}. The probability of the same "
                      f"vehicle is sigmoid({threshold['same_vehicle']['a']:.2f} s {threshold['same_vehicle']['b']:+.2f}) "
                      f"of the similarity s (both kinds of pair weighted equally; 0.5 at "
                      f"{threshold['same_vehicle']['even_at']:.3f}).\n\n![The cosine similarity of the same- and "
                      f"different-vehicle calibration pairs, and the threshold]({PICTURE_NAME})\n")
    if fitted.get("temperatures"):
        rows = "\n".join(f"| {level} | {t:.3f} | {fitted['temperature_ece'][level]['before']:.3f} | "
                         f"{fitted['temperature_ece'][level]['after']:.3f} |" for level, t in fitted["temperatures"].items())
        extra_text += (f"\n## Calibrated probabilities\n\nEach coarse level's logits are divided by a temperature "
                       f"fitted on {fitted['temperature_source']}; expected calibration error (15 bins) there:\n\n"
                       f"| level | temperature | ECE before | ECE after |\n|---|---:|---:|---:|\n{rows}\n")
    info = info.replace(calibration=fitted, hierarchy=_hierarchy(config, train_cfg.get("train", [])))
    name = name or Path(out_dir).name
    card = model_card(config, name, metrics, license, datasets, training, extra_text)
    folder = save_pretrained(model, out_dir, dtype, info, card)
    if calibration is not None:  # the card's picture: the app draws the same one for each pair compared
        from .calibration import similarity_picture
        from .io import atomic_path

        with atomic_path(folder / PICTURE_NAME) as temporary:
            similarity_picture(fitted["pairs"], threshold["threshold"]).save(temporary, format="PNG")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnha.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="MODEL", help="a training checkpoint (last.safetensors / "
                        "best.safetensors); with --format also a zoo name, model folder or hf-hub:ORG/NAME")
    parser.add_argument("out_dir", help="the folder to write")
    parser.add_argument("--format", dest="formats", action="append", choices=["onnx", "openvino"],
                        help="export to ONNX (ONNX Runtime) and/or OpenVINO IR beside the weights (repeatable)")
    parser.add_argument("--int8", action="store_true", help="with --format onnx: also an int8 model.int8.onnx, "
                        "kept if its embeddings stay within cosine 0.99 of fp32's")
    parser.add_argument("--images", type=int, default=64,
                        help="how many shipped gallery images to calibrate int8 and check parity on (default 64)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--name", help="model name in the card (default: the folder's name)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--description", default="", help="one line for the zoo")
    parser.add_argument("--training-data", default="", help="what it was trained on, with the data's terms")
    parser.add_argument("--metrics", action="append", default=[], metavar="NAME=FILE",
                        help="add the figures of `python -m rnnha.evaluate --json` (repeatable)")
    parser.add_argument("--calibrate", nargs=2, metavar=("KIND", "ROOT"),
                        help="calibrate the same-vehicle threshold on a labelled set (e.g. two-camera DIR)")
    parser.add_argument("--calibrate-list", help="list file for --calibrate (e.g. val.txt)")
    parser.add_argument("--temperatures", action="store_true", help="fit a softmax temperature per coarse level on "
                        "the calibration parts of the recipe's training data (its calibration_fraction)")
    parser.add_argument("--command", default="", help="the training command, for the card")
    parser.add_argument("--push", metavar="ORG/NAME", help="upload the folder to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--revision", help="branch to push to (default: main)")
    args = parser.parse_args(argv)
    checkpoint = not args.formats or Path(args.checkpoint).suffix == ".safetensors"
    if not checkpoint:
        given = [f"--{k.replace('_', '-')}" for k in CHECKPOINT_ONLY if getattr(args, k) != parser.get_default(k)]
        if given:
            parser.error(f"{', '.join(given)}: only for a training checkpoint, and {args.checkpoint} is not one")
    if args.int8 and "onnx" not in (args.formats or []):
        parser.error("--int8 needs --format onnx")
    if args.formats and args.dtype != "float32":
        parser.error("--format exports the fp32 model and keeps fp32 weights beside it: leave out --dtype")
    if not checkpoint:
        return _named_export(args, args.checkpoint)
    try:
        extra_metrics = {}
        for item in args.metrics:
            label, _, path = item.partition("=")
            figures = json.loads(Path(path).read_text())
            extra_metrics[label] = {k: v for k, v in figures.items() if isinstance(v, float)}  # not counts
        calibration = (*args.calibrate, args.calibrate_list) if args.calibrate else None
        folder = export_checkpoint(args.checkpoint, args.out_dir, getattr(torch, args.dtype), args.name,
                                   args.license, args.description, args.training_data, extra_metrics,
                                   calibration, args.command, args.temperatures)
        if args.formats:  # the checkpoint's folder first (card, threshold), then its exports
            return _named_export(args, str(folder))
        print(f"wrote {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")
        _push(args, folder)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


CHECKPOINT_ONLY = ("dtype", "name", "license", "description", "training_data", "metrics", "calibrate",
                   "calibrate_list", "command", "temperatures")


def _push(args, folder: Path) -> None:
    if args.push:
        from .hub import push_folder

        url = push_folder(folder, args.push, private=args.private, revision=args.revision)
        print(f"pushed to {url}")


def _named_export(args, model: str) -> int:
    """--format: resolve MODEL through the zoo, write the folder (with the model's card) and its exports,
    print the parity figures."""
    try:
        from zoo import resolve
        from zoo.entries import ASSETS

        from .runtime import MANIFEST_NAME, export

        entry = resolve(model)
        try:
            readme = entry.folder() / CARD_NAME
            card = readme.read_text(encoding="utf-8") if readme.is_file() else None
        except LookupError:  # zoo.ZooError: a checkpoint or the ImageNet baseline has no folder, no card
            card = None
        images = sorted((ASSETS / "gallery").glob("*.jpg"))[:args.images] or None
        manifest = export(entry.build(), args.out_dir, args.formats, int8=args.int8, images=images, card=card)
        written = [CONFIG_NAME, WEIGHTS_NAME, *([CARD_NAME] if card else []), MANIFEST_NAME, *manifest["files"]]
        print(f"wrote {args.out_dir}: {', '.join(written)}")
        print("agreement with PyTorch fp32 on the shipped gallery images:" if images else
              "no parity figures: the shipped gallery images (assets/gallery) are missing")
        for name, record in manifest["backends"].items():
            parity = record.get("parity")
            precision = f" ({record['precision']})" if "precision" in record else ""
            print(f"  {name}{precision}" + (f": min cosine {parity['min_cosine']:.5f}, coarse top-1 agreement "
                                           f"{100 * parity['coarse_top1_agreement']:.1f} % on {parity['images']} "
                                           "images" if parity else ""))
        for name, why in manifest["rejected"].items():
            print(f"  {name}: not kept, {why}")
        _push(args, Path(args.out_dir))
    except (ValueError, OSError, LookupError, ImportError) as exc:  # LookupError: zoo.ZooError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
