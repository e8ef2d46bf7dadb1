"""Empty model output is scored, never rejected or skipped, and the same way by every door:
``reward_fns.score``, ``relate_eval.evaluate`` and the verl reward manager."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relate_common.ad_format import render_ad
from relate_common.records import AdRecord
from reward_fns.compose import RewardContext, score_batch
from reward_fns.config import preset
from reward_fns.generated import read_generated
from tests.fixtures import FakeEncoder

BLANKS = ["", " ", "\n", "\t \u3000", "\r\n  "]
blank = st.one_of(st.none(), st.text(alphabet=" \t\n\r\u3000\u00a0", max_size=6))
RECORD = {"id": "en-1", "query": "dentist near me", "bidword": "dental cleaning", "selling_points": ["Cleaning from $79"],
          "language": "en", "title": "Dental Cleaning from $79", "description": "Friendly dentists, book online today."}


@pytest.fixture(scope="module")
def ctx(tokenizer):
    cfg = preset("relate")
    cfg.weights.pop("ctcvr")
    cfg.relevance.encoder = {"zh": "fake", "en": "fake"}
    return RewardContext.build(cfg, tokenizer=tokenizer, encoders={"fake": FakeEncoder()})


def _score(ctx, tokenizer, records, responses):
    enc = [tokenizer(r, add_special_tokens=False, return_offsets_mapping=True) for r in responses]
    return score_batch(records, responses, [e["input_ids"] for e in enc], [e["offset_mapping"] for e in enc], ctx=ctx,
                       compute="all").responses


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=blank, where=st.sampled_from(["response", "title", "description", "both"]))
def test_blank_fields_are_read_and_scored_lowest(tmp_path_factory, ctx, tokenizer, value, where):
    row = dict(RECORD)
    if where == "response":
        row["response"] = value
    else:
        for name in (("title", "description") if where == "both" else (where,)):
            row[name] = value
    path = tmp_path_factory.mktemp("blank") / "gen.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    ads = read_generated(path)  # no RecordError: empty output is model output
    assert len(ads) == 1 and ads.is_reference == [where != "response"]
    reference = render_ad(RECORD["title"], RECORD["description"], "en")
    rec = ads.records[0]
    got, ref = _score(ctx, tokenizer, [rec, AdRecord(**{k: v for k, v in RECORD.items()})], [ads.responses[0], reference])
    assert ref.parsed.ok and ref.compliant
    assert not got.parsed.ok and got.values()["format"] < 1.0
    assert got.sentence_reward < ref.sentence_reward
    if where in ("response", "both"):  # nothing to show: never compliant, scored as the empty string is
        assert not got.compliant
        empty = _score(ctx, tokenizer, [rec], [""])[0]
        if where == "response":
            assert got.sentence_reward == pytest.approx(empty.sentence_reward) and got.values() == empty.values()


def test_absent_ad_fields_are_the_only_input_error(tmp_path):
    from relate_common.records import RecordError

    row = {k: v for k, v in RECORD.items() if k != "description"}
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match="row 1, field 'description'.*absent"):
        read_generated(path)


def test_every_door_scores_empty_output_the_same(tmp_path, pipeline_dir, tokenizer, tokenizer_dir):
    """One val record, its ad replaced by blank outputs: the score CLI, evaluate and the verl reward
    manager (real CTCVR scorer, real USE encoder, preset relate) give each the same sentence reward."""
    from verl.trainer.ppo.reward import load_reward_manager
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from omegaconf import OmegaConf

    from relate_eval import evaluate as evaluate_cli
    from recipe.relate.reward_manager import RelateRewardManager
    from reward_fns.score import main as score_main
    from tests.fixtures import data_proto, relate_config

    truth = pq.read_table(pipeline_dir / "dataset" / "val.parquet").to_pylist()[0]["reward_model"]["ground_truth"]
    rows = [{**truth, "response": b, "sample": i} for i, b in enumerate(BLANKS)]
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    out = tmp_path / "scored.jsonl"
    assert score_main(["--input", str(gen), "--output", str(out), "--ctcvr-model", str(pipeline_dir / "ctcvr_model"),
                       "--tokenizer", str(tokenizer_dir)]) == 0
    by_cli = [json.loads(line) for line in out.read_text().splitlines()]
    assert evaluate_cli.main(["--generations", str(gen), "--ctcvr-model", str(pipeline_dir / "ctcvr_model"),
                              "--tokenizer", str(tokenizer_dir), "--output-dir", str(tmp_path / "eval"), "--quiet",
                              "--bootstrap", "0"]) == 0
    by_eval = [json.loads(line) for line in (tmp_path / "eval" / "scored_experiment.jsonl").read_text().splitlines()]
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert result["runs"][0]["n"] == len(BLANKS)
    assert result["runs"][0]["metrics"]["compliance_rate"]["value"] == 0.0
    assert result["runs"][0]["metrics"]["format_ok_rate"]["value"] == 0.0

    RelateRewardManager._class_initialized = False
    manager = load_reward_manager(relate_config("relate", tokenizer_dir, pipeline_dir / "ctcvr_model"), tokenizer)
    config = OmegaConf.create({"max_prompt_length": 4096, "filter_overlong_prompts": False,
                               "cache_dir": str(pipeline_dir / "verl-cache")})
    item = RLHFDataset(str(pipeline_dir / "dataset" / "val.parquet"), tokenizer, config)[0]
    by_manager = [manager.loop.run_until_complete(manager.run_single(data_proto(item, b, tokenizer))) for b in BLANKS]
    RelateRewardManager._class_initialized = False

    assert len(by_cli) == len(by_eval) == len(BLANKS)
    for b, c, e, m in zip(BLANKS, by_cli, by_eval, by_manager):
        assert c["response"] == e["response"] == b
        assert c["sentence_reward"] == pytest.approx(e["sentence_reward"], abs=1e-6), repr(b)
        assert m["reward_score"] == pytest.approx(c["sentence_reward"], abs=1e-5), repr(b)
        assert c["reward_format"] == m["reward_extra_info"]["reward_format"] == 0.0
        assert c["compliant"] is False and m["reward_extra_info"]["compliant"] == 0.0
    assert np.ptp([c["sentence_reward"] for c in by_cli]) == pytest.approx(0.0, abs=1e-6)
