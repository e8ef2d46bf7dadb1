"""Batched held-out generation (relate_eval.generate: library and CLI) and the evaluation command.

A tiny random-initialised Llama with the real SmolLM2 tokenizer generates on the val parquet of
the ``pipeline_dir`` fixture; evaluation compares the reference ads with a degraded copy, scored
by the pipeline's CTCVR model and the simulator's ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from relate_common.ad_format import render_ad
from relate_eval import evaluate as evaluate_cli
from relate_eval import generate as generate_cli
from relate_eval.generate import generate_responses, load_policy, render_prompts, stop_token_ids, trim_response


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 64-wide model gains nothing from threads, and on a busy shared 2-core machine OpenMP
    threads contending with other processes make generation several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir))


@pytest.fixture(scope="module")
def val_rows(pipeline_dir):
    return pq.read_table(pipeline_dir / "dataset" / "val.parquet").to_pylist()


@pytest.fixture(scope="module")
def prompt_ids(policy, val_rows):
    _, tok = policy
    return render_prompts(tok, [r["prompt"] for r in val_rows[:5]])


def _gen(policy, ids, n=1, **kw):
    model, tok = policy
    args = dict(temperature=0.0, top_p=1.0, max_new_tokens=12, seed=0, batch_size=16)
    args.update(kw)
    return generate_responses(model, tok, ids, n, **args)


def test_shared_prefill_generates_the_same_samples(sharp_model, tokenizer):
    """Sampled and greedy, with batches that cut groups (n=3, batch_size=4) and prompts of
    different lengths: the RNG draws do not change, so the samples must not either."""
    model, tok = sharp_model, tokenizer
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (9, 4, 13)]
    for temperature in (1.0, 0.0):
        plain, shared = (generate_responses(model, tok, prompts, 3, temperature=temperature, top_p=0.9, max_new_tokens=12,
                                            seed=5, batch_size=4, share_prompt_prefix=share) for share in (False, True))
        assert shared == plain
        assert all(len(s) == 12 for group in plain for s in group)  # the random model never stops: all tokens compared
    assert len({tuple(s) for s in plain[0]}) == 1  # greedy: the three samples of a prompt agree


# ---- batched generation ------------------------------------------------------------------------------


def test_load_and_render(policy, val_rows, prompt_ids):
    model, tok = policy
    assert not model.training and model.dtype == torch.float32 and tok.padding_side == "left"
    assert len(prompt_ids) == 5 and len({len(p) for p in prompt_ids}) > 1  # different lengths: padding matters
    text = tok.decode(prompt_ids[0])
    assert text.endswith("<|im_start|>assistant\n")
    assert val_rows[0]["prompt"][-1]["content"] in text
    # <|im_end|> ends a turn even though this GGUF-converted tokenizer declares <|im_start|> as EOS.
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(model, tok)


def test_greedy_is_batch_size_invariant(policy, prompt_ids):
    outs = [_gen(policy, prompt_ids, max_new_tokens=16, batch_size=b) for b in (1, 2, 16)]
    assert outs[0] == outs[1] == outs[2]
    assert all(len(o[0]) == 16 for o in outs[0])  # a random model never stops here: full budget, no padding
    # top_p -> 0 keeps only the most likely token: sampling then equals greedy (top_p reaches generate).
    assert _gen(policy, prompt_ids, max_new_tokens=16, temperature=1.0, top_p=1e-9, seed=3) == outs[0]


def test_sampling_is_seeded_and_gives_n_samples(policy, prompt_ids):
    kw = dict(n=3, temperature=1.0, top_p=0.95, max_new_tokens=10, batch_size=4)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = _gen(policy, prompt_ids, seed=7, **kw)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG is left untouched
    b = _gen(policy, prompt_ids, seed=7, **kw)
    c = _gen(policy, prompt_ids, seed=8, **kw)
    assert a == b and a != c
    assert len(a) == len(prompt_ids) and all(len(per_prompt) == 3 for per_prompt in a)
    assert all(len({tuple(s) for s in per_prompt}) > 1 for per_prompt in a)  # samples differ


def test_responses_end_at_the_first_stop_token(policy, prompt_ids):
    model, tok = policy
    ref = _gen(policy, prompt_ids, max_new_tokens=20)
    flat = [r[0] for r in ref]
    # A token that occurs in some responses but not in all: declare it a stop token of the model.
    counts = {t: sum(t in r for r in flat) for r in flat for t in r}
    stop = next(t for t, c in sorted(counts.items()) if 0 < c < len(flat) and t not in stop_token_ids(model, tok))
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [old, stop] if isinstance(old, int) else [*old, stop]
    try:
        out = _gen(policy, prompt_ids, max_new_tokens=20, batch_size=16)
    finally:
        model.generation_config.eos_token_id = old
    for full, got in zip(flat, (o[0] for o in out)):
        if stop in full:  # stopped: ends with the stop token, nothing after it, no padding
            assert got == full[: full.index(stop) + 1]
        else:  # others in the same batch kept going to the budget
            assert got == full and len(got) == 20
    assert trim_response([5, 9, 2, 7, 2], [2]) == [5, 9, 2] and trim_response([5, 9], [2]) == [5, 9]


# ---- generate CLI + reward_fns.score on its output ------------------------------------------------


def test_generate_cli_rows_and_score_accepts_them(tmp_path, tiny_model_dir, pipeline_dir, tokenizer_dir, val_rows):
    out = tmp_path / "gen.jsonl"
    argv = ["--model", str(tiny_model_dir), "--data", str(pipeline_dir / "dataset" / "val.parquet"), "--n", "2",
            "--limit", "3", "--max-new-tokens", "8", "--batch-size", "4", "--seed", "1", "--output", str(out), "--no-progress"]
    assert generate_cli.main(argv) == 0
    first = out.read_bytes()
    rows = [json.loads(line) for line in first.decode().splitlines()]
    assert len(rows) == 6 and [r["sample"] for r in rows] == [0, 1] * 3
    truth = val_rows[0]["reward_model"]["ground_truth"]
    assert {k: rows[0][k] for k in truth} == truth  # the record fields, reference ad included
    assert all(isinstance(r["response"], str) and r["model"] == str(tiny_model_dir) for r in rows)
    assert all(r["finish_reason"] in ("stop", "length") and 1 <= r["n_tokens"] <= 8 for r in rows)
    assert generate_cli.main(argv) == 0 and out.read_bytes() == first  # seeded: same file

    from reward_fns.score import main as score_main

    scored, summary = tmp_path / "scored.jsonl", tmp_path / "summary.json"
    rc = score_main(["--input", str(out), "--output", str(scored), "--ctcvr-model", str(pipeline_dir / "ctcvr_model"),
                     "--tokenizer", str(tokenizer_dir), "--summary-json", str(summary)])
    assert rc == 0
    assert len(scored.read_text().splitlines()) == 6
    assert json.loads(summary.read_text())["n"] == 6


def test_generate_cli_bad_data_exits_2(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "bad.parquet"
    import pyarrow as pa

    pq.write_table(pa.table({"prompt": [[{"role": "user", "content": "hi"}]],
                             "reward_model": [{"ground_truth": {"id": "x", "query": "", "bidword": "b", "selling_points": ["s"]}}]}), bad)
    rc = generate_cli.main(["--model", str(tiny_model_dir), "--data", str(bad), "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "row 1" in err and "reward_model.ground_truth.query" in err


# ---- evaluate -----------------------------------------------------------------------------------


@pytest.fixture()
def fast_relevance(monkeypatch):
    """Relevance's sentence encoder replaced by a constant one (relevance is not asserted here;
    the CTCVR scorer keeps its real encoder)."""
    from reward_fns import relevance

    class Enc:
        name, dim = "fake", 8

        def encode(self, texts, batch_size=64):
            return np.full((len(texts), 8), 8 ** -0.5, dtype=np.float32)

    monkeypatch.setattr(relevance.EncoderPool, "__call__", lambda self, lang: Enc())


def _degrade(truth: dict) -> str:
    """A worse ad for the same record: an absolute claim up front, a shared boilerplate tail."""
    if truth["language"] == "zh":
        return render_ad("最好的" + truth["title"], truth["description"] + "100%有效，效果最好，绝对保证！值得信赖的选择。", "zh")
    return render_ad("The best " + truth["title"], truth["description"] + " Guaranteed results, 100% risk-free! "
                     "Best choice, trusted by everyone.", "en")


@pytest.fixture(scope="module")
def eval_sets(tmp_path_factory, val_rows):
    """reference.jsonl (title + description rows), degraded.jsonl (response rows), ids_only.jsonl."""
    root = tmp_path_factory.mktemp("eval_sets")
    truths = [r["reward_model"]["ground_truth"] for r in val_rows[:12]]
    (root / "reference.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in truths), encoding="utf-8")
    degraded = [{**t, "response": _degrade(t), "sample": 0} for t in truths]
    (root / "degraded.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in degraded), encoding="utf-8")
    ids_only = [{"id": d["id"], "response": d["response"]} for d in degraded]
    (root / "ids_only.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in ids_only), encoding="utf-8")
    return root


def _evaluate(args, out_dir: Path, tokenizer_dir, pipeline_dir) -> tuple[int, dict | None]:
    rc = evaluate_cli.main([*args, "--ctcvr-model", str(pipeline_dir / "ctcvr_model"), "--tokenizer", str(tokenizer_dir),
                            "--output-dir", str(out_dir), "--quiet"])
    path = out_dir / "evaluation.json"
    return rc, (json.loads(path.read_text()) if rc == 0 else None)


def _value(run: dict, metric: str) -> float:
    return run["metrics"][metric]["value"]


def _flat(entries: dict) -> dict:
    """{"metric": {"value", "ci95"}} as {"metric.value": v, "metric.lo": lo, "metric.hi": hi} for approx."""
    out = {}
    for k, m in entries.items():
        out[f"{k}.value"] = m["value"]
        out[f"{k}.lo"], out[f"{k}.hi"] = m["ci95"] or (None, None)
    return out


def test_evaluate_degraded_vs_reference(tmp_path, eval_sets, tokenizer_dir, pipeline_dir, fast_relevance):
    from reward_fns.metrics import table1, table3

    rc, res = _evaluate(["--generations", str(eval_sets / "degraded.jsonl"), "--baseline", str(eval_sets / "reference.jsonl")],
                        tmp_path, tokenizer_dir, pipeline_dir)
    assert rc == 0
    assert [r["name"] for r in res["runs"]] == ["baseline", "experiment"] and res["baseline"] == "baseline"
    base, exp = evaluate_cli.run_result(res, "baseline"), evaluate_cli.run_result(res, "experiment")
    cmp_ = exp["delta_vs_baseline"]
    assert base["delta_vs_baseline"] is None
    assert exp["n"] == base["n"] == 12 and cmp_["paired_records"] == 12
    assert _value(exp, "compliance_rate") < _value(base, "compliance_rate")
    assert _value(exp, "diversity") < _value(base, "diversity")
    assert _value(exp, "simulated_ctcvr_pct") < _value(base, "simulated_ctcvr_pct")
    assert cmp_["simulated_lift"]["value"] < 0 and cmp_["predicted_lift"]["value"] is not None
    assert cmp_["gap"]["value"] == pytest.approx(cmp_["predicted_lift"]["value"] - cmp_["simulated_lift"]["value"])
    for run in (exp, base):
        for name, m in run["metrics"].items():
            lo, hi = m["ci95"]
            assert lo <= m["value"] <= hi, name
    # The values are reward_fns.metrics' Table 1 / Table 3 columns over the scored texts.
    scored = [json.loads(line) for line in (tmp_path / "scored_experiment.jsonl").read_text().splitlines()]
    assert len(scored) == 12 and "simulated_ctcvr" in scored[0]
    t1 = table1([r["compliant"] for r in scored], [r["diversity_score"] for r in scored])
    t3 = table3([r["components"] for r in scored], [r["diversity_score"] for r in scored], [r["predicted_ctcvr"] for r in scored])
    assert _value(exp, "compliance_rate") == pytest.approx(t1["compliance_rate"])
    for key in ("structural_quality", "diversity", "semantic_quality"):
        assert _value(exp, key) == pytest.approx(t3[key])
    assert _value(exp, "predicted_ctcvr_pct") == pytest.approx(t3["ctcvr_pct"])
    md = (tmp_path / "evaluation.md").read_text()
    assert "Table 1" in md and "Table 3" in md and "no template fatigue" in md and "bootstrap" in md

    # Swapping the roles flips the simulated lift; --records joins id-only rows to the same numbers.
    rc, swapped = _evaluate(["--generations", str(eval_sets / "reference.jsonl"), "--baseline", str(eval_sets / "degraded.jsonl")],
                            tmp_path / "swap", tokenizer_dir, pipeline_dir)
    assert rc == 0 and evaluate_cli.run_result(swapped, "experiment")["delta_vs_baseline"]["simulated_lift"]["value"] > 0
    rc, joined = _evaluate(["--generations", str(eval_sets / "ids_only.jsonl"), "--baseline", str(eval_sets / "reference.jsonl"),
                            "--records", str(pipeline_dir / "dataset" / "val.parquet")], tmp_path / "join", tokenizer_dir, pipeline_dir)
    assert rc == 0
    assert _flat(evaluate_cli.run_result(joined, "experiment")["metrics"]) == pytest.approx(_flat(exp["metrics"]))
    joined_lift = evaluate_cli.run_result(joined, "experiment")["delta_vs_baseline"]["simulated_lift"]
    assert _flat({"lift": joined_lift}) == pytest.approx(_flat({"lift": cmp_["simulated_lift"]}))


def test_evaluate_three_runs_one_table(tmp_path, eval_sets, tokenizer_dir, pipeline_dir, fast_relevance):
    """--run NAME=FILE x3: one Table 1 row per run, every delta against --baseline-run, seeded intervals."""
    runs = ["--run", f"reference={eval_sets / 'reference.jsonl'}", "--run", f"degraded={eval_sets / 'degraded.jsonl'}",
            "--run", f"joined={eval_sets / 'ids_only.jsonl'}", "--records", str(pipeline_dir / "dataset" / "val.parquet"),
            "--baseline-run", "reference"]
    rc, res = _evaluate(runs + ["--bootstrap", "300"], tmp_path / "a", tokenizer_dir, pipeline_dir)
    assert rc == 0 and [r["name"] for r in res["runs"]] == ["reference", "degraded", "joined"]
    assert res["runs"][0]["delta_vs_baseline"] is None
    assert all(r["delta_vs_baseline"]["baseline"] == "reference" for r in res["runs"][1:])
    assert _flat(res["runs"][1]["metrics"]) == pytest.approx(_flat(res["runs"][2]["metrics"]))  # the same texts, joined by id
    md = (tmp_path / "a" / "evaluation.md").read_text()
    table1 = md.split("## Table 1")[1].split("## Table 3")[0]
    assert [line.split("|")[1].strip() for line in table1.splitlines() if line.startswith("| ") and "&nbsp;" not in line][1:] == \
        ["reference", "degraded", "joined"]
    assert "(baseline)" in table1 and " [" in table1
    assert {p.name for p in (tmp_path / "a").glob("scored_*.jsonl")} == {"scored_reference.jsonl", "scored_degraded.jsonl",
                                                                          "scored_joined.jsonl"}
    # The same seed gives the same intervals; --bootstrap 0 gives none.
    rc, again = _evaluate(runs + ["--bootstrap", "300"], tmp_path / "b", tokenizer_dir, pipeline_dir)
    assert [(r["metrics"], r["delta_vs_baseline"]) for r in again["runs"]] == \
        [(r["metrics"], r["delta_vs_baseline"]) for r in res["runs"]]
    rc, plain = _evaluate(runs + ["--bootstrap", "0"], tmp_path / "c", tokenizer_dir, pipeline_dir)
    assert rc == 0 and all(m["ci95"] is None for m in plain["runs"][1]["metrics"].values())
    assert {k: m["value"] for k, m in plain["runs"][1]["metrics"].items()} == \
        pytest.approx({k: m["value"] for k, m in res["runs"][1]["metrics"].items()})


@pytest.mark.parametrize("argv, message", [(["--run", "a b=x.jsonl"], "NAME=FILE"), (["--run", "nofile"], "NAME=FILE"),
                                           (["--run", "a=x", "--run", "a=y"], "unique"),
                                           (["--run", "a=x", "--baseline-run", "b"], "not a run"), ([], "at least one")])
def test_evaluate_bad_run_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate_cli.main([*argv, "--ctcvr-model", "x"])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_evaluate_without_baseline_reports_na(tmp_path, eval_sets, tokenizer_dir, pipeline_dir, fast_relevance, capsys):
    rc = evaluate_cli.main(["--generations", str(eval_sets / "degraded.jsonl"), "--ctcvr-model", str(pipeline_dir / "ctcvr_model"),
                            "--tokenizer", str(tokenizer_dir), "--output-dir", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "evaluation.json").read_text())
    exp = evaluate_cli.run_result(res, "experiment")
    assert res["baseline"] is None and exp["delta_vs_baseline"] is None
    assert _value(exp, "simulated_ctcvr_pct") > 0 and _value(exp, "predicted_ctcvr_pct") > 0
    out = capsys.readouterr().out
    assert "baseline: none" in out and "| experiment |" in out and "| n/a | n/a |" in out


@pytest.mark.parametrize("case, field", [("selling_points", "selling_points"), ("response", "response"),
                                         ("no_ad", "title"), ("unknown_id", "id")])
def test_evaluate_bad_row_exits_2(tmp_path, eval_sets, pipeline_dir, tokenizer_dir, capsys, case, field):
    rows = [json.loads(line) for line in (eval_sets / "degraded.jsonl").read_text().splitlines()]
    extra = []
    if case == "selling_points":
        rows[2]["selling_points"] = 5
    elif case == "response":
        rows[2]["response"] = ["not", "text"]
    elif case == "no_ad":
        rows[2] = {k: v for k, v in rows[2].items() if k not in ("response", "title")}
    else:
        rows = [{"id": r["id"], "response": r["response"]} for r in rows]
        rows[2]["id"] = "no-such-record"
        extra = ["--records", str(pipeline_dir / "dataset" / "val.parquet")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    rc = evaluate_cli.main(["--generations", str(bad), "--ctcvr-model", str(pipeline_dir / "ctcvr_model"),
                            "--tokenizer", str(tokenizer_dir), "--output-dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}: row 3, field '{field}'" in err
    assert not (tmp_path / "out" / "evaluation.json").exists()
