"""Smoke tests of the benchmarks (table2, curves, classical, tabular, profile_step): --quick, outputs in a tmp dir.

Meta-trained methods read tiny random-weight run folders written here, so the tests need
neither a GPU run nor dataset files (the "random" dataset is generated).
"""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import write_run, write_tiny_mnist

from benchmarks import (
    attention_kernels,
    bimodality,
    classical,
    curves,
    domain_features,
    image_context,
    normalisation,
    plateau_moments,
    plateaus,
    profile_step,
    sequence_length,
    state_size,
    table2,
    table_traits,
    tabular,
    task_transition,
    wide_tables,
)
from training.learners import build_learner
from training.maml_init import export_maml_init
from training.state import read_meta

TINY_GPICL = dict(max_len=100, d_model=16, n_layers=1, n_heads=2, head_dim=8, mlp_ratio=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny GPICL run and a tiny MAML run on 4 x 4 x 1 inputs (input_dim 16)."""
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    gpicl = write_run(root / "gpicl", build_learner("transformer", 16, 10, **TINY_GPICL), image_size=4, channels=1)
    maml = write_run(root / "maml", build_learner("maml", 16, 10, inner_lr=0.01), image_size=4, channels=1)
    return {"gpicl": gpicl, "maml": maml, "missing": root / "missing"}


@pytest.fixture(scope="module")
def table2_out(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("table2")
    table2.main(
        [
            "--quick",
            "--datasets",
            "random",
            "--image-size",
            "4",
            "--channels",
            "1",
            "--out",
            str(out),
            "--gpicl-runs",
            str(runs["gpicl"]),
            "--maml-runs",
            str(runs["maml"]),
            *(f"--{m}-runs={runs['missing']}" for m in ("vsml", "lstm", "oplstm")),
        ]
    )
    return out


def test_table2_quick_writes_every_method(table2_out, runs):
    data = json.loads((table2_out / "table2.json").read_text())
    results = data["results"]
    assert list(results) == [m.name for m in table2.METHODS]
    for name in ("SGD", "MAML", "GPICL Transformer", "GPICL + test-time ensembling"):
        cell = results[name]["datasets"]["random"]
        assert results[name]["status"] == "ok" and cell["status"] == "ok"
        assert len(cell["acc"]) == 100 and 0 <= cell["final_acc"] <= 1
    sgd = results["SGD"]["datasets"]["random"]["acc"]
    assert sum(sgd[-20:]) / 20 > sum(sgd[:10]) / 10 + 0.3  # 10 points, each seen ~10 times: SGD learns them
    for name in ("VSML", "LSTM", "Outer-product LSTM"):
        assert results[name]["status"].startswith("not run (needs GPU meta-training: python -m training.train")
        assert results[name]["missing_runs"] == [str(runs["missing"])]
    assert results["GPICL Transformer"]["runs"] == [{"path": str(runs["gpicl"]), "step": 7}]
    assert data["protocol"]["n_tasks"] == 2 and data["protocol"]["members"] == 2
    md = (table2_out / "table2.md").read_text()
    assert "| VSML | not run² (100.00) |" in md and "- VSML: not run (needs GPU meta-training:" in md
    assert "| SGD | " in md and "(100.00) |" in md


def test_table2_refuses_a_run_of_the_wrong_learner(runs, tmp_path):
    with pytest.raises(ValueError, match="meta-trained learner 'maml', but GPICL Transformer needs 'transformer'"):
        table2.main(["--quick", "--datasets", "random", "--out", str(tmp_path), "--gpicl-runs", str(runs["maml"])])


def test_table2_update_replaces_the_rows_asked_for_and_keeps_the_others(table2_out, runs, tmp_path):
    shutil.copy(table2_out / "table2.json", tmp_path / "table2.json")
    before = json.loads((tmp_path / "table2.json").read_text())["results"]
    common = ["--quick", "--datasets", "random", "--image-size", "4", "--channels", "1", "--out", str(tmp_path)]
    table2.main([*common, "--methods", "MAML", "--update", "--maml-runs", f"{runs['maml']},{runs['missing']}"])
    after = json.loads((tmp_path / "table2.json").read_text())["results"]
    assert list(after) == list(before)
    assert after["MAML"]["missing_runs"] == [str(runs["missing"])]
    assert "--methods MAML --update" in after["MAML"]["made_by"]["command"]
    first = json.loads((table2_out / "table2.json").read_text())["protocol"]["command"]
    assert after["SGD"]["made_by"]["command"] == first
    assert after["SGD"]["datasets"] == before["SGD"]["datasets"]
    md = (tmp_path / "table2.md").read_text()
    assert f"- MAML: `{after['MAML']['made_by']['command']}` on cpu" in md
    assert f"`{first}` on cpu" in md and "| GPICL Transformer | " in md
    with pytest.raises(ValueError, match="another protocol"):
        table2.main([*common, "--n-seqs", "3", "--methods", "MAML", "--update", "--maml-runs", str(runs["maml"])])


def test_ensemble_un_permutes_labels():
    """A learner that always puts all mass on slot 0 predicts, through member e, class pi_e^-1(0)."""

    class SlotZero(torch.nn.Module):
        def forward(self, x, y):
            return torch.nn.functional.one_hot(torch.zeros_like(y), 3).float() * 50

    ens = table2.TestTimeEnsemble(SlotZero(), members=1, num_classes=3, seed=0)
    probs = ens(torch.randn(2, 5, 4), torch.zeros(2, 5, dtype=torch.long)).exp()
    g = torch.Generator().manual_seed(0)
    torch.randn(4, 4, generator=g)
    perm = torch.rand(3, generator=g).argsort()
    assert (probs.argmax(-1) == perm.argsort()[0]).all()


def test_curves_from_table2(table2_out, tmp_path):
    series = curves.main(["--table2", str(table2_out / "table2.json"), "--out", str(tmp_path)])
    assert set(series["random"]) == {"SGD", "MAML", "GPICL Transformer", "GPICL + test-time ensembling"}
    assert series["random"]["SGD"]["prediction"] == list(range(1, 101))
    assert series["random"]["SGD"]["paper_final"] == 1.0
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert json.loads((tmp_path / "curves.json").read_text())["curves"].keys() == {"random"}


def test_classical_quick(runs, tmp_path):
    init = export_maml_init(runs["maml"], tmp_path / "maml_init")
    records = classical.main(["--quick", "--datasets", "iris", "--maml-checkpoint", str(init), "--out", str(tmp_path)])
    models = {r["model"] for r in records}
    assert {
        "GPICL (E=1)",
        "GPICL (E=8)",
        "LogisticRegression",
        "HistGradientBoosting",
        "OnlineSGD (paper SGD)",
        "MAML",
    } <= models
    assert all(r["setting"] == "iris (3-fold CV)" and 0 <= r["acc_mean"] <= 1 and r["fit_s"] > 0 for r in records)
    data = json.loads((tmp_path / "classical.json").read_text())
    assert data["where_gpicl_loses"].startswith("GPICL (E=8) has the best mean accuracy on")
    md = (tmp_path / "classical.md").read_text()
    assert "## Where GPICL loses" in md and "| iris (3-fold CV) |" in md
    assert (tmp_path / "classical.png").stat().st_size > 1000


def test_where_gpicl_loses_is_computed_from_the_records():
    def rec(setting, model, acc, n_train=100, t=1.0):
        return {
            "setting": setting,
            "dataset": "x",
            "n_train": n_train,
            "model": model,
            "acc_mean": acc,
            "acc_std": 0.0,
            "n_scores": 1,
            "fit_s": t,
            "predict_s": t,
        }

    records = [
        rec("a", "GPICL (E=8)", 0.9, t=3.0),
        rec("a", "LogisticRegression", 0.8),
        rec("b", "GPICL (E=8)", 0.5, n_train=1000, t=2.0),
        rec("b", "LogisticRegression", 0.7),
        rec("b", "SVC", 0.75),
    ]
    text = classical.where_gpicl_loses(records, max_context=99)
    assert "best mean accuracy on 1 of 2 settings (a)" in text
    assert "b: 0.500 vs SVC 0.750 (-25.0 points)" in text
    assert "On b the training set exceeds the 8 x 99 = 792 rows" in text
    assert "median 2.5x the time of LogisticRegression (range 2.0x to 3.0x" in text


def test_normalisation_quick(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPICL_DATA_ROOT", str(write_tiny_mnist(tmp_path / "data", n_train=20, n_test=40)))
    out = tmp_path / "normalisation.md"
    normalisation.main(["--quick", "--datasets", "mnist", "--out", str(out)])
    row = next(line for line in out.read_text().splitlines() if line.startswith("| mnist"))
    assert row.count("%") == 4


def test_profile_step_quick_reports_both_phases():
    text = profile_step.main(["--quick"])
    rows = {
        line.split("|")[1].strip(): float(line.split("|")[2])
        for line in text.splitlines()
        if line.startswith("| sample") or line.startswith("| train_step")
    }
    assert set(rows) == {"sample", "train_step"} and all(v > 0 for v in rows.values())
    assert "Top 5 ops" in text and "Wall-clock" in text


def test_profile_step_cuda_graph_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="--cuda-graph needs a CUDA device"):
        profile_step.main(["--quick", "--cuda-graph"])


def test_attention_kernels_quick_agree_with_the_reference(tmp_path):
    attention_kernels.main(["--quick", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "attention_kernels.json").read_text())["rows"]
    assert {r["impl"] for r in rows} >= {"sdpa, compiled", "explicit softmax, compiled", "sdpa math"}
    assert all(r["ms"] > 0 and r["max_error"] < 1e-4 for r in rows)


@pytest.fixture(scope="module")
def tabular_quick(tiny_checkpoint, tmp_path_factory):
    """``--quick`` with the tiny checkpoint (5 label slots; the quick tables have at most 3 classes)."""
    out = tmp_path_factory.mktemp("tabular") / "tabular"
    data = tabular.main(["--quick", "--checkpoints", f"{tiny_checkpoint},no-such-checkpoint", "--out", str(out)])
    return out, data


def test_tabular_quick_writes_sane_outputs(tabular_quick, tiny_checkpoint):
    out, data = tabular_quick
    gpicl = f"GPICL ({tiny_checkpoint.name})"
    assert data == json.loads(out.with_suffix(".json").read_text())
    assert data["learners"] == ["LogisticRegression", gpicl]
    assert list(data["tables"]) == tabular.QUICK["tables"].split(",")
    assert len(data["rows"]) == 3 * 2  # 3 tables x 1 size x 1 repeat x 2 learners
    for r in data["rows"]:
        assert r["size"] == 50 and r["error"] is None and not r["reused"]
        assert 0 <= r["accuracy"] <= 1 and r["log_loss"] >= 0 and r["seconds"] > 0
    assert data["unavailable"]["GPICL (no-such-checkpoint)"].startswith(
        "not available: checkpoint 'no-such-checkpoint'"
    )
    assert set(data["summary"]["mean_accuracy"]) == {"LogisticRegression", gpicl}
    md = out.with_suffix(".md").read_text()
    for line in ("| LogisticRegression | ", f"| {gpicl} | ", "| GPICL (no-such-checkpoint) | not available |"):
        assert line in md
    assert "| best classical | " in md and "| carData/TitanicSurvival | " in md
    assert out.with_suffix(".png").stat().st_size > 1000


def test_tabular_reuse_copies_the_rows_of_the_same_draws(tabular_quick, tiny_checkpoint, tmp_path):
    out, first = tabular_quick
    args = ["--quick", "--checkpoints", str(tiny_checkpoint), "--reuse", str(out.with_suffix(".json"))]
    data = tabular.main([*args, "--learners", "LogisticRegression,GPICL,kNN", "--out", str(tmp_path / "t")])
    reused = [r for r in data["rows"] if r["reused"]]
    assert len(reused) == 6 and data["meta"]["reused_rows"] == 6
    assert [{**r, "reused": False} for r in reused] == first["rows"]
    assert {r["learner"] for r in data["rows"] if not r["reused"]} == {"kNN"}


def test_table_traits_sets_each_tables_gap_beside_its_traits(tabular_quick, tiny_checkpoint, tmp_path):
    out, data = tabular_quick
    args = ["--results", str(out.with_suffix(".json")), "--size", "50", "--baseline", "LogisticRegression"]
    text = table_traits.main([*args, "--learner", f"GPICL ({tiny_checkpoint.name})", "--out", str(tmp_path / "t.md")])
    assert (tmp_path / "t.md").read_text() == text + "\n"
    cells_of = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")]
    body = [cells for cells in cells_of if cells[0].strip() in data["tables"]]
    assert len(body) == len(data["tables"]) == 3
    acc = {r["table"]: {} for r in data["rows"]}
    for r in data["rows"]:
        acc[r["table"]][r["learner"]] = r["accuracy"]  # one draw per table and learner in --quick
    gaps = [float(cells[1]) for cells in body]
    assert gaps == sorted(gaps)
    for cells in body:
        a = acc[cells[0].strip()]
        assert float(cells[1]) == pytest.approx(
            100 * (a[f"GPICL ({tiny_checkpoint.name})"] - a["LogisticRegression"]), abs=0.051
        )
        assert 0 < float(cells[6]) <= 1 and 1 <= float(cells[7]) <= int(cells[3])  # majority share, effective columns
    assert "| Spearman with the gap |" in text
    with pytest.raises(SystemExit, match="no table with both"):
        table_traits.main([*args, "--learner", "kNN"])


def test_tabular_gpicl_pipeline_runs_it_after_the_one_hot_encoding(tiny_checkpoint, tmp_path):
    args = ["--quick", "--gpicl-pipeline", "--learners", "GPICL", "--checkpoints", str(tiny_checkpoint)]
    data = tabular.main([*args, "--out", str(tmp_path / "t")])
    assert data["learners"] == [f"GPICL ({tiny_checkpoint.name}, one-hot pipeline)"]
    assert len(data["rows"]) == 3 and all(r["error"] is None and 0 <= r["accuracy"] <= 1 for r in data["rows"])
    assert "in the LogisticRegression pipeline" in (tmp_path / "t.md").read_text()


def test_tabular_gpicl_params_reach_the_estimator_and_name_the_learner(tiny_checkpoint, tmp_path):
    args = ["--quick", "--learners", "GPICL", "--checkpoints", str(tiny_checkpoint), "--tables", "datasets/iris"]
    one = tabular.main([*args, "--gpicl-params", '{"n_estimators": 1}', "--out", str(tmp_path / "one")])
    two = tabular.main([*args, "--gpicl-params", '{"n_estimators": 2}', "--out", str(tmp_path / "two")])
    assert one["learners"] == [f"GPICL ({tiny_checkpoint.name}, n_estimators=1)"]
    assert one["meta"]["gpicl_params"] == {"n_estimators": 1}
    assert "`GPICLClassifier(n_estimators=1)` on device" in (tmp_path / "one.md").read_text()
    assert one["rows"][0]["log_loss"] != two["rows"][0]["log_loss"]  # a second member changes the probabilities


def test_tabular_stratified_draw_keeps_every_class_on_both_sides():
    y = np.array(["a"] * 90 + ["b"] * 8 + ["c"] * 2)
    for seed in range(5):
        train, test = tabular.stratified_draw(y, 10, 50, seed)
        assert len(train) == 10 and len(test) == 50 and not set(train) & set(test)
        assert set(y[train]) == set(y[test]) == {"a", "b", "c"}
    first, again = tabular.stratified_draw(y, 10, 50, 3), tabular.stratified_draw(y, 10, 50, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_tabular_size_rule_leaves_a_fifth_for_testing():
    assert tabular.size_fits(100, 150, 3) and not tabular.size_fits(500, 150, 3)
    assert tabular.size_fits(1000, 1250, 2) and not tabular.size_fits(1000, 1249, 2)


def test_tabular_log_loss_clips_classes_the_model_never_saw():
    classes = np.array(["a", "b"])
    accuracy, log_loss = tabular.score(np.array(["a", "c"]), np.array([[1.0, 0.0], [0.5, 0.5]]), classes)
    assert accuracy == 0.5 and log_loss == pytest.approx(-np.log(tabular.LOG_LOSS_CLIP) / 2)


def test_tabular_suite_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(tabular.SUITE_ENV, str(tmp_path / "absent.json"))
    with pytest.raises(FileNotFoundError, match="GPICL_TABULAR_SUITE"):
        tabular.find_suite()


def test_image_context_quick_compares_sizes(tmp_path, monkeypatch, tiny_checkpoint):
    # Tiny MNIST: 8x8 images of 4 classes (64 features); the tiny checkpoint reads 19 rows.
    monkeypatch.setenv("GPICL_DATA_ROOT", str(write_tiny_mnist(tmp_path / "data", n_train=60, n_test=80)))
    args = ["--datasets", "mnist", "--sizes", "8,40", "--repeats", "1", "--test-size", "50"]
    image_context.main([*args, "--checkpoints", str(tiny_checkpoint), "--out", str(tmp_path)])
    text = (tmp_path / "image_context.md").read_text()
    records = json.loads((tmp_path / "image_context.json").read_text())["records"]
    assert {r["learner"] for r in records} == {f"GPICL ({tiny_checkpoint})", "LogisticRegression"}
    assert {r["n_train"] for r in records} == {8, 40} and all(0 <= r["acc"] <= 1 for r in records)
    assert "gain 8 -> 40" in text


def test_wide_tables_quick_scores_every_checkpoint(tmp_path, tiny_checkpoint):
    wide_tables.main(["--quick", "--checkpoints", f"default,{tiny_checkpoint}", "--out", str(tmp_path)])
    records = json.loads((tmp_path / "wide_tables.json").read_text())["records"]
    assert {r["learner"] for r in records} == {"GPICL (default)", f"GPICL ({tiny_checkpoint})", "LogisticRegression"}
    assert all(r["features"] == 300 and 0 <= r["accuracy"] <= 1 for r in records)
    assert "| 300 (150) | 100 |" in (tmp_path / "wide_tables.md").read_text()


@pytest.fixture
def mnist_and_another(tmp_path, monkeypatch):
    """GPICL_DATA_ROOT with a tiny MNIST and a copy of it as FashionMNIST (train and test splits)."""
    root = write_tiny_mnist(tmp_path / "data", n_train=200, n_test=80)
    shutil.copytree(root / "mnist", root / "fashion_mnist")
    monkeypatch.setenv("GPICL_DATA_ROOT", str(root))


@pytest.mark.usefixtures("mnist_and_another")
def test_task_transition_quick_meta_tests_seen_unseen_and_another_dataset(tmp_path):
    args = ["--quick", "--jobs", "1", "--transformer-widths", "16,32", "--work-dir", str(tmp_path / "runs")]
    task_transition.main([*args, "--out", str(tmp_path)])
    records = json.loads((tmp_path / "task_transition.json").read_text())["records"]
    runs = {(n, w) for n, w in (("transformer", 16), ("transformer", 32), ("mlp", 256))}
    assert {(r["learner"], r["width"], r["tasks"]) for r in records} == {(*run, k) for run in runs for k in (4, None)}
    sizes = {r["width"]: r["parameters"] for r in records if r["learner"] == "transformer"}
    assert sizes[16] < sizes[32]
    for r in records:
        assert ("seen" in r) == (r["tasks"] is not None)  # K = infinity has no seen tasks
        assert all(0 <= r[s]["acc"] <= 1 for s in ("unseen", "fashion_mnist")) and np.isfinite(r["final_loss"])
    assert (tmp_path / "task_transition.png").stat().st_size > 0
    assert "| transformer (seed 0) | 32 |" in (tmp_path / "task_transition.md").read_text()


def test_a_run_behind_several_records_is_counted_once_when_stopped(capsys):
    # plateaus: the base run is a record of every study; the report counts runs, not records
    records = [{"config": "base", "steps": 5}, {"config": "base", "steps": 5}, {"config": "b512", "steps": 10}]
    args = argparse.Namespace(steps=10, out=None, quick=True)
    task_transition.report("plateaus", records, "table", "cmd", args, draw=None)
    assert "Stopped by --max-minutes before 10 steps: 1 of 2 runs, at 5 steps" in capsys.readouterr().out


@pytest.mark.usefixtures("mnist_and_another")
def test_runs_stopped_by_max_minutes_are_reported_and_resume(tmp_path):
    args = ["--quick", "--jobs", "1", "--learners", "transformer", "--work-dir", str(tmp_path / "runs")]
    args += ["--out", str(tmp_path)]
    task_transition.main([*args, "--max-minutes", "0"])  # out of time at the first logged step
    report = (tmp_path / "task_transition.md").read_text()
    assert "Stopped by --max-minutes before 20 steps: 2 of 2 runs, at 1, 1 steps" in report
    assert [r["steps"] for r in json.loads((tmp_path / "task_transition.json").read_text())["records"]] == [1, 1]
    task_transition.main(args)  # the same command without the limit finishes them
    assert "Stopped by" not in (tmp_path / "task_transition.md").read_text()
    assert [r["steps"] for r in json.loads((tmp_path / "task_transition.json").read_text())["records"]] == [20, 20]


@pytest.mark.usefixtures("mnist_and_another")
def test_bimodality_quick_trains_every_seed_of_every_k(tmp_path):
    bimodality.main(["--quick", "--jobs", "1", "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)])
    records = json.loads((tmp_path / "bimodality.json").read_text())["records"]
    assert [(r["tasks"], r["seed"]) for r in records] == [(4, 0), (4, 1)]
    assert all(np.isfinite(r["final_loss"]) and 0 <= r["seen"]["acc"] <= 1 for r in records)
    assert (tmp_path / "bimodality.png").stat().st_size > 0
    assert "| 2^2 | 2 |" in (tmp_path / "bimodality.md").read_text()


@pytest.mark.usefixtures("mnist_and_another")
def test_plateaus_adam_lrs_chooses_the_learning_rate_studys_settings(tmp_path):
    argv = ["--quick", "--jobs", "1", "--studies", "Adam learning rate", "--adam-lrs", "3e-4"]
    plateaus.main([*argv, "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)])
    records = json.loads((tmp_path / "plateaus.json").read_text())["records"]
    assert [r["setting"] for r in records] == ["lr=0.0003"]
    (run,) = (tmp_path / "runs").iterdir()
    config = read_meta(run / "state")["config"]
    assert (config["optimizer"], config["lr"]) == ("adam", 3e-4)


@pytest.mark.usefixtures("mnist_and_another")
def test_plateaus_quick_shares_the_base_run_between_studies(tmp_path):
    work = tmp_path / "runs"
    argv = ["--quick", "--jobs", "1", "--studies", "batch size,biased fraction", "--work-dir", str(work)]
    plateaus.main([*argv, "--out", str(tmp_path)])
    records = json.loads((tmp_path / "plateaus.json").read_text())["records"]
    assert [r["setting"] for r in records] == [
        "batch_size=32",
        "batch_size=128",
        "batch_size=512",
        *(f"biased_fraction={f}" for f in (0.0, 0.3, 0.6, 0.9)),
    ]
    assert records[1]["config"] == records[3]["config"]  # the base run, trained once
    assert len(list(work.iterdir())) == 6
    for r in records:
        assert [c["step"] for c in r["curve"]] == [10, 20]
        assert all(0 <= c["acc"] <= 1 and np.isfinite(c["loss"]) for c in r["curve"])
    assert (tmp_path / "plateaus.png").stat().st_size > 0
    assert "| batch size | batch_size=32 |" in (tmp_path / "plateaus.md").read_text()


def test_adam_rms_is_the_bias_corrected_rms_gradient():
    w = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([w], lr=1e-3, betas=(0.9, 0.99))
    for g in ([1.0, -2.0, 0.0], [3.0, 2.0, 0.0]):
        w.grad = torch.tensor(g)
        optimizer.step()
    v = (0.01 * 0.99 * np.array([1.0, 4.0, 0.0]) + 0.01 * np.array([9.0, 4.0, 0.0])) / (1 - 0.99**2)
    np.testing.assert_allclose(plateau_moments.adam_rms(optimizer), np.sqrt(v), rtol=1e-6)


@pytest.mark.usefixtures("mnist_and_another")
def test_plateau_moments_quick_reads_the_moments_at_each_stage(tmp_path):
    rows = plateau_moments.main(["--quick", "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)])
    assert [r["step"] for r in rows] == [4, 8]
    for r in rows:
        assert r["entries"] > 0 and r["entries_without_gradient"] >= 0
        quantiles = list(r["rms_quantiles"].values())
        assert all(q >= 0 for q in quantiles) and quantiles == sorted(quantiles)
        shares = [r["share_damped"][str(e)] for e in plateau_moments.EPSILONS]
        assert all(0 <= s <= 1 for s in shares) and shares == sorted(shares, reverse=True)
    assert "| 8 |" in (tmp_path / "plateau_moments.md").read_text()


def test_a_plateau_ends_at_the_first_meta_test_that_reaches_the_threshold():
    curve = [{"step": 250, "acc": 0.12}, {"step": 500, "acc": 0.21}, {"step": 750, "acc": 0.18}]
    assert plateaus.plateau_end(curve, 0.2) == 500
    assert plateaus.plateau_end(curve, 0.3) is None


@pytest.mark.usefixtures("mnist_and_another")
def test_plateaus_batch_sizes_replace_the_batch_size_study(tmp_path):
    argv = ["--quick", "--jobs", "1", "--studies", "batch size", "--batch-sizes", "8,16"]
    plateaus.main([*argv, "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)])
    records = json.loads((tmp_path / "plateaus.json").read_text())["records"]
    assert [(r["setting"], r["batch_size"]) for r in records] == [("batch_size=8", 8), ("batch_size=16", 16)]


def test_plateaus_refuses_an_unknown_study():
    with pytest.raises(SystemExit):
        plateaus.main(["--studies", "batch size,momentum"])


def test_k_labels_name_powers_of_two_infinity_and_a_finer_grid():
    assert [task_transition.k_label(k) for k in (4, 1024, 1500, None)] == ["2^2", "2^10", "1500", "inf"]


def test_bimodality_refuses_infinite_k():
    with pytest.raises(SystemExit):
        bimodality.main(["--tasks", "inf"])


@pytest.mark.usefixtures("mnist_and_another")
def test_domain_features_quick_meta_trains_on_pixels_and_on_features(tmp_path):
    domain_features.main(
        ["--quick", "--jobs", "1", "--image-size", "8", "--out-dim", "16", "--datasets", "mnist,fashion_mnist,random",
         "--during", "mnist", "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)]
    )  # fmt: skip
    data = json.loads((tmp_path / "domain_features.json").read_text())
    assert [r["inputs"] for r in data["records"]] == ["pixels", "features"]
    assert data["feature_net"]["dataset"] == "mnist" and data["feature_net"]["split"] == "train"
    for r in data["records"]:
        assert all(len(r[n]) == 30 and all(0 <= a <= 1 for a in r[n]) for n in ("mnist", "fashion_mnist", "random"))
        assert [d["step"] for d in r["during"]] == [10, 20]
    state = json.loads((tmp_path / "runs" / "mnist_features_mnist" / "state" / "meta.json").read_text())
    assert state["config"]["input_dim"] == 16 and state["config"]["features"].endswith("feature_net_mnist_quick")
    assert (tmp_path / "domain_features.png").stat().st_size > 0


@pytest.mark.usefixtures("mnist_and_another")
def test_sequence_length_quick_meta_tests_every_run_at_every_length(tmp_path):
    sequence_length.main(["--quick", "--jobs", "1", "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)])
    records = json.loads((tmp_path / "sequence_length.json").read_text())["records"]
    assert [(r["train_length"], r["batch_size"]) for r in records] == [(10, 20), (20, 10)]  # 200 rows per step
    for r in records:
        for name in ("mnist", "fashion_mnist"):
            assert sorted(r[name], key=int) == ["10", "20", "40"] and all(0 <= a <= 1 for a in r[name].values())
    assert "| 20 | 0 | 10 |" in (tmp_path / "sequence_length.md").read_text()
    assert (tmp_path / "sequence_length.png").stat().st_size > 0


@pytest.mark.usefixtures("mnist_and_another")
def test_sequence_length_trains_every_length_from_every_seed(tmp_path):
    argv = ["--quick", "--jobs", "1", "--seeds", "0,1"]  # --quick: training lengths 10 and 20
    sequence_length.main([*argv, "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)])
    records = json.loads((tmp_path / "sequence_length.json").read_text())["records"]
    assert [(r["train_length"], r["seed"]) for r in records] == [(10, 0), (10, 1), (20, 0), (20, 1)]
    seeds = {read_meta(run / "state")["config"]["seed"] for run in (tmp_path / "runs").iterdir()}
    assert seeds == {0, 1}
    assert records[0]["mnist"] != records[1]["mnist"] or records[0]["final_loss"] != records[1]["final_loss"]
    # --quick's 10 steps never leave the plateau (loss below 2.2 after the biased phase)
    assert all(r["left_plateau"] is None for r in records)
    assert "not yet" in (tmp_path / "sequence_length.md").read_text()


def test_sequence_length_refuses_a_test_shorter_than_training():
    with pytest.raises(SystemExit):
        sequence_length.main(["--train-lengths", "100,300", "--test-lengths", "100"])


@pytest.mark.usefixtures("mnist_and_another")
def test_state_size_quick_trains_the_smallest_size_of_every_learner(tmp_path):
    state_size.main(["--quick", "--jobs", "1", "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)])
    records = json.loads((tmp_path / "state_size.json").read_text())["records"]
    assert [r["learner"] for r in records] == ["lstm", "oplstm", "vsml", "transformer"]
    by_name = {r["learner"]: r for r in records}
    assert by_name["lstm"]["state"] == 2 * 64 and by_name["oplstm"]["state"] == 2 * 64 + 16 * 16
    assert by_name["vsml"]["state"] == 2 * 64 * 10 * 4  # 8 x 8 inputs, 10 label slots, state 4
    assert by_name["transformer"]["state"] == 2 * 2 * 4 * 8 * 12  # layers, heads, head_dim, length
    assert all(0 <= r[d] <= 1 for r in records for d in ("mnist", "fashion_mnist"))
    assert (tmp_path / "state_size.png").stat().st_size > 0


@pytest.mark.usefixtures("mnist_and_another")
def test_state_size_trains_with_the_optimiser_asked_for_and_records_its_loss_curve(tmp_path):
    argv = ["--quick", "--learners", "lstm", "--optimizer", "sign_momentum", "--lr", "1e-4", "--jobs", "1"]
    state_size.main([*argv, "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)])
    (run,) = (tmp_path / "runs").iterdir()
    config = read_meta(run / "state")["config"]  # the saved run's TrainConfig
    assert (config["optimizer"], config["lr"]) == ("sign_momentum", 1e-4)
    (record,) = json.loads((tmp_path / "state_size.json").read_text())["records"]
    assert [step for step, _ in record["loss_curve"]] == list(range(1, 11))  # --quick: 10 steps, each logged
    assert all(np.isfinite(loss) for _, loss in record["loss_curve"])
    assert "sign_momentum at lr 0.0001" in (tmp_path / "state_size.md").read_text()


@pytest.mark.usefixtures("mnist_and_another")
def test_state_size_trains_only_the_sizes_asked_for(tmp_path):
    argv = ["--quick", "--learners", "lstm,oplstm", "--sizes", "oplstm:16", "--jobs", "1"]
    state_size.main([*argv, "--work-dir", str(tmp_path / "runs"), "--out", str(tmp_path)])
    (record,) = json.loads((tmp_path / "state_size.json").read_text())["records"]
    assert (record["learner"], record["options"]["key_size"]) == ("oplstm", 16)


def test_state_size_names_a_size_outside_the_grid(capsys):
    with pytest.raises(SystemExit):
        state_size.main(["--learners", "lstm", "--sizes", "lstm:64,vsml:4"])
    assert "--sizes vsml:4: not in the grid of --learners" in capsys.readouterr().err


@pytest.mark.usefixtures("mnist_and_another")
def test_plateaus_trains_every_setting_from_every_seed(tmp_path):
    work = tmp_path / "runs"
    argv = ["--quick", "--jobs", "1", "--studies", "Adam epsilon", "--adam-eps", "1e-8,1e-16", "--seeds", "0,1"]
    plateaus.main([*argv, "--work-dir", str(work), "--out", str(tmp_path)])
    records = json.loads((tmp_path / "plateaus.json").read_text())["records"]
    assert [(r["setting"], r["seed"]) for r in records] == [
        ("adam_eps=1e-08", 0),
        ("adam_eps=1e-08", 1),
        ("adam_eps=1e-16", 0),
        ("adam_eps=1e-16", 1),
    ]
    assert len({r["config"] for r in records}) == 4 == len(list(work.iterdir()))
    table = (tmp_path / "plateaus.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| Adam epsilon | adam_eps=1e-16 |"))
    plateau_per_seed, left = row.split(" | ")[2:4]
    assert len(plateau_per_seed.split(" / ")) == 2 and left.endswith(" of 2")


def test_the_median_plateau_counts_a_run_still_on_it_as_endless():
    runs = [{"plateau_steps": 500}, {"plateau_steps": None}, {"plateau_steps": 1000}]
    assert plateaus.median_plateau(runs) == 1000
    assert plateaus.median_plateau(runs[:2]) == np.inf
