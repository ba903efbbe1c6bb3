"""How long the checkpoint detail view takes on a ~1 GB checkpoint (target: well under 1 s).

Generates a ~1 GB model state (a transformer-like stack of float32 tensors) as a torch ``.pt``
(our own training-state layout, with Adam-like optimizer state excluded to keep it at ~1 GB)
and as ``.safetensors`` in a temporary folder, drops nothing from the page cache (the files were
just written, as they are in a live run), then times ``read_info`` (one browser row) and
``detail`` (the key tree) several times and prints the best and median figures.

    .venv/bin/python benchmarks/bench_ckpt_detail.py [--gb 1.0] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def make_state(gb: float) -> dict[str, Any]:
    import torch

    width = 2048
    per_layer = 4 * width * width + 2 * width * 4 * width  # attn (4 W) + MLP (2 W of 4x)
    layers = max(1, int(gb * 2**30 / 4 / per_layer))
    sd: dict[str, Any] = {}
    for i in range(layers):
        p = f"layers.{i}."
        for name in ("q", "k", "v", "o"):
            sd[p + f"attn.{name}.weight"] = torch.empty(width, width).normal_()
            sd[p + f"attn.{name}.bias"] = torch.zeros(width)
        sd[p + "mlp.up.weight"] = torch.empty(4 * width, width).normal_()
        sd[p + "mlp.down.weight"] = torch.empty(width, 4 * width).normal_()
        sd[p + "norm.weight"] = torch.ones(width)
    return sd


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    from tuidebug.ckpt import atomic_save, detail, read_info

    with tempfile.TemporaryDirectory(prefix="bench_ckpt_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        sd = make_state(args.gb)
        t_gen = time.perf_counter() - t0
        state = {"format": "tuidebug.training_state", "format_version": 1, "step": 1000,
                 "epoch": 3, "models": {"model": sd}, "metadata": {"loss": 0.5}}  # fmt: skip
        t0 = time.perf_counter()
        res = atomic_save(state, folder / "big.pt")
        t_save = time.perf_counter() - t0
        assert res.ok, res.error
        t0 = time.perf_counter()
        save_file(sd, str(folder / "big.safetensors"))
        t_st = time.perf_counter() - t0
        n_params = sum(t.numel() for t in sd.values())
        del sd, state
        print(f"torch {torch.__version__}; generated {n_params / 1e6:.0f}M params in "
              f"{t_gen:.1f}s")  # fmt: skip
        print(f"atomic_save (torch.save + fsync + sha256 + manifest): {t_save:.2f}s, "
              f"{res.size / 2**30:.2f} GiB; safetensors save_file: {t_st:.2f}s")  # fmt: skip
        for name in ("big.pt", "big.safetensors"):
            path = folder / name
            det = detail(path)
            assert det.param_count == n_params, (det.param_count, n_params)
            best_i, med_i = timed(lambda p=path: read_info(p), args.repeat)  # type: ignore[misc]
            best_d, med_d = timed(lambda p=path: detail(p), args.repeat)  # type: ignore[misc]
            print(f"{name:16s} {path.stat().st_size / 2**30:.2f} GiB, {len(det.tensors)} tensors: "
                  f"read_info best {best_i * 1e3:.1f} ms (median {med_i * 1e3:.1f}); "
                  f"detail best {best_d * 1e3:.1f} ms (median {med_d * 1e3:.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
