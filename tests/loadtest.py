"""Load test of `python app.py` over raw HTTP, loopback only and bounded: CLIENTS concurrent clients each
make REQUESTS mixed /compare and /identify calls on the shipped gallery's images. Every answer must be
identical to the same request made alone; prints throughput (requests/s) and p50 / p95 latency.

    python tests/loadtest.py [--clients 32] [--requests 10] [--env RNNHA_BATCH=8 ...] [--json]

tests/test_app_load.py runs the same function with the issue's 32 x 10 and checks the answers."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apphttp import REPO, Served  # noqa: E402

GALLERY = REPO / "assets" / "gallery"


def requests_mix(app: Served, distinct: int = 12) -> list[tuple]:
    """Distinct requests: half identify one image, half compare its two views (uploaded once each)."""
    cam1 = sorted(GALLERY.glob("*_cam1.jpg"))[:distinct]
    uploads = {p.name: app.upload(p) for p in cam1 + [Path(str(p).replace("_cam1", "_cam2")) for p in cam1]}
    mix = []
    for i, p in enumerate(cam1):
        if i % 2 == 0:
            mix.append(("identify", uploads[p.name], "default", False))
        else:
            mix.append(("compare", uploads[p.name], uploads[p.name.replace("_cam1", "_cam2")], "default", False))
    return mix


def reduced(api: str, event: str, out) -> object:
    """What a user reads of an answer (files come back under fresh names, so they are left out)."""
    if event != "complete":
        return (event, out)
    if api == "identify":
        label, rows, _, _, note, path = out
        return label, rows["data"], note, path
    return out[0], out[1], out[4]


def run_load(app: Served, clients: int = 32, requests: int = 10) -> dict:
    mix = requests_mix(app)
    alone = [reduced(r[0], *app.call(*r)) for r in mix]  # one at a time, the reference answers
    schedule = [[(c * requests + j) % len(mix) for j in range(requests)] for c in range(clients)]

    def client(indices):
        results = []
        for i in indices:
            start = time.perf_counter()
            event, out = app.call(*mix[i])
            results.append((i, reduced(mix[i][0], event, out), time.perf_counter() - start))
        return results

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = [r for rs in pool.map(client, schedule) for r in rs]
    wall = time.perf_counter() - start
    latencies = sorted(seconds for _, _, seconds in done)
    failed = [answer for _, answer, _ in done if isinstance(answer, tuple) and answer[0] in ("error", "http")]
    differ = [i for i, answer, _ in done if answer != alone[i] and answer not in failed]
    return {"clients": clients, "requests_per_client": requests, "requests": len(done), "failed": len(failed),
            "different_from_alone": len(differ), "seconds": round(wall, 2),
            "throughput_rps": round(len(done) / wall, 2),
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
            "first_failures": [str(f)[:200] for f in failed[:3]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for app.py (repeatable)")
    parser.add_argument("--script", default="app.py", help="the app to serve (an experiment's variant)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp, Served(Path(tmp), env, script=args.script) as app:
        app.call(*requests_mix(app, 2)[0])  # warm: model and gallery loaded before timing
        result = run_load(app, args.clients, args.requests)
    result["env"] = env
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['requests']} requests ({args.clients} clients x {args.requests}) in {result['seconds']} s: "
              f"{result['throughput_rps']} requests/s, p50 {result['p50_s']} s, p95 {result['p95_s']} s; "
              f"failed {result['failed']}, different from alone {result['different_from_alone']}")
    return 0 if result["failed"] == 0 and result["different_from_alone"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
