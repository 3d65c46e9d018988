"""A GPT-style language model for starling's training workloads (imports torch).

Decoder-only transformer over bytes (vocabulary 256, so any text needs no tokenizer):
learned token and position embeddings, ``depth`` pre-LayerNorm blocks (causal
self-attention, then a GELU MLP of width ``4 * width``, each added to the residual
stream), a final LayerNorm and an output head that shares the token embedding's matrix
(weight tying). No dropout: a step depends only on the parameters and the batch.

    from starling.models import GPT, GPTConfig, param_count
    model = GPT(GPTConfig(), seed=0)          # 10,795,008 parameters
    logits = model(x)                         # x: (B, T) int64 bytes, T <= context
    loss = model.loss(x, y)                   # mean cross-entropy in nats

The default config (depth 6, width 384, 6 heads, context 128) has exactly
**10,795,008** parameters: 12 w^2 + 13 w per block, (256 + context) w for the
embeddings, 2 w for the final LayerNorm (w = width; the tied head adds none).

Attention is written with plain matmuls and a mask (torch 1.13 has no
``F.scaled_dot_product_attention``). Initialisation follows GPT-2: weights normal with
std 0.02 (the two residual projections of each block scaled by 1/sqrt(2 depth)), biases
zero, LayerNorms one and zero, all drawn from a private generator seeded with ``seed``,
so equal seeds give bit-identical models and the global torch RNG is left alone. Every
parameter is a contiguous float32 CPU tensor, as starling.torch.DiLoCo requires.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GPTConfig", "GPT", "param_count"]

VOCAB = 256  # bytes


@dataclass(frozen=True)
class GPTConfig:
    """Model shape. ``width`` must be a multiple of ``heads``; ``context`` is the longest
    sequence the model accepts (the position table's length)."""
    depth: int = 6
    width: int = 384
    heads: int = 6
    context: int = 128
    vocab: int = VOCAB

    def __post_init__(self) -> None:
        for name in ("depth", "width", "heads", "context", "vocab"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be at least 1")
        if self.width % self.heads:
            raise ValueError(f"GPTConfig: width {self.width} is not a multiple of "
                             f"heads {self.heads}")

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        # True above the diagonal: position t may not look at t' > t. A plain attribute,
        # not a buffer, so DDP has nothing to broadcast and state_dict holds weights only.
        self.future = torch.ones(cfg.context, cfg.context, dtype=torch.bool).triu(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        hd = c // self.heads
        # (B, T, 3C) -> three (B, heads, T, hd)
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))     # (B, heads, T, T)
        att = att.masked_fill(self.future[:t, :t], float("-inf"))
        y = F.softmax(att, dim=-1) @ v                               # (B, heads, T, hd)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.fc = nn.Linear(cfg.width, 4 * cfg.width)
        self.out = nn.Linear(4 * cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """The model; ``seed`` fixes the initial parameters (see the module docstring)."""

    def __init__(self, cfg: GPTConfig = GPTConfig(), seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        # torch's layers draw their default init from the global RNG; it is overwritten
        # by reset_parameters, so the global state is saved and put back.
        with torch.random.fork_rng(devices=[]):
            self.tok = nn.Embedding(cfg.vocab, cfg.width)
            self.pos = nn.Embedding(cfg.context, cfg.width)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
            self.ln_f = nn.LayerNorm(cfg.width)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """GPT-2's initialisation from a private generator seeded with ``seed``."""
        g = torch.Generator().manual_seed(int(seed))
        resid_std = 0.02 / math.sqrt(2 * self.cfg.depth)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                std = resid_std if name.endswith((".proj", ".out")) else 0.02
                m.weight.normal_(0.0, std, generator=g)
                m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(0.0, 0.02, generator=g)
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) int64 in [0, vocab), T <= context. Returns logits (B, T, vocab)."""
        b, t = idx.shape
        if t > self.cfg.context:
            raise ValueError(f"GPT: sequence of {t} tokens exceeds context "
                             f"{self.cfg.context}")
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.tok.weight.t()    # tied head

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-byte cross-entropy (nats) of ``targets`` (B, T) given ``idx``."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def param_count(what: Union[GPT, GPTConfig, nn.Module]) -> int:
    """Parameters of a module (each shared tensor counted once), or of a config by the
    formula of the module docstring (equal to the built model's count)."""
    if isinstance(what, GPTConfig):
        w = what.width
        return what.depth * (12 * w * w + 13 * w) + (what.vocab + what.context) * w + 2 * w
    return sum(p.numel() for p in what.parameters())
