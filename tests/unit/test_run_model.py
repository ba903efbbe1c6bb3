"""RunModel folds wire messages into what the console shows."""

from __future__ import annotations

import math

from tuidebug.console.run_model import RunModel
from tuidebug.wire.messages import (
    HistoryDone,
    ModelSeen,
    Output,
    RunInfo,
    ScriptError,
    StepPoint,
    Steps,
)


def info(state: str = "running", **extra: object) -> RunInfo:
    return RunInfo(
        run_id="r1",
        script="train.py",
        args=[],
        cwd="/",
        started=100.0,
        state=state,
        **extra,  # type: ignore[arg-type]
    )


def steps(start: int, count: int, rank: int = 0, dt: float = 0.01) -> Steps:
    points = [
        StepPoint(s, 100.0 + s * dt, 1.0 / s, {"lr": 0.1, "grad_norm": float(s)})
        for s in range(start, start + count)
    ]
    return Steps(rank=rank, step=points[-1].step, points=points)


def test_steps_fill_loss_scalars_and_counters() -> None:
    model = RunModel()
    model.fold([info(), steps(1, 100), HistoryDone(steps=100)])
    assert model.step == 100 and model.steps_seen == 100
    assert math.isclose(model.last_loss or 0, 0.01)
    assert len(model.loss) == 100
    assert set(model.scalars) == {"lr", "grad_norm"}
    assert model.scalars["grad_norm"].last == 100.0
    assert model.history_loaded and model.state == "running"


def test_steps_per_second_comes_from_the_probe_timestamps() -> None:
    model = RunModel()
    model.fold([info()])
    for start in range(1, 1001, 100):
        model.fold([steps(start, 100, dt=0.001)])
    rate = model.steps_per_second()
    assert rate is not None and 990 < rate < 1010


def test_other_ranks_do_not_mix_into_rank_zero_charts() -> None:
    model = RunModel()
    model.fold([info(), steps(1, 10), steps(1, 50, rank=1)])
    assert model.step == 10 and len(model.loss) == 10


def test_endings_and_errors() -> None:
    model = RunModel()
    error = ScriptError(step=5, exc_type="ValueError", text="boom", traceback="Traceback")
    model.fold([info(), steps(1, 5), error, info("crashed", exit_code=1, ended=110.0)])
    assert model.ended and model.state == "crashed" and model.error == error
    assert model.elapsed() == 10.0


def test_connection_lost_while_running_is_its_own_state() -> None:
    model = RunModel()
    model.fold([info()])
    model.mark_connection_lost()
    assert model.state == "lost" and not model.ended
    finished = RunModel()
    finished.fold([info("finished", exit_code=0, ended=101.0)])
    finished.mark_connection_lost()
    assert finished.state == "finished"


def test_output_and_models_are_kept_and_version_moves() -> None:
    model = RunModel()
    before = model.version
    model.fold(
        [
            Output(data=b"hello\n"),
            ModelSeen(name="model", class_name="MLP", parameters=10, trainable=10, modules=3),
        ]
    )
    assert model.version > before
    assert list(model.output.lines) == ["hello"] and model.models[0].class_name == "MLP"
