"""The model folder, the same on disk and on the Hugging Face Hub:

    config.json         {"model_type": "rnnha", "config": RNNHAConfig (preprocessing resolved), ...}
    model.safetensors   the weights (fp32 or fp16), loaded strictly
    README.md           a model card with YAML metadata (library, licence, datasets, tags, model-index)

`python -m rnnha.export CHECKPOINT OUT_DIR [--push ORG/NAME] [--private]` writes it from a training
checkpoint (its validation figures go into the card) and can upload it with huggingface_hub.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

from .io import atomic_save_safetensors, atomic_write_text
from .model import RNNHA, RNNHAConfig
from .transforms import resolve_preprocessing

__all__ = ["ModelLoadError", "save_pretrained", "load_pretrained", "read_folder_config", "sha256_file",
           "model_card", "CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME"]

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
MODEL_TYPE = "rnnha"


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded: the message names the file and the problem."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_pretrained(model: RNNHA, folder: str | Path, dtype: torch.dtype = torch.float32,
                    extra: dict | None = None, card: str | None = None, zoo: dict | None = None) -> Path:
    """Write config.json + model.safetensors (+ README.md), each atomically.

    extra: further config.json keys (e.g. `same_vehicle_threshold`, `metrics`, `training`);
    zoo: metadata for a zoo entry, to which the sha256 of the written weights is added.
    """
    folder = Path(folder)
    config = RNNHAConfig.from_dict(model.config.to_dict())
    prep = resolve_preprocessing(config)
    config.input_size, config.mean, config.std = list(prep.size), list(prep.mean), list(prep.std)
    config.interpolation = prep.interpolation
    config.pretrained_backbone = False  # the weights file has everything
    config.aux_classifier = False  # training-only deep supervision, not part of the model that is used
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items() if not k.startswith("head.aux_")}
    atomic_save_safetensors(state, folder / WEIGHTS_NAME, metadata={"format": "pt", "model_type": MODEL_TYPE})
    document = {"model_type": MODEL_TYPE, "config": config.to_dict(), **(extra or {})}
    if zoo is not None:
        document["zoo"] = {**zoo, "sha256": sha256_file(folder / WEIGHTS_NAME)}
    atomic_write_text(folder / CONFIG_NAME, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    if card is not None:
        atomic_write_text(folder / CARD_NAME, card)
    return folder


def read_folder_config(folder: str | Path) -> tuple[RNNHAConfig, dict]:
    """(RNNHAConfig, the whole config.json) of a model folder."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if document.get("model_type") != MODEL_TYPE or "config" not in document:
        raise ModelLoadError(f"{path} does not describe an RNN-HA model (model_type {document.get('model_type')!r})")
    try:
        return RNNHAConfig.from_dict(document["config"]), document
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


def load_pretrained(folder: str | Path, sha256: str | None = None) -> tuple[RNNHA, dict]:
    """Build the model of a folder and load its weights strictly (fp32 on the CPU).

    Raises ModelLoadError for a missing or truncated weights file, a wrong sha256, or weights that do
    not match the config (missing or extra keys, wrong shapes); nothing half-loaded is returned.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config, document = read_folder_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelLoadError(f"{weights} is missing")
    if sha256 is not None:
        actual = sha256_file(weights)
        if actual != sha256.lower():
            raise ModelLoadError(f"{weights} has sha256 {actual}, expected {sha256}: the file is corrupt, "
                                 "incomplete or not the pinned version; delete it and download again")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{weights} is not a readable safetensors file ({exc}); it may be truncated: "
                             "delete it and download or export it again") from exc
    model = RNNHA(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        def some(keys):
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

        problems = ([f"missing keys {some(missing)}"] if missing else []) + \
                   ([f"unexpected keys {some(unexpected)}"] if unexpected else []) + \
                   ([f"wrong shapes {some(wrong)}"] if wrong else [])
        raise ModelLoadError(f"{weights} does not match {folder / CONFIG_NAME}: " + "; ".join(problems))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model.eval(), document


# --- model card ---------------------------------------------------------------------------------------

def model_card(config: RNNHAConfig, name: str, metrics: dict | None = None, license: str = "apache-2.0",
               datasets: list[str] | None = None, training: str = "", extra_text: str = "") -> str:
    """A Hub model card: YAML metadata (library, licence, datasets, tags, model-index) + a text."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    results = []
    for dataset, figures in (metrics or {}).items():
        for metric, value in figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                results.append(EvalResult(task_type="image-feature-extraction", task_name="Vehicle re-identification",
                                          dataset_type=dataset, dataset_name=dataset, metric_type=metric,
                                          metric_name=metric, metric_value=round(float(value), 2)))
    data = ModelCardData(library_name="rnnha", license=license, datasets=datasets or None,
                         tags=["vehicle-re-identification", "re-identification", "rnn-ha", "image-feature-extraction",
                               config.backbone],
                         pipeline_tag="image-feature-extraction", model_name=name,
                         eval_results=results or None)
    prep = resolve_preprocessing(config)
    levels = ", ".join(f"{n} ({c} classes)" for n, c in zip(config.level_names, config.num_classes))
    from .data import DATASET_KINDS

    table = "\n".join(f"| {d} | {m} | {v:.2f} |" for d, f in (metrics or {}).items() for m, v in f.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool))
    protocols = "\n".join(f"- **{d}**: {DATASET_KINDS[d].protocol}." for d in (metrics or {}) if d in DATASET_KINDS)
    beyond = [text for flag, text in (
        (config.attention and config.attention_pool == "sum",
         "x2 = sum of a_ij f_ij, without Eq. 9's 1/(hw), so that it is on GAP(f)'s scale"),
        (config.head == "rnnha" and config.neck,
         "a BN neck on every step's output before its classifier; the embedding is BN(o_T)"),
        (config.aux_classifier,
         "trained with deep supervision, a linear classifier of the coarse level on BN(GAP(f)) whose loss "
         "is added to the paper's (training only: not in these weights)"),
    ) if flag]
    beyond_text = f" Beyond the paper: {'; '.join(beyond)}." if beyond else ""
    text = f"""---
{data.to_yaml()}
---

# {name}

An [RNN-HA](https://arxiv.org/abs/1812.04239) model (Wei et al., ACCV 2018, "Coarse-to-Fine: A RNN-Based
Hierarchical Attention Model for Vehicle Re-identification"): {config.variant}, backbone `{config.backbone}`,
levels {levels}, GRU hidden size {config.hidden_size}.{beyond_text} Input {prep.size[0]}x{prep.size[1]} px,
{prep.interpolation}, mean {list(prep.mean)}, std {list(prep.std)}. The embedding (ℓ2-normalised output of
the last step, {config.hidden_size}-d) is compared with cosine similarity.

## Use

```python
from zoo import load_model
predictor = load_model("path/or/hf-hub:ORG/NAME")
embeddings = predictor.embed(["a.jpg", "b.jpg"])
```

## Training

{training or "See the training record in config.json."}

## Results

| data | metric | value |
|---|---|---|
{table or "| - | - | - |"}

{protocols}
{extra_text}
"""
    ModelCard(text)  # validates the YAML block
    return text


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
    result = calibrate_threshold(*pair_similarities(features.embeddings, [s.labels["vehicle"] for s in samples]))
    where = f"{Path(root).name}" + (f" ({list_file})" if list_file else "")
    return {**result, "source": f"all image pairs of {where}: {result['positive_pairs']} same-vehicle and "
                                f"{result['negative_pairs']} different-vehicle pairs, best balanced accuracy "
                                f"{result['balanced_accuracy']:.1f} %"}


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32,
                      name: str | None = None, license: str = "apache-2.0", description: str = "",
                      training_data: str = "", extra_metrics: dict | None = None,
                      calibration: tuple[str, str, str | None] | None = None, command: str = "") -> Path:
    """A model folder from a training checkpoint: weights, config (with the training recipe, metrics,
    the calibrated threshold and zoo metadata) and a model card."""
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
    if training_data:
        training += f"\n\n**Training data.** {training_data}"
    extra = {"training": train_cfg, "metrics": metrics, "epochs_trained": record.get("epoch")}
    extra_text = ""
    if calibration is not None:
        threshold = calibrate(model, *calibration)
        extra.update(same_vehicle_threshold=threshold["threshold"], threshold_source=threshold["source"])
        extra_text = (f"\n## Same vehicle or not\n\nCosine similarity >= {threshold['threshold']:.4f} means "
                      f"\"same vehicle\": calibrated on {threshold['source']}.\n")
    name = name or Path(out_dir).name
    card = model_card(config, name, metrics, license, datasets, training, extra_text)
    zoo = {"description": description, "license": license, "training_data": training_data,
           "tags": [config.backbone, config.variant]}
    return save_pretrained(model, out_dir, dtype, extra, card, zoo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnha.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a training checkpoint (last.safetensors / best.safetensors)")
    parser.add_argument("out_dir", help="the folder to write")
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
    parser.add_argument("--command", default="", help="the training command, for the card")
    parser.add_argument("--push", metavar="ORG/NAME", help="upload the folder to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--revision", help="branch to push to (default: main)")
    args = parser.parse_args(argv)
    try:
        extra_metrics = {}
        for item in args.metrics:
            label, _, path = item.partition("=")
            figures = json.loads(Path(path).read_text())
            extra_metrics[label] = {k: v for k, v in figures.items() if isinstance(v, float)}  # not counts
        calibration = (*args.calibrate, args.calibrate_list) if args.calibrate else None
        folder = export_checkpoint(args.checkpoint, args.out_dir, getattr(torch, args.dtype), args.name,
                                   args.license, args.description, args.training_data, extra_metrics,
                                   calibration, args.command)
        print(f"wrote {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")
        if args.push:
            from .hub import push_folder

            url = push_folder(folder, args.push, private=args.private, revision=args.revision)
            print(f"pushed to {url}")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
