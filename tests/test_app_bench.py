"""benchmarks/app_bench.py's helpers, on the tiny model: they serve, load, time and report.

The timing targets are the benchmark's (README), not CI's: this only checks the tool.
"""

from __future__ import annotations

import math

import pytest

from benchmarks import app_bench

pytestmark = pytest.mark.slow


def test_both_apps_serve_and_answer_a_small_load(tiny_model_dir):
    with (
        app_bench.serving(app_bench.app_command(tiny_model_dir, concurrency=2)) as app,
        app_bench.serving(app_bench.trivial_command(concurrency=2)) as trivial,
    ):
        [row] = app_bench.compare(app, trivial, app_bench.SLICE, scenarios=[(2, 2)])
        assert app_bench.rss_mb(app.pid) > 100  # TensorFlow alone is more
    for name in ("app", "trivial"):
        answers = row[name]
        assert answers.errors == [] and answers.answered == 2 * 2 * app_bench.RUNS
        assert 0 < answers.p50 <= answers.p95
    assert app_bench.ratio(row) > 0


def test_a_load_past_its_deadline_counts_what_was_not_sent():
    class NeverCalled:
        def submit(self, *args, **kwargs):
            raise AssertionError("sent after the deadline")

    latencies, errors = app_bench._requests(NeverCalled(), app_bench.SLICE, 3, deadline=0.0)
    assert latencies == [] and len(errors) == 3 and "not sent" in errors[0]


def test_table_reports_ratios_and_memory():
    def answers(clients, each, ms):
        return app_bench.Load(clients, each, latencies_ms=[ms] * clients * each * app_bench.RUNS)

    rows = [
        {
            "clients": 1,
            "requests_each": 2,
            "trivial": answers(1, 2, 400),
            "app": answers(1, 2, 440),
        },
        {
            "clients": 8,
            "requests_each": 4,
            "trivial": answers(8, 4, 100),
            "app": answers(8, 4, 130),
        },
    ]
    result = {
        "concurrency": 2,
        "rows": rows,
        "rss_requests": 500,
        "rss_errors": 0,
        "rss_before_mb": 1000.0,
        "rss_after_mb": 1012.4,
    }
    text = app_bench.table([result])
    assert "| 2 | 1 × 2, 2 times | 400 / 400 | 440 / 440 | 1.10 (p50) | 4 / 4 | 0 |" in text
    assert "| 1.30 (p95) |" in text
    assert "| 2 | 500 (0 errors) | 1000 → 1012 | +12 |" in text
    assert math.isnan(app_bench.Load(1, 1).p95)
