"""Each rank's own random generators, beside a job's checkpoint (a torchrun job only).

Under DDP the model and optimizer are the same on every rank, so the checkpoints extension
writes them once, on rank 0; but every rank draws its own random numbers (dropout, noise, data
order), and a job resumes exactly only if each rank gets its own generators back. The
supervisor (supervisor/ranks.py) pauses every rank at one step, has rank 0 save, then sends
every rank ``rank-rng-save`` with the checkpoint's path: each writes ``PATH.ranks/rank-R.pt``
(atomically, loadable with ``weights_only=True``). After a restore of that checkpoint on every
rank it sends ``rank-rng-restore``: each rank sets its generators from its own file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuidebug.wire.messages import Command, Notice

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe

RNG_SAVE, RNG_RESTORE = "rank-rng-save", "rank-rng-restore"


class RankRng:
    """The two actions, on the training thread while every rank is paused at one step."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def save(self, command: Command) -> None:
        from tuidebug.ckpt.save import rank_state_error

        probe = self.probe
        error = rank_state_error(
            command.args.get("path", ""),
            rank=probe.rank,
            world_size=probe.world_size,
            step=probe.step,
        )
        if error:
            self._notice("error", f"rank {probe.rank}: RNG states not saved: {error}")
        else:
            self._notice("info", f"rank {probe.rank}: RNG states saved at step {probe.step:,}")

    def restore(self, command: Command) -> None:
        from tuidebug.ckpt.rng import rank_state_file, restore_rank_rng

        probe = self.probe
        path = command.args.get("path", "")
        try:
            notes = restore_rank_rng(path, probe.rank)
        except Exception as failure:
            self._notice("error", f"rank {probe.rank}: RNG states not restored: {failure}")
            return
        if notes is None:
            source = rank_state_file(path, probe.rank)
            self._notice("warning", f"rank {probe.rank}: no RNG states of its own at {source}")
            return
        suffix = f" ({'; '.join(notes)})" if notes else ""
        self._notice("info", f"rank {probe.rank}: RNG states restored{suffix}")

    def _notice(self, level: str, text: str) -> None:
        probe = self.probe
        probe.send(Notice(rank=probe.rank, step=probe.step, level=level, text=text))


def install(probe: Probe, options: dict[str, Any]) -> None:
    if probe.world_size <= 1:
        return  # one process: its checkpoint holds its generators already
    actions = RankRng(probe)
    probe.gate.add_action(RNG_SAVE, actions.save)
    probe.gate.add_action(RNG_RESTORE, actions.restore)
