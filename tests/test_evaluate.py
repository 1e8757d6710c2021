"""Tests of training.evaluate (meta-test protocol) and training.publish (run -> checkpoint)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_tiny_mnist
from torch import nn

from gpicl_sklearn.checkpoint import load_checkpoint
from training import publish
from training.config import TrainConfig
from training.data import load_dataset
from training.evaluate import evaluate_datasets, load_run, meta_test, summarise
from training.evaluate import main as evaluate_main
from training.learners import build_learner
from training.tasks import task_permutation, task_projection
from training.train import train

TINY_LEARNER = {"d_model": 32, "n_layers": 1, "n_heads": 2, "head_dim": 16, "max_len": 10}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def offline_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``GPICL_DATA_ROOT`` holding only a tiny 8x8 'mnist' (4 classes); no torchvision, so
    every other stored dataset is unavailable, as offline."""
    write_tiny_mnist(tmp_path / "data", n_train=120, n_test=40)
    monkeypatch.setenv("GPICL_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` fails
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    return tmp_path / "data"


def tiny_learner(input_dim: int = 48, num_classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_learner("transformer", input_dim, num_classes, **TINY_LEARNER)


def points(n: int = 12, dim: int = 16, num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(n) % num_classes


class Recorder(nn.Module):
    """Records what it is shown; predicts ``(y + shift) mod C`` (shift 0: an oracle)."""

    def __init__(self, num_classes: int, shift: int = 0):
        super().__init__()
        self.num_classes, self.shift, self.seen = num_classes, shift, []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.clone(), y.clone()))
        return F.one_hot((y + self.shift) % self.num_classes, self.num_classes).float()


# --- meta_test -----------------------------------------------------------------------------


def test_meta_test_shape_dtype_and_determinism():
    x, y = points()
    learner = tiny_learner()
    kw = dict(out_dim=48, num_classes=4, n_tasks=3, n_seqs=2, length=7)
    correct = meta_test(learner, x, y, seed=1, **kw)
    assert correct.shape == (3, 2, 7) and correct.dtype == np.bool_
    assert np.array_equal(correct, meta_test(learner, x, y, seed=1, **kw))

    a, b = Recorder(4), Recorder(4)
    meta_test(a, x, y, seed=1, **kw)
    meta_test(b, x, y, seed=2, **kw)
    assert not torch.equal(a.seen[0][0], b.seen[0][0])  # another seed, other tasks


def test_meta_test_scores_argmax_against_the_permuted_labels():
    x, y = points()
    kw = dict(out_dim=48, num_classes=4, n_tasks=2, n_seqs=3, length=5)
    assert meta_test(Recorder(4), x, y, **kw).all()
    assert not meta_test(Recorder(4, shift=1), x, y, **kw).any()


def test_unseen_tasks_are_fresh_projections_with_permuted_labels():
    x, y = points()
    rec = Recorder(4)
    meta_test(rec, x, y, out_dim=48, num_classes=4, n_tasks=6, n_seqs=2, length=8)
    assert len(rec.seen) == 6 and all(xs.shape == (2, 8, 48) for xs, _ in rec.seen)
    # A split of one example of class c shows rho_t(c) in task t; the same seed gives the same
    # tasks whatever c, so each task's label map can be read off class by class.
    maps = []
    for c in range(4):
        one = Recorder(4)
        meta_test(one, x[:1], torch.tensor([c]), out_dim=48, num_classes=4, n_tasks=6, n_seqs=2, length=8)
        maps.append([ys[0, 0].item() for _, ys in one.seen])
    maps = list(zip(*maps, strict=True))  # per task: (rho_t(0), ..., rho_t(3))
    assert all(sorted(m) == [0, 1, 2, 3] for m in maps)
    assert len(set(maps)) >= 4, "every unseen task draws its own label permutation"
    # each task projects afresh: no input of task 1 is an input of task 0, nor of training task 0
    assert torch.cdist(rec.seen[1][0].flatten(0, 1), rec.seen[0][0].flatten(0, 1)).min() > 1e-2
    a0 = task_projection(0, 16, 48, task_seed=0)
    assert torch.cdist(rec.seen[0][0].flatten(0, 1), x @ a0).min() > 1e-2


def test_seen_tasks_regenerate_the_training_tasks_by_index():
    x, y = points()
    rec = Recorder(4)
    correct = meta_test(rec, x, y, out_dim=48, num_classes=4, n_seqs=3, length=6, task_ids=[2, 0], task_seed=3)
    assert correct.shape == (2, 3, 6)
    for (xs, ys), k in zip(rec.seen, [2, 0], strict=True):
        candidates = x @ task_projection(k, 16, 48, task_seed=3)  # (N, 48)
        dist = torch.cdist(xs.flatten(0, 1), candidates)
        best = dist.min(dim=1)
        assert (best.values < 1e-4).all(), f"inputs of task {k} are not x @ A_{k}"
        perm = task_permutation(k, 4, task_seed=3)
        assert torch.equal(ys.flatten(), perm[y[best.indices]])


# --- summarise -----------------------------------------------------------------------------


def test_summarise_gives_the_mean_and_a_95_percent_interval_over_tasks():
    correct = np.zeros((3, 2, 4), dtype=bool)
    correct[0, :, 3] = True  # task 0: 1.0 at the last position
    correct[1, 0, 3] = True  # task 1: 0.5
    correct[:, :, 0] = True  # every task: 1.0 at the first position
    s = summarise(correct)
    assert s["acc"] == pytest.approx([1.0, 0.0, 0.0, 0.5])
    assert s["final_acc"] == pytest.approx(0.5)
    # per-task means at the last position: 1, 0.5, 0 -> std 0.5, n 3
    assert s["final_ci95"] == pytest.approx(1.96 * 0.5 / math.sqrt(3))
    assert s["ci95"][:3] == pytest.approx([0.0, 0.0, 0.0])
    json.dumps(s)  # plain floats, ready for metrics.jsonl and config.json
    one = summarise(correct[:1])
    assert one["ci95"] == [0.0] * 4 and one["final_acc"] == 1.0


# --- evaluate_datasets ---------------------------------------------------------------------


def test_meta_test_labels_beyond_num_classes_are_a_clear_error():
    x, y = points(num_classes=6)
    with pytest.raises(ValueError, match="num_classes=4"):
        meta_test(Recorder(4), x, y, out_dim=48, num_classes=4, n_tasks=1, n_seqs=1, length=3)


def test_evaluate_datasets_runs_what_is_there_and_marks_the_rest_offline(offline_root):
    learner = tiny_learner(input_dim=48, num_classes=10).train()  # "random" has 10 classes
    kw = dict(image_size=8, channels=1, out_dim=48, num_classes=10, n_tasks=3, n_seqs=2, length=6, seed=4)
    results = evaluate_datasets(learner, ["mnist", "fashion_mnist", "random"], device=torch.device("cpu"), **kw)
    assert list(results) == ["mnist", "fashion_mnist", "random"]
    assert results["fashion_mnist"]["status"] == "not run offline"
    assert "fashion_mnist" in results["fashion_mnist"]["reason"]
    for name in ("mnist", "random"):
        assert results[name]["status"] == "ok" and len(results[name]["acc"]) == 6
    assert learner.training, "the learner's mode is restored"

    x, y = load_dataset("mnist", "test", size=8, channels=1)
    direct = summarise(
        meta_test(learner.eval(), x, y, out_dim=48, num_classes=10, n_tasks=3, n_seqs=2, length=6, seed=4)
    )
    assert results["mnist"] == {"status": "ok", **direct}


# --- a run -> evaluate / publish -----------------------------------------------------------


@pytest.fixture
def tiny_run(offline_root, tmp_path) -> Path:
    run = tmp_path / "run"
    train(
        TrainConfig(
            dataset="mnist",
            image_size=8,
            channels=1,
            out_dim=24,
            length=10,
            num_classes=4,
            learner_kwargs=TINY_LEARNER,
            batch_size=4,
            steps=3,
            log_every=3,
            eval_datasets=(),
            out_dir=str(run),
        )
    )
    return run


def test_evaluate_main_meta_tests_a_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    evaluate_main(
        [
            "--run",
            str(tiny_run),
            "--datasets",
            "mnist,svhn",
            "--n-tasks",
            "2",
            "--n-seqs",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["step"] == 3
    assert saved["results"]["mnist"]["status"] == "ok" and len(saved["results"]["mnist"]["acc"]) == 10
    assert saved["results"]["svhn"]["status"] == "not run offline"
    assert "not run offline" in capsys.readouterr().out


def test_publish_writes_a_loadable_checkpoint_with_metrics(tiny_run, tmp_path):
    out = tmp_path / "ckpt"
    publish.main(
        [
            "--run",
            str(tiny_run),
            "--out",
            str(out),
            "--datasets",
            "mnist,fashion_mnist",
            "--n-tasks",
            "2",
            "--n-seqs",
            "2",
            "--device",
            "cpu",
        ]
    )
    ckpt = load_checkpoint(out)
    metrics = ckpt.config["metrics"]
    assert 0.0 <= metrics["final_acc"]["mnist"] <= 1.0 and "mnist" in metrics["final_ci95"]
    assert metrics["final_acc"]["fashion_mnist"] == "not run offline"
    assert metrics["protocol"]["n_tasks"] == 2 and metrics["protocol"]["length"] == 10
    assert ckpt.config["training"]["steps"] == 3 and ckpt.config["training"]["config"]["world_size"] == 1
    assert ckpt.config["preprocessing"]["image_size"] == 8

    learner, _, _ = load_run(tiny_run)
    assert ckpt.model.cfg == learner.cfg and ckpt.model.cfg.input_dim == 24
    for (name, a), b in zip(ckpt.model.state_dict().items(), learner.state_dict().values(), strict=True):
        assert torch.allclose(a, b.float(), rtol=1e-3, atol=1e-3), name  # stored as float16
    card = (out / "README.md").read_text()
    assert "| mnist |" in card and "not run offline" in card
    curves = json.loads((out / "eval_curves.json").read_text())["results"]["mnist"]
    assert len(curves["acc"]) == 10 and curves["final_acc"] == metrics["final_acc"]["mnist"]


def test_model_cards_name_the_weights_a_run_started_from():
    cfg = {"init_from": None, "prior": {}, "input_dim": 8, "length": 10, "learner": "transformer"}
    cfg |= {"learner_kwargs": {}, "batch_size": 2, "optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant"}
    cfg |= {"warmup_steps": 0, "decay_steps": 0, "min_lr_ratio": 0.1, "grad_clip": 1.0, "seed": 0, "world_size": 1}
    assert "Started from" not in publish.prior_card(cfg, 5, "cmd")
    assert "Started from the weights of `ckpts/old`" in publish.prior_card(cfg | {"init_from": "ckpts/old"}, 5, "cmd")


def test_publish_from_a_checkpoint_re_evaluates_the_shipped_weights(tiny_run, tmp_path):
    args = ["--datasets", "mnist", "--n-tasks", "2", "--n-seqs", "2", "--device", "cpu"]
    first, second = tmp_path / "first", tmp_path / "second"
    publish.main(["--run", str(tiny_run), "--out", str(first), *args])
    publish.main(["--checkpoint", str(first), "--out", str(second), *args])

    a, b = load_checkpoint(first), load_checkpoint(second)
    assert a.sha256 == b.sha256  # fp16 -> fp32 -> fp16 is exact: the same weights ship
    # The run's evaluation already used the fp16-rounded weights, so both cards agree.
    assert b.config["metrics"]["final_acc"] == a.config["metrics"]["final_acc"]
    assert b.config["training"]["config"] == a.config["training"]["config"]
    assert b.config["training"]["weights_published_by"] == a.config["training"]["made_by"]
    assert "--checkpoint" in b.config["training"]["made_by"]
    assert "evaluated in float32 on cpu" in (second / "README.md").read_text()
    with pytest.raises(SystemExit):  # exactly one source
        publish.main(["--run", str(tiny_run), "--checkpoint", str(first), "--out", str(second)])


def test_publish_needs_a_token_before_it_evaluates(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    out = tmp_path / "ckpt"
    with pytest.raises(SystemExit):
        publish.main(["--run", str(tiny_run), "--out", str(out), "--repo-id", "me/gpicl", "--device", "cpu"])
    assert "HF_TOKEN" in capsys.readouterr().err and not out.exists()


class FakeHub:
    """Records what publish asks of huggingface-hub; fails like an offline network when told to."""

    calls: list = []
    offline = False

    def create_repo(self, repo_id, repo_type, exist_ok):
        if self.offline:
            raise ConnectionError("Name or service not known")
        self.calls.append(("create_repo", repo_id, repo_type, exist_ok))

    def upload_folder(self, folder_path, repo_id, repo_type):
        self.calls.append(("upload_folder", sorted(p.name for p in Path(folder_path).iterdir()), repo_id, repo_type))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")


@pytest.mark.parametrize("offline", [False, True])
def test_publish_uploads_the_written_folder(tiny_run, tmp_path, monkeypatch, capsys, offline):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_test")
    monkeypatch.setattr("huggingface_hub.HfApi", FakeHub)
    monkeypatch.setattr(FakeHub, "calls", [])
    monkeypatch.setattr(FakeHub, "offline", offline)
    out = tmp_path / "ckpt"
    args = [
        "--run",
        str(tiny_run),
        "--out",
        str(out),
        "--datasets",
        "mnist",
        "--n-tasks",
        "2",
        "--n-seqs",
        "2",
        "--device",
        "cpu",
        "--repo-id",
        "me/gpicl",
    ]
    if offline:
        with pytest.raises(SystemExit, match=r"me/gpicl failed \(ConnectionError.*hf upload me/gpicl"):
            publish.main(args)
        assert load_checkpoint(out).config["metrics"]["final_acc"]["mnist"] >= 0  # written before the upload
        return
    publish.main(args)
    assert FakeHub.calls == [
        ("create_repo", "me/gpicl", "model", True),
        ("upload_folder", ["README.md", "config.json", "eval_curves.json", "model.safetensors"], "me/gpicl", "model"),
    ]
    assert "uploaded to https://huggingface.co/me/gpicl/commit/abc" in capsys.readouterr().out
