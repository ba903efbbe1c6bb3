"""The two halves stay apart: the probe side loads no UI, the console loads no torch.

Each import runs in a fresh interpreter, the way harlequin checks its core: the probe lives in
the user's training process, where loading Textual would cost memory and start-up time; the
console must start fast, and torch takes seconds to import.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {name.split(".")[0] for name in proc.stdout.split()}


@pytest.mark.parametrize(
    "module",
    [
        "tuidebug",
        "tuidebug.probe.bootstrap",
        "tuidebug.probe.probe",
        "tuidebug.probe.auto",
        "tuidebug.wire.codec",
        "tuidebug.supervisor.server",
        "tuidebug.gpu",
    ],
)
def test_probe_side_imports_no_textual_or_rich(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert "textual" not in loaded and "rich" not in loaded


def test_the_console_starts_without_torch() -> None:
    loaded = loaded_after("import tuidebug.console.app, tuidebug.cli")
    assert "textual" in loaded
    assert "torch" not in loaded


def test_inert_attach_imports_no_torch() -> None:
    loaded = loaded_after("import tuidebug; tuidebug.attach(object()).step(loss=1.0)")
    assert "torch" not in loaded and "textual" not in loaded
