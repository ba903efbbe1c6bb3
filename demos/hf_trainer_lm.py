"""A Hugging Face ``Trainer`` on a tiny GPT-2 built from a config: nothing downloaded.

What it shows: a script whose loop is the Trainer's. Under ``tuidebug run`` the Hugging Face
integration adds a ``TrainerCallback`` to the Trainer (for that run only), so the console's
steps are the Trainer's optimizer steps (``--accumulate K``: one per K batches), the loss is
the value the Trainer logs, the scalars are its logs (``learning_rate``, ``grad_norm``,
``eval_loss``), and save now (``c`` then ``s``) makes the Trainer write its own
``OUT/checkpoint-N`` folder, which this script resumes with ``--resume OUT/checkpoint-N``.

The model: ``GPT2LMHeadModel`` from a ``GPT2Config`` (2 layers, 2 heads, 64-wide, a 32-token
vocabulary: about 70k parameters). The data: token sequences of a small rule (each sequence
counts up from a random start by a random stride, modulo the vocabulary), so the loss falls
from ln(32) = 3.5 to under 2 in about 60 steps. Linear learning-rate decay, an evaluation every
``--eval-every`` steps, a log line every step; the Trainer's own ``log_history`` is written
to ``OUT/log_history.json`` at the end (``--out``, a fresh temporary folder by default).

    python demos/hf_trainer_lm.py --steps 100
    tuidebug run demos/hf_trainer_lm.py --steps 300 --sleep 0.02
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is built locally
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch
from torch.utils.data import Dataset
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

VOCAB = 32
LENGTH = 24


class CountingSequences(Dataset[dict[str, torch.Tensor]]):
    """``n`` sequences ``start, start + stride, ...`` modulo ``VOCAB`` (fixed by ``seed``).

    There are only ``VOCAB * 3`` such sequences, so a random evaluation set would be made of
    training rows (``tuidebug check``'s train-eval-overlap says so): the evaluation's start
    tokens (``held_out``) are the multiples of 8, the training's the others.
    """

    def __init__(self, n: int, seed: int, held_out: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        tokens = torch.arange(VOCAB)
        starts = tokens[(tokens % 8 == 0) == held_out]
        start = starts[torch.randint(0, len(starts), (n, 1), generator=g)]
        stride = torch.randint(1, 4, (n, 1), generator=g)
        self.tokens = (start + stride * torch.arange(LENGTH)) % VOCAB

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i], "labels": self.tokens[i]}


class Sleep(TrainerCallback):
    """``--sleep``: a pause after each optimizer step, to watch the run at a human pace."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        time.sleep(self.seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep each step")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=4096, help="training sequences")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--accumulate", type=int, default=1, help="batches per optimizer step")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between evaluations")
    parser.add_argument("--out", default="", help="the Trainer's output_dir")
    parser.add_argument("--resume", default="", help="a checkpoint-N folder to resume from")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    out = args.out or tempfile.mkdtemp(prefix="hf-demo-")
    torch.manual_seed(args.seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=LENGTH, n_embd=64, n_layer=2, n_head=2, n_inner=128
    )
    model = GPT2LMHeadModel(config)
    training = TrainingArguments(
        output_dir=out,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        gradient_accumulation_steps=args.accumulate,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        logging_steps=1,
        eval_strategy="steps" if args.eval_every > 0 else "no",
        eval_steps=args.eval_every if args.eval_every > 0 else None,
        save_strategy="no",  # checkpoints when asked (tuidebug's save now), none on a schedule
        report_to="none",
        use_cpu=True,
        seed=args.seed,
        dataloader_num_workers=0,
    )
    callbacks = [Sleep(args.sleep)] if args.sleep > 0 else []
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=CountingSequences(args.train_size, args.seed),
        eval_dataset=CountingSequences(256, args.seed + 1, held_out=True),
        callbacks=callbacks,
    )
    print(f"hf_trainer_lm: {args.steps} steps, output in {out}", flush=True)
    trainer.train(resume_from_checkpoint=args.resume or None)
    history = trainer.state.log_history
    Path(out, "log_history.json").write_text(json.dumps(history, indent=1))
    losses = [entry["loss"] for entry in history if "loss" in entry]
    final_loss = losses[-1] if losses else float("nan")
    print(f"done: {trainer.state.global_step} steps, final loss {final_loss:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
