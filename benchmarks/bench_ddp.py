"""What tuidebug costs a torchrun job, per rank, and what its supervisor costs as ranks grow.

Two measurements, both with real processes (torch's own launcher, gloo on CPU):

- ``overhead`` (the default): a 2-rank DDP job of the 8 x (Linear(256,256)+ReLU) +
  Linear(256,10) MLP of ``bench_probe_overhead.py`` (batch 128 per rank, Adam), run bare
  (``python -m torch.distributed.run --standalone``) and under ``tuidebug run --detach
  --nproc-per-node 2`` (probe at its default budget in every rank, one supervisor, no console),
  in pairs whose order is shuffled; each job times its own steps after a warm-up and writes
  every rank's median. The figure is the median over pairs of (tuidebug job / bare job) of the
  mean of the ranks' median step times (a pair runs back to back, so the machine's drift over
  minutes cancels), beside the pooled medians. A job's start-up (the launcher, the supervisor)
  is not timed: it is paid once per run.
- ``--supervisor-share``: jobs of 1, 2, 4 and 8 ranks of a tiny model (Linear(8,16)+ReLU+
  Linear(16,1), as tests/scripts/ddp_steady.py) under ``tuidebug run --detach``; the CPU time
  of the supervisor process (read from /proc while it lives) against that of the ranks (each
  reports its own at its end). Printed: both, the supervisor's share, and its CPU time per
  rank-step, which stays flat when its work grows linearly with the ranks.

    .venv/bin/python benchmarks/bench_ddp.py [--pairs 6] [--steps 300] [--warmup 60]
    .venv/bin/python benchmarks/bench_ddp.py --supervisor-share [--steps 400] [--ranks 1,2,4,8]

The same file is the job (``--job OUT``): the launcher runs it in every rank.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
TUIDEBUG = [sys.executable, "-m", "tuidebug.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


# --------------------------------------------------------------------------- the job (each rank)


def job(out: str, steps: int, warmup: int, tiny: bool) -> None:
    """One rank's training: time each step after ``warmup``; write its figures to OUT.rank-R."""
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)  # ranks share the cores: one thread each, as a launcher advises
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    if tiny:
        layers: list[nn.Module] = [nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)]
        x, y = torch.randn(32, 8), torch.randn(32, 1)
        loss_fn: Any = nn.functional.mse_loss
    else:
        layers = []
        for _ in range(8):
            layers += [nn.Linear(256, 256), nn.ReLU()]
        layers.append(nn.Linear(256, 10))
        x, y = torch.randn(128, 256), torch.randint(0, 10, (128,))
        loss_fn = nn.functional.cross_entropy
    model = DistributedDataParallel(nn.Sequential(*layers))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times: list[float] = []
    for step in range(steps):
        start = time.perf_counter()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    dist.barrier()
    dist.destroy_process_group()
    cpu = os.times()
    figures = {
        "rank": rank,
        "median_s": statistics.median(times) if times else 0.0,
        "steps": steps,
        "cpu_s": cpu.user + cpu.system,
    }
    Path(f"{out}.rank-{rank}").write_text(json.dumps(figures))


# --------------------------------------------------------------------------- the driver


def _job_args(out: Path, steps: int, warmup: int, tiny: bool) -> list[str]:
    args = [str(HERE), "--job", str(out), "--steps", str(steps), "--warmup", str(warmup)]
    return [*args, "--tiny"] if tiny else args


def _collect(out: Path, ranks: int, timeout: float = 600) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    files = [Path(f"{out}.rank-{rank}") for rank in range(ranks)]
    while not all(f.exists() for f in files):
        if time.monotonic() > deadline:
            raise SystemExit(f"the job writing {out} did not finish")
        time.sleep(0.1)
    time.sleep(0.05)  # written in one call; let the last one be closed
    return [json.loads(f.read_text()) for f in files]


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, from /proc (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TUIDEBUG_RUN_ID", None)
    return env


def run_bare(out: Path, ranks: int, steps: int, warmup: int, tiny: bool) -> list[dict[str, Any]]:
    command = [*TORCHRUN, f"--nproc-per-node={ranks}", *_job_args(out, steps, warmup, tiny)]
    subprocess.run(command, check=True, capture_output=True, env=_env(), timeout=600)
    return _collect(out, ranks)


def run_tuidebug(
    out: Path, ranks: int, steps: int, warmup: int, tiny: bool
) -> tuple[list[dict[str, Any]], float | None]:
    """The job under ``tuidebug run --detach``; also the supervisor's CPU seconds, last read."""
    from tuidebug.paths import find_run

    command = [*TUIDEBUG, "run", "--detach", "--nproc-per-node", str(ranks)]
    started = subprocess.run(
        [*command, *_job_args(out, steps, warmup, tiny)],
        check=True,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    run_id = started.stdout.split()[2]  # "tuidebug: run <id> started (...)"
    paths = find_run(run_id)
    assert paths is not None, started.stdout
    supervisor: int | None = None
    cpu: float | None = None
    deadline = time.monotonic() + 600
    files = [Path(f"{out}.rank-{rank}") for rank in range(ranks)]
    written: float | None = None  # when every rank's figures were there
    while time.monotonic() < deadline:
        if supervisor is None:
            pid = paths.read_meta().get("supervisor_pid")
            supervisor = pid if isinstance(pid, int) and pid > 0 else None
        if supervisor is not None:
            seen = _cpu_seconds(supervisor)
            if seen is None:
                break  # the supervisor has ended with the job
            cpu = seen
        if written is None and all(f.exists() for f in files):
            written = time.monotonic()
        if written is not None and time.monotonic() - written > 10:
            break  # the ranks are done; a supervisor still up after that is not ours to wait on
        time.sleep(0.1)
    return _collect(out, ranks), cpu


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-ddp-"))
    bare: list[float] = []
    probed: list[float] = []
    ratios: list[float] = []
    for pair in range(args.pairs):
        order = ["bare", "tuidebug"]
        random.shuffle(order)
        figures: dict[str, float] = {}
        for kind in order:
            out = folder / f"{pair}-{kind}"
            if kind == "bare":
                results = run_bare(out, 2, args.steps, args.warmup, tiny=False)
            else:
                results, _cpu = run_tuidebug(out, 2, args.steps, args.warmup, tiny=False)
            figures[kind] = statistics.mean(r["median_s"] for r in results)
        bare.append(figures["bare"])
        probed.append(figures["tuidebug"])
        ratios.append(figures["tuidebug"] / figures["bare"])
        print(
            f"pair {pair + 1}/{args.pairs}: bare {figures['bare'] * 1e3:.2f} ms, "
            f"tuidebug {figures['tuidebug'] * 1e3:.2f} ms, {ratios[-1]:.3f}x",
            flush=True,
        )
    return {
        "ranks": 2,
        "steps": args.steps,
        "warmup": args.warmup,
        "bare_ms": statistics.median(bare) * 1e3,
        "tuidebug_ms": statistics.median(probed) * 1e3,
        "pooled_ratio": statistics.median(probed) / statistics.median(bare),
        "paired_ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def supervisor_share(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-ddp-share-"))
    rows = []
    for ranks in (int(r) for r in args.ranks.split(",")):
        out = folder / f"ranks-{ranks}"
        results, supervisor_cpu = run_tuidebug(out, ranks, args.steps, 0, tiny=True)
        ranks_cpu = sum(r["cpu_s"] for r in results)
        sup = supervisor_cpu or 0.0
        rows.append(
            {
                "ranks": ranks,
                "supervisor_cpu_s": sup,
                "ranks_cpu_s": ranks_cpu,
                "share": sup / (sup + ranks_cpu) if sup + ranks_cpu else 0.0,
                "supervisor_ms_per_rank_step": sup / (ranks * args.steps) * 1e3,
            }
        )
        row = rows[-1]
        print(
            f"{ranks} ranks: supervisor {sup:.2f} s CPU, ranks {ranks_cpu:.2f} s, "
            f"share {row['share']:.1%}, {row['supervisor_ms_per_rank_step']:.3f} ms per rank-step",
            flush=True,
        )
    return {"steps": args.steps, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--supervisor-share", action="store_true")
    parser.add_argument("--ranks", default="1,2,4,8", help="job sizes for --supervisor-share")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.job:
        job(args.job, args.steps, args.warmup, args.tiny)
        return 0
    if args.supervisor_share:
        results = supervisor_share(args)
    else:
        results = overhead(args)
        print(
            f"2-rank DDP, 8x256 MLP, gloo, CPU: bare {results['bare_ms']:.2f} ms/step, "
            f"tuidebug {results['tuidebug_ms']:.2f} ms/step; "
            f"paired {results['paired_ratio']:.3f}x, "
            f"pooled {results['pooled_ratio']:.3f}x (target <= 1.02x)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
