"""Tests of training.optim, training.state and the meta-training loop of training.train."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_tiny_mnist
from safetensors.torch import load_file

from training import train as train_module
from training.config import ConfigError, TrainConfig, config_from_args
from training.data import load_dataset
from training.learners import build_learner
from training.optim import SignMomentum, lr_at, make_optimizer, set_lr
from training.progress import read_records
from training.state import load_state, read_meta
from training.tasks import TaskConfig, TaskSampler
from training.train import train

REPO = Path(__file__).resolve().parents[1]
TINY_LEARNER = {"d_model": 32, "n_layers": 1, "n_heads": 2, "head_dim": 16, "max_len": 12}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data root whose 'mnist' is 8x8 images of 4 classes: class c lights rows 2c, 2c+1."""
    return write_tiny_mnist(tmp_path_factory.mktemp("data"), n_train=200, n_test=80)


@pytest.fixture
def env_root(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPICL_DATA_ROOT", str(data_root))
    return data_root


def tiny_config(out_dir: Path, **changes) -> TrainConfig:
    base = dict(
        dataset="mnist",
        image_size=8,
        channels=1,
        length=12,
        num_classes=4,
        learner_kwargs=TINY_LEARNER,
        batch_size=8,
        steps=12,
        lr=3e-3,
        log_every=4,
        ckpt_every=1000,
        eval_every=1000,
        eval_datasets=(),
        eval_tasks=4,
        eval_seqs=4,
        out_dir=str(out_dir),
    )
    return TrainConfig(**{**base, **changes})


def records(out_dir: Path) -> list[dict]:
    return read_records(out_dir)


def state_tensors(out_dir: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted((Path(out_dir) / "state").glob("state-*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


# --- optim ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0.1, torch.tensor(0.1)])
def test_sign_momentum_follows_the_sign_of_the_moving_average(lr):
    beta = 0.8
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    opt = SignMomentum([p], lr=lr, beta=beta)
    g1, g2 = torch.tensor([1e-9, -3.0, 2.0, 0.0]), torch.tensor([-1.0, 1.0, -1.0, 5.0])
    m, expected = torch.zeros(4), p.detach().clone()
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
        m = beta * m + (1 - beta) * g
        expected = expected - 0.1 * torch.sign(m)
        assert torch.allclose(p.detach(), expected, atol=1e-7)
        assert torch.allclose(opt.state[p]["momentum"], m)
        if g is g1:  # a tiny gradient moves its weight a full step: the point of Intervention 2
            assert p[0].item() == pytest.approx(0.9)


def test_make_optimizer_builds_the_named_optimizer_and_rejects_others():
    params = [torch.nn.Parameter(torch.zeros(3))]
    adam = make_optimizer("adam", params, lr=0.01, eps=1e-6, betas=(0.8, 0.9), capturable=False)
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["eps"] == 1e-6 and adam.param_groups[0]["betas"] == (0.8, 0.9)
    sign = make_optimizer("sign_momentum", params, lr=0.01, eps=1e-6, betas=(0.8, 0.9), capturable=False)
    assert isinstance(sign, SignMomentum) and sign.param_groups[0]["beta"] == 0.8
    set_lr(sign, 0.5)
    assert sign.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_optimizer("sgd", params, lr=0.01, eps=1e-6, betas=(0.8, 0.9), capturable=False)


def test_lr_schedules_at_key_steps():
    kw = dict(base=1.0, total=1000, min_ratio=0.1)
    # linear warm-up reaches the base rate at its last step
    assert lr_at(0, schedule="constant", warmup=10, **kw) == pytest.approx(0.1)
    assert lr_at(9, schedule="cosine", warmup=10, **kw) == pytest.approx(1.0)
    assert lr_at(999, schedule="constant", warmup=10, **kw) == 1.0
    # cosine from the end of warm-up to min_ratio at the end, (1 + min) / 2 half-way
    assert lr_at(10, schedule="cosine", warmup=10, **kw) == pytest.approx(1.0)
    assert lr_at(505, schedule="cosine", warmup=10, **kw) == pytest.approx(0.55)
    assert lr_at(1000, schedule="cosine", warmup=10, **kw) == pytest.approx(0.1)
    assert lr_at(5000, schedule="cosine", warmup=10, **kw) == pytest.approx(0.1)
    # wsd: stable until the last `decay` steps, then the same cosine over them
    assert lr_at(799, schedule="wsd", warmup=10, decay=200, **kw) == 1.0
    assert lr_at(800, schedule="wsd", warmup=10, decay=200, **kw) == pytest.approx(1.0)
    assert lr_at(900, schedule="wsd", warmup=10, decay=200, **kw) == pytest.approx(0.55)
    assert lr_at(1000, schedule="wsd", warmup=10, decay=200, **kw) == pytest.approx(0.1)
    values = [lr_at(s, schedule="wsd", warmup=10, decay=200, **kw) for s in range(800, 1001)]
    assert all(a >= b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("step", [0, 50])
def test_unknown_schedule_is_an_error_even_during_warm_up(step):
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        lr_at(step, base=1.0, schedule="linear", total=100, warmup=10, min_ratio=0.1)


# --- config_from_args ----------------------------------------------------------------------


def test_config_from_args_parses_flags_json_and_null(tmp_path):
    assert config_from_args([]) == TrainConfig()
    cfg = config_from_args(
        [
            "--steps",
            "7",
            "--lr",
            "2e-4",
            "--bf16",
            "false",
            "--num-tasks",
            "16",
            "--grad-clip",
            "null",
            "--image-size",
            "none",
            "--learner-kwargs",
            '{"d_model": 64}',
            "--eval-datasets",
            "mnist,cifar10",
        ]
    )
    assert (cfg.steps, cfg.lr, cfg.bf16, cfg.num_tasks, cfg.grad_clip, cfg.image_size) == (
        7,
        2e-4,
        False,
        16,
        None,
        None,
    )
    assert cfg.learner_kwargs == {"d_model": 64} and cfg.eval_datasets == ("mnist", "cifar10")
    assert config_from_args(["--eval-datasets", '["random"]']).eval_datasets == ("random",)
    assert config_from_args(["--eval-datasets", "[]"]).eval_datasets == ()

    path = tmp_path / "run.json"
    path.write_text(json.dumps({"steps": 99, "num_tasks": 4, "eval_datasets": ["mnist"], "out_dir": "x"}))
    cfg = config_from_args(["--config", str(path), "--num-tasks", "null", "--out-dir", "y"])  # flags win
    assert (cfg.steps, cfg.num_tasks, cfg.eval_datasets, cfg.out_dir) == (99, None, ("mnist",), "y")


@pytest.mark.parametrize("argv", [["--bf16", "maybe"], ["--steps", "many"], ["--no-such-field", "1"]])
def test_config_from_args_rejects_bad_flags(argv, capsys):
    with pytest.raises(SystemExit):
        config_from_args(argv)
    assert argv[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"steps": -5}, "steps"),
        ({"log_every": 0}, "log_every"),
        ({"steps": "ten"}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"bf16": 1}, "bf16"),
        ({"lr": float("nan")}, "lr"),
        ({"biased_fraction": 1.5}, "biased_fraction"),
        ({"num_tasks": 0}, "num_tasks"),
        ({"channels": 2}, "channels"),
        ({"learner": "gru"}, "learner"),
        ({"learner_kwargs": {"d_modle": 8}}, "learner_kwargs"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"eval_datasets": ("mnist", "imagenet")}, "eval_datasets"),
        ({"fold_projection": True, "num_tasks": 4}, "num_tasks"),
        ({"gram_table": True, "num_tasks": 4}, "num_tasks"),
    ],
)
def test_invalid_configs_are_rejected_up_front_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=rf"^{field} must be"):
        TrainConfig(**changes)


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--steps", "-5"], ["--log-every", "0"]])
def test_invalid_flags_exit_naming_the_field(argv, capsys):
    with pytest.raises(SystemExit):
        config_from_args(argv)
    assert argv[0][2:].replace("-", "_") + " must be" in capsys.readouterr().err


def test_a_config_file_value_of_the_wrong_type_names_the_field(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"steps": "ten"}))
    with pytest.raises(SystemExit):
        config_from_args(["--config", str(path)])
    assert "steps must be int, got 'ten'" in capsys.readouterr().err


def test_config_file_with_unknown_fields_is_an_error(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"steps": 3, "stepz": 4}))
    with pytest.raises(SystemExit):
        config_from_args(["--config", str(path)])
    assert "stepz" in capsys.readouterr().err


# --- the training loop ---------------------------------------------------------------------


def test_training_lowers_the_loss_and_memorises_seen_tasks(env_root, tmp_path):
    # Few tasks (K=3, no biased share): the learner memorises them within 30 steps, so the
    # loss falls far below chance (ln 4) and seen tasks are solved, while unseen tasks of
    # the test split are not (paper Sec. 4.1, the memorisation regime).
    cfg = tiny_config(tmp_path, steps=30, log_every=5, num_tasks=3, biased_fraction=0.0, eval_datasets=("mnist",))
    train(cfg)
    log = records(tmp_path)
    losses = [r["loss"] for r in log if "loss" in r]
    assert [r["step"] for r in log if "loss" in r] == [5, 10, 15, 20, 25, 30]
    assert losses[0] > 0.5 and losses[-1] < 0.2 and losses[-1] < losses[0] / 3
    (evaluation,) = [r for r in log if "eval" in r]
    assert evaluation["step"] == 30
    seen, unseen = evaluation["eval"]["mnist_train_seen_tasks"], evaluation["eval"]["mnist"]
    assert seen["status"] == unseen["status"] == "ok" and len(seen["acc"]) == cfg.length
    assert seen["final_acc"] > 0.9 and unseen["final_acc"] < 0.8
    meta = read_meta(tmp_path / "state")
    assert meta["step"] == 30 and meta["config"]["world_size"] == 1 and meta["config"]["num_tasks"] == 3


@pytest.mark.parametrize(
    "optimizer,fold,gram", [("adam", False, False), ("sign_momentum", False, False), ("adam", True, True)]
)
def test_resume_equals_an_uninterrupted_run(env_root, tmp_path, optimizer, fold, gram):
    changes = dict(
        optimizer=optimizer, lr_schedule="cosine", warmup_steps=3, num_tasks=None, fold_projection=fold, gram_table=gram
    )
    train(tiny_config(tmp_path / "whole", **changes))

    parts = tmp_path / "parts"
    train(tiny_config(parts, max_minutes=0.0, **changes))  # out of time at the first log step
    assert read_meta(parts / "state")["step"] == 4
    assert [r["step"] for r in records(parts)] == [4]
    train(tiny_config(parts, **changes))

    whole, resumed = state_tensors(tmp_path / "whole"), state_tensors(parts)
    assert whole.keys() == resumed.keys() and any(k.startswith("optim.") for k in whole)
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    assert read_meta(parts / "state")["rng_states"] == read_meta(tmp_path / "whole" / "state")["rng_states"]
    losses = {r["step"]: r["loss"] for r in records(tmp_path / "whole") if "loss" in r}
    assert {r["step"]: r["loss"] for r in records(parts) if "loss" in r} == losses


def test_prior_training_has_finite_losses_and_resumes_exactly(env_root, tmp_path):
    prior = dict(
        prior={"max_features": 6, "weights": {"mlp": 1, "trees": 1, "clusters": 1}},
        out_dim=8,
        num_classes=10,
        length=16,
        learner_kwargs={**TINY_LEARNER, "max_len": 16},
    )
    train(tiny_config(tmp_path / "whole", steps=24, **prior))
    parts = tmp_path / "parts"
    train(tiny_config(parts, steps=24, max_minutes=0.0, **prior))
    train(tiny_config(parts, steps=24, **prior))
    whole, resumed = state_tensors(tmp_path / "whole"), state_tensors(parts)
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    losses = [r["loss"] for r in records(tmp_path / "whole") if "loss" in r]
    assert all(np.isfinite(losses))


class Killed(BaseException):
    """The process dies here."""


def test_a_resume_after_a_kill_logs_every_step_once(env_root, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "run", steps=8, log_every=2, ckpt_every=4, eval_every=4)
    real_save, saves = train_module.save_state, []

    def save_then_die_at_the_second(*args, **kwargs):
        saves.append(kwargs["step"])
        if len(saves) == 2:
            raise Killed
        real_save(*args, **kwargs)

    monkeypatch.setattr(train_module, "save_state", save_then_die_at_the_second)
    with pytest.raises(Killed):
        train(cfg)
    assert [r["step"] for r in records(cfg.out_dir)] == [2, 4, 4, 6, 8, 8]  # losses and evaluations
    monkeypatch.setattr(train_module, "save_state", real_save)
    train(cfg)  # resumes at step 4
    whole = tmp_path / "whole"
    train(dataclasses.replace(cfg, out_dir=str(whole)))
    assert [r["step"] for r in records(cfg.out_dir)] == [2, 4, 4, 6, 8, 8]
    assert [r.get("loss") for r in records(cfg.out_dir)] == [r.get("loss") for r in records(whole)]


def test_a_resume_refuses_a_changed_model_or_data_and_names_other_changes(env_root, tmp_path):
    cfg = tiny_config(tmp_path, steps=4)
    train(cfg)
    for change in ({"batch_size": 4}, {"learner_kwargs": {**TINY_LEARNER, "n_layers": 2}}, {"length": 10}):
        with pytest.raises(ConfigError, match=f"cannot resume with changed {next(iter(change))}"):
            train(dataclasses.replace(cfg, steps=6, **change))
    assert read_meta(tmp_path / "state")["step"] == 4  # nothing was trained or written
    with pytest.warns(UserWarning, match=r"changed settings: steps: 4 -> 6; lr: 0.003 -> 0.001"):
        train(dataclasses.replace(cfg, steps=6, lr=1e-3))
    assert read_meta(tmp_path / "state")["step"] == 6


@pytest.fixture(scope="module")
def ddp_run(data_root, tmp_path_factory) -> tuple[TrainConfig, Path]:
    """A 3-step run of 2 gloo processes under torchrun, launched as a user would."""
    out = tmp_path_factory.mktemp("ddp")
    cfg = tiny_config(out, steps=3, log_every=1, grad_clip=0.05, seed=5)
    path = out / "run.json"
    path.write_text(json.dumps(dataclasses.asdict(cfg)))
    # PYTHONFAULTHANDLER: a rank that aborts says where (see the exit in training.train.main).
    env = {
        **os.environ,
        "GPICL_DATA_ROOT": str(data_root),
        "OMP_NUM_THREADS": "1",
        "PYTHONFAULTHANDLER": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "training.train",
        "--config",
        str(path),
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-10000:]
    return cfg, out


def test_two_processes_equal_one_process_averaging_two_batches(ddp_run, env_root):
    # Data parallelism must be the same optimisation as one process that draws both ranks'
    # batches (generators seeded seed * 1_000_003 + rank), averages their gradients, clips
    # the average and steps Adam.
    cfg, out = ddp_run
    x, y = load_dataset(cfg.dataset, "train", size=cfg.image_size, channels=cfg.channels)
    torch.manual_seed(cfg.seed)
    learner = build_learner(cfg.learner, x.shape[1], cfg.num_classes, **cfg.learner_kwargs)
    params = list(learner.parameters())
    initial = [p.detach().clone() for p in params]
    opt = make_optimizer(
        cfg.optimizer, params, lr=cfg.lr, eps=cfg.adam_eps, betas=(cfg.beta1, cfg.beta2), capturable=False
    )
    task = TaskConfig(
        length=cfg.length,
        num_classes=cfg.num_classes,
        out_dim=x.shape[1],
        biased_fraction=cfg.biased_fraction,
        task_seed=cfg.task_seed,
    )
    samplers = [TaskSampler(x, y, task, torch.Generator().manual_seed(cfg.seed * 1_000_003 + r)) for r in (0, 1)]
    clipped = []
    for step in range(cfg.steps):
        set_lr(
            opt,
            lr_at(
                step,
                base=cfg.lr,
                schedule=cfg.lr_schedule,
                total=cfg.steps,
                warmup=cfg.warmup_steps,
                min_ratio=cfg.min_lr_ratio,
                decay=cfg.decay_steps,
            ),
        )
        grads, losses = [], []
        for sampler in samplers:
            xb, yb = sampler.sample(cfg.batch_size)
            opt.zero_grad()
            loss = F.cross_entropy(learner(xb, yb).flatten(0, 1), yb.flatten())
            loss.backward()
            grads.append([p.grad.clone() for p in params])
            losses.append(loss.item())
        for p, g0, g1 in zip(params, *grads, strict=True):
            p.grad = (g0 + g1) / 2
        clipped.append(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip).item() > cfg.grad_clip)
        opt.step()
        logged = [r for r in records(out) if r.get("step") == step + 1 and "loss" in r]
        assert logged[0]["loss"] == pytest.approx(sum(losses) / 2, rel=1e-5)
    assert any(clipped), "the test should exercise clipping of the averaged gradient"

    ddp = build_learner(cfg.learner, x.shape[1], cfg.num_classes, **cfg.learner_kwargs)
    step, rng = load_state(out / "state", ddp, optimizer=None)
    assert step == cfg.steps and len(rng) == 2
    for r, sampler in enumerate(samplers):
        assert torch.equal(rng[r], sampler.generator.get_state()), f"rank {r} data stream"
    for (name, a), b in zip(ddp.named_parameters(), params, strict=True):
        assert torch.allclose(a, b.detach(), rtol=1e-4, atol=1e-6), name
    moved = [not torch.allclose(a, b) for a, b in zip(initial, params, strict=True)]
    assert all(moved), "every parameter should have been trained"


def test_a_two_process_state_refuses_to_resume_in_one(ddp_run, env_root):
    cfg, out = ddp_run
    with pytest.raises(ValueError, match="written by 2 processes"):
        train(dataclasses.replace(cfg, steps=cfg.steps + 2))


def test_biased_permutations_stop_after_biased_steps(env_root, tmp_path, monkeypatch):
    seen: list[float] = []
    original = TaskSampler.sample

    def recording_sample(self, batch_size):
        seen.append(self.cfg.biased_fraction)
        return original(self, batch_size)

    monkeypatch.setattr(TaskSampler, "sample", recording_sample)
    train(tiny_config(tmp_path / "run", steps=6, biased_fraction=0.5, biased_steps=4))
    assert seen[:6] == [0.5] * 4 + [0.0] * 2
    assert seen[6:] in ([], [0.0]), "at most the batch after the last, drawn ahead"


def test_a_resumed_run_draws_the_batches_of_an_uninterrupted_one(env_root, tmp_path, monkeypatch):
    # The phase of biased permutations follows the step, also for a batch drawn ahead.
    drawn: dict[str, list] = {"whole": [], "split": []}
    original = TaskSampler.sample
    which = "whole"

    def recording_sample(self, batch_size):
        x, y = original(self, batch_size)
        drawn[which].append((self.cfg.biased_fraction, x.clone(), y.clone()))
        return x, y

    monkeypatch.setattr(TaskSampler, "sample", recording_sample)
    train(tiny_config(tmp_path / "whole", steps=6, biased_fraction=0.5, biased_steps=3))
    which = "split"
    train(tiny_config(tmp_path / "split", steps=2, biased_fraction=0.5, biased_steps=3))
    drawn["split"] = drawn["split"][:2]  # the batch drawn ahead of the stop is drawn again on resume
    train(tiny_config(tmp_path / "split", steps=6, biased_fraction=0.5, biased_steps=3))
    for (fa, xa, ya), (fb, xb, yb) in zip(drawn["whole"][:6], drawn["split"][:6], strict=True):
        assert fa == fb and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_init_from_a_published_checkpoint_starts_from_its_weights(env_root, tmp_path):
    from gpicl_sklearn.checkpoint import load_checkpoint, save_checkpoint

    cfg = tiny_config(tmp_path / "a", steps=4)
    trained = train(cfg)
    published = save_checkpoint(
        trained, tmp_path / "ckpt", preprocessing={}, training={}, metrics={}, dtype=torch.float32
    )
    resumed = train(tiny_config(tmp_path / "b", steps=4, init_from=str(published), lr=0.0))
    expected = load_checkpoint(published).model.state_dict()
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[name])
    # Later jobs resume without the flag; the run's record still names the weights it started from.
    train(tiny_config(tmp_path / "b", steps=6))
    assert read_meta(tmp_path / "b" / "state")["config"]["init_from"] == str(published)


def test_init_from_a_shallower_checkpoint_grows_it(env_root, tmp_path):
    from gpicl_sklearn.checkpoint import save_checkpoint

    trained = train(tiny_config(tmp_path / "a", steps=4))
    published = save_checkpoint(
        trained, tmp_path / "ckpt", preprocessing={}, training={}, metrics={}, dtype=torch.float32
    )
    deeper = TINY_LEARNER | {"n_layers": 2}
    grown = train(tiny_config(tmp_path / "b", steps=2, init_from=str(published), lr=0.0, learner_kwargs=deeper))
    torch.testing.assert_close(grown.blocks[0].state_dict(), trained.blocks[0].state_dict())
    assert not grown.blocks[1].attn.proj.weight.any() and not grown.blocks[1].mlp[2].weight.any()


def test_decay_config_continues_a_copy_of_a_run_down_to_the_lr_floor(env_root, tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    train(tiny_config(source, steps=8, log_every=4, max_minutes=None))
    rate = [r for r in records(source) if "loss" in r][-1]["steps_per_s"]
    minutes = (75 + 4.5 / rate) / 60  # start-up allowance + time for about 4 steps
    decay_config = runpy.run_path(str(REPO / "training" / "jobs" / "decay_config.py"))["main"]
    decay_config(str(source), str(target), str(minutes))

    cfg = config_from_args(["--config", str(target / "continue.json"), "--log-every", "1"])
    assert (cfg.steps, cfg.lr_schedule, cfg.out_dir) == (8 + cfg.decay_steps, "wsd", str(target))
    assert cfg.decay_steps >= 1
    train(cfg)
    assert read_meta(source / "state")["step"] == 8  # the source run is left as it was
    logged = [r for r in records(target) if "lr" in r]
    assert logged[0]["step"] == 4 and logged[-1]["step"] == cfg.steps  # resumed, not restarted
    decayed = [r["lr"] for r in logged if r["step"] > 8]
    assert len(decayed) == cfg.decay_steps and decayed == sorted(decayed, reverse=True) and decayed[-1] < cfg.lr / 2
    expected = [
        lr_at(
            s,
            base=cfg.lr,
            schedule="wsd",
            total=cfg.steps,
            warmup=cfg.warmup_steps,
            min_ratio=cfg.min_lr_ratio,
            decay=cfg.decay_steps,
        )
        for s in range(8, cfg.steps)
    ]
    assert decayed == pytest.approx(expected)


def test_folded_training_updates_the_weights_and_needs_infinite_tasks(env_root, tmp_path):
    torch.manual_seed(0)
    before = build_learner("transformer", 64, 4, **TINY_LEARNER)  # the run's initial weights (seed 0)
    after = train(tiny_config(tmp_path / "fold", steps=3, fold_projection=True))
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])}
    assert "embed_x.weight" in changed and "blocks.0.attn.qkv.weight" in changed
    assert all(torch.isfinite(v).all() for v in after.state_dict().values())
    with pytest.raises(ValueError, match="K = infinity"):
        train(tiny_config(tmp_path / "finite", steps=3, fold_projection=True, num_tasks=4))


def test_a_run_resumed_from_a_carried_copy_continues_at_its_step_on_its_batches(env_root, tmp_path, monkeypatch):
    from training.state import carry_copy

    drawn: dict[str, list] = {"whole": [], "carried": []}
    original, which = TaskSampler.sample, "whole"

    def recording_sample(self, batch_size):
        x, y = original(self, batch_size)
        drawn[which].append((self.cfg.biased_fraction, x.clone(), y.clone()))
        return x, y

    monkeypatch.setattr(TaskSampler, "sample", recording_sample)
    lstm = dict(learner="lstm", learner_kwargs={"hidden_size": 8}, optimizer="sign_momentum")
    lstm.update(biased_fraction=0.5, biased_steps=6, lr_schedule="constant")
    train(tiny_config(tmp_path / "whole", steps=8, **lstm))
    which = "carried"
    train(tiny_config(tmp_path / "first", steps=8, max_minutes=0.0, **lstm))  # stops at step 4
    carry_copy(tmp_path / "first" / "state", tmp_path / "carried" / "state")
    drawn["carried"] = []
    train(tiny_config(tmp_path / "carried", steps=8, **lstm))

    assert read_meta(tmp_path / "carried" / "state")["step"] == 8
    losses = [r["step"] for r in records(tmp_path / "carried") if "loss" in r]
    assert losses == [8]  # continued from step 4, not restarted
    assert read_meta(tmp_path / "carried" / "state")["optimizer"] is not None  # the moments are saved again
    for (fa, xa, ya), (fb, xb, yb) in zip(drawn["whole"][4:8], drawn["carried"][:4], strict=True):
        assert fa == fb and torch.equal(xa, xb) and torch.equal(ya, yb)  # the biased phase and data stream held
