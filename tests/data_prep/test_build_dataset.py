"""data_prep/build_dataset.py: records -> verl RL parquet, checked through verl's own RLHFDataset."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep import build_dataset
from relate_common.ad_format import FIELD_LABELS, LENGTH_LIMITS
from tests.fixtures import record, write_csv, write_jsonl

from tests.fixtures import REPO


@pytest.fixture(scope="module")
def sample_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    summary = build_dataset.main(["--output-dir", str(out)])
    return out, summary


def test_sample_records_split_deterministically(sample_dataset, tmp_path):
    out, summary = sample_dataset
    train, val = pd.read_parquet(out / "train.parquet"), pd.read_parquet(out / "val.parquet")
    assert len(train) + len(val) == summary["rows_read"] == 320
    assert 0.05 <= len(val) / 320 <= 0.15
    ids = lambda df: sorted(df["extra_info"].map(lambda e: e["id"]))  # noqa: E731
    assert not set(ids(train)) & set(ids(val))
    again = build_dataset.main(["--output-dir", str(tmp_path / "again")])
    assert again["written"] == summary["written"]
    assert ids(pd.read_parquet(tmp_path / "again" / "val.parquet")) == ids(val)
    other = build_dataset.main(["--output-dir", str(tmp_path / "other"), "--seed", "7"])
    assert ids(pd.read_parquet(tmp_path / "other" / "val.parquet")) != ids(val)
    assert other["written"]["train"] + other["written"]["val"] == 320


def test_row_format_matches_what_rewards_read(sample_dataset):
    out, _ = sample_dataset
    row = pd.read_parquet(out / "train.parquet").iloc[0]
    assert row["data_source"] == "relate_ads" and row["ability"] == "ad_text"
    roles = [m["role"] for m in row["prompt"]]
    assert roles == ["system", "user"]
    truth = row["reward_model"]["ground_truth"]
    assert row["reward_model"]["style"] == "rule"
    assert set(build_dataset.GROUND_TRUTH_FIELDS) <= set(truth)
    lang = truth["language"]
    system = row["prompt"][0]["content"]
    # The system message states the exact output format the format reward parses.
    title_label, desc_label = FIELD_LABELS[lang]
    assert title_label in system and desc_label in system
    assert str(LENGTH_LIMITS[lang]["title"][1]) in system
    user = row["prompt"][1]["content"]
    assert truth["query"] in user and truth["bidword"] in user
    assert all(p in user for p in truth["selling_points"])
    info = row["extra_info"]
    assert info["split"] == "train" and info["index"] == 0 and info["id"] == truth["id"]


def test_compact_prompt_keeps_every_field_and_the_format_in_far_fewer_tokens(sample_dataset, tokenizer, tmp_path):
    out, _ = sample_dataset
    compact = build_dataset.main(["--output-dir", str(tmp_path / "compact"), "--prompt-style", "compact"])
    assert compact["prompt_style"] == "compact"
    full_rows = pd.read_parquet(out / "train.parquet")
    rows = pd.read_parquet(tmp_path / "compact" / "train.parquet")
    # The same records in the same splits and order: only the prompt differs.
    assert list(rows["extra_info"].map(lambda e: e["id"])) == list(full_rows["extra_info"].map(lambda e: e["id"]))
    assert set(rows["extra_info"].map(lambda e: e["prompt_version"])) == {"v1-compact"}
    for (_, row), (_, full) in zip(rows.iterrows(), full_rows.iterrows()):
        truth = row["reward_model"]["ground_truth"]
        lang = truth["language"]
        system, user = row["prompt"][0]["content"], row["prompt"][1]["content"]
        title_label, desc_label = FIELD_LABELS[lang]
        assert title_label in system and desc_label in system
        assert all(str(v) in system for limits in LENGTH_LIMITS[lang].values() for v in limits)
        assert user == full["prompt"][1]["content"]  # query, bidword, selling points, industry, landing page
        assert all(p in user for p in truth["selling_points"]) and truth["landing_page"] in user
        n_compact, n_full = (len(tokenizer(tokenizer.apply_chat_template(list(r["prompt"]), add_generation_prompt=True,
                                                                         tokenize=False))["input_ids"]) for r in (row, full))
        assert n_compact < 0.7 * n_full, (truth["id"], n_compact, n_full)


def test_unknown_prompt_style_is_refused_with_the_known_ones():
    from data_prep.prompts import build_messages
    from relate_common.records import parse_record

    with pytest.raises(ValueError, match="full, compact"):
        build_messages(parse_record(record(1), source="t", row=1), "tiny")
    with pytest.raises(SystemExit):
        build_dataset.main(["--output-dir", "/tmp/never", "--prompt-style", "tiny"])


def test_parquet_loads_through_verl_rlhf_dataset(sample_dataset, tokenizer, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    out, summary = sample_dataset
    config = OmegaConf.create({"max_prompt_length": 2048, "filter_overlong_prompts": True,
                               "cache_dir": str(tmp_path / "verl-cache"), "filter_overlong_prompts_workers": 1})
    dataset = RLHFDataset(str(out / "val.parquet"), tokenizer, config)
    assert len(dataset) == summary["written"]["val"]
    item = dataset[0]
    messages = item["raw_prompt"]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    truth = item["reward_model"]["ground_truth"]
    assert truth["query"] in rendered and rendered.rstrip().endswith("<|im_start|>assistant")
    assert item["data_source"] == "relate_ads" and item["index"] == item["extra_info"]["index"]


def test_verl_filters_overlong_prompts_of_our_dataset(sample_dataset, tokenizer, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    out, _ = sample_dataset
    config = OmegaConf.create({"max_prompt_length": 400, "filter_overlong_prompts": True,
                               "cache_dir": str(tmp_path / "verl-cache"), "filter_overlong_prompts_workers": 1})
    dataset = RLHFDataset(str(out / "val.parquet"), tokenizer, config)
    # SmolLM2 spends ~2 tokens per Chinese character: English prompts fit in 400 tokens, Chinese ones do not.
    val = pd.read_parquet(out / "val.parquet")
    n_en = int((val["reward_model"].map(lambda r: r["ground_truth"]["language"]) == "en").sum())
    assert 0 < n_en < len(val)
    assert len(dataset) == n_en


def test_csv_and_parquet_inputs_with_extra_columns(tmp_path):
    rows = [record(1, selling_points="fast|cheap | licensed", campaign="spring", bid=1.5),
            record(2, selling_points="open 24/7", campaign="summer", bid=2)]
    write_csv(tmp_path / "ads.csv", rows)
    summary = build_dataset.main(["--input", str(tmp_path / "ads.csv"), "--output-dir", str(tmp_path / "csv"), "--val-fraction", "0"])
    assert summary["written"] == {"train": 2, "val": 0}
    df = pd.read_parquet(tmp_path / "csv" / "train.parquet")
    first = df.iloc[0]
    assert list(first["reward_model"]["ground_truth"]["selling_points"]) == ["fast", "cheap", "licensed"]
    assert first["extra_info"]["campaign"] == "spring"
    assert first["reward_model"]["ground_truth"]["language"] == "en"

    pd.DataFrame([record(3, campaign="x"), record(4, campaign="y")]).to_parquet(tmp_path / "ads.parquet")
    summary = build_dataset.main(["--input", str(tmp_path / "ads.parquet"), "--output-dir", str(tmp_path / "pq"), "--val-fraction", "0"])
    assert summary["written"]["train"] == 2


def test_mixed_type_extra_column_is_stored_as_text(tmp_path):
    write_jsonl(tmp_path / "ads.jsonl", [record(1, bid=1), record(2, bid="high")])
    summary = build_dataset.main(["--input", str(tmp_path / "ads.jsonl"), "--output-dir", str(tmp_path / "o"), "--val-fraction", "0"])
    assert summary["extra_columns_stringified"] == ["bid"]
    bids = sorted(pd.read_parquet(tmp_path / "o" / "train.parquet")["extra_info"].map(lambda e: e["bid"]))
    assert bids == ["1", "high"]


def test_language_detected_when_absent_and_normalised_when_given(tmp_path):
    rows = [record(1, query="近视怎么矫正", bidword="近视矫正", selling_points=["20年眼科医院", "术前检查免费"]),
            record(2, language="EN-us"), record(3, language="zh-CN")]
    write_jsonl(tmp_path / "ads.jsonl", rows)
    build_dataset.main(["--input", str(tmp_path / "ads.jsonl"), "--output-dir", str(tmp_path / "o"), "--val-fraction", "0"])
    langs = pd.read_parquet(tmp_path / "o" / "train.parquet")["reward_model"].map(lambda r: r["ground_truth"]["language"])
    assert list(langs) == ["zh", "en", "zh"]


def test_duplicates_removed_and_counted(tmp_path, capsys):
    write_jsonl(tmp_path / "ads.jsonl", [record(1), record(2), record(1, query="another query")])
    summary = build_dataset.main(["--input", str(tmp_path / "ads.jsonl"), "--output-dir", str(tmp_path / "o"), "--val-fraction", "0"])
    assert summary["duplicates"] == 1 and summary["written"]["train"] == 2
    kept = pd.read_parquet(tmp_path / "o" / "train.parquet")["extra_info"].map(lambda e: e["query"])
    assert "another query" not in set(kept)  # first occurrence wins
    assert "duplicates     1" in capsys.readouterr().out


BAD_ROWS = [
    ("query", record(2, query=None), "missing required field"),
    ("bidword", record(2, bidword="   "), "empty value"),
    ("selling_points", record(2, selling_points=7), "expected a list of strings"),
    ("selling_points", record(2, selling_points=["ok", ""]), "item 1 is an empty selling point"),
    ("language", record(2, language="fr"), "unknown language 'fr'"),
    ("title", record(2, title=["not", "text"]), "expected a string"),
]


@pytest.mark.parametrize("field,bad,reason", BAD_ROWS, ids=[f"{f}-{r}" for f, _, r in BAD_ROWS])
def test_invalid_row_stops_with_exit_2_naming_file_row_field(tmp_path, capsys, field, bad, reason):
    path = write_jsonl(tmp_path / "ads.jsonl", [record(1), bad, record(3)])
    with pytest.raises(SystemExit) as exc:
        build_dataset.main(["--input", str(path), "--output-dir", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{path}: row 2, field '{field}': {reason}" in err
    assert not (tmp_path / "o" / "train.parquet").exists()


def test_malformed_json_line_names_the_line(tmp_path, capsys):
    path = tmp_path / "ads.jsonl"
    path.write_text(json.dumps(record(1)) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        build_dataset.main(["--input", str(path), "--output-dir", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert f"{path}: row 2: malformed JSON line" in capsys.readouterr().err


def test_skip_invalid_writes_rejected_rows_and_continues(tmp_path):
    path = tmp_path / "ads.jsonl"
    path.write_text("\n".join([json.dumps(record(1)), "[1, 2]", json.dumps(record(3, bidword="")),
                               json.dumps(record(4))]) + "\n", encoding="utf-8")
    summary = build_dataset.main(["--input", str(path), "--output-dir", str(tmp_path / "o"), "--skip-invalid", "--val-fraction", "0"])
    assert summary["rows_read"] == 4 and summary["rejected"] == 2 and summary["written"]["train"] == 2
    rejected = [json.loads(line) for line in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in rejected] == [(2, None), (3, "bidword")]
    assert rejected[1]["row_data"]["id"] == "r3"


def test_max_prompt_tokens_drops_and_reports(tmp_path, tokenizer_dir, tokenizer):
    rows = [record(1), record(2, selling_points=[f"selling point number {k} with extra words" for k in range(5)],
                             landing_page="word " * 300)]
    path = write_jsonl(tmp_path / "ads.jsonl", rows)
    from relate_common.records import parse_record

    short, long = (build_dataset.prompt_token_count(tokenizer, parse_record(r)) for r in rows)
    assert short < long
    limit = (short + long) // 2
    summary = build_dataset.main(["--input", str(path), "--output-dir", str(tmp_path / "o"), "--val-fraction", "0",
                                  "--tokenizer", str(tokenizer_dir), "--max-prompt-tokens", str(limit)])
    assert summary["overlong"] == 1 and summary["written"]["train"] == 1
    dropped = json.loads((tmp_path / "o" / "overlong.jsonl").read_text())
    assert dropped == {"id": "r2", "prompt_tokens": long, "max_prompt_tokens": limit}


def test_runs_as_a_script_with_help():
    proc = subprocess.run([sys.executable, str(REPO / "data_prep" / "build_dataset.py"), "--help"],
                          capture_output=True, text=True, check=True)
    assert "--skip-invalid" in proc.stdout and "extra_info" in proc.stdout


odd_text = st.one_of(
    st.just(""), st.just("   \t\n"), st.just("🚀🔥 best!!!"), st.just("近视 myopia 矫正 ✓"),
    st.text(min_size=0, max_size=40),
    # 10k characters: hypothesis cannot draw strings that long, so repeat a drawn one.
    st.text(alphabet="ab 近视🚀", min_size=1, max_size=8).map(lambda s: (s * 10_000)[:10_000]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=odd_text, bidword=odd_text, point=odd_text, title=odd_text)
def test_converter_never_crashes_on_odd_strings(tmp_path, query, bidword, point, title):
    """Any string either converts to a valid row or stops cleanly with exit 2 — nothing else."""
    path = write_jsonl(tmp_path / "odd.jsonl", [record(1, query=query, bidword=bidword, selling_points=[point], title=title)])
    out = tmp_path / "odd-out"
    try:
        summary = build_dataset.main(["--input", str(path), "--output-dir", str(out), "--val-fraction", "0"])
    except SystemExit as exc:
        assert exc.code == 2
        assert not (query.strip() and bidword.strip() and point.strip())
        return
    row = pd.read_parquet(out / "train.parquet").iloc[0]
    assert summary["written"]["train"] == 1
    assert row["reward_model"]["ground_truth"]["query"] == query.strip()
    assert row["reward_model"]["ground_truth"]["language"] in ("zh", "en")


def test_run_with_settings_equals_main_with_argv(tmp_path, capsys):
    from data_prep.config import DatasetConfig

    path = write_jsonl(tmp_path / "ads.jsonl", [record(i) for i in range(6)])
    out = tmp_path / "o"
    by_main = build_dataset.main(["--input", str(path), "--output-dir", str(out), "--val-fraction", "0.5",
                                  "--seed", "3", "--prompt-style", "compact"])
    tables_main = {s: pd.read_parquet(out / f"{s}.parquet") for s in ("train", "val")}
    printed_main = capsys.readouterr().out
    settings = build_dataset.BuildDatasetSettings(
        output_dir=out, input=path, dataset=DatasetConfig(val_fraction=0.5, seed=3, prompt_style="compact"))
    by_run = build_dataset.run(settings)
    assert by_run == by_main and capsys.readouterr().out == printed_main
    for split, table in tables_main.items():
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{split}.parquet"), table)
    with pytest.raises(ValueError, match="--val-fraction"):
        build_dataset.BuildDatasetSettings(output_dir=out, dataset=DatasetConfig(val_fraction=1.0))
    with pytest.raises(SystemExit) as err:
        build_dataset.main(["--output-dir", str(out), "--val-fraction", "1"])
    assert err.value.code == 2 and "--val-fraction must be in [0, 1)" in capsys.readouterr().err
