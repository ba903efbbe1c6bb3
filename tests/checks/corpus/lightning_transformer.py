# Source: Lightning-AI/pytorch-lightning, examples/pytorch/basics/transformer.py, commit
#   a9ca6b1bb4d1150088290a4529ba1b6c6d5c5965 (the version whose Transformer(input, target)
#   call matches the installed lightning 2.6.6's demos.Transformer)
#   https://github.com/Lightning-AI/pytorch-lightning/blob/a9ca6b1bb4d1150088290a4529ba1b6c6d5c5965/examples/pytorch/basics/transformer.py
# Licence: Apache-2.0, Copyright The Lightning AI team (text: LICENSES.md here).
# Adapted for the tuidebug corpus (tests/checks/test_corpus.py) in size, device and data only:
#   - data: WikiText2() downloads wikitext-2's train.txt; here _synthetic.TokenBlocks, a
#     Dataset of the same items (int64 (inputs, target) blocks of 35 tokens, the target
#     shifted by one) and a vocab_size, from a 40-word Markov chain (33278 words);
#   - size: 227 blocks split 187/20/20 (n - 4000, 2000, 2000), the demo Transformer 32 wide
#     (200), 3 epochs (20);
#   - device: accelerator="cpu", devices=1 (auto); default_root_dir a temporary folder (the
#     working directory, for lightning_logs/ and checkpoints).
import tempfile

import _synthetic
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.demos import Transformer
from torch.utils.data import DataLoader, random_split


class LanguageModel(L.LightningModule):
    def __init__(self, vocab_size):
        super().__init__()
        self.model = Transformer(vocab_size=vocab_size, ninp=32, nhid=32)  # corpus: 200, 200

    def training_step(self, batch, batch_idx):
        input, target = batch
        output = self.model(input, target)
        loss = F.nll_loss(output, target.view(-1))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        input, target = batch
        output = self.model(input, target)
        loss = F.nll_loss(output, target.view(-1))
        self.log("val_loss", loss, prog_bar=True)
        return loss

    def test_step(self, batch, batch_idx):
        input, target = batch
        output = self.model(input, target)
        loss = F.nll_loss(output, target.view(-1))
        self.log("test_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main():
    L.seed_everything(42)

    # Data
    dataset = _synthetic.TokenBlocks()  # corpus: WikiText2()

    # Split data in to train, val, test
    n = len(dataset)
    train_dataset, val_dataset, test_dataset = random_split(dataset, [n - 40, 20, 20])
    train_dataloader = DataLoader(train_dataset, batch_size=20, shuffle=True)
    val_dataloader = DataLoader(val_dataset, batch_size=20, shuffle=False)
    test_dataloader = DataLoader(test_dataset, batch_size=20, shuffle=False)

    # Model
    model = LanguageModel(vocab_size=dataset.vocab_size)

    # Trainer
    trainer = L.Trainer(
        gradient_clip_val=0.25,
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        default_root_dir=tempfile.mkdtemp(),
    )
    trainer.fit(model, train_dataloader, val_dataloader)
    trainer.test(model, test_dataloader)


if __name__ == "__main__":
    main()
