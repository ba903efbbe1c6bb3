"""The GPU check script's own logic, run here against a stand-in NVML and stand-in nvidia-smi rows.

The script is meant for a machine with a GPU; this test makes sure its comparison code runs and
judges correctly before it ever meets one. Its torch part notes "no CUDA" here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tuidebug.gpu.nvml import Nvml
from tuidebug.gpu.standin import GIB, StandInGpu, StandInNvml

SCRIPT = Path(__file__).resolve().parents[1] / "gpu" / "check_gpu_panel.py"


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_gpu_panel", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_gpu_panel", module)
    spec.loader.exec_module(module)  # importing it must do nothing but define things
    return module


def _rows(used_mib: int) -> list[dict[str, str]]:
    return [
        {
            "index": "0",
            "uuid": "GPU-standin-0000",
            "name": "NVIDIA H200",
            "memory.used": str(used_mib),
            "memory.total": str(141 * 1024),
            "utilization.gpu": "3",
            "temperature.gpu": "41",
            "power.draw": "[N/A]",
            "power.limit": "700.00",
        }
    ]


def _standin() -> StandInNvml:
    gpu = StandInGpu(
        name="NVIDIA H200",
        memory_total=141 * GIB,
        memory_used=3 * GIB,
        temperature=40,
        power_limit_mw=700_000,
    )
    return StandInNvml([gpu])


def _run(script: ModuleType, monkeypatch: pytest.MonkeyPatch, used_mib: int) -> int:
    monkeypatch.setattr(script, "Nvml", lambda: Nvml(module=_standin()))
    monkeypatch.setattr(script, "nvidia_smi", lambda: _rows(used_mib))
    # torch's CUDA part cannot run here; its "not available" note is checked elsewhere by hand.
    monkeypatch.setattr(script, "check_torch", lambda *args, **kwargs: None)
    result: int = script.main([])
    return result


def test_agreeing_numbers_pass(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(script, monkeypatch, used_mib=3 * 1024 + 10) == 0
    out = capsys.readouterr().out
    assert "[PASS] GPU 0 memory used" in out and "[PASS] GPU 0 memory total" in out
    assert "[PASS] GPU 0 temperature" in out and "[PASS] GPU 0 power limit" in out
    assert "all checks passed." in out


def test_disagreeing_memory_fails(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(script, monkeypatch, used_mib=5 * 1024) == 1
    assert "[FAIL] GPU 0 memory used" in capsys.readouterr().out


def test_no_gpu_here_exits_zero(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(script, "Nvml", lambda: Nvml(module=StandInNvml([], init_error=9)))
    assert script.main([]) == 0
    assert "no GPU here (NVML: Driver Not Loaded)" in capsys.readouterr().out
