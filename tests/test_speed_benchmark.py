"""Smoke test of benchmarks/speed.py: it runs and prints both tables (no timing assertions)."""

from __future__ import annotations

from benchmarks import speed


def test_speed_benchmark_quick(capsys):
    speed.main(["--quick"])
    out = capsys.readouterr().out
    assert "| fit + predict |" in out and "LogisticRegression" in out
    assert "| 10 |" in out and "| 100 |" in out  # one row per query count


def test_speed_benchmark_device_row_on_cpu(capsys):
    # The --device cuda path (100,000 rows of 784 features), run on the CPU at a small size.
    lines = speed.device_row("cpu", n_rows=70, batch_size=32, repeats=1)
    assert "| 70 |" in lines[-1] and "784 features on cpu" in lines[0]
