"""An experiment, not the shipped app: app.py with /identify and /compare batched by Gradio
(`batch=True`, max_batch_size RNNHA_BATCH, default 8), one model forward per batch. It is what
`python tests/loadtest.py --script tests/app_batched.py` measures against app.py (README, "Limits and
safety"). app.py does not batch because a batched Gradio function answers every request of its batch
with the error of any one of them, and is handed one session's State for the whole batch; here the
experiment uses the shipped gallery only, and the first request's model for its whole batch."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import app  # noqa: E402

BATCH = int(os.environ.get("RNNHA_BATCH", 8))


def per_flag(many, items, raws) -> list:
    """many(items, raw=flag) called once per distinct raw flag, results back in the requests' order."""
    results = [None] * len(items)
    for flag in {app._flag(raw) for raw in raws}:
        chosen = [i for i, raw in enumerate(raws) if raw is flag]
        for i, result in zip(chosen, many([items[i] for i in chosen], raw=flag)):
            results[i] = result
    return results


def identify_batch(images, models, raws):
    svc = app.service(app._model(models[0]))
    uploads = [app._upload(image) for image in images]
    results = per_flag(lambda items, raw: svc.identify_many([p for p, _ in items], [n for _, n in items], raw=raw),
                       uploads, raws)
    return [list(column) for column in zip(*(app.identify_outputs(svc, r) for r in results))]


def compare_batch(firsts, seconds, models, raws):
    svc = app.service(app._model(models[0]))
    pairs = [(app._upload(a)[0], app._upload(b)[0]) for a, b in zip(firsts, seconds)]
    results = per_flag(svc.compare_many, pairs, raws)
    return [list(column) for column in zip(*(app.compare_outputs(svc, r) for r in results))]


demo = app.build_demo()
for fn in demo.fns.values():
    if fn.api_name in ("identify", "compare"):
        fn.batch, fn.max_batch_size = True, BATCH
        if fn.api_name == "identify":
            fn.fn, fn.inputs = identify_batch, [fn.inputs[0], fn.inputs[1], fn.inputs[3]]  # no session State
        else:
            fn.fn = compare_batch
app.launch(demo)
