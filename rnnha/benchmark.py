"""Inference speed: `python -m rnnha.benchmark --model default [--batch 32] [--repeats 5]`.

Prints, one JSON line each: images per second and the embedding agreement (cosine) of each precision
against fp32, on the device the model lands on; then what the RNN-HA heads cost, the backbone alone's
images/s over the full model's at batch 1 and at --batch (best precision, median of interleaved
rounds). A benchmark prints figures; no test asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from .predictor import Predictor, cpu_supports_bf16


def measure(predictor: Predictor, batch: torch.Tensor, repeats: int) -> float:
    predictor.embed(batch)  # warm-up: kernels, allocator, oneDNN primitives
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        predictor.embed(batch)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return repeats * len(batch) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rnnha.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="zoo name, folder, hf-hub:ORG/NAME or checkpoint")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", help="cpu, cuda ... (default: best available)")
    args = parser.parse_args(argv)
    from zoo import load_model  # the command line resolves model names through the catalogue

    base = load_model(args.model, device=args.device)
    size = base.transform.transforms[0].size
    batch = torch.randn(args.batch, 3, *size)
    dtypes = [torch.float32]
    if base.device.type == "cuda":
        dtypes += [torch.float16, torch.bfloat16]
    elif cpu_supports_bf16():
        dtypes.append(torch.bfloat16)
    reference = Predictor(base.model, base.device, torch.float32, args.batch).embed(batch)
    rows = []
    for dtype in dtypes:
        predictor = Predictor(base.model, base.device, dtype, args.batch)
        cosine = (predictor.embed(batch) * reference).sum(1)
        rows.append({"device": str(base.device), "dtype": str(dtype).replace("torch.", ""), "batch": args.batch,
                     "input": list(size), "images_per_second": round(measure(predictor, batch, args.repeats), 1),
                     "min_cosine_vs_fp32": round(float(cosine.min()), 5), "threads": torch.get_num_threads()})
        print(json.dumps(rows[-1]))
    best = max(rows, key=lambda r: r["images_per_second"])
    predictor = Predictor(base.model, base.device, getattr(torch, best["dtype"]), args.batch)
    print(json.dumps({"dtype": best["dtype"], **heads_overhead(predictor, batch, args.repeats)}))


def heads_overhead(predictor: Predictor, batch: torch.Tensor, repeats: int, rounds: int = 5) -> dict:
    """Backbone-alone images/s ÷ full-model images/s at batch 1 and at the batch's size: the medians
    of `rounds` interleaved measurements (the two share the machine's state, round by round)."""
    def rate(x: torch.Tensor, module, n: int) -> float:
        predictor.forward(x, module)
        start = time.perf_counter()
        for _ in range(n):
            predictor.forward(x, module)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        return n * len(x) / (time.perf_counter() - start)

    out = {}
    for name, x, n in (("b1", batch[:1], 10 * repeats), (f"b{len(batch)}", batch, repeats)):
        full, backbone = [], []
        for _ in range(rounds):
            full.append(rate(x, None, n))
            backbone.append(rate(x, predictor.model.backbone, n))
        out[f"full_images_per_second_{name}"] = round(statistics.median(full), 1)
        out[f"backbone_images_per_second_{name}"] = round(statistics.median(backbone), 1)
        out[f"heads_overhead_ratio_{name}"] = round(statistics.median(backbone) / statistics.median(full), 3)
    return out


if __name__ == "__main__":
    main()
