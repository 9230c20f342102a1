"""One benchmark for speed at every scale: `python -m rnnha.bench [--device cpu|cuda] [--out FILE.json] [--quick]`
(also `rnnha bench`).

It measures, on this machine:
  throughput  images/s at batch 1 and 32, full model vs backbone alone, fp32 vs bf16 (CPU) / fp16 (CUDA),
              channels_last vs contiguous, torch.compile (not with --quick)
  backends    ONNX Runtime fp32 / int8 and OpenVINO: images/s and agreement with PyTorch fp32
  search      exact and approximate (FAISS, rnnha.index) top-5 of 1 and 100 queries over 1k ... 1M
              embeddings: seconds, recall@5, memory, build time
  app         the service's compare / identify vs the model forward of the same images; HTTP /compare
              p50 / p95 against app.py on 127.0.0.1 (in a checkout)
  cold start  process start to first answer (`rnnha compare`), and the model's load time

then prints a table (each headline figure beside its target) and writes the JSON (--out). Images are the
shipped gallery's real vehicle crops; the search runs on synthetic embeddings with the statistics of
the default model's (rnnha.index.synthetic_embeddings). A benchmark prints figures: no test asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .predictor import Predictor, cpu_supports_bf16

__all__ = ["main", "machine", "throughput", "search", "seconds", "interleaved", "rss_bytes", "TARGETS"]

# the targets of issue 18 (docs/performance.md): key -> (comparison, bound)
TARGETS = {
    "heads_overhead_ratio_b1": ("<=", 1.10),
    "heads_overhead_ratio_b32": ("<=", 1.05),
    "bf16_speedup": (">=", 1.8),
    "bf16_min_cosine": (">=", 0.99),
    "fastest_backend_speedup_b1": (">=", 1.5),
    "fastest_backend_min_cosine": (">=", 0.99),
    "search_1m_100q_seconds": ("<=", 0.05),
    "search_1m_recall_at5": (">=", 0.98),
    "search_1m_100q_exact_seconds": ("<=", 1.0),
    "compare_service_ratio": ("<=", 1.3),
}


# --- the machine ----------------------------------------------------------------------------------------

def machine(device: torch.device) -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_supports_bf16(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --- timing -----------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], repeats: int, device: torch.device | None = None, warmup: int = 1) -> float:
    """Median wall time of one call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device is not None:
            _sync(device)
        start = time.perf_counter()
        fn()
        if device is not None:
            _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, calls: int,
                device: torch.device | None = None) -> dict[str, float]:
    """Median seconds per call of each function, measured round by round in turn, so that every function
    sees the same machine state (frequency, other processes) as the others."""
    for fn in fns.values():
        fn()  # warm-up: kernels, allocator, oneDNN primitives
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if device is not None:
                _sync(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            if device is not None:
                _sync(device)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


# --- (a) throughput ----------------------------------------------------------------------------------------

def _half(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def throughput(predictor: Predictor, images: torch.Tensor, quick: bool = False, compile: bool = False,
               half: bool = True) -> dict:
    """Images/s of the full model and the backbone alone at batch 1 and len(images), in fp32 and half
    precision; the heads' overhead (backbone images/s / full images/s) in the faster precision; the
    embeddings' agreement of half precision with fp32; channels_last vs contiguous; torch.compile."""
    model, device = predictor.model, predictor.device
    big = len(images)
    rounds, calls1, callsb = (2, 5, 1) if quick else (3, 10, 1)
    out: dict = {"batch": big, "input": list(images.shape[-2:])}
    fp32 = Predictor(model, device, torch.float32, big)
    reference = fp32.embed(images)
    emulated = device.type == "cpu" and not cpu_supports_bf16()
    if emulated:  # bf16 without AVX-512 BF16 / AMX runs in software, 10-50x slower: a few images tell
        out["half_note"] = "no native bf16 on this CPU: bf16 measured on 2 images, once"
    per_dtype = {}
    for dtype in (torch.float32, _half(device))[:2 if half else 1]:
        p = fp32 if dtype == torch.float32 else Predictor(model, device, dtype, big)
        small = emulated and dtype != torch.float32
        x_big = images[:2] if small else images
        row = {}
        for label, x, calls in (("b1", images[:1], 1 if small else calls1), (f"b{big}", x_big, callsb)):
            t = interleaved({"full": lambda: p.forward(x), "backbone": lambda: p.forward(x, model.backbone)},
                            1 if small else rounds, calls, device)
            row[f"full_images_per_second_{label}"] = round(len(x) / t["full"], 2)
            row[f"backbone_images_per_second_{label}"] = round(len(x) / t["backbone"], 2)
            row[f"heads_overhead_ratio_{label}"] = round(t["full"] / t["backbone"], 3)
        cosine = (p.embed(x_big) * reference[:len(x_big)]).sum(1)
        row["min_cosine_vs_fp32"] = round(float(cosine.min()), 5)
        per_dtype[str(dtype).replace("torch.", "")] = row
    out["precisions"] = per_dtype
    if half:
        reduced, full = per_dtype[str(_half(device)).replace("torch.", "")], per_dtype["float32"]
        out["half_precision"] = str(_half(device)).replace("torch.", "")
        out["half_speedup"] = round(reduced[f"full_images_per_second_b{big}"] /
                                    full[f"full_images_per_second_b{big}"], 3)
        out["half_min_cosine"] = reduced["min_cosine_vs_fp32"]
    best = "float32" if emulated or not half else max(per_dtype, key=lambda k: per_dtype[k][f"full_images_per_second_b{big}"])
    out["best_precision"] = best
    out["default_precision"] = str(predictor.dtype).replace("torch.", "")
    for label in ("b1", f"b{big}"):
        out[f"heads_overhead_ratio_{label}"] = per_dtype[best][f"heads_overhead_ratio_{label}"]
    # memory layout: the Predictor runs channels_last; the same model fed a contiguous batch
    p = Predictor(model, device, getattr(torch, best), big)
    import copy

    contiguous = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # the shared model stays as it is
    layouts = interleaved({"channels_last": lambda: p.forward(images),
                           "contiguous": lambda: _forward_contiguous(p, contiguous, images)}, max(1, rounds // 2), 1, device)
    out["channels_last_speedup"] = round(layouts["contiguous"] / layouts["channels_last"], 3)
    if compile and not quick:
        out["compile"] = _compiled(p, images)
    return out


@torch.inference_mode()
def _forward_contiguous(p: Predictor, model: torch.nn.Module, batch: torch.Tensor):
    """`model` (a contiguous copy of p's) on a contiguous batch, in p's precision."""
    with torch.autocast(p.device.type, dtype=p.dtype, enabled=p.dtype != torch.float32):
        return model(batch.to(p.device).contiguous())


def _compiled(p: Predictor, images: torch.Tensor) -> dict:
    """torch.compile of the full model: compile time and the speed-up at batch 1 and the full batch."""
    try:
        start = time.perf_counter()
        compiled = torch.compile(p.model)
        run = lambda x: _run(p, compiled, x)  # noqa: E731
        run(images[:1])
        run(images)
        compile_seconds = time.perf_counter() - start
        out = {"compile_seconds": round(compile_seconds, 1)}
        for label, x, calls in (("b1", images[:1], 10), (f"b{len(images)}", images, 1)):
            t = interleaved({"eager": lambda: _run(p, p.model, x), "compiled": lambda: run(x)}, 3, calls, p.device)
            out[f"speedup_{label}"] = round(t["eager"] / t["compiled"], 3)
        return out
    except Exception as exc:  # noqa: BLE001 - a compiler that cannot build here is a figure, not a crash
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}


@torch.inference_mode()
def _run(p: Predictor, module, batch: torch.Tensor):
    with torch.autocast(p.device.type, dtype=p.dtype, enabled=p.dtype != torch.float32):
        return module(batch.to(p.device).contiguous(memory_format=torch.channels_last))


# --- (b) export backends -------------------------------------------------------------------------------------

def backends(predictor: Predictor, images: torch.Tensor, quick: bool = False) -> dict:
    """Each exported backend (rnnha.runtime): images/s at batch 1 and 32, agreement with PyTorch fp32."""
    from . import runtime

    with tempfile.TemporaryDirectory(prefix="rnnha-bench-") as folder:
        return runtime.backend_table(predictor, images, folder, quick=quick)


# --- (c) search ----------------------------------------------------------------------------------------------

def rss_bytes() -> int:
    """This process's resident memory in bytes (Linux; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


# rnnha.index's approximate index (HNSW) takes 13-17 minutes to build over 1M x 1024 on 2 cores
# (docs/index.md), more than this whole benchmark may take: from 1M on, unless --approximate names one,
# the benchmark times an IVF index whose build is bounded (1,024 lists, nprobe tuned on 200 queries)
BOUNDED_BUILD_FROM = 1_000_000
BOUNDED_BUILD = {"nlist": 1024, "tuning_queries": 200}
BOUNDED_BUILD_NOTE = ("IVF with a bounded build (1,024 lists): `rnnha index build` makes HNSW here, whose build "
                      "over 1M takes 13-17 min on 2 cores; --approximate hnsw times that one")


def search(dim: int, sizes: list[int], k: int = 5, approximate: str | None = None) -> dict:
    """Exact and approximate top-k over each gallery size, for 1 and 100 queries: seconds (median),
    recall@k of the approximate index against the exact one, memory and build time (rnnha.index).
    approximate: "hnsw" or "ivf" at every size; None: rnnha.index's kind, and from BOUNDED_BUILD_FROM
    on an IVF index with a bounded build."""
    from .index import APPROXIMATE_KIND, build_faiss_index, synthetic_embeddings

    rows = []
    for n in sizes:
        gallery, queries = synthetic_embeddings(n, dim)
        row = {"gallery": n, "dim": dim}
        kind, options = (approximate, {}) if approximate else \
            ("ivf", BOUNDED_BUILD) if n >= BOUNDED_BUILD_FROM else (APPROXIMATE_KIND, {})
        if options:
            row["approximate_note"] = BOUNDED_BUILD_NOTE
        exact = _search_one(lambda v: build_faiss_index(v, "flat"), gallery, queries, "exact", k, row)
        approx = _search_one(lambda v: build_faiss_index(v, kind, **options), gallery, queries, "approximate", k, row)
        row[f"recall_at{k}"] = round(float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)])), 4)
        rows.append(row)
        del gallery
    return {"rows": rows, "data": "synthetic unit vectors with the default model's statistics (rnnha.index.synthetic_embeddings)"}


def _search_one(build, gallery: np.ndarray, queries: np.ndarray, kind: str, k: int, row: dict) -> np.ndarray:
    """Build one kind of index over the gallery, time it into `row`, and return its top-k of the queries."""
    before, start = rss_bytes(), time.perf_counter()
    index, info = build(gallery)
    row[f"{kind}_build_seconds"] = round(time.perf_counter() - start, 2)
    row[f"{kind}_memory_mb"] = round(max(0, rss_bytes() - before) / 2**20, 1)
    row[f"{kind}_1q_seconds"] = round(seconds(lambda: index.search(queries[:1], k), 10), 5)
    row[f"{kind}_100q_seconds"] = round(seconds(lambda: index.search(queries, k), 3), 4)
    row[f"{kind}_index"] = {k: v for k, v in info.items() if k != "tuning"}
    return index.search(queries, k)[1]


# --- (d) the app ---------------------------------------------------------------------------------------------

def app_service(predictor: Predictor, paths: list[Path], quick: bool = False) -> dict:
    """The service's compare and identify (decode, embed, overlays, search) against the model forward of
    the same images, already preprocessed: what the app adds to the model's own time."""
    from .gallery import Gallery, items_from_folder
    from .service import ReidService

    repeats = 5 if quick else 15
    pair = paths[:2]
    batch2, batch1 = predictor.preprocess(pair), predictor.preprocess(pair[:1])
    with tempfile.TemporaryDirectory(prefix="rnnha-bench-") as cache:
        gallery = Gallery.build(predictor, items_from_folder(paths[0].parent), cache)
    service = ReidService(predictor, gallery)
    t = interleaved({"compare": lambda: service.compare(*pair), "forward2": lambda: predictor.forward(batch2),
                     "identify": lambda: service.identify(pair[0]), "forward1": lambda: predictor.forward(batch1)},
                    repeats, 1, predictor.device)
    return {"compare_seconds": round(t["compare"], 4), "forward_2_images_seconds": round(t["forward2"], 4),
            "compare_service_ratio": round(t["compare"] / t["forward2"], 3),
            "identify_seconds": round(t["identify"], 4), "forward_1_image_seconds": round(t["forward1"], 4),
            "identify_service_ratio": round(t["identify"] / t["forward1"], 3), "gallery": len(gallery)}


def app_http(paths: list[Path], requests: int) -> dict:
    """app.py of this checkout on 127.0.0.1: process start to its first /compare answer, then `requests`
    sequential /compare calls through gradio_client (p50, p95)."""
    import socket

    root = Path(__file__).resolve().parents[1]
    if not (root / "app.py").is_file():
        return {"skipped": "no app.py: run the benchmark in a checkout for the HTTP figures"}
    from gradio_client import Client, handle_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="rnnha-bench-app-") as work:
        env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
               "RNNHA_CACHE": f"{work}/cache", "GRADIO_TEMP_DIR": f"{work}/gradio", "MPLCONFIGDIR": f"{work}/mpl",
               "GRADIO_ANALYTICS_ENABLED": "False"}
        start = time.perf_counter()
        with open(f"{work}/app.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = _connect(Client, f"http://127.0.0.1:{port}", proc, deadline=start + 300)
            a, b = handle_file(str(paths[0])), handle_file(str(paths[1]))
            call = lambda: client.predict(a, b, "default", False, api_name="/compare")  # noqa: E731
            call()
            first = time.perf_counter() - start
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    times.sort()
    return {"app_start_to_first_compare_seconds": round(first, 2), "requests": requests,
            "http_compare_p50_seconds": round(statistics.median(times), 4),
            "http_compare_p95_seconds": round(times[min(len(times) - 1, int(0.95 * len(times)))], 4)}


def _connect(client_class, url: str, proc: subprocess.Popen, deadline: float):
    while True:
        try:
            return client_class(url, verbose=False)
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with status {proc.returncode}") from None
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.5)


# --- (e) cold start -----------------------------------------------------------------------------------------

def cold_start(model: str, paths: list[Path], device: str | None, load: Callable[[], object]) -> dict:
    """`rnnha compare A B` from process start to its answer (a fresh interpreter: imports, model load,
    two images), and the model's load time within a running process."""
    command = [sys.executable, "-m", "zoo.cli", "compare", str(paths[0]), str(paths[1]), "--json", "--model", model]
    if device:
        command += ["--device", device]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1, 3):
        return {"error": done.stderr.strip()[-300:]}
    return {"cold_start_seconds": round(elapsed, 2), "model_load_seconds": round(seconds(load, 3, warmup=0), 3)}


# --- the report -------------------------------------------------------------------------------------------

def headline(results: dict) -> dict:
    """The top-level keys of the JSON (issue 18), from the sections' figures; None where not measured."""
    t, b, a, c = (results.get(k) or {} for k in ("throughput", "backends", "app", "cold_start"))
    big = t.get("batch", 32)
    one_million = next((r for r in (results.get("search") or {}).get("rows", []) if r["gallery"] == 1_000_000), {})
    return {
        "heads_overhead_ratio_b1": t.get("heads_overhead_ratio_b1"),
        "heads_overhead_ratio_b32": t.get(f"heads_overhead_ratio_b{big}"),
        "bf16_speedup": t.get("half_speedup"),
        "bf16_min_cosine": t.get("half_min_cosine"),
        "fastest_backend": b.get("fastest_backend"),
        "fastest_backend_speedup_b1": b.get("fastest_backend_speedup_b1"),
        "fastest_backend_min_cosine": b.get("fastest_backend_min_cosine"),
        "search_1m_100q_seconds": one_million.get("approximate_100q_seconds"),
        "search_1m_recall_at5": one_million.get("recall_at5"),
        "search_1m_100q_exact_seconds": one_million.get("exact_100q_seconds"),
        "compare_service_ratio": a.get("compare_service_ratio"),
        "cold_start_seconds": c.get("cold_start_seconds"),
        "machine": results["machine"],
    }


def table(summary: dict, results: dict) -> str:
    m = summary["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores ({m['threads']} threads), {m['cpu_capability']}, "
             f"native bf16: {m['native_bf16']}, torch {m['torch']}, device {m['device']}" +
             (f" ({m['gpu']})" if "gpu" in m else ""),
             "", f"{'figure':34} {'measured':>12} {'target':>10}  ", "-" * 64]
    for key, value in summary.items():
        if key == "machine":
            continue
        shown = "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
        target, verdict = "", ""
        if key in TARGETS:
            op, bound = TARGETS[key]
            target = f"{op} {bound:g}"
            if isinstance(value, (int, float)):
                verdict = "met" if (value <= bound if op == "<=" else value >= bound) else "MISSED"
        lines.append(f"{key:34} {shown:>12} {target:>10}  {verdict}")
    t = results.get("throughput") or {}
    for name, row in (t.get("precisions") or {}).items():
        lines.append(f"{name:>9}: " + ", ".join(f"{k.replace('_images_per_second', '')} {v}" for k, v in row.items()))
    for row in (results.get("search") or {}).get("rows", []):
        lines.append(f"search {row['gallery']:>9,}: exact {row['exact_100q_seconds']} s / 100 q, "
                     f"approx {row['approximate_100q_seconds']} s (recall@5 {row['recall_at5']}, "
                     f"{_described(row['approximate_index'])}, build {row['approximate_build_seconds']} s)")
    return "\n".join(lines)


def _described(info: dict) -> str:
    return info["kind"] + "".join(f" {k}={info[k]}" for k in ("nlist", "nprobe", "ef_search", "M") if k in info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnha.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="zoo name, folder, hf-hub:ORG/NAME or checkpoint")
    parser.add_argument("--device", help="cpu, cuda ... (default: the best available)")
    parser.add_argument("--out", help="write the JSON here (default: print it)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, galleries up to 100k (< 2 min)")
    parser.add_argument("--batch", type=int, default=32, help="the large batch (default 32)")
    parser.add_argument("--sizes", type=lambda text: [int(float(v)) for v in text.split(",")],
                        help="gallery sizes to search, e.g. 1e3,1e4 (default 1e3,1e4,1e5,1e6; --quick: up to 1e5)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="measure torch.compile too (default: on, except with --quick)")
    parser.add_argument("--no-half", dest="half", action="store_false",
                        help="skip bf16 / fp16 (slow to measure on a CPU without native bf16)")
    parser.add_argument("--approximate", choices=["hnsw", "ivf"], help="the approximate index to time "
                        "(default: the one rnnha.index builds)")
    parser.add_argument("--only", action="append", choices=["throughput", "backends", "search", "app", "cold_start"],
                        help="run only these sections (repeatable)")
    args = parser.parse_args(argv)
    from zoo import load_model  # the command line resolves model names through the catalogue
    from zoo.entries import ASSETS

    sections = set(args.only or ["throughput", "backends", "search", "app", "cold_start"])
    predictor = load_model(args.model, device=args.device)
    paths = sorted((ASSETS / "gallery").glob("*.jpg"))[:args.batch]
    images = predictor.preprocess(paths)
    results: dict = {"machine": machine(predictor.device), "model": args.model, "quick": args.quick}
    runs = {
        "throughput": lambda: throughput(predictor, images, args.quick,
                                         args.compile if args.compile is not None else not args.quick, args.half),
        "backends": lambda: backends(predictor, images, args.quick),
        "search": lambda: search(predictor.model.embedding_dim, args.sizes or
                                 [1_000, 10_000, 100_000] + ([] if args.quick else [1_000_000]),
                                 approximate=args.approximate),
        "app": lambda: {**app_service(predictor, paths, args.quick), **app_http(paths, 8 if args.quick else 30)},
        "cold_start": lambda: cold_start(args.model, paths, args.device,
                                         lambda: load_model(args.model, device=args.device)),
    }
    for name, run in runs.items():
        if name not in sections:
            continue
        start = time.perf_counter()
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        try:
            results[name] = run()
        except ImportError as exc:  # an optional extra (faiss, onnxruntime, openvino) is missing
            results[name] = {"skipped": str(exc)}
        results[name]["section_seconds"] = round(time.perf_counter() - start, 1)
        print(f"[{name}] {results[name]['section_seconds']} s", file=sys.stderr, flush=True)
        if args.out:  # after every section: a run stopped part way keeps what it measured
            _write(args.out, results, finished=False)
    print(table(headline(results), results))
    if args.out:
        _write(args.out, results, finished=True)
        print(f"wrote {args.out}")
    else:
        print(json.dumps(_document(results, finished=True), indent=1))
    return 0


def _document(results: dict, finished: bool) -> dict:
    return {**headline(results), "finished": finished,
            "sections": {k: v for k, v in results.items() if k != "machine"}}


def _write(path: str, results: dict, finished: bool) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, json.dumps(_document(results, finished), indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
