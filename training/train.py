"""Meta-train an in-context learner on the augmented task distribution (paper Alg. 1).

    python -m training.train --out-dir runs/mnist --steps 50000 --batch-size 512
    torchrun --nproc-per-node 4 -m training.train --config run.json   # data parallel

One loop for every learner in :mod:`training.learners`. Each step samples ``B``
sequences (per process) of ``L`` examples under fresh tasks, computes the cross-entropy
of every prediction of every prefix (paper Eq. 2) and updates the meta-parameters. The
run checkpoints every ``ckpt_every`` steps and when ``max_minutes`` is up, and resumes
exactly from ``<out_dir>/state`` (weights, optimiser moments, RNG = data position,
step), so a long run proceeds across many short jobs; between machines it travels as a carried
copy of that state (``python -m training.state``: fp16 weights, no optimiser moments). Metrics go to
``<out_dir>/metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from gpicl_sklearn.checkpoint import load_checkpoint
from training.config import TrainConfig, config_from_args, describe_changes, resume_changes
from training.data import load_dataset
from training.evaluate import evaluate_datasets, meta_test, summarise
from training.folded import FoldedTransformer
from training.grow import load_weights
from training.learners import build_learner
from training.optim import lr_at, make_optimizer, set_lr
from training.prefetch import Prefetcher
from training.priors.mixture import PriorSampler, load_images
from training.progress import Progress, append_record, drop_records_after
from training.state import find_state, load_state, read_meta, save_state
from training.stepper import Stepper, on_stream, side_stream
from training.tasks import PaperBatches


class Processes(NamedTuple):
    """This process's place in the run: its rank, the number of processes, its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, evaluates and writes files."""
        return self.rank == 0


def _setup_distributed() -> Processes:
    """One process per GPU under ``torchrun``; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world, device)


def make_train_step(model: nn.Module, optimizer, cfg: TrainConfig, device: torch.device):
    """One meta-training step on a batch: forward, loss over all prefixes, backward, update."""
    params = [p for p in model.parameters() if p.requires_grad]
    use_bf16 = cfg.bf16 and device.type == "cuda"

    def step(inputs: tuple[Tensor, ...], y: Tensor, slot_mask: Tensor | None = None) -> Tensor:
        # cache_enabled=False: autocast's weight cache must not outlive a graph capture.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16, cache_enabled=False):
            logits = model(*inputs, y).float()
        if slot_mask is not None:  # the softmax runs over each task's used label slots, as at inference
            logits = logits.masked_fill(~slot_mask[:, None, :], float("-inf"))
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        optimizer.step()
        return loss.detach()

    return step


def step_model(learner: nn.Module, cfg: TrainConfig) -> nn.Module:
    """What a train step calls: the learner, or with ``fold_projection`` its folded wrapper."""
    return FoldedTransformer(learner) if cfg.fold_projection else learner


def draw_batch(batches, cfg: TrainConfig) -> tuple[tuple[Tensor, ...], Tensor, Tensor | None]:
    """``(inputs, y, slot_mask)`` for :func:`make_train_step`'s step: inputs ``(x,)``, or
    ``(chol, u)`` when folded; the mask of used label slots with the prior, else ``None``."""
    if cfg.prior is not None:
        x, y, slot_mask = batches.sample(cfg.batch_size)
        return (x,), y, slot_mask
    *inputs, y = batches.sample(cfg.batch_size)
    return tuple(inputs), y, None


def _evaluate(learner, cfg: TrainConfig, x_train, y_train, device, step: int) -> dict:
    kw = dict(
        image_size=cfg.image_size,
        channels=cfg.channels,
        features=cfg.features,
        num_classes=cfg.num_classes,
        n_tasks=cfg.eval_tasks,
        n_seqs=cfg.eval_seqs,
        length=cfg.length,
    )
    out_dim = cfg.input_dim(x_train.shape[1])
    results = evaluate_datasets(learner, list(cfg.eval_datasets), device=device, out_dim=out_dim, **kw)
    learner.eval()
    if cfg.num_tasks is not None:  # seen tasks: training projections on the training split
        ids = list(range(min(cfg.eval_tasks, cfg.num_tasks)))
        correct = meta_test(
            learner,
            x_train,
            y_train,
            out_dim=out_dim,
            num_classes=cfg.num_classes,
            n_seqs=cfg.eval_seqs,
            length=cfg.length,
            task_ids=ids,
            task_seed=cfg.task_seed,
        )
        results[f"{cfg.dataset}_train_seen_tasks"] = {"status": "ok", **summarise(correct)}
    learner.train()
    return {"step": step, "eval": results}


def _uses_graph(cfg: TrainConfig, device: torch.device) -> bool:
    """CUDA graphs: asked for and on a GPU (a CPU run ignores ``cuda_graph``)."""
    return cfg.cuda_graph and device.type == "cuda"


def _lr(cfg: TrainConfig, step: int) -> float:
    return lr_at(
        step,
        base=cfg.lr,
        schedule=cfg.lr_schedule,
        total=cfg.steps,
        warmup=cfg.warmup_steps,
        min_ratio=cfg.min_lr_ratio,
        decay=cfg.decay_steps,
    )


def _start(cfg: TrainConfig, state_dir: Path, learner: nn.Module, optimizer, generator, procs: Processes) -> int:
    """Resume from the newest complete state in ``state_dir``, else start (from ``init_from``); the first step.

    A resume refuses a config that changes the model or the data and names, in a warning,
    the settings that it changes otherwise (lr, steps, ...).
    """
    found = find_state(state_dir)
    if found is None:
        if cfg.init_from:  # weights only (fp16 in a published checkpoint): the optimiser starts afresh
            load_weights(learner, load_checkpoint(cfg.init_from).model)  # a deeper learner grows (training/grow.py)
        step = 0
    else:
        meta = read_meta(found)
        saved = meta["config"]
        if saved["world_size"] != procs.world:
            raise ValueError(f"{found} was written by {saved['world_size']} processes; resume with as many")
        changes = resume_changes(saved, cfg)
        if cfg.init_from is None:  # a resume keeps the record of the weights the run started from
            cfg.init_from = saved.get("init_from")
        step, rng = load_state(found, learner, optimizer)
        generator.set_state(rng[procs.rank])
        if _uses_graph(cfg, procs.device):  # load_state_dict replaced the device lr with a float
            for group in optimizer.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), device=procs.device)
        if procs.is_main:
            fresh = " (a carried copy: fp16 weights, the optimiser started afresh)" if meta["optimizer"] is None else ""
            print(f"resumed from {found} at step {step}{fresh}", flush=True)
            if changes:
                warnings.warn(f"resuming {found} with changed settings: {describe_changes(changes)}", stacklevel=3)
    if procs.is_main:  # records a killed run wrote after its last checkpoint are written again
        drop_records_after(Path(cfg.out_dir), step)
    return step


def _parallel(model: nn.Module, procs: Processes, side: torch.cuda.Stream | None) -> nn.Module:
    """``model`` under DDP when the run has several processes."""
    if procs.world == 1:
        return model
    # Built on the side stream of a CUDA-graph warm-up: DDP's set-up otherwise touches the
    # legacy default stream, which a capture forbids.
    with on_stream(side):
        device_ids = [procs.device.index] if procs.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _save(
    state_dir: Path, cfg: TrainConfig, learner, optimizer, rng_state: Tensor, procs: Processes, step: int, in_dim: int
) -> None:
    """Checkpoint the run at ``step``: every rank's data position (``rng_state``: this rank's), the main rank writes."""
    states = [rng_state]
    if procs.world > 1:
        gathered: list = [None] * procs.world
        dist.all_gather_object(gathered, states[0].cpu())
        states = gathered
    if procs.is_main:
        config = {**dataclasses.asdict(cfg), "world_size": procs.world, "input_dim": in_dim}
        save_state(state_dir, learner, optimizer, step=step, rng_states=states, config=config)


def train(cfg: TrainConfig) -> nn.Module:
    """Meta-train as ``cfg`` says, from scratch or from ``<out_dir>/state``; the learner at the end."""
    procs = _setup_distributed()
    device = procs.device
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_dir = out_dir / "state"

    if cfg.prior is not None:
        prior = cfg.prior_config()
        images = load_images(prior, "train", device)
        x = y = None
        in_dim = cfg.out_dim
    else:
        x, y = load_dataset(
            cfg.dataset, "train", size=cfg.image_size, channels=cfg.channels, device=device, features=cfg.features
        )
        in_dim = cfg.input_dim(x.shape[1])
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    learner = build_learner(cfg.learner, in_dim, cfg.num_classes, **cfg.learner_kwargs).to(device)
    use_graph = _uses_graph(cfg, device)
    optimizer = make_optimizer(
        cfg.optimizer,
        learner.parameters(),
        lr=cfg.lr,
        eps=cfg.adam_eps,
        betas=(cfg.beta1, cfg.beta2),
        capturable=use_graph,
    )
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + procs.rank)
    step = _start(cfg, state_dir, learner, optimizer, generator, procs)

    side = side_stream(use_graph)
    model = _parallel(step_model(learner, cfg), procs, side)
    if cfg.compile:
        model = torch.compile(model)
    stepper = Stepper(make_train_step(model, optimizer, cfg, device), optimizer, side)
    if cfg.prior is not None:
        # Seeded per rank, and by the step on resume: the host draws of a step are the same.
        sampler = PriorSampler(
            prior,
            cfg.length,
            in_dim,
            cfg.num_classes,
            images,
            generator,
            seed=cfg.seed * 1_000_003 + procs.rank,
            calls=step,
        )
    else:
        fold_width = learner.embed_x.out_features if cfg.fold_projection else None
        sampler = PaperBatches(
            x,
            y,
            cfg.task_config(in_dim),
            generator,
            cfg.biased_steps,
            fold_width,
            calls=step,
            gram_table=cfg.gram_table,
        )
    batches = Prefetcher(sampler, cfg.batch_size, ahead=cfg.prefetch)  # on a GPU: drawn during the step before

    progress = Progress(out_dir, step, cfg.max_minutes, procs.world, procs.is_main, device)
    learner.train()
    while step < cfg.steps:
        lr = _lr(cfg, step)
        set_lr(optimizer, lr)
        inputs, yb, slot_mask = draw_batch(batches, cfg)
        loss = stepper(inputs, yb, slot_mask)
        step += 1

        last = step == cfg.steps
        out_of_time = False
        if step % cfg.log_every == 0 or last:
            out_of_time = progress.log(step, loss, lr)
        if procs.is_main and cfg.prior is None and (step % cfg.eval_every == 0 or last):
            record = _evaluate(learner, cfg, x, y, device, step)
            append_record(out_dir, record)
            finals = {k: v.get("final_acc", v["status"]) for k, v in record["eval"].items()}
            print("eval", json.dumps(finals), flush=True)
        if step % cfg.ckpt_every == 0 or last or out_of_time:
            # A prefetcher's generator is past the batch it drew ahead: save the state before it.
            _save(state_dir, cfg, learner, optimizer, batches.rng_state(), procs, step, in_dim)
        if out_of_time:
            if procs.is_main:
                print(f"stopping at step {step}: max_minutes={cfg.max_minutes} reached", flush=True)
            break
    if procs.world > 1:
        dist.barrier()
    return learner


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_args(argv, description=__doc__)
    train(cfg)
    if dist.is_initialized():
        dist.destroy_process_group()
        # DDP keeps the process group alive past destroy_process_group (its gloo threads
        # outlive it: pytorch#109478), and their teardown with the interpreter's now and
        # then aborts a finished run ("terminate called without an active exception": 3 in
        # 110 launches of a 2-process gloo DDP script on 2 cores, none with this exit).
        # Everything is written and every rank is past the last barrier, so leave without
        # that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
