"""Tests of the SGD/MAML baselines: online updates, estimators, init checkpoints, the MAML learner."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_run
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

from benchmarks.online_classifiers import MAMLClassifier, OnlineSGDClassifier
from gpicl_sklearn import CheckpointError
from training.config import TrainConfig
from training.learners import build_learner, learner_config
from training.maml_init import export_maml_init, load_maml_init, save_maml_init
from training.online_sgd import OnlineAdamLearner, OnlineSGDLearner
from training.online_updates import online_adam, online_sgd
from training.train import make_train_step

B, L, D, C = 3, 9, 5, 4


def sequences(seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, D, generator=g, dtype=dtype), torch.randint(0, C, (B, L), generator=g)


# --- the online updates --------------------------------------------------------------------


def naive_sgd(x, y, w, b, lr):
    """Reference: the explicit loop, one sequence at a time."""
    logits, ws = [], []
    for s in range(x.shape[0]):
        ws_, bs_, out = w.clone(), b.clone(), []
        for i in range(x.shape[1]):
            logit = x[s, i] @ ws_ + bs_
            out.append(logit)
            g = logit.softmax(-1) - F.one_hot(y[s, i], w.shape[1])
            ws_, bs_ = ws_ - lr * torch.outer(x[s, i], g), bs_ - lr * g
        logits.append(torch.stack(out))
        ws.append(ws_)
    return torch.stack(logits), torch.stack(ws)


@pytest.mark.parametrize("block", [None, 1, 2, 4])
def test_online_sgd_kernel_form_equals_explicit_loop(block):
    x, y = sequences()
    w, b = torch.randn(D, C, dtype=x.dtype), torch.randn(C, dtype=x.dtype)
    result = online_sgd(x, y, w, b, 0.3, block=block)
    logits, weights = naive_sgd(x, y, w, b, 0.3)
    torch.testing.assert_close(result.logits, logits)
    torch.testing.assert_close(result.weight, weights)


def test_online_adam_equals_torch_adam_one_example_at_a_time():
    x, y = sequences()
    result = online_adam(x, y, torch.zeros(D, C, dtype=x.dtype), torch.zeros(C, dtype=x.dtype), lr=0.05)
    for s in range(B):
        w = torch.zeros(D, C, dtype=x.dtype, requires_grad=True)
        b = torch.zeros(C, dtype=x.dtype, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        for i in range(L):
            opt.zero_grad()
            logit = x[s, i] @ w + b
            torch.testing.assert_close(result.logits[s, i], logit.detach())
            F.cross_entropy(logit[None], y[s, i : i + 1]).backward()
            opt.step()
        torch.testing.assert_close(result.weight[s], w.detach())


def test_online_updates_reject_bad_shapes():
    x, y = sequences()
    w, b = torch.zeros(D, C, dtype=x.dtype), torch.zeros(C, dtype=x.dtype)
    with pytest.raises(ValueError, match="x must have shape"):
        online_sgd(x[0], y, w, b, 0.1)
    with pytest.raises(ValueError, match="y must have shape"):
        online_adam(x, y[:, :-1], w, b)
    with pytest.raises(ValueError, match="int64"):
        online_sgd(x, y.float(), w, b, 0.1)
    with pytest.raises(ValueError, match="weight must have shape"):
        online_sgd(x, y, w[:-1], b, 0.1)


# --- OnlineSGDClassifier -------------------------------------------------------------------


@parametrize_with_checks([OnlineSGDClassifier()])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def blobs(n: int = 200, n_classes: int = 3):
    X, y = make_blobs(n_samples=n, centers=n_classes, n_features=6, random_state=0)
    return X, y


def test_online_sgd_classifier_is_the_online_adam_update_on_standardised_rows():
    X, y = blobs()
    clf = OnlineSGDClassifier(learning_rate=0.01).fit(X, y)
    z = (X - X.mean(0)) / X.std(0)
    ref = online_adam(
        torch.from_numpy(z)[None],
        torch.from_numpy(y)[None],
        torch.zeros(6, 3, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
        lr=0.01,
    )
    np.testing.assert_allclose(clf.coef_, ref.weight[0].T.numpy())
    np.testing.assert_allclose(clf.intercept_, ref.bias[0].numpy())
    assert clf.score(X, y) > 0.9


def test_online_sgd_classifier_epochs_replay_the_rows():
    X, y = blobs(60)
    one = OnlineSGDClassifier(n_epochs=1).fit(X, y)
    two = OnlineSGDClassifier(n_epochs=2).fit(X, y)
    assert not np.allclose(one.coef_, two.coef_)
    np.testing.assert_allclose(two.coef_, OnlineSGDClassifier().fit(np.vstack([X, X]), np.hstack([y, y])).coef_)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"learning_rate": 0}, "learning_rate must be a positive"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"n_epochs": 0}, "n_epochs must be a positive integer"),
        ({"n_epochs": 1.5}, "n_epochs"),
    ],
)
def test_online_sgd_classifier_bad_params(params, match):
    X, y = blobs(20)
    with pytest.raises(ValueError, match=match):
        OnlineSGDClassifier(**params).fit(X, y)


# --- MAML initialisation checkpoints and MAMLClassifier ------------------------------------


def write_init(directory: Path, input_dim: int = 16, num_classes: int = 5, lr: float = 0.05, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    return save_maml_init(
        directory,
        torch.randn(input_dim, num_classes, generator=g) * 0.1,
        torch.randn(num_classes, generator=g) * 0.1,
        lr,
        training={"note": "test"},
    )


def test_maml_init_round_trip(tmp_path):
    write_init(tmp_path, lr=0.125)
    init = load_maml_init(tmp_path)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(init.weight, torch.randn(16, 5, generator=g) * 0.1)
    assert (init.input_dim, init.num_classes, init.lr) == (16, 5, 0.125)
    assert init.config["training"] == {"note": "test"} and len(init.sha256) == 64


def test_maml_init_broken_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="file is missing"):
        load_maml_init(tmp_path / "nowhere")
    write_init(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_maml_init(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_maml_init(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpicl-transformer"}')
    with pytest.raises(CheckpointError, match="expected 'gpicl-maml-init'"):
        load_maml_init(tmp_path)
    other = write_init(tmp_path / "other", input_dim=8)
    (tmp_path / "config.json").write_text(
        (other / "config.json").read_text().replace('"input_dim": 8', '"input_dim": 9')
    )
    (tmp_path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"tensor 'weight' must be finite floats of shape \(9, 5\)"):
        load_maml_init(tmp_path)


def test_save_maml_init_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="lr must be a positive"):
        save_maml_init(tmp_path, torch.zeros(4, 2), torch.zeros(2), 0.0, training={})
    with pytest.raises(ValueError, match="weight must be"):
        save_maml_init(tmp_path, torch.zeros(4, 2), torch.zeros(3), 0.1, training={})


def test_maml_classifier_fits_predicts_and_follows_sklearn_conventions(tmp_path):
    write_init(tmp_path, lr=0.05)
    X, y = blobs(150)
    labels = np.array(["a", "b", "c"])[y]
    clf = MAMLClassifier(tmp_path, random_state=0)
    assert clf.get_params()["checkpoint"] == tmp_path
    clf.fit(X, labels)
    assert list(clf.classes_) == ["a", "b", "c"] and clf.n_features_in_ == 6 and clf.inner_lr_ == 0.05
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(1), 1)
    assert clf.score(X, labels) > 0.9
    again = clone(clf).fit(X, labels)
    np.testing.assert_array_equal(again.coef_, clf.coef_)  # random_state fixes projection and slots
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict(X), clf.predict(X))


def test_maml_classifier_errors(tmp_path):
    write_init(tmp_path, num_classes=3)
    X, y = blobs(40, n_classes=4)
    with pytest.raises(ValueError, match="4 classes.*3 label slots"):
        MAMLClassifier(tmp_path).fit(X, y)
    with pytest.raises(ValueError, match="checkpoint must be the path"):
        MAMLClassifier(None).fit(X, y)
    with pytest.raises(CheckpointError, match="file is missing"):
        MAMLClassifier(tmp_path / "missing").fit(X, y)


# --- the MAML learner (training/online_sgd.py) ---------------------------------------------


def test_maml_learner_is_registered_and_rebuilds_from_its_config():
    torch.manual_seed(0)
    learner = build_learner("maml", D, C, inner_lr=0.2)
    assert isinstance(learner, OnlineSGDLearner) and learner.lr == pytest.approx(0.2)
    rebuilt = build_learner(**learner_config(learner))
    rebuilt.load_state_dict(learner.state_dict())
    x, y = sequences(dtype=torch.float32)
    torch.testing.assert_close(rebuilt(x, y), learner(x, y))
    with pytest.raises(ValueError, match="inner_lr must be a positive"):
        build_learner("maml", D, C, inner_lr=-1.0)


@pytest.mark.parametrize("j", [0, 4, L - 1])
def test_maml_learner_is_causal(j):
    torch.manual_seed(0)
    learner = build_learner("maml", D, C, inner_lr=0.5)
    x, y = sequences(dtype=torch.float32)
    with torch.no_grad():
        base = learner(x, y)
        x2 = x.clone()
        x2[:, j] += 1.0
        y2 = y.clone()
        y2[:, j] = (y2[:, j] + 1) % C
        out_x, out_y = learner(x2, y), learner(x, y2)
    torch.testing.assert_close(out_x[:, :j], base[:, :j], rtol=0, atol=1e-6)
    assert not torch.allclose(out_x[:, j], base[:, j])
    torch.testing.assert_close(out_y[:, : j + 1], base[:, : j + 1], rtol=0, atol=1e-6)
    if j + 1 < L:
        assert not torch.allclose(out_y[:, j + 1], base[:, j + 1])


def test_meta_training_the_initialisation_reduces_the_loss():
    """Tasks share a labelling rule ``y = argmax(x W*)``: a meta-learned W_0 can start near it."""
    torch.manual_seed(0)
    learner = build_learner("maml", D, C, inner_lr=0.05)
    w_star = torch.randn(D, C)
    gen = torch.Generator().manual_seed(1)

    def batch():
        x = torch.randn(32, L, D, generator=gen)
        return x, (x @ w_star).argmax(-1)

    def loss(x, y):
        return F.cross_entropy(learner(x, y).flatten(0, 1), y.flatten()).item()

    x_eval, y_eval = batch()
    before = loss(x_eval, y_eval)
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.05)
    step = make_train_step(learner, optimizer, TrainConfig(bf16=False), torch.device("cpu"))  # paper Eq. 2
    for _ in range(30):
        optimizer.zero_grad()
        x, y = batch()
        step((x,), y)
    assert loss(x_eval, y_eval) < 0.7 * before
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learner.parameters())


def test_export_maml_init_from_a_run(tmp_path):
    torch.manual_seed(0)
    learner = build_learner("maml", 16, 10, inner_lr=0.02)
    run = write_run(tmp_path / "run", learner, image_size=4, channels=1)
    init = load_maml_init(export_maml_init(run, tmp_path / "init"))
    torch.testing.assert_close(init.weight, learner.weight.detach())
    assert init.lr == pytest.approx(0.02) and init.config["training"]["steps"] == 7
    other = write_run(tmp_path / "lstm", build_learner("lstm", 16, 10, hidden_size=4), image_size=4, channels=1)
    with pytest.raises(ValueError, match="meta-trained learner 'lstm', not 'maml'"):
        export_maml_init(other, tmp_path / "nope")


def test_online_adam_learner_has_no_meta_parameters_and_learns_in_sequence():
    learner = OnlineAdamLearner(num_classes=C, lr=0.1)
    assert list(learner.parameters()) == []
    x = torch.randn(8, 40, D)
    y = torch.zeros(8, 40, dtype=torch.long)  # one class: learned after a few steps
    pred = learner(x, y).argmax(-1)
    assert (pred[:, -10:] == 0).all()
