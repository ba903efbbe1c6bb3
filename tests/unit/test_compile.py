"""torch.compile under the real probe: dynamo's own counters, with and without the probe.

The same training loop runs twice in this process, bare and under the probe (its auto hooks and
every extension a run installs: layers, checks, step phases, checkpoints..., reporting into an
in-memory sink), each after ``torch._dynamo.reset()``.
Dynamo's counters must be the same: the graphs it captured, its graph breaks, and no more
compiles (``unique_graphs`` counts every compile, recompiles included). The backend is
``eager``: dynamo's tracing, guards and recompiles without inductor's code generation (cheap on
two cores); one tiny inductor case checks that the probe's steps match a bare run there too.
"""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

import pytest
import torch
import torch._dynamo
from test_probe import MemoryLink
from torch._dynamo.utils import counters

from tuidebug.probe.extensions import install_all
from tuidebug.probe.probe import Probe
from tuidebug.wire.layer_messages import LayerStats
from tuidebug.wire.messages import ModelSeen, Notice


class Net(torch.nn.Module):
    """A model defined in user code (dynamo does not start tracing inside torch.nn itself:
    a bare ``nn.Sequential``'s ``compile()`` captures nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.act = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def train(
    form: str, probe_options: dict[str, Any] | None, steps: int = 10, backend: str = "eager"
) -> dict[str, Any]:
    """Train a compiled Net ``steps`` steps; with the probe when ``probe_options`` is a dict.
    The probe starts before the script compiles, as under ``tuidebug run``."""
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    link = MemoryLink()
    probe = None
    if probe_options is not None:
        probe = Probe(link)  # type: ignore[arg-type]
        probe.install_auto_hooks()
        folder = tempfile.mkdtemp(prefix="tuidebug-compile-")
        failed = install_all(probe, {"run_folder": folder, **probe_options})
        assert set(failed) <= {"stacks"}  # it needs the supervisor's run folder layout
    losses = []
    try:
        model = Net()
        if form == "torch.compile":
            compiled: torch.nn.Module = torch.compile(model, backend=backend)  # type: ignore[assignment]
        else:
            model.compile(backend=backend)
            compiled = model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = torch.randn(32, 8), torch.randn(32, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the probe adds no warning to the run's output
            for _ in range(steps):
                loss = torch.nn.functional.mse_loss(compiled(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        if probe is not None:
            probe.finish()
    finally:
        if probe is not None:
            probe.remove_hooks()
    return {
        "graphs": counters["stats"]["unique_graphs"],
        "captured": counters["stats"]["calls_captured"],
        "breaks": sum(counters["graph_break"].values()),
        "recompiles": sum(counters["recompiles"].values()),
        "losses": losses,
        "link": link,
    }


def dynamo_figures(run: dict[str, Any]) -> tuple[int, int, int, int]:
    return run["graphs"], run["captured"], run["breaks"], run["recompiles"]


@pytest.mark.parametrize("form", ["torch.compile", "model.compile"])
def test_the_probe_adds_no_graph_break_or_recompile(form: str) -> None:
    bare = train(form, None)
    probed = train(form, {})  # the default: layer budget, no forced interval
    assert bare["graphs"] == 1 and bare["breaks"] == 0
    assert dynamo_figures(probed) == dynamo_figures(bare)
    assert probed["losses"] == bare["losses"]
    link = probed["link"]
    assert [p.step for p in link.points] == list(range(1, 11))
    assert [p.loss for p in link.points] == pytest.approx(bare["losses"])
    # The model is the original module (its names, its state dict), not the compiled wrapper.
    assert [(m.name, m.class_name) for m in link.of(ModelSeen)] == [("model", "Net")]
    # Layer statistics of a compiled model are off by default, and the console says why.
    assert link.of(LayerStats) == []
    notes = [m.text for m in link.of(Notice)]
    assert len(notes) == 1 and "compiled" in notes[0] and "--stats-every" in notes[0]


@pytest.mark.parametrize("form", ["torch.compile", "model.compile"])
def test_stats_every_samples_eager_steps_without_recompiling(form: str) -> None:
    bare = train(form, None, steps=12)
    probed = train(form, {"stats_every": 3}, steps=12)
    # Sampled steps run under the eager stance: the compiled graph is neither broken nor
    # traced again when the stance comes back.
    assert dynamo_figures(probed) == dynamo_figures(bare)
    assert probed["losses"] == bare["losses"]  # the eager backend: the same numbers
    stats = probed["link"].of(LayerStats)
    assert len(stats) >= 3
    # Every module of the model was measured on a sampled step (forward hooks ran).
    assert all(len(s.layers) >= 3 and len(s.act) >= 3 for s in stats)
    assert probed["link"].of(Notice) == []


def test_inductor_steps_match_a_bare_compiled_run() -> None:
    bare = train("torch.compile", None, steps=4, backend="inductor")
    probed = train("torch.compile", {}, steps=4, backend="inductor")
    assert dynamo_figures(probed) == dynamo_figures(bare)
    assert probed["losses"] == bare["losses"]  # stats off by default: inductor's numbers
    assert [p.loss for p in probed["link"].points] == pytest.approx(bare["losses"])


def test_the_probe_leaves_torch_compile_and_grad_scaler_as_they_were() -> None:
    scaler = torch.amp.GradScaler
    originals = (torch.compile, scaler.__dict__["step"], scaler.__dict__["scale"])
    probe = Probe(MemoryLink())  # type: ignore[arg-type]
    probe.install_auto_hooks()
    wrapped = (torch.compile, scaler.__dict__["step"], scaler.__dict__["scale"])
    assert all(w is not o for w, o in zip(wrapped, originals, strict=True))
    probe.remove_hooks()
    restored = (torch.compile, scaler.__dict__["step"], scaler.__dict__["scale"])
    assert all(r is o for r, o in zip(restored, originals, strict=True))
