"""Does the console keep up with a script doing 10,000+ steps a second?

Starts a real run (`tuidebug run --detach`) of a script that calls `dbg.step(loss=...)` as fast
as it can, and attaches the real Textual console to it headless (`App.run_test`), redrawing at
its normal frame rate. Reports the script's own step rate, whether the console saw every step,
and how far behind the console's data was at each frame (latency from the probe's timestamp of
a step to the frame that showed it).

    python benchmarks/bench_console_throughput.py [--steps N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = """
import sys, time, tuidebug
dbg = tuidebug.attach()
steps, rate = int(sys.argv[1]), float(sys.argv[2])
start = time.time()
for i in range(steps):
    dbg.step(loss=1.0 / (i + 1), lr=0.001)
    if rate and i % 100 == 0:  # pace to `rate` steps/s (0: as fast as possible)
        ahead = start + i / rate - time.time()
        if ahead > 0:
            time.sleep(ahead)
print(f"{steps / (time.time() - start):.0f} steps/s", flush=True)
"""


async def watch(run_id: str, steps: int) -> dict[str, float]:
    from tuidebug.console.app import TuidebugApp
    from tuidebug.paths import find_run

    paths = find_run(run_id)
    assert paths is not None
    app = TuidebugApp(paths)
    lags: list[float] = []
    frame_costs: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not app.model.ended:
            await pilot.pause(1 / 15)
            start = time.perf_counter()
            app.sync_screen()
            frame_costs.append(time.perf_counter() - start)
            if app.model.last_time is not None and app.model.state == "running":
                lags.append(time.time() - app.model.last_time)
        await pilot.pause(0.3)
    return {
        "seen": float(app.model.steps_seen),
        "lag_median": statistics.median(lags) if lags else float("nan"),
        "lag_max": max(lags) if lags else float("nan"),
        "frame_median_ms": statistics.median(frame_costs) * 1e3,
        "frames": float(len(frame_costs)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=10_000, help="steps/s; 0: unpaced")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tdb-", dir="/tmp") as tmp:
        os.environ["TUIDEBUG_HOME"] = f"{tmp}/h"
        os.environ["TUIDEBUG_RUNTIME_DIR"] = f"{tmp}/r"
        script = Path(tmp) / "fast.py"
        script.write_text(SCRIPT)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tuidebug.cli",
                "run",
                "--detach",
                str(script),
                str(args.steps),
                str(args.rate),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        run_id = proc.stdout.split()[2]
        result = asyncio.run(watch(run_id, args.steps))
        from tuidebug.paths import find_run

        paths = find_run(run_id)
        assert paths is not None
        rate = paths.pty_log.read_text().strip().splitlines()[-1]
    ok = result["seen"] == args.steps
    print(f"script: {rate} ({args.steps:,} dbg.step calls under the probe)")
    print(
        f"console saw {int(result['seen']):,} of {args.steps:,} steps: "
        + ("all" if ok else "MISSING SOME")
    )
    print(
        f"data latency at each frame: median {result['lag_median'] * 1e3:.0f} ms, "
        f"max {result['lag_max'] * 1e3:.0f} ms over {int(result['frames'])} frames"
    )
    print(f"frame sync cost: median {result['frame_median_ms']:.2f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
