"""python -m reward_fns.score: rows in, scored rows + Table 1 / Table 3 out, exit 2 on bad rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reward_fns.ctcvr as ctcvr_mod
from reward_fns.score import main

ROWS = [
    {"id": "zh-1", "query": "洗牙多少钱", "bidword": "洗牙", "selling_points": ["专业牙医", "洗牙79元起"], "language": "zh",
     "title": "专业牙医洗牙，79元起可预约", "description": "洗牙79元起，专业牙医操作，周末也能预约，到店前可在线咨询价格。"},
    {"id": "en-1", "query": "dentist near me", "bidword": "dental cleaning", "selling_points": ["Cleaning from $79"],
     "language": "en", "response": "Title: The Best Dental Cleaning in Town\nDescription: Cleaning from $79 with our friendly team. Book today."},
    {"id": "en-2", "query": "cheap flights", "bidword": "flights to lisbon", "selling_points": ["Fares from $489"],
     "language": "en", "title": "Lisbon Flights in May from $489", "description": "Compare fares across the whole month and set a price alert to catch drops."},
]


def write(path: Path, rows) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def fake_encoder(monkeypatch):
    """The CLI's relevance runs on USE; here a tiny deterministic encoder keeps the test fast."""
    from reward_fns import relevance

    class Enc:
        name, dim = "fake", 16

        def encode(self, texts, batch_size=64):
            out = np.ones((len(texts), 16), dtype=np.float32)
            return out / np.linalg.norm(out, axis=1, keepdims=True)

    monkeypatch.setattr(relevance.EncoderPool, "__call__", lambda self, lang: Enc())


def test_cli_scores_rows_and_prints_tables(tmp_path, tokenizer_dir, fake_encoder, capsys):
    inp = write(tmp_path / "gen.jsonl", ROWS)
    out, summ = tmp_path / "scored.jsonl", tmp_path / "summary.json"
    rc = main(["--input", str(inp), "--output", str(out), "--summary-json", str(summ), "--tokenizer", str(tokenizer_dir)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "Table 3" in printed and "n/a" in printed
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["zh-1", "en-1", "en-2"]
    assert rows[0]["response"].startswith("标题：专业牙医洗牙")  # rendered from title + description
    bad = rows[1]
    assert bad["reward_risk_blacklist"] == 0.5 and bad["compliant"] is False
    span = [s for s in bad["penalised_spans"] if s["source"] == "blacklist"][0]
    assert bad["response"][span["span"][0] : span["span"][1]] == "The Best"
    assert bad["predicted_ctcvr"] is None and bad["reward_ctcvr"] is None  # never invented
    assert min(bad["token_penalty"]) == pytest.approx(-0.5)
    for r in rows:
        for k in ("reward_length", "reward_format", "reward_relevance", "reward_correctness", "sentence_reward"):
            assert r[k] is not None
    s = json.loads(summ.read_text(encoding="utf-8"))
    assert s["n"] == 3 and s["table1"]["compliance_rate"] == pytest.approx(2 / 3)
    assert s["table1"]["delta_ctcvr"] is None and s["table3"]["ctcvr_pct"] is None
    assert set(s["by_language"]) == {"zh", "en"}


def test_cli_missing_field_exits_2_naming_row_and_field(tmp_path, tokenizer_dir, capsys):
    rows = [ROWS[0], {k: v for k, v in ROWS[2].items() if k != "bidword"}]
    inp = write(tmp_path / "gen.jsonl", rows)
    rc = main(["--input", str(inp), "--output", str(tmp_path / "o.jsonl"), "--tokenizer", str(tokenizer_dir)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "row 2" in err and "'bidword'" in err
    no_ad = [{k: v for k, v in ROWS[2].items() if k != "description"}]
    inp2 = write(tmp_path / "gen2.jsonl", no_ad)
    assert main(["--input", str(inp2), "--output", str(tmp_path / "o.jsonl"), "--tokenizer", str(tokenizer_dir)]) == 2
    assert "'description'" in capsys.readouterr().err


def test_cli_skip_invalid(tmp_path, tokenizer_dir, fake_encoder, capsys):
    rows = [ROWS[0], {k: v for k, v in ROWS[2].items() if k != "query"}, ROWS[1]]
    inp = write(tmp_path / "gen.jsonl", rows)
    out, summ = tmp_path / "o.jsonl", tmp_path / "s.json"
    rc = main(["--input", str(inp), "--output", str(out), "--skip-invalid", "--summary-json", str(summ),
               "--tokenizer", str(tokenizer_dir), "--preset", "model1"])
    assert rc == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2
    s = json.loads(summ.read_text(encoding="utf-8"))
    assert s["preset"] == "model1" and s["rejected"][0]["row"] == 2 and s["rejected"][0]["field"] == "query"
    assert "skipped" in capsys.readouterr().err
    # model1's sentence reward is length + format only, whatever else the CLI reports.
    for r in map(json.loads, out.read_text(encoding="utf-8").splitlines()):
        assert r["sentence_reward"] == pytest.approx(r["reward_length"] + r["reward_format"])


def test_cli_uses_the_ctcvr_scorer_when_given(tmp_path, tokenizer_dir, fake_encoder, monkeypatch, capsys):
    class Scorer:
        def score(self, items):
            # CTCVR grows with description length: deterministic, obviously fake, test only.
            p = np.array([0.001 * (1 + len(it["description"]) / 100) for it in items])
            return p, p

    monkeypatch.setattr(ctcvr_mod, "load_ctcvr_scorer", lambda d: Scorer())
    inp = write(tmp_path / "gen.jsonl", ROWS)
    out, summ = tmp_path / "o.jsonl", tmp_path / "s.json"
    argv = ["--input", str(inp), "--output", str(out), "--summary-json", str(summ), "--ctcvr-model", str(tmp_path),
            "--tokenizer", str(tokenizer_dir)]
    # en-1 has a response but no reference ad: the one reference rule (the reward manager's) says
    # fallback_reference or an error naming the record, never an estimate from the other rows.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "record 'en-1' has no reference ad" in err and "fallback_reference" in err
    cfg = tmp_path / "fallback.yaml"
    cfg.write_text("relate:\n  ctcvr: {fallback_reference: 0.0012}\n", encoding="utf-8")
    rc = main(argv + ["--config", str(cfg)])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(r["predicted_ctcvr"] is not None and 0 < r["reward_ctcvr"] < 1 for r in rows)
    s = json.loads(summ.read_text(encoding="utf-8"))
    assert s["table3"]["ctcvr_pct"] == pytest.approx(100 * np.mean([r["predicted_ctcvr"] for r in rows]))
    assert s["table1"]["delta_ctcvr"] is not None


def test_cli_as_a_module_with_a_config_file(tmp_path, tokenizer_dir):
    """The real entry point in a subprocess (real USE encoder), with a YAML config."""
    inp = write(tmp_path / "gen.jsonl", ROWS[1:])
    cfg = tmp_path / "r.yaml"
    cfg.write_text("relate:\n  preset: model3\n  diversity: {delta_d: 0.1}\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "reward_fns.score", "--input", str(inp), "--output", str(out), "--config", str(cfg),
         "--tokenizer", str(tokenizer_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Table 3" in proc.stdout
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 and "token_penalty" not in rows[0]  # model3 has no token-level reward
    bad = subprocess.run([sys.executable, "-m", "reward_fns.score", "--input", str(inp), "--output", str(out),
                          "--preset", "model9"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "model9" in bad.stderr


def test_run_with_settings_equals_main_with_argv(tmp_path, tokenizer_dir, fake_encoder, capsys):
    from reward_fns.score import ScoreSettings, run

    inp = write(tmp_path / "gen.jsonl", ROWS)
    outs = {}
    for how in ("main", "run"):
        out, summ = tmp_path / f"{how}.jsonl", tmp_path / f"{how}.json"
        if how == "main":
            rc = main(["--input", str(inp), "--output", str(out), "--summary-json", str(summ), "--preset", "model3",
                       "--tokenizer", str(tokenizer_dir)])
        else:
            rc = run(ScoreSettings(input=str(inp), output=str(out), summary_json=str(summ), preset="model3",
                                   tokenizer=str(tokenizer_dir)))
        summary = json.loads(summ.read_text(encoding="utf-8"))
        summary.pop("seconds")
        outs[how] = (rc, out.read_text(encoding="utf-8"), summary, capsys.readouterr().out.split("\nwrote ")[0])
    assert outs["run"] == outs["main"] and outs["run"][0] == 0
    # a bad input: the same exit code both ways
    bad = write(tmp_path / "bad.jsonl", [{"id": "x"}])
    assert run(ScoreSettings(input=str(bad), output=str(tmp_path / "b.jsonl"))) == 2
    assert main(["--input", str(bad), "--output", str(tmp_path / "b.jsonl")]) == 2
