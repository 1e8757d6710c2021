"""The input preprocessing shared by meta-training and the estimator (gpicl_sklearn/inputs.py)."""

from __future__ import annotations

import pytest
import torch

from gpicl_sklearn.inputs import Z_CLIP, draw_layout, draw_slot_indices, fit_input_stats, model_inputs, standardize


def table(seed: int = 0, b: int = 3, n: int = 200, d: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 10.0, 0.1, 1e200, 1.0], dtype=torch.float64
    )  # 1e200: no overflow


def test_standardized_context_has_unit_mean_square_and_clipped_values():
    x = table()
    x[:, 0, 0] = 1e3  # an outlier
    x[:, :, 4] = 7.0  # constant: carries nothing, dropped
    stats = fit_input_stats(x)
    z = standardize(x, stats)
    assert z.shape == (3, 200, 10) and torch.isfinite(z).all()
    present = stats.present
    assert present[:, :4].all() and not present[:, 4].any() and not present[:, 5:].any()
    mean_square = z.square().sum((1, 2)) / (present.sum(1) * 200)
    torch.testing.assert_close(mean_square, torch.ones(3, dtype=torch.float64))
    assert (z.abs() <= Z_CLIP * stats.inv_rms + 1e-12).all()
    assert (z[:, :, ~present[0]] == 0).all()


def test_missing_values_get_indicators_and_zero_values():
    x = table()
    x[0, :50, 1] = float("nan")
    stats = fit_input_stats(x)
    assert stats.present[0, 5 + 1] and not stats.present[1, 5 + 1]  # only sequence 0 has missing values
    z = standardize(x, stats)
    assert torch.isfinite(z).all()
    assert (z[0, :50, 1] == 0).all()  # missing -> the context mean
    assert z[0, :50, 6].unique().numel() == 1 and z[0, 50:, 6].unique().numel() == 1
    assert z[0, 0, 6] != z[0, 50, 6]


def test_statistics_come_from_the_context_and_apply_to_queries():
    x = table(n=300)
    stats = fit_input_stats(x[:, :200])
    z_all = standardize(x, stats)
    torch.testing.assert_close(z_all[:, :200], standardize(x[:, :200], stats))
    # A query does not change with the rows beside it.
    torch.testing.assert_close(standardize(x[:, 250:251], stats), z_all[:, 250:251])


def test_feature_mask_drops_padding_columns():
    x = table()
    mask = torch.tensor([[True, True, False, False, False]] * 3)
    stats = fit_input_stats(x, mask)
    assert stats.present[:, :2].all() and not stats.present[:, 2:].any()


@pytest.mark.parametrize("mode", ["slots", "projection"])
def test_layout_maps_present_columns_only(mode: str):
    stats = fit_input_stats(table())
    layout = draw_layout(stats.present, 16, mode, torch.Generator().manual_seed(0))
    assert layout.shape == (3, 10, 16)
    assert (layout[~stats.present] == 0).all()
    if mode == "slots":  # each present column on its own slot
        used = layout[stats.present]
        assert (used.sum(1) == 1).all()
        for b in range(3):
            assert (layout[b].sum(0) <= 1).all()
    assert model_inputs(table(), stats, layout).shape == (3, 200, 16)


def test_more_columns_than_slots_are_projected():
    stats = fit_input_stats(table())
    layout = draw_layout(stats.present, 3, "slots", torch.Generator().manual_seed(0))  # 5 present > 3 slots
    assert ((layout != 0) & (layout != 1)).any()
    assert (layout[~stats.present] == 0).all()


def test_unknown_layout_is_an_error():
    with pytest.raises(ValueError, match="layout must be one of"):
        draw_layout(torch.ones(1, 2, dtype=torch.bool), 4, "rotate")


def test_slot_indices_are_an_injection_of_the_present_columns_and_the_layout_uses_them():
    present = torch.tensor([[True, False, True, True], [False, True, False, False], [True, True, True, True]])
    slot = draw_slot_indices(present, 3, torch.Generator().manual_seed(0))
    assert ((slot >= 0) == torch.tensor([[True, False, True, True], [False, True, False, False], [False] * 4])).all()
    assert len(set(slot[0][present[0]].tolist())) == 3  # distinct slots
    layout = draw_layout(present, 3, "slots", torch.Generator().manual_seed(1))
    # Same generator state after the Gaussian draw: the one-hot rows are those indices.
    g = torch.Generator().manual_seed(1)
    torch.randn(3, 4, 3, generator=g)
    again = draw_slot_indices(present, 3, g)
    fits = present.sum(1) <= 3
    assert torch.equal(layout[fits].argmax(-1)[again[fits] >= 0], again[fits][again[fits] >= 0])
