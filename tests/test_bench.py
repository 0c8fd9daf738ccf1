"""benchmarks/bench.py on the bundled model and a few real Br35H files: it times the
whole pipeline, the plane gate and the type network each against a copy without it,
and prints the table. The timings themselves are the README's, not CI's."""

from __future__ import annotations

import pytest
from conftest import BR35H, PRETRAINED, require

from benchmarks import bench


@pytest.mark.slow
def test_bench_times_the_gate_and_the_type_network_and_prints_the_table():
    require(BR35H.is_dir(), f"Br35H data not found at {BR35H}")
    row = bench.measure(PRETRAINED, BR35H, repeats=8, batch=8)
    gate_with, gate_without = row["gate_ms"]
    type_with, type_without = row["type_ms"]  # some of Br35H's yes/ slices are labelled tumour
    assert min(gate_with, gate_without, type_with, type_without, row["p50_ms"]) > 0
    assert row["batch_per_s"] > 0 and row["size_mb"] > 1
    lines = bench.table([row]).splitlines()
    assert "type network: predict p50 with / without" in lines[0]
    assert lines[2].startswith("| pretrained | default |")
    assert len(lines[2].split("|")) == len(lines[0].split("|"))
