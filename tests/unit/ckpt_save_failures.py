"""Saves that must fail cleanly (run as a subprocess by test_ckpt_save.py).

``full-disk FOLDER``: the file size limit (RLIMIT_FSIZE) is set below the checkpoint's size,
so writes fail with EFBIG the way they fail with ENOSPC on a full disk - without filling a disk.
``permission FOLDER``: the folder is not writable by this process (when started as root, the
test runs this as an unprivileged user, because root ignores permission bits).

Prints a JSON line with the SaveResult and the folder's contents afterwards.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

import torch
from torch import nn

from tuidebug.ckpt.save import save_now


def main() -> int:
    mode, folder = sys.argv[1], sys.argv[2]
    model = nn.Linear(512, 512)  # ~1 MiB of weights
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if mode == "full-disk":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    result = save_now(folder, models={"m": model}, optimizers={"o": opt}, step=2, epoch=0)
    print(
        json.dumps(
            {
                "ok": result.ok,
                "error": result.error,
                "path": result.path,
                "files": sorted(os.listdir(folder)),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
