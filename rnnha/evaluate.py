"""Evaluate: `python -m rnnha.evaluate --model NAME_OR_DIR --dataset KIND --root DIR [--json]`.

Every dataset kind brings its protocol (rnnha/data/, figures in percent):
- veri: query vs test, gallery items of the query's vehicle seen by the same camera are junk; mAP,
  CMC rank-1/5/10, mINP (torchreid / fast-reid), and VeRi's official MATLAB-style AP.
- vehicleid: test 800 / 1600 / 2400, one random gallery image per vehicle, 10 repeats: mean and std.
- two-camera: cam1 queries vs the cam2 gallery and the reverse, and their mean.
- stanford-cars, csv (and any dataset with coarse labels): top-1 / top-5 accuracy of the coarse level.
The text output ends with the figures as the paper's tables print them, beside the paper's own where
the model's backbone is one the paper used.

--rerank k-reciprocal (Zhong et al., CVPR 2017: k1=20, k2=6, lambda=0.3) or --rerank aqe (average query
expansion, k=5) re-ranks every re-id list before scoring (rnnha/rerank.py; veri, two-camera and csv);
the result then records `rerank` and `rerank_seconds`, the time the re-ranking took. Default: none.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .data import DataError, evaluate_dataset, get_dataset, list_datasets
from .data.two_camera import evaluate_samples as evaluate_two_camera
from .data.vehicleid import evaluate as evaluate_vehicleid
from .data.veri import evaluate as evaluate_veri
from .predictor import Predictor
from .protocols import Features, coarse_accuracy as evaluate_coarse, extract, image_batches
from .rerank import METHODS

__all__ = ["protocol", "Features", "extract", "image_batches", "evaluate", "evaluate_two_camera",
           "evaluate_veri", "evaluate_vehicleid", "evaluate_coarse", "paper_rows", "main"]


def protocol(kind: str) -> str:
    """What `kind`'s figures mean, in one sentence (model cards and reports)."""
    return get_dataset(kind).protocol


def evaluate(predictor: Predictor, kind: str, root: str | Path, flip: bool = False, **options) -> dict:
    """`kind`'s protocol (rnnha.data registry) on the dataset at `root`."""
    return evaluate_dataset(predictor, kind, root, flip=flip, **options)


def paper_rows(kind: str, result: dict, backbone: str | None = None,
               input_size: int | None = None) -> list[dict]:
    """The figures as the paper's tables print them, each with the paper's figure for this backbone
    and input size where it has one (rnnha.paper)."""
    from .paper import published

    return [{"row": row, "metric": metric, "ours": round(float(value), 2),
             "paper": published(kind, backbone, input_size, row, metric)}
            for row, metric, value in get_dataset(kind).rows(result)]


def _format(result: dict, indent: str = "") -> str:
    lines = []
    for key, value in result.items():
        if isinstance(value, dict):
            lines += [f"{indent}{key}:", _format(value, indent + "  ")]
        else:
            lines.append(f"{indent}{key:>20}: {value:.2f}" if isinstance(value, float) else f"{indent}{key:>20}: {value}")
    return "\n".join(lines)


def _table(rows: list[dict], backbone: str) -> str:
    lines = [f"{'the paper' + chr(39) + 's rows':<28} {'metric':>6} {'ours':>7} {'paper':>7}   "
             f"(paper: its {backbone} row where it gives one, else its best RNN-HA row; rnnha/paper.py)"]
    for r in rows:
        paper = "-" if r["paper"] is None else f"{r['paper']:.2f}"
        lines.append(f"{r['row']:<28} {r['metric']:>6} {r['ours']:>7.2f} {paper:>7}")
    return "\n".join(lines)


def _options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DataError(f"--option {pair!r} is not KEY=VALUE (e.g. --option repeats=3)")
        options[key] = yaml.safe_load(value)
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnha.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="zoo name, exported folder, hf-hub:ORG/NAME, checkpoint, or imagenet:BACKBONE (zero-shot)")
    parser.add_argument("--dataset", required=True, choices=list_datasets())
    parser.add_argument("--root", required=True, help="dataset folder (csv: the CSV file)")
    parser.add_argument("--list", dest="list_file", help="two-camera: list file of names (default val.txt if present)")
    parser.add_argument("--subset", help="stanford-cars part: all, train or holdout (default holdout)")
    parser.add_argument("--level", help="coarse level to score (default: the model's)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="any other option of the dataset's protocol, e.g. sizes=[800] repeats=3 (vehicleid)")
    parser.add_argument("--flip", action="store_true", help="average each embedding and logit with its mirror image's")
    parser.add_argument("--rerank", choices=("none", *METHODS), default="none",
                        help="re-rank the re-id lists (veri, two-camera, csv): k-reciprocal encoding or average query "
                             "expansion (default none)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    named = {"list_file": args.list_file, "subset": args.subset, "level": args.level,
             "rerank": None if args.rerank == "none" else args.rerank}
    try:
        options = {**{k: v for k, v in named.items() if v is not None}, **_options(args.option)}
        from zoo import load_model  # the command line resolves model names through the catalogue

        predictor = load_model(args.model, device=args.device)
        result = evaluate(predictor, args.dataset, args.root, args.flip, **options)
        config = predictor.model.config
        size = config.input_size[0] if isinstance(config.input_size, list) else config.input_size
        rows = paper_rows(args.dataset, result, config.backbone, size)
    except (ValueError, OSError, LookupError) as exc:  # LookupError: zoo.ZooError, an unknown model name
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {"model": args.model, "dataset": args.dataset, **result}
    print(json.dumps(result, indent=None) if args.json else _format(result) + "\n\n" + _table(rows, config.backbone))
    return 0


if __name__ == "__main__":
    sys.exit(main())
