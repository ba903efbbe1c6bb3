"""Variant: the bug of optimizer_missing_params.py written in Lightning. A LightningModule's
``configure_optimizers`` builds its optimizer from the body's parameters only, so the head is
never updated; the loop is ``Trainer.fit``'s (the probe follows it through the Lightning
integration's callback). Lightning's ``optimizer.zero_grad()`` clears only the optimizer's
parameters, so the head's gradients also pile up step after step.

Rules: param-not-in-optimizer, grad-not-zeroed
"""

import logging
import warnings
from typing import Any

import _common as c
import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU())
        self.head = nn.Linear(64, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.body.parameters(), lr=1e-3)  # BUG: the head is left out


args = c.args(100)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning 2.6 on a newer torch
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
x, y = c.classification()
loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, drop_last=True)
trainer = L.Trainer(
    accelerator="cpu",
    devices=1,
    max_steps=args.steps,
    logger=False,
    enable_checkpointing=False,
    enable_model_summary=False,
    enable_progress_bar=False,
)
model = Classifier()
trainer.fit(model, loader)
loss = float(trainer.callback_metrics["train_loss"])
print(f"done: {trainer.global_step} steps, loss {loss:.4f}")
