"""A script's ``torch.save(model)`` and ``copy.deepcopy(model)`` work under the probe.

The probe keeps forward hooks (closures over sockets and locks) on the root models it found;
before probe/pickling.py they broke both ("Can't pickle local object", "cannot pickle
'socket' object"): pytorch/examples' word_language_model saves its whole model that way. The
script runs for real under ``tuidebug check`` (the checks' forward hooks are on the model by
then) and writes what its copies hold to a file.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

from tests.support import TUIDEBUG

SCRIPT = textwrap.dedent(
    """
    import copy, json, sys
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)
    for step in range(12):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()

    def hooks(m):
        return sum(len(s._forward_hooks) + len(s._forward_pre_hooks) for s in m.modules())

    torch.save(model, sys.argv[1])
    loaded = torch.load(sys.argv[1], weights_only=False)
    twin = copy.deepcopy(model)
    same = all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    open(sys.argv[2], "w").write(json.dumps({
        "live_hooks": hooks(model),
        "loaded_hooks": hooks(loaded),
        "twin_hooks": hooks(twin),
        "same_weights": same,
        "loaded_output_equal": torch.equal(loaded(x), model(x)),
    }))
    """
)


def test_save_whole_model_and_deepcopy_under_the_probe(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "save_whole_model.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [
            *TUIDEBUG,
            "check",
            "--steps",
            "100",
            str(script),
            str(tmp_path / "model.pt"),
            str(tmp_path / "report.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    written = tmp_path / "report.json"
    assert written.exists(), proc.stdout + proc.stderr  # the script ran to its end
    report = json.loads(written.read_text())
    assert report["live_hooks"] > 0  # the probe's hooks were on the model: the case is real
    assert report["loaded_hooks"] == 0 and report["twin_hooks"] == 0  # none travel with copies
    assert report["same_weights"] and report["loaded_output_equal"]
