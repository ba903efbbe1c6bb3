"""The compiled mixed-precision demo under the real ``tuidebug run --detach``, no change to it.

demos/amp_compile.py compiles its model (``torch.compile``, ``aot_eager``; ``model.compile()``
with ``--compile-method``), trains under bf16 autocast with a GradScaler, and poisons one
gradient with inf at ``--overflow-at`` (the scaler skips that step). Dynamo logs every graph
break and recompile into the run's output (``TORCH_LOGS``): the probe, with every extension a
run installs, must cause none.
"""

from __future__ import annotations

import os

import pytest
from framework_runs import DEMOS, history, start

from tuidebug.paths import find_run
from tuidebug.wire.layer_messages import NonFinite
from tuidebug.wire.messages import ModelSeen, Notice

DEMO = DEMOS / "amp_compile.py"


@pytest.mark.parametrize("method", [False, True], ids=["torch.compile", "model.compile"])
def test_compiled_amp_run_steps_skip_and_no_recompile(
    run_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, method: bool
) -> None:
    monkeypatch.setenv("TORCH_LOGS", "graph_breaks,recompiles")
    args = ["--steps", "30", "--overflow-at", "12"] + (["--compile-method"] if method else [])
    run_id = start(DEMO, *args)
    points, events = history(run_id)
    paths = find_run(run_id)
    assert paths is not None
    output = paths.pty_log.read_text(errors="replace")
    assert os.environ.get("TORCH_LOGS") == "graph_breaks,recompiles"
    assert "done: 30 steps" in output
    assert "Graph break" not in output and "Recompiling" not in output, output[-3000:]
    assert sorted(points) == list(range(1, 31))
    skipped = [s for s, p in points.items() if p.scalars.get("amp_skipped") == 1.0]
    assert skipped == [12]
    assert points[12].scalars["amp_scale"] == 65536.0
    assert points[13].scalars["amp_scale"] == 32768.0
    assert all(p.loss is not None and p.loss < 10 for p in points.values())  # unscaled
    assert not [e for e in events if isinstance(e, NonFinite)]
    assert [m.class_name for m in events if isinstance(m, ModelSeen)] == ["Regressor"]
    notes = [e.text for e in events if isinstance(e, Notice)]
    assert any("compiled" in n and "layer statistics are off" in n for n in notes)
