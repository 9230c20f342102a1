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
from .io import remove_stale_temporaries
from .data import DatasetSpec, LabelSpace, PKSampler, ReidDataset, load_specs
from .model import IGNORE_INDEX, RNNHA, RNNHAConfig
from .transforms import train_transform

__all__ = ["TrainConfig", "train", "main"]


@dataclass
class TrainConfig:
    """A training recipe. `model` holds RNNHAConfig fields; class counts and names come from the data."""

    model: dict = field(default_factory=dict)
    train: list[dict] = field(default_factory=list)  # DatasetSpec fields, one per dataset
    val: dict | None = None  # a DatasetSpec evaluated with its kind's protocol (two-camera, veri, ...)
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
    init_from: str | None = None  # start from a training checkpoint or a model folder (fine-tuning)

    def __post_init__(self):
        # YAML 1.1 reads "lr: 1e-4" (no dot) as a string: coerce numbers, and name the key that is not one
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), {"float": float, "int": int, "int | None": int}.get(f.type)
            if kind is None or value is None or isinstance(value, kind) and not isinstance(value, bool):
                continue
            try:
                number = float(value) if kind is float else int(str(value))
            except (TypeError, ValueError):
                raise ValueError(f"{f.name} must be a number ({kind.__name__}), got {value!r}") from None
            setattr(self, f.name, number)

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] = ()) -> "TrainConfig":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"error: no config file at {path}")
        data = yaml.safe_load(path.read_text()) or {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"error: override {item!r} is not key=value")
            _set_dotted(data, key, yaml.safe_load(value))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SystemExit(f"error: unknown config keys {unknown} in {path}; known: {sorted(known)}")
        try:
            return cls(**data)
        except ValueError as e:
            raise SystemExit(f"error: {e} (in {path} or its overrides)") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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

    if cfg.schedule not in ("step", "cosine", "onecycle", "constant"):
        raise SystemExit(f"error: unknown schedule {cfg.schedule!r}")
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
    raise SystemExit(f"error: unknown optimizer {cfg.optimizer!r}; use rmsprop, adamw or sgd")


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


def build_model_config(cfg: TrainConfig, labels: LabelSpace) -> RNNHAConfig:
    fields = dict(cfg.model)
    fields.update(num_classes=labels.num_classes, level_names=labels.levels,
                  class_names=[labels.classes[level] for level in labels.levels])
    return RNNHAConfig(**fields)


def initialise_from(model: RNNHA, source: str | Path) -> list[str]:
    """Copy the weights of a training checkpoint (.safetensors) or a model folder into `model`.

    Every tensor is copied except a level's classifier (and neck) whose classes differ from the source's,
    so a model can be fine-tuned on new identities. Returns the names left as initialised.
    """
    from .checkpoint import CheckpointError, model_state, read_checkpoint
    from .export import load_pretrained

    source = Path(source)
    if source.is_dir():
        loaded, _ = load_pretrained(source)
        state, config = loaded.state_dict(), loaded.config
    else:
        try:
            tensors, record = read_checkpoint(source)
        except CheckpointError as exc:
            raise SystemExit(f"error: init_from: {exc}") from exc
        state, config = model_state(tensors), RNNHAConfig.from_dict(record["model_config"])
    mine = model.config
    if (config.backbone, config.head) != (mine.backbone, mine.head):
        raise SystemExit(f"error: init_from {source} is a {config.head} head on {config.backbone}, "
                         f"this recipe builds a {mine.head} head on {mine.backbone}")
    same_classes = {t for t, level in enumerate(mine.level_names)
                    if level in config.level_names and mine.class_names and config.class_names
                    and config.class_names[config.level_names.index(level)] == mine.class_names[t]}
    target = model.state_dict()
    copied = {}
    for name, tensor in state.items():
        parts = name.split(".")
        per_level = len(parts) > 3 and parts[1] in ("classifiers", "necks")
        if per_level and int(parts[2]) not in same_classes:
            continue
        if name in target and target[name].shape == tensor.shape:
            copied[name] = tensor
    if not any(name.startswith("backbone.") for name in copied):
        raise SystemExit(f"error: init_from {source}: no backbone weights fit this recipe's model")
    model.load_state_dict(copied, strict=False)
    return sorted(set(target) - set(copied))


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run the recipe; returns the summary written to OUTPUT/summary.json."""
    from tqdm import tqdm

    rank, world_size, device = _init_distributed()
    main_process = rank == 0
    out = Path(cfg.output)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temporaries(out)
        if stale:
            print(f"removed {len(stale)} temporary file(s) of an interrupted checkpoint write in {out}")
    _seed_everything(cfg.seed)

    levels = cfg.model.get("level_names", ["model", "vehicle"])
    samples = load_specs([DatasetSpec(**s) for s in cfg.train])
    labels = LabelSpace.from_samples(samples, levels)
    model_config = build_model_config(cfg, labels)
    model = RNNHA(model_config)
    if cfg.init_from and not resume:
        fresh = initialise_from(model, cfg.init_from)
        if main_process:
            print(f"initialised from {cfg.init_from}" + (f"; not from it: {', '.join(fresh)}" if fresh else ""))
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
        raise SystemExit(f"error: {len(dataset)} training images give no full batch of {batch_size}")

    optimizer = _optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, steps_per_epoch))
    amp_dtype = _amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    start_epoch, best, history = 0, None, []
    if resume and (out / "last.safetensors").is_file():
        record = load_checkpoint(out / "last.safetensors", model, optimizer, scheduler)
        start_epoch, best, history = record["epoch"], record.get("best"), record.get("history", [])
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
            score = row.get("val", {}).get("mAP")
            is_best = score is not None and (best is None or score > best)
            best = score if is_best else best
            record = {"epoch": epoch + 1, "best": best, "history": history, "config": cfg.to_dict(),
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
    summary = {"epochs": cfg.epochs, "history": history, "best_mAP": best, "world_size": world_size,
               "weights_sha256_per_rank": fingerprints, "output": str(out)}
    if main_process:
        from .io import atomic_write_text

        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if world_size > 1:
        dist.destroy_process_group()
    return summary


def _validate(model: RNNHA, spec: dict, device: torch.device, amp_dtype) -> dict:
    from .evaluate import evaluate_samples
    from .predictor import Predictor

    spec = DatasetSpec(**spec)
    predictor = Predictor(model, device=device, dtype=amp_dtype or torch.float32)
    try:
        return evaluate_samples(predictor, spec.kind, spec.load())
    finally:
        model.train()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rnnha.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML or JSON recipe (see configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.safetensors")
    parser.add_argument("overrides", nargs="*", help="key=value (dotted keys, YAML values)")
    args = parser.parse_args(argv)
    cfg = TrainConfig.from_file(args.config, args.overrides)
    train(cfg, resume=args.resume)


if __name__ == "__main__":
    main()
