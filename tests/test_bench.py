"""python -m rnnha.bench: every headline key in the JSON, figures that hang together, the table's
verdicts. Small sizes and one tiny model: a benchmark prints figures, no test asserts a speed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rnnha.bench import TARGETS, app_service, headline, main, table

ASSETS = Path(__file__).resolve().parents[1] / "assets"
HEADLINE = ["heads_overhead_ratio_b1", "heads_overhead_ratio_b32", "bf16_speedup", "bf16_min_cosine",
            "fastest_backend", "fastest_backend_speedup_b1", "fastest_backend_min_cosine", "search_1m_100q_seconds",
            "search_1m_recall_at5", "search_1m_100q_exact_seconds", "compare_service_ratio", "cold_start_seconds",
            "machine"]


def test_bench_writes_the_json_with_every_key(tmp_path, capsys):
    pytest.importorskip("faiss", reason="the search section needs faiss-cpu (pip install 'rnnha[index]')")
    out = tmp_path / "bench.json"
    assert main(["--model", "imagenet:efficientnet_lite0", "--quick", "--batch", "2", "--no-half", "--no-compile",
                 "--only", "throughput", "--only", "search", "--only", "cold_start", "--sizes", "1500",
                 "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert list(document)[:len(HEADLINE)] == HEADLINE and document["finished"] is True
    machine = document["machine"]
    assert machine["cores"] >= 1 and machine["torch"] and machine["device"] == "cpu"
    throughput = document["sections"]["throughput"]["precisions"]["float32"]
    for size in ("b1", "b2"):  # the ratio is backbone images/s over the full model's
        ratio = throughput[f"backbone_images_per_second_{size}"] / throughput[f"full_images_per_second_{size}"]
        assert throughput[f"heads_overhead_ratio_{size}"] == pytest.approx(ratio, rel=0.05)
    assert document["heads_overhead_ratio_b1"] == throughput["heads_overhead_ratio_b1"]
    assert throughput["min_cosine_vs_fp32"] > 0.9999
    (row,) = document["sections"]["search"]["rows"]
    assert row["gallery"] == 1500 and 0.5 <= row["recall_at5"] <= 1 and row["exact_index"]["kind"] == "flat"
    assert document["search_1m_100q_seconds"] is None  # no million-vector gallery in this run
    assert document["cold_start_seconds"] > 0 and document["sections"]["cold_start"]["model_load_seconds"] > 0
    printed = capsys.readouterr().out
    assert "machine:" in printed and f"wrote {out}" in printed


def test_the_service_is_timed_against_the_forward_of_the_same_images(tmp_path):
    from zoo import load_model

    for image in sorted((ASSETS / "gallery").glob("*.jpg"))[:3]:
        shutil.copy(image, tmp_path)
    figures = app_service(load_model("imagenet:efficientnet_lite0"), sorted(tmp_path.glob("*.jpg")), quick=True)
    assert figures["gallery"] == 3
    assert figures["compare_service_ratio"] == pytest.approx(
        figures["compare_seconds"] / figures["forward_2_images_seconds"], rel=0.01)
    assert figures["identify_service_ratio"] > 0


def test_the_table_marks_each_target_met_or_missed():
    summary = headline({"machine": {"cpu": "x", "cores": 2, "threads": 2, "cpu_capability": "AVX2", "native_bf16": False,
                                    "torch": "2", "device": "cpu"},
                        "throughput": {"batch": 32, "heads_overhead_ratio_b1": 1.2, "heads_overhead_ratio_b32": 1.01},
                        "app": {"compare_service_ratio": 1.1}})
    lines = {line.split()[0]: line for line in table(summary, {}).splitlines()[2:] if line.strip()}
    assert lines["heads_overhead_ratio_b1"].endswith("MISSED") and lines["heads_overhead_ratio_b32"].endswith("met")
    assert lines["compare_service_ratio"].endswith("met") and lines["bf16_speedup"].split()[1] == "-"
    assert set(TARGETS) <= set(summary)
