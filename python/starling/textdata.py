"""A byte-level text corpus for the language-model workload (imports numpy and torch).

The corpus is the Debian package ``fortunes`` (and ``fortunes-min``, which it depends
on): about 2.6 MB of English text in /usr/share/games/fortunes, some 15,000 short
documents (quotations, jokes, definitions) separated by lines holding only ``%``. The
``.dat`` index files and the ``.u8`` links beside them are skipped, and so is an
``off/`` directory (the offensive collection of ``fortunes-off``) if present. When the
package is missing, :func:`load_corpus` announces it on stderr (naming the package and
the install command) and returns a synthetic corpus instead: documents drawn from a
small stochastic grammar, deterministic, with structure a model can learn (agreement of
subject and verb, attributions, document ends), so a run still shows falling loss.

    data, source = load_corpus()              # bytes, "fortunes: /usr/share/... (N docs)"
    train, held = split(data)                 # every 20th document is held out
    for x, y in batches(train, batch=8, context=128, seed=0, rank=r, world=n):
        ...                                   # x, y: (8, 128) int64; y is x shifted by one
    loss, ppl = eval_loss(model, held, context=128)

Documents. A corpus is held in the fortune format: each document's text ends with a
newline and is followed by the line ``%``. :func:`split` works on documents, so no
document is in both parts; the held-out part is fixed by the document order alone.

Batches. Rank ``r`` of ``world`` draws windows only from the ``r``-th of ``world``
equal contiguous shards of the data (so ranks never read the same bytes), at offsets
from a numpy generator seeded with ``(seed, r)``: the stream of each rank is a pure
function of (data, batch, context, seed, rank, world).
"""
from __future__ import annotations

import math
import os
import random
import re
import sys
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FORTUNES_DIR", "INSTALL_HINT", "load_corpus", "synthetic_corpus", "documents",
           "split", "batches", "eval_loss"]

FORTUNES_DIR = "/usr/share/games/fortunes"
INSTALL_HINT = "apt-get install -y --no-install-recommends fortunes"

_SEP = re.compile(rb"^%\r?\n", re.M)  # a line holding only '%'

Bytes = Union[bytes, bytearray, memoryview]


def documents(data: Bytes) -> List[bytes]:
    """The documents of a corpus in fortune format (see the module docstring), each
    with its trailing newline and without the ``%`` line; empty ones are dropped."""
    return [d for d in _SEP.split(bytes(data)) if d.strip()]


def _join(docs: List[bytes]) -> bytes:
    return b"".join((d if d.endswith(b"\n") else d + b"\n") + b"%\n" for d in docs)


def _read_dir(path: str) -> List[bytes]:
    docs: List[bytes] = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        # *.dat are strfile's indexes; *.u8 are links to the same text; off/ is offensive.
        if name.endswith((".dat", ".u8")) or os.path.islink(full) or not os.path.isfile(full):
            continue
        with open(full, "rb") as f:
            docs.extend(documents(f.read()))
    return docs


def load_corpus(path: Optional[str] = None, fallback_bytes: int = 500_000
                ) -> Tuple[bytes, str]:
    """(corpus bytes in fortune format, a one-line description of where they came from).

    ``path``: a directory of fortune files, or one text file (documents separated by
    ``%`` lines; a file without them is one document); default :data:`FORTUNES_DIR`.
    ``"synthetic"`` asks for the synthetic corpus without a warning. A missing path, or
    one with no text, gives the synthetic corpus of ``fallback_bytes`` bytes, announced
    on stderr (``textdata: WARNING: ...``); its description starts with "synthetic"."""
    if path == "synthetic":
        data = synthetic_corpus(fallback_bytes)
        return data, f"synthetic: stochastic grammar, {len(data)} bytes (asked for)"
    where = path or FORTUNES_DIR
    docs: List[bytes] = []
    if os.path.isdir(where):
        docs = _read_dir(where)
    elif os.path.isfile(where):
        with open(where, "rb") as f:
            docs = documents(f.read())
    if docs:
        data = _join(docs)
        kind = "fortunes" if where == FORTUNES_DIR else "text"
        return data, f"{kind}: {where} ({len(docs)} documents, {len(data)} bytes)"
    missing = "no text there" if os.path.exists(where) else "missing"
    why = (f"the Debian package 'fortunes' is not installed (install it with: "
           f"{INSTALL_HINT})" if where == FORTUNES_DIR else f"{where}: {missing}")
    data = synthetic_corpus(fallback_bytes)
    print(f"textdata: WARNING: {why}; using a SYNTHETIC corpus of {len(data)} bytes "
          f"instead (losses are not comparable with the real corpus)",
          file=sys.stderr, flush=True)
    return data, f"synthetic: stochastic grammar, {len(data)} bytes ({why})"


# ---------------------------------------------------------------- synthetic corpus

_ADJ = "old young small big quiet loud red green clever lazy happy sad bright dark".split()
_NOUN = [("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("child", "children"),
         ("robot", "robots"), ("king", "kings"), ("farmer", "farmers"), ("tree", "trees"),
         ("program", "programs"), ("star", "stars"), ("river", "rivers"),
         ("teacher", "teachers")]
_VERB = [("sees", "see"), ("likes", "like"), ("follows", "follow"), ("finds", "find"),
         ("builds", "build"), ("watches", "watch"), ("remembers", "remember"),
         ("forgets", "forget"), ("helps", "help"), ("answers", "answer")]
_ADV = "slowly quickly never always often rarely quietly gladly".split()
_WHO = ["Anonymous", "A. Farmer", "The Old King", "Unix manual", "Proverb", "Grandmother"]


def _phrase(r: random.Random) -> Tuple[str, bool]:
    """A noun phrase and whether it is plural."""
    plural = r.random() < 0.4
    noun = r.choice(_NOUN)[plural]
    det = r.choice(["the", "some", "many"] if plural else ["the", "a", "every", "one"])
    adj = f"{r.choice(_ADJ)} " if r.random() < 0.5 else ""
    return f"{det} {adj}{noun}", plural


def _sentence(r: random.Random) -> str:
    subj, plural = _phrase(r)
    verb = r.choice(_VERB)[plural]
    adv = f"{r.choice(_ADV)} " if r.random() < 0.3 else ""
    obj, _ = _phrase(r)
    tail = f" because {_sentence(r).rstrip('.!?')}" if r.random() < 0.15 else ""
    end = "!" if r.random() < 0.1 else "."
    return f"{subj} {adv}{verb} {obj}{tail}{end}"


def synthetic_corpus(nbytes: int = 500_000, seed: int = 0) -> bytes:
    """Deterministic documents of one to four sentences from a small grammar, some with
    an attribution line as fortunes have, in fortune format; about ``nbytes`` long
    (whole documents, at least one)."""
    r = random.Random(seed)
    docs: List[bytes] = []
    total = 0
    while total < nbytes or not docs:
        text = " ".join(s[0].upper() + s[1:] for s in
                        (_sentence(r) for _ in range(r.randint(1, 4))))
        if r.random() < 0.3:
            text += f"\n\t\t-- {r.choice(_WHO)}"
        docs.append(text.encode() + b"\n")
        total += len(docs[-1]) + 2
    return _join(docs)


# ---------------------------------------------------------------- split and batches

def split(data: Bytes, every: int = 20) -> Tuple[bytes, bytes]:
    """(training part, held-out part): document i is held out when i % every ==
    every - 1 (every 20th by default), so both parts span the whole corpus and no
    document is in both."""
    if every < 2:
        raise ValueError("split: every must be at least 2")
    docs = documents(data)
    held = [d for i, d in enumerate(docs) if i % every == every - 1]
    train = [d for i, d in enumerate(docs) if i % every != every - 1]
    return _join(train), _join(held)


def _tokens(data: Union[Bytes, torch.Tensor]) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data.to(torch.int64)
    return torch.from_numpy(np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64))


def _windows(tokens: torch.Tensor, starts: np.ndarray, context: int
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    idx = torch.from_numpy(starts.astype(np.int64))[:, None] + torch.arange(context + 1)
    w = tokens[idx]                                    # (B, context + 1)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def batches(data: Union[Bytes, torch.Tensor], batch: int, context: int, seed: int = 0,
            rank: int = 0, world: int = 1) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Endless (x, y) batches of int64 tensors (batch, context), y[:, t] the byte that
    follows x[:, t] in the text (so y[:, t] = x[:, t + 1]): windows of rank ``rank``'s shard of ``world``, at offsets drawn
    from ``np.random.default_rng([seed, rank])`` (see the module docstring)."""
    if not 0 <= rank < world:
        raise ValueError(f"batches: rank {rank} not in [0, {world})")
    tokens = _tokens(data)
    n = tokens.numel()
    lo, hi = rank * n // world, (rank + 1) * n // world
    if hi - lo < context + 1:
        raise ValueError(f"batches: shard of {hi - lo} bytes is shorter than context + 1 "
                         f"({context + 1})")
    rng = np.random.default_rng([seed, rank])
    while True:
        yield _windows(tokens, rng.integers(lo, hi - context, size=batch), context)


@torch.no_grad()
def eval_loss(model: torch.nn.Module, data: Union[Bytes, torch.Tensor], context: int,
              windows: int = 64, batch: int = 16) -> Tuple[float, float]:
    """(mean next-byte cross-entropy in nats, perplexity) of ``model`` (a module mapping
    (B, T) int64 to logits (B, T, vocab)) over ``windows`` fixed windows of ``context``
    bytes, evenly spaced over ``data``. Deterministic: the windows depend only on the
    data's length; the model is put in eval mode and its mode restored."""
    tokens = _tokens(data)
    n = tokens.numel()
    if n < context + 1:
        raise ValueError(f"eval_loss: {n} bytes is shorter than context + 1")
    starts = np.linspace(0, n - context - 1, num=windows).astype(np.int64)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for i in range(0, windows, batch):
            x, y = _windows(tokens, starts[i:i + batch], context)
            logits = model(x)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                     reduction="sum").item()
    finally:
        model.train(was_training)
    loss = total / (windows * context)
    return loss, math.exp(loss)
