"""Checkpoints scored on held-out draws of the meta-training prior: loss per family, accuracy per context size.

    python -m training.prior_eval gpicl_sklearn/checkpoints/default runs/out/8x256 --batches 8

The training loss of a run mixes the model's progress with the tasks each step happened to
draw (the prior's structures are seeded by the step), and a checkpoint published from a
GPU run is otherwise scored only by the CPU benchmarks, which take most of an hour. This
draws ``--batches`` batches of ``--batch-size`` sequences from
:class:`training.priors.mixture.PriorSampler` (``PriorConfig`` defaults, or ``--prior``)
with a seed that no training run uses (runs seed ``seed * 1,000,003 + rank``) and the image
tasks from the datasets' *test* splits (``--image-split train`` where only the train splits
are at hand: the held-out seed still draws unseen tasks), and scores every checkpoint on the same batches
(CPU, float32):

* ``loss``: cross-entropy over every row and the used label slots, as in meta-training,
  overall and per family;
* ``acc rows a-b``: accuracy of the predictions made with ``a`` to ``b - 1`` context rows.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from gpicl_sklearn.checkpoint import load_checkpoint
from training.priors.mixture import PriorConfig, PriorSampler, family_sizes, load_images

EVAL_SEED = 987_654_321
ROW_BUCKETS = ((10, 50), (50, 100), (100, 500), (500, 1024))


def held_out_batches(
    cfg: PriorConfig,
    n: int,
    batch_size: int,
    length: int,
    width: int,
    num_slots: int,
    device: str = "cpu",
    image_split: str = "test",
):
    """``n`` batches ``(x, y, used)`` drawn on ``device``, and each sequence's family name."""
    images = load_images(cfg, image_split, device)
    g = torch.Generator(device).manual_seed(EVAL_SEED)
    sampler = PriorSampler(cfg, length, width, num_slots, images, g, seed=EVAL_SEED)
    families = [name for name, size in family_sizes(cfg.weights, batch_size).items() for _ in range(size)]
    return [sampler.sample(batch_size) for _ in range(n)], np.array(families)


@torch.no_grad()
def score(model: torch.nn.Module, batches, families: np.ndarray) -> dict[str, float]:
    """Mean loss (overall, per family) and accuracy per bucket of context rows."""
    losses, hits = [], []
    for x, y, used in batches:
        logits = model(x, y).float().masked_fill(~used[:, None, :], float("-inf"))
        losses.append(F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1))
        hits.append((logits.argmax(-1) == y).float())
    loss, hit = torch.cat(losses).cpu().numpy(), torch.cat(hits).cpu().numpy()
    fams = np.tile(families, len(batches))
    out = {"loss": float(loss.mean())}
    out |= {f"loss {f}": float(loss[fams == f].mean()) for f in dict.fromkeys(families)}
    out |= {f"acc rows {a}-{b}": float(hit[:, a:b].mean()) for a, b in ROW_BUCKETS if a < hit.shape[1]}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.prior_eval", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="bundled names, local folders or hub ids")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prior", type=json.loads, default={}, help="PriorConfig fields as JSON (default: {})")
    parser.add_argument(
        "--device", default="cpu", help="where batches are drawn and scored (a GPU draws other batches)"
    )
    parser.add_argument(
        "--image-split",
        default="test",
        choices=("test", "train"),
        help="split of the image tasks (train: where only the train splits are at hand, e.g. a GPU job)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = {path: load_checkpoint(path) for path in args.checkpoints}
    first = next(iter(loaded.values())).model.cfg
    for path, ckpt in loaded.items():
        if (ckpt.model.cfg.input_dim, ckpt.model.cfg.num_classes) != (first.input_dim, first.num_classes):
            parser.error(f"{path}: input_dim / num_classes differ from {args.checkpoints[0]}'s")
    length = min(c.model.cfg.max_len for c in loaded.values())
    batches, families = held_out_batches(
        PriorConfig(**args.prior),
        args.batches,
        args.batch_size,
        length,
        first.input_dim,
        first.num_classes,
        args.device,
        args.image_split,
    )
    rows = {path: score(ckpt.model.to(args.device), batches, families) for path, ckpt in loaded.items()}
    columns = list(next(iter(rows.values())))
    print(
        f"{args.batches} held-out prior batches x {args.batch_size} sequences x {length} rows "
        f"(seed {EVAL_SEED}, drawn on {args.device}, images from the {args.image_split} splits)\n"
    )
    print("| checkpoint | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for path, r in rows.items():
        print(f"| {path} | " + " | ".join(f"{r[c]:.3f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
