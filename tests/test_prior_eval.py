"""training.prior_eval: held-out prior batches and the scores of checkpoints on them (CPU-sized)."""

import math

import torch

from gpicl_sklearn.checkpoint import save_checkpoint
from gpicl_sklearn.model import GPICLConfig, GPICLTransformer
from training.prior_eval import ROW_BUCKETS, held_out_batches, main, score
from training.priors.mixture import PriorConfig

TABLES = PriorConfig(weights={"mlp": 1, "trees": 1, "clusters": 1}, max_features=6, image_datasets=())
CONFIG = GPICLConfig(input_dim=8, num_classes=10, max_len=64, d_model=32, n_layers=1, n_heads=2, head_dim=16)


def _model(seed: int) -> GPICLTransformer:
    torch.manual_seed(seed)
    return GPICLTransformer(CONFIG).eval()


def test_held_out_batches_are_the_same_every_time_and_name_each_sequence_family(one_thread):
    (first, *_), families = held_out_batches(TABLES, 2, 6, 64, 8, 10)
    (again, *_), _ = held_out_batches(TABLES, 2, 6, 64, 8, 10)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert list(families) == ["mlp", "mlp", "trees", "trees", "clusters", "clusters"]


def test_score_is_the_masked_cross_entropy_and_bucketed_accuracy(one_thread):
    batches, families = held_out_batches(TABLES, 1, 6, 64, 8, 10)
    model = _model(0)
    result = score(model, batches, families)
    x, y, used = batches[0]
    with torch.no_grad():
        logits = model(x, y).masked_fill(~used[:, None, :], float("-inf"))
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    assert math.isclose(result["loss"], expected, rel_tol=1e-5)
    per_family = [result[f"loss {f}"] for f in ("mlp", "trees", "clusters")]
    assert math.isclose(result["loss"], sum(per_family) / 3, rel_tol=1e-5)  # 2 sequences each
    hits = (logits.argmax(-1) == y).float()
    a, b = ROW_BUCKETS[0]
    assert math.isclose(result[f"acc rows {a}-{b}"], hits[:, a:b].mean().item(), rel_tol=1e-6)
    assert "acc rows 500-1024" not in result  # beyond the 64 rows drawn


def test_command_prints_one_row_per_checkpoint(tmp_path, capsys, one_thread):
    meta = dict(preprocessing={}, training={}, metrics={})
    paths = [str(save_checkpoint(_model(s), tmp_path / f"m{s}", **meta)) for s in (0, 1)]
    main([*paths, "--batches", "1", "--batch-size", "3", "--prior", '{"weights": {"mlp": 1}, "max_features": 4}'])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines[1:]] == [f"| {p}" for p in paths]
    assert lines[0].split(" | ")[1:3] == ["loss", "loss mlp"]


def test_prior_baselines_reads_the_context_once_and_scores_every_family(tmp_path, capsys, one_thread):
    from benchmarks import prior_baselines

    model = _model(0)
    (x, y, used), *_ = held_out_batches(TABLES, 1, 6, 64, 8, 10)[0]
    hits = prior_baselines.gpicl_hits(model, x, y, used, 40)
    with torch.no_grad():
        full = model(x, y).masked_fill(~used[:, None, :], float("-inf"))
    assert hits.shape == (6, 24)  # the first query sits where the full sequence's row 40 does
    assert (hits[:, 0] == (full[:, 40].argmax(-1) == y[:, 40]).numpy()).all()
    one_class = prior_baselines.classical_hits(None, x.numpy(), torch.zeros_like(y).numpy(), 40)
    assert one_class.all()  # a context of one class predicts it without fitting
    save_checkpoint(model, tmp_path / "ckpt", preprocessing={}, training={}, metrics={})
    tables = '{"weights": {"mlp": 1, "trees": 1, "clusters": 1}, "max_features": 6, "image_datasets": []}'
    out = tmp_path / "t.md"
    prior_baselines.main(["--quick", "--checkpoint", str(tmp_path / "ckpt"), "--prior", tables, "--out", str(out)])
    text = out.read_text()
    assert all(f"| {n} | {f} |" in text for n in (10, 20) for f in ("mlp", "trees", "clusters"))
    args = ["--quick", "--checkpoint", str(tmp_path / "ckpt"), "--prior", tables, "--by-classes"]
    prior_baselines.main([*args, "--out", str(out)])
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| 10 | ")]
    assert {r[1].split(", ")[0] for r in rows} == {"mlp", "trees", "clusters"}
    assert {r[1].split(", ")[1] for r in rows} <= {"2 classes", "3+ classes"}
    assert sum(int(r[2]) for r in rows) == 8  # every sequence of the quick batch in one group
