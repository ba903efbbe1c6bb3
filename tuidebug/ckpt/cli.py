"""``tuidebug ckpt ls|show|diff|verify``: the checkpoint browser without the console.

Useful over SSH and in scripts: exit status 0 on success, 1 when ``diff`` finds that the
checkpoints do not fit each other or ``verify`` finds a damaged file, 2 for an error (missing,
unreadable or unsafe file) with a one-line message on stderr. ``--json`` prints machine-readable
output instead of tables. This is the only module of the package that imports Rich.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tuidebug.ckpt.errors import CheckpointError, one_line
from tuidebug.units import fmt_bytes

if TYPE_CHECKING:
    from tuidebug.ckpt.formats.base import CheckpointInfo

_STATUS_STYLE = {"ok": "green", "unsafe": "bold red", "unreadable": "yellow"}


def human_count(n: int) -> str:
    """1234567 -> "1.23M"."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _error(msg: str) -> int:
    _console(stderr=True).print(Text(f"error: {msg}", style="red"), soft_wrap=True)
    return 2


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")


# --------------------------------------------------------------------------- ls


def cmd_ls(args: argparse.Namespace) -> int:
    """List the checkpoints of a folder with format, size, time, step/epoch/loss and status."""
    from tuidebug.ckpt.formats import list_checkpoints

    try:
        infos = list_checkpoints(args.dir, trust_dcp=args.trust_dcp)
    except CheckpointError as exc:
        return _error(str(exc))
    if args.json:
        _print_json([dataclasses.asdict(i) for i in infos])
        return 0
    table = Table(
        title=str(args.dir),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        show_edge=False,
    )
    console = _console()
    # The other columns need about 66 cells (53 without "modified", dropped below 100 columns);
    # the name gets the rest, ellipsized, never wrapped.
    show_time = console.width >= 100
    table.add_column(
        "name",
        no_wrap=True,
        overflow="ellipsis",
        max_width=max(16, console.width - (68 if show_time else 55)),
    )
    # status right after the name: on a narrow terminal Rich crops the last columns
    table.add_column("status", no_wrap=True, min_width=11)
    table.add_column("format", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    if show_time:
        table.add_column("modified", no_wrap=True)
    show_epoch = any(i.epoch is not None for i in infos)
    for col in ("step", "epoch", "loss") if show_epoch else ("step", "loss"):
        table.add_column(col, justify="right", min_width=4)
    show_ranks = any(i.ranks for i in infos)  # a torchrun job's per-rank generators
    if show_ranks:
        table.add_column("ranks", justify="right")
    reasons: list[Text] = []
    for i in infos:
        status = Text(i.status + ("*" if i.reason else ""), style=_STATUS_STYLE.get(i.status, ""))
        if i.reason:
            reasons.append(Text.assemble(f"* {i.name}: ", (i.reason, "dim")))
        table.add_row(
            i.name + ("/" if i.is_dir else ""),
            status,
            i.format,
            fmt_bytes(i.size),
            *(
                [time.strftime("%m-%d %H:%M", time.localtime(i.mtime)) if i.mtime else "-"]
                if show_time
                else []
            ),
            *([_fmt(i.step), _fmt(i.epoch)] if show_epoch else [_fmt(i.step)]),
            _fmt(i.loss),
            *([str(i.ranks) if i.ranks else "-"] if show_ranks else []),
        )
    if not infos:
        console.print(f"no checkpoints in {args.dir}")
    else:
        console.print(table)
        for r in reasons:
            console.print(r)
    return 0


# --------------------------------------------------------------------------- show


def cmd_show(args: argparse.Namespace) -> int:
    """Show one checkpoint: its summary, then the key tree with shapes, dtypes and sizes."""
    from tuidebug.ckpt.formats import detail

    try:
        det = detail(args.file, trust_dcp=args.trust_dcp)
    except CheckpointError as exc:
        return _error(str(exc))
    if args.json:
        _print_json(
            {
                "info": dataclasses.asdict(det.info),
                "param_count": det.param_count,
                "tensor_bytes": det.tensor_bytes,
                "tensors": [dataclasses.asdict(t) for t in det.tensors],
                "metadata": det.metadata,
                "notes": det.notes,
            }
        )
        return 0
    console = _console()
    info = det.info
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("file", info.path)
    head.add_row("format", info.format + (f" ({info.reason})" if info.reason else ""))
    head.add_row("size", fmt_bytes(info.size))
    head.add_row("step / epoch / loss", f"{_fmt(info.step)} / {_fmt(info.epoch)} / "
                 f"{_fmt(info.loss)}")  # fmt: skip
    head.add_row("parameters", f"{human_count(det.param_count)} ({det.param_count:,})")
    head.add_row("tensors", f"{len(det.tensors)}, {fmt_bytes(det.tensor_bytes)}")
    for note in det.notes:
        head.add_row("note", note)
    if info.ranks:
        head.add_row("rank RNG states", _rank_states_line(info))
    console.print(head)
    table = Table(show_lines=False)
    table.add_column("key")
    table.add_column("shape / value")
    table.add_column("dtype")
    table.add_column("size", justify="right", no_wrap=True)
    for depth, node in det.root.walk():
        if depth == 0 or (args.depth is not None and depth > args.depth):
            continue
        indent = "  " * (depth - 1)
        if node.kind == "tensor" and node.tensor is not None:
            t = node.tensor
            table.add_row(indent + node.name, str(list(t.shape)), t.dtype, fmt_bytes(t.nbytes))
        elif node.kind == "value":
            table.add_row(indent + node.name, Text(node.value or "", style="dim"), "", "")
        else:
            table.add_row(
                Text(indent + node.name + "/", style="bold"),
                Text(
                    f"{len(node.children)} entr{'y' if len(node.children) == 1 else 'ies'}",
                    style="dim",
                ),
                "",
                fmt_bytes(node.nbytes) if node.nbytes else "",
            )
    console.print(table)
    return 0


def _rank_states_line(info: CheckpointInfo) -> Text:
    """What ``CKPT.ranks/`` holds: each rank's file with the step and world size it recorded."""
    from tuidebug.ckpt.rng import rank_state_files, read_rank_state

    files = rank_state_files(info.path)
    plural = "s" if len(files) != 1 else ""
    line = Text(f"{len(files)} file{plural} in {info.name}.ranks/")
    for rank, path in files.items():
        try:
            state = read_rank_state(path)
        except Exception as exc:  # one bad file is a line of its own, never the end of `show`
            line.append(f"\n  rank {rank}: unreadable ({one_line(exc)})", style="red")
            continue
        line.append(f"\n  rank {rank}: step {_fmt(state.get('step'))}, world size "
                    f"{_fmt(state.get('world_size'))}")  # fmt: skip
        if info.step is not None and state.get("step") != info.step:
            line.append(" (not the checkpoint's step)", style="yellow")
    return line


# --------------------------------------------------------------------------- diff


def cmd_diff(args: argparse.Namespace) -> int:
    """Compare the model weights of A against B (B is the reference for ‖a−b‖/‖b‖)."""
    from tuidebug.ckpt.diff import diff_state_dicts
    from tuidebug.ckpt.formats import model_state

    try:
        a = model_state(args.a)
        b = model_state(args.b)
        d = diff_state_dicts(a, b)
    except CheckpointError as exc:
        return _error(str(exc))
    if args.json:
        out = dataclasses.asdict(d)
        out["fits"] = d.fits
        for c in out["changes"]:
            if math.isinf(c["rel_change"]):
                c["rel_change"] = "inf"
        _print_json(out)
        return 0 if d.fits else 1
    console = _console()
    console.print(Text(d.summary(), style="green" if d.fits else "bold red"))
    if d.missing or d.unexpected:
        t = Table(title="keys on one side only", title_justify="left")
        t.add_column("key")
        t.add_column("only in")
        for k in d.missing:
            t.add_row(k, str(args.b))
        for k in d.unexpected:
            t.add_row(k, str(args.a))
        console.print(t)
    if d.shape_mismatches or d.dtype_mismatches:
        t = Table(title="shape / dtype mismatches", title_justify="left")
        for col in ("key", "A shape", "B shape", "A dtype", "B dtype"):
            t.add_column(col)
        for m in d.shape_mismatches + d.dtype_mismatches:
            t.add_row(m.key, str(list(m.a_shape)), str(list(m.b_shape)), m.a_dtype, m.b_dtype)
        console.print(t)
    if d.changes:
        shown = d.changes if args.top <= 0 else d.changes[: args.top]
        t = Table(title=f"relative change ‖A−B‖/‖B‖ ({len(shown)} of {len(d.changes)})",
                  title_justify="left")  # fmt: skip
        t.add_column("key")
        t.add_column("rel. change", justify="right")
        t.add_column("elements", justify="right")
        for c in shown:
            t.add_row(c.key, f"{c.rel_change:.3e}", f"{c.numel:,}")
        console.print(t)
    for note in d.notes:
        console.print(Text(f"note: {note}", style="dim"))
    return 0 if d.fits else 1


# --------------------------------------------------------------------------- verify


def cmd_verify(args: argparse.Namespace) -> int:
    """Check each file of a folder's manifest against its recorded sha256."""
    from tuidebug.ckpt.save import read_manifest, verify

    if not read_manifest(args.dir):
        return _error(f"{args.dir}: no manifest.json with entries")
    results = verify(args.dir)
    console = _console()
    bad = 0
    for r in results:
        bad += not r.ok
        console.print(Text(f"{'ok ' if r.ok else 'BAD'} {r.file} {r.reason}".rstrip(),
                           style="green" if r.ok else "bold red"))  # fmt: skip
    return 1 if bad else 0


# --------------------------------------------------------------------------- wiring


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``ckpt`` command (with ls/show/diff/verify) to the main CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ckpt",
        help="list, inspect, diff and verify checkpoints (never runs code from a file)",
        description="Inspect checkpoints without loading them into a run. Files are read "
        "with torch.load(weights_only=True, mmap=True) or safetensors headers; nothing in "
        "them is executed.",
    )
    sub = p.add_subparsers(dest="ckpt_command", metavar="COMMAND")

    ls = sub.add_parser("ls", help="list the checkpoints in a folder")
    ls.add_argument("dir", help="folder to list")
    ls.add_argument("--trust-dcp", action="store_true",
                    help="read torch.distributed.checkpoint metadata (uses pickle)")  # fmt: skip
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_ls)

    show = sub.add_parser("show", help="show a checkpoint's keys, shapes, dtypes and sizes")
    show.add_argument("file", help="checkpoint file or folder")
    show.add_argument("--depth", type=int, default=None, help="show keys down to this depth")
    show.add_argument("--trust-dcp", action="store_true",
                      help="read torch.distributed.checkpoint metadata (uses pickle)")  # fmt: skip
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    show.set_defaults(func=cmd_show)

    diff = sub.add_parser("diff", help="compare the model weights of two checkpoints")
    diff.add_argument("a", help="checkpoint A")
    diff.add_argument("b", help="checkpoint B (the reference)")
    diff.add_argument("--top", type=int, default=20, help="changes to show (0: all)")
    diff.add_argument("--json", action="store_true", help="print JSON instead of tables")
    diff.set_defaults(func=cmd_diff)

    ver = sub.add_parser("verify", help="check files against the folder's manifest sha256")
    ver.add_argument("dir", help="folder with a manifest.json")
    ver.set_defaults(func=cmd_verify)

    def _help(_args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=_help)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m tuidebug.ckpt.cli ls DIR``."""
    parser = argparse.ArgumentParser(prog="tuidebug")
    subs = parser.add_subparsers()
    add_parser(subs)
    args = parser.parse_args(["ckpt", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
