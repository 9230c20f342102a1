"""The `rnnha` command: one entry point for everything a user does from a shell.

    rnnha identify car.jpg [--gallery DIR] [--json]    car model / type and the closest gallery images
    rnnha compare a.jpg b.jpg [--json]                 cosine similarity and same-vehicle verdict
    rnnha train --config RECIPE [key=value ...]        = python -m rnnha.train
    rnnha evaluate --model M --dataset KIND --root DIR = python -m rnnha.evaluate
    rnnha export CHECKPOINT|MODEL FOLDER [--format onnx] = python -m rnnha.export
    rnnha push FOLDER ORG/NAME [--private]             upload a model folder to the Hub
    rnnha bench [--quick] [--out FILE.json]            = python -m rnnha.bench
    rnnha index build SOURCE OUT [--model M]           = python -m rnnha.index: a FAISS index of a million images
    rnnha index search OUT IMAGE... [--k 5] [--json]     (resumable, torchrun-sharded builds; docs/index.md)
    rnnha app                                          the Gradio app of a checkout (app.py)

Exit status: 0 done (compare: same vehicle), 1 compare: different vehicles, 2 a usage or input error
(the message says what to change), 3 compare: no calibrated threshold to decide with.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]

# subcommands that are another module's command line, passed through unchanged
DELEGATED = {"train": "rnnha.train", "evaluate": "rnnha.evaluate", "export": "rnnha.export",
             "bench": "rnnha.bench", "index": "rnnha.index"}


def _cache_dir() -> Path:
    return Path(os.environ.get("RNNHA_CACHE") or Path.home() / ".cache" / "rnnha")


def _service(model: str, gallery: str | None, device: str | None, search: bool = True):
    from rnnha.gallery import Gallery, items_from_folder
    from rnnha.service import ReidService

    from . import load_model
    from .entries import ASSETS

    predictor = load_model(model, device=device)
    folder = Path(gallery) if gallery else ASSETS / "gallery"
    if search and gallery and (folder / "manifest.json").is_file():  # an index folder (rnnha index build)
        from rnnha.index import IndexGallery

        return ReidService(predictor, IndexGallery.open(folder, predictor), overlays=False)
    items = items_from_folder(folder) if search and (gallery or folder.is_dir()) else []
    built = Gallery.build(predictor, items, cache_dir=_cache_dir() / "galleries") if items else None
    return ReidService(predictor, built, overlays=False)  # a terminal shows no overlays


def identify(args) -> int:
    from rnnha.service import path_text

    service = _service(args.model, args.gallery, args.device)
    if service.gallery is None:
        raise ValueError("no gallery to search: pass --gallery DIR (a folder of images)")
    result = service.identify(args.image, name=Path(args.image).name, topk=args.topk)
    matches = [{"rank": m.rank, "similarity": round(m.similarity, 4), "image": str(m.item.path),
                "vehicle": m.item.vehicle, "camera": m.item.camera, "correct": m.correct} for m in result.matches]
    if args.json:
        print(json.dumps({"image": args.image, "level": result.coarse_level,
                          "top": [{"label": k, "probability": round(v, 4)} for k, v in result.coarse.items()],
                          "path": [{"level": s.level, "label": s.label, "probability": round(s.probability, 4),
                                    "sure": s.sure} for s in result.path],
                          "matches": matches}))
        return 0
    answer = result.answer
    print(f"{args.image}: {answer.label if answer else 'not sure'} ({path_text(result.path)})")
    print(f"top {len(result.coarse)} {result.coarse_level}:")
    for label, probability in result.coarse.items():
        print(f"  {probability:6.1%}  {label}")
    print(f"closest of {len(service.gallery)} gallery images (cosine similarity):")
    for m in matches:
        mark = {True: "  same vehicle", False: "  other vehicle", None: ""}[m["correct"]]
        print(f"  {m['rank']}. {m['similarity']:.3f}  {m['image']}{mark}")
    return 0


def compare(args) -> int:
    service = _service(args.model, None, args.device, search=False)
    result = service.compare(args.first, args.second)
    verdict = {True: "same vehicle", False: "different vehicles", None: "no calibrated threshold"}[result.same]
    if args.json:
        print(json.dumps({"similarity": round(result.similarity, 4), "same_vehicle": result.same,
                          "probability_same_vehicle": None if result.probability is None else round(result.probability, 4),
                          "threshold": result.threshold, "threshold_source": service.threshold_source}))
    else:
        threshold = "" if result.threshold is None else f" (threshold {result.threshold:.3f})"
        probability = "" if result.probability is None else f", probability of the same vehicle {result.probability:.0%}"
        print(f"cosine similarity {result.similarity:.3f}: {verdict}{threshold}{probability}")
    return {True: 0, False: 1, None: 3}[result.same]


def push(args) -> int:
    from rnnha.hub import push_folder

    print(push_folder(args.folder, args.repo, private=args.private, revision=args.revision))
    return 0


def app(args) -> int:
    """The Gradio app is app.py of a checkout (the Space's entry point), next to this package; it runs
    there as `python3 app.py` would, configured by its environment variables (docs/app.md)."""
    import runpy

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if rest in (["-h"], ["--help"]):
        print("usage: rnnha app\n\nStarts the Gradio app of this checkout (app.py) on http://127.0.0.1:7860. "
              "It takes no arguments: set GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, GRADIO_MCP_SERVER=True, "
              "RNNHA_CACHE ... (docs/app.md).")
        return 0
    if rest:
        raise ValueError(f"rnnha app takes no arguments, got {' '.join(rest)}; set environment variables "
                         "instead (rnnha app --help)")
    root = Path(__file__).resolve().parents[1]
    if not (root / "app.py").is_file() or not (root / "pyproject.toml").is_file():
        raise ValueError("`rnnha app` runs app.py of a checkout: git clone the project and `pip install -e .` "
                         "there (a plain `pip install .` has no app)")
    os.chdir(root)  # as `python3 app.py` in the checkout: the shipped gallery is under the working folder
    sys.argv = [str(root / "app.py")]
    runpy.run_path(str(root / "app.py"), run_name="__main__")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnha", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(p):
        p.add_argument("--model", default="default",
                       help="zoo name, model folder, hf-hub:ORG/NAME, checkpoint or imagenet:BACKBONE (default: default)")
        p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the best available)")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("identify", help="car model / type and the closest gallery images")
    p.add_argument("image")
    p.add_argument("--gallery", help="a folder of images to search, or an index folder (rnnha index build); "
                                     "default: the shipped demo gallery")
    p.add_argument("--topk", type=int, default=5, choices=range(1, 51), metavar="K", help="1 to 50 (default 5)")
    common(p)
    p.set_defaults(run=identify)
    p = sub.add_parser("compare", help="cosine similarity and same-vehicle verdict of two images")
    p.add_argument("first")
    p.add_argument("second")
    common(p)
    p.set_defaults(run=compare)
    p = sub.add_parser("push", help="upload a model folder to a Hub model repo")
    p.add_argument("folder")
    p.add_argument("repo", metavar="ORG/NAME")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch (default: main)")
    p.set_defaults(run=push)
    p = sub.add_parser("app", help="start the Gradio app (app.py of a checkout)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(run=app)
    for name, module in DELEGATED.items():
        p = sub.add_parser(name, help=f"= python -m {module} (see rnnha {name} --help)", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:  # its own command line, flags and --help included
        import importlib

        return _guarded(lambda: importlib.import_module(DELEGATED[argv[0]]).main(argv[1:]) or 0)
    if argv and argv[0] == "app":
        argv = ["app", "--", *argv[1:]]  # everything after `app` is the app's
    args = _parser().parse_args(argv)
    return _guarded(lambda: args.run(args))


def _guarded(run) -> int:
    """Exit status 2 with one line for every failure, so that no crash reads as compare's 1 ("different
    vehicles"); RNNHA_DEBUG=1 prints the traceback too."""
    try:
        return run()
    except SystemExit as exc:  # a delegated command line's `raise SystemExit("error: ...")`
        if exc.code in (None, 0) or isinstance(exc.code, int):
            return 2 if exc.code == 1 else (exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a command line ends with one line, whatever broke
        if os.environ.get("RNNHA_DEBUG"):
            raise
        kind = "" if isinstance(exc, (ValueError, OSError, LookupError)) else f"{type(exc).__name__}: "
        print(f"error: {kind}{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
