"""How input normalisation changes in-context accuracy (why GPICLClassifier clips z-scores).

    python -m benchmarks.normalisation [--quick] [--run runs/default | --checkpoint default]

Meta-test protocol of ``training.evaluate`` (unseen projections and label permutations of
the test split, sequences of 100) under three normalisations of the same images:
the dataset-wide z-normalisation of meta-training, per-feature z-scores (what
``StandardScaler`` does), and per-feature z-scores clipped at ``Z_CLIP``, the latter also
rescaled to unit root-mean-square. Prints the mean accuracy over positions 91-100.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gpicl_sklearn.checkpoint import load_checkpoint
from gpicl_sklearn.preprocessing import Z_CLIP
from training.data import load_dataset
from training.evaluate import meta_test, summarise


def per_feature(x: torch.Tensor, clip: float | None, unit_rms: bool = False) -> torch.Tensor:
    std = x.std(0)
    z = torch.where(std > 1e-6, (x - x.mean(0)) / std.clamp_min(1e-6), torch.zeros_like(x))
    z = z if clip is None else z.clamp(-clip, clip)
    return z / z.pow(2).mean().sqrt() if unit_rms else z


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="paper-mnist")
    parser.add_argument("--datasets", default="mnist,fashion_mnist")
    parser.add_argument("--n-tasks", type=int, default=32)
    parser.add_argument("--n-seqs", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 tasks x 2 sequences")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    n_tasks, n_seqs = (2, 2) if args.quick else (args.n_tasks, args.n_seqs)
    model = load_checkpoint(args.checkpoint).model
    variants = {
        "dataset-wide z (meta-training)": lambda x: x,
        "per-feature z": lambda x: per_feature(x, None),
        f"per-feature z clipped at {Z_CLIP:g}": lambda x: per_feature(x, Z_CLIP),
        "clipped, then scaled to unit RMS": lambda x: per_feature(x, Z_CLIP, unit_rms=True),
    }
    rows = ["| dataset | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for name in args.datasets.split(","):
        x, y = load_dataset(name, "test")
        accs = []
        for transform in variants.values():
            acc = summarise(
                meta_test(
                    model,
                    transform(x),
                    y,
                    out_dim=model.cfg.input_dim,
                    n_tasks=n_tasks,
                    n_seqs=n_seqs,
                    length=model.cfg.max_len,
                    seed=5,
                )
            )["acc"]
            accs.append(f"{100 * sum(acc[-10:]) / 10:.1f}%")
        rows.append(f"| {name} | " + " | ".join(accs) + " |")
    text = (
        f"Accuracy at positions 91-100, {n_tasks} unseen tasks x {n_seqs} sequences, checkpoint "
        f"`{args.checkpoint}`:\n\n" + "\n".join(rows)
    )
    print(text)
    if args.out:
        args.out.write_text(f"`python -m benchmarks.normalisation --out {args.out}`\n\n{text}\n")


if __name__ == "__main__":
    main()
