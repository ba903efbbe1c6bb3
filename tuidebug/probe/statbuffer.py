"""Where a sample's statistics are written: one reusable float32 vector per sampler.

Each statistic of a layer output is a reduction whose result goes with ``out=`` into a 0-d
view of this vector, and the parameter norms are stacked into its tail. At the boundary the
vector *is* the sample: no stack of a hundred 0-d tensors and no concatenation before the one
host copy (together 40-70 µs a sample on the benchmark CPU, a tenth of the sampler's cost
there), no allocation per statistic, and on an accelerator one copy of one prefix.

Reusing it across samples is safe on an accelerator too: the copy of a prefix to the host is
queued on the stream before the next sample's writes.

On the CPU, a float32 tensor of up to ``KERNEL_NUMEL`` elements is measured by the C kernel
``_onepass`` (sum, norm, min, max and its exact zeros in one read; norms alone for the
parameters), writing straight into this vector: measured on the benchmark model, a quarter of
the cost of the torch reductions inside a hook. Above that size the reduction itself is the
cost and torch's use every core, so torch does them; where the kernel was not compiled (no C
compiler at install) torch does all of them.
"""

from __future__ import annotations

import logging

import torch

try:
    from tuidebug.probe import _onepass
except ImportError:  # built without a C compiler (setup.py): torch's reductions do the work
    _onepass = None  # type: ignore[assignment]
    logging.getLogger("tuidebug.probe").info(
        "tuidebug: C kernel not built; layer statistics use torch reductions (slower)"
    )

__all__ = [
    "KERNEL_NUMEL",
    "StatBuffer",
    "all_dims",
    "host_sum",
    "kernel_available",
    "kernel_takes",
]

KERNEL_NUMEL = 1 << 18  # CPU float32 tensors up to this many elements go through the C kernel


def kernel_available() -> bool:
    """Whether the C kernel was built (see setup.py)."""
    return _onepass is not None


def kernel_takes(t: torch.Tensor) -> bool:
    """Whether the C kernel can read ``t``: built, and ``t`` a plain (a subclass's data_ptr
    may be meaningless or raise), strided, contiguous float32 CPU tensor small enough that
    one thread beats torch's parallel reductions."""
    return (
        _onepass is not None
        and type(t) is torch.Tensor
        and t.dtype is torch.float32
        and t.is_cpu
        and t.layout is torch.strided
        and t.numel() <= KERNEL_NUMEL
        and t.is_contiguous()
    )


def host_sum(t: torch.Tensor) -> float | None:
    """The sum of ``t`` accumulated in float64, read by the C kernel without a torch op; None
    where the kernel does not take ``t`` (the caller sums it another way)."""
    if not kernel_takes(t):
        return None
    return _onepass.total(t.data_ptr(), t.numel())


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
        # The kernel writes at this address (the vector's first element): CPU only.
        self._address = self.data.data_ptr() if self.cpu and _onepass is not None else 0
        self.last_zeros: int | None = None
        """Exact zeros of the tensor last measured by :meth:`put_stats` or :meth:`put_moments`
        when the kernel measured it (free there), else None."""

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
        return self._put(d, extremes=False)

    def put_stats(self, d: torch.Tensor) -> int:
        """Write sum, L2 norm, min and max of ``d`` (float32, on this device) at the next four
        elements and return where they start; -1 when the sample's share is full."""
        return self._put(d, extremes=True)

    def _put(self, d: torch.Tensor, extremes: bool) -> int:
        self.last_zeros = None
        at = self.used
        if at + 4 > self.limit:
            return -1
        self.used = at + 4
        # kernel_takes repeats what holds() checked: a raw read of a device pointer would
        # crash the run, so the kernel's guard does not rely on the caller.
        if self._address and kernel_takes(d):
            # All four at once, whatever was asked: the same single read.
            self.last_zeros = _onepass.stats(d.data_ptr(), d.numel(), self._address + 4 * at)
            return at
        views = self.views
        torch.sum(d, all_dims(d.dim()), out=views[at])
        torch.linalg.vector_norm(d, out=views[at + 1])
        if extremes:
            torch.aminmax(d, out=(views[at + 2], views[at + 3]))
        return at

    def put_norms(self, tensors: list[torch.Tensor]) -> bool:
        """Write the L2 norm of each of ``tensors`` (float32, on this device) at the next
        elements; False when they do not fit or do not qualify (nothing is written then)."""
        at, n = self.used, len(tensors)
        if not n:
            return True
        if at + n > self.capacity or not all(self.holds(t) for t in tensors):
            return False
        rest: list[torch.Tensor] = []
        rest_at: list[int] = []
        for j, t in enumerate(tensors):
            if self._address and kernel_takes(t):
                _onepass.norm(t.data_ptr(), t.numel(), self._address + 4 * (at + j))
            else:
                rest.append(t)
                rest_at.append(at + j)
        if rest:
            # One foreach call: on the CPU a loop in C++ over the tensors. Measured: grouping
            # the small ones (biases) into one stack and a row-wise norm costs more in Python
            # than the ops it saves.
            norms = torch._foreach_norm(rest)
            if len(rest) == n:
                torch.stack(norms, out=self._slice(at, at + n))
            else:
                for k, norm in zip(rest_at, norms, strict=True):
                    self.views[k].copy_(norm)
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
