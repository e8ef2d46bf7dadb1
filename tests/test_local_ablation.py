"""The local ablation (examples/ablation/run_local_ablation.sh's pieces): five real local-mode runs
of the tiny grammar-prior policy (tests/test_local_trainer.py), one per Table 2 preset, compared by
examples/ablation/compare_local.py (held-out Table 3 through recipe.relate.generate / evaluate,
the training table, the curves figure), and examples/plots.plot_curves with gaps in the data.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from examples.ablation import compare_local
from examples.plots import plot_curves, series, smooth

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


# ---- plots ----------------------------------------------------------------------------------------


def test_series_skips_missing_and_nan():
    rows = [{"step": 3.0, "a": 0.5}, {"step": 1.0, "a": 0.1, "val/b": 2.0}, {"step": 2.0, "a": float("nan")},
            {"step": 4.0}, {"a": 9.0}, {"step": 5.0, "a": float("inf")}]
    assert series(rows, "a") == ([1.0, 3.0], [0.1, 0.5])  # sorted by step; NaN, inf, absent and step-less rows left out
    assert series(rows, "val/b") == ([1.0], [2.0])
    assert series(rows, "absent") == ([], [])
    assert smooth([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no pull towards 0
    assert smooth([0.0, 1.0], 0.0) == [0.0, 1.0]
    with pytest.raises(ValueError):
        smooth([1.0], 1.0)


def test_plot_curves_with_nan_gaps(tmp_path):
    nan = float("nan")
    runs = {
        "run A": [{"step": float(s), "score": 0.1 * s, "val/score": (0.2 * s if s % 5 == 0 else nan)} for s in range(1, 21)],
        "run B": [{"step": float(s), "score": (nan if s in (3, 4) else 0.05 * s)} for s in range(1, 21)],  # no val/ at all
    }
    path = plot_curves(runs, [("score", "mean reward"), ("val/score", "validation reward")], tmp_path / "sub" / "c.png",
                       "Test curves", notes={"run B": "no validation"})
    assert path == tmp_path / "sub" / "c.png"
    assert_png(path)
    assert_png(plot_curves({"only": runs["run A"]}, [("score", "r")], tmp_path / "s.png", "one run", smoothing=0.6))
    with pytest.raises(ValueError, match="no runs"):
        plot_curves({}, [("score", "r")], tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="no metrics"):
        plot_curves(runs, [], tmp_path / "x.png", "t")


# ---- five real runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 64-wide model gains nothing from threads; on a busy 2-core machine they slow it down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ablation_dir(tmp_path_factory, tokenizer, pipeline_dir) -> Path:
    """Five runs of 2 steps, identical but for the preset, as run_local_ablation.sh makes them:
    tiny policy, 2 prompts x G=2, 16 new tokens, English prompts (the Chinese ones exceed
    data.max_prompt_length=400 and are filtered), the pipeline's CTCVR scorer for every preset."""
    from recipe.relate.local_trainer import compose_config, run
    from tests.test_local_trainer import build_tiny_policy

    root = tmp_path_factory.mktemp("ablation")
    policy = build_tiny_policy(tokenizer, root / "tiny_policy")
    data = pipeline_dir / "dataset"
    for preset in compare_local.PRESETS:
        run(compose_config([
            f"relate.preset={preset}", f"relate.ctcvr_model_dir={pipeline_dir / 'ctcvr_model'}",
            f"actor_rollout_ref.model.path={policy}", f"data.train_files={data / 'train.parquet'}",
            f"data.val_files={data / 'val.parquet'}", "data.train_batch_size=2", "data.max_prompt_length=400",
            "data.max_response_length=16", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=1",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.optim.lr=1e-3",
            f"local.output_dir={root / 'runs' / preset}", "local.max_steps=2", "local.checkpoint_every=0",
            "local.val_every=0", "local.tensorboard=false", "local.progress=false",
        ]))
    return root / "runs"


@pytest.fixture(scope="module")
def compared(ablation_dir) -> tuple[Path, dict]:
    """compare_local on the five runs: held-out evaluation of 2 val prompts per final/ model plus
    the starting policy (--initial-model auto: the runs' model path)."""
    out = ablation_dir.parent / "comparison"
    assert compare_local.main(["--runs-dir", str(ablation_dir), "--output-dir", str(out), "--limit", "2"]) == 0
    return out, json.loads((out / "table3.json").read_text(encoding="utf-8"))


def _finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def test_table3_heldout_has_five_finite_rows(compared):
    out, result = compared
    rows = result["heldout"]["rows"]
    assert [r["model"] for r in rows] == ["Model 1", "Model 2", "Model 3", "Model 4", "RELATE"]
    for row in rows:
        for key, _ in compare_local.COLUMNS:
            assert _finite(row[key]), (row["model"], key, row[key])
        assert _finite(row["simulated_ctcvr_pct"]) and row["texts"] == 2
        assert 0 <= row["structural_quality"] <= 1 and 0 <= row["diversity"] <= 1 and 0 <= row["semantic_quality"] <= 1
    initial = result["heldout"]["initial"]
    assert initial["model"] == compare_local.INITIAL_LABEL and _finite(initial["ctcvr_pct"])
    # Each row is recipe.relate.evaluate's own Table 3 on that run's generations.
    own = json.loads((out / "evaluation" / "model3" / "evaluation.json").read_text(encoding="utf-8"))
    assert own["runs"][0]["name"] == "experiment" and own["runs"][0]["metrics"]["diversity"]["value"] == rows[2]["diversity"]
    assert own["settings"]["preset"] == "model3"
    generated = [json.loads(line) for line in (out / "generations" / "relate.jsonl").read_text().splitlines()]
    assert len(generated) == 2 and all(g["model"].endswith("relate/final") for g in generated)

    md = (out / "table3.md").read_text(encoding="utf-8")
    assert "| Model ID | Structural Quality | CTCVR(%) | Diversity | Semantic Quality |" in md
    for label in ("Model 1", "Model 2", "Model 3", "Model 4", "RELATE"):
        assert md.count(f"| {label} |") == 2  # held-out and training tables
    assert_png(out / "curves.png")


def test_training_table_reports_what_each_preset_computes(compared):
    _, result = compared
    rows = {r["preset"]: r for r in result["training"]["rows"]}
    assert list(rows) == list(compare_local.PRESETS) and result["training"]["window"] == 1
    for preset, row in rows.items():
        assert row["steps"] == [2]
        assert _finite(row["structural_quality"]) and _finite(row["diversity"])
        # n/a (None), never 0, where the preset's reward has no such component.
        assert (row["ctcvr_pct"] is None) == (preset == "model1")
        assert (row["semantic_quality"] is None) == (preset in ("model1", "model2", "model3"))


def test_cached_rerun_and_no_eval(ablation_dir, compared, capsys):
    out, result = compared
    assert compare_local.main(["--runs-dir", str(ablation_dir), "--output-dir", str(out), "--limit", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": cached (") == 12  # 6 models x (generate, evaluate)
    assert json.loads((out / "table3.json").read_text())["heldout"]["rows"] == result["heldout"]["rows"]
    quick = ablation_dir.parent / "quick"
    assert compare_local.main(["--runs-dir", str(ablation_dir), "--output-dir", str(quick), "--no-eval"]) == 0
    assert json.loads((quick / "table3.json").read_text())["heldout"] is None
    assert_png(quick / "curves.png")


# ---- errors name what is wrong ----------------------------------------------------------------------


def _copy_run(src: Path, dst: Path) -> Path:
    """config.yaml and metrics.csv of a run (enough for --no-eval)."""
    dst.mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv"):
        shutil.copy(src / name, dst / name)
    return dst


def _no_eval(ablation_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["--runs-dir", str(ablation_dir), "--output-dir", str(out), "--no-eval", *extra]


def test_missing_run_folder_is_named(ablation_dir, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "model3"
    assert compare_local.main(_no_eval(ablation_dir, tmp_path / "o", "--run", f"model3={missing}")) == 2
    err = capsys.readouterr().err
    assert "model3" in err and str(missing) in err
    parent = tmp_path / "four"
    for preset in ("model1", "model2", "model4", "relate"):
        _copy_run(ablation_dir / preset, parent / preset)
    assert compare_local.main(["--runs-dir", str(parent), "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert f"run folder of model3 not found: {parent / 'model3'}" in err
    assert compare_local.main(["--run", f"model1={ablation_dir / 'model1'}", "--no-eval"]) == 2
    assert "no run folder for model2, model3, model4, relate" in capsys.readouterr().err


def test_missing_metric_is_named(ablation_dir, tmp_path, capsys):
    run = _copy_run(ablation_dir / "model4", tmp_path / "model4")
    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[c for c in rows[0] if c != "relate/reward/relevance"])
        writer.writeheader()
        writer.writerows([{k: v for k, v in r.items() if k != "relate/reward/relevance"} for r in rows])
    assert compare_local.main(_no_eval(ablation_dir, tmp_path / "o", "--run", f"model4={run}")) == 2
    err = capsys.readouterr().err
    assert "run model4" in err and "'relate/reward/relevance'" in err and "metrics.csv" in err


def test_config_difference_and_unfinished_run_are_named(ablation_dir, tmp_path, capsys):
    from omegaconf import OmegaConf

    run = _copy_run(ablation_dir / "model2", tmp_path / "model2")
    config = OmegaConf.load(run / "config.yaml")
    config.local.seed = 7
    OmegaConf.save(config, run / "config.yaml")
    assert compare_local.main(_no_eval(ablation_dir, tmp_path / "o", "--run", f"model2={run}")) == 2
    err = capsys.readouterr().err
    assert "local.seed: model1=1, model2=7" in err
    assert compare_local.main(_no_eval(ablation_dir, tmp_path / "o", "--run", f"model2={run}", "--allow-config-diff")) == 0
    assert "local.seed" in json.loads((tmp_path / "o" / "table3.json").read_text())["warnings"][0]

    wrong = _copy_run(ablation_dir / "model2", tmp_path / "wrong")
    assert compare_local.main(_no_eval(ablation_dir, tmp_path / "o", "--run", f"model1={wrong}")) == 2
    assert "has relate.preset='model2', not 'model1'" in capsys.readouterr().err

    short = _copy_run(ablation_dir / "relate", tmp_path / "relate")
    lines = (short / "metrics.csv").read_text().splitlines()
    (short / "metrics.csv").write_text("\n".join(lines[:2]) + "\n")  # header + step 1
    assert compare_local.main(_no_eval(ablation_dir, tmp_path / "o", "--run", f"relate={short}")) == 2
    assert f"relate at step 1 of local.max_steps=2 ({short})" in capsys.readouterr().err
    assert compare_local.main(_no_eval(ablation_dir, tmp_path / "o", "--run", f"relate={short}", "--allow-incomplete")) == 0
