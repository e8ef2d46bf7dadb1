"""relate_common.rl_row (the one owner of the RL row), the metric names, and COMPONENTS from the registry."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.build_dataset import to_rl_row
from data_prep.common import write_parquet
from data_prep.config import DatasetConfig
from relate_common.records import RecordError, parse_record
from relate_common.rl_row import (GROUND_TRUTH_FIELDS, ground_truth, ground_truth_of, ground_truths,
                                  parse_ground_truth, read_rl_parquet)
from tests.fixtures import record


def rows_for(n: int) -> list[dict]:
    return [to_rl_row(parse_record(record(i)), DatasetConfig(), "train", i) for i in range(n)]


def test_what_build_dataset_writes_reads_back_as_the_same_records(tmp_path):
    rows = rows_for(3)
    write_parquet(rows, tmp_path / "train.parquet")
    back = read_rl_parquet(tmp_path / "train.parquet")
    assert [r.record for r in back] == [parse_record(record(i)) for i in range(3)]
    assert [r.messages for r in back] == [row["prompt"] for row in rows]
    assert len(read_rl_parquet(tmp_path / "train.parquet", limit=2)) == 2
    assert set(ground_truth(back[0].record)) == set(GROUND_TRUTH_FIELDS)
    assert ground_truths([row["reward_model"] for row in rows]) == [ground_truth_of(row) for row in rows]
    assert ground_truth_of({"id": "x"}) is None  # a records-file row is no RL row


def test_errors_name_file_row_and_field(tmp_path):
    rows = rows_for(2)
    rows[1]["reward_model"]["ground_truth"]["query"] = ""
    write_parquet(rows, tmp_path / "bad.parquet")
    with pytest.raises(RecordError) as err:
        read_rl_parquet(tmp_path / "bad.parquet")
    assert (err.value.source, err.value.row, err.value.field) == (str(tmp_path / "bad.parquet"), 2,
                                                                    "reward_model.ground_truth.query")
    write_parquet([{"prompt": r["prompt"]} for r in rows_for(1)], tmp_path / "no_rm.parquet")
    with pytest.raises(RecordError, match="field 'reward_model': missing column"):
        read_rl_parquet(tmp_path / "no_rm.parquet")
    with pytest.raises(RecordError, match="file not found"):
        read_rl_parquet(tmp_path / "absent.parquet")


def test_ground_truth_from_a_verl_batch():
    truth = {**ground_truth(parse_record(record(1))), "selling_points": np.array(["a", "b"], dtype=object)}
    assert parse_ground_truth(truth, row=4).selling_points == ["a", "b"]  # numpy cells as verl hands them over
    with pytest.raises(RecordError, match=r"verl batch: row 4, field 'reward_model.ground_truth'"):
        parse_ground_truth("not a record", row=4)


def test_metric_names():
    from relate_common import metric_names as m

    assert m.reward_metric("ctcvr") == "relate/reward/ctcvr" and m.component_of("relate/reward/ctcvr") == "ctcvr"
    assert m.component_of(m.SCORE_MEAN) is None and m.SCORE_MEAN == "critic/score/mean"
    assert m.PENALISED_TOKENS_DIVERSITY == "relate/penalised_tokens/diversity"


def test_components_come_from_the_registry_in_the_papers_order():
    from reward_fns import compose, config

    assert config.COMPONENTS == compose.COMPONENTS == tuple(compose.REWARD_COMPONENT_REGISTRY)
    assert config.COMPONENTS == ("length", "format", "ctcvr", "diversity", "relevance", "correctness",
                                 "risk_blacklist", "risk_judge")
    assert not hasattr(config, "LANGUAGES")
