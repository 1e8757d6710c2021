"""The GPICL Transformer (Kirsch et al., 2022), defined once for training and inference.

A sequence of examples ``(x_1, y_1), ..., (x_L, y_L)`` is read as tokens
``t_i = concat(x_i, onehot(y_{i-1}))`` (no label for ``t_1``); causal self-attention
makes the output at position ``i`` a prediction of ``y_i`` from ``x_1..x_i`` and
``y_1..y_{i-1}``. The input layer ``W [x; onehot(y)] + b`` is written as
``embed_x(x) + embed_y(y_prev)`` with a zero row for "no previous label", which is the
same function and lets inference fold a random projection into ``embed_x``.

Inference (:meth:`GPICLTransformer.encode_context` / :meth:`predict_logits`): a fixed
context of ``n`` labelled rows is encoded once into per-layer keys/values; every query
token ``(x_q, y_n)`` sits at position ``n + 1`` and attends to the whole context and to
itself, exactly as the ``(n+1)``-th training token would, so all queries are predicted
in one pass at ``O(n)`` cost each.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GPICLConfig:
    """Architecture of a :class:`GPICLTransformer` (paper defaults)."""

    input_dim: int = 3072  # N_x: width of the (projected) inputs
    num_classes: int = 10  # label slots
    max_len: int = 100  # learned positions = longest sequence (context + 1 query)
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    head_dim: int = 32  # key size
    mlp_ratio: int = 4
    # LayerNorm of each head's queries and keys: bounds the attention logits, whose growth
    # under continued training made deeper models worse (training/RUNS.md).
    qk_norm: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPICLConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown GPICLConfig fields: {sorted(unknown)}")
        return cls(**d)


KV = tuple[Tensor, Tensor]  # per layer: keys and values, each (B, H, n, head_dim)


class Attention(nn.Module):
    def __init__(self, cfg: GPICLConfig):
        super().__init__()
        self.h, self.d = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * self.h * self.d)
        self.proj = nn.Linear(self.h * self.d, cfg.d_model)
        self.q_norm = nn.LayerNorm(self.d) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.d) if cfg.qk_norm else nn.Identity()

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, self.d).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v  # each (B, H, T, D); cached keys are normalised

    def _merge(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(b, t, self.h * self.d))

    def forward(self, x: Tensor) -> tuple[Tensor, KV]:
        q, k, v = self._qkv(x)
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True)), (k, v)

    def forward_queries(self, x: Tensor, kv: KV) -> Tensor:
        """Each query attends to the context keys ``kv`` and to itself only."""
        q, k, v = self._qkv(x)
        k_ctx, v_ctx = kv
        scale = 1.0 / math.sqrt(self.d)
        s_ctx = (q @ k_ctx.transpose(-2, -1)) * scale  # (B, H, Q, n)
        s_self = (q * k).sum(-1, keepdim=True) * scale  # (B, H, Q, 1)
        p = torch.cat([s_ctx, s_self], dim=-1).softmax(dim=-1)
        y = p[..., :-1] @ v_ctx + p[..., -1:] * v
        return self._merge(y)


class Block(nn.Module):
    def __init__(self, cfg: GPICLConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model),
        )

    def forward(self, h: Tensor) -> tuple[Tensor, KV]:
        a, kv = self.attn(self.ln1(h))
        h = h + a
        return h + self.mlp(self.ln2(h)), kv

    def forward_queries(self, h: Tensor, kv: KV) -> Tensor:
        h = h + self.attn.forward_queries(self.ln1(h), kv)
        return h + self.mlp(self.ln2(h))


@dataclass
class ContextCache:
    """Keys/values of an encoded context, reused by every prediction."""

    kv: list[KV]  # one per layer
    last_label: Tensor  # (B,) label of the last context row (the query's y_prev)
    length: int  # n context rows
    logits: Tensor  # (B, n, C): row i's prediction from the rows before it (prequential)


class GPICLTransformer(nn.Module):
    def __init__(self, cfg: GPICLConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_x = nn.Linear(cfg.input_dim, cfg.d_model)
        # Row ``num_classes`` is the all-zero one-hot of the first token (no previous label).
        self.embed_y = nn.Embedding(cfg.num_classes + 1, cfg.d_model, padding_idx=cfg.num_classes)
        self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.num_classes)

    def _run(self, h: Tensor) -> tuple[Tensor, list[KV]]:
        kvs = []
        for block in self.blocks:
            h, kv = block(h)
            kvs.append(kv)
        return h, kvs

    def _label_tokens(self, y: Tensor) -> Tensor:
        """Embeddings of ``y_prev`` for every position: "none" first, then ``y[:, :-1]``."""
        none = torch.full_like(y[:, :1], self.cfg.num_classes)
        return self.embed_y(torch.cat([none, y[:, :-1]], dim=1))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Logits ``(B, L, C)``; position ``i`` predicts ``y[:, i]`` from ``x[:, :i+1], y[:, :i]``.

        ``x``: ``(B, L, input_dim)`` float; ``y``: ``(B, L)`` long in ``[0, num_classes)``.
        """
        return self.forward_embedded(self.embed_x(x), y)

    def forward_embedded(self, x_emb: Tensor, y: Tensor) -> Tensor:
        """:meth:`forward` with ``embed_x`` already applied (``x_emb``: ``(B, L, d_model)``)."""
        length = y.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={self.cfg.max_len}")
        h = x_emb + self._label_tokens(y) + self.pos[:length]
        h, _ = self._run(h)
        return self.head(self.ln_f(h))

    @torch.no_grad()
    def encode_context(self, x_emb: Tensor, y: Tensor) -> ContextCache:
        """Encode ``n`` context rows (``x_emb``: ``(B, n, d_model)``, ``y``: ``(B, n)``)."""
        n = y.shape[1]
        if not 1 <= n < self.cfg.max_len:
            raise ValueError(f"context length must be in [1, {self.cfg.max_len - 1}], got {n}")
        h, kv = self._run(x_emb + self._label_tokens(y) + self.pos[:n])
        return ContextCache(kv=kv, last_label=y[:, -1], length=n, logits=self.head(self.ln_f(h)))

    @torch.no_grad()
    def predict_logits(self, cache: ContextCache, q_emb: Tensor) -> Tensor:
        """Logits ``(B, Q, C)`` for ``Q`` queries (``q_emb``: ``(B, Q, d_model)``) over ``cache``."""
        h = q_emb + self.embed_y(cache.last_label)[:, None] + self.pos[cache.length]
        for block, kv in zip(self.blocks, cache.kv):
            h = block.forward_queries(h, kv)
        return self.head(self.ln_f(h))
