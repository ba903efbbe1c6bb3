"""ckpt/sharded.py under torchrun without the probe: `fsdp_roundtrip.py FOLDER`.

For FSDP2 (``fully_shard``) and FSDP1 (``FullyShardedDataParallel`` on the CPU) in turn: train
3 steps, save (``keep=1``), train 4, restore, train 4 again: the losses must repeat bit for bit;
a second save prunes the first folder. Then a model of another width is refused on every rank
(``DoesNotFit``) with nothing changed. Prints ``ok API`` per API on each rank; raises otherwise.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tuidebug.ckpt.errors import DoesNotFit
from tuidebug.ckpt.sharded import restore_sharded, save_sharded

warnings.simplefilter("ignore")  # FSDP1 and DCP warn of deprecations on every call
dist.init_process_group("gloo")
rank = dist.get_rank()
root = Path(sys.argv[1])


def build(api: str, width: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.ReLU(), torch.nn.Linear(width, 1))
    if api == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(net, device_id=torch.device("cpu"), use_orig_params=True)
    from torch.distributed.fsdp import fully_shard

    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(net)
    return net


def check(api: str) -> None:
    folder = root / api
    model = build(api)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x = torch.randn(32, 8) + rank
    y = x.sum(1, keepdim=True)

    def train(n: int) -> list[float]:
        out = []
        for _ in range(n):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            out.append(loss.item())
        return out

    objects: dict[str, Any] = {"models": {"model": model}, "optimizers": {"optimizer": opt}}
    train(3)
    first = save_sharded(folder, **objects, schedulers={"s": sched}, step=3, epoch=None, keep=1)
    assert first.ok, first.error
    after = train(4)
    state = restore_sharded(first.path, **objects, schedulers={"s": sched})
    assert state["step"] == 3
    assert train(4) == after, api
    second = save_sharded(folder, **objects, schedulers={"s": sched}, step=7, epoch=None, keep=1)
    assert second.ok, second.error
    dist.barrier()
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "manifest.json",
        "step-00000007.dcp",
    ], sorted(folder.iterdir())
    other = build(api, width=12)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.01)
    before = [p.detach().clone() for p in other.parameters()]
    try:
        restore_sharded(second.path, models={"model": other}, optimizers={"o": other_opt})
    except DoesNotFit as refused:  # every rank checks its own against the same metadata
        assert refused.diff.shape_mismatches, refused.diff
    else:
        raise AssertionError("a model of another width was restored")
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters(), strict=True))
    print(f"ok {api}", flush=True)


for api in ("fsdp2", "fsdp1"):
    check(api)
dist.destroy_process_group()
