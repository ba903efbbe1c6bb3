"""Evidence for the training-bug rules: each gallery script trips its own rule, clean demos none.

Every case goes through the real ``tuidebug check`` (a supervisor, the probe, the history on
disk); a few also through ``tuidebug run --detach``, reading the alerts from the run's history
the way a console attaching later would.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import DEMOS, ROOT, TUIDEBUG, start_detached, wait_for

BUGS = DEMOS / "bugs"

# script (args) -> the rule it must trip. Other rules may fire too (a NaN loss is also a
# non-finite loss); the full table is in docs and the report.
GALLERY: dict[str, tuple[str, list[str]]] = {
    "no_zero_grad.py": ("grad-not-zeroed", []),
    "eval_mode_training.py": ("eval-mode-training", []),
    "train_mode_eval.py": ("train-mode-eval", []),
    "eval_without_no_grad.py": ("eval-builds-graph", []),
    "softmax_into_ce.py": ("softmax-into-ce", []),
    "sigmoid_into_bce_logits.py": ("sigmoid-into-bce-logits", []),
    "kl_div_log_target.py": ("logprobs-as-probs", []),
    "nll_on_logits.py": ("nll-on-raw-scores", []),
    "bias_before_bn.py": ("bias-before-batchnorm", []),
    "bad_init_loss.py": ("initial-loss", []),
    "nan_loss.py": ("loss-nonfinite", []),
    "diverging.py": ("loss-diverging", []),
    "flat_loss.py": ("loss-flat", []),
    "lr_zero.py": ("lr-zero", []),
    "scheduler_never_stepped.py": ("lr-never-changes", []),
    "exploding_grads.py": ("exploding-gradients", []),
    "vanishing_grads.py": ("vanishing-gradients", []),
    "dead_relu.py": ("dead-relu", []),
    "huge_updates.py": ("update-ratio", []),
    "detached_features.py": ("param-no-grad", []),
    "optimizer_missing_params.py": ("param-not-in-optimizer", []),
    "same_batch.py": ("same-batch", []),
    "nan_inputs.py": ("nonfinite-input", []),
    "bce_targets_out_of_range.py": ("labels-out-of-range", []),
    "mse_broadcast.py": ("loss-broadcast", []),
    "slow_loader.py": ("data-bottleneck", []),
    "eval_on_train_rows.py": ("train-eval-overlap", []),
    "duplicate_rows.py": ("duplicate-rows", []),
    "constant_feature.py": ("constant-input", []),
    "input_outlier.py": ("input-outlier", []),
    "constant_labels.py": ("constant-labels", []),
    "missing_class.py": ("missing-class", []),
}
CLEAN = [
    ("classifier.py", ["--steps", "40"]),
    ("transformer_lm.py", ["--steps", "40"]),
    ("handwritten_sgd.py", ["--steps", "60"]),
    ("with_hook.py", ["--steps", "40"]),
    # The data rules' clean twins (demos/bugs/clean/): a held-out split evaluated at each epoch's
    # end (at least one within 80 steps), one-hot and rare columns, a black frame.
    ("bugs/clean/tabular.py", ["--steps", "80"]),
    ("bugs/clean/images.py", ["--steps", "80"]),
]
# The clean demos must raise no alert at all, info included.
CLEAN_INFO: set[str] = set()


def check(script: Path, *args: str, options: tuple[str, ...] = ()) -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = subprocess.run(
        [*TUIDEBUG, "check", "--json", *options, str(script), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_every_rule_has_a_gallery_script() -> None:
    from tuidebug.checks.rules import RULES

    covered = {rule for rule, _ in GALLERY.values()} | {"overfit-failed"}
    assert covered == set(RULES)
    on_disk = {p.name for p in BUGS.glob("[a-z]*.py")}
    assert on_disk == set(GALLERY)


@pytest.mark.parametrize("script", sorted(GALLERY))
def test_check_finds_the_bug(run_env: dict[str, str], script: str) -> None:
    rule, args = GALLERY[script]
    code, report = check(BUGS / script, *args, options=("--steps", "60"))
    fired = {a["rule"] for a in report["alerts"]}
    assert rule in fired, f"{script}: {rule} not in {fired}"
    alert = next(a for a in report["alerts"] if a["rule"] == rule)
    assert alert["message"] and alert["why"] and alert["fix"]
    assert report["script_exit_code"] == 0, report
    expected = 0 if alert["severity"] == "info" and len(fired) == 1 else 1
    assert code == expected
    assert report["status"] == {0: "clean", 1: "alerts"}[expected]


@pytest.mark.parametrize(("script", "args"), CLEAN, ids=[name for name, _ in CLEAN])
def test_check_is_quiet_on_clean_demos(
    run_env: dict[str, str], script: str, args: list[str]
) -> None:
    code, report = check(DEMOS / script, *args)
    fired = {a["rule"] for a in report["alerts"]}
    assert fired <= CLEAN_INFO, f"false alarms on {script}: {report['alerts']}"
    assert all(a["severity"] == "info" for a in report["alerts"])
    assert code == 0 and report["status"] == "clean"
    # Every step stored: the check stops the script at its last step's boundary, and the
    # probe's last batch must still reach the history (it was lost now and then).
    assert report["steps"] == int(args[args.index("--steps") + 1])


def test_fail_on_info_fails_on_a_note(run_env: dict[str, str]) -> None:
    code, report = check(BUGS / "bias_before_bn.py", options=("--steps", "20", "--fail-on", "info"))
    assert code == 1 and report["fail_on"] == "info"


def test_ignore_silences_a_rule(run_env: dict[str, str]) -> None:
    code, report = check(
        BUGS / "same_batch.py", options=("--steps", "30", "--ignore", "same-batch")
    )
    assert "same-batch" not in {a["rule"] for a in report["alerts"]}
    assert code == 0


def test_script_failure_exits_2(run_env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        "import torch\n"
        "m = torch.nn.Linear(4, 3)\n"
        "opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "for i in range(10):\n"
        "    opt.zero_grad()\n"
        "    loss = torch.nn.functional.cross_entropy(m(torch.randn(8, 4)), torch.full((8,), 5))\n"
        "    loss.backward(); opt.step()\n"
    )
    code, report = check(script, options=("--steps", "10"))
    assert code == 2 and report["status"] == "script-failed"
    # The rule saw the labels before torch raised on them.
    assert "labels-out-of-range" in {a["rule"] for a in report["alerts"]}
    assert report["script_error"]["type"] == "IndexError"


def test_steps_after_the_script_are_used(run_env: dict[str, str]) -> None:
    _code, report = check(BUGS / "same_batch.py", "--steps", "12")
    assert report["steps"] == 12


def test_overfit_batch_reaches_zero_on_a_working_model(run_env: dict[str, str]) -> None:
    code, report = check(DEMOS / "classifier.py", options=("--steps", "60", "--overfit-batch"))
    assert report["overfit"]["reached"], report["overfit"]
    assert report["overfit"]["last_loss"] < 0.1 * report["overfit"]["first_loss"]
    assert "same-batch" not in {a["rule"] for a in report["alerts"]}
    assert code == 0


def test_overfit_batch_fails_on_a_broken_model(run_env: dict[str, str]) -> None:
    code, report = check(BUGS / "flat_loss.py", options=("--steps", "40", "--overfit-batch"))
    assert not report["overfit"]["reached"]
    assert "overfit-failed" in {a["rule"] for a in report["alerts"]}
    assert code == 1


def test_human_report(run_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [*TUIDEBUG, "check", "--steps", "20", str(BUGS / "no_zero_grad.py")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**__import__("os").environ, "COLUMNS": "160"},
    )
    assert proc.returncode == 1
    assert "grad-not-zeroed" in proc.stdout and "zero_grad()" in proc.stdout
    assert "failed" in proc.stdout


# --- through `tuidebug run --detach` ------------------------------------------------------------


def alerts_of_run(run_id: str) -> list:  # type: ignore[type-arg]
    from tuidebug.checks.cli import read_findings, wait_for_end
    from tuidebug.paths import find_run

    paths = find_run(run_id)
    assert paths is not None
    wait_for(lambda: paths.read_meta().get("ended"), timeout=120, what="the run to end")
    wait_for_end(paths, 30)
    return read_findings(paths)["alerts"]


@pytest.mark.parametrize(
    "script", ["no_zero_grad.py", "softmax_into_ce.py", "eval_mode_training.py", "mse_broadcast.py"]
)
def test_run_detached_records_the_alert(run_env: dict[str, str], script: str) -> None:
    rule, args = GALLERY[script]
    run_id = start_detached(BUGS / script, "--steps", "30", *args)
    rules = {a.rule for a in alerts_of_run(run_id)}
    assert rule in rules


def test_run_detached_clean_demo_and_ignore(run_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [
            *TUIDEBUG,
            "run",
            "--detach",
            "--ignore",
            "bias-before-batchnorm",
            str(DEMOS / "classifier.py"),
            "--steps",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.splitlines()[0].split()[2]
    assert alerts_of_run(run_id) == []
