"""A small language model trained with Hugging Face Accelerate, nothing of tuidebug in it.

What it shows: the loop Accelerate's documentation teaches. The script prepares its model,
optimizer, data and schedule with ``accelerator.prepare``, and each batch runs inside
``with accelerator.accumulate(model):`` with ``accelerator.backward(loss)`` in place of
``loss.backward()``, then ``optimizer.step()`` every batch (Accelerate's optimizer wrapper skips
the update until ``--accumulate`` batches went by, default 2). Under ``tuidebug run`` the
Accelerate integration makes the console's steps the optimizer's real steps (one per
``--accumulate`` batches) and each step's loss the mean of its micro-batches' losses as the
script computed them (``accelerator.backward`` backpropagates ``loss / accumulate``).

The model is transformer_lm.py's ``TinyLM`` (one block, 32 wide) on its generated corpus, AdamW
with a linear decay, gradient clipping through ``accelerator.clip_grad_norm_``. Every optimizer
step's loss (the micro-batches' mean) is a line of ``OUT/losses.jsonl`` (``--out``, a fresh
temporary folder by default) and feeds the progress bar. Nothing is downloaded; the CPU only.

    python demos/accelerate_lm.py --steps 100
    tuidebug run demos/accelerate_lm.py --steps 300 --sleep 0.02
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _progress import Progress
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformer_lm import TinyLM, make_corpus, make_windows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep each step")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--accumulate", type=int, default=2, help="batches per optimizer step")
    parser.add_argument("--out", default="", help="folder for losses.jsonl")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out or tempfile.mkdtemp(prefix="accelerate-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=args.accumulate)

    text = make_corpus(50_000, args.seed)
    itos = sorted(set(text))
    stoi = {c: i for i, c in enumerate(itos)}
    g = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        make_windows(text, stoi, 4096, args.seq_len, args.seed + 1),
        batch_size=args.batch_size,
        shuffle=True,
        generator=g,
        drop_last=True,
    )
    model = TinyLM(len(itos), args.seq_len, d_model=32, n_heads=2, n_layers=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    # Accelerate steps a prepared scheduler only on the batches where the optimizer steps.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.1, 1.0 - step / max(1, args.steps))
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    print(
        f"accelerate_lm: {args.steps} steps of {args.accumulate} batches, "
        f"losses in {out / 'losses.jsonl'}",
        flush=True,
    )

    progress = Progress(args.steps)
    step, loss_value = 0, float("nan")
    micro: list[float] = []  # the losses of the optimizer step under way
    with open(out / "losses.jsonl", "w") as log:
        while step < args.steps:
            for xb, yb in loader:
                with accelerator.accumulate(model):
                    logits = model(xb)
                    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
                    accelerator.backward(loss)
                    micro.append(loss.item())
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), 1.0)
                    lr = scheduler.get_last_lr()[0]
                    optimizer.step()  # a real update only once the micro-batches are in
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                step += 1
                loss_value = sum(micro) / len(micro)  # the step's loss: its micro-batches' mean
                micro = []
                log.write(json.dumps({"step": step, "loss": loss_value, "lr": lr}) + "\n")
                log.flush()
                progress.update(step, loss_value, lr)
                if args.sleep > 0:
                    time.sleep(args.sleep)
                if step >= args.steps:
                    break
    progress.finish(step, loss_value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
