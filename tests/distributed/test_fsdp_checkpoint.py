"""Save now and restore of a sharded model, for real: `tuidebug run --detach --nproc-per-node 2`
of tests/scripts/fsdp_steady.py (FSDP2's ``fully_shard`` over gloo on the CPU, Adam, StepLR,
noise of each rank's own), driven over the supervisor's socket as a console does.

Pause at a, save (every rank writes its shards with torch.distributed.checkpoint into one
folder), run to a+4, restore, run to a+4 again: the four losses after the restore equal those
after the save, bit for bit, on every rank. Then ``tuidebug ckpt ls/show/verify`` read the
folder without ``--trust-dcp``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, wait_for
from test_torchrun import Console, ended, rng_notices, span_losses, start_job

from tuidebug.ckpt.cli import main as cli_main
from tuidebug.wire.checkpoint_messages import CheckpointRestored, CheckpointSaved
from tuidebug.wire.messages import Notice

FSDP = ROOT / "tests" / "scripts" / "fsdp_steady.py"
ROUNDTRIP = ROOT / "tests" / "scripts" / "fsdp_roundtrip.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
SPAN = 4


def test_fsdp2_save_and_restore_on_every_rank_bit_for_bit(
    run_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    def ckpt(*args: str) -> tuple[int, str]:
        """``tuidebug ckpt ARGS``, in this process (a torch import less than a subprocess)."""
        capsys.readouterr()
        code = cli_main(list(args))
        return code, capsys.readouterr().out

    paths = start_job(2, "3000", "0.004", script=FSDP)
    wait_for(lambda: paths.read_meta().get("state") == "running", 120, what="running")
    saved_at: list[CheckpointSaved] = []

    async def drive() -> None:
        console = await Console.open(paths)
        try:
            await console.until(
                "steps", lambda: len(console.latest) == 2 and min(console.latest.values()) > 5
            )
            console.send("pause")
            paused = await console.all_paused(2, 0)
            at = {p.step for p in paused.values()}
            assert len(at) == 1, paused
            a = at.pop()
            # The checks run without the rules that read parameters (a DTensor's read-back
            # made the whole engine stop, loss rules included).
            sharded = {n.rank for n in console.of(Notice, 0) if "is sharded" in n.text}
            assert sharded == {0, 1}

            mark = len(console.messages)
            console.send("ckpt-save")
            saved = (await console.until("the save", lambda: console.of(CheckpointSaved, mark)))[0]
            assert saved.ok and saved.rank == 0 and saved.step == a, saved
            assert Path(saved.path).name == f"step-{a:08d}.dcp" and saved.size > 0
            saved_at.append(saved)
            await console.until("RNG saved", lambda: rng_notices(console, mark, "saved") == {0, 1})

            console.send("run-to", step=str(a + SPAN))
            await console.all_paused(2, mark + 1)
            await console.until(
                "steps after the save", lambda: console.latest == {0: a + 4, 1: a + 4}
            )
            first = span_losses(console, mark, a, SPAN)
            assert len(first[0]) == len(first[1]) == SPAN
            assert first[0] != first[1]  # each rank's own noise, its own shards

            mark = len(console.messages)
            console.send("ckpt-restore", path=saved.path)
            await console.until(
                "both restored", lambda: len(console.of(CheckpointRestored, mark)) == 2
            )
            restored = console.of(CheckpointRestored, mark)
            assert all(r.ok and r.step == a for r in restored), restored
            assert "1 optimizer(s)" in restored[0].restored
            assert "1 scheduler(s)" in restored[0].restored
            await console.until(
                "RNG restored", lambda: rng_notices(console, mark, "restored") == {0, 1}
            )
            console.send("run-to", step=str(a + SPAN))
            await console.until(
                "the replay",
                lambda: all(len(v) == SPAN for v in span_losses(console, mark, a, SPAN).values()),
            )
            assert span_losses(console, mark, a, SPAN) == first  # every rank, bit for bit
            console.send("stop-run")
            await asyncio.sleep(0.3)
        finally:
            console.close()

    asyncio.run(asyncio.wait_for(drive(), 120))
    assert ended(paths)["state"] == "stopped"
    assert "checks stopped" not in paths.pty_log.read_text()
    saved = saved_at[0]
    folder = Path(saved.path)
    shards = sorted(p.name for p in folder.iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp", "training_state.pt"]
    assert sorted(p.name for p in folder.parent.glob(f"{folder.name}.ranks/*")) == [
        "rank-0.pt",
        "rank-1.pt",
    ]

    # The browser's commands read it without --trust-dcp: its metadata passes the allowlist.
    code, listed = ckpt("ls", "--json", str(folder.parent))
    assert code == 0
    [row] = [r for r in json.loads(listed) if r["name"] == folder.name]
    assert (row["format"], row["status"], row["step"], row["ranks"]) == ("dcp", "ok", saved.step, 2)
    assert row["size"] == saved.size
    code, shown = ckpt("show", "--json", str(folder))
    assert code == 0
    detail = json.loads(shown)
    tensors = {t["key"]: t["shape"] for t in detail["tensors"]}
    assert tensors["models.model.0.weight"] == [16, 8]  # the global shape, not one rank's
    assert tensors["optimizers.model.state.0.weight.exp_avg"] == [16, 8]
    assert detail["param_count"] == 16 * 8 + 16 + 16 + 1
    assert detail["metadata"]["metadata.reason"] == "manual"
    code, verified = ckpt("verify", str(folder.parent))
    assert code == 0, verified


def test_save_restore_prune_and_refusal_under_fsdp2_and_fsdp1(tmp_path: Path) -> None:
    """ckpt/sharded.py itself under plain torchrun, for both FSDP APIs (the script asserts)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [*TORCHRUN, str(ROUNDTRIP), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for api in ("fsdp2", "fsdp1"):
        assert proc.stdout.count(f"ok {api}") == 2, proc.stdout
