"""Where a sample's statistics are written: one reusable float32 vector per sampler.

Each statistic of a layer output is a reduction whose result goes with ``out=`` into a 0-d
view of this vector, and the parameter norms are stacked into its tail. At the boundary the
vector *is* the sample: no stack of a hundred 0-d tensors and no concatenation before the one
host copy (together 40-70 µs a sample on the benchmark CPU, a tenth of the sampler's cost
there), no allocation per statistic, and on an accelerator one copy of one prefix.

Reusing it across samples is safe on an accelerator too: the copy of a prefix to the host is
queued on the stream before the next sample's writes.
"""

from __future__ import annotations

import torch

__all__ = ["StatBuffer", "all_dims"]

_ALL_DIMS: dict[int, tuple[int, ...]] = {}


def all_dims(ndim: int) -> tuple[int, ...]:
    """``(0, 1, ..., ndim - 1)``: the ``dim`` of a full reduction written with ``out=``."""
    dims = _ALL_DIMS.get(ndim)
    if dims is None:
        dims = _ALL_DIMS[ndim] = tuple(range(ndim))
    return dims


class StatBuffer:
    """A float32 vector on one device with a 0-d view per element, made once.

    Args:
        device: Where the statistics are computed (the model's parameters' device).
        capacity: Elements; :meth:`reset` says how many a sample may use.
    """

    def __init__(self, device: torch.device, capacity: int) -> None:
        self.device = device
        self.cpu = device.type == "cpu"
        # Zeros, not garbage: elements a sample leaves unwritten (put_moments) are read back.
        self.data = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.views: tuple[torch.Tensor, ...] = self.data.unbind()
        self.used = 0
        """Elements written by the running sample."""
        self.limit = capacity
        """Elements the layer statistics may use; the rest is kept for the parameter norms."""
        # The slices a sample asks for are the same from one sample to the next: made once
        # (a slice is an op, and ops right after an optimizer step cost ~10 µs each).
        self._slices: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def capacity(self) -> int:
        return len(self.views)

    def reset(self, reserve: int) -> None:
        """Start a sample, keeping ``reserve`` elements at the end (the parameter norms)."""
        self.used = 0
        self.limit = max(0, self.capacity - reserve)

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether a statistic of ``tensor`` can be written here (same device, float32)."""
        if tensor.dtype is not torch.float32:
            return False
        return tensor.is_cpu if self.cpu else tensor.device == self.device

    def put_moments(self, d: torch.Tensor) -> int:
        """Write sum and L2 norm of ``d`` at the next two of four elements and return where
        they start (-1 when full); the other two (min, max) are left as they are: the caller
        fills them in on the host, or :meth:`put_stats` does."""
        at = self.used
        if at + 4 > self.limit:
            return -1
        self.used = at + 4
        views = self.views
        torch.sum(d, all_dims(d.dim()), out=views[at])
        torch.linalg.vector_norm(d, out=views[at + 1])
        return at

    def put_stats(self, d: torch.Tensor) -> int:
        """Write sum, L2 norm, min and max of ``d`` (float32, on this device) at the next four
        elements and return where they start; -1 when the sample's share is full."""
        at = self.put_moments(d)
        if at >= 0:
            views = self.views
            torch.aminmax(d, out=(views[at + 2], views[at + 3]))
        return at

    def put_stacked(self, tensors: list[torch.Tensor]) -> bool:
        """Stack 0-d float32 ``tensors`` (on this device) at the next elements; False when
        they do not fit or do not qualify (nothing is written then)."""
        at, n = self.used, len(tensors)
        if not n:
            return True
        if at + n > self.capacity or not all(self.holds(t) for t in tensors):
            return False
        torch.stack(tensors, out=self._slice(at, at + n))
        self.used = at + n
        return True

    def written(self) -> torch.Tensor:
        """The elements written so far (a view: read or copy it before the next sample)."""
        return self._slice(0, self.used)

    def _slice(self, start: int, stop: int) -> torch.Tensor:
        view = self._slices.get((start, stop))
        if view is None:
            if len(self._slices) >= 64:
                self._slices.clear()
            view = self._slices[(start, stop)] = self.data[start:stop]
        return view
