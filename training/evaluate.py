"""Meta-test evaluation: in-context accuracy at every position on augmented test tasks.

The paper's protocol (Table 2): for each dataset, ``n_tasks`` tasks (a projection ``A`` and
a label permutation) and ``n_seqs`` sequences of ``length`` examples per task drawn from
the dataset's test split; the learner predicts every example from those before it.
*Unseen* tasks draw ``A`` and the permutation afresh from ``seed`` (a stream disjoint from
training); *seen* tasks (finite ``K``) regenerate training tasks by index.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from training.data import DatasetUnavailableError, load_dataset
from training.learners import build_learner
from training.paper import DATASETS
from training.state import load_state, read_meta
from training.tasks import task_permutation, task_projection

# Offset that keeps meta-test task seeds apart from the training seeds.
_EVAL_SEED_OFFSET = 10_000_019


@torch.no_grad()
def meta_test(
    learner: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    out_dim: int,
    num_classes: int = 10,
    n_tasks: int = 16,
    n_seqs: int = 16,
    length: int = 100,
    seed: int = 0,
    task_ids: list[int] | None = None,
    task_seed: int = 0,
) -> np.ndarray:
    """Correctness of every prediction, shape ``(n_tasks, n_seqs, length)`` (bool).

    ``x``, ``y``: a preprocessed split on the learner's device. With ``task_ids`` the
    tasks are the training tasks of those indices (seen tasks); otherwise unseen ones.
    """
    if int(y.max()) >= num_classes:
        raise ValueError(f"labels go up to {int(y.max())}, but num_classes={num_classes}")
    dev = x.device
    g = torch.Generator(device=dev).manual_seed(_EVAL_SEED_OFFSET + seed)
    ids = task_ids if task_ids is not None else [None] * n_tasks
    correct = []
    for k in ids:
        if k is None:  # unseen task: fresh projection and permutation
            a = torch.randn(x.shape[1], out_dim, device=dev, generator=g) / math.sqrt(x.shape[1])
            perm = torch.rand(num_classes, device=dev, generator=g).argsort()
        else:
            a = task_projection(k, x.shape[1], out_dim, task_seed, dev)
            perm = task_permutation(k, num_classes, task_seed, dev)
        idx = torch.randint(0, x.shape[0], (n_seqs, length), device=dev, generator=g)
        xs, ys = x[idx] @ a, perm[y[idx]]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = learner(xs, ys)
        correct.append((logits.argmax(-1) == ys).cpu().numpy())
    return np.stack(correct)


def summarise(correct: np.ndarray) -> dict:
    """Accuracy per position with a 95% normal-approximation interval over tasks.

    Sequences of one task are not independent, so the interval uses the spread of the
    per-task means (``n_tasks`` samples), not of individual predictions.
    """
    per_task = correct.mean(axis=1)  # (n_tasks, length)
    mean = per_task.mean(axis=0)
    half = (
        1.96 * per_task.std(axis=0, ddof=1) / math.sqrt(per_task.shape[0])
        if per_task.shape[0] > 1
        else np.zeros_like(mean)
    )
    return {"acc": mean.tolist(), "ci95": half.tolist(), "final_acc": float(mean[-1]), "final_ci95": float(half[-1])}


def evaluate_datasets(
    learner: nn.Module,
    names: list[str],
    *,
    device: torch.device,
    image_size: int | None = 32,
    channels: int = 3,
    features=None,
    out_dim: int = 3072,
    num_classes: int = 10,
    n_tasks: int = 16,
    n_seqs: int = 16,
    length: int = 100,
    seed: int = 0,
    root=None,
) -> dict[str, dict]:
    """:func:`meta_test` + :func:`summarise` on the test split of each dataset.

    A dataset that is not available (e.g. no network) gets ``{"status": "not run offline"}``.
    ``features``: a feature network's folder whose features replace the pixels (``load_dataset``).
    """
    was_training = learner.training
    learner.eval()
    results = {}
    for name in names:
        try:
            x, y = load_dataset(
                name, "test", root=root, size=image_size, channels=channels, device=device, features=features
            )
        except DatasetUnavailableError as err:
            results[name] = {"status": "not run offline", "reason": str(err)}
            continue
        correct = meta_test(
            learner,
            x,
            y,
            out_dim=out_dim,
            num_classes=num_classes,
            n_tasks=n_tasks,
            n_seqs=n_seqs,
            length=length,
            seed=seed,
        )
        results[name] = {"status": "ok", **summarise(correct)}
    learner.train(was_training)
    return results


def load_run(run: Path) -> tuple[nn.Module, dict, int]:
    """The learner of a training run at its last saved step, its training config and that step."""
    meta = read_meta(run / "state")
    cfg = meta["config"]
    learner = build_learner(cfg["learner"], cfg["input_dim"], cfg["num_classes"], **cfg["learner_kwargs"])
    step, _ = load_state(run / "state", learner, optimizer=None)
    return learner.eval(), cfg, step


def evaluate_as_trained(
    learner: nn.Module, cfg: dict, names: list[str], device: torch.device, *, n_tasks: int, n_seqs: int, seed: int
) -> dict[str, dict]:
    """:func:`evaluate_datasets` with the preprocessing and sequence length of the training config ``cfg``."""
    return evaluate_datasets(
        learner,
        names,
        device=device,
        image_size=cfg["image_size"],
        channels=cfg["channels"],
        features=cfg.get("features"),  # runs saved before the field have none
        out_dim=cfg["input_dim"],
        num_classes=cfg["num_classes"],
        n_tasks=n_tasks,
        n_seqs=n_seqs,
        length=cfg["length"],
        seed=seed,
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m training.evaluate --run runs/default``: meta-test a run, print and save JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--run", type=Path, required=True, help="training run folder (holds state/)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--n-tasks", type=int, default=16)
    parser.add_argument("--n-seqs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    learner, cfg, step = load_run(args.run)
    device = torch.device(args.device)
    results = evaluate_as_trained(
        learner.to(device),
        cfg,
        args.datasets.split(","),
        device,
        n_tasks=args.n_tasks,
        n_seqs=args.n_seqs,
        seed=args.seed,
    )
    for name, r in results.items():
        print(
            f"{name:>14}: "
            + (f"{100 * r['final_acc']:.1f}% ± {100 * r['final_ci95']:.1f}" if r["status"] == "ok" else r["status"])
        )
    if args.out:
        args.out.write_text(json.dumps({"run": str(args.run), "step": step, "results": results}))


if __name__ == "__main__":
    main()
