"""The supervisor's GPU extension through a real ``tuidebug run --detach``.

For real here (this machine has no GPU: the calm reason must reach a console), and against the
stand-in NVML module (``tuidebug.gpu.standin``, injected with TUIDEBUG_GPU_STANDIN): two GPUs,
one lacking a function, the script's own pid listed on GPU 0.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from support import ROOT, start_detached

from tuidebug.paths import find_run
from tuidebug.wire.client import RunConnection
from tuidebug.wire.gpu_messages import GpuStats

STEADY = ROOT / "tests" / "scripts" / "steady.py"


async def first_gpu_stats(run_id: str, count: int = 1) -> list[GpuStats]:
    paths = find_run(run_id)
    assert paths is not None
    connection = await RunConnection.open(paths)
    seen: list[GpuStats] = []
    try:
        async with asyncio.timeout(20):
            async for batch in connection.batches():
                seen += [m for m in batch if isinstance(m, GpuStats)]
                if len(seen) >= count:
                    return seen
    finally:
        connection.close()
    return seen


def test_no_gpu_here_gives_one_calm_reason_and_the_run_processes(
    run_env: dict[str, str],
) -> None:
    run_id = start_detached(STEADY, "300", "0.01", "--gpu-interval", "0.3")
    stats = asyncio.run(first_gpu_stats(run_id, count=2))
    latest = stats[-1]
    assert latest.snapshot.devices == []
    assert latest.snapshot.reason  # NVML's own words (no driver / library here)
    assert latest.snapshot.host.ram_total > 0
    paths = find_run(run_id)
    assert paths is not None
    script_pid = paths.read_meta()["pid"]
    assert script_pid in latest.own_pids
    (own,) = [p for p in latest.processes if p.pid == script_pid]
    assert own.rss > 0
    # Logged once, not once per poll.
    log = paths.supervisor_log.read_text()
    assert log.count(f"GPU: {latest.snapshot.reason}") == 1


def test_standin_gpus_with_own_process_and_a_missing_function(
    run_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gib = 1 << 30
    spec = {
        "gpus": [
            {
                "memory_used": 6 * gib,
                "utilization": 87,
                "processes": [
                    {"pid": "script", "used_memory": 5 * gib},
                    {"pid": 999_999, "used_memory": gib, "name": "other"},
                ],
            },
            {"name": "NVIDIA H100 80GB HBM3", "memory_used": gib},
        ],
        "missing": ["nvmlDeviceGetPowerUsage"],
    }
    monkeypatch.setenv("TUIDEBUG_GPU_STANDIN", json.dumps(spec))
    run_id = start_detached(STEADY, "300", "0.01", "--gpu-interval", "0.3")
    (stats,) = asyncio.run(first_gpu_stats(run_id))
    snap = stats.snapshot
    assert snap.reason is None
    assert [d.memory_used for d in snap.devices] == [6 * gib, gib]
    assert snap.devices[0].utilization == 87
    assert snap.devices[1].name == "NVIDIA H100 80GB HBM3"
    assert all(d.power_w is None for d in snap.devices)  # the missing function: N/A, no crash
    pids = {p.pid for p in snap.devices[0].processes}
    paths = find_run(run_id)
    assert paths is not None
    script_pid = paths.read_meta()["pid"]
    assert script_pid in pids and script_pid in stats.own_pids
    assert 999_999 not in stats.own_pids
