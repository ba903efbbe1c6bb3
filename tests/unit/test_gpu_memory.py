"""Memory figures: activation/parameter/optimizer bytes per layer checked against tensor sizes
computed by hand on a known model, and the probe's memory extension (on CPU; the CUDA allocator
is replaced by a stand-in where a test needs one, named as such)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from tuidebug.console.memory_model import GpuState, is_oom, shape_elements
from tuidebug.probe.extensions import memory
from tuidebug.probe.layers import LayerSampler
from tuidebug.wire import codec
from tuidebug.wire.gpu_messages import AllocatorStats, MemorySnapshotResult, ParamMemory
from tuidebug.wire.messages import Command, Message, Notice, ScriptError, StepPoint


def test_shape_text() -> None:
    assert shape_elements("5×16") == 80
    assert shape_elements("(4×8, {'h1': 4×8})") == 64
    assert shape_elements("()") == 1
    assert shape_elements("") == 0


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 32), nn.GELU()), nn.Linear(32, 4)
    )


def _fake_probe(out: list[Message]) -> Any:
    return SimpleNamespace(send=out.append, rank=0, step=0, pid=1234)


def _train(model: nn.Module, steps: int = 3) -> list[Message]:
    """Adam on a batch of 5; the layers sampler and the memory observer both at every boundary."""
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("net", model)
    observer = memory.MemoryObserver(_fake_probe(out), interval=0.0)
    observer.on_model("net", model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler.add_optimizer(opt)
    observer.on_optimizer(opt)
    x = torch.randn(5, 8)
    for step in range(1, steps + 1):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        now = time.perf_counter()
        sampler.on_boundary(step, now, None)
        observer.on_boundary(step, StepPoint(step, time.time()), now)
    sampler.close()
    observer.close()
    return out


def test_activation_param_and_optimizer_bytes_match_hand_computed_sizes() -> None:
    out = _train(_model())
    # Everything goes through the wire codec, as it would between probe and console.
    messages = [codec.decode_body(codec.encode(m)[4:]) for m in out]
    state = GpuState()
    state.fold([m for m in messages if m is not None])
    rows = {r.name: r for r in state.layer_memory(0)}
    f32 = 4
    # Outputs kept for backward (batch 5): by hand.
    assert rows["net.0"].out == 5 * 16 * f32  # Linear(8, 16)
    assert rows["net.1"].out == 5 * 16 * f32  # ReLU
    assert rows["net.2.0"].out == 5 * 32 * f32
    assert rows["net.2.1"].out == 5 * 32 * f32
    assert rows["net.3"].out == 5 * 4 * f32
    # The inner block holds both its leaves' outputs; checkpointing it frees all but its output.
    assert rows["net.2"].held == 2 * 5 * 32 * f32
    assert rows["net.2"].saving == 5 * 32 * f32
    assert rows["net"].held == (2 * 5 * 16 + 2 * 5 * 32 + 5 * 4) * f32
    assert [r.name for r in state.top_consumers(0)] == ["net.2"]
    assert state.top_layers(0)[0].name in ("net.2.0", "net.2.1")
    # Parameters, gradients and Adam's state (exp_avg, exp_avg_sq: the parameter's size each;
    # a 0-dim float32 "step" per tensor), measured by the probe, by hand here.
    linear0 = (8 * 16 + 16) * f32
    assert rows["net.0"].params == linear0
    assert rows["net.0"].grads == linear0
    step_bytes = 4  # torch keeps Adam's step as a 0-dim float32 tensor
    assert rows["net.0"].state == 2 * linear0 + 2 * step_bytes
    assert not rows["net.0"].estimated
    assert rows["net.1"].params == 0
    total = sum(p.numel() for p in _model().parameters()) * f32
    assert sum(r.params for r in rows.values()) == total
    assert state.batch_shape(0) == "(5×8)"  # the root's input, from the layers sampler


def test_without_cuda_the_observer_sends_allocator_nothing() -> None:
    assert not torch.cuda.is_initialized()
    out = _train(_model(), steps=2)
    assert not [m for m in out if isinstance(m, AllocatorStats)]
    assert len([m for m in out if isinstance(m, ParamMemory)]) == 1  # once: state did not grow


class StandInAllocator:
    """A stand-in for torch.cuda's allocator counters (this machine has no GPU)."""

    def __init__(self) -> None:
        self.allocated = {0: 3 << 30, 1: 0}
        self.peak = {0: 5 << 30, 1: 0}
        self.resets: list[int] = []

    def memory_stats(self, device: int) -> dict[str, int]:
        return {
            "allocated_bytes.all.current": self.allocated[device],
            "allocated_bytes.all.peak": self.peak[device],
            "reserved_bytes.all.current": 2 * self.allocated[device],
        }

    def reset_peak_memory_stats(self, device: int) -> None:
        self.resets.append(device)
        self.peak[device] = self.allocated[device]


@pytest.fixture
def standin_cuda(monkeypatch: pytest.MonkeyPatch) -> StandInAllocator:
    alloc = StandInAllocator()
    monkeypatch.setattr(memory, "_cuda_ready", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "memory_stats", alloc.memory_stats)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", alloc.reset_peak_memory_stats)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=80 << 30)
    )
    return alloc


def test_allocator_figures_once_a_second_peak_kept_across_reset(
    standin_cuda: StandInAllocator,
) -> None:
    out: list[Message] = []
    observer = memory.MemoryObserver(_fake_probe(out), interval=1.0)
    model = nn.Linear(3, 2)
    observer.on_model("net", model)
    observer.on_boundary(1, StepPoint(1, 0.0), 100.0)
    observer.on_boundary(2, StepPoint(2, 0.0), 100.5)  # within the interval: nothing
    sent = [m for m in out if isinstance(m, AllocatorStats)]
    assert len(sent) == 1
    (d0,) = sent[0].devices  # device 1 never allocated: not listed
    assert (d0.device, d0.allocated, d0.reserved, d0.peak, d0.total) == (
        0, 3 << 30, 6 << 30, 5 << 30, 80 << 30
    )  # fmt: skip
    # The batch hook is armed on the sampled step, notes one call, and removes itself.
    assert model._forward_pre_hooks
    model(torch.zeros(7, 3))
    assert not model._forward_pre_hooks
    observer.reset_peak(Command(name="memory-reset-peak"))
    assert standin_cuda.resets == [0]
    last = [m for m in out if isinstance(m, AllocatorStats)][-1]
    assert last.devices[0].peak == 5 << 30  # since start: kept
    assert last.devices[0].peak_since_reset == 3 << 30
    assert last.batch == "(7×3)"
    assert any(isinstance(m, Notice) and "peak" in m.text for m in out)


def test_snapshot_without_cuda_is_a_calm_answer() -> None:
    out: list[Message] = []
    observer = memory.MemoryObserver(_fake_probe(out))
    observer.snapshot(Command(name="memory-snapshot"))
    (answer,) = out
    assert isinstance(answer, MemorySnapshotResult) and not answer.error
    assert "not initialised" in answer.unavailable


def test_oom_detection() -> None:
    oom = ScriptError(exc_type="OutOfMemoryError", text="CUDA out of memory.", traceback="")
    legacy = ScriptError(exc_type="RuntimeError", text="CUDA error: out of memory", traceback="")
    other = ScriptError(exc_type="ValueError", text="bad", traceback="")
    assert is_oom(oom) and is_oom(legacy) and not is_oom(other)
