"""``python -m gpicl_sklearn``: the bundled checkpoint against classic classifiers.

Cross-validates :class:`~gpicl_sklearn.GPICLClassifier` and four scikit-learn baselines,
each in a ``Pipeline`` after ``StandardScaler``, on the toy datasets that ship with
scikit-learn (nothing is downloaded), and prints a markdown table of accuracy
(mean ± std over folds) and fit + predict time per fold.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from gpicl_sklearn.checkpoint import load_checkpoint
from gpicl_sklearn.classifier import ContextSubsetWarning, GPICLClassifier

DATASETS = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer, "digits": load_digits}


def models(quick: bool) -> dict:
    return {
        "GPICL": GPICLClassifier(n_estimators=2 if quick else 8, device="cpu", random_state=0),
        "LogisticRegression": LogisticRegression(max_iter=1000),
        "KNeighbors": KNeighborsClassifier(),
        "RandomForest": RandomForestClassifier(n_estimators=20 if quick else 100, random_state=0),
        "SVC": SVC(),
    }


def run(quick: bool = False) -> str:
    """The markdown report: a header naming the checkpoint, then the table."""
    folds = 3 if quick else 5
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    cells: dict[str, dict[str, str]] = {}
    for data_name, load in DATASETS.items():
        X, y = load(return_X_y=True)
        if quick:  # a stratified-enough subsample keeps the smoke run to seconds
            keep = np.random.default_rng(0).permutation(len(y))[:150]
            X, y = X[keep], y[keep]
        for model_name, model in models(quick).items():
            with warnings.catch_warnings():
                # Folds larger than the context are expected here; the note below explains them.
                warnings.simplefilter("ignore", ContextSubsetWarning)
                result = cross_validate(make_pipeline(StandardScaler(), model), X, y, cv=cv)
            acc, seconds = result["test_score"], result["fit_time"] + result["score_time"]
            cells.setdefault(model_name, {})[data_name] = f"{acc.mean():.3f} ± {acc.std():.3f} ({seconds.mean():.2f} s)"

    ckpt = load_checkpoint("default")
    arch = ckpt.config["architecture"]
    lines = [
        f"Bundled checkpoint (sha256 {ckpt.sha256[:12]}): {arch['n_layers']} layers, d_model {arch['d_model']}, "
        f"{arch['num_classes']} label slots, {arch['max_len'] - 1} context rows; its model card "
        "(gpicl_sklearn/checkpoints/default/README.md) says how it was meta-trained.",
        "",
        f"Accuracy, mean ± std over {folds} stratified folds (mean fit + predict seconds per fold, CPU)"
        + (", on 150-row subsamples (--quick)." if quick else "."),
        "",
        "| model | " + " | ".join(DATASETS) + " |",
        "|---|" + "---|" * len(DATASETS),
    ]
    lines += [f"| {m} | " + " | ".join(row[d] for d in DATASETS) + " |" for m, row in cells.items()]
    n_est = models(quick)["GPICL"].n_estimators
    lines += [
        "",
        f"GPICL: each of its {n_est} ensemble members reads at most {arch['max_len'] - 1} training rows "
        f"as context, so folds with more than {n_est * (arch['max_len'] - 1)} training rows are subsampled.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gpicl_sklearn", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 folds on 150-row subsamples, smaller ensembles")
    print(run(quick=parser.parse_args(argv).quick))
