"""Helpers shared by the checkpoint tests: small models and real files of every format."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def small_model(out: int = 2) -> nn.Module:
    """A two-layer MLP (same key names for every ``out``, different shapes)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, out))


def trained(model: nn.Module, steps: int = 2) -> torch.optim.Optimizer:
    """An Adam optimizer with state, after a few steps on ``model``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        model(torch.randn(3, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    return opt


def make_torch_file(path: Path, *, legacy: bool = False) -> Path:
    sd = small_model().state_dict()
    torch.save(
        {"model": sd, "step": 7, "epoch": 1, "loss": 0.25},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    return path


def make_safetensors_file(path: Path) -> Path:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in small_model().state_dict().items()}
    save_file(sd, str(path), metadata={"step": "11", "loss": "0.5"})
    return path


def make_lightning_file(path: Path) -> Path:
    model = small_model()
    opt = trained(model)
    torch.save(
        {
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [],
            "callbacks": {},
            "loops": {},
        },
        path,
    )
    return path


def make_hf_folder(path: Path, *, weights: str = "safetensors") -> Path:
    path.mkdir(parents=True)
    sd = {k: v.contiguous() for k, v in small_model().state_dict().items()}
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(sd, path / "pytorch_model.bin")
    (path / "config.json").write_text(json.dumps({"model_type": "mlp"}))
    (path / "trainer_state.json").write_text(
        json.dumps(
            {
                "global_step": 500,
                "epoch": 1.5,
                "log_history": [{"loss": 0.9, "step": 250}, {"loss": 0.4, "step": 500}],
            }
        )
    )
    return path


def make_dcp_folder(path: Path) -> Path:
    import torch.distributed.checkpoint as dcp

    model = small_model()
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(path))
    return path


class Payload:
    """A pickle payload that creates ``target`` when unpickled (the attack we must never run)."""

    def __init__(self, target: Path, how: str = "system") -> None:
        self.target = target
        self.how = how

    def __reduce__(self) -> tuple[Any, ...]:
        if self.how == "system":
            return (os.system, (f"touch {self.target}",))
        if self.how == "open":
            return (open, (str(self.target), "w"))
        return (eval, (f"open({str(self.target)!r}, 'w').close()",))


def make_malicious_files(folder: Path, target: Path) -> list[Path]:
    """Files in several containers whose loading would create ``target``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for how in ("system", "open", "eval"):
        p = folder / f"evil_{how}.pt"
        torch.save({"model": small_model().state_dict(), "x": Payload(target, how)}, p)
        files.append(p)
    for proto in (2, 4, 5):
        p = folder / f"evil_raw_p{proto}.pth"
        p.write_bytes(pickle.dumps({"w": Payload(target)}, protocol=proto))
        files.append(p)
    p = folder / "evil_legacy.bin"
    torch.save({"x": Payload(target)}, p, _use_new_zipfile_serialization=False)
    files.append(p)
    p = folder / "evil_lightning.ckpt"
    torch.save(
        {
            "state_dict": small_model().state_dict(),
            "global_step": 5,
            "hyper_parameters": Payload(target, "open"),
        },
        p,
    )
    files.append(p)
    hf = folder / "checkpoint-9"
    hf.mkdir()
    torch.save({"w": Payload(target)}, hf / "pytorch_model.bin")
    (hf / "trainer_state.json").write_text(json.dumps({"global_step": 9}))
    files.append(hf)
    dcp_dir = folder / "evil_dcp"
    dcp_dir.mkdir()
    (dcp_dir / ".metadata").write_bytes(pickle.dumps(Payload(target)))
    files.append(dcp_dir)
    return files
