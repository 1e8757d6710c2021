"""Tests of training.learners: shapes, causality, gradients, learning, registry round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpicl_sklearn.model import GPICLTransformer
from training.learners import (
    LEARNERS,
    LSTMLearner,
    MLPLearner,
    OuterProductLSTMLearner,
    VSMLLearner,
    build_learner,
    learner_config,
)
from training.online_sgd import OnlineSGDLearner

D, C, L, B = 6, 3, 7, 4

# Tiny settings per learner so every test takes well under a second on CPU.
TINY = {
    "transformer": dict(max_len=L, d_model=16, n_layers=1, n_heads=2, head_dim=8, mlp_ratio=2),
    "lstm": dict(hidden_size=16),
    "oplstm": dict(hidden_size=16, key_size=8, value_size=8),
    "mlp": dict(hidden_size=16, num_hidden_layers=1),
    "vsml": dict(state_size=4),
    "maml": dict(inner_lr=0.3),
}
NAMES = sorted(LEARNERS)


def tiny(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_learner(name, D, C, **TINY[name])


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, D, generator=gen), torch.randint(0, C, (B, L), generator=gen)


def test_registry_covers_every_learner():
    assert set(TINY) == set(LEARNERS)
    expected = {
        "transformer": GPICLTransformer,
        "lstm": LSTMLearner,
        "oplstm": OuterProductLSTMLearner,
        "mlp": MLPLearner,
        "vsml": VSMLLearner,
        "maml": OnlineSGDLearner,
    }
    for name in NAMES:
        assert type(tiny(name)) is expected[name]


@pytest.mark.parametrize("name", NAMES)
def test_output_shape(name):
    x, y = batch()
    logits = tiny(name)(x, y)
    assert logits.shape == (B, L, C) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("j", [0, 3, L - 1])
def test_causality(name, j):
    """Changing x_j leaves positions < j alone; changing y_j leaves positions <= j alone."""
    model = tiny(name).eval()
    x, y = batch()
    with torch.no_grad():
        base = model(x, y)
        x2 = x.clone()
        x2[:, j] += 1.0
        out_x = model(x2, y)
        y2 = y.clone()
        y2[:, j] = (y2[:, j] + 1) % C
        out_y = model(x, y2)
    torch.testing.assert_close(out_x[:, :j], base[:, :j], rtol=0, atol=1e-6)
    assert not torch.allclose(out_x[:, j], base[:, j])  # x_j does reach its own prediction
    torch.testing.assert_close(out_y[:, : j + 1], base[:, : j + 1], rtol=0, atol=1e-6)
    if j + 1 < L:
        assert not torch.allclose(out_y[:, j + 1], base[:, j + 1])  # y_j reaches the next one


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model = tiny(name)
    x, y = batch()
    F.cross_entropy(model(x, y).flatten(0, 1), y.flatten()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def easy_task(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence repeats one random label over noise inputs: after the first example,
    the label is given by the previous one. Every learner can pick this up, including VSML,
    whose shared per-weight LSTMs cannot represent a fixed input-to-label map."""
    x = torch.randn(16, L, D, generator=gen)
    return x, torch.randint(0, C, (16, 1), generator=gen).expand(16, L)


# An online linear learner (maml) cannot fit this task's repeated labels from noise inputs;
# tests/test_baselines.py meta-trains it on a task it can learn.
@pytest.mark.parametrize("name", [n for n in NAMES if n != "maml"])
def test_short_training_reduces_loss(name):
    model = tiny(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    x_eval, y_eval = easy_task(gen)

    def loss_on(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x, y).flatten(0, 1), y.flatten())

    with torch.no_grad():
        before = loss_on(x_eval, y_eval).item()
    for _ in range(40):
        opt.zero_grad()
        loss_on(*easy_task(gen)).backward()
        opt.step()
    with torch.no_grad():
        after = loss_on(x_eval, y_eval).item()
    assert after < 0.7 * before, (before, after)


def test_mlp_has_no_memory_of_the_sequence():
    """The MLP's prediction at i depends only on token i, unlike the recurrent learners."""
    x, y = batch()
    x2 = x.clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        mlp, lstm = tiny("mlp"), tiny("lstm")
        torch.testing.assert_close(mlp(x2, y)[:, 1:], mlp(x, y)[:, 1:], rtol=0, atol=0)
        assert not torch.allclose(lstm(x2, y)[:, -1], lstm(x, y)[:, -1])


@pytest.mark.parametrize("name", NAMES)
def test_learner_config_round_trip(name):
    model = tiny(name)
    cfg = learner_config(model)
    assert cfg["name"] == name and cfg["input_dim"] == D and cfg["num_classes"] == C
    rebuilt = build_learner(**cfg)
    rebuilt.load_state_dict(model.state_dict())
    x, y = batch()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, y), model(x, y))


def test_unknown_name_and_kwargs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown learner 'gru'.*lstm"):
        build_learner("gru", D, C)
    with pytest.raises(ValueError, match=r"unknown 'lstm' options \['hidden'\].*hidden_size"):
        build_learner("lstm", D, C, hidden=8)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        build_learner("mlp", D, C, hidden_size=0)
    with pytest.raises(ValueError, match="not a registered learner"):
        learner_config(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", ["lstm", "oplstm", "mlp", "vsml"])
def test_bad_input_shapes_are_clear_errors(name):
    model = tiny(name)
    x, y = batch()
    with pytest.raises(ValueError, match=f"x must have shape \\(B, L, {D}\\)"):
        model(x[..., :-1], y)
    with pytest.raises(ValueError, match="y must have shape"):
        model(x, y[:, :-1])
    with pytest.raises(ValueError, match="int64"):
        model(x, y.float())


def test_vsml_is_one_lstm_per_weight_with_the_documented_messages():
    """VSML's forward pass equals its definition stepped by hand: at step i the LSTM of weight
    (j, c) reads (x_ij, onehot(y_{i-1})_c), and logit c sums w . h_ijc over j, over sqrt(D)."""
    model = tiny("vsml")
    x, y = batch()
    lstm, n = model.cell, model.cfg.state_size
    w_ih, w_hh, bias = lstm.weight_ih, lstm.weight_hh, lstm.bias_ih + lstm.bias_hh
    prev = torch.cat([torch.zeros(B, 1, C), F.one_hot(y[:, :-1], C).float()], dim=1)
    h = s = torch.zeros(B, D, C, n)
    expected = []
    for i in range(L):
        msg = torch.stack(torch.broadcast_tensors(x[:, i, :, None], prev[:, i, None, :]), dim=-1)
        gi, gf, gg, go = (msg @ w_ih.T + h @ w_hh.T + bias).chunk(4, dim=-1)
        s = torch.sigmoid(gf) * s + torch.sigmoid(gi) * torch.tanh(gg)
        h = torch.sigmoid(go) * torch.tanh(s)
        expected.append((h @ model.out.weight[0]).sum(dim=1) / D**0.5 + model.out.bias)
    with torch.no_grad():
        torch.testing.assert_close(model(x, y), torch.stack(expected, dim=1))


@pytest.mark.parametrize("name", ["lstm", "oplstm"])
def test_the_lstms_read_inputs_at_the_norm_of_a_64_feature_input(name):
    """x enters the LSTM as x * sqrt(64 / D), next to an unscaled one-hot of the last label:
    the gates' statistics of a 64-feature input at any input width D."""
    model = tiny(name)
    x, y = batch()
    seen = []
    model.lstm.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(x, y)
    prev = torch.cat([torch.zeros(B, 1, C), F.one_hot(y[:, :-1], C).float()], dim=1)
    torch.testing.assert_close(seen[0], torch.cat([x * (64 / D) ** 0.5, prev], dim=-1))
