"""The checkpoint browser: the files of a folder, the detail of one, diffs, save and restore.

Keys: ``s`` save now (at the run's next step boundary), ``r`` restore the highlighted
checkpoint (after a confirmation naming the file and step), ``f`` diff it against the live
model (computed by the probe on the training thread), ``m`` mark it and ``x`` diff it against
the marked one (here, in the console), ``o`` open another folder, ``u`` list again, Escape back.

Files are read with :mod:`tuidebug.ckpt` in worker threads (headers and memory maps only, never
code from a file), so a big or broken file never blocks or crashes the console. A file that
needs full unpickling is listed as unsafe and is restored or diffed only after a confirmation
that names that risk.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static

from tuidebug.console.extensions import SendCommand
from tuidebug.console.screens.prompt import PromptScreen
from tuidebug.units import fmt_bytes
from tuidebug.wire.checkpoint_messages import CheckpointDiff
from tuidebug.wire.messages import Command

if TYPE_CHECKING:
    from tuidebug.ckpt import CheckpointDetail, CheckpointInfo, KeyNode, StateDiff
    from tuidebug.console.checkpoints_state import CheckpointsState
    from tuidebug.wire.checkpoint_messages import CheckpointRestored

COLUMNS = ("name", "format", "step", "epoch", "loss", "size", "time", "status")
TREE_LINES = 400  # detail lines drawn (the rest is summed up in one line)
DIFF_ROWS = 30
# What a restore of a framework's own checkpoint puts back into its live trainer, and what not
# (tuidebug/integrations/lightning_restore.py, hf_restore.py; docs/checkpoints.md).
FRAMEWORK_RESTORES = {
    "lightning": (
        "Lightning",
        "the module's weights, the optimizers, the LR schedulers, the grad scaler, the step "
        "counters (global_step) and the RNG states if the .ckpt has them (tuidebug's save now "
        "adds them)",
    ),
    "transformers": (
        "the Trainer",
        "the model's weights, the optimizer, the LR scheduler, the grad scaler, "
        "trainer_state.json (global_step, log history) and the RNG states",
    ),
}
FRAMEWORK_FORMATS = {"lightning": "lightning", "hf": "transformers"}
NOT_RESTORED = (
    "Not restored: the data loader's position (the running epoch goes on with its next batch), "
    "the epoch counter, callbacks' states."
)
UNSAFE_RISK = (
    "This file needs full unpickling: loading it would RUN CODE FROM THE FILE, with your "
    "permissions, inside the training process. Only do this for a file you made yourself or "
    "fully trust."
)


def _when(mtime: float) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(mtime)) if mtime else ""


def row_cells(info: CheckpointInfo) -> tuple[str | Text, ...]:
    """The table row of one checkpoint."""
    status: Text
    if info.status == "ok":
        status = Text("ok", style="green")
    elif info.status == "unsafe":
        status = Text("unsafe", style="bold red")
    else:
        status = Text(info.status, style="red")
    return (
        info.name + ("/" if info.is_dir else ""),
        info.format,
        f"{info.step:,}" if info.step is not None else "",
        f"{info.epoch}" if info.epoch is not None else "",
        f"{info.loss:.4g}" if info.loss is not None else "",
        fmt_bytes(info.size),
        _when(info.mtime),
        status,
    )


def tree_lines(node: KeyNode, limit: int = TREE_LINES) -> list[Text]:
    """The key tree as indented lines: tensors with shape, dtype and size."""
    lines: list[Text] = []
    count = 0

    def walk(n: KeyNode, depth: int) -> None:
        nonlocal count
        for child in n.children:
            count += 1
            if len(lines) >= limit:
                continue
            line = Text("  " * depth)
            if child.kind == "tensor" and child.tensor is not None:
                t = child.tensor
                shape = "×".join(str(s) for s in t.shape) or "scalar"
                line.append(child.name)
                line.append(f"  {shape} {t.dtype}", style="cyan")
                line.append(f"  {fmt_bytes(t.nbytes)}", style="bright_black")
            elif child.kind == "value":
                line.append(child.name)
                line.append(f" = {child.value}", style="bright_black")
            else:
                line.append(child.name + "/", style="bold")
                if child.numel:
                    line.append(
                        f"  {child.numel:,} values, {fmt_bytes(child.nbytes)}",
                        style="bright_black",
                    )
            lines.append(line)
            walk(child, depth + 1)

    walk(node, 0)
    if count > len(lines):
        lines.append(Text(f"… {count - len(lines):,} more keys", style="bright_black"))
    return lines


def detail_text(d: CheckpointDetail) -> Text:
    info = d.info
    text = Text()
    text.append(f"{info.name}", style="bold")
    text.append(f"  {info.format}  {fmt_bytes(info.size)}\n", style="bright_black")
    facts = []
    if info.step is not None:
        facts.append(f"step {info.step:,}")
    if info.epoch is not None:
        facts.append(f"epoch {info.epoch}")
    if info.loss is not None:
        facts.append(f"loss {info.loss:.6g}")
    facts.append(f"{d.param_count:,} parameters")
    facts.append(f"{fmt_bytes(d.tensor_bytes)} of tensors")
    text.append(" · ".join(facts) + "\n")
    for key in ("script", "args", "reason", "host", "torch"):
        if key in d.metadata and d.metadata[key] not in (None, "", []):
            text.append(f"{key}: {d.metadata[key]}\n", style="bright_black")
    for note in d.notes:
        text.append(f"note: {note}\n", style="yellow")
    text.append("\n")
    for line in tree_lines(d.root):
        text.append_text(line)
        text.append("\n")
    return text


def diff_text(title: str, d: StateDiff | CheckpointDiff) -> Text:
    """A diff as text: blocking differences first, then the largest relative changes."""
    text = Text(title + "\n", style="bold")
    missing, unexpected = list(d.missing), list(d.unexpected)
    changes: list[tuple[str, float, int]]
    if isinstance(d, CheckpointDiff):  # computed by the probe: already sorted and cut
        mismatches = list(d.mismatches)
        changes = [(str(k), float(r), int(n)) for k, r, n in d.changes]
    else:
        mismatches = [
            f"{m.key}: {list(m.a_shape)} {m.a_dtype} vs {list(m.b_shape)} {m.b_dtype}"
            for m in [*d.shape_mismatches, *d.dtype_mismatches]
        ]
        # Largest first; NaN (a non-finite tensor) first of all.
        changes = sorted(
            ((c.key, c.rel_change, c.numel) for c in d.changes),
            key=lambda c: (not math.isnan(c[1]), -c[1]),
        )
    if not (missing or unexpected or mismatches):
        text.append(f"fits: same keys, shapes and dtypes ({d.compared:,} tensors)\n", "green")
    for label, rows in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape/dtype", mismatches),
    ):
        for row in rows[:DIFF_ROWS]:
            text.append(f"{label:<11} ", style="red")
            text.append(f"{row}\n")
        if len(rows) > DIFF_ROWS:
            text.append(f"{label:<11} … {len(rows) - DIFF_ROWS:,} more\n", style="bright_black")
    if changes:
        text.append("\n‖a−b‖/‖b‖, largest first\n", style="bold")
        for key, rel, numel in changes[:DIFF_ROWS]:
            text.append(f"{rel:>10.3e}  ", style="cyan")
            text.append(f"{key}", style="")
            text.append(f"  ({numel:,})\n", style="bright_black")
        if len(changes) > DIFF_ROWS:
            text.append(f"… {len(changes) - DIFF_ROWS:,} more tensors\n", style="bright_black")
    for note in getattr(d, "notes", []):
        text.append(f"note: {note}\n", style="yellow")
    return text


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no, with the consequence spelled out; ``y`` confirms, ``n``/Escape cancels."""

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
    }
    ConfirmScreen > Vertical {
        width: 76;
        max-width: 100%;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    ConfirmScreen .keys {
        color: $text-muted;
        margin-top: 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]{self.title_text}[/b]")
            yield Static(self.body, markup=False)
            yield Static("y: yes    n / Escape: no", classes="keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class CheckpointsScreen(Screen[None]):
    """The browser over the run's checkpoint folder (or any folder opened with ``o``)."""

    DEFAULT_CSS = """
    CheckpointsScreen #ckpt-title {
        height: 1;
        padding: 0 1;
        background: $boost;
    }
    CheckpointsScreen #ckpt-list {
        height: 1fr;
        min-height: 5;
    }
    CheckpointsScreen #ckpt-detail-box {
        height: 1fr;
        border-top: solid $primary;
    }
    CheckpointsScreen #ckpt-detail {
        padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("s", "save", "Save now"),
        Binding("r", "restore", "Restore"),
        Binding("f", "diff_live", "Diff vs live"),
        Binding("m", "mark", "Mark"),
        Binding("x", "diff_marked", "Diff vs marked"),
        Binding("o", "open_folder", "Open folder"),
        Binding("u", "reload", "Reload"),
    ]

    def __init__(self, state: CheckpointsState, send: SendCommand) -> None:
        super().__init__()
        self.state = state
        self.send = send
        self.folder: str | None = None
        """The folder shown: the run's until the user opens another."""
        self.infos: list[CheckpointInfo] = []
        self.marked: str | None = None
        self._version = -1
        self._diff_seen: CheckpointDiff | None = None
        self._restore_seen: CheckpointRestored | None = None
        self._listed_once = False
        self._save_seen: object = None
        self._followed: str | None = None  # the run's folder last followed (see sync)

    def compose(self) -> ComposeResult:
        yield Static("", id="ckpt-title")
        table: DataTable[Any] = DataTable(id="ckpt-list", cursor_type="row", zebra_stripes=True)
        yield table
        with VerticalScroll(id="ckpt-detail-box"):
            yield Static("", id="ckpt-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#ckpt-list", DataTable)
        for name in COLUMNS:
            table.add_column(name, key=name)
        self.sync()

    # --- per frame ----------------------------------------------------------------------------

    def sync(self) -> None:
        """Called by the app once per frame: follow the run's folder, saves, restores, diffs."""
        state = self.state
        if state.version == self._version and self._listed_once:
            return
        self._version = state.version
        moved = state.folder is not None and state.folder != self._followed
        if moved and self.folder in (None, self._followed):
            # The run's folder, or the one a framework's trainer saves in now (the Trainer's
            # output_dir), unless the user opened another one.
            self.folder = state.folder
        if moved:
            self._followed = state.folder
        self._update_title()
        if moved or not self._listed_once or state.last_save is not self._save_seen:
            # Only a new file changes the listing; diffs and refusals keep the detail pane.
            self._save_seen = state.last_save
            self.load_listing()
        self._listed_once = True
        diff = state.live_diff
        if diff is not None and diff is not self._diff_seen:
            self._diff_seen = diff
            if diff.ok:
                body = diff_text(f"{os.path.basename(diff.path)} vs the live model", diff)
                if diff.truncated:
                    body.append(f"({diff.truncated:,} rows left out)\n", style="bright_black")
            else:
                body = Text(f"diff vs the live model failed: {diff.error}", style="red")
            self._show(body)
        restore = state.last_restore
        if restore is not None and restore is not self._restore_seen:
            self._restore_seen = restore
            name = os.path.basename(restore.path)
            if not restore.ok:
                body = Text(f"restore of {name} refused\n", "bold red")
                body.append(f"{restore.error}\n")
                for line in restore.problems:
                    body.append(f"  {line}\n", style="red")
            else:
                body = Text(f"restored {name}: now at step {restore.step:,}\n", "bold green")
                if restore.restored:
                    body.append(f"restored: {', '.join(restore.restored)}\n")
            for note in restore.notes:
                body.append(f"  note: {note}\n", style="yellow")
            self._show(body)

    def _update_title(self) -> None:
        text = Text("Checkpoints  ", style="bold")
        text.append(self.folder or "(the run has not said where it saves yet)")
        config = self.state.config
        if config is not None and self.folder == config.folder:
            if config.framework in FRAMEWORK_RESTORES:
                owner = FRAMEWORK_RESTORES[config.framework][0]
                text.append(f"  · {owner}'s checkpoints", style="bright_black")
            if config.save_every:
                text.append(f"  · every {config.save_every:,} steps", style="bright_black")
            if config.keep:
                text.append(f"  · keep {config.keep}", style="bright_black")
        if self.marked:
            text.append(f"  · marked: {os.path.basename(self.marked)}", style="yellow")
        self.query_one("#ckpt-title", Static).update(text)

    # --- listing and detail (worker threads) --------------------------------------------------

    @work(thread=True, exclusive=True, group="ckpt-list")
    def load_listing(self) -> None:
        folder = self.folder
        if not folder:
            self.app.call_from_thread(self._fill, [], "")
            return
        from tuidebug.ckpt import list_checkpoints

        try:
            infos = list_checkpoints(folder)
        except Exception as error:  # a listing never takes the console down
            self.app.call_from_thread(self._fill, [], f"cannot list {folder}: {error}")
            return
        infos.sort(key=lambda i: (i.step if i.step is not None else -1, i.mtime, i.name))
        self.app.call_from_thread(self._fill, infos, "")

    def _fill(self, infos: list[CheckpointInfo], error: str) -> None:
        table = self.query_one("#ckpt-list", DataTable)
        current = self._selected()
        keep = current.path if current is not None else None
        save = self.state.last_save
        if save is not None and save.ok and save.path not in {i.path for i in self.infos}:
            keep = save.path  # a file just saved: show it
        self.infos = infos
        table.clear()
        for info in infos:
            table.add_row(*row_cells(info), key=info.path)
        if error:
            self._show(Text(error, style="red"))
        elif not infos:
            where = self.folder or "the run's checkpoint folder"
            self._show(Text(f"no checkpoints in {where} yet: s saves one now", "bright_black"))
        if infos:
            paths = [i.path for i in infos]
            row = paths.index(keep) if keep in paths else len(infos) - 1
            table.move_cursor(row=row)

    def _selected(self) -> CheckpointInfo | None:
        table = self.query_one("#ckpt-list", DataTable)
        if not self.infos or table.cursor_row is None:
            return None
        if 0 <= table.cursor_row < len(self.infos):
            return self.infos[table.cursor_row]
        return None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        info = self._selected()
        if info is not None:
            self.load_detail(info)

    @work(thread=True, exclusive=True, group="ckpt-detail")
    def load_detail(self, info: CheckpointInfo) -> None:
        if info.status != "ok":
            text = Text(f"{info.name}\n", style="bold")
            if info.status == "unsafe":
                text.append(f"unsafe: {info.reason or UNSAFE_RISK}\n", style="bold red")
                text.append("r restores and f diffs it only after a confirmation.\n")
            else:
                text.append(f"{info.status}: {info.reason}\n", style="red")
            self.app.call_from_thread(self._show, text)
            return
        from tuidebug.ckpt import detail

        try:
            body = detail_text(detail(info.path))
        except Exception as error:  # CheckpointError and anything a broken file causes
            body = Text(f"{info.name}: {error}", style="red")
        self.app.call_from_thread(self._show, body)

    @work(thread=True, exclusive=True, group="ckpt-detail")
    def diff_files(self, a: str, b: str) -> None:
        from tuidebug.ckpt import diff_state_dicts, model_state

        try:
            d = diff_state_dicts(model_state(a), model_state(b))
            body = diff_text(f"{os.path.basename(a)} vs {os.path.basename(b)}", d)
        except Exception as error:
            body = Text(f"diff failed: {error}", style="red")
        self.app.call_from_thread(self._show, body)

    def _show(self, body: Text) -> None:
        self.query_one("#ckpt-detail", Static).update(body)

    # --- actions ------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_save(self) -> None:
        self.send(Command(name="ckpt-save", rank=-1))
        self.notify("saving at the next step boundary…")

    def action_reload(self) -> None:
        self.load_listing()

    def action_mark(self) -> None:
        info = self._selected()
        if info is not None:
            self.marked = info.path
            self._update_title()

    def action_diff_marked(self) -> None:
        info = self._selected()
        if info is None or self.marked is None:
            self.notify("mark a checkpoint with m, then select another and press x")
            return
        if info.status != "ok":
            self.notify(f"{info.name} is {info.status}: not diffed here", severity="warning")
            return
        self._show(Text("comparing…", style="bright_black"))
        self.diff_files(info.path, self.marked)

    def action_diff_live(self) -> None:
        info = self._selected()
        if info is None:
            return

        def go(unsafe: bool) -> None:
            args = {"path": info.path, **({"unsafe": "1"} if unsafe else {})}
            self.send(Command(name="ckpt-diff", args=args, rank=-1))
            self._show(Text("asked the run for a diff (at its next step boundary)…", "dim"))

        self._guarded(info, "Diff against the live model", go)

    def action_restore(self) -> None:
        info = self._selected()
        if info is None:
            return
        step = f"step {info.step:,}" if info.step is not None else "an unknown step"

        def go(unsafe: bool) -> None:
            args = {"path": info.path, **({"unsafe": "1"} if unsafe else {})}
            self.send(Command(name="ckpt-restore", args=args, rank=-1))
            self.notify(f"restoring {info.name} at the next step boundary…")

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._guarded(info, "Restore", go)

        body = (
            f"Load {info.name} ({info.format}, {step}) into the live model, optimizer, "
            f"scheduler, grad scaler and RNG states at the next step boundary, and set the "
            f"run's step back to {step}.\n\nA checkpoint that does not fit changes nothing."
        )
        config = self.state.config
        framework = FRAMEWORK_FORMATS.get(info.format)
        if config is not None and framework is not None and config.framework == framework:
            owner, what = FRAMEWORK_RESTORES[framework]
            body = (
                f"Load {info.name} ({step}) through {owner} at the next step boundary: {what}. "
                f"The run's step goes back to {step}.\n\n{NOT_RESTORED}\n\n"
                "A checkpoint that does not fit changes nothing."
            )
        self.app.push_screen(ConfirmScreen(f"Restore {info.name}?", body), confirmed)

    def _guarded(self, info: CheckpointInfo, what: str, go: Any) -> None:
        """Run ``go(unsafe)``; an unsafe file first needs a confirmation that names the risk."""
        if info.status == "ok":
            go(False)
            return
        if info.status != "unsafe":
            self.notify(f"{info.name}: {info.reason or info.status}", severity="error")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                go(True)

        self.app.push_screen(ConfirmScreen(f"{what}: {info.name} is unsafe", UNSAFE_RISK), answer)

    def action_open_folder(self) -> None:
        def answer(value: str | None) -> None:
            if value is None:
                return
            target = value or (self.state.folder or "")
            base = self.state.run_cwd or os.getcwd()
            self.folder = os.path.abspath(os.path.join(base, os.path.expanduser(target)))
            self._update_title()
            self.load_listing()

        hint = "a folder of checkpoints (relative to the run's directory); empty: the run's own"
        self.app.push_screen(PromptScreen("Open folder", hint, self.folder or ""), answer)
