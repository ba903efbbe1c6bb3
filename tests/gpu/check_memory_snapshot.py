"""Check the CUDA memory snapshot on a machine with a GPU. Not a pytest test.

    python tests/gpu/check_memory_snapshot.py [--steps 3] [--keep]

What it does, printing a report as it goes:

1. writes a tiny CUDA training script into a temporary folder (an MLP whose forward keeps two
   large activations on one marked line) and starts it with ``tuidebug run --detach``;
2. runs ``tuidebug memory RUN --steps 3 --json`` (and the same without ``--json``, printed) and
   checks: exit status 0, the answer's steps are 3, the pickle exists in the run folder's
   ``memory/``, ``pickle.load`` reads it, torch's own ``_memory_viz`` reads it (``segsum``,
   ``trace_plot``: what https://pytorch.org/memory_viz shows), its device trace has allocations,
   and the top allocation site with a Python stack is in the script (the marked forward line's
   rank is noted);
3. tells the script to stop; the script then allocates a marker tensor, takes a snapshot itself
   and reports whether the marker was recorded: it must not be (the probe stopped recording
   after its 3 steps: it ended by itself). The script must exit 0 (the run was not hurt).

``--dry-run`` runs the same flow without a GPU (the training on the CPU): it checks the plumbing
(the run, the command's calm no-CUDA answer with exit status 3, the script's end) before GPU time
is spent on it.

Exit status: 0 when every check passes, and also when there is no CUDA GPU here (it says so and
stops); 1 when a check fails. Importing this file does nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Runnable from a checkout without installing the package.
ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("tuidebug") is None:
    sys.path.insert(0, str(ROOT))

TUIDEBUG = [sys.executable, "-m", "tuidebug.cli"]
SCRIPT_NAME = "tiny_cuda_train.py"
MARK = "# <- the forward's big activations"
MARKER_BYTES = 123 * (1 << 20) + 4096  # an odd size: the allocator rounds it, nothing else has it

TRAIN = f'''"""A tiny CUDA training loop for check_memory_snapshot.py (written by it)."""
import json, os, sys, time
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(512, 8192)
        self.down = torch.nn.Linear(8192, 512)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.up(x)) * torch.sigmoid(self.up(x))  {MARK}
        return self.down(h)

def main():
    stop, out = sys.argv[1], sys.argv[2]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: --dry-run
    torch.manual_seed(0)
    model = Net().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2048, 512, device=device)
    y = torch.randn(2048, 512, device=device)
    for step in range(20000):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 and os.path.exists(stop):
            break
        time.sleep(0.01)
    recorded = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        marker = torch.empty({MARKER_BYTES}, dtype=torch.uint8, device=device)
        data = torch.cuda.memory._snapshot()
        recorded = any(
            e.get("action") == "alloc" and e.get("size", 0) >= {MARKER_BYTES}
            and any("{SCRIPT_NAME}" in f.get("filename", "") for f in e.get("frames", []))
            for trace in data.get("device_traces", []) for e in trace
        )
        del marker
    with open(out, "w") as f:
        json.dump({{"steps": step + 1, "marker_recorded": recorded}}, f)

main()
'''


@dataclass
class Report:
    failures: int = 0

    def check(self, name: str, ok: bool, detail: str) -> bool:
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        if not ok:
            self.failures += 1
        return ok

    def note(self, name: str, detail: str) -> None:
        print(f"[NOTE] {name}: {detail}", flush=True)


def _tuidebug(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Any:
    return subprocess.run(
        [*TUIDEBUG, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def check_snapshot_file(report: Report, answer: dict[str, Any], folder: Path) -> None:
    import torch
    from torch.cuda import _memory_viz

    path = Path(answer["path"])
    report.check("the snapshot is in the run folder", path.parent == folder / "memory", str(path))
    if not report.check("the snapshot file exists", path.is_file(), f"{answer['file_bytes']} B"):
        return
    with open(path, "rb") as f:
        data = pickle.load(f)
    report.check(
        "pickle.load reads a snapshot",
        isinstance(data, dict) and "segments" in data and "device_traces" in data,
        f"keys {sorted(data)[:6]}",
    )
    allocs = sum(1 for t in data["device_traces"] for e in t if e.get("action") == "alloc")
    report.check("its trace has allocations", allocs > 0, f"{allocs} allocs")
    summary = _memory_viz.segsum(data)
    html = _memory_viz.trace_plot(data)
    report.check(
        "torch's _memory_viz reads it",
        "segments" in summary and "<html>" in html.lower(),
        f"segsum {len(summary)} chars, trace_plot {len(html)} chars",
    )
    del torch


def check_sites(report: Report, answer: dict[str, Any], script: Path) -> None:
    """The top site with a Python stack is in the script (allocations made on the autograd
    engine's device thread have none: they are no site, set aside here)."""
    from tuidebug.probe.memory_sites import NO_STACK

    line = next(i for i, text in enumerate(script.read_text().splitlines(), 1) if MARK in text)
    stacked = [s for s in answer["sites"] if s["site"] != NO_STACK]
    if not report.check("sites with a Python stack", bool(stacked), f"{len(stacked)}"):
        return
    top = stacked[0]
    report.check(
        "the top site is in the script",
        top["site"].startswith(f"{SCRIPT_NAME}:") and top["user"],
        f"{top['site']} (peak {top['peak'] / (1 << 20):.1f} MiB)",
    )
    names = [s["site"] for s in answer["sites"]]
    forward = f"{SCRIPT_NAME}:{line} in forward"
    report.note(
        "the marked forward line",
        f"rank {names.index(forward) + 1} of {len(names)}" if forward in names else "not listed",
    )
    if NO_STACK in names:
        report.note("no-stack allocations (autograd's thread)", f"rank {names.index(NO_STACK) + 1}")


def run_check(steps: int, keep: bool, dry_run: bool = False) -> int:
    import torch

    if not torch.cuda.is_available() and not dry_run:
        print("no CUDA GPU here (torch.cuda.is_available() is False): nothing to check")
        return 0
    from tuidebug.memory_cli import NO_CUDA_EXIT

    report = Report()
    base = Path(tempfile.mkdtemp(prefix="td-memcheck-"))
    env = {
        **os.environ,
        "TUIDEBUG_HOME": str(base / "home"),
        "TUIDEBUG_RUNTIME_DIR": str(base / "rt"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    script = base / SCRIPT_NAME
    script.write_text(TRAIN)
    stop, out = base / "stop", base / "out.json"
    launched = False
    try:
        started = _tuidebug(
            ["run", "--detach", str(script), str(stop), str(out)], env, base, timeout=60
        )
        if not report.check(
            "tuidebug run --detach", started.returncode == 0, started.stderr[-300:]
        ):
            return 1
        launched = True
        run_id = started.stdout.split()[2]
        folder = base / "home" / "runs" / run_id
        meta = folder / "meta.json"
        _wait(
            lambda: (
                meta.exists() and Path(json.loads(meta.read_text()).get("socket", "/-")).exists()
            ),
            60,
        )
        time.sleep(2)  # a few steps (the command waits for a step boundary anyway)
        t0 = time.perf_counter()
        proc = _tuidebug(
            ["memory", run_id, "--steps", str(steps), "--json"], env, base, timeout=300
        )
        took = time.perf_counter() - t0
        if dry_run:
            calm = json.loads(proc.stdout)[0]["unavailable"] if proc.stdout else ""
            report.check(
                f"without CUDA: tuidebug memory exits {NO_CUDA_EXIT}, calmly",
                proc.returncode == NO_CUDA_EXIT and bool(calm),
                f"exit {proc.returncode}: {calm or proc.stderr.strip()[-300:]}",
            )
        elif report.check(
            "tuidebug memory --json exits 0", proc.returncode == 0, proc.stderr.strip()[-300:]
        ):
            (answer,) = json.loads(proc.stdout)
            report.check(
                f"the snapshot covers {steps} steps",
                answer["last"] - answer["first"] + 1 == steps,
                f"steps {answer['first']}-{answer['last']}, {took:.1f} s for the command, "
                f"{answer['overhead_s']:.2f} s at the boundary",
            )
            check_snapshot_file(report, answer, folder)
            check_sites(report, answer, script)
            text = _tuidebug(["memory", run_id, "--steps", "1"], env, base, timeout=300)
            print(text.stdout, flush=True)
            report.check("tuidebug memory (text) exits 0", text.returncode == 0, text.stderr[-300:])
        stop.write_text("stop")
        ended = _wait(lambda: out.exists(), timeout=120)
        if report.check("the script ran to its end", ended, str(out)):
            result = json.loads(out.read_text())
            if not dry_run:
                report.check(
                    "recording stopped by itself (a later allocation is not in the history)",
                    result["marker_recorded"] is False,
                    f"{result['steps']} steps run",
                )
        _wait(lambda: json.loads(meta.read_text()).get("state") != "running", timeout=60)
        state = json.loads(meta.read_text())
        report.check(
            "the script exited 0",
            state.get("exit_code") == 0,
            f"state {state.get('state')}, exit code {state.get('exit_code')}",
        )
    finally:
        if launched and not stop.exists():  # a check raised: let the script end, then clean up
            stop.write_text("stop")
            _wait(lambda: out.exists(), timeout=120)
        if keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("all checks passed." if not report.failures else f"{report.failures} check(s) failed.")
    return 1 if report.failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="steps to snapshot (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--dry-run", action="store_true", help="the same flow on the CPU, no GPU needed"
    )
    args = parser.parse_args(argv)
    return run_check(args.steps, args.keep, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
