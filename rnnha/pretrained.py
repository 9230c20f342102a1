"""The model folder: one format on disk, in the zoo and on the Hugging Face Hub.

    config.json         {"model_type": "rnnha", "config": RNNHAConfig (preprocessing resolved),
                         "same_vehicle_threshold", "threshold_source", "metrics", "training", "zoo": {...}}
    model.safetensors   the weights (fp32 or fp16), loaded strictly
    README.md           a model card with YAML metadata (library, licence, datasets, tags, model-index)

Everything in config.json besides the architecture is a typed `ModelInfo`. `RNNHA.from_pretrained`,
`RNNHA.save_pretrained` and `RNNHA.push_to_hub` are this module's functions; rnnha.hub moves folders.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .io import atomic_save_safetensors, atomic_write_text
from .model import RNNHA, RNNHAConfig
from .transforms import resolve_preprocessing

__all__ = ["ModelLoadError", "ModelInfo", "save_pretrained", "load_pretrained", "from_pretrained", "push_to_hub",
           "read_folder_config", "sha256_file", "model_card", "CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME"]

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
MODEL_TYPE = "rnnha"


@dataclass
class ModelInfo:
    """What a model folder says about its model besides the architecture: config.json's other keys."""

    threshold: float | None = None  # cosine similarity at or above which two images are the same vehicle
    threshold_source: str = ""  # what it was calibrated on
    # rnnha.calibration's fits: {"temperatures": {level: T}, "temperature_source": str,
    # "same_vehicle": {"a", "b", ...}, "pairs": similarity histograms of the calibration pairs, "ece": ...}
    calibration: dict = field(default_factory=dict)
    # which labels each level applies under ({"model": {"type": ["car"]}}: rnnha.data.base.level_hierarchy)
    hierarchy: dict = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # {dataset kind: {metric: value}}
    training: dict = field(default_factory=dict)  # the training recipe (rnnha.train.TrainConfig)
    epochs_trained: int | None = None
    description: str = ""  # one line, for the zoo
    license: str = "unknown"
    training_data: str = ""  # what it was trained on, with the data's own terms
    tags: list[str] = field(default_factory=list)
    sha256: str | None = None  # of model.safetensors, as written

    @property
    def protocols(self) -> dict[str, str]:
        """What each dataset's figures mean (the dataset registry's protocols)."""
        from .data import DATASET_KINDS

        return {d: DATASET_KINDS[d].protocol for d in self.metrics if d in DATASET_KINDS}

    @classmethod
    def from_document(cls, document: dict) -> "ModelInfo":
        zoo = document.get("zoo") or {}
        tags = zoo.get("tags", [])
        if not isinstance(tags, list):
            raise ValueError(f"zoo.tags must be a list of strings, got {tags!r}")
        calibration = document.get("calibration", {})
        temperatures = calibration.get("temperatures", {}) if isinstance(calibration, dict) else None
        if not isinstance(temperatures, dict) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temperatures.values()):
            raise ValueError(f"calibration.temperatures must map level names to positive numbers, got {temperatures!r}")
        hierarchy = document.get("hierarchy", {})
        if not isinstance(hierarchy, dict) or not all(
                isinstance(under, dict) and all(isinstance(labels, list) for labels in under.values())
                for under in hierarchy.values()):
            raise ValueError(f"hierarchy must map a level to {{parent level: [labels]}}, got {hierarchy!r}")
        return cls(threshold=document.get("same_vehicle_threshold"), threshold_source=document.get("threshold_source", ""),
                   calibration=calibration, hierarchy=hierarchy,
                   metrics=document.get("metrics", {}), training=document.get("training", {}),
                   epochs_trained=document.get("epochs_trained"), description=zoo.get("description", ""),
                   license=zoo.get("license", "unknown"), training_data=zoo.get("training_data", ""),
                   tags=list(tags), sha256=zoo.get("sha256"))

    def to_document(self) -> dict:
        """config.json's keys besides model_type and config; from_document reads them back unchanged."""
        empty = (None, "", {}, [])
        zoo = {"description": self.description, "license": self.license if self.license != "unknown" else "",
               "training_data": self.training_data, "tags": self.tags, "sha256": self.sha256}
        document = {"training": self.training, "metrics": self.metrics, "epochs_trained": self.epochs_trained,
                    "same_vehicle_threshold": self.threshold, "threshold_source": self.threshold_source,
                    "calibration": self.calibration, "hierarchy": self.hierarchy, "zoo": {k: v for k, v in zoo.items() if v not in empty}}
        return {k: v for k, v in document.items() if v not in empty}

    def temperature(self, level: str) -> float:
        """The level's fitted softmax temperature (1: none fitted)."""
        return float(self.calibration.get("temperatures", {}).get(level, 1.0))

    def for_new_weights(self) -> "ModelInfo":
        """What still holds once the weights have changed (fine-tuned): the descriptive fields, not the
        measured ones (threshold, calibration, metrics, training record)."""
        return ModelInfo(description=self.description, license=self.license, training_data=self.training_data,
                         tags=list(self.tags))

    def replace(self, **changes) -> "ModelInfo":
        return dataclasses.replace(self, **changes)


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded: the message names the file and the problem."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_pretrained(model: RNNHA, folder: str | Path, dtype: torch.dtype = torch.float32,
                    info: ModelInfo | None = None, card: str | None = None) -> Path:
    """Write config.json + model.safetensors (+ README.md), each atomically. `info` (default: the
    model's own, `model.info`) fills config.json's other keys; its sha256 is that of the written weights."""
    folder = Path(folder)
    config = RNNHAConfig.from_dict(model.config.to_dict())
    prep = resolve_preprocessing(config)
    config.input_size, config.mean, config.std = list(prep.size), list(prep.mean), list(prep.std)
    config.interpolation = prep.interpolation
    config.pretrained_backbone = False  # the weights file has everything
    config.aux_classifier = False  # training-only deep supervision, not part of the model that is used
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items() if not k.startswith("head.aux_")}
    # one metadata key: safetensors writes its metadata map in no fixed order, and the file's sha256
    # (pinned by the zoo) must be the same for the same weights
    atomic_save_safetensors(state, folder / WEIGHTS_NAME, metadata={"format": "pt"})
    if info is None:  # the model's own, unless its weights changed since it was loaded (fine-tuned)
        info = getattr(model, "info", None) or ModelInfo()
        loaded = getattr(model, "info_weights", None)
        if loaded is not None and loaded != _weights_digest(model):
            info = info.for_new_weights()
    info = info.replace(sha256=sha256_file(folder / WEIGHTS_NAME))
    document = {"model_type": MODEL_TYPE, "config": config.to_dict(), **info.to_document()}
    atomic_write_text(folder / CONFIG_NAME, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    if card is not None:
        atomic_write_text(folder / CARD_NAME, card)
    return folder


def read_folder_config(folder: str | Path) -> tuple[RNNHAConfig, ModelInfo]:
    """(RNNHAConfig, ModelInfo) of a model folder's config.json."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("model_type") != MODEL_TYPE or "config" not in document:
        model_type = document.get("model_type") if isinstance(document, dict) else None
        raise ModelLoadError(f"{path} does not describe an RNN-HA model (model_type {model_type!r})")
    try:
        return RNNHAConfig.from_dict(document["config"]), ModelInfo.from_document(document)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


def load_pretrained(folder: str | Path, sha256: str | None = None) -> tuple[RNNHA, ModelInfo]:
    """Build the model of a folder and load its weights strictly (fp32 on the CPU); `model.info` is
    the folder's ModelInfo too.

    Raises ModelLoadError for a missing or truncated weights file, a wrong sha256, or weights that do
    not match the config (missing or extra keys, wrong shapes); nothing half-loaded is returned.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config, info = read_folder_config(folder)
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
    model.info = info
    model.info_weights = _weights_digest(model)  # save_pretrained keeps the measured info only for these weights
    return model.eval(), info


def _weights_digest(model: RNNHA) -> str:
    from .checkpoint import weights_sha256

    return weights_sha256(model)


def from_pretrained(folder_or_repo: str | Path, revision: str | None = None, sha256: str | None = None,
                    cache_dir: str | Path | None = None) -> tuple[RNNHA, ModelInfo]:
    """A model folder on disk, or a Hub repo (`ORG/NAME` or `hf-hub:ORG/NAME[@REVISION]`) downloaded
    through huggingface_hub's cache (offline with HF_HUB_OFFLINE=1 once cached)."""
    text = str(folder_or_repo)
    hub = text.startswith("hf-hub:")
    path = Path(text).expanduser()
    if not hub and path.is_dir():
        return load_pretrained(path, sha256)
    looks_local = text.startswith((".", "/", "~")) or path.suffix == ".safetensors" or \
        (not hub and len(path.parts) > 1 and Path(path.parts[0]).exists())
    if looks_local:
        raise ModelLoadError(f"no model folder at {path.absolute()} (relative paths start from the working "
                             "directory); a Hub repo is ORG/NAME or hf-hub:ORG/NAME[@REVISION]")
    from .hub import download_folder, parse_repo

    parsed = parse_repo(text)
    if parsed is None:
        raise ModelLoadError(f"{text} is neither a model folder nor a Hub repo id (ORG/NAME)")
    repo, pinned = parsed
    return load_pretrained(download_folder(repo, revision or pinned, cache_dir), sha256)


def push_to_hub(model: RNNHA, repo_id: str, private: bool = False, token: str | None = None,
                revision: str | None = None, dtype: torch.dtype = torch.float32, info: ModelInfo | None = None,
                card: str | None = None) -> str:
    """Save the model folder (with a model card made from its info unless one is given) and upload it
    to a Hub model repo; returns the repo's URL."""
    import tempfile

    from .hub import push_folder

    info = info or getattr(model, "info", None) or ModelInfo()
    if card is None:
        card = model_card(model.config, repo_id.split("/")[-1], info.metrics, _card_license(info.license),
                          sorted(info.metrics), info.training_data)
    with tempfile.TemporaryDirectory(prefix="rnnha-push-") as folder:
        save_pretrained(model, folder, dtype, info, card)
        return push_folder(folder, repo_id, private=private, token=token, revision=revision)


def _card_license(license: str) -> str:
    return "other" if license in ("", "unknown") else license


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
         f"trained with deep supervision, a linear classifier of the {config.level_names[config.aux_level or 0]} "
         "level on BN(GAP(f)) whose loss is added to the paper's (training only: not in these weights)"),
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


