"""The CPU ablation (examples/ablation/cpu_ablation.py, run_cpu_ablation.sh): five real verl runs of the
smoke testbed, one per Table 2 preset, then held-out generation, Table 3 over seeds with the
findings' verdicts, and Figure 3; a rerun skips every finished stage."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from examples import demo
from examples.ablation import cpu_ablation as ablation
from examples.ablation import table3 as t3
from tests.fixtures import REPO

pytestmark = pytest.mark.slow

NUMBER = r"\d+\.\d+"
CELL = rf"{NUMBER} \(seeds {NUMBER}-{NUMBER}; \[{NUMBER}, {NUMBER}\]\)"
VERDICTS = ("reproduced", "opposite", "not separated", "not testable at this size")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, demo_smoke_dir) -> Path:
    """The ablation's smoke run from the demo smoke's SFT'd testbed: its eight starting-point stages are up
    to date there and skipped, as after ``make demo`` for the full ablation."""
    out = tmp_path_factory.mktemp("ablation_smoke")
    assert ablation.main(["--smoke", "--output-dir", str(out), "--base-dir", str(demo_smoke_dir)]) == 0
    return out


def test_every_run_differs_only_in_its_preset_folder_and_seed(tmp_path):
    budget, base, layout = ablation.DEFAULT, demo.Layout(tmp_path / "base"), ablation.AblationLayout(tmp_path / "a")

    def argv(preset, seed):
        return ablation.ablation_job(budget, base, layout, preset, seed).argv()

    one, other, reseeded = argv("model1", 1), argv("relate", 1), argv("model1", 2)
    assert len(one) == len(other) == len(reseeded)
    differ = [(a, b) for a, b in zip(one, other) if a != b]
    assert all("model1-seed1" in a and "relate-seed1" in b for a, b in differ if not a.startswith("relate.preset="))
    assert ("relate.preset=model1", "relate.preset=relate") in differ
    assert {b for a, b in zip(one, reseeded) if a != b} >= {"data.seed=2", "actor_rollout_ref.rollout.seed=2"}
    assert "relate.log_components=all" in one
    assert f"trainer.total_training_steps={budget.steps}" in one and budget.steps >= 40 and len(budget.seeds) >= 2


def test_table3_has_a_row_per_preset_with_intervals_and_every_finding_judged(smoke):
    md = (smoke / "table3.md").read_text(encoding="utf-8")
    for name in ("sft", *ablation.PRESETS):
        label = ablation.LABELS[name]
        assert re.search(rf"^\| {re.escape(label)} \|(?: {CELL} \|){{{len(t3.COLUMNS)}}}$", md, flags=re.M), label
    result = json.loads((smoke / "table3.json").read_text(encoding="utf-8"))
    assert [f["claim"] for f in result["findings"]] == [f.claim for f in t3.FINDINGS]
    assert all(f["verdict"] in VERDICTS for f in result["findings"])
    for f in result["findings"]:
        assert f"| {f['claim']} |" in md and f"**{f['verdict']}**" in md
    assert set(result["training"]) == {f"{p}-seed1" for p in ablation.PRESETS}
    assert all(t["steps"] == ablation.SMOKE.steps for t in result["training"].values())
    assert result["records"] == demo.SMOKE.eval_prompts


def test_model1_logs_what_it_is_not_rewarded_for_and_is_rewarded_for_structure_only(smoke):
    from examples.report import verl_metric_rows

    rows = verl_metric_rows(smoke / "runs" / "model1-seed1" / "metrics.jsonl", "model1")
    for row in rows:
        for key in ("relate/reward/ctcvr", "relate/reward/relevance", "relate/reward/correctness", "relate/g_high_size"):
            assert math.isfinite(row[key]), key
        assert row["critic/score/mean"] == pytest.approx(row["relate/reward/length"] + row["relate/reward/format"],
                                                         abs=1e-5)


def test_figure3_and_generations_exist(smoke):
    assert (smoke / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("sft", *(f"{p}-seed1" for p in ablation.PRESETS)):
        lines = (smoke / "generations" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == demo.SMOKE.eval_prompts, name
        assert (smoke / "evaluation" / f"scored_{name}.jsonl").is_file()


def test_rerun_skips_every_stage(smoke, demo_smoke_dir, capsys):
    capsys.readouterr()
    assert ablation.main(["--smoke", "--output-dir", str(smoke), "--base-dir", str(demo_smoke_dir)]) == 0
    out = capsys.readouterr().out
    stages = len(ablation.ablation_stages(ablation.SMOKE, demo_smoke_dir, smoke))
    assert out.count("up to date, skipped") == stages + 8  # and the 8 stages of the starting point
    assert "train-model1-seed1" in out and "... (" not in out


def test_shell_wrapper_help_and_bad_arguments():
    script = REPO / "examples" / "ablation" / "run_cpu_ablation.sh"
    help_ = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "SEEDS" in help_.stdout and "SMOKE" in help_.stdout
    bad = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "SEEDS": "1 1", "PYTHON": str(REPO / ".venv" / "bin" / "python")})
    assert bad.returncode != 0 and "--seeds must be distinct" in bad.stderr
