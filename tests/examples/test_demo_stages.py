"""The demo's stage runner (examples/stages.py), its training-resume rule and the report's helpers:
fast unit tests, no model involved."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from examples import demo, report
from examples.stages import Stage, StageError, code_inputs, read_marker, run_stages, stage_times


def _writer(path: Path, calls: list[str], name: str, text: str = "x"):
    def run() -> None:
        calls.append(name)
        path.write_text(text)
    return run


def _touch_newer(path: Path) -> None:
    """Give ``path`` an mtime clearly after any marker written so far (coarse file-system clocks)."""
    t = time.time() + 2
    os.utime(path, (t, t))


def _age(path: Path, seconds: float) -> None:
    """Move ``path``'s mtime into the past (markers are stamped with the stage's start time)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture
def pipeline(tmp_path):
    """Two chained stages: a (input src.txt -> a.txt), b (a.txt -> b.txt)."""
    src = tmp_path / "src.txt"
    src.write_text("v1")
    _age(src, 100)
    calls: list[str] = []

    def stages(params=None):
        return [Stage("a", _writer(tmp_path / "a.txt", calls, "a"), inputs=[src], outputs=[tmp_path / "a.txt"],
                      params=params or {}),
                Stage("b", _writer(tmp_path / "b.txt", calls, "b"), inputs=[tmp_path / "a.txt"],
                      outputs=[tmp_path / "b.txt"])]
    return tmp_path, src, calls, stages


def test_second_run_skips_and_input_change_reruns_downstream(pipeline):
    state, src, calls, stages = pipeline
    run_stages(stages(), state)
    assert calls == ["a", "b"]
    run_stages(stages(), state)
    assert calls == ["a", "b"], "fresh stages must be skipped"
    src.write_text("v2")  # newer than a's marker (stamped with a's start time)
    _touch_newer(src)
    run_stages(stages(), state)
    assert calls == ["a", "b", "a", "b"], "a re-ran, so b's input is newer than b's marker"


def test_params_and_missing_outputs_make_a_stage_stale(pipeline):
    state, _, calls, stages = pipeline
    run_stages(stages({"steps": 1}), state)
    run_stages(stages({"steps": 2}), state)
    assert calls == ["a", "b", "a", "b"]
    assert read_marker(state / ".stage-a.done")["params"] == {"steps": 2}
    (state / "b.txt").unlink()
    run_stages(stages({"steps": 2}), state)
    assert calls[-1:] == ["b"] and calls.count("a") == 2


def test_marker_written_only_on_success(pipeline):
    state, src, calls, stages = pipeline
    run_stages(stages(), state)

    def interrupted() -> None:
        (state / "a.txt").write_text("half")
        raise KeyboardInterrupt

    src.write_text("v2")
    _touch_newer(src)
    broken = [Stage("a", interrupted, inputs=[src], outputs=[state / "a.txt"])]
    with pytest.raises(KeyboardInterrupt):
        run_stages(broken, state)
    assert not (state / ".stage-a.done").exists(), "an interrupted stage must not look finished"
    run_stages(stages(), state)
    assert calls == ["a", "b", "a", "b"]


def test_nonzero_exit_code_is_a_failure(tmp_path):
    out = tmp_path / "o.txt"
    with pytest.raises(StageError, match="exit code 2"):
        run_stages([Stage("cli", lambda: (out.write_text("x"), 2)[1], inputs=[], outputs=[out])], tmp_path)
    assert not (tmp_path / ".stage-cli.done").exists()
    run_stages([Stage("ok", lambda: (out.write_text("x"), 0)[1], inputs=[], outputs=[out])], tmp_path)
    assert stage_times(tmp_path, ["ok", "cli"])["cli"] is None
    assert stage_times(tmp_path, ["ok"])["ok"] >= 0


def test_input_edited_while_the_stage_ran_makes_it_stale(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("v1")
    _age(src, 100)
    out = tmp_path / "o.txt"

    def run() -> None:
        out.write_text("x")
        src.write_text("edited during the run")
        _touch_newer(src)

    stage = Stage("s", run, inputs=[src], outputs=[out])
    run_stages([stage], tmp_path)
    assert stage.stale_reason(tmp_path) == f"input changed: {src}"


def _timed(path: Path, spans: dict[str, tuple[float, float]], name: str, seconds: float = 0.3, fail: bool = False):
    """A stage body that records when it ran, sleeps ``seconds`` and writes ``path`` (or fails)."""
    def run() -> None:
        t0 = time.perf_counter()
        time.sleep(seconds)
        if fail:
            raise RuntimeError(f"{name} broke")
        path.write_text(name)
        spans[name] = (t0, time.perf_counter())
    return run


def _diamond(tmp_path: Path, spans: dict, fail_b: bool = False) -> list[Stage]:
    """a and b independent, c reads a's output folder, d reads nothing of them."""
    (tmp_path / "a").mkdir(exist_ok=True)
    return [Stage("a", _timed(tmp_path / "a" / "out.txt", spans, "a"), inputs=[], outputs=[tmp_path / "a"]),
            Stage("b", _timed(tmp_path / "b.txt", spans, "b", fail=fail_b), inputs=[], outputs=[tmp_path / "b.txt"]),
            Stage("c", _timed(tmp_path / "c.txt", spans, "c"), inputs=[tmp_path / "a" / "out.txt"],
                  outputs=[tmp_path / "c.txt"]),
            Stage("d", _timed(tmp_path / "d.txt", spans, "d"), inputs=[], outputs=[tmp_path / "d.txt"])]


def test_stages_run_side_by_side_once_what_they_read_is_written(tmp_path):
    spans: dict[str, tuple[float, float]] = {}
    run_stages(_diamond(tmp_path, spans), tmp_path, at_once=2)
    (a0, a1), (b0, b1), (c0, c1), (d0, d1) = (spans[k] for k in "abcd")
    assert b0 < a1 and a0 < b1, "a and b are independent: they overlap"
    assert c0 >= a1, "c reads a file inside a's output folder: it starts after a ended"
    assert max(c0, d0) < min(c1, d1), "c and d overlap: neither reads the other"
    assert all((tmp_path / f".stage-{k}.done").exists() for k in "abcd")
    spans.clear()
    run_stages(_diamond(tmp_path, spans), tmp_path, at_once=2)
    assert spans == {}, "a rerun skips every fresh stage"


def test_one_at_a_time_never_overlaps(tmp_path):
    spans: dict[str, tuple[float, float]] = {}
    run_stages(_diamond(tmp_path, spans), tmp_path)
    order = sorted(spans.values())
    assert [k for k in "abcd"] == sorted(spans, key=lambda k: spans[k][0])
    assert all(end <= start for (_, end), (start, _) in zip(order, order[1:]))


def test_a_failing_stage_side_by_side_stops_the_run_after_the_running_ones(tmp_path):
    spans: dict[str, tuple[float, float]] = {}
    with pytest.raises(RuntimeError, match="b broke"):
        run_stages(_diamond(tmp_path, spans, fail_b=True), tmp_path, at_once=2)
    assert "a" in spans and (tmp_path / ".stage-a.done").exists(), "a ran beside b and finished"
    assert not (tmp_path / ".stage-b.done").exists()
    assert "d" not in spans, "no stage starts after a failure is seen"
    with pytest.raises(ValueError, match="at_once"):
        run_stages([], tmp_path, at_once=0)


def test_code_inputs_follow_every_project_import_and_take_the_configs():
    import recipe.relate
    import relate_eval.generate
    import recipe.relate.main_relate

    files = code_inputs(recipe.relate, relate_eval.generate)
    names = {p.name for p in files}
    assert {"main_relate.py", "relate_trainer.yaml", "cpu.yaml", "generate.py"} <= names
    assert all(p.is_file() for p in files)
    # followed transitively, also through imports inside functions; nothing outside the repository
    closure = {p.relative_to(demo.REPO).as_posix() for p in code_inputs(recipe.relate.main_relate)}
    assert {"recipe/relate/relate_trainer.py", "recipe/relate/scoring.py", "reward_fns/compose.py",
            "ctcvr_model/scorer.py", "relate_common/records.py", "reward_fns/lexicons/stopwords.yaml"} <= closure
    assert "relate_eval/generate.py" not in closure and not any(".venv" in p for p in closure)


def test_a_new_import_joins_the_code_inputs(tmp_path, monkeypatch):
    """The code a stage runs is computed: a module that starts importing another brings it in."""
    import sys

    pkg = tmp_path / "probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("X = 1\n")
    (pkg / "entry.py").write_text("def run():\n    return 0\n")
    monkeypatch.setattr("examples.stages.PROJECT_ROOT", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import probe_pkg.entry as entry

    assert [p.name for p in code_inputs(entry)] == ["__init__.py", "entry.py"]
    (pkg / "entry.py").write_text("def run():\n    from probe_pkg import helper\n    return helper.X\n")
    from examples import stages as stages_mod

    stages_mod._imports.cache_clear()
    assert [p.name for p in code_inputs(entry)] == ["__init__.py", "entry.py", "helper.py"]
    sys.modules.pop("probe_pkg.entry", None)


def test_every_stage_depends_on_the_code_it_runs(tmp_path):
    stages = {s.name: s for s in demo.build_stages(tmp_path, demo.SAMPLE_RECORDS, demo.SMOKE, 0)}
    assert tuple(stages) == demo.STAGE_NAMES
    verl_glue = ["verl_jobs.py", "engine.py", "env.py"]
    needs = {"sft-dataset": ["build_sft_dataset.py"],
             "sft-train": ["main_sft.py", "relate_sft.yaml", *verl_glue],
             "relate-train": ["main_relate.py", "relate_trainer.py", "scoring.py", "relate_trainer.yaml", "compose.py",
                              "scorer.py", "relate_core_algos.py", *verl_glue],
             "generate-start": ["generate.py", "sampling.py"], "generate-sft": ["generate.py"],
             "generate-relate": ["generate.py"],
             "evaluate": ["evaluate.py", "user_model.py", "intervals.py", "generated.py"], "report": ["report.py", "plots.py"],
             "ctcvr-scorer": ["train.py"],
             "starting-model": ["corpus.py", "build.py", "pretrain.py", "model.py", "simulate_logs.py", "prompts.py"]}
    for name, files in needs.items():
        have = {p.name for p in stages[name].inputs}
        assert set(files) <= have, f"{name} lacks {set(files) - have}"


@pytest.mark.parametrize("budget", ["FULL", "SMOLLM2", "SMOKE"])
def test_each_budget_passes_the_preflight_of_the_relate_job(budget, tmp_path, pipeline_dir, tiny_model_dir):
    """Every budget's RL job composes and passes verl's and our batch checks (a micro-batch that does not
    divide the mini-batch once stopped `make demo` at its RL stage), on the inputs the earlier stages write
    (the preflight names each missing one): the real RL parquet and CTCVR model of the pipeline fixture and a
    real transformers folder as the SFT stage's policy."""
    import shutil
    import subprocess

    layout = demo.Layout(tmp_path)
    shutil.copytree(pipeline_dir / "dataset", layout.dataset)
    shutil.copytree(pipeline_dir / "ctcvr_model", layout.scorer)
    shutil.copytree(tiny_model_dir, layout.sft_run / "final")
    job = demo.relate_job(getattr(demo, budget), layout)
    proc = subprocess.run([*job.argv(), "relate.dry_run=true"], cwd=demo.REPO, env=job.env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "preflight passed" in proc.stdout + proc.stderr


@pytest.mark.parametrize("budget", ["FULL", "SMOLLM2", "SMOKE"])
def test_the_sft_job_asks_verl_for_enough_epochs_to_run_every_step(budget, tmp_path):
    """verl's SFT loop stops at total_epochs even when total_training_steps is not reached; one epoch
    is at least one step, so epochs = steps lets the step budget decide (the CPU backend's default of 2
    epochs once cut the demo's 54 SFT steps to 36)."""
    b = getattr(demo, budget)
    overrides = dict(o.split("=", 1) for o in demo.sft_job(b, demo.Layout(tmp_path), tmp_path / "m").overrides)
    assert int(overrides["trainer.total_training_steps"]) == b.sft_steps
    assert int(overrides["trainer.total_epochs"]) >= b.sft_steps


def test_budget_overrides_are_validated():
    parse = demo.build_parser().parse_args
    assert demo.resolve_budget(parse(["--smoke", "--steps", "3"])) == demo.SMOKE.__class__(
        **{**demo.SMOKE.__dict__, "steps": 3})
    assert demo.resolve_budget(parse([])) == demo.FULL
    with pytest.raises(SystemExit):
        demo.resolve_budget(parse(["--steps", "0"]))
    with pytest.raises(SystemExit):
        demo.resolve_budget(parse(["--impressions", "10"]))
    with pytest.raises(SystemExit, match="--sft-steps must be >= 1"):
        demo.resolve_budget(parse(["--sft-steps", "0"]))


def test_report_sections_and_examples():
    md = "# t\n\n## Table 1 (x)\n\n| a |\n\n## Table 3 (y)\n\nrow\n## Details\n"
    one, three = report.markdown_sections(md, Path("e.md"), ["Table 1", "Table 3"])
    assert one.startswith("### Table 1 (x)") and "| a |" in one and "Details" not in three
    with pytest.raises(report.ReportError, match="Predicted"):
        report.markdown_sections(md, Path("e.md"), ["Predicted"])
    def rows(answers):
        return [{"id": i, "language": lang, "response": r} for (i, lang), r in zip(
            [("z1", "zh"), ("z2", "zh"), ("z3", "zh"), ("e1", "en"), ("e2", "en")], answers)]

    # Prompts where the policies' ads differ come first (the first of each language), in file order.
    sets = {"start": rows(["a", "b", "c", "d", "e"]), "sft": rows(["a", "x", "y", "d", "z"])}
    assert report.pick_examples(sets) == ["z2", "z3", "e2"]
    same = {"start": rows(["a", "b"]), "sft": rows(["a", "b"])}
    assert report.pick_examples(same) == ["z1", "z2"]  # nothing differs: the prompts as they come
    with pytest.raises(report.ReportError, match="answered by every policy"):
        report.pick_examples({"start": rows(["a"]), "sft": [{"id": "other", "language": "zh", "response": "a"}]})
    assert report._fence("a ``` b").startswith("````text")
