"""GPICLClassifier against classical scikit-learn classifiers on small tables and image subsamples.

    python -m benchmarks.classical                       # full (CPU, minutes)
    python -m benchmarks.classical --quick --out /tmp/c  # smoke run (CI): iris + one MNIST size

Every model is ``Pipeline([StandardScaler(), clf])`` and runs on CPU:
``GPICLClassifier`` (``--checkpoint``, ``n_estimators`` 1 and 8), LogisticRegression,
SGDClassifier, KNeighborsClassifier, SVC, RandomForestClassifier,
HistGradientBoostingClassifier (scikit-learn defaults), the paper's SGD baseline
``OnlineSGDClassifier`` and, when ``--maml-checkpoint`` exists, ``MAMLClassifier``.

Evaluation:

* **digits, iris, wine, breast_cancer** (scikit-learn): the rows are shuffled once (seed
  0; iris is stored sorted by class, which an online learner would see in that order),
  then stratified ``--folds``-fold cross-validation (``cross_validate``); mean ± std over
  folds; fit and predict (scoring) time per fold.
* **mnist, fashion_mnist**: raw 28 x 28 pixels as 784 features; ``--train-sizes`` rows
  drawn stratified from the training split, tested on one fixed sample of
  ``--test-size`` rows of the test split; mean ± std over ``--repeats`` draws. (The
  GPICL checkpoint was meta-trained on MNIST training images under random projections, so
  MNIST is close to its meta-training data; FashionMNIST is not.)

Writes ``classical.md``, ``classical.json`` and ``classical.png`` into ``--out``; the
markdown ends with a "where GPICL loses" paragraph computed from the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression, SGDClassifier  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_validate, train_test_split  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from benchmarks.common import RESULTS_DIR, command_line, write_outputs  # noqa: E402
from benchmarks.online_classifiers import MAMLClassifier, OnlineSGDClassifier  # noqa: E402
from gpicl_sklearn import ContextSubsetWarning, GPICLClassifier, load_checkpoint  # noqa: E402
from training.data import DatasetUnavailableError, load_split  # noqa: E402

TABLES: dict[str, Callable] = {
    "digits": load_digits,
    "iris": load_iris,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
}
IMAGES = ("mnist", "fashion_mnist")
GPICL = "GPICL (E=8)"  # the configuration the "where GPICL loses" paragraph is about


def make_models(checkpoint: str, maml_checkpoint: Path | None, seed: int) -> dict[str, Callable[[], Pipeline]]:
    """Factories of fresh pipelines, by display name."""
    clfs: dict[str, Callable] = {
        "GPICL (E=1)": lambda: GPICLClassifier(checkpoint, n_estimators=1, device="cpu", random_state=seed),
        GPICL: lambda: GPICLClassifier(checkpoint, n_estimators=8, device="cpu", random_state=seed),
        "LogisticRegression": lambda: LogisticRegression(max_iter=1000),
        "SGDClassifier": lambda: SGDClassifier(random_state=seed),
        "KNeighbors": KNeighborsClassifier,
        "SVC": SVC,
        "RandomForest": lambda: RandomForestClassifier(random_state=seed),
        "HistGradientBoosting": lambda: HistGradientBoostingClassifier(random_state=seed),
        "OnlineSGD (paper SGD)": OnlineSGDClassifier,
    }
    if maml_checkpoint is not None:
        clfs["MAML"] = lambda: MAMLClassifier(maml_checkpoint, random_state=seed)
    return {name: (lambda make=make: make_pipeline(StandardScaler(), make())) for name, make in clfs.items()}


def _record(setting: str, dataset: str, n_train: int, model: str, scores, fit_s, predict_s) -> dict:
    return {
        "setting": setting,
        "dataset": dataset,
        "n_train": n_train,
        "model": model,
        "acc_mean": float(np.mean(scores)),
        "acc_std": float(np.std(scores)),
        "n_scores": len(scores),
        "fit_s": float(np.mean(fit_s)),
        "predict_s": float(np.mean(predict_s)),
    }


def run_table(name: str, models: dict, folds: int) -> list[dict]:
    X, y = TABLES[name](return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    n_train = len(y) * (folds - 1) // folds
    setting = f"{name} ({folds}-fold CV)"
    out = []
    for model, make in models.items():
        r = cross_validate(make(), X, y, cv=cv, scoring="accuracy")
        out.append(_record(setting, name, n_train, model, r["test_score"], r["fit_time"], r["score_time"]))
    return out


def run_images(name: str, models: dict, sizes: list[int], test_size: int, repeats: int) -> list[dict]:
    x, y = load_split(name, "train")
    x_test, y_test = load_split(name, "test")
    X, X_test = x.reshape(len(x), -1).astype(np.float64), x_test.reshape(len(x_test), -1).astype(np.float64)
    test = np.random.default_rng(0).choice(len(y_test), test_size, replace=False)
    X_test, y_test = X_test[test], y_test[test]
    out = []
    for n in sizes:
        per_model: dict[str, list] = {m: [[], [], []] for m in models}
        for rep in range(repeats):
            X_tr, _, y_tr, _ = train_test_split(X, y, train_size=n, stratify=y, random_state=rep)
            for model, make in models.items():
                clf = make()
                t0 = time.perf_counter()
                clf.fit(X_tr, y_tr)
                t1 = time.perf_counter()
                pred = clf.predict(X_test)
                t2 = time.perf_counter()
                acc, fit_s, pred_s = per_model[model]
                acc.append(float(np.mean(pred == y_test)))
                fit_s.append(t1 - t0)
                pred_s.append(t2 - t1)
        out += [_record(f"{name} n={n}", name, n, m, *v) for m, v in per_model.items()]
    return out


def _by_setting(records: list[dict]) -> dict[str, dict[str, dict]]:
    table: dict[str, dict[str, dict]] = {}
    for r in records:
        table.setdefault(r["setting"], {})[r["model"]] = r
    return table


def where_gpicl_loses(records: list[dict], max_context: int, members: int = 8) -> str:
    """The paragraph, computed from the records (nothing in it is written by hand)."""
    table = _by_setting(records)
    wins, losses, ratios = [], [], []
    for setting, models in table.items():
        if GPICL not in models:
            continue
        ours = models[GPICL]["acc_mean"]
        others = {m: r for m, r in models.items() if not m.startswith("GPICL")}
        best = max(others, key=lambda m: others[m]["acc_mean"])
        if ours >= others[best]["acc_mean"]:
            wins.append(setting)
        else:
            losses.append((ours - others[best]["acc_mean"], setting, best, ours, others[best]["acc_mean"]))
        if "LogisticRegression" in models:
            lr = models["LogisticRegression"]
            ratios.append((models[GPICL]["fit_s"] + models[GPICL]["predict_s"]) / (lr["fit_s"] + lr["predict_s"]))
    n = len(wins) + len(losses)
    if n == 0:
        return f"No setting has results for {GPICL}."
    text = [
        f"{GPICL} has the best mean accuracy on {len(wins)} of {n} settings"
        + (f" ({', '.join(wins)})." if wins else ".")
    ]
    if losses:
        losses.sort()
        parts = [f"{s}: {o:.3f} vs {b} {a:.3f} ({100 * g:+.1f} points)" for g, s, b, o, a in losses]
        text.append(f"It is behind the best other model on {len(losses)}, largest gap first: " + "; ".join(parts) + ".")
    capacity = members * max_context
    over = sorted({r["setting"] for r in records if r["n_train"] > capacity and r["model"] == GPICL})
    if over:
        text.append(
            f"On {', '.join(over)} the training set exceeds the {members} x {max_context} = {capacity} rows "
            f"the ensemble's contexts hold, so GPICL reads only a subset of it while the other models use every row."
        )
    if ratios:
        text.append(
            f"On CPU, {GPICL} fit + predict takes a median {statistics.median(ratios):.1f}x the time of "
            f"LogisticRegression (range {min(ratios):.1f}x to {max(ratios):.1f}x over settings)."
        )
    return " ".join(text)


def markdown(records: list[dict], skipped: dict[str, str], meta: dict, paragraph: str) -> str:
    table = _by_setting(records)
    models = list(dict.fromkeys(r["model"] for r in records))
    head = "| setting | " + " | ".join(models) + " |"
    rule = "|---|" + "---:|" * len(models)
    acc_lines, time_lines = [head, rule], [head, rule]
    for setting, row in table.items():
        best = max(r["acc_mean"] for r in row.values())
        cells = []
        for m in models:
            r = row.get(m)
            cell = "" if r is None else f"{r['acc_mean']:.3f} ± {r['acc_std']:.3f}"
            cells.append(f"**{cell}**" if r is not None and r["acc_mean"] == best else cell)
        acc_lines.append(f"| {setting} | " + " | ".join(cells) + " |")
        time_lines.append(
            f"| {setting} | "
            + " | ".join(
                "" if m not in row else f"{1e3 * row[m]['fit_s']:.0f} / {1e3 * row[m]['predict_s']:.0f}" for m in models
            )
            + " |"
        )
    lines = [
        "# GPICLClassifier vs classical classifiers (CPU)",
        "",
        f"GPICL checkpoint: `{meta['checkpoint']}` (sha256 {meta['checkpoint_sha256'][:12]}…; "
        f"{meta['checkpoint_training']}).",
        f"Each model is `Pipeline([StandardScaler(), clf])`. Tables: {', '.join(TABLES)} by stratified "
        f"{meta['folds']}-fold cross-validation (rows shuffled once); images: raw pixels, "
        f"{meta['train_sizes']} training rows "
        f"(stratified), tested on a fixed sample of {meta['test_size']} test-split rows, "
        f"{meta['repeats']} draw(s) each.",
        "",
        "## Accuracy (mean ± std; best in bold)",
        "",
        *acc_lines,
        "",
        "## Time per fit / predict (ms, mean)",
        "",
        *time_lines,
        "",
        "## Where GPICL loses",
        "",
        paragraph,
    ]
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    lines += ["", f"Made by `{meta['command']}` ({meta['seconds']:.0f} s)."]
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    table = _by_setting(records)
    models = list(dict.fromkeys(r["model"] for r in records))
    colors = {m: f"C{i}" for i, m in enumerate(models)}
    images = [d for d in IMAGES if any(r["dataset"] == d for r in records)]
    tables = [s for s, row in table.items() if next(iter(row.values()))["dataset"] in TABLES]
    panels = len(images) + (1 if tables else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(6 * max(panels, 1), 4.2), squeeze=False)
    for ax, name in zip(axes[0], images, strict=False):  # spare panels: the tables'
        for m in models:
            rs = sorted((r for r in records if r["dataset"] == name and r["model"] == m), key=lambda r: r["n_train"])
            ax.errorbar(
                [r["n_train"] for r in rs],
                [r["acc_mean"] for r in rs],
                yerr=[r["acc_std"] for r in rs],
                marker="o",
                markersize=3,
                capsize=2,
                color=colors[m],
                label=m,
            )
        ax.set_xscale("log")
        ax.set_xlabel("training rows")
        ax.set_ylabel("test accuracy")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    if tables:
        ax = axes[0][len(images)]
        width = 0.8 / len(models)
        for i, m in enumerate(models):
            ax.bar(
                [j + i * width for j in range(len(tables))],
                [table[s][m]["acc_mean"] for s in tables],
                width,
                yerr=[table[s][m]["acc_std"] for s in tables],
                color=colors[m],
                label=m,
            )
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tables))], [s.split(" ")[0] for s in tables])
        ax.set_ylabel("cross-validated accuracy")
        ax.set_ylim(0, 1.05)
        ax.set_title("scikit-learn tables")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.classical", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", default="paper-mnist", help="GPICL checkpoint (see gpicl_sklearn.load_checkpoint)"
    )
    parser.add_argument(
        "--maml-checkpoint",
        type=Path,
        default=Path("benchmarks/checkpoints/maml_mnist"),
        help="MAML initialisation (python -m training.maml_init); skipped when missing",
    )
    parser.add_argument("--datasets", help=f"comma-separated (default {','.join([*TABLES, *IMAGES])})")
    parser.add_argument("--train-sizes", help="image training rows (default 50,100,500,1000)")
    parser.add_argument("--test-size", type=int, help="image test rows (default 1000)")
    parser.add_argument("--repeats", type=int, help="image draws per size (default 3)")
    parser.add_argument("--folds", type=int, help="cross-validation folds for the tables (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: iris (3 folds) and mnist n=50 (200 test rows)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    # Flags given explicitly win over --quick, which wins over the full defaults.
    defaults = {
        "datasets": ",".join([*TABLES, *IMAGES]),
        "train_sizes": "50,100,500,1000",
        "test_size": 1000,
        "repeats": 3,
        "folds": 5,
    }
    if args.quick:
        defaults.update(datasets="iris,mnist", train_sizes="50", test_size=200, repeats=1, folds=3)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    datasets = args.datasets.split(",")
    unknown = set(datasets) - set(TABLES) - set(IMAGES)
    if unknown:
        parser.error(f"unknown datasets {sorted(unknown)}; expected some of {[*TABLES, *IMAGES]}")
    sizes = [int(s) for s in args.train_sizes.split(",")]

    start = time.perf_counter()
    checkpoint = load_checkpoint(args.checkpoint)
    maml = args.maml_checkpoint if (args.maml_checkpoint / "config.json").is_file() else None
    models = make_models(args.checkpoint, maml, args.seed)
    records, skipped = [], {}
    if maml is None:
        skipped["MAML"] = (
            f"no initialisation at {args.maml_checkpoint} (needs GPU meta-training, then python -m training.maml_init)"
        )
    with warnings.catch_warnings():
        # Documented behaviour, not news: GPICL reads a subset of large training sets; LogisticRegression
        # and SGDClassifier may stop at their iteration limit on raw pixels.
        warnings.simplefilter("ignore", ContextSubsetWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name in datasets:
            try:
                new = (
                    run_table(name, models, args.folds)
                    if name in TABLES
                    else run_images(name, models, sizes, args.test_size, args.repeats)
                )
            except DatasetUnavailableError as err:
                skipped[name] = f"not run offline ({err})"
                continue
            records += new
            print(f"{name}: done ({time.perf_counter() - start:.0f} s)", flush=True)

    training = checkpoint.config.get("training", {})
    meta = {
        "checkpoint": str(args.checkpoint),
        "checkpoint_sha256": checkpoint.sha256,
        "checkpoint_training": f"{training.get('steps', '?')} meta-training steps"
        + (f", {training['note']}" if "note" in training else ""),
        "folds": args.folds,
        "train_sizes": sizes,
        "test_size": args.test_size,
        "repeats": args.repeats,
        "command": command_line("benchmarks.classical", argv),
        "seconds": time.perf_counter() - start,
    }
    paragraph = where_gpicl_loses(records, checkpoint.model.cfg.max_len - 1)
    text = markdown(records, skipped, meta, paragraph)
    write_outputs(
        args.out,
        "classical",
        text,
        {"meta": meta, "skipped": skipped, "records": records, "where_gpicl_loses": paragraph},
    )
    if records:
        plot(records, args.out / "classical.png")
    print(text)
    return records


if __name__ == "__main__":
    main()
