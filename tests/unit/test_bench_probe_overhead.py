"""The overhead benchmark still runs: a tiny in-process run of every variant (no timing asserted:
figures belong to the benchmark's own runs, see docs/layers.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_probe_overhead.py"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), "--rounds", "2", "--steps", "3", "--warmup", "2", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_variant_runs_and_reports_a_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _bench("--copies", "2", "--rotate", "--out", str(out))
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    rows = {row["variant"]: row for row in results["rows"]}
    assert {"bare", "probe boundary", "probe default", "probe every step"} <= set(rows)
    assert rows["bare"]["ratio_median"] == 1.0
    for name, row in rows.items():
        # The baseline runs on twice the copies: its halves are the run's noise floor.
        assert row["copies"] == (4 if name == "bare" else 2) and row["ms_median"] > 0
    assert results["noise_floor"]["median"] > 0 and results["noise_floor"]["paired"] > 0
    # Sampling every step: the sampler measured 2 copies x (2 warm-up + 2 x 3) steps' worth.
    assert rows["probe every step"]["samples"] >= 2 + 2 * 3 - 1
    assert "probe default" in done.stdout and "targets:" in done.stdout
    assert "noise floor" in done.stdout


def test_only_keeps_bare_and_names_unknown_variants(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _bench("--copies", "1", "--only", "probe boundary", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert [r["variant"] for r in json.loads(out.read_text())["rows"]] == [
        "bare",
        "probe boundary",
    ]
    wrong = _bench("--copies", "1", "--only", "probe nothing")
    assert wrong.returncode != 0 and "unknown variants ['probe nothing']" in wrong.stderr


def test_same_models_shares_each_model_between_the_variants(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _bench("--copies", "2", "--same-models", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    # Each sampler's hooks are on only in its own rounds: sampling every step still saw every
    # step of its own (2 warm-up + 2 rounds x 3), though two samplers share each model.
    assert rows["probe every step"]["samples"] >= 2 + 2 * 3 - 1
    assert rows["probe default"]["samples"] <= 3
    wrong = _bench("--copies", "1", "--same-models", "--rotate")
    assert wrong.returncode != 0 and "not with --same-models" in wrong.stderr


def test_supervised_and_watched_the_link_runs_at_a_consoles_pace(tmp_path: Path) -> None:
    """Under a real supervisor with a console attached (reading, not drawing) the probe's link
    sends 20 batches a second; the figures are still produced."""
    from tuidebug.probe.link import FLUSH_INTERVAL

    out = tmp_path / "bench.json"
    done = _bench(
        "--copies", "1", "--supervised", "--watched", "--only", "probe default", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert results["link_interval"] == FLUSH_INTERVAL
    assert "supervisor's socket" in results["sink"] and "20 batches/s" in results["sink"]
    assert [r["variant"] for r in results["rows"]] == ["bare", "probe default"]
