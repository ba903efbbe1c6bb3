"""The integrations patch nothing until the script imports a framework, and nothing outlives
the probe. Each case runs in a fresh interpreter: whether a framework is imported is the point.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

PRELUDE = """
import sys
from tuidebug.probe.probe import Probe
from tuidebug.probe.extensions import checkpoints, integrations

probe = Probe(None)
probe.install_auto_hooks()
checkpoints.install(probe, {})
integrations.install(probe, {})
"""


def run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_nothing_is_imported_or_patched_before_the_script_imports_a_framework() -> None:
    out = run(
        """
        frameworks = ("lightning", "pytorch_lightning", "transformers", "accelerate")
        print(sorted(name for name in frameworks if name in sys.modules))
        """
    )
    assert out.split("\n")[0] == "[]"


def test_a_trainer_built_under_the_probe_gets_one_callback_and_none_after_it() -> None:
    out = run(
        """
        import lightning.pytorch as L
        import pytorch_lightning as PL
        from transformers import Trainer

        def ours(callbacks):
            return [type(c).__name__ for c in callbacks if type(c).__name__ == "TuidebugCallback"]

        print("wrapped", getattr(L.Trainer.__init__, "__tuidebug_wrapped__", False),
              getattr(PL.Trainer.__init__, "__tuidebug_wrapped__", False),
              getattr(Trainer.__init__, "__tuidebug_wrapped__", False))
        module = sys.modules[L.Trainer.__module__]
        loader = module.__loader__
        source = loader.get_source(module.__name__)
        print("source", type(loader).__name__, "class Trainer" in source)
        print("lightning", ours(L.Trainer(logger=False, enable_progress_bar=False).callbacks))
        print("pytorch_lightning", ours(PL.Trainer(logger=False).callbacks))
        probe.remove_hooks()  # the end of the run
        print("after", ours(L.Trainer(logger=False).callbacks),
              hasattr(L.Trainer.__init__, "__tuidebug_wrapped__"),
              hasattr(Trainer.__init__, "__tuidebug_wrapped__"),
              [type(f).__name__ for f in sys.meta_path if type(f).__name__ == "_Finder"])
        """
    )
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)
    assert lines["wrapped"] == "True True True"
    assert lines["source"] == "_PatchingLoader True"  # the real loader's source, through ours
    assert lines["lightning"] == "['TuidebugCallback']"
    assert lines["pytorch_lightning"] == "['TuidebugCallback']"
    assert lines["after"] == "[] False False []"


def test_accelerate_backward_is_wrapped_only_while_the_probe_lives() -> None:
    out = run(
        """
        from accelerate import Accelerator

        print("wrapped", getattr(Accelerator.backward, "__tuidebug_wrapped__", False))
        probe.remove_hooks()
        print("after", hasattr(Accelerator.backward, "__tuidebug_wrapped__"),
              Accelerator.backward.__qualname__)
        """
    )
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)
    assert lines["wrapped"] == "True"
    assert lines["after"] == "False Accelerator.backward"
