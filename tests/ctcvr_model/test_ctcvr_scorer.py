"""ctcvr_model scoring: batch API, asyncio micro-batcher, score CLI, item validation."""

from __future__ import annotations

import asyncio
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from ctcvr_model import score as score_cmd
from ctcvr_model import train as train_cmd
from ctcvr_model.schema import ItemError
from ctcvr_model.scorer import AsyncCTCVRScorer, CTCVRScorer
from ctcvr_model.synthetic import make_items, make_table


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctcvr_scorer")
    make_table(2000, seed=0, split="train").to_parquet(d / "train.parquet")
    make_table(800, seed=1, split="val").to_parquet(d / "val.parquet")
    out = d / "model"
    train_cmd.main(["--table", str(d / "train.parquet"), "--val", str(d / "val.parquet"), "--output-dir", str(out),
                    "--encoder", "use-multilingual", "--epochs", "3", "--quiet"])
    return out


@pytest.fixture(scope="module")
def scorer(model_dir):
    return CTCVRScorer.load(model_dir, device="cpu")


def test_batch_api_shapes_and_types(scorer):
    items = make_items(7)
    p_ctr, p_ctcvr = scorer.score(items)
    assert p_ctr.shape == p_ctcvr.shape == (7,) and p_ctr.dtype == np.float64
    assert np.all((p_ctcvr > 0) & (p_ctcvr <= p_ctr) & (p_ctr < 1))
    empty_ctr, empty_ctcvr = scorer.score([])
    assert empty_ctr.shape == empty_ctcvr.shape == (0,)
    one = scorer.score_one(items[3])
    assert one == pytest.approx((p_ctr[3], p_ctcvr[3]), rel=1e-5)
    # selling points as one '|'-separated string mean the same as the list
    joined = dict(items[0], selling_points="|".join(items[0]["selling_points"]))
    assert scorer.score_one(joined) == pytest.approx(scorer.score_one(items[0]), rel=1e-6)


def test_bad_items_name_row_and_field(scorer):
    items = make_items(3)
    del items[1]["title"]
    with pytest.raises(ItemError, match=r"row 1, field 'title': missing field"):
        scorer.score(items)
    with pytest.raises(ItemError, match=r"field 'description': must be a string"):
        scorer.score([dict(make_items(1)[0], description=None)])
    with pytest.raises(ItemError, match="expected an object"):
        scorer.score(["just a string"])


def test_micro_batcher_matches_batch_api_and_batches(scorer):
    items = make_items(50, seed=3)
    expected_ctr, expected_ctcvr = scorer.score(items)
    batcher = AsyncCTCVRScorer(scorer, max_batch_size=16, max_wait_ms=50)
    calls_before = scorer.forward_calls

    async def run():
        results = await asyncio.gather(*(batcher.score_one(it) for it in items))
        await batcher.aclose()
        return results

    results = asyncio.run(run())
    got_ctr = np.array([r[0] for r in results])
    got_ctcvr = np.array([r[1] for r in results])
    np.testing.assert_allclose(got_ctr, expected_ctr, rtol=1e-5)
    np.testing.assert_allclose(got_ctcvr, expected_ctcvr, rtol=1e-5)
    forward_calls = scorer.forward_calls - calls_before
    assert forward_calls == batcher.batches <= 4  # ceil(50 / 16) = 4 batched calls, not 50
    assert max(batcher.batch_sizes) == 16 and sum(batcher.batch_sizes) == 50


def test_micro_batcher_flushes_a_lone_request_after_max_wait(scorer):
    batcher = AsyncCTCVRScorer(scorer, max_batch_size=64, max_wait_ms=5)

    async def run():
        out = await asyncio.wait_for(batcher.score_one(make_items(1)[0]), timeout=10)
        await batcher.aclose()
        return out

    p_ctr, p_ctcvr = asyncio.run(run())
    assert 0 < p_ctcvr <= p_ctr < 1 and batcher.batch_sizes == [1]


def test_micro_batcher_bad_item_fails_only_its_caller_and_survives_new_loops(scorer):
    good = make_items(3)

    async def run():
        bad = dict(good[0])
        del bad["query"]
        results = await asyncio.gather(*(scorer.score_one_async(it) for it in [good[0], bad, good[1]]),
                                       return_exceptions=True)
        return results

    first = asyncio.run(run())
    assert isinstance(first[1], ItemError) and "query" in str(first[1])
    assert all(isinstance(r, tuple) for r in (first[0], first[2]))
    # verl may run a fresh event loop later in the same process: the batcher must follow it.
    second = asyncio.run(run())
    assert second[0] == pytest.approx(first[0], rel=1e-6)


def test_shared_scorer_is_loaded_once(model_dir):
    assert CTCVRScorer.shared(model_dir, device="cpu") is CTCVRScorer.shared(model_dir, device="cpu")


def test_score_cli_end_to_end(model_dir, scorer, tmp_path, capsys):
    items = make_items(9, seed=8)
    items.append({"query": "减肥方法", "bidword": "减肥", "selling_points": [], "title": "", "description": "😀"})
    src = tmp_path / "gen.jsonl"
    src.write_text("".join(json.dumps(dict(it, extra_field=i), ensure_ascii=False) + "\n" for i, it in enumerate(items)),
                   encoding="utf-8")
    out = tmp_path / "out" / "scored.jsonl"
    rc = score_cmd.main(["--model-dir", str(model_dir), "--input", str(src), "--output", str(out), "--quiet", "--with-cvr"])
    assert rc == 0 and "scored 10 rows" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["extra_field"] for r in rows] == list(range(10))
    p_ctr, p_ctcvr = scorer.score(items)
    np.testing.assert_allclose([r["p_ctr"] for r in rows], p_ctr, rtol=1e-5)
    np.testing.assert_allclose([r["p_ctcvr"] for r in rows], p_ctcvr, rtol=1e-5)
    assert all(0 < r["p_cvr"] < 1 for r in rows)


def test_score_cli_names_bad_line_and_field(model_dir, tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    good = json.dumps(make_items(1)[0])
    src.write_text(good + "\n" + json.dumps({"query": "q", "bidword": "b", "selling_points": [], "title": 5,
                                                   "description": "d"}) + "\n")
    out = tmp_path / "never.jsonl"
    assert score_cmd.main(["--model-dir", str(model_dir), "--input", str(src), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "row 2, field 'title': must be a string" in err and str(src) in err
    assert not out.exists()
    src.write_text(good + "\n{broken\n")
    assert score_cmd.main(["--model-dir", str(model_dir), "--input", str(src), "--output", str(out), "--quiet"]) == 2
    assert "row 2: not valid JSON" in capsys.readouterr().err
    assert score_cmd.main(["--model-dir", str(tmp_path / "nomodel"), "--input", str(src), "--output", str(out)]) == 2


def test_score_run_with_a_config_matches_main(model_dir, tmp_path, capsys):
    """score.run(ScoreRun) is main(argv) without the parsing: same exit code, output file and report."""
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in make_items(7, seed=2)), encoding="utf-8")
    out = tmp_path / "scored.jsonl"
    assert score_cmd.main(["--model-dir", str(model_dir), "--input", str(src), "--output", str(out), "--model", "naive",
                           "--batch-size", "3", "--with-cvr", "--quiet"]) == 0
    argv_scored, argv_report = out.read_bytes(), capsys.readouterr().out
    config = score_cmd.ScoreRun(model_dir=str(model_dir), input=str(src), output=str(out), model="naive", batch_size=3,
                                with_cvr=True, progress=False)
    assert score_cmd.run(config) == 0
    assert out.read_bytes() == argv_scored and capsys.readouterr().out == argv_report
    assert score_cmd.run(score_cmd.ScoreRun(model_dir=str(tmp_path / "nomodel"), input=str(src), output=str(out))) == 2
