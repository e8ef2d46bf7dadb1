"""The cold start: the SFT set from records + logs (data_prep/build_sft_dataset.py) and verl's own SFT
trainer on the CPU backend (recipe/relate/main_sft.py via examples/run_sft_cpu.sh) on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep import build_dataset, build_sft_dataset
from data_prep.build_sft_dataset import LoggedAd, overall_ctcvr, select_sft_ads
from data_prep.config import SFTDatasetConfig
from relate_common.ad_format import parse_ad
from tests.fixtures import as_json, files_of, record, write_jsonl

from tests.fixtures import REPO

logged_ads = st.lists(
    st.builds(LoggedAd, record_id=st.sampled_from(["a", "b", "c"]), title=st.text("xyz", min_size=1, max_size=3),
              description=st.just("d"), impressions=st.integers(1, 5000).map(float),
              conversions=st.integers(0, 8).map(float)),
    min_size=1, max_size=12,
).filter(lambda ads: all(a.conversions <= a.impressions for a in ads))


@settings(max_examples=200, deadline=None)
@given(logged_ads, st.integers(1, 3), st.integers(0, 3), st.sampled_from([0.0, 1.0, 5.0]))
def test_selection_takes_the_best_posterior_ctcvr_among_qualifying_ads(ads, k, min_conv, prior):
    config = SFTDatasetConfig(variants_per_record=k, min_conversions=min_conv, prior_conversions=prior)
    chosen = select_sft_ads(ads, config)
    mean = overall_ctcvr(ads)
    m = prior / mean if mean > 0 else 0.0
    for rid in {a.record_id for a in ads}:
        qualifying = [a for a in ads if a.record_id == rid and a.conversions >= min_conv]
        picked = chosen.get(rid, [])
        assert len(picked) == min(k, len(qualifying))  # never an ad below min_conversions, never fewer than k
        scores = sorted((a.posterior_ctcvr(mean, m) for a in qualifying), reverse=True)
        assert [s for _, s in picked] == pytest.approx(scores[: len(picked)])  # the top posteriors, best first


def test_the_prior_keeps_a_lucky_small_ad_below_a_proven_one():
    lucky = LoggedAd("r", "lucky", "d", impressions=300, conversions=1)  # raw CTCVR 0.33%
    proven = LoggedAd("r", "proven", "d", impressions=30000, conversions=90)  # raw 0.30%
    filler = LoggedAd("q", "other", "d", impressions=100000, conversions=100)  # overall rate ~0.15%
    [(best, _)] = select_sft_ads([lucky, proven, filler], SFTDatasetConfig(prior_conversions=1.0))["r"]
    assert best.title == "proven"
    [(raw_best, _)] = select_sft_ads([lucky, proven, filler], SFTDatasetConfig(prior_conversions=0.0))["r"]
    assert raw_best.title == "lucky"  # without the prior, the raw rate decides


def test_cli_builds_the_sft_set_on_the_rl_split(pipeline_dir, tmp_path, capsys):
    out = tmp_path / "sft"
    summary = build_sft_dataset.main(["--logs", str(pipeline_dir / "logs.parquet"), "--output-dir", str(out)])
    train, val = pd.read_parquet(out / "train.parquet"), pd.read_parquet(out / "val.parquet")
    rl_val = pd.read_parquet(pipeline_dir / "dataset" / "val.parquet")
    # SFT holds out exactly the RL set's val prompts, with the RL prompt's own turns
    assert sorted(e["id"] for e in val.extra_info) == sorted(e["id"] for e in rl_val.extra_info)
    rl_prompt = {e["id"]: [dict(m) for m in p] for e, p in zip(rl_val.extra_info, rl_val.prompt)}
    for info, messages in zip(val.extra_info, val.messages):
        assert [dict(m) for m in messages[:-1]] == rl_prompt[info["id"]]
    # every answer is in the exact output format; the bundled records all have reference ads
    for messages in pd.concat([train, val]).messages:
        assert messages[-1]["role"] == "assistant" and parse_ad(messages[-1]["content"]).ok
    assert summary["written"]["train"] + summary["written"]["val"] == 320 and summary["records_unselected"] == 0
    by_source = summary["records_by_source"]
    assert by_source["posterior"] > 0 and by_source["posterior"] + by_source["reference"] == 320
    posterior_rows = [e for e in train.extra_info if e["source"] == "posterior"]
    assert all(e["conversions"] >= 1 for e in posterior_rows)
    assert "records answered by logged posterior ads" in capsys.readouterr().out

    off = tmp_path / "no_fallback"
    summary = build_sft_dataset.main(["--logs", str(pipeline_dir / "logs.parquet"), "--output-dir", str(off),
                                      "--no-reference-fallback"])
    unselected = [json.loads(line) for line in (off / "unselected.jsonl").read_text().splitlines()]
    assert len(unselected) == summary["records_unselected"] == 320 - by_source["posterior"]


def test_compact_style_sft_prompts_are_the_compact_rl_prompts(pipeline_dir, tmp_path):
    build_dataset.main(["--output-dir", str(tmp_path / "rl"), "--prompt-style", "compact"])
    summary = build_sft_dataset.main(["--logs", str(pipeline_dir / "logs.parquet"), "--output-dir", str(tmp_path / "sft"),
                                      "--prompt-style", "compact"])
    assert summary["prompt_style"] == "compact"
    rl = pd.read_parquet(tmp_path / "rl" / "train.parquet")
    sft = pd.read_parquet(tmp_path / "sft" / "train.parquet")
    rl_prompt = {e["id"]: [dict(m) for m in p] for e, p in zip(rl.extra_info, rl.prompt)}
    assert len(sft) == len(rl)
    for info, messages in zip(sft.extra_info, sft.messages):
        assert info["prompt_version"] == "v1-compact"
        assert [dict(m) for m in messages[:-1]] == rl_prompt[info["id"]]


def _log_row(**overrides):
    row = {"record_id": "r1", "query": "q", "bidword": "b", "title": "T", "description": "D", "click": 1, "conversion": 1}
    row.update(overrides)
    return row


@pytest.mark.parametrize(("row", "field", "reason"), [
    (_log_row(record_id="nope"), "record_id", "no record with id 'nope'"),
    (_log_row(click=0), "conversion", "conversion without click"),
    ({k: v for k, v in _log_row().items() if k != "title"}, "title", "missing required field"),
])
def test_bad_log_rows_name_file_row_and_field(tmp_path, capsys, row, field, reason):
    records = write_jsonl(tmp_path / "records.jsonl", [record(1)])
    logs = write_jsonl(tmp_path / "logs.jsonl", [_log_row(), row])
    with pytest.raises(SystemExit) as exc:
        build_sft_dataset.main(["--records", str(records), "--logs", str(logs), "--output-dir", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{logs}: row 2, field '{field}'" in err and reason in err


def test_verl_sft_trainer_trains_on_cpu(tiny_model_dir, tmp_path):
    """examples/run_sft_cpu.sh: verl's SFTTrainer through the CPU backend lowers the loss on its data and
    writes a transformers checkpoint that the RL scripts can start from."""
    import torch
    from transformers import AutoModelForCausalLM

    rows = [{"messages": [{"role": "user", "content": f"Write an ad for plumber {i}."},
                          {"role": "assistant", "content": f"Title: Plumber {i} today\nDescription: Licensed, fast, fixed prices."}]}
            for i in range(4)]
    data = tmp_path / "sft"
    data.mkdir()
    pd.DataFrame(rows).to_parquet(data / "train.parquet")
    pd.DataFrame(rows[:2]).to_parquet(data / "val.parquet")
    run = tmp_path / "run"
    env = {**os.environ, "MODEL_PATH": str(tiny_model_dir), "SFT_DATA": str(data), "RUN_DIR": str(run), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "examples/run_sft_cpu.sh", "trainer.total_epochs=6", "data.train_batch_size=4",
                           "data.micro_batch_size_per_gpu=2", "optim.lr=1e-3", "data.max_length=128"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["data"]["train/loss"] for m in metrics if "train/loss" in m["data"]]
    assert len(losses) == 6 and all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.5, losses
    [final] = sorted((run / "checkpoints").glob("global_step_*/huggingface"))[-1:]
    assert final.parent.name == "global_step_6"
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = AutoModelForCausalLM.from_pretrained(final)
    moved = [name for name, p in tuned.named_parameters() if not torch.equal(p, start.get_parameter(name))]
    assert moved, "the checkpoint holds the starting weights"


def test_run_with_a_config_matches_main(pipeline_dir, tmp_path, capsys):
    """run(SFTDatasetRun) is main(argv) without the parsing: same summary, report and files."""
    out = tmp_path / "sft"
    by_argv = build_sft_dataset.main([
        "--logs", str(pipeline_dir / "logs.parquet"), "--output-dir", str(out), "--variants-per-record", "2",
        "--prior-conversions", "2", "--no-reference-fallback", "--val-fraction", "0.2", "--seed", "1",
        "--prompt-style", "compact", "--skip-invalid"])
    argv_report, argv_files = capsys.readouterr().out, files_of(out)
    rule = SFTDatasetConfig(variants_per_record=2, prior_conversions=2.0, reference_fallback=False)
    by_config = build_sft_dataset.run(build_sft_dataset.SFTDatasetRun(
        logs=pipeline_dir / "logs.parquet", output_dir=out, rule=rule, val_fraction=0.2, seed=1, prompt_style="compact",
        skip_invalid=True))
    assert as_json(by_config) == as_json(by_argv)
    assert capsys.readouterr().out == argv_report
    assert files_of(out) == argv_files
