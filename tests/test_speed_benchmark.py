"""Smoke test of benchmarks/speed.py: it runs and prints both tables (no timing assertions)."""

from __future__ import annotations

from benchmarks import speed


def test_speed_benchmark_quick(capsys):
    speed.main(["--quick"])
    out = capsys.readouterr().out
    assert "| fit + predict |" in out and "LogisticRegression" in out
    assert "| 10 |" in out and "| 100 |" in out  # one row per query count
