"""Train RNN-HA: `python -m rnnha.train --config configs/FILE.yaml [key=value ...] [--resume]`.

One code path for one CPU, one GPU and several GPUs (`torchrun --nproc_per_node N -m rnnha.train ...`,
DDP over NCCL, or gloo on CPUs). Mixed precision (bf16 / fp16), channels_last, tqdm progress, a JSONL
metrics log, an atomic checkpoint every epoch (`last.safetensors`), `--resume` that continues exactly,
validation every N epochs with the best checkpoint kept (`best.safetensors`).

Overrides use dotted keys and YAML values: `epochs=2 model.hidden_size=512 train.0.options.list_file=x`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from .checkpoint import load_checkpoint, save_checkpoint, weights_sha256
from .data import DataError, DatasetSpec, LabelSpace, PKSampler, ReidDataset, get_dataset
from .errors import ConfigError
from .io import remove_stale_temporaries
from .model import IGNORE_INDEX, RNNHA, RNNHAConfig
from .transforms import train_transform

__all__ = ["TrainConfig", "ConfigError", "Source", "read_source", "source_from_model", "train", "initialise_from",
           "main"]


@dataclass
class TrainConfig:
    """A training recipe. `model` holds RNNHAConfig fields; class counts and names come from the data.

    A recipe file may start from another (`base: ../paper/common.yaml`, relative to the file): its keys
    are merged over the base's, mappings key by key, everything else replaced.
    """

    model: dict = field(default_factory=dict)
    train: list[dict] = field(default_factory=list)  # DatasetSpec fields, one per dataset
    val: dict | None = None  # {kind, root, options}: that kind's protocol after every eval_every epochs
    test: dict | None = None  # {kind, root, options}: that kind's protocol once, on the best weights
    epochs: int = 10
    batch_size: int = 64  # per process
    optimizer: str = "rmsprop"  # rmsprop (paper) | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    backbone_lr_mult: float = 1.0
    freeze_stages: int = 0  # fix the backbone's first k stages (weights and BN statistics): ~2x faster on CPUs
    schedule: str = "step"  # step (paper: x0.1 after 5 epochs) | cosine | onecycle | constant
    milestones: list[int] = field(default_factory=lambda: [5])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    sampler: str = "random"  # random | pk (P identities x K images, see pk)
    pk: list[int] = field(default_factory=lambda: [16, 4])
    flip: float = 0.5
    pad: int = 10
    erasing: float = 0.5
    color_jitter: float = 0.0
    amp: str = "auto"  # auto (bf16 on CPUs that have it, fp16 on CUDA) | bf16 | fp16 | none
    channels_last: bool = True
    workers: int = 2
    seed: int = 0
    eval_every: int = 1
    output: str = "runs/default"
    max_steps_per_epoch: int | None = None  # for quick runs
    # start from a training checkpoint, a model folder, a zoo name or hf-hub:ORG/NAME (fine-tuning): the
    # model's architecture comes from it, and `model:` keys of the recipe override it
    init_from: str | None = None
    backbone_weights: str | None = None  # a file of backbone weights, e.g. converted Caffe VGG_CNN_M_1024

    def __post_init__(self):
        # YAML 1.1 reads "lr: 1e-4" (no dot) as a string: coerce numbers, and name the key that is not one
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), {"float": float, "int": int, "int | None": int}.get(f.type)
            if kind is None or value is None or isinstance(value, kind) and not isinstance(value, bool):
                continue
            try:
                number = float(value) if kind is float else int(str(value))
            except (TypeError, ValueError):
                raise ConfigError(f"{f.name} must be a number ({kind.__name__}), got {value!r}") from None
            setattr(self, f.name, number)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={self.optimizer!r} is unknown; use one of {', '.join(OPTIMIZERS)}")
        if not isinstance(self.train, list) or not self.train:
            raise ConfigError("train: needs at least one dataset, e.g. train.0.kind=veri train.0.root=data/VeRi")
        for key, spec in [(f"train.{i}", s) for i, s in enumerate(self.train)] + [("val", self.val), ("test", self.test)]:
            if spec is None:
                continue
            allowed = DATASET_SPEC_KEYS if key.startswith("train") else ("kind", "root", "options")
            if not isinstance(spec, dict) or not {"kind", "root"} <= set(spec) or set(spec) - set(allowed):
                raise ConfigError(f"{key} must be a mapping of {', '.join(allowed)} (kind and root required), "
                                  f"got {spec!r}")
            if spec.get("options") is None:
                spec["options"] = {}

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] = ()) -> "TrainConfig":
        import yaml

        path = Path(path)
        data = _read_recipe(path)
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} is not key=value (e.g. epochs=2 train.0.root=data/VeRi)")
            try:
                _set_dotted(data, key, yaml.safe_load(value))
            except (IndexError, ValueError, TypeError, KeyError):
                raise ConfigError(f"override {item!r}: {key} does not name a place in the recipe") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown} in {path}; known: {sorted(known)}")
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{e} (in {path} or its overrides)") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SCHEDULES = ("step", "cosine", "onecycle", "constant")
OPTIMIZERS = ("rmsprop", "adamw", "sgd")
DATASET_SPEC_KEYS = tuple(f.name for f in dataclasses.fields(DatasetSpec))


def _read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A recipe file merged over its `base:` chain (paths relative to the file that names them)."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: base files form a loop ({' -> '.join(p.name for p in seen)})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of keys (model:, train:, epochs: ...)")
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(_read_recipe(path.parent / base, seen + (path.resolve(),)), data)


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _set_dotted(data: dict, key: str, value) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


# --- distributed --------------------------------------------------------------------------------------

def _init_distributed() -> tuple[int, int, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world_size, torch.device("cuda", local)
    return rank, world_size, torch.device("cpu")


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    from .predictor import cpu_supports_bf16

    if amp == "none":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _schedule(cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= m * steps_per_epoch for m in cfg.milestones)
        if cfg.schedule in ("cosine", "onecycle"):
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def _optimizer(cfg: TrainConfig, model: RNNHA) -> torch.optim.Optimizer:
    def trainable(module: torch.nn.Module) -> list:
        return [p for p in module.parameters() if p.requires_grad]

    groups = [{"params": trainable(model.backbone), "lr": cfg.lr * cfg.backbone_lr_mult},
              {"params": trainable(model.head), "lr": cfg.lr}]
    if cfg.optimizer == "rmsprop":  # the paper: RMSprop with default parameters
        return torch.optim.RMSprop(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    raise ConfigError(f"optimizer={cfg.optimizer!r} is unknown; use one of {', '.join(OPTIMIZERS)}")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- the loop -----------------------------------------------------------------------------------------

def _progress(sums: torch.Tensor, counts: torch.Tensor, levels: list[str], world_size: int,
              started: float) -> dict:
    """The progress bar's loss and accuracy per level and images/s (one host read of the sums)."""
    sums, counts = sums.tolist(), counts.tolist()
    T = len(levels)
    return {**{f"loss_{l}": f"{sums[t] / max(counts[t], 1):.3f}" for t, l in enumerate(levels)},
            **{f"acc_{l}": f"{100 * sums[T + t] / max(counts[t], 1):.1f}" for t, l in enumerate(levels)},
            "img/s": f"{sums[-1] * world_size / (time.perf_counter() - started):.1f}"}


# --- the model: from the recipe, or from the source it fine-tunes --------------------------------------

# what a source model's config decides when fine-tuning: everything but what the data decides
_FROM_DATA = ("num_classes", "level_names", "class_names", "pretrained_backbone")


@dataclass
class Source:
    """A model to start from: its weights (model state dict), config, and where it came from."""

    state: dict[str, torch.Tensor]
    config: RNNHAConfig
    where: str


def read_source(init_from: str) -> Source:
    """A training checkpoint (.safetensors) or a model folder; relative paths resolve from the working
    directory. Model names (a zoo name, hf-hub:ORG/NAME) are the catalogue's to resolve: the command
    line does it (`init_from=default`), and in Python `source_from_model(zoo.load_model(NAME).model, NAME)`."""
    from .checkpoint import CheckpointError, model_state, read_checkpoint
    from .pretrained import ModelLoadError, load_pretrained

    path = Path(init_from).expanduser()
    try:
        if path.is_dir():
            model, _ = load_pretrained(path)
            return Source(model.state_dict(), model.config, str(path))
        if path.is_file():
            tensors, record = read_checkpoint(path)
            return Source(model_state(tensors), RNNHAConfig.from_dict(record["model_config"]), str(path))
    except (CheckpointError, ModelLoadError) as exc:
        raise ConfigError(f"init_from={init_from}: {exc}") from None
    raise ConfigError(f"init_from={init_from}: no checkpoint or model folder at {path.absolute()} (relative paths "
                      "start from the working directory; model names resolve on the command line)")


def source_from_model(model: RNNHA, where: str) -> Source:
    return Source(model.state_dict(), model.config, where)


def build_model_config(cfg: TrainConfig, labels: LabelSpace, source: RNNHAConfig | None = None) -> RNNHAConfig:
    """The recipe's `model:` keys over the source's architecture (when fine-tuning) or the defaults;
    classes come from the data."""
    fields = {k: v for k, v in source.to_dict().items() if k not in _FROM_DATA} if source else {}
    fields.update(cfg.model)
    if source is not None:
        fields["pretrained_backbone"] = False  # the source's weights replace ImageNet's
    fields.update(num_classes=labels.num_classes, level_names=labels.levels,
                  class_names=[labels.classes[level] for level in labels.levels])
    try:
        return RNNHAConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from None


def levels_of(cfg: TrainConfig, source: RNNHAConfig | None) -> list[str]:
    if "level_names" in cfg.model:
        return list(cfg.model["level_names"])
    return list(source.level_names) if source else ["model", "vehicle"]


def initialise_from(model: RNNHA, source: Source | str | Path) -> list[str]:
    """Copy a source's weights into `model`. Each level's modules (BN neck, classifier, the guidance
    into its step) go to the level of the same name, wherever it is in the hierarchy (a model with a
    vehicle-class level above the car model starts from a two-level one); a classifier keeps the rows
    of the classes both name (new identities start fresh). Not copied: tensors the recipe's own
    architecture changed (another head keeps only the backbone). The backbones must be the same.
    Returns the names left as initialised, whole or in part."""
    if not isinstance(source, Source):
        source = read_source(str(source))
    config, mine = source.config, model.config
    if config.backbone != mine.backbone:
        raise ConfigError(f"init_from {source.where} is a {config.head} head on {config.backbone}, "
                          f"this recipe builds a {mine.head} head on {mine.backbone}")
    target = model.state_dict()
    copied, partly = {}, set()  # partly: classifiers of which only the rows of shared classes came
    if config.head != mine.head:
        # another head (the authors' two stages: a plain classifier first, then RNN-HA from it): the
        # backbone only, since a head tensor of the same shape means something else in the other head
        copied = {n: t for n, t in source.state.items() if n.startswith("backbone.") and n in target
                  and target[n].shape == t.shape}
    else:
        level_of = _level_map(config.level_names, mine.level_names)
        for name, tensor in source.state.items():
            name, tensor, whole = _moved(name, tensor, level_of, config, mine, target)
            if name in target and target[name].shape == tensor.shape:
                copied[name] = tensor
                if not whole:
                    partly.add(name)
    if not any(name.startswith("backbone.") for name in copied):
        raise ConfigError(f"init_from {source.where}: no backbone weights fit this recipe's model")
    model.load_state_dict(copied, strict=False)
    return sorted((set(target) - set(copied)) | partly)


def _level_map(theirs: list[str], ours: list[str]) -> dict[int, int]:
    """Source level -> this model's level: by name; a level of ours no source level is named like takes
    the source's level at the same position, if no other level took it (a coarse level renamed)."""
    level_of = {u: ours.index(level) for u, level in enumerate(theirs) if level in ours}
    for t, level in enumerate(ours):
        if level not in theirs and t < len(theirs) and t not in level_of and t not in level_of.values():
            level_of[t] = t
    return level_of


def _moved(name: str, tensor: torch.Tensor, level_of: dict[int, int], theirs: RNNHAConfig, ours: RNNHAConfig,
           target: dict) -> tuple[str, torch.Tensor, bool]:
    """A source head tensor under the name of the level it belongs to in this model: the per-level
    modules (neck, FC step, classifier) of level u, and the guidance into step u (transformers[u - 1]);
    a classifier's rows for the classes both levels have, by name, the others as initialised (then
    the flag is False: not the whole tensor came from the source)."""
    parts = name.split(".")
    if parts[0] != "head" or len(parts) < 3 or not parts[2].isdigit():
        if parts[:2] == ["head", "aux_classifier"] and theirs.aux_level is not None and ours.aux_level is not None:
            u, t = theirs.aux_level, ours.aux_level
            if level_of.get(u) == t:
                return (name, *_rows(tensor, theirs, ours, u, t, target.get(name)))
            return "", tensor, True
        return name, tensor, True
    u = int(parts[2]) + (parts[1] == "transformers")  # transformers[u - 1] guides step u
    t = level_of.get(u)
    if t is None or (parts[1] == "transformers" and t == 0):
        return "", tensor, True  # a level this model does not have, or step 1 (no guidance)
    if parts[1] == "transformers" and level_of.get(u - 1) != t - 1:
        return "", tensor, True  # it guides from another level than the one before step t here
    moved = ".".join(["head", parts[1], str(t - (parts[1] == "transformers")), *parts[3:]])
    if parts[1] == "classifiers":
        return (moved, *_rows(tensor, theirs, ours, u, t, target.get(moved)))
    return moved, tensor, True


def _rows(tensor: torch.Tensor, theirs: RNNHAConfig, ours: RNNHAConfig, u: int, t: int,
          initialised: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
    """A classifier's weight or bias of source level u for level t of ours: the rows of the classes
    both name, the rest as initialised (the whole tensor when the classes are the same)."""
    names, mine = (theirs.class_names or [[]] * theirs.num_levels)[u], (ours.class_names or [[]] * ours.num_levels)[t]
    if (names and names == mine) or initialised is None or tensor.shape[1:] != initialised.shape[1:]:
        return tensor, True  # the same classes; else not in this model, or of another width: dropped
    if t == ours.num_levels - 1 and u == theirs.num_levels - 1:
        return initialised, False  # identities are a dataset's own: other vehicles under the same ids start fresh
    row = {n: i for i, n in enumerate(names)}
    pairs = [(j, row[n]) for j, n in enumerate(mine) if n in row]
    out = initialised.clone()
    if pairs:
        j, i = map(list, zip(*pairs))
        out[j] = tensor[i].to(out.device, out.dtype)
    return out, False


def _checkpoint_config(path: Path) -> RNNHAConfig:
    from .checkpoint import read_checkpoint

    return RNNHAConfig.from_dict(read_checkpoint(path, tensors=False)[1]["model_config"])


def _architecture_changes(source: RNNHAConfig, mine: RNNHAConfig) -> list[str]:
    theirs, ours = source.to_dict(), mine.to_dict()
    return [f"{k}: {ours[k]} (source {theirs[k]})" for k in ours
            if k not in _FROM_DATA and theirs.get(k) != ours[k]]


# --- data ---------------------------------------------------------------------------------------------

def load_training_data(cfg: TrainConfig, levels: list[str]) -> tuple[list, LabelSpace, list[str]]:
    """The samples of every `train:` dataset (errors name the recipe key to change), their label space,
    and one line per dataset describing it."""
    from .data.registry import prefixed

    samples, lines = [], []
    for i, spec in enumerate(prefixed(cfg.train)):
        try:
            part = spec.load()
        except DataError as exc:
            raise DataError(f"train.{i} ({spec.kind}): {exc} (set train.{i}.root= or train.{i}.options)") from None
        samples += part
        lines.append(f"train.{i} {spec.kind} {spec.root} {spec.options or ''}".rstrip() + ": "
                     + _counts(part, levels))
    try:
        labels = LabelSpace.from_samples(samples, levels)
    except DataError as exc:
        raise DataError(f"{exc}; set model.level_names= to levels the data has, or map one onto another "
                        f"with train.N.rename (e.g. {{type: model}})") from None
    return samples, labels, lines


def _counts(samples: list, levels: list[str]) -> str:
    parts = [f"{len(samples)} images"]
    for level in levels:
        labelled = [s.labels[level] for s in samples if level in s.labels]
        noun = "vehicles" if level == "vehicle" else f"{level} classes"
        parts.append(f"{len(set(labelled))} {noun}" + (f" ({len(labelled)} labelled)" if len(labelled) < len(samples) else ""))
    return ", ".join(parts)


def _check_spec(key: str, spec: dict | None) -> None:
    """Fail before training, not after an epoch: the kind exists, its root is there, and (for `val:`
    and `test:`) its protocol takes the options and finds its files."""
    from .data import check_dataset

    if spec is None:
        return
    try:
        get_dataset(spec["kind"])
    except DataError as exc:
        raise ConfigError(f"{key}.kind: {exc}") from None
    if not Path(spec["root"]).exists():
        raise ConfigError(f"{key}.root: nothing at {Path(spec['root']).absolute()} (relative paths start "
                          f"from the working directory); set {key}.root=")
    if not key.startswith("train"):
        try:
            check_dataset(spec["kind"], spec["root"], **spec["options"])
        except DataError as exc:
            raise ConfigError(f"{key}: {exc} (set {key}.root= or {key}.options)") from None


def _check_backbone_weights(cfg: TrainConfig) -> None:
    if cfg.backbone_weights and not Path(cfg.backbone_weights).is_file():
        how = ""
        if cfg.model.get("backbone") == "vgg_cnn_m_1024":
            how = (" Make it from the Caffe Model Zoo's VGG_CNN_M_1024.caffemodel (no Caffe needed): "
                   f"python -m rnnha.caffe VGG_CNN_M_1024.caffemodel {cfg.backbone_weights}")
        raise ConfigError(f"backbone_weights: no file at {Path(cfg.backbone_weights).absolute()}.{how} "
                          "Or train from random weights with backbone_weights=null.")


def train(cfg: TrainConfig, resume: bool = False, source: Source | None = None) -> dict:
    """Run the recipe; returns the summary written to OUTPUT/summary.json. `source`, when given, is the
    model that `cfg.init_from` names, already resolved (the command line resolves zoo names)."""
    from tqdm import tqdm

    for key, spec in [(f"train.{i}", s) for i, s in enumerate(cfg.train)] + [("val", cfg.val), ("test", cfg.test)]:
        _check_spec(key, spec)
    out = Path(cfg.output)
    resuming = resume and (out / "last.safetensors").is_file()
    if (out / "last.safetensors").is_file() and not resume:
        raise ConfigError(f"{out} already holds a run (last.safetensors): pass --resume to continue it, or "
                          "set output= to a new folder")
    backbone_weights = cfg.backbone_weights if not (resuming or cfg.init_from) else None
    if backbone_weights:
        _check_backbone_weights(cfg)
    if resuming:
        source = None
    elif source is None and cfg.init_from:
        source = read_source(cfg.init_from)
    # the architecture: the source's when fine-tuning; on --resume the checkpoint's (init_from included)
    architecture = source.config if source else _checkpoint_config(out / "last.safetensors") if resuming else None
    rank, world_size, device = _init_distributed()
    main_process = rank == 0
    say = print if main_process else (lambda *a, **k: None)
    _seed_everything(cfg.seed)

    levels = levels_of(cfg, architecture)
    samples, labels, lines = load_training_data(cfg, levels)
    for line in lines:
        say(line)
    say("levels: " + ", ".join(f"{level} {n} classes" for level, n in zip(labels.levels, labels.num_classes)))
    model_config = build_model_config(cfg, labels, architecture)
    model = RNNHA(model_config)
    if backbone_weights:
        from .backbones import load_backbone_weights

        load_backbone_weights(model_config.backbone, model.backbone, backbone_weights)
        say(f"backbone weights from {backbone_weights}")
    if source is not None:
        fresh = initialise_from(model, source)
        total = len(model.state_dict())
        say(f"init_from {source.where}: architecture from the source"
            + "".join(f"; the recipe changes {c}" for c in _architecture_changes(source.config, model_config)))
        say(f"  loaded {total - len(fresh)} of {total} tensors"
            + (f"; re-initialised: {', '.join(fresh)}" if fresh else ""))
    model.backbone.freeze(cfg.freeze_stages)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dataset = ReidDataset(samples, labels, train_transform(
        model_config, flip=cfg.flip, pad=cfg.pad, erasing=cfg.erasing, color_jitter=cfg.color_jitter))

    if cfg.sampler == "pk":
        p, k = cfg.pk
        sampler = PKSampler(dataset.targets[:, -1].tolist(), p, k, cfg.seed, rank, world_size)
        batch_size = p * k
    else:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
        batch_size = cfg.batch_size
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    steps_per_epoch = len(loader)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        lower = ("lower pk= (P identities x K images)" if cfg.sampler == "pk" else
                 f"lower batch_size= (e.g. batch_size={max(1, len(dataset) // max(world_size, 2))})")
        raise ConfigError(f"{len(dataset)} training images give no full batch of {batch_size} per process; {lower}")
    if main_process:  # made once the recipe is known to run: a recipe that fails leaves nothing behind
        out.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temporaries(out)
        if stale:
            say(f"removed {len(stale)} temporary file(s) of an interrupted checkpoint write in {out}")
        if not resuming:  # what a run that died before its first checkpoint may have left
            for name in ("best.safetensors", "metrics.jsonl", "test.json", "summary.json"):
                (out / name).unlink(missing_ok=True)

    optimizer = _optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, steps_per_epoch))
    amp_dtype = _amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    say(f"device {_device_name(device)}, AMP {str(amp_dtype).replace('torch.', '') if amp_dtype else 'off'}, "
        f"batch {batch_size} x {world_size} process(es), {steps_per_epoch} steps per epoch, "
        f"{model_config.backbone} at {model_config.input_size or 'its native size'} px; output {out}")

    start_epoch, best, best_epoch, history = 0, None, None, []
    if resuming:
        record = load_checkpoint(out / "last.safetensors", model, optimizer, scheduler)
        start_epoch, best, history = record["epoch"], record.get("best"), record.get("history", [])
        best_epoch = record.get("best_epoch")
        if best_epoch is None and best is not None:  # a checkpoint written before best_epoch was recorded
            best_epoch = next((r["epoch"] for r in history if "val" in r
                               and get_dataset(cfg.val["kind"]).score(r["val"]) == best), None) if cfg.val else None
        if main_process:
            print(f"resumed from {out / 'last.safetensors'} at epoch {start_epoch}")
    train_model = model
    if world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    crash_after = int(os.environ.get("RNNHA_CRASH_AFTER_STEPS", "0"))  # fault injection for tests
    steps_done = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        train_model.train()
        # on the device: no host sync per step, and NCCL's all_reduce needs CUDA tensors
        sums = torch.zeros(2 * len(levels) + 1, device=device)  # loss per level, correct per level, images
        counts = torch.zeros(len(levels), device=device)
        started = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not main_process,
                   dynamic_ncols=True, mininterval=2)
        for step, (images, targets, _) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            images = images.to(device, non_blocking=True)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                output = train_model(images)
            loss, per_level = model.loss(output, targets, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            steps_done += 1
            if crash_after and steps_done >= crash_after:
                os._exit(17)  # simulated kill mid-epoch: no cleanup, no checkpoint
            with torch.no_grad():
                for t, (level_loss, logits) in enumerate(zip(per_level, output.logits)):
                    mask = targets[:, t] != IGNORE_INDEX
                    n = mask.sum()
                    sums[t] += level_loss.detach().float() * n
                    sums[len(levels) + t] += ((logits.argmax(1) == targets[:, t]) & mask).sum()
                    counts[t] += n
                sums[-1] += images.shape[0]
            if step % 10 == 0 or step + 1 == steps_per_epoch:
                bar.set_postfix(_progress(sums, counts, levels, world_size, started))
            bar.update()
        bar.close()
        if world_size > 1:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
            for buffer in model.buffers():  # BN statistics: DDP syncs them only at the next forward
                dist.broadcast(buffer, src=0)
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[-1], "seconds": round(seconds, 1),
               "images_per_second": round(float(sums[-1]) / seconds, 1)}
        for t, level in enumerate(levels):
            row[f"loss_{level}"] = float(sums[t] / max(counts[t], 1))
            row[f"acc_{level}"] = float(100 * sums[len(levels) + t] / max(counts[t], 1))
        if cfg.val and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            if main_process:
                row["val"] = _validate(model, cfg.val, device, amp_dtype)
        history.append(row)
        if main_process:
            score = get_dataset(cfg.val["kind"]).score(row["val"]) if "val" in row else None
            is_best = score is not None and (best is None or score > best)
            best = score if is_best else best
            if is_best:
                best_epoch = epoch + 1
            record = {"epoch": epoch + 1, "best": best, "best_epoch": best_epoch, "history": history, "config": cfg.to_dict(),
                      "model_config": model_config.to_dict(), "labels": labels.to_dict()}
            save_checkpoint(out / "last.safetensors", model, optimizer, scheduler, record)
            if is_best:
                save_checkpoint(out / "best.safetensors", model, optimizer, scheduler, record)
            with open(out / "metrics.jsonl", "a") as log:
                log.write(json.dumps(row) + "\n")
            print(json.dumps(row))
        if world_size > 1:
            dist.barrier()

    fingerprint = weights_sha256(model)
    fingerprints = [fingerprint]
    if world_size > 1:
        fingerprints = [None] * world_size
        dist.all_gather_object(fingerprints, fingerprint)
    summary = {"epochs": cfg.epochs, "history": history, "best_score": best, "best_mAP": best,
               "best_epoch": best_epoch, "world_size": world_size, "weights_sha256_per_rank": fingerprints,
               "output": str(out)}
    if main_process:
        from .io import atomic_write_text

        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        weights = out / ("best.safetensors" if best_epoch is not None else "last.safetensors")
        if cfg.test:
            summary["test"] = _test(model, cfg.test, weights, device, amp_dtype)
            atomic_write_text(out / "test.json", json.dumps(summary["test"], indent=2) + "\n")
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        _report(cfg, out, summary, history, model_config)
    if world_size > 1:
        dist.destroy_process_group()
    return summary


def _device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


def _predictor(model: RNNHA, device: torch.device, amp_dtype):
    from .predictor import Predictor

    return Predictor(model, device=device, dtype=amp_dtype or torch.float32)


def _validate(model: RNNHA, spec: dict, device: torch.device, amp_dtype) -> dict:
    """The validation set's protocol (its kind's, from the dataset registry) on the current weights."""
    from .data import evaluate_dataset

    try:
        return evaluate_dataset(_predictor(model, device, amp_dtype), spec["kind"], spec["root"], **spec["options"])
    except DataError as exc:
        raise DataError(f"{spec['kind']} at {spec['root']}: {exc}") from None
    finally:
        model.train()


def _test(model: RNNHA, spec: dict, weights: Path, device: torch.device, amp_dtype) -> dict:
    """The test set's protocol once, on the weights of `weights` (best.safetensors, or the last)."""
    from .evaluate import paper_rows

    load_checkpoint(weights, model, restore_rng=False)
    result = _validate(model, spec, device, amp_dtype)
    size = model.config.input_size
    return {"kind": spec["kind"], "root": spec["root"], "weights": weights.name, "result": result,
            "paper_rows": paper_rows(spec["kind"], result, model.config.backbone,
                                     size[0] if isinstance(size, list) else size)}


def _report(cfg: TrainConfig, out: Path, summary: dict, history: list[dict], config: RNNHAConfig) -> None:
    """Where everything went, and the paper's rows of the best validation and of the test."""
    from .evaluate import paper_rows

    best = out / "best.safetensors"
    print(f"checkpoints: {out / 'last.safetensors'}"
          + (f", {best} (epoch {summary['best_epoch']}, {cfg.val['kind']} score {summary['best_mAP']:.2f})"
             if best.is_file() and summary["best_epoch"] else ""))
    print(f"metrics: {out / 'metrics.jsonl'} (one line per epoch); summary: {out / 'summary.json'}"
          + (f"; test: {out / 'test.json'}" if "test" in summary else ""))
    scored = [("val", cfg.val["kind"], history[summary["best_epoch"] - 1]["val"])] if summary["best_epoch"] else []
    if "test" in summary:
        scored.append(("test", summary["test"]["kind"], summary["test"]["result"]))
    size = config.input_size[0] if isinstance(config.input_size, list) else config.input_size
    for name, kind, result in scored:
        for row in paper_rows(kind, result, config.backbone, size):
            paper = "" if row["paper"] is None else f" (paper: {row['paper']:.2f})"
            print(f"  {name}: {row['row']} {row['metric']} {row['ours']:.2f}{paper}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rnnha.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML or JSON recipe (see configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.safetensors")
    parser.add_argument("overrides", nargs="*", help="key=value (dotted keys, YAML values)")
    args = parser.parse_args(argv)
    from .backbones import BackboneError
    from .checkpoint import CheckpointError
    from .images import ImageError

    try:
        cfg = TrainConfig.from_file(args.config, args.overrides)
        resuming = args.resume and (Path(cfg.output) / "last.safetensors").is_file()
        train(cfg, resume=args.resume, source=None if resuming else _named_source(cfg.init_from))
    except (ConfigError, DataError, BackboneError, CheckpointError, ImageError) as exc:
        raise SystemExit(f"error: {exc}") from None  # one line that says what to change, no traceback


def _named_source(init_from: str | None) -> Source | None:
    """init_from as a zoo name or hf-hub:ORG/NAME, resolved through the catalogue (the command line is
    the outer ring: the library itself reads only files)."""
    if not init_from or (Path(init_from).expanduser().exists() and not init_from.startswith("hf-hub:")):
        return None
    try:
        from zoo import resolve
    except ImportError:
        return None  # read_source says what is wrong
    try:
        entry = resolve(init_from)
        return source_from_model(entry.build(), f"{init_from} ({entry.source.describe()})")
    except (LookupError, ValueError, OSError) as exc:  # zoo.ZooError is a LookupError
        raise ConfigError(f"init_from={init_from}: {exc}") from None


if __name__ == "__main__":
    main()
