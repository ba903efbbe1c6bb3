"""``--save-every`` and ``--resume`` in a torchrun job, for real (2 ranks, DDP over gloo, each
rank drawing noise of its own): every rank writes its own generators beside each periodic
checkpoint, and a new job resumed from one gives each rank its own back, so that both ranks'
losses after the resume equal the first job's, bit for bit. Before, only rank 0's generators
(inside the checkpoint) came back, on every rank: rank 1 drew rank 0's noise."""

from __future__ import annotations

from test_torchrun import ended, start_job, stored

from tuidebug.ckpt.rng import rank_state_files
from tuidebug.wire.checkpoint_messages import CheckpointRestored

EVERY, STEPS, AFTER = 10, 20, 6


def test_periodic_saves_keep_each_ranks_generators_and_resume_gives_them_back() -> None:
    first = start_job(2, str(STEPS), "0", "--noise", flags=("--save-every", str(EVERY)))
    assert ended(first)["state"] == "finished"
    folder = first.folder / "checkpoints"
    for step in (EVERY, 2 * EVERY):
        checkpoint = folder / f"step-{step:08d}.pt"
        assert checkpoint.is_file()
        assert sorted(rank_state_files(checkpoint)) == [0, 1]  # one file per rank, beside it
    before, _ = stored(first)
    assert before[0] != before[1]  # each rank its own noise

    resumed = start_job(
        2,
        str(AFTER),
        "0",
        "--noise",
        flags=("--resume", str(folder / f"step-{EVERY:08d}.pt")),
    )
    assert ended(resumed)["state"] == "finished"
    after, events = stored(resumed)
    restores = [e for e in events if isinstance(e, CheckpointRestored)]
    assert {r.rank for r in restores if r.ok and r.step == EVERY} == {0, 1}, restores
    for restore in restores:
        assert f"rank {restore.rank}: its own RNG states restored" in restore.notes
    # Probe steps EVERY+1 onwards after the resume: the first job's, rank by rank.
    for rank in (0, 1):
        replay = [(s, loss) for s, loss in after[rank] if s > EVERY]
        assert len(replay) == AFTER - 1, after[rank]
        assert replay == before[rank][EVERY : EVERY + AFTER - 1]
