"""The top allocation sites of a CUDA memory snapshot: a pure function over the dict that
``torch.cuda.memory._snapshot()`` returns (no torch here, no device: testable anywhere).

The snapshot's format (torch 2.x, ``torch/cuda/memory.py``'s ``_snapshot`` docstring, read by
``torch/cuda/_memory_viz.py``):

- ``segments``: the allocator's cudaMalloc'd segments, each with ``blocks``; a block has
  ``size``, ``state`` ("active_allocated", "active_awaiting_free", "inactive") and, when history
  was being recorded as it was allocated, ``frames`` (innermost first: ``filename``, ``line``,
  ``name``). Blocks allocated before the recording have no frames.
- ``device_traces``: one list per device of the events recorded, oldest first: ``action``
  ("alloc", "free_requested", "free_completed", "segment_alloc", "segment_free", "oom",
  "snapshot"), ``addr``, ``size``, ``frames``.

A site is the innermost frame that is the script's own: frames under ``internal`` (torch, the
standard library) and native frames are skipped, and so are the probe's (``own``) frames when
the probe only wraps what the script called (``optimizer.step`` through the probe's wrapper);
a probe frame called back by torch (a module hook) is the probe's own allocation and is named.
An allocation recorded with no Python frame (the autograd engine may run CUDA backward ops on
its own device thread, where no Python runs) is the site ``NO_STACK``; a block live
at the end with no frames that no recorded event allocated was there before the recording
(``before``: parameters, optimizer state). Bytes are freed at "free_completed" (as
``_memory_viz.trace`` counts them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuidebug.wire.gpu_messages import MemorySite

TOP_SITES = 15
NO_STACK = "(no Python stack: autograd's device thread, C++...)"

_USER, _INTERNAL, _NATIVE, _OWN = "user", "internal", "native", "own"
_INSTALLED = frozenset(("site-packages", "dist-packages"))


@dataclass
class _Site:
    name: str
    user: bool
    live: int = 0  # at the end, from the snapshot's blocks
    current: int = 0  # while replaying the trace
    peak: int = 0
    allocs: int = 0
    allocated: int = 0


@dataclass
class SnapshotSummary:
    """What a snapshot says, in the figures the console shows."""

    sites: list[MemorySite] = field(default_factory=list)  # by peak, then bytes live at the end
    live: int = 0  # bytes allocated at the end (active blocks)
    reserved: int = 0  # bytes in the allocator's segments at the end
    peak: int = 0  # most bytes allocated at once during the recording (the fullest device)
    before: int = 0  # of ``live``: allocated before the recording (so no frames)
    allocs: int = 0
    entries: int = 0

    def fields(self) -> dict[str, Any]:
        """These figures as ``MemorySnapshotResult``'s fields of the same names."""
        return dict(vars(self))


class _Frames:
    """Classifies frames by file (cached: a trace repeats the same few hundred files)."""

    def __init__(self, internal: Sequence[str], own: Sequence[str], cwd: str) -> None:
        self.internal = tuple(_as_dir(p) for p in internal if p)
        self.own = tuple(_as_dir(p) for p in own if p)
        self.cwd = _as_dir(cwd) if cwd else ""
        self._kinds: dict[str, str] = {}

    def kind(self, filename: str) -> str:
        found = self._kinds.get(filename)
        if found is None:
            found = self._kinds[filename] = self._classify(filename)
        return found

    def _classify(self, filename: str) -> str:
        if filename.startswith("<frozen"):
            return _INTERNAL  # the standard library's frozen modules (runpy, importlib)
        if not filename.endswith(".py") and not filename.startswith("<"):
            return _NATIVE  # C++ frames (stacks="all"), "??"; "<string>", "<ipython-...>" are user
        if filename.startswith(self.own):
            return _OWN
        for root in self.internal:
            # A package installed under an internal folder (a system Python's
            # lib/python3.X/site-packages under its standard library) is not internal.
            if filename.startswith(root) and not _INSTALLED.intersection(
                filename[len(root) :].split(os.sep)
            ):
                return _INTERNAL
        return _USER

    def label(self, frame: Mapping[str, Any]) -> str:
        """``file:line in function``; the file relative to the working directory, or from its
        package for an installed one (``torch/nn/modules/linear.py``)."""
        filename = str(frame.get("filename", "?"))
        if self.cwd and filename.startswith(self.cwd):
            filename = filename[len(self.cwd) :]
        else:
            for folder in _INSTALLED:
                _, found, rest = filename.rpartition(f"{os.sep}{folder}{os.sep}")
                if found:
                    filename = rest
                    break
        return f"{filename}:{frame.get('line', 0)} in {frame.get('name', '?')}"

    def site(self, frames: Sequence[Mapping[str, Any]]) -> tuple[str, bool] | None:
        """The site of an allocation's stack (innermost first), and whether it is the script's;
        it stops at the first frame of the script (most stacks are deep, their site is not)."""
        first_python = None
        for i, frame in enumerate(frames):
            kind = self.kind(str(frame.get("filename", "")))
            if kind == _NATIVE:
                continue
            if first_python is None:
                first_python = frame
            if kind == _USER:
                return self.label(frame), True
            if kind == _OWN and self._caller(frames, i) == _INTERNAL:
                return self.label(frame), False  # torch called into the probe (a hook)
        if first_python is not None:
            return self.label(first_python), False
        return (self.label(frames[0]), False) if frames else None

    def _caller(self, frames: Sequence[Mapping[str, Any]], i: int) -> str | None:
        """The kind of the first Python frame outside the probe that called frame ``i``."""
        for frame in frames[i + 1 :]:
            kind = self.kind(str(frame.get("filename", "")))
            if kind not in (_OWN, _NATIVE):
                return kind
        return None


def _as_dir(path: str) -> str:
    return path if path.endswith(os.sep) else path + os.sep


def summarize_snapshot(
    snapshot: Mapping[str, Any],
    *,
    internal: Sequence[str],
    own: Sequence[str] = (),
    cwd: str = "",
    limit: int = TOP_SITES,
) -> SnapshotSummary:
    """The top ``limit`` allocation sites of ``snapshot`` and its totals.

    ``internal``: folders whose frames are not a site (torch's package, the standard library);
    ``own``: the probe's package; ``cwd``: sites under it are named by their relative path.
    """
    frames = _Frames(internal, own, cwd)
    sites: dict[str, _Site] = {}

    def site_of(stack: Any) -> _Site:
        name, user = (frames.site(stack) if stack else None) or (NO_STACK, False)
        site = sites.get(name)
        if site is None:
            site = sites[name] = _Site(name, user)
        return site

    out = SnapshotSummary()
    # Replay each device's events: bytes live per site, and the device's running total.
    still: set[tuple[int, int]] = set()  # (device, address) allocated while recording, live
    tops: dict[int, tuple[int, int]] = {}  # per device: (running total at the end, its top)
    for device, trace in enumerate(snapshot.get("device_traces") or ()):
        live: dict[int, tuple[_Site, int]] = {}  # by address (one device's space)
        running = top = 0
        for event in trace or ():
            out.entries += 1
            action = event.get("action")
            if action == "alloc":
                size = int(event.get("size", 0))
                site = site_of(event.get("frames"))
                out.allocs += 1
                site.allocs += 1
                site.allocated += size
                site.current += size
                site.peak = max(site.peak, site.current)
                live[int(event.get("addr", 0))] = (site, size)
                running += size
                top = max(top, running)
            elif action == "free_completed":
                held = live.pop(int(event.get("addr", 0)), None)
                if held is None:  # allocated before the recording (or before a lost event)
                    running -= int(event.get("size", 0))
                    continue
                site, size = held
                site.current -= size
                running -= size
        still.update((device, addr) for addr in live)
        tops[device] = (running, top)

    live_on: dict[int, int] = {}  # bytes live at the end per device
    for segment in snapshot.get("segments") or ():
        out.reserved += int(segment.get("total_size", 0))
        device = int(segment.get("device", 0))
        for block in segment.get("blocks") or ():
            if block.get("state") not in ("active_allocated", "active_awaiting_free"):
                continue
            size = int(block.get("size", 0))
            out.live += size
            live_on[device] = live_on.get(device, 0) + size
            stack = block.get("frames")
            if stack or (device, int(block.get("address", -1))) in still:
                site_of(stack).live += size
            else:
                out.before += size
    for device, end in live_on.items():
        # ``running`` is what the events added; what was live when they began is the rest.
        running, top = tops.get(device, (0, 0))
        out.peak = max(out.peak, end, max(0, end - running) + top)
    ranked = sorted(sites.values(), key=lambda s: (-s.peak, -s.live, s.name))
    out.sites = [
        MemorySite(s.name, s.live, max(s.peak, s.live), s.allocs, s.allocated, s.user)
        for s in ranked[:limit]
    ]
    return out
