"""Evaluate a training run and publish it as a gpicl-sklearn checkpoint.

    python -m training.publish --run runs/default --out gpicl_sklearn/checkpoints/default
    python -m training.publish --run runs/default --out /tmp/ckpt --repo-id owner/gpicl-mnist
    python -m training.publish --checkpoint /tmp/ckpt --out /tmp/ckpt   # re-evaluate what ships

Reads the run's resumable state (``<run>/state``), or a folder this command wrote before
(``--checkpoint``: its fp16 weights and the training record in its ``config.json``, so
the card measures exactly the weights that ship, on any device), meta-tests the learner
on unseen tasks from the test split of every dataset (accuracy of the ``L``-th
prediction after ``L-1`` examples, paper Table 2 protocol), and writes
``model.safetensors`` (fp16), ``config.json`` and a model card ``README.md`` in
huggingface-hub layout. With ``--repo-id`` the folder is uploaded via
``HfApi.upload_folder`` (needs a token and a network).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gpicl_sklearn.checkpoint import CONFIG_NAME, load_checkpoint, save_checkpoint
from training.evaluate import evaluate_as_trained, load_run
from training.paper import DATASETS, TABLE2
from training.priors.mixture import PriorConfig

FOOTNOTES = {
    "cifar10": "CIFAR10 test images here are decoded from JPEG copies (about quality 75), "
    "close to but not exactly the original pixels.",
}


def metrics_table(results: dict) -> str:
    rows = ["| dataset | ours: acc. of 100th prediction (95% CI) | paper GPICL | paper VSML |", "|---|---|---|---|"]
    for name in results:
        r = results[name]
        ours = f"{100 * r['final_acc']:.1f}% ± {100 * r['final_ci95']:.1f}" if r["status"] == "ok" else r["status"]
        rows.append(f"| {name} | {ours} | {TABLE2['GPICL'].get(name, '')} | {TABLE2['VSML'].get(name, '')} |")
    return "\n".join(rows)


def _bias_text(cfg: dict) -> str:
    share = f"{100 * cfg['biased_fraction']:.0f}% of every batch on one fixed permutation"
    until = cfg.get("biased_steps")
    return share if until is None else f"{share} for the first {until} steps, none after"


def _start_text(cfg: dict) -> str:
    """The card's line on where the weights began: a run ``init_from`` a checkpoint continues its training."""
    origin = cfg.get("init_from")
    if not origin:
        return ""
    grown = "a deeper learner takes its blocks spread over its depth, the new blocks starting as the identity"
    return f"\n- Started from the weights of `{origin}` (optimiser restarted; {grown}, training/grow.py)."


def model_card(cfg: dict, step: int, results: dict, protocol: dict, command: str) -> str:
    world = cfg["world_size"]
    notes = "\n".join(f"- {name}: {text}" for name, text in FOOTNOTES.items() if name in results)
    offline = [n for n, r in results.items() if r["status"] != "ok"]
    if offline:
        notes += f"\n- {', '.join(offline)}: not available offline where this card was made; not evaluated."
    tasks = cfg["num_tasks"] or "infinity"
    schedule = f"{cfg['lr_schedule']}, warm-up {cfg['warmup_steps']}, final decay {cfg['decay_steps']} steps"
    return f"""---
library_name: gpicl-sklearn
tags: [in-context-learning, meta-learning, scikit-learn, tabular-classification]
datasets: [mnist]
---
# GPICL Transformer meta-trained on augmented MNIST

A general-purpose in-context learner (Kirsch et al., 2022, "General-Purpose In-Context
Learning by Meta-Learning Transformers") for `gpicl_sklearn.GPICLClassifier`.

## Meta-training
- Tasks: MNIST training split, images resized to {cfg["image_size"]}x{cfg["image_size"]}x{cfg["channels"]} and
  z-normalised; each sequence under a fresh random projection `A ~ N(0, 1/N_x)` (K = {tasks} tasks)
  and label permutation; {_bias_text(cfg)}.
- Sequences of {cfg["length"]} examples; loss: cross-entropy of every prediction of every prefix.
- Learner: `{cfg["learner"]}` {json.dumps(cfg["learner_kwargs"])} (paper defaults unless listed).
- {step} steps of {cfg["batch_size"]} sequences per GPU x {world} GPUs = {cfg["batch_size"] * world} per step;
  {cfg["optimizer"]} lr {cfg["lr"]} ({schedule}
  to {cfg["min_lr_ratio"]}x), grad-clip {cfg["grad_clip"]}, bf16; seed {cfg["seed"]}.{_start_text(cfg)}
- Full training config: `config.json`, entry `training.config`.

## Meta-test (unseen tasks, test splits)
Accuracy of the {cfg["length"]}th prediction after {cfg["length"] - 1} examples; {protocol["n_tasks"]} unseen tasks
(fresh projection and permutation) x {protocol["n_seqs"]} sequences per dataset, 95% CI over tasks;
the fp16 weights of this folder evaluated in {protocol["precision"]} on {protocol["device"]}.

{metrics_table(results)}

{notes}

Made by: `{command}`
"""


def upload(folder: Path, repo_id: str) -> str:
    """Upload a published folder to the huggingface-hub model repo ``repo_id`` (made if absent)."""
    from huggingface_hub import HfApi

    api = HfApi()
    # Any error becomes one line: the hub's HTTP errors, and connection errors whose
    # classes depend on the hub version's transport (requests, httpx).
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        return api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model").commit_url
    except Exception as err:
        raise SystemExit(
            f"upload of {folder} to {repo_id} failed ({type(err).__name__}: {err}); the checkpoint "
            f"is written: upload it later with `hf upload {repo_id} {folder}`"
        ) from err


def prior_card(cfg: dict, step: int, command: str) -> str:
    world, start = cfg["world_size"], _start_text(cfg)
    return f"""---
library_name: gpicl-sklearn
tags: [in-context-learning, meta-learning, scikit-learn, tabular-classification]
datasets: [mnist, fashion_mnist]
---
# GPICL Transformer meta-trained on a general-purpose task prior

A general-purpose in-context classifier for `gpicl_sklearn.GPICLClassifier`, meta-trained
(Kirsch et al., 2022) on synthetic tables and image tasks (`training/priors`).

## Meta-training
- Prior (`training/priors/mixture.py`, `PriorConfig`): `{json.dumps(cfg["prior"])}`
  (fields not listed: the defaults of `PriorConfig` in the published code).
- Every task prepared by `gpicl_sklearn.inputs` (the estimator's own preprocessing), inputs
  {cfg["input_dim"]} wide; sequences of {cfg["length"]} rows; loss: cross-entropy of every
  prediction of every prefix over the task's used label slots.
- Learner: `{cfg["learner"]}` {json.dumps(cfg["learner_kwargs"])}.
- {step} steps of {cfg["batch_size"]} sequences per GPU x {world} GPUs;
  {cfg["optimizer"]} lr {cfg["lr"]} ({cfg["lr_schedule"]}, warm-up {cfg["warmup_steps"]}, final decay
  {cfg["decay_steps"]} steps to {cfg["min_lr_ratio"]}x), grad-clip {cfg["grad_clip"]}, bf16; seed {cfg["seed"]}.{start}

## Evaluation
On real tables and images through the estimator: `python -m benchmarks.tabular`
(`benchmarks/results/tabular.md`).

Made by: `{command}`
"""


def report_checksum(out: Path) -> None:
    """Print the SHA-256 of the weights that save_checkpoint stored in config.json (checked at every load)."""
    sha256 = json.loads((out / CONFIG_NAME).read_text())["weights_sha256"]
    print(f"wrote {out}: model.safetensors SHA-256 {sha256} (config.json weights_sha256, verified at load)")


def publish_prior_run(learner, cfg: dict, step: int, out: Path, earlier: str | None, argv) -> None:
    """Write a prior-trained run as a checkpoint; it is evaluated on tables by ``benchmarks.tabular``."""
    command = "python -m training.publish " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    training = {"config": cfg, "steps": step, "made_by": command}
    if earlier:
        training["weights_published_by"] = earlier
    layout = PriorConfig(**cfg["prior"]).layout
    save_checkpoint(
        learner.cpu(),
        out,
        preprocessing={"layout": layout, "inputs": "gpicl_sklearn.inputs"},
        training=training,
        metrics={},
        model_card=prior_card(cfg, step, command),
    )
    report_checksum(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="training run folder (holds state/)")
    source.add_argument("--checkpoint", type=Path, help="a folder written by this command (re-evaluate, re-card)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--n-tasks", type=int, default=64)
    parser.add_argument("--n-seqs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repo-id", help="also upload to this huggingface-hub model repo")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.repo_id:  # before the evaluation, which takes minutes, not after it
        from huggingface_hub import get_token

        if get_token() is None:
            parser.error("--repo-id needs a huggingface-hub token: set HF_TOKEN or run `hf auth login`")

    if args.run is not None:
        learner, cfg, step = load_run(args.run)
        earlier = None
        # Evaluate what ships: the weights rounded to fp16 as save_checkpoint stores them.
        learner.load_state_dict(
            {k: v.half().float() if v.is_floating_point() else v for k, v in learner.state_dict().items()}
        )
    else:
        loaded = load_checkpoint(args.checkpoint)
        record = loaded.config["training"]
        learner, cfg, step = loaded.model, record["config"], record["steps"]
        earlier = record.get("weights_published_by") or record.get("made_by")  # the run -> weights step
    if cfg.get("prior") is not None:
        publish_prior_run(learner, cfg, step, args.out, earlier, argv)
        return
    device = torch.device(args.device)
    protocol = {
        "n_tasks": args.n_tasks,
        "n_seqs": args.n_seqs,
        "length": cfg["length"],
        "seed": args.seed,
        "split": "test",
        "tasks": "unseen (fresh projection and permutation)",
        "device": device.type,
        "precision": "bf16 autocast" if device.type == "cuda" else "float32",
    }
    results = evaluate_as_trained(
        learner.to(device),
        cfg,
        args.datasets.split(","),
        device,
        n_tasks=args.n_tasks,
        n_seqs=args.n_seqs,
        seed=args.seed,
    )
    print(metrics_table(results))
    command = "python -m training.publish " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    metrics = {
        "protocol": protocol,
        "final_acc": {n: (r["final_acc"] if r["status"] == "ok" else r["status"]) for n, r in results.items()},
        "final_ci95": {n: r["final_ci95"] for n, r in results.items() if r["status"] == "ok"},
    }
    preprocessing = {
        "image_size": cfg["image_size"],
        "channels": cfg["channels"],
        "normalisation": "one mean and std per dataset split (images)",
        "projection": "A ~ N(0, 1/n_in), n_in -> input_dim",
    }
    training = {"config": cfg, "steps": step, "made_by": command}
    if earlier:
        training["weights_published_by"] = earlier
    save_checkpoint(
        learner.cpu(),
        args.out,
        preprocessing=preprocessing,
        training=training,
        metrics=metrics,
        model_card=model_card(cfg, step, results, protocol, command),
    )
    report_checksum(args.out)
    (args.out / "eval_curves.json").write_text(json.dumps({"protocol": protocol, "results": results}))
    if args.repo_id:
        print(f"uploaded to {upload(args.out, args.repo_id)}")


if __name__ == "__main__":
    main()
