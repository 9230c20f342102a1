"""Inference speed: `python -m rnnha.benchmark --model default [--batch 32] [--repeats 5]`.

Prints images per second and the embedding agreement (cosine) of each precision against fp32, on
the device the model lands on. A benchmark prints figures; no test asserts a speed.
"""
from __future__ import annotations

import argparse
import json
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


if __name__ == "__main__":
    main()
