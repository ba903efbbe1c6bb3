"""A small decoder-only transformer language model on generated text.

What it shows: a char-level GPT-style model (token + position embeddings, two pre-LayerNorm
blocks of hand-written causal self-attention and a GELU MLP, a head tied to the token
embedding) trained with ``torch.optim.AdamW``, a linear warmup then cosine decay
(``LambdaLR``), gradient clipping, and a ``DataLoader`` over windows of a generated corpus. The
script never imports tuidebug: ``tuidebug run demos/transformer_lm.py`` finds the model, the
optimizer's step and the loss through torch's own hooks.

The corpus mixes sentences of a tiny grammar ("the cat chases a ball.") with sums
("17+25=42."), generated from ``--seed``; nothing is downloaded. The loss falls from about
ln(vocab) ~ 3.5 to under 1.0 within about 150 steps (the grammar is learnt; the sums mostly are
not, at this size), and the script ends by completing two prompts greedily.

Run it::

    python demos/transformer_lm.py --steps 300
    tuidebug run demos/transformer_lm.py --steps 500 --sleep 0.02
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time

import torch
import torch.nn.functional as F
from _progress import Progress
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SUBJECTS = ["the cat", "a dog", "my friend", "the robot", "a small bird", "the teacher"]
VERBS = ["sees", "likes", "chases", "finds", "draws", "wants"]
OBJECTS = ["a ball", "the moon", "some fish", "a red box", "the tree", "my hat"]


def make_corpus(n_chars: int, seed: int) -> str:
    """About ``n_chars`` characters of grammar sentences and sums, fixed by ``seed``."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        if rng.random() < 0.5:
            part = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
        else:
            a, b = rng.randrange(100), rng.randrange(100)
            part = f"{a}+{b}={a + b}."
        parts.append(part)
        size += len(part) + 1
    return " ".join(parts)


def make_windows(text: str, stoi: dict[str, int], n: int, seq_len: int, seed: int) -> TensorDataset:
    """``n`` fixed random windows of ``seq_len + 1`` characters of ``text`` (fixed by
    ``seed``): the input is ``[:-1]``, the target ``[1:]``."""
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data) - seq_len - 1, (n,), generator=g)
    chunks = data[starts[:, None] + torch.arange(seq_len + 1)]
    return TensorDataset(chunks[:, :-1], chunks[:, 1:])


class CausalSelfAttention(nn.Module):
    """Multi-head attention where each position sees only itself and the positions before it."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """Token + learned position embeddings, ``n_layers`` blocks, a final LayerNorm, a tied head."""

    def __init__(
        self,
        vocab: int,
        seq_len: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


@torch.no_grad()
def complete(model: TinyLM, prompt: str, n: int, stoi: dict[str, int], itos: list[str]) -> str:
    """Greedy completion of ``prompt`` by ``n`` characters."""
    model.eval()
    idx = torch.tensor([[stoi[c] for c in prompt]])
    for _ in range(n):
        logits = model(idx[:, -model.seq_len :])
        idx = torch.cat([idx, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    model.train()
    return "".join(itos[i] for i in idx[0].tolist())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep each step")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--warmup", type=int, default=50, help="warmup steps (at most a tenth of --steps)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    text = make_corpus(200_000, args.seed)
    itos = sorted(set(text))
    stoi = {c: i for i, c in enumerate(itos)}
    dataset = make_windows(text, stoi, 8192, args.seq_len, args.seed + 1)
    g = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, generator=g, drop_last=True
    )

    model = TinyLM(len(itos), args.seq_len, d_model=args.d_model)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    warmup = max(1, min(args.warmup, args.steps // 10))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"transformer_lm: vocab {len(itos)}, {len(dataset)} windows of {args.seq_len}, "
        f"{n_params} parameters, {args.steps} steps (warmup {warmup})",
        flush=True,
    )
    print(f"corpus sample: {text[:72]!r}", flush=True)

    progress = Progress(args.steps)
    model.train()
    step, epoch, loss_value = 0, 0, float("nan")
    while step < args.steps:
        epoch += 1
        for xb, yb in loader:
            lr = scheduler.get_last_lr()[0]
            logits = model(xb)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = loss.item()
            progress.update(step, loss_value, lr, extra=f"  epoch {epoch}")
            if args.sleep > 0:
                time.sleep(args.sleep)
            if step >= args.steps:
                break

    for prompt in ("the cat ", "12+34="):
        progress.line(f"sample: {complete(model, prompt, 24, stoi, itos)!r}")
    progress.finish(step, loss_value, f", perplexity {math.exp(loss_value):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
