"""LayerSampler: statistics against torch, one host copy per sample, hooks removed, forensics."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals

from tuidebug.probe import statbuffer
from tuidebug.probe.layers import LayerSampler, describe
from tuidebug.probe.schedule import Schedule
from tuidebug.wire.layer_messages import (
    ACT_FIELDS,
    AnyLayerMessage,
    LayerStats,
    LayerTable,
    NonFinite,
)
from tuidebug.wire.messages import Message


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _train(
    model: nn.Module,
    sampler: LayerSampler,
    steps: int,
    *,
    skip_nonfinite: bool = False,
    pass_loss: bool = True,
    start: int = 1,
    opt: torch.optim.Optimizer | None = None,
) -> list[bool]:
    """A plain loop calling the sampler at each boundary; returns what on_boundary said."""
    if opt is None:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sampler.add_optimizer(opt)
    gen = torch.Generator().manual_seed(1)
    pauses = []
    for step in range(start, start + steps):
        for module in model.modules():
            if isinstance(module, Bad):
                module.now = step
        x = torch.randn(5, 8, generator=gen)
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        value = loss.detach()
        # Like GradScaler: skip the update when the loss or a gradient is not finite, so the
        # weights stay finite.
        grads_ok = all(
            p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters()
        )
        if not skip_nonfinite or (bool(torch.isfinite(value)) and grads_ok):
            opt.step()
        loss_value = float(value) if pass_loss else None
        pauses.append(sampler.on_boundary(step, time.perf_counter(), loss_value))
    return pauses


def _sampled_frozen(net: nn.Module, steps: int) -> list[Message]:
    """Every step sampled, weights frozen (SGD with lr 0): the messages the sampler sent."""
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("model", net)
    _train(net, sampler, steps, opt=torch.optim.SGD(net.parameters(), lr=0.0))
    sampler.close()
    return out


def _of(messages: list[Message], kind: type[Any]) -> list[Any]:
    return [m for m in messages if isinstance(m, kind)]


def _without_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the sampler use torch's reductions, as where the C kernel was not compiled."""
    monkeypatch.setattr(statbuffer, "_onepass", None)


@pytest.mark.parametrize("where", ["buffer", "buffer, torch reductions", "0-d tensors", "batched"])
def test_statistics_match_torch(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The same numbers whichever way the statistics are computed: written into the sampler's
    buffer (the CPU default: by the C kernel where it was built, else by torch), as 0-d
    tensors when the buffer is full, or batched at the root's step's end (the accelerator path,
    forced on the CPU here)."""
    import tuidebug.probe.layers.hooks as layers_module

    monkeypatch.setattr(layers_module, "DENSE_INTERVAL", 1)  # every statistic, every sample
    if where == "buffer, torch reductions":
        _without_kernel(monkeypatch)
    elif where == "0-d tensors":
        monkeypatch.setattr(layers_module.StatBuffer, "put_stats", lambda _self, _d: -1)
    elif where == "batched":
        monkeypatch.setattr(layers_module, "BATCH_ON_CPU", True)
    model = _mlp()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("model", model)
    acts: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        m.register_forward_hook(lambda _m, _i, o, name=name: acts.__setitem__(name, o.detach()))
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, sampler, 1)  # step 1 (not sampled: the first sample is step 2)
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, sampler, 1, start=2)
    sampler.close()
    table = _of(out, LayerTable)[0]
    assert table.names == ["", "0", "1", "2"]
    assert table.types == ["Sequential", "Linear", "ReLU", "Linear"]
    assert table.depths == [0, 1, 1, 1]
    assert table.params == [8 * 16 + 16 + 16 * 4 + 4, 8 * 16 + 16, 0, 16 * 4 + 4]
    stats = _of(out, LayerStats)
    assert [s.step for s in stats] == [2]
    s = stats[0]
    n = len(ACT_FIELDS)
    for k, layer in enumerate(s.layers):
        a = acts[table.names[layer]]
        got = dict(zip(ACT_FIELDS, s.act[k * n : (k + 1) * n], strict=True))
        assert got["mean"] == pytest.approx(a.mean().item(), rel=1e-5, abs=1e-6)
        assert got["std"] == pytest.approx(a.std().item(), rel=1e-4)
        assert got["min"] == pytest.approx(a.min().item())
        assert got["max"] == pytest.approx(a.max().item())
        assert got["zeros"] == pytest.approx((a == 0).float().mean().item())
        assert got["nonfinite"] == 0
        assert s.out_shapes[k] == "5×" + str(a.shape[1])
        assert s.dtypes[k] == "float32" and s.devices[k] == "cpu"
    assert s.layers == [1, 2, 3, 0]  # the order forwards finished: children before the parent
    params = list(model.parameters())
    for k, index in enumerate(s.params):
        p = params[index]
        assert s.grad_norm[k] == pytest.approx(p.grad.norm().item(), rel=1e-5)
        assert s.weight_norm[k] == pytest.approx(p.detach().norm().item(), rel=1e-5)
        delta = (p.detach() - before[index]).norm() / p.detach().norm()
        assert s.update_ratio[k] == pytest.approx(delta.item(), rel=1e-4)
    for h in s.histograms:
        assert len(h.counts) == 32 and h.lo <= h.hi
        numel = acts[table.names[h.layer]].numel() if h.kind == "act" else params[h.param].numel()
        assert sum(h.counts) + h.nonfinite == numel


@pytest.mark.parametrize("kernel", [True, False], ids=["C kernel", "torch reductions"])
def test_dense_sampling_spreads_the_costly_extras(
    monkeypatch: pytest.MonkeyPatch, kernel: bool
) -> None:
    """Every step: the update ratio (which needs a copy of the weights) comes on phase 0 of a
    cycle of DENSE_CYCLE samples. Exact zeros: counted by the C kernel in the same read as the
    other statistics, so on every sample for every layer; with torch's reductions (a count of
    its own) for ReLU-like layers only, on the cycle's middle phase."""
    from tuidebug.probe.layers import DENSE_CYCLE

    if kernel and not statbuffer.kernel_available():
        pytest.skip("the C kernel was not built (no C compiler): tests/unit/test_onepass.py")
    if not kernel:
        _without_kernel(monkeypatch)
    model = _mlp()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("model", model)
    _train(model, sampler, 2 + 2 * DENSE_CYCLE)
    sampler.close()
    table = _of(out, LayerTable)[0]
    stats = _of(out, LayerStats)
    assert len(stats) >= 2 * DENSE_CYCLE
    n = len(ACT_FIELDS)
    zeros_at = ACT_FIELDS.index("zeros")
    for k, s in enumerate(stats):
        with_ratio = all(r >= 0 for r in s.update_ratio)
        with_weights = all(w >= 0 for w in s.weight_norm)
        assert with_ratio == with_weights == (k % DENSE_CYCLE == 0)
        assert all(g >= 0 for g in s.grad_norm)  # gradient norms on every sample
        for j, layer in enumerate(s.layers):
            zeros = s.act[j * n + zeros_at]
            assert s.act[j * n] == s.act[j * n]  # the mean on every sample
            if kernel or (table.types[layer] == "ReLU" and k % DENSE_CYCLE == DENSE_CYCLE // 2):
                assert zeros == zeros and 0 <= zeros <= 1  # counted
            else:
                assert zeros != zeros  # NaN: not counted on this sample


def test_messages_round_trip_msgspec() -> None:
    model = _mlp()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 3, every=1)
    sampler.add_model("model", model)
    _train(model, sampler, 3)
    sampler.close()
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(AnyLayerMessage)
    for message in out:
        back = decoder.decode(encoder.encode(message))
        assert type(back) is type(message)
        assert back.rank == 3
    assert len(encoder.encode(_of(out, LayerStats)[-1])) < 4000


@pytest.mark.parametrize("kernel", [True, False], ids=["C kernel", "torch reductions"])
def test_one_host_copy_per_sampled_step(monkeypatch: pytest.MonkeyPatch, kernel: bool) -> None:
    if kernel and not statbuffer.kernel_available():
        pytest.skip("the C kernel was not built (no C compiler): tests/unit/test_onepass.py")
    if not kernel:
        _without_kernel(monkeypatch)
    model = _mlp()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=2)
    sampler.add_model("model", model)
    names = ["tolist", "item", "cpu", "numpy", "__float__", "__bool__", "__int__", "to"]
    calls: dict[str, int] = {}
    with _counting(calls, names):
        _train(model, sampler, 9, pass_loss=False)
    sampler.close()
    # The same loop without samples: what the training itself reads (Adam's step counters).
    baseline: dict[str, int] = {}
    idle = LayerSampler(lambda m: None, 0, every=10_000)
    with _counting(baseline, names):
        _train(_mlp(), idle, 9, pass_loss=False)
    samples = len(_of(out, LayerStats))
    assert samples == 4
    extra = {k: v - baseline.get(k, 0) for k, v in calls.items() if v != baseline.get(k, 0)}
    # One copy per sample; without the C kernel, plus the tripwire's read of one small CPU
    # gradient a step (a bias, summed in Python; the kernel reads it in place): host memory,
    # no device. The tripwire is off on accelerators.
    assert extra.pop("tolist") == samples + (0 if kernel else 9)
    # ... and its read of the loss scalar, when the probe hands it one.
    assert extra.pop("__float__", 0) <= 9
    # .to() calls are device-to-device casts here (float64 for the one stacked vector).
    assert all(v > 0 for v in extra.values()) and set(extra) <= {"to"}


@contextmanager
def _counting(calls: dict[str, int], names: list[str]) -> Iterator[None]:
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return original(self, *args, **kwargs)

        return counted

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def _assert_no_hooks(model: nn.Module) -> None:
    assert not module_globals._global_forward_hooks
    assert not module_globals._global_forward_hooks_with_kwargs
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not m._forward_pre_hooks_with_kwargs and not m._forward_hooks_with_kwargs
        assert not m._backward_hooks and not m._backward_pre_hooks
    for p in model.parameters():
        assert not getattr(p, "_post_accumulate_grad_hooks", None)
        assert not p._backward_hooks


def test_no_hook_left_after_close_even_mid_sample() -> None:
    model = _mlp()
    sampler = LayerSampler(lambda m: None, 0, every=1)
    sampler.add_model("model", model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, sampler, 3, opt=optimizer)
    assert module_globals._global_forward_hooks  # armed for step 4
    assert optimizer._optimizer_step_pre_hooks  # the tripwire's
    sampler.close()
    _assert_no_hooks(model)
    assert not optimizer._optimizer_step_pre_hooks
    sampler.close()  # idempotent


def test_suspend_takes_every_hook_out_and_resume_carries_on() -> None:
    """The overhead benchmark runs the sampler's model bare between its rounds: suspended, the
    model and optimizer are as if never watched; resumed, sampling goes on where it was (the
    sample armed at suspension included). Steps are the caller's count: suspended ones are
    not counted."""
    model = _mlp()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("model", model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, sampler, 3, opt=optimizer)
    assert module_globals._global_forward_hooks  # armed for step 4
    sampler.suspend()
    _assert_no_hooks(model)
    assert not optimizer._optimizer_step_pre_hooks
    before = len(_of(out, LayerStats))
    _train(model, sampler, 4, opt=optimizer, start=100)  # trained bare meanwhile
    assert len(_of(out, LayerStats)) == before
    _assert_no_hooks(model)
    sampler.resume()
    assert module_globals._global_forward_hooks  # step 4's sample, armed again
    assert optimizer._optimizer_step_pre_hooks
    _train(model, sampler, 3, opt=optimizer, start=4)
    assert [s.step for s in _of(out, LayerStats)[before:]] == [4, 5, 6]
    sampler.close()
    _assert_no_hooks(model)
    assert not optimizer._optimizer_step_pre_hooks


def test_no_hooks_between_samples_and_numerics_unchanged() -> None:
    plain, watched = _mlp(), _mlp()
    _train(plain, LayerSampler(lambda m: None, 0, every=10_000), 6)
    sampler = LayerSampler(lambda m: None, 0, every=2)
    sampler.add_model("model", watched)
    watched.eval()
    _train(watched, sampler, 6)
    assert not watched.training  # mode untouched
    assert not module_globals._global_forward_hooks  # step 7 is not sampled
    sampler.close()
    for a, b in zip(plain.parameters(), watched.parameters(), strict=True):
        assert torch.equal(a, b)


class Bad(nn.Module):
    """Identity, except at ``steps``: a NaN in the forward output or in the backward gradient.

    The step comes from ``now``, which the training loop sets before the forward (so a replay of
    the forward sees the same step); ``by_call=True`` counts calls instead (Python-side state a
    replay cannot reproduce).
    """

    def __init__(self, steps: set[int], backward: bool, by_call: bool = False) -> None:
        super().__init__()
        self.steps = steps
        self.backward = backward
        self.by_call = by_call
        self.calls = 0
        self.now = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if (self.calls if self.by_call else self.now) not in self.steps:
            return x * 1.0
        if self.backward:
            return _NanGrad.apply(x)
        return x * torch.where(torch.arange(x.shape[1]) == 3, math.nan, 1.0)


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * math.nan


def _bad_model(steps: set[int], backward: bool, by_call: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16),
        nn.Tanh(),
        nn.Linear(16, 16),
        Bad(steps, backward, by_call),
        nn.Linear(16, 4),
    )


def test_forward_nan_located_on_its_own_step() -> None:
    model = _bad_model({5}, backward=False)
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("net", model)
    pauses = _train(model, sampler, 7)
    sampler.close()
    assert pauses == [False] * 4 + [True, False, False]
    reports = _of(out, NonFinite)
    assert reports[0].located and reports[0].step == 5 and reports[0].found_step == 5
    assert reports[0].source == "forward" and reports[0].name == "net.3"
    assert reports[0].paused
    assert sampler.forensics is not None and sampler.forensics.layer == 4
    # The data kept for the debugger: the batch of step 5, and finite weights from before.
    args, _ = sampler.forensics.batch
    assert args[0].shape == (5, 8) and args[0].device.type == "cpu"
    assert sampler.forensics.params_step is not None and sampler.forensics.params_step < 5
    assert all(torch.isfinite(t).all() for t in sampler.forensics.params.values())
    _assert_no_hooks(model)


def test_forward_nan_on_an_unsampled_step_located_by_replay_before_the_update() -> None:
    model = _bad_model(set(range(6, 100)), backward=False)
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=50)  # step 6 is not sampled
    sampler.add_model("net", model)
    pauses = _train(model, sampler, 8)  # the update of step 6 runs: NaN weights after it
    sampler.close()
    assert pauses[5] and not any(pauses[6:])
    (located,) = _of(out, NonFinite)
    assert located.located and located.step == 6 and located.found_step == 6
    assert located.source == "forward" and located.name == "net.3"
    assert "replaying step 6" in located.detail
    _assert_no_hooks(model)


def test_backward_nan_on_an_unsampled_step_located_by_replay() -> None:
    model = _bad_model(set(range(4, 100)), backward=True)
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=50)
    sampler.add_model("net", model)
    pauses = _train(model, sampler, 6)
    sampler.close()
    assert pauses == [False, False, False, True, False, False]
    (located,) = _of(out, NonFinite)
    assert located.located and located.step == 4 and located.found_step == 4
    assert located.source == "backward" and located.name == "net.3"
    assert "input gradient" in located.detail


def test_huge_finite_gradients_do_not_trip_the_tripwire() -> None:
    # Biases whose gradients are finite but sum past float32's range (16 x 3e38): the tripwire
    # sums them in float64, so nothing trips; a float32 sum read inf and paused the run.
    model = _mlp()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=50)  # steps 2-6 are not sampled
    sampler.add_model("net", model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    calls = [0]

    def huge_bias_grads(_opt: Any, _args: Any, _kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] >= 3:
            for module in model.modules():
                if isinstance(module, nn.Linear) and module.bias.grad is not None:
                    module.bias.grad.fill_(3e38)

    opt.register_step_pre_hook(huge_bias_grads)  # before the sampler's: runs first
    pauses = _train(model, sampler, 6, opt=opt)
    sampler.close()
    assert calls[0] == 6
    assert not any(pauses) and not _of(out, NonFinite) and sampler.forensics is None


def test_backward_nan_located() -> None:
    model = _bad_model(set(range(4, 100)), backward=True)
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1, pause_on_nonfinite=False)
    sampler.add_model("net", model)
    pauses = _train(model, sampler, 6, skip_nonfinite=True)
    sampler.close()
    assert not any(pauses)
    reports = _of(out, NonFinite)
    assert reports[0].step == 4 and reports[0].source == "backward"
    located = [r for r in reports if r.located]
    assert located and located[0].name == "net.3" and located[0].step == 4
    assert located[0].found_step == 4 and "backward" in located[0].detail


def test_not_reproducible_nan_falls_back_to_forensic_samples() -> None:
    # A call counter: the replay's call is finite. The loss check and the next (forensic)
    # sample report it, saying the replay was finite.
    # Calls: 6 = the forward of step 6 (NaN), 7 = the replay (finite), 8 = step 7 (NaN).
    model = _bad_model({6} | set(range(8, 100)), backward=False, by_call=True)
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=50)
    sampler.add_model("net", model)
    pauses = _train(model, sampler, 8, skip_nonfinite=True)
    sampler.close()
    assert pauses[5] and not any(pauses[6:])
    first, located = _of(out, NonFinite)
    assert first.source == "loss" and first.step == 6 and not first.located
    assert "replay" in first.detail
    assert located.located and located.step == 6 and located.found_step == 7
    assert located.source == "forward" and located.name == "net.3"


class _Sqrt(nn.Module):
    """Data-dependent: sqrt of its input's first column times a learned scale. A batch with a
    negative value there: NaN output; with 0: a NaN gradient for the scale (0 / 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([(x[:, :1] * self.scale).sqrt(), x[:, 1:]], dim=1)


def _sqrt_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        _Sqrt(),
        nn.Linear(8, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(16, 4),
    )


def _data_loop(
    model: nn.Module, sampler: LayerSampler | None, bad_step: int, value: float, steps: int
) -> list[bool]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    if sampler is not None:
        sampler.add_optimizer(opt)
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(7)  # dropout draws from the global generator
    pauses = []
    for step in range(1, steps + 1):
        x = torch.rand(6, 8, generator=gen) + 0.5
        if step == bad_step:
            x[2, 0] = value
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        grads_ok = all(
            p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters()
        )
        if bool(torch.isfinite(loss)) and grads_ok:
            opt.step()  # skipped at the bad step, so the run stays comparable
        if sampler is not None:
            pauses.append(sampler.on_boundary(step, time.perf_counter(), float(loss.detach())))
    return pauses


@pytest.mark.parametrize(("value", "source"), [(-1.0, "forward"), (0.0, "backward")])
def test_data_dependent_nan_is_exact_and_the_replay_changes_no_numerics(
    value: float, source: str
) -> None:
    reference = _sqrt_model()
    _data_loop(reference, None, 5, value, 8)
    model = _sqrt_model()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=100)
    sampler.add_model("net", model)
    pauses = _data_loop(model, sampler, 5, value, 8)
    sampler.close()
    assert pauses == [False] * 4 + [True] + [False] * 3
    (located,) = _of(out, NonFinite)
    assert (located.step, located.source, located.name) == (5, source, "net.0")
    # The replay ran the forward again (dropout, BatchNorm in train mode) and changed nothing.
    for (name, a), b in zip(
        reference.state_dict().items(), model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=name)
    assert model.training
    _assert_no_hooks(model)


class _RowShare(nn.Module):
    """Each unit's share of its row: 0/0 = NaN when dropout zeroed the whole row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.sum(dim=1, keepdim=True)


def _dropout_loop(model: nn.Module, sampler: LayerSampler | None, steps: int) -> int | None:
    """Train until the loss is NaN (only when dropout drops a whole row); its step, or None."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    if sampler is not None:
        sampler.add_optimizer(opt)
    torch.manual_seed(14)  # the dropout masks
    x = torch.ones(1, 3)
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        finite = bool(torch.isfinite(loss))
        if finite:
            opt.step()  # skipped on the NaN step (as GradScaler does): the weights stay finite
        if sampler is not None:
            sampler.on_boundary(step, time.perf_counter(), float(loss.detach()))
        if not finite:
            return step
    return None


def _dropout_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5), _RowShare())
    with torch.no_grad():
        model[0].weight.abs_()  # positive outputs: only a dropped row sums to zero
        model[0].bias.fill_(0.5)
    return model


def test_a_nan_born_of_a_dropout_mask_is_replayed_with_that_mask() -> None:
    # The NaN needs this step's mask: a replay that drew a different one would be finite.
    nan_step = _dropout_loop(_dropout_model(), None, 50)
    assert nan_step is not None and nan_step > 2  # after the first sample (step 1)
    model = _dropout_model()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1000)
    sampler.add_model("net", model)
    assert _dropout_loop(model, sampler, 50) == nan_step  # the sampler draws nothing itself
    sampler.close()
    (located,) = _of(out, NonFinite)
    assert located.step == nan_step and located.source == "forward"
    assert located.name == "net.2" and f"replaying step {nan_step}" in located.detail


def test_rng_state_is_saved_each_step_only_for_a_forward_that_draws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 4))
    model[1].eval()  # dropout off: the forward draws nothing
    calls = [0]
    real = torch.get_rng_state

    def counted() -> torch.Tensor:
        calls[0] += 1
        return real()

    monkeypatch.setattr(torch, "get_rng_state", counted)
    sampler = LayerSampler(lambda _m: None, 0, every=10)  # samples steps 2, 12, 22, ...
    sampler.add_model("net", model)
    _train(model, sampler, 10)
    # Step 1 saved the state (a draw is assumed until a sample looks); step 2, sampled, saved
    # it and looked whether the step drew (a second call): it did not, so 3-10 saved none.
    assert calls[0] == 1 + 2
    model[1].train()  # dropout on: from the next sample on, every step saves the state
    calls[0] = 0
    _train(model, sampler, 10, start=11)
    assert calls[0] == 0 + 2 + 8  # step 11: none; 12: sampled, saw a draw; 13-20: each
    sampler.close()


def test_budget_sets_the_interval() -> None:
    schedule = Schedule(budget=0.01)
    for _ in range(5):
        schedule.note_step(0.010)
    schedule.note_cost(0.001)
    assert schedule.interval() == 10
    assert Schedule(budget=0.01, every=3).interval() == 3
    # What the sampler costs on every step (the tripwire) comes out of the same budget:
    # half of it here, so samples come half as often; over budget, a quarter is left.
    taxed = Schedule(budget=0.01)
    for _ in range(40):
        taxed.note_step(0.010, per_step=0.00005)
    taxed.note_cost(0.001)
    assert taxed.per_step == pytest.approx(0.00005, rel=0.01)
    assert taxed.interval() == 20
    for _ in range(60):
        taxed.note_step(0.010, per_step=0.0002)
    assert taxed.interval() == 40
    model = _mlp()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0)
    sampler.add_model("model", model)
    _train(model, sampler, 60)
    sampler.close()
    stats = _of(out, LayerStats)
    assert 1 <= len(stats) < 30
    assert stats[-1].interval >= 1 and stats[-1].cost > 0


def test_output_changed_in_place_after_its_module_is_not_misreported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batched statistics are taken at the step's end: an output a later module
    changed in place (ReLU(inplace=True) after a Linear) is left out of that sample, and its
    layer is measured in its hook from then on (with the values it returned)."""
    import tuidebug.probe.layers.hooks as layers_module

    monkeypatch.setattr(layers_module, "BATCH_ON_CPU", True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(inplace=True), nn.Linear(16, 4))
    seen: list[torch.Tensor] = []
    model[0].register_forward_hook(lambda _m, _i, o: seen.append(o.detach().clone()))
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("model", model)
    _train(model, sampler, 4)
    sampler.close()
    table = _of(out, LayerTable)[0]
    stats = _of(out, LayerStats)
    linear = table.names.index("0")
    n = len(ACT_FIELDS)
    first, later = stats[0], stats[1]
    k = first.layers.index(linear)
    assert all(v != v for v in first.act[k * n : k * n + 4])  # not measured, not made up
    k = later.layers.index(linear)
    before_relu = seen[later.step - 1]  # the hook saw the output before ReLU changed it
    assert later.act[k * n + ACT_FIELDS.index("min")] == pytest.approx(before_relu.min().item())
    assert later.act[k * n] == pytest.approx(before_relu.mean().item(), abs=1e-6)
    assert before_relu.min().item() < 0  # so the ReLU's change would have shown


class _NegatedBeforeReLU(nn.Module):
    """A Linear whose output is changed in place before a ReLU takes it: the ReLU's min and
    max must not be taken from the Linear's (measured before the change)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 16)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        h.mul_(-3.0)
        return self.act(h)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(inplace=True)), id="inplace"),
        pytest.param(lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU6()), id="relu6"),
        pytest.param(_NegatedBeforeReLU, id="changed-between"),
    ],
)
def test_relu_statistics_in_the_hook_match_torch(
    monkeypatch: pytest.MonkeyPatch, model: Callable[[], nn.Module]
) -> None:
    """In the hook (the CPU path) a ReLU's min and max come from its input's when that input
    is the output just measured; an in-place ReLU, or an input changed in place in between,
    gets its own numbers (a container returning the same tensor object is not "the same
    numbers" once its version moved)."""
    import tuidebug.probe.layers.hooks as layers_module

    monkeypatch.setattr(layers_module, "DENSE_INTERVAL", 1)
    torch.manual_seed(0)
    net = model()
    acts: dict[str, torch.Tensor] = {}
    for name, m in net.named_modules():
        m.register_forward_hook(lambda _m, _i, o, name=name: acts.__setitem__(name, o.clone()))
    out = _sampled_frozen(net, 2)
    table = _of(out, LayerTable)[0]
    s = _of(out, LayerStats)[-1]
    n = len(ACT_FIELDS)
    checked = 0
    for k, layer in enumerate(s.layers):
        a = acts[table.names[layer]].detach()
        got = dict(zip(ACT_FIELDS, s.act[k * n : (k + 1) * n], strict=True))
        assert got["mean"] == pytest.approx(a.mean().item(), rel=1e-5, abs=1e-6), layer
        assert got["min"] == pytest.approx(a.min().item()), layer
        assert got["max"] == pytest.approx(a.max().item()), layer
        checked += 1
    assert checked == len(table.names)
    linear = next(k for k, t in enumerate(table.types) if t == "Linear")
    k = s.layers.index(linear)
    if isinstance(net, nn.Sequential) and isinstance(net[1], nn.ReLU):
        # The in-place ReLU changed the Linear's output after the Linear's hook measured it.
        assert s.act[k * n + ACT_FIELDS.index("min")] < 0


class _ChangedAfterReLU(_NegatedBeforeReLU):
    """A ReLU whose output is changed in place after it ran (with batching: found stale at the
    step's end, measured in its hook from the next sample on) and a Linear whose output is
    changed in place too from the third call on (still deferred then, found stale)."""

    def __init__(self) -> None:
        super().__init__()  # lin and act
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = self.lin(x)
        r = self.act(h)
        out = r.detach().clone() * self.scale  # the backward does not need r (changed below)
        if self.calls >= 3:
            h.mul_(2.0)
        r.mul_(2.0)
        return out


def test_relu_after_a_deferred_output_gets_its_own_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ReLU measured in its hook takes min and max from its input only when that input was
    measured in the hook too: a deferred input found changed in place has no numbers (NaN),
    and the ReLU must not inherit them."""
    import tuidebug.probe.layers.hooks as layers_module

    monkeypatch.setattr(layers_module, "BATCH_ON_CPU", True)
    torch.manual_seed(0)
    net = _ChangedAfterReLU()
    out = _sampled_frozen(net, 4)
    table = _of(out, LayerTable)[0]
    relu = table.names.index("act")
    n = len(ACT_FIELDS)
    stats = _of(out, LayerStats)
    assert [s.step for s in stats] == [2, 3, 4]
    for sample in stats[1:]:  # step 3: the Linear's output deferred and found changed
        k = sample.layers.index(relu)
        got = dict(zip(ACT_FIELDS, sample.act[k * n : (k + 1) * n], strict=True))
        assert got["min"] == 0.0 and got["max"] > 0, (sample.step, got)
        assert got["nonfinite"] == 0, (sample.step, got)
    assert not _of(out, NonFinite)


def test_dense_sampling_reuses_its_weight_copies() -> None:
    """A fresh copy of the weights every few steps made glibc hand memory back to the OS and
    take it again: 240-400 page faults a step on the benchmark model (measured with
    getrusage; ~2 with reuse). Under dense sampling the copies live on between samples and
    are refilled in place; they go when sampling stops being dense."""
    from tuidebug.probe.layers import DENSE_CYCLE

    model = _mlp()
    sampler = LayerSampler(lambda m: None, 0, every=1)
    sampler.add_model("model", model)
    try:
        # The first copy is kept as the last finite weights (forensics); the next one stays.
        _train(model, sampler, 2 + DENSE_CYCLE)
        pool = [t.data_ptr() for t in sampler._snapshot_pool]
        assert len(pool) == len(list(model.parameters()))
        _train(model, sampler, 3 * DENSE_CYCLE, start=3 + DENSE_CYCLE)
        assert [t.data_ptr() for t in sampler._snapshot_pool] == pool
        sampler.schedule.every = 50  # no longer dense: the copies go at the next sample
        _train(model, sampler, 60, start=3 + 4 * DENSE_CYCLE)
        assert sampler._snapshot_pool == []
    finally:
        sampler.close()


def test_forward_only_steps_are_measured_too() -> None:
    """No backward, no optimizer (an evaluation loop driven by dbg.step()): activation
    statistics, no gradient norms, and the sampler keeps going."""
    model = _mlp().eval()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("model", model)
    with torch.no_grad():
        for step in range(1, 6):
            model(torch.randn(5, 8))
            sampler.on_boundary(step, float(step), None)
    sampler.close()
    assert not sampler.disabled
    stats = _of(out, LayerStats)
    assert len(stats) == 4
    assert all(g == -1.0 for s in stats for g in s.grad_norm)  # -1: no gradient
    assert all(s.act[0] == s.act[0] for s in stats)  # measured


def test_reused_module_and_nested_outputs() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.act = nn.ReLU()
            self.lstm = nn.LSTM(4, 3, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.lin(self.act(x)))
            out, (_h, _c) = self.lstm(y.unsqueeze(1))
            return out.sum()

    net = Net()
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("net", net)
    for step in (1, 2):
        net.zero_grad()
        net(torch.randn(2, 4)).backward()
        sampler.on_boundary(step, float(step), None)
    sampler.close()
    table = _of(out, LayerTable)[0]
    s = _of(out, LayerStats)[0]
    act_layer = table.names.index("act")
    assert s.calls[s.layers.index(act_layer)] == 2
    lstm = s.layers.index(table.names.index("lstm"))
    assert s.out_shapes[lstm] == "(2×1×3, (1×2×3, 1×2×3))"
    assert describe({"a": torch.zeros(2)}) == "{a: 2}"


def test_never_raises_into_the_run() -> None:
    model = _mlp()

    def failing_send(_message: Message) -> None:
        raise ZeroDivisionError

    sampler = LayerSampler(failing_send, 0, every=1)
    sampler.add_model("model", model)
    _train(model, sampler, 3)
    assert sampler.disabled
    _assert_no_hooks(model)


def test_probe_side_imports_neither_textual_nor_rich() -> None:
    code = (
        "import sys, tuidebug.probe.layers, tuidebug.probe.schedule, tuidebug.probe.nonfinite, "
        "tuidebug.wire.layer_messages; "
        "bad = [m for m in ('textual', 'rich') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stopping_inside_the_optimizer_hook_does_not_break_the_step() -> None:
    """The tripwire's check fails inside the optimizer's step pre-hook: the sampler stops, and
    the script's own pre-hook after ours still runs (removing ours from the dict torch iterates
    raised "OrderedDict mutated during iteration" into optimizer.step()). Hooks go at close."""
    model = _mlp()

    def broken_loss() -> Any:
        raise ZeroDivisionError

    sampler = LayerSampler(lambda _m: None, 0, every=1000, loss_source=broken_loss)
    sampler.add_model("model", model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sampler.add_optimizer(opt)
    seen: list[int] = []
    opt.register_step_pre_hook(lambda *_: seen.append(1))
    _train(model, sampler, 3, opt=opt)
    assert sampler.disabled
    assert seen == [1, 1, 1]
    sampler.close()
    assert len(opt._optimizer_step_pre_hooks) == 1  # the script's own
    _assert_no_hooks(model)
