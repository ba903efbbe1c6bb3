"""A fake CUDA memory snapshot, for the tests of this machine that has no GPU.

It is built by hand to the format of ``torch.cuda.memory._snapshot()`` in torch 2.x (the
``Snapshot``/``Segment``/``Block``/``TraceEntry``/``Frame`` TypedDicts of its docstring, the keys
``torch/cuda/_memory_viz.py`` reads; the tests also run torch's own readers over it), as the
allocator would record two training steps of a small script ``/proj/train.py`` under the probe:
frames are innermost first, torch's and the standard library's with their real folders here,
the probe's with tuidebug's real folder, native frames as ``stacks="all"`` gives them.

The story, device 0, sizes in MiB (M):
- before the recording: the parameters P (8M, live to the end) and a buffer Q (4M, freed in
  step 1), so neither has frames;
- each step: the forward's activation (32M, train.py:21 in forward, freed after backward), a
  gradient from the autograd engine's device thread (16M, no Python frame; step 1's freed, step
  2's live at the end); step 1 also: a probe layer hook's scratch (1M, freed), Adam's state
  (8M, through the probe's wrapper of optimizer.step, train.py:44 in main, live); step 2 also:
  a pinned copy on the pin-memory thread (2M, only torch and threading frames, live) and a
  library installed in the standard library's site-packages (1M, freed).

Peak: 64M, at step 2's gradient (P 8 + Adam 8 + activation 32 + gradient 16).
"""

from __future__ import annotations

import os
import sysconfig
from typing import Any

import torch

import tuidebug

M = 1 << 20
TORCH = os.path.dirname(torch.__file__)
STDLIB = sysconfig.get_paths()["stdlib"]
OWN = os.path.dirname(tuidebug.__file__)
CWD = "/proj"
SCRIPT = "/proj/train.py"

FORWARD_SITE = "train.py:21 in forward"
OPTIMIZER_SITE = "train.py:44 in main"
HOOK_SITE = f"{OWN}/probe/layers/hooks.py:150 in forward_hook"
PIN_SITE = "torch/utils/data/_utils/pin_memory.py:30 in _pin_memory_loop"  # from site-packages
LIBRARY_SITE = "mylib/blocks.py:7 in forward"


def _frame(filename: str, line: int, name: str) -> dict[str, Any]:
    return {"filename": filename, "line": line, "name": name}


NATIVE = [
    _frame("??", 0, "c10::cuda::CUDACachingAllocator::Native::DeviceCachingAllocator::malloc"),
    _frame("/venv/lib/libtorch_cuda.so", 0, "at::native::addmm_out_cuda_impl"),
]
OUTER = [  # the script under the probe's bootstrap, through runpy
    _frame(SCRIPT, 50, "<module>"),
    _frame(f"{STDLIB}/runpy.py", 88, "_run_code"),
    _frame(f"{OWN}/probe/bootstrap.py", 200, "run_script"),
]
FORWARD = [
    *NATIVE,
    _frame(f"{TORCH}/nn/modules/linear.py", 125, "forward"),
    _frame(f"{TORCH}/nn/modules/module.py", 1786, "_call_impl"),
    _frame(f"{TORCH}/nn/modules/module.py", 1775, "_wrapped_call_impl"),
    _frame(SCRIPT, 21, "forward"),
    _frame(f"{TORCH}/nn/modules/module.py", 1786, "_call_impl"),
    _frame(SCRIPT, 40, "main"),
    *OUTER,
]
HOOK = [  # torch calls the probe's forward hook: the probe's own allocation
    _frame(f"{TORCH}/_tensor.py", 40, "wrapped"),
    _frame(f"{OWN}/probe/layers/hooks.py", 150, "forward_hook"),
    _frame(f"{TORCH}/nn/modules/module.py", 1840, "_call_impl"),
    _frame(SCRIPT, 21, "forward"),
    _frame(SCRIPT, 40, "main"),
    *OUTER,
]
OPTIMIZER = [  # the script calls optimizer.step, which the probe wraps: the script's
    _frame(f"{TORCH}/optim/adam.py", 400, "_single_tensor_adam"),
    _frame(f"{TORCH}/optim/optimizer.py", 500, "wrapper"),
    _frame(f"{OWN}/probe/auto.py", 90, "wrapper"),
    _frame(SCRIPT, 44, "main"),
    *OUTER,
]
PIN = [
    _frame(f"{TORCH}/utils/data/_utils/pin_memory.py", 30, "_pin_memory_loop"),
    _frame(f"{STDLIB}/threading.py", 1010, "run"),
]
LIBRARY = [
    _frame(f"{STDLIB}/site-packages/mylib/blocks.py", 7, "forward"),
    _frame(SCRIPT, 22, "forward"),
    *OUTER,
]
BACKWARD: list[dict[str, Any]] = []  # the autograd engine's device thread runs no Python

# Addresses: blocks lie back to back in their segments, as the allocator splits them.
LARGE, OTHER, SMALL = 0x7F0000000000, 0x7F0010000000, 0x7F0020000000
P, ADAM, GRAD, ACT = LARGE, LARGE + 8 * M, LARGE + 16 * M, LARGE + 32 * M  # a 64M segment
Q, PINNED = OTHER, OTHER + 4 * M  # an 8M segment
HOOKBUF = LIB = SMALL  # the small pool's 2M segment (allocations of 1M and less), reused


def _event(action: str, addr: int, size: int, frames: list[dict[str, Any]], t: int) -> dict:
    return {
        "action": action,
        "addr": addr,
        "size": size,
        "stream": 0,
        "time_us": t,
        "frames": frames,
    }


def _free(addr: int, size: int, frames: list[dict[str, Any]], t: int) -> list[dict]:
    """What freeing a block records: a request, then its completion (one stream: at once)."""
    return [
        _event("free_requested", addr, size, frames, t),
        _event("free_completed", addr, size, frames, t),
    ]


def _block(address: int, size: int, state: str, frames: list[dict[str, Any]]) -> dict:
    return {
        "address": address,
        "size": size,
        "requested_size": size,
        "state": state,
        "frames": frames,
    }


def _segment(address: int, blocks: list[dict], kind: str) -> dict:
    total = sum(b["size"] for b in blocks)
    active = [b for b in blocks if b["state"] != "inactive"]
    return {
        "device": 0,
        "address": address,
        "total_size": total,
        "allocated_size": sum(b["size"] for b in active if b["state"] == "active_allocated"),
        "active_size": sum(b["size"] for b in active),
        "requested_size": sum(b["requested_size"] for b in active),
        "stream": 0,
        "segment_type": kind,
        "segment_pool_id": (0, 0),
        "is_expandable": False,
        "frames": [],
        "blocks": blocks,
    }


def fake_snapshot() -> dict[str, Any]:
    """A fresh copy of the snapshot (a test may change it)."""
    trace = [
        # step 1
        _event("alloc", ACT, 32 * M, FORWARD, 1),
        _event("segment_alloc", SMALL, 2 * M, HOOK, 2),  # the first small block: cudaMalloc
        _event("alloc", HOOKBUF, 1 * M, HOOK, 3),
        *_free(HOOKBUF, 1 * M, HOOK, 4),
        _event("alloc", GRAD, 16 * M, BACKWARD, 5),
        *_free(ACT, 32 * M, FORWARD, 6),
        _event("alloc", ADAM, 8 * M, OPTIMIZER, 7),
        *_free(GRAD, 16 * M, BACKWARD, 8),
        *_free(Q, 4 * M, [], 9),  # allocated before the recording: no frames
        # step 2 (the allocator reuses the same addresses)
        _event("alloc", ACT, 32 * M, FORWARD, 10),
        _event("alloc", GRAD, 16 * M, BACKWARD, 11),
        *_free(ACT, 32 * M, FORWARD, 12),
        _event("alloc", PINNED, 2 * M, PIN, 13),
        _event("alloc", LIB, 1 * M, LIBRARY, 14),
        *_free(LIB, 1 * M, LIBRARY, 15),
        {"action": "snapshot", "addr": 0, "size": 0, "stream": 0, "time_us": 16, "frames": []},
    ]
    large = _segment(
        LARGE,
        [
            _block(P, 8 * M, "active_allocated", []),
            _block(ADAM, 8 * M, "active_allocated", OPTIMIZER),
            _block(GRAD, 16 * M, "active_allocated", BACKWARD),
            _block(ACT, 32 * M, "inactive", []),
        ],
        "large",
    )
    other = _segment(
        OTHER,
        [
            _block(Q, 4 * M, "inactive", []),
            _block(PINNED, 2 * M, "active_allocated", PIN),
            _block(PINNED + 2 * M, 2 * M, "inactive", []),
        ],
        "large",
    )
    small = _segment(SMALL, [_block(SMALL, 2 * M, "inactive", [])], "small")
    return {
        "segments": [large, other, small],
        "device_traces": [trace],
        "allocator_settings": {"PYTORCH_CUDA_ALLOC_CONF": ""},
    }
