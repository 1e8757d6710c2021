"""The augmented task distribution of the paper (Alg. 1), generated on the device.

A task ``k`` is a random linear projection ``A_k`` (``N_in x N_x``, entries
``N(0, 1/N_in)``) of the base dataset's inputs together with a permutation ``rho_k`` of
its labels. A batch holds ``B`` sequences of ``L`` examples drawn uniformly from the base
dataset, each under its own task:

* ``num_tasks = K`` (finite): task ``k`` is drawn uniformly from ``0..K-1`` and its
  ``(A_k, rho_k)`` is regenerated from the seed ``(task_seed, k)``, so any ``K`` up to
  ``2**25`` costs no memory. Generating ``A_k`` costs ``N_in * N_x`` draws per sequence
  (one generator launch each), so finite ``K`` runs eagerly. A task set whose projections
  fit in :data:`TASK_TABLE_BYTES` is generated once instead, by the same functions, and
  each batch gathers its tasks from that table.
* ``num_tasks = None`` (``K = infinity``): every sequence gets a fresh task. Then ``X A`` is
  sampled without materialising ``A``: its columns are independent with rows jointly
  Gaussian of covariance ``G = X X^T / N_in`` (``L x L``), so ``X A  ~  chol(G) Z`` with
  ``Z ~ N(0, 1)`` of shape ``(L, N_x)``. At ``N_in = N_x = 3072`` this is ~30x fewer flops
  and bytes than drawing ``A``.

Biased permutations (paper Intervention 3): the first ``round(biased_fraction * B)``
sequences of every batch use one fixed permutation (the identity), which shortens the
loss plateau at the start of meta-training.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch import Tensor

# Cholesky jitter relative to the mean diagonal of G: sequences may repeat an example
# (rank-deficient G); the jitter keeps the factorisation defined and is far below the
# scale of the data.
_JITTER = 1e-4

# A finite task set whose projections A_k take at most this much memory is drawn once and
# gathered per batch: one batched matmul instead of B generator launches per step, which set
# the step time of a small run on a GPU (one H200, CUDA graphs: the 2-layer MLP at K = 1024
# made 77 steps/s, the 2-layer Transformer at K = infinity 550).
TASK_TABLE_BYTES = 2**30


@dataclass(frozen=True)
class TaskConfig:
    length: int = 100  # L: examples per sequence
    num_classes: int = 10  # label slots; the base dataset's labels must be < num_classes
    out_dim: int = 3072  # N_x: width of the projected inputs (the learner's input_dim)
    num_tasks: int | None = None  # K; None = a fresh task for every sequence
    biased_fraction: float = 0.9  # share of each batch on the fixed permutation
    task_seed: int = 0  # seeds the finite task set (independent of the sampling RNG)


def task_projection(k: int, in_dim: int, out_dim: int, task_seed: int, device="cpu") -> Tensor:
    """``A_k ~ N(0, 1/in_dim)`` of shape ``(in_dim, out_dim)``, a pure function of ``k``.

    Drawn on ``device`` by a generator seeded from ``(task_seed, k)``: the same ``k`` gives
    the same matrix on the same device type (CPU and CUDA streams differ).
    """
    g = torch.Generator(device=device).manual_seed(_task_key(task_seed, k, 0))
    return torch.randn(in_dim, out_dim, generator=g, device=device) / in_dim**0.5


def task_permutation(k: int, num_classes: int, task_seed: int, device="cpu") -> Tensor:
    """``rho_k``: a permutation of ``0..num_classes-1``, a pure function of ``k``."""
    g = torch.Generator(device="cpu").manual_seed(_task_key(task_seed, k, 1))
    return torch.randperm(num_classes, generator=g).to(device)


def _task_key(task_seed: int, k: int, stream: int) -> int:
    # Distinct 63-bit seeds per (task_seed, k, stream); k < 2**40.
    return (task_seed * 1_000_003 + 2 * k + stream) % (2**63 - 1)


@functools.lru_cache(maxsize=1)  # a run's biased and unbiased samplers share one table
def task_table(num_tasks: int, in_dim: int, out_dim: int, num_classes: int, task_seed: int, device: str):
    """Every task's ``(A_k, rho_k)`` stacked: ``(K, in_dim, out_dim)`` and ``(K, num_classes)``.

    ``None`` when the projections would take more than :data:`TASK_TABLE_BYTES`.
    """
    if num_tasks * in_dim * out_dim * 4 > TASK_TABLE_BYTES:
        return None
    a = torch.stack([task_projection(k, in_dim, out_dim, task_seed, device) for k in range(num_tasks)])
    perms = torch.stack([task_permutation(k, num_classes, task_seed) for k in range(num_tasks)])
    return a, perms.to(device)


def gram_cholesky(x: Tensor) -> Tensor:
    """``chol(x xᵀ / N_in)`` per sequence, ``(B, L, L)`` float32: the factor of :func:`gaussian_projection`."""
    x = x.float()
    return _jittered_cholesky(x @ x.transpose(1, 2) / x.shape[-1])


def _jittered_cholesky(gram: Tensor) -> Tensor:
    eye = torch.eye(gram.shape[-1], device=gram.device)
    jitter = _JITTER * gram.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None]
    chol, _ = torch.linalg.cholesky_ex(gram + jitter * eye)  # _ex: no host sync on failure
    return chol


def dataset_gram(x: Tensor) -> Tensor:
    """``x xᵀ / N_in`` of the whole base dataset, ``(N, N)`` float32.

    Every sequence's Gram matrix is a ``(L, L)`` block of it, so a sampler holding it
    gathers ``L²`` numbers per sequence instead of gathering ``L x N_in`` inputs and
    multiplying them (at ``N_in = 3072`` most of a batch draw's device time). It costs
    ``4 N²`` bytes (14.4 GB for 60,000 examples); on a GPU, a clear error when that is more
    than half the free memory.
    """
    n = x.shape[0]
    need = 4 * n * n
    if x.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(x.device)
        if need > free // 2:
            raise ValueError(
                f"the Gram table of {n} examples needs {need / 2**30:.1f} GiB, more than half of the "
                f"{free / 2**30:.1f} GiB free on {x.device}; train with gram_table false"
            )
    x = x.float()
    return x @ x.T / x.shape[-1]


def gaussian_projection(x: Tensor, out_dim: int, generator: torch.Generator) -> Tensor:
    """Sample ``x @ A`` for a fresh ``A ~ N(0, 1/N_in)`` per sequence, without ``A``.

    ``x``: ``(B, L, N_in)``. Returns ``(B, L, out_dim)`` float32.
    """
    return _project(gram_cholesky(x), out_dim, generator)


def _project(chol: Tensor, out_dim: int, generator: torch.Generator) -> Tensor:
    """``chol @ z`` for ``z ~ N(0, I)`` of shape ``(B, L, out_dim)``."""
    z = torch.randn(chol.shape[0], chol.shape[1], out_dim, device=chol.device, generator=generator)
    return chol @ z


class TaskSampler:
    """Draws batches ``(x, y)`` of augmented sequences from one base dataset.

    Parameters
    ----------
    x, y : Tensor
        The base dataset, ``(N, N_in)`` float (preprocessed) and ``(N,)`` long, on the
        device where batches are wanted.
    cfg : TaskConfig
    generator : torch.Generator
        The only source of randomness (on ``x``'s device): its state is the sampler's
        position, so saving and restoring it resumes the exact data stream.
    gram : Tensor, optional
        :func:`dataset_gram` of ``x`` (K = infinity): each sequence's Gram matrix is gathered
        from it rather than computed. The same draws and the same batches, up to rounding.
    """

    def __init__(self, x: Tensor, y: Tensor, cfg: TaskConfig, generator: torch.Generator, gram: Tensor | None = None):
        if int(y.max()) >= cfg.num_classes:
            raise ValueError(f"labels go up to {int(y.max())}, but num_classes={cfg.num_classes}")
        if gram is not None and gram.shape != (x.shape[0], x.shape[0]):
            raise ValueError(f"gram must be the ({x.shape[0]}, {x.shape[0]}) Gram matrix of x, got {tuple(gram.shape)}")
        self.x, self.y, self.cfg, self.generator, self.gram = x, y, cfg, generator, gram

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """``(x A, rho(y))``: ``(B, L, out_dim)`` float32 inputs and ``(B, L)`` labels."""
        cfg, g, dev = self.cfg, self.generator, self.x.device
        idx = self._indices(batch_size)
        if cfg.num_tasks is None:  # gaussian_projection of x[idx]
            x = _project(self._gram_cholesky(idx), cfg.out_dim, g)
            perms = self._fresh_permutations(batch_size)
        else:
            x = self.x[idx]
            ks = torch.randint(0, cfg.num_tasks, (batch_size,), generator=g, device=dev)
            table = task_table(cfg.num_tasks, x.shape[-1], cfg.out_dim, cfg.num_classes, cfg.task_seed, str(dev))
            if table is not None:
                x, perms = torch.bmm(x, table[0][ks]), table[1][ks]  # indexing copies: _relabel may write
            else:
                ks = ks.tolist()
                x = torch.stack(
                    [x[b] @ task_projection(k, x.shape[-1], cfg.out_dim, cfg.task_seed, dev) for b, k in enumerate(ks)]
                )
                perms = torch.stack([task_permutation(k, cfg.num_classes, cfg.task_seed, dev) for k in ks])
        return x, self._relabel(perms, self.y[idx])

    def sample_folded(self, batch_size: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(chol, u, rho(y))`` for K = infinity: the inputs ``x A`` left as two factors.

        ``x A`` has the distribution of ``chol @ z`` with ``chol = chol(x xᵀ / N_in)`` and
        ``z ~ N(0, I)`` of shape ``(L, out_dim)``. A learner whose first layer is linear,
        ``W`` (``width x out_dim``), only needs ``z Wᵀ``, whose rows are ``N(0, W Wᵀ)``:
        :func:`training.folded.folded_embedding` makes them from ``u ~ N(0, I)`` of shape
        ``(B, L, width)``, so no ``(B, L, out_dim)`` tensor is ever formed.
        """
        if self.cfg.num_tasks is not None:
            raise ValueError("folded sampling needs K = infinity (num_tasks=None): a finite task set fixes each A_k")
        idx = self._indices(batch_size)
        u = torch.randn(batch_size, self.cfg.length, width, device=self.x.device, generator=self.generator)
        chol = self._gram_cholesky(idx)
        return chol, u, self._relabel(self._fresh_permutations(batch_size), self.y[idx])

    def _gram_cholesky(self, idx: Tensor) -> Tensor:
        if self.gram is None:
            return gram_cholesky(self.x[idx])
        return _jittered_cholesky(self.gram[idx[:, :, None], idx[:, None, :]])

    def _indices(self, batch_size: int) -> Tensor:
        return torch.randint(
            0, self.x.shape[0], (batch_size, self.cfg.length), device=self.x.device, generator=self.generator
        )

    def _fresh_permutations(self, batch_size: int) -> Tensor:
        noise = torch.rand(batch_size, self.cfg.num_classes, device=self.x.device, generator=self.generator)
        return noise.argsort(dim=1)

    def _relabel(self, perms: Tensor, y: Tensor) -> Tensor:
        """``perms[b][y]`` per sequence, the first ``biased_fraction`` of the batch on the identity."""
        n_biased = round(self.cfg.biased_fraction * perms.shape[0])
        perms[:n_biased] = torch.arange(self.cfg.num_classes, device=perms.device)
        return perms.gather(1, y)


class PaperBatches:
    """``sample(batch_size) -> (*inputs, y)``: a run's batches of the paper's tasks.

    The first ``biased_steps`` batches (every batch when ``None``) carry the biased
    permutations of ``cfg``, the rest none: after the plateau the fixed permutation only
    teaches the base dataset's own labels. ``fold_width`` set: the inputs are
    :meth:`TaskSampler.sample_folded`'s ``(chol, u)`` for a first layer that wide, else
    ``(x A,)``. The phase follows the batch's own index (``calls``: batches drawn before, a
    resumed run's step), so a batch drawn ahead (:class:`training.prefetch.Prefetcher`) is
    in the phase of the step that trains on it. ``gram_table`` (K = infinity): both samplers
    gather their Gram matrices from one :func:`dataset_gram` of ``x``.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        cfg: TaskConfig,
        generator: torch.Generator,
        biased_steps: int | None = None,
        fold_width: int | None = None,
        calls: int = 0,
        gram_table: bool = False,
    ):
        if gram_table and cfg.num_tasks is not None:
            raise ValueError("a Gram table needs K = infinity (num_tasks=None): a finite task set projects x itself")
        gram = dataset_gram(x) if gram_table else None
        self.biased = TaskSampler(x, y, cfg, generator, gram)
        self.unbiased = TaskSampler(x, y, dataclasses.replace(cfg, biased_fraction=0.0), generator, gram)
        self.g, self.biased_steps, self.fold_width, self.calls = generator, biased_steps, fold_width, calls

    def sample(self, batch_size: int) -> tuple[Tensor, ...]:
        in_biased_phase = self.biased_steps is None or self.calls < self.biased_steps
        sampler = self.biased if in_biased_phase else self.unbiased
        self.calls += 1
        if self.fold_width is not None:
            return sampler.sample_folded(batch_size, self.fold_width)
        return sampler.sample(batch_size)
