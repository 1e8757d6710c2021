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


def test_flops_per_query_match_torch_count_of_the_prediction():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gpicl_sklearn.model import GPICLConfig, GPICLTransformer

    cfg = GPICLConfig(input_dim=12, num_classes=4, max_len=40, d_model=16, n_layers=3, n_heads=2, head_dim=8)
    model = GPICLTransformer(cfg)
    n, queries = 30, 5
    cache = model.encode_context(model.embed_x(torch.randn(1, n, 12)), torch.randint(0, 4, (1, n)))
    with FlopCounterMode(display=False) as counter:
        model.predict_logits(cache, model.embed_x(torch.randn(1, queries, 12)))
    # torch counts matrix products only: the query's score and mix with its own key/value
    # (2 x head_dim x heads multiply-adds a layer) are element-wise there.
    self_attention = 2 * 2 * cfg.n_heads * cfg.head_dim * cfg.n_layers
    assert counter.get_total_flops() == queries * (speed.model_flops_per_query(cfg, n) - self_attention)


def test_compute_floor_names_the_rates(capsys):
    lines = speed.compute_floor(predict_seconds=0.3, n_queries=1000, budget_seconds=0.014)
    assert "GFLOP" in lines[2] and "bfloat16" in lines[2] and lines[-1].count("|") == 8
