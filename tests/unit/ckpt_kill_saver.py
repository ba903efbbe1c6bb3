"""Kill-during-save harness (run as a subprocess by test_ckpt_save.py).

Imports torch once, then forks a child that saves checkpoints in a loop (``save_now`` with
``keep=2``) and SIGKILLs it at a random moment, ``--kills`` times. After each kill it checks,
with plain Python (no torch op in this parent, so forking stays safe):

* every file under a final name is a complete zip archive (CRC of every member checks out);
* every manifest entry's file exists and matches its sha256, and after the first save there is
  always at least one such entry (the previous checkpoint survived);
* leftover temporary files are removed by ``clean_temp_files``.

Prints one JSON report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
import zipfile
from pathlib import Path

import torch  # imported before forking so that children start fast

from tuidebug.ckpt.save import clean_temp_files, read_manifest, verify


def child(folder: Path, start_step: int) -> None:
    from torch import nn

    from tuidebug.ckpt.save import save_now

    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 512), nn.Linear(512, 256))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = start_step
    while True:
        step += 1
        r = save_now(
            folder,
            models={"m": model},
            optimizers={"o": opt},
            step=step,
            epoch=0,
            metadata={"loss": 1.0 / step},
            keep=2,
        )
        if not r.ok:
            os._exit(3)


def warm_up() -> None:
    """Pay the one-time costs (lazy imports, first save) once, before forking."""
    import io

    from torch import nn

    from tuidebug.ckpt.save import capture_training_state

    torch.set_num_threads(1)
    model = nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = capture_training_state(models={"m": model}, optimizers={"o": opt}, step=0, epoch=0)
    torch.save(state, io.BytesIO())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    folder = Path(args.folder)
    rng = random.Random(args.seed)
    report: dict[str, object] = {"kills": 0, "temp_seen": 0, "errors": [], "final_files": 0}
    errors: list[str] = report["errors"]  # type: ignore[assignment]
    warm_up()
    for i in range(args.kills):
        pid = os.fork()
        if pid == 0:
            try:
                child(folder, i * 1000)
            finally:
                os._exit(1)
        # The first round waits for a first save; later ones kill at any moment.
        delay = 0.3 if i == 0 else rng.uniform(0.0, 0.2)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status):
            errors.append(f"round {i}: saver exited with {os.WEXITSTATUS(status)}")
        report["kills"] = int(report["kills"]) + 1  # type: ignore[call-overload]
        names = os.listdir(folder)
        if any(".tmp." in n for n in names):
            report["temp_seen"] = int(report["temp_seen"]) + 1  # type: ignore[call-overload]
        for n in names:
            if n.endswith(".pt") and not n.startswith("."):
                try:
                    with zipfile.ZipFile(folder / n) as zf:
                        bad = zf.testzip()
                    if bad is not None:
                        errors.append(f"round {i}: {n}: member {bad} corrupt")
                except Exception as exc:
                    errors.append(f"round {i}: {n}: partial file under a final name ({exc})")
        entries = read_manifest(folder)
        if not entries:
            errors.append(f"round {i}: manifest empty or damaged")
        for v in verify(folder):
            if not v.ok:
                errors.append(f"round {i}: {v.file}: {v.reason}")
        clean_temp_files(folder)
        if any(".tmp." in n for n in os.listdir(folder)):
            errors.append(f"round {i}: temporary files left after clean_temp_files")
    report["final_files"] = len([n for n in os.listdir(folder) if n.endswith(".pt")])
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
