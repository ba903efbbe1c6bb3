"""Stand-ins for the datasets the corpus scripts' originals download (not a corpus script).

Each function returns data of the shapes and dtypes the original's loader yields (MNIST as
ToTensor() gives it: float32 in [0, 1], shape (1, 28, 28), int64 labels; token ids as int64 or
the uint16 of nanoGPT's .bin files; the Cora files as text), small enough for a few seconds on
one CPU core. The data carry a learnable signal (class templates, a Markov chain of words), so
that a loss-trend rule sees a real model learning, as it would on the real data; the same
generators serve every script, none is tuned to a rule.
"""

from __future__ import annotations

import os
import pickle
import tempfile

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset


def class_images(
    n: int,
    shape: tuple[int, ...] = (1, 28, 28),
    classes: int = 10,
    seed: int = 0,
    normalize: tuple[float, float] | None = None,
) -> TensorDataset:
    """(image, label) pairs in [0, 1] with MNIST's pixel statistics (mean ~0.13, std ~0.31:
    mostly dark, ~15% bright "ink"): a fixed random ink mask per class (the same for every
    ``seed``: a test split shares the training split's classes), each pixel's brightness
    jittered and one in ten ink pixels moved; ``normalize`` (mean, std) does what
    transforms.Normalize does after ToTensor()."""
    masks = torch.rand(classes, *shape, generator=torch.Generator().manual_seed(1234)) < 0.15
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    ink = masks[labels] ^ (torch.rand(n, *shape, generator=g) < 0.015)
    images = (ink * (0.6 + 0.4 * torch.rand(n, *shape, generator=g))).float()
    if normalize is not None:
        images = (images - normalize[0]) / normalize[1]
    return TensorDataset(images, labels)


def markov_words(n_words: int, vocab: int = 40, seed: int = 0) -> list[str]:
    """A word stream from a random Markov chain (the same chain for every ``seed``, which
    only draws the walk): each word has three likely successors, drawn like every other word
    from a Zipf law over the vocabulary (as in real text, a few words are most of it)."""
    zipf = 1.0 / np.arange(1, vocab + 1)
    zipf /= zipf.sum()
    successors = np.random.default_rng(1234).choice(vocab, size=(vocab, 3), p=zipf)
    rng = np.random.default_rng(seed)
    words, current = [], 0
    for _ in range(n_words):
        if rng.random() < 0.9:
            current = int(successors[current, rng.integers(0, 3)])
        else:
            current = int(rng.choice(vocab, p=zipf))
        words.append(f"w{current}")
    return words


def markov_tokens(n: int, vocab: int, seed: int = 0) -> np.ndarray:
    """The Markov stream as token ids 0..vocab-1 (uint16, as nanoGPT's prepare.py writes)."""
    return np.array([int(w[1:]) for w in markov_words(n, vocab, seed)], dtype=np.uint16)


def text_corpus(folder: str, words: int = 6000, line: int = 20) -> str:
    """train.txt, valid.txt and test.txt (word_language_model's data.Corpus reads them)."""
    for name, size, seed in (
        ("train", words, 0),
        ("valid", words // 5, 1),
        ("test", words // 5, 2),
    ):
        stream = markov_words(size, seed=seed)
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            for i in range(0, len(stream), line):
                f.write(" " + " ".join(stream[i : i + line]) + " \n")
    return folder


def nanogpt_data(vocab: int = 65, train_tokens: int = 20000) -> str:
    """A folder with train.bin, val.bin (uint16 token ids) and meta.pkl, as prepare.py makes."""
    folder = tempfile.mkdtemp(prefix="corpus-nanogpt-")
    markov_tokens(train_tokens, vocab, seed=0).tofile(os.path.join(folder, "train.bin"))
    markov_tokens(train_tokens // 10, vocab, seed=1).tofile(os.path.join(folder, "val.bin"))
    with open(os.path.join(folder, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": vocab}, f)
    return folder


class TokenBlocks(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Lightning's demos.WikiText2 in shape: (inputs, target) blocks of int64 token ids, the
    target shifted by one, and a ``vocab_size``."""

    def __init__(self, tokens: int = 8000, vocab: int = 40, block_size: int = 35) -> None:
        self.data = torch.from_numpy(markov_tokens(tokens, vocab).astype(np.int64))
        self.vocab_size = vocab
        self.block_size = block_size

    def __len__(self) -> int:
        return len(self.data) // self.block_size - 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.block_size
        end = start + self.block_size
        return self.data[start:end], self.data[start + 1 : end + 1]


def cora_files(nodes: int = 300, features: int = 80, classes: int = 7, seed: int = 0) -> str:
    """A folder with cora.content ("id f1..fF label" lines) and cora.cites ("cited citing"
    lines), as the Cora archive has them: binary word features drawn with class-dependent
    rates, and citations mostly within a class."""
    rng = np.random.default_rng(seed)
    folder = tempfile.mkdtemp(prefix="corpus-cora-")
    ids = rng.choice(10**6, size=nodes, replace=False)
    labels = rng.integers(0, classes, size=nodes)
    rates = rng.uniform(0.02, 0.3, size=(classes, features))
    words = (rng.random((nodes, features)) < rates[labels]).astype(int)
    with open(os.path.join(folder, "cora.content"), "w") as f:
        for node in range(nodes):
            row = " ".join(str(v) for v in words[node])
            f.write(f"{ids[node]} {row} class_{labels[node]}\n")
    with open(os.path.join(folder, "cora.cites"), "w") as f:
        for node in range(nodes):
            for _ in range(2):
                same = np.flatnonzero(labels == labels[node])
                other = rng.choice(same) if rng.random() < 0.8 else rng.integers(0, nodes)
                f.write(f"{ids[other]} {ids[node]}\n")
    return folder
