"""Paper Table 2: meta-test accuracy of the 100th prediction, per method and dataset.

    python -m benchmarks.table2                        # every method whose runs exist (CPU is enough)
    python -m benchmarks.table2 --gpicl-runs runs/s0,runs/s1 --maml-runs runs/maml
    python -m benchmarks.table2 --quick --out /tmp/t2  # smoke run (CI): 2 tasks x 4 sequences
    python -m benchmarks.table2 --methods LSTM --lstm-runs runs/l0,runs/l1 --update  # one row anew

Protocol (Kirsch et al., 2022, Table 2; :mod:`training.evaluate`): for each dataset,
``--n-tasks`` unseen tasks (a fresh random projection ``A ~ N(0, 1/N_in)`` of the
preprocessed test images and a fresh label permutation) x ``--n-seqs`` sequences of
``--length`` test examples; every method predicts each example from those before it, and
the cell is the accuracy of the last (100th) prediction, pooled over the meta-training
seeds (one run folder each) with a 95% normal-approximation interval over the
(seed, task) pairs. Every method sees the same tasks and sequences.

Methods:

* **SGD**: a linear classifier from zero weights, one Adam step (lr ``1e-3``) per example
  (:class:`training.online_sgd.OnlineAdamLearner`); needs no meta-training, so it always runs.
* **MAML**, **VSML**, **LSTM**, **Outer-product LSTM**, **GPICL Transformer**: learners
  meta-trained by ``training.train``, read from their run folders (``<run>/state``). A
  method with no run folder is reported as not run, with the command that trains it.
* **GPICL + test-time ensembling**: the GPICL runs, each sequence presented as ``E``
  (``--members``) further tasks: member ``e`` projects the task's inputs by its own
  ``P_e ~ N(0, 1/D)`` and relabels by its own permutation ``pi_e``; its slot probabilities
  are mapped back through ``pi_e`` and the members' probabilities averaged.

Writes ``table2.md`` and ``table2.json`` (with the accuracy at every position, which
``benchmarks.curves`` plots) into ``--out``. ``--methods`` evaluates some rows only; with
``--update`` they replace their rows of the ``table2.json`` already in ``--out`` and the other
rows are kept (the run folders of a row may live on another machine). Each row records the
command that made it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import RESULTS_DIR, command_line, percent, write_outputs
from training.data import DatasetUnavailableError, load_dataset
from training.evaluate import load_run, meta_test, summarise
from training.online_sgd import OnlineAdamLearner
from training.paper import DATASET_TITLES, DATASETS, TABLE2
from training.publish import FOOTNOTES
from training.state import find_state

_TRAIN = "python -m training.train --config training/configs/default.json"
_TRAIN_OTHER = f"{_TRAIN} --steps 50000 --compile false --cuda-graph false"


@dataclass(frozen=True)
class Method:
    name: str
    learner: str | None  # the registered learner meta-trained by training.train; None: SGD
    runs_flag: str | None  # the option naming its run folders
    paper: dict[str, float] | None  # Kirsch et al. (2022), Table 2, in percent
    train_command: str | None = None
    ensemble: bool = False


METHODS = (
    Method("SGD", None, None, TABLE2["SGD"]),
    Method(
        "MAML",
        "maml",
        "maml_runs",
        TABLE2["MAML"],
        f"{_TRAIN_OTHER} --learner maml --out-dir runs/maml",
    ),
    Method(
        "VSML",
        "vsml",
        "vsml_runs",
        TABLE2["VSML"],
        f"{_TRAIN_OTHER} --learner vsml --batch-size 16 --out-dir runs/vsml",
    ),
    Method(
        "LSTM",
        "lstm",
        "lstm_runs",
        TABLE2["LSTM"],
        f"{_TRAIN_OTHER} --learner lstm --out-dir runs/lstm",
    ),
    Method(
        "Outer-product LSTM", "oplstm", "oplstm_runs", None, f"{_TRAIN_OTHER} --learner oplstm --out-dir runs/oplstm"
    ),
    Method("GPICL Transformer", "transformer", "gpicl_runs", TABLE2["GPICL"], _TRAIN),
    Method("GPICL + test-time ensembling", "transformer", "gpicl_runs", None, _TRAIN, ensemble=True),
)
DEFAULT_RUNS = {
    "maml_runs": "runs/maml",
    "vsml_runs": "runs/vsml",
    "lstm_runs": "runs/lstm",
    "oplstm_runs": "runs/oplstm",
    "gpicl_runs": "runs/default",
}


class TestTimeEnsemble(nn.Module):
    r"""Average a learner's predictions over ``members`` re-projected, relabelled copies of a sequence.

    Member :math:`e` feeds the learner :math:`(x P_e, \pi_e(y))` with
    :math:`P_e \in \mathbb R^{D \times D}`, :math:`(P_e)_{jk} \sim \mathcal N(0, 1/D)` and a
    permutation :math:`\pi_e` of the label slots, and reads the probability of class
    :math:`c` from slot :math:`\pi_e(c)`:
    :math:`\hat p(c) = \frac1E \sum_e p_e(\pi_e(c))`. Each forward call draws fresh members
    from its own generator. Returns log-probabilities (their argmax is the prediction).
    """

    def __init__(self, learner: nn.Module, members: int, num_classes: int, seed: int = 0):
        super().__init__()
        self.learner, self.members, self.num_classes = learner, members, num_classes
        self.seed = seed
        self._generator: torch.Generator | None = None

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self._generator is None:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        g, dim = self._generator, x.shape[-1]
        probs = torch.zeros(*y.shape, self.num_classes, device=x.device)
        for _ in range(self.members):
            projection = torch.randn(dim, dim, device=x.device, generator=g) / math.sqrt(dim)
            perm = torch.rand(self.num_classes, device=x.device, generator=g).argsort()  # slot of each class
            slot_probs = self.learner(x @ projection, perm[y]).float().softmax(-1)
            probs += slot_probs[..., perm]
        return (probs / self.members).log()


class _Data:
    """Test splits preprocessed once per (dataset, image size, channels)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._cache: dict[tuple, tuple[Tensor, Tensor] | str] = {}

    def get(self, name: str, size: int | None, channels: int) -> tuple[Tensor, Tensor] | str:
        """The split, or the reason it is unavailable."""
        key = (name, size, channels)
        if key not in self._cache:
            try:
                self._cache[key] = load_dataset(name, "test", size=size, channels=channels, device=self.device)
            except DatasetUnavailableError as err:
                self._cache[key] = str(err)
        return self._cache[key]


def _evaluate(learners: list[tuple[nn.Module, dict]], datasets: list[str], data: _Data, args) -> dict:
    """Per dataset: :func:`summarise` of the correctness of every learner's predictions, pooled."""
    out = {}
    for name in datasets:
        correct = []
        for learner, prep in learners:
            split = data.get(name, prep["image_size"], prep["channels"])
            if isinstance(split, str):
                out[name] = {"status": "not run offline", "reason": split}
                break
            x, y = split
            correct.append(
                meta_test(
                    learner,
                    x,
                    y,
                    out_dim=prep["out_dim"] or x.shape[1],
                    num_classes=prep["num_classes"],
                    n_tasks=args.n_tasks,
                    n_seqs=args.n_seqs,
                    length=args.length,
                    seed=args.seed,
                )
            )
        else:
            out[name] = {"status": "ok", "n_runs": len(learners), **summarise(np.concatenate(correct))}
    return out


def _load_learner(
    run: Path, method: Method, loaded: dict, members: int, device: torch.device
) -> tuple[nn.Module, dict, int]:
    if run not in loaded:
        learner, cfg, step = load_run(run)
        loaded[run] = learner.to(device), cfg, step
    learner, cfg, step = loaded[run]
    if cfg["learner"] != method.learner:
        raise ValueError(f"{run} meta-trained learner {cfg['learner']!r}, but {method.name} needs {method.learner!r}")
    prep = {
        "image_size": cfg["image_size"],
        "channels": cfg["channels"],
        "out_dim": cfg["input_dim"],
        "num_classes": cfg["num_classes"],
    }
    if method.ensemble:
        learner = TestTimeEnsemble(learner, members, cfg["num_classes"], seed=0)
    return learner, prep, step


def run_method(method: Method, runs: list[Path], datasets: list[str], data: _Data, args, loaded: dict) -> dict:
    """Evaluate one method; its result dict for table2.json."""
    result: dict = {"paper": method.paper}
    start = time.perf_counter()
    if method.learner is None:
        prep = {"image_size": args.image_size, "channels": args.channels, "out_dim": None, "num_classes": 10}
        learners = [(OnlineAdamLearner(num_classes=10, lr=1e-3).to(data.device), prep)]
        size = f"{args.image_size}x{args.image_size}x{args.channels}"
        result["setup"] = f"linear, zero init, Adam lr 1e-3, one step per example; inputs {size}"
    else:
        present = [r for r in runs if find_state(r / "state") is not None]
        result["missing_runs"] = [str(r) for r in runs if r not in present]
        if not present:
            result["status"] = f"not run (needs GPU meta-training: {method.train_command})"
            return result
        learners, result["runs"] = [], []
        for run in present:
            learner, prep, step = _load_learner(run, method, loaded, args.members, data.device)
            learners.append((learner, prep))
            result["runs"].append({"path": str(run), "step": step})
        if method.ensemble:
            result["setup"] = f"{args.members} members (projection + label permutation each)"
    result["status"] = "ok"
    result["datasets"] = _evaluate(learners, datasets, data, args)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def previous_rows(path: Path, protocol: dict) -> dict:
    """The rows of an earlier ``table2.json``, each with the command that made it; ValueError if its
    protocol differs from ``protocol`` (rows of a table must see the same tasks and sequences)."""
    if not path.exists():
        raise FileNotFoundError(f"--update keeps the rows of {path}, which does not exist")
    earlier = json.loads(path.read_text())
    same = ("datasets", "n_tasks", "n_seqs", "length", "seed", "members")
    differ = {k: (earlier["protocol"][k], protocol[k]) for k in same if earlier["protocol"][k] != protocol[k]}
    if differ:
        raise ValueError(f"--update: {path} was made with another protocol (earlier, now): {differ}")
    made = {"command": earlier["protocol"]["command"], "device": earlier["protocol"].get("device", "cpu")}
    return {name: {"made_by": made, **r} for name, r in earlier["results"].items()}


def method_command(name: str) -> str:
    return next(m.train_command for m in METHODS if m.name == name)


def markdown(results: dict, protocol: dict) -> str:
    datasets = protocol["datasets"]
    titles = [DATASET_TITLES[d] + ("¹" if d in FOOTNOTES else "") for d in datasets]
    lines = [
        f"# Table 2: meta-test accuracy (%) of prediction {protocol['length']} after {protocol['length'] - 1} examples",
        "",
        "Each cell: ours, mean ± 95% CI, then (the paper's number) where Kirsch et al. (2022) report one.",
        "",
        "| method | " + " | ".join(titles) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    notes, offline = [], set()
    for name, r in results.items():
        paper = r["paper"] or {}
        cells = []
        for d in datasets:
            ref = f" ({paper[d]:.2f})" if d in paper else ""
            if r["status"] != "ok":
                cells.append(f"not run²{ref}")
            elif r["datasets"][d]["status"] != "ok":
                offline.add(DATASET_TITLES[d])
                cells.append(f"not run offline{ref}")
            else:
                cell = r["datasets"][d]
                cells.append(percent(cell["final_acc"], cell["final_ci95"]) + ref)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if r["status"] != "ok":
            notes.append(f"- {name}: not run (needs GPU meta-training: `{method_command(name)}`)")
    lines += [""] + [f"¹ {text}" for d, text in FOOTNOTES.items() if d in datasets]
    if notes:
        lines += [
            "",
            "² The method's run folders are missing (one per meta-training seed: add `--seed S` and a "
            "distinct `--out-dir` to the command, then list them in `--<method>-runs`):",
            "",
            *notes,
        ]
    if offline:
        lines += [
            "",
            f"Not run offline: {', '.join(sorted(offline))} (not in the data root, and no download possible here).",
        ]
    ran = {n: r for n, r in results.items() if r["status"] == "ok" and "runs" in r}
    lines += ["", "Runs:", ""]
    lines += [
        f"- {n}: "
        + ", ".join(f"`{x['path']}` (step {x['step']})" for x in r["runs"])
        + (f"; {r['setup']}" if "setup" in r else "")
        for n, r in ran.items()
    ]
    if "SGD" in results and "setup" in results["SGD"]:
        lines.append(f"- SGD: {results['SGD']['setup']}")
    lines += [
        "",
        f"Protocol: {protocol['n_tasks']} unseen tasks (fresh projection and label permutation) x "
        f"{protocol['n_seqs']} sequences of {protocol['length']} test examples per dataset and run, "
        f"task seed {protocol['seed']}; 95% CI over (run, task) pairs (normal approximation). Made by:",
        "",
    ]
    rows_by_command: dict[tuple[str, str], list[str]] = {}
    for name, r in results.items():
        made = r["made_by"]
        rows_by_command.setdefault((made["command"], made["device"]), []).append(name)
    lines += [f"- {', '.join(names)}: `{command}` on {device}" for (command, device), names in rows_by_command.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.table2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for flag, default in DEFAULT_RUNS.items():
        parser.add_argument(
            f"--{flag.replace('_', '-')}", default=default, help=f"comma-separated run folders (default {default})"
        )
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--n-tasks", type=int, help="tasks per dataset and run (default 16)")
    parser.add_argument("--n-seqs", type=int, help="sequences per task (default 16)")
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--members", type=int, help="test-time ensemble members (default 8)")
    parser.add_argument(
        "--image-size", type=int, default=32, help="SGD's input preprocessing (meta-trained methods use their run's)"
    )
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="meta-test task seed")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 tasks x 4 sequences, 2 ensemble members")
    parser.add_argument("--device", default="cpu", help="torch device of the evaluation (cuda autocasts to bf16)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--methods", default=",".join(m.name for m in METHODS), help="comma-separated rows to evaluate (default all)"
    )
    parser.add_argument("--update", action="store_true", help="keep the other rows of --out's table2.json")
    args = parser.parse_args(argv)
    # Flags given explicitly win over --quick, which wins over the full defaults.
    for key, full, quick in (("n_tasks", 16, 2), ("n_seqs", 16, 4), ("members", 8, 2)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    datasets = args.datasets.split(",")
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        parser.error(f"unknown datasets {sorted(unknown)}; expected some of {DATASETS}")
    if args.n_tasks < 2:
        parser.error("--n-tasks must be at least 2 (the confidence interval is over tasks)")
    names = args.methods.split(",")
    unknown = set(names) - {m.name for m in METHODS}
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; expected some of {[m.name for m in METHODS]}")

    command = command_line("benchmarks.table2", argv)
    protocol = {
        "datasets": datasets,
        "n_tasks": args.n_tasks,
        "n_seqs": args.n_seqs,
        "length": args.length,
        "seed": args.seed,
        "members": args.members,
        "command": command.strip(),
        "device": args.device,
        "ci": "95% normal approximation over (run, task) pairs",
    }
    kept = previous_rows(args.out / "table2.json", protocol) if args.update else {}
    data, loaded = _Data(torch.device(args.device)), {}
    new = {}
    for method in (m for m in METHODS if m.name in names):
        runs = [Path(p) for p in getattr(args, method.runs_flag).split(",") if p] if method.runs_flag else []
        new[method.name] = run_method(method, runs, datasets, data, args, loaded)
        new[method.name]["made_by"] = {"command": protocol["command"], "device": args.device}
        print(f"{method.name}: {new[method.name]['status']}", flush=True)
    merged = kept | new
    results = {m.name: merged[m.name] for m in METHODS if m.name in merged}  # in the table's order
    text = markdown(results, protocol)
    write_outputs(args.out, "table2", text, {"protocol": protocol, "results": results})
    print(text)
    return results


if __name__ == "__main__":
    main()
