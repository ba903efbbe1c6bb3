"""A Lightning classifier: ``Trainer.fit`` on a LightningModule, nothing of tuidebug in it.

What it shows: a script that never calls ``optimizer.step()`` itself. Under ``tuidebug run``
the Lightning integration adds a callback to the Trainer (for that run only), so the console's
steps are Lightning's optimizer steps (``--accumulate K``: one step per K batches, the loss the
mean of the K micro-batches), its scalars are what ``self.log`` logs (``train_loss``,
``train_acc``, ``val_loss``, ``val_acc``), and save now (``c`` then ``s``) writes a ``.ckpt``
with ``trainer.save_checkpoint``, which this script resumes with ``--resume PATH``.

The data are classifier.py's (10 classes over 32 features, a fixed random nonlinear rule plus
noise); the model a small MLP with BatchNorm and Dropout; AdamW with a cosine schedule stepped
every optimizer step; a validation every ``--val-every`` steps. Lightning's own CSV logger
writes every logged value to ``OUT/metrics.csv`` (``--out``, a fresh temporary folder by
default), and Lightning's progress bar is the script's progress output.

    python demos/lightning_classifier.py --steps 200
    tuidebug run demos/lightning_classifier.py --steps 400 --sleep 0.02
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from typing import Any

import lightning.pytorch as L
import torch
from classifier import N_CLASSES, N_FEATURES, make_data
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Classifier(L.LightningModule):
    def __init__(self, lr: float, steps: int, sleep: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(N_FEATURES, 128, bias=False),  # BatchNorm's shift replaces the bias
            nn.BatchNorm1d(128),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, N_CLASSES),
        )
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)  # as many modules do: the LightningModule itself is not called
        loss = self.loss_fn(logits, y)
        self.log("train_loss", loss)
        self.log("train_acc", (logits.argmax(dim=1) == y).float().mean())
        if self.hparams.sleep > 0:
            time.sleep(self.hparams.sleep)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss_fn(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, self.hparams.steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep each batch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=7000, help="training examples (<= 7000)")
    parser.add_argument(
        "--no-shuffle", action="store_true", help="the same batch order every epoch"
    )
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--accumulate", type=int, default=1, help="batches per optimizer step")
    parser.add_argument("--val-every", type=int, default=50, help="batches between validations")
    parser.add_argument("--out", default="", help="folder for Lightning's logs")
    parser.add_argument("--resume", default="", help="a .ckpt to resume from")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Lightning's advice about DataLoader workers is noise for an in-memory demo.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning 2.6 on a newer torch
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    L.seed_everything(args.seed, verbose=False)
    out = args.out or tempfile.mkdtemp(prefix="lightning-demo-")
    x, y = make_data(8000, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    train = DataLoader(
        TensorDataset(x[: min(args.train_size, 7000)], y[: min(args.train_size, 7000)]),
        batch_size=args.batch_size,
        shuffle=not args.no_shuffle,
        generator=g,
        drop_last=True,
    )
    val = DataLoader(TensorDataset(x[7000:], y[7000:]), batch_size=250)
    model = Classifier(args.lr, args.steps, args.sleep)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        accumulate_grad_batches=args.accumulate,
        val_check_interval=min(args.val_every, len(train)) if args.val_every > 0 else None,
        check_val_every_n_epoch=None if 0 < args.val_every <= len(train) else 1,
        limit_val_batches=None if args.val_every > 0 else 0,
        num_sanity_val_steps=0,
        logger=CSVLogger(out, name="", version=""),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    print(f"lightning_classifier: {args.steps} steps, logs in {out}", flush=True)
    trainer.fit(model, train, val if args.val_every > 0 else None, ckpt_path=args.resume or None)
    final = trainer.callback_metrics.get("train_loss")
    final_loss = float(final) if final is not None else float("nan")
    print(f"done: {trainer.global_step} steps, final loss {final_loss:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
