"""A DataLoader wrapper whose position in an epoch can be saved and resumed exactly.

Why it is needed: a shuffling ``DataLoader`` draws its permutation (and its workers' base
seed) from the global torch generator when the epoch's iterator is created. After a resume in a
new process mid-epoch, that permutation is gone: the global generator has moved on, and the
batches already consumed would be seen again. :class:`ResumableLoader` derives each epoch's
order from ``(seed, epoch)`` through its own ``torch.Generator`` (so it never touches the global
generator that dropout and augmentation use), counts the batches it has handed out, and on
resume skips them at the index level - without loading their data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any


class _SkipSampler:
    """Yields a fixed list of indices (the rest of an epoch's permutation)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableLoader:
    """Iterate like ``DataLoader(dataset, batch_size, shuffle=...)``; save with ``state_dict``.

    Use::

        loader = ResumableLoader(dataset, batch_size=32, seed=0, shuffle=True)
        for epoch in range(start_epoch, epochs):
            for batch in loader:          # continues mid-epoch after load_state_dict
                ...

    Pass it to :func:`tuidebug.ckpt.capture_training_state` / ``save_now`` as
    ``loaders={"train": loader}`` and to ``apply_training_state`` likewise. Extra keyword
    arguments go to ``torch.utils.data.DataLoader`` (``num_workers``, ``collate_fn``...).
    With ``num_workers > 0`` the order still matches; random augmentation done inside workers
    matches only if it is seeded per sample rather than per worker.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        **dataloader_kwargs: Any,
    ) -> None:
        for bad in ("sampler", "batch_sampler", "generator"):
            if bad in dataloader_kwargs:
                raise ValueError(f"ResumableLoader chooses the order itself; do not pass {bad}=")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.kwargs = dataloader_kwargs
        self.epoch = 0
        self.batches_done = 0

    def _order(self, epoch: int) -> list[int]:
        import torch

        n = len(self.dataset) if isinstance(self.dataset, Sized) else 0
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + epoch)
        return [int(i) for i in torch.randperm(n, generator=g).tolist()]

    def __len__(self) -> int:
        n = len(self.dataset) if isinstance(self.dataset, Sized) else 0
        if self.drop_last:
            return n // self.batch_size
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Any]:
        import torch
        from torch.utils.data import DataLoader

        epoch = self.epoch
        rest = self._order(epoch)[self.batches_done * self.batch_size :]
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + epoch + 7_919 * (self.batches_done + 1))
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=_SkipSampler(rest),
            drop_last=self.drop_last,
            generator=g,
            **self.kwargs,
        )
        for batch in loader:
            self.batches_done += 1
            yield batch
        if self.epoch == epoch:
            self.epoch = epoch + 1
            self.batches_done = 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch (for loops that drive the epoch themselves)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.batches_done = 0

    def state_dict(self) -> dict[str, int]:
        """Position: the epoch and how many of its batches the training loop has received."""
        return {"seed": self.seed, "epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position (the next ``iter()`` skips the consumed batches)."""
        self.seed = int(state.get("seed", self.seed))
        self.epoch = int(state["epoch"])
        self.batches_done = int(state["batches_done"])
