"""Load: 32 concurrent clients x 4 mixed /compare and /identify requests over raw HTTP against
`python app.py` (loopback, bounded). No request fails and every answer is identical to the same request
made alone. The figures (throughput, p50 / p95) are printed; `python tests/loadtest.py` runs the issue's
32 x 10 and gives them on their own (docs/app.md)."""
from __future__ import annotations

import pytest

from apphttp import Served
from loadtest import requests_mix, run_load

pytestmark = pytest.mark.slow


def test_32_clients_x_4_requests_answer_as_one_at_a_time(tmp_path, capsys, gallery_cache):
    with Served(tmp_path, seed=gallery_cache) as app:
        app.call(*requests_mix(app, 2)[0])  # warm
        result = run_load(app, clients=32, requests=4)
        assert app.alive()
    with capsys.disabled():
        print(f"\nload: {result['throughput_rps']} requests/s, p50 {result['p50_s']} s, p95 {result['p95_s']} s")
    assert result["requests"] == 128 and result["failed"] == 0, result["first_failures"]
    assert result["different_from_alone"] == 0
