"""data_prep/build_ctcvr_table.py: impression logs -> ESMM tables, validated and split by query."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from data_prep import build_ctcvr_table
from data_prep.config import CTCVRTableConfig
from tests.fixtures import as_json, files_of, write_csv, write_jsonl


def impression(query: str, click: int, conversion: int, **extra):
    return {"query": query, "bidword": "car insurance", "selling_points": ["quotes in 5 minutes", "no fees"],
            "title": "Compare Car Insurance Quotes", "description": "Quotes from 20 insurers in 5 minutes, no fees.",
            "click": click, "conversion": conversion, **extra}


def run(tmp_path, path, *extra):
    return build_ctcvr_table.main(["--logs", str(path), "--output-dir", str(tmp_path / "out"), *extra])


def read_all(tmp_path):
    return pd.concat([pd.read_parquet(tmp_path / "out" / f"{s}.parquet") for s in ("train", "val", "test")])


def test_impression_rows_split_by_query_and_summarised(tmp_path, capsys):
    rows = [impression(f"query {q}", click=int(i % 4 == 0), conversion=int(i % 8 == 0),
                       truth_p_click=0.25, truth_p_cvr=0.5)
            for q in range(60) for i in range(8)]
    rows[3]["query"] = "  QUERY 0 "  # same query, other spacing/case -> same split
    path = tmp_path / "logs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    summary = run(tmp_path, path)
    df = read_all(tmp_path)
    assert len(df) == 480 and summary["rejected"] == 0
    splits_per_query = df.groupby(df["query"].map(build_ctcvr_table.normalised_query))["split"].nunique()
    assert splits_per_query.max() == 1
    assert all(summary["splits"][s]["rows"] > 0 for s in ("train", "val", "test"))
    total = {k: sum(summary["splits"][s][k] for s in summary["splits"]) for k in ("impressions", "clicks", "conversions")}
    assert total == {"impressions": 480, "clicks": 120, "conversions": 60}
    assert df["truth_p_ctcvr"].eq(0.125).all()  # derived from p_click * p_cvr
    assert list(df.columns[:12]) == list(build_ctcvr_table.OUTPUT_COLUMNS)
    out = capsys.readouterr().out
    assert "CTR" in out and "CTCVR" in out


def test_aggregated_rows_weighted_or_expanded(tmp_path):
    rows = [{"query": "q1", "bidword": "b", "title": "T", "description": "D", "impressions": 100, "clicks": 5, "conversions": 2},
            {"query": "q2", "bidword": "b", "title": "T", "description": "D", "impressions": 10, "clicks": 0, "conversions": 0}]
    path = write_csv(tmp_path / "agg.csv", rows)
    run(tmp_path, path)
    df = read_all(tmp_path)
    assert sorted(zip(df["query"], df["click"], df["conversion"], df["weight"])) == [
        ("q1", 0, 0, 95.0), ("q1", 1, 0, 3.0), ("q1", 1, 1, 2.0), ("q2", 0, 0, 10.0)]
    run(tmp_path, path, "--aggregated-mode", "expand")
    df = read_all(tmp_path)
    assert len(df) == 110 and df["weight"].eq(1.0).all()
    assert int(df["conversion"].sum()) == 2 and int(df["click"].sum()) == 5


BAD = [
    ({"click": 0, "conversion": 1}, "conversion", "conversion without click"),
    ({"click": 2, "conversion": 0}, "click", "expected 0 or 1"),
    ({"click": 0.5, "conversion": 0}, "click", "expected an integer"),
    ({"click": 1, "conversion": 0, "title": ""}, "title", "empty value"),
    ({"click": 1, "conversion": 0, "truth_p_click": 1.5}, "truth_p_click", "expected a probability"),
]


@pytest.mark.parametrize("change,field,reason", BAD, ids=[b[2] for b in BAD])
def test_invalid_impression_row_exits_2_naming_row_and_field(tmp_path, capsys, change, field, reason):
    rows = [impression("q", 1, 1), {**impression("q", 0, 0), **change}]
    path = write_jsonl(tmp_path / "logs.jsonl", rows)
    with pytest.raises(SystemExit) as exc:
        run(tmp_path, path)
    assert exc.value.code == 2
    assert f"{path}: row 2, field '{field}': {reason}" in capsys.readouterr().err


AGG_BAD = [
    ({"impressions": 5, "clicks": 6, "conversions": 0}, "clicks", "clicks (6) > impressions (5)"),
    ({"impressions": 5, "clicks": 1, "conversions": 2}, "conversions", "conversions (2) > clicks (1): conversion without click"),
    ({"impressions": -3, "clicks": 0, "conversions": 0}, "impressions", "negative count -3"),
    ({"impressions": 2.5, "clicks": 0, "conversions": 0}, "impressions", "expected an integer"),
    ({"impressions": "many", "clicks": 0, "conversions": 0}, "impressions", "expected an integer"),
]


@pytest.mark.parametrize("counts,field,reason", AGG_BAD, ids=[b[2] for b in AGG_BAD])
def test_invalid_aggregated_row_exits_2(tmp_path, capsys, counts, field, reason):
    rows = [{"query": "q", "bidword": "b", "title": "T", "description": "D", "impressions": 1, "clicks": 0, "conversions": 0},
            {"query": "q", "bidword": "b", "title": "T", "description": "D", **counts}]
    path = write_jsonl(tmp_path / "agg.jsonl", rows)
    with pytest.raises(SystemExit) as exc:
        run(tmp_path, path)
    assert exc.value.code == 2
    assert f"row 2, field '{field}': {reason}" in capsys.readouterr().err


def test_skip_invalid_keeps_good_rows_and_lists_rejected(tmp_path):
    rows = [impression("q1", 1, 1), impression("q2", 0, 1), impression("q3", 1, 0), impression("q4", 0, 0)]
    rows[2].pop("query")
    path = write_jsonl(tmp_path / "logs.jsonl", rows)
    summary = run(tmp_path, path, "--skip-invalid")
    assert summary["rejected"] == 2 and len(read_all(tmp_path)) == 2
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in rejected] == [(2, "conversion"), (3, "query")]


def test_unknown_log_shape_is_explained(tmp_path, capsys):
    path = write_jsonl(tmp_path / "logs.jsonl", [{"query": "q", "bidword": "b", "title": "T", "description": "D", "clicked": 1}])
    with pytest.raises(SystemExit):
        run(tmp_path, path)
    assert "need columns click+conversion" in capsys.readouterr().err


def test_run_with_a_config_matches_main(tmp_path, capsys):
    """run(CTCVRTableRun) is main(argv) without the parsing: same summary, report and files."""
    rows = [impression(f"query {q}", click=int(i % 3 == 0), conversion=int(i % 6 == 0), selling_points="a;b")
            for q in range(20) for i in range(6)]
    rows.append(impression("bad", click=0, conversion=1))  # rejected, listed in rejected.jsonl
    path = write_jsonl(tmp_path / "logs.jsonl", rows)
    by_argv = run(tmp_path, path, "--val-fraction", "0.2", "--test-fraction", "0.2", "--seed", "3",
                  "--aggregated-mode", "expand", "--sp-separator", ";", "--skip-invalid")
    argv_report, argv_files = capsys.readouterr().out, files_of(tmp_path / "out")
    table = CTCVRTableConfig(val_fraction=0.2, test_fraction=0.2, seed=3, aggregated_mode="expand", selling_point_separator=";")
    by_config = build_ctcvr_table.run(build_ctcvr_table.CTCVRTableRun(logs=path, output_dir=tmp_path / "out", table=table,
                                                                        skip_invalid=True))
    assert as_json(by_config) == as_json(by_argv) and by_argv["rejected"] == 1
    assert capsys.readouterr().out == argv_report
    assert files_of(tmp_path / "out") == argv_files
