"""``make demo-smoke``: the whole demo pipeline (every stage, report included) at its smoke size,
a cached rerun that skips everything, and a precise partial rerun: the SFT cold start and RELATE
from SFT through verl's trainers on the CPU backend, and the three-row Table 1 (starting model,
SFT, RELATE) with bootstrap intervals. (Resuming an interrupted stage: tests/examples/test_demo_stages.py.)

The smoke run takes a few minutes on 2 CPU cores, most of it verl's start-up for the two training
jobs and encoding the ad texts for the CTCVR scorer (cached machine-wide afterwards).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from examples import demo

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUMBER = r"[-+]?\d+\.\d+%?"


@pytest.fixture(scope="module")
def smoke(demo_smoke_dir) -> Path:
    return demo_smoke_dir


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = text.find("\n## ", start + len(heading))
    return text[start:nxt if nxt >= 0 else len(text)]


ROWS = ("start", "sft", "relate")  # Table 1's rows: starting model, SFT, RELATE from SFT
INTERVAL = rf"{NUMBER} \[{NUMBER}, {NUMBER}\]"


def test_report_has_every_section_with_numbers_and_its_plots(smoke):
    text = (smoke / "report.md").read_text(encoding="utf-8")
    assert "**Policy: testbed (a small Llama" in text and "not a model to deploy" in text  # named a testbed
    scorer = _section(text, "## 1. CTCVR scorer")
    assert re.search(rf"\| esmm \| {NUMBER} \|", scorer) and "| oracle |" in scorer
    sft = _section(text, "## 2. SFT cold start")
    assert len(re.findall(rf"^\| \d+ \| {NUMBER} \|", sft, flags=re.M)) == demo.SMOKE.sft_steps  # a train loss per step
    curves = _section(text, "## 3. RELATE training curves")
    assert re.search(rf"\| ctcvr reward \| {NUMBER} \| {NUMBER} \|", curves)
    tables = _section(text, "## 4. Table 1 and Table 3")
    table1 = _section(text, "## Table 1")
    for name in ROWS:  # one row per policy, every metric with its 95% interval, deltas against the start
        assert re.search(rf"^\| {name} \| {INTERVAL} \| {INTERVAL} \| {INTERVAL} \| ", table1, flags=re.M), name
    assert re.search(r"^\| start \|.*\(baseline\) \| \(baseline\) \|$", table1, flags=re.M)
    for name in ROWS[1:]:
        assert re.search(rf"^\| {name} \|(?: {INTERVAL} \|){{5}}$", table1, flags=re.M), name
    assert tables and re.search(rf"^\| relate \|(?: {INTERVAL} \|){{5}}$", _section(text, "## Table 3"), flags=re.M)
    hacking = _section(text, "## Predicted vs simulated")
    assert re.search(r"^\| relate vs start \| \d+ \|", hacking, flags=re.M)
    examples = _section(text, "## 5. Example ads")
    assert len(re.findall(r"^### Example \d", examples, flags=re.M)) == 3
    for name in ROWS:
        assert examples.count(f"**{name}**") == 3, name
    times = _section(text, "## Settings")
    for name in demo.STAGE_NAMES[:-1]:
        assert re.search(rf"\| {name} \| \d+\.\d \|", times), name

    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {Path(p).name for p in images} == {"reward_curves.png", "scorer_reliability.png"}
    for rel in images:
        data = (smoke / rel).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, rel
    html = smoke / "report.html"
    try:
        import markdown  # noqa: F401
    except ImportError:
        assert not html.exists()
    else:
        assert "<table>" in html.read_text(encoding="utf-8")


def test_cached_rerun_skips_every_stage_and_a_removed_marker_reruns_only_what_follows(smoke, capsys):
    capsys.readouterr()
    t0 = time.perf_counter()
    assert demo.main(["--smoke", "--output-dir", str(smoke)]) == 0
    elapsed = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert out.count("up to date, skipped") == len(demo.STAGE_NAMES), out
    assert elapsed < 60, f"cached rerun took {elapsed:.1f} s"

    report_before = (smoke / "report.md").stat().st_mtime_ns
    (smoke / ".stage-evaluate.done").unlink()  # as if Ctrl-C had stopped the evaluate stage
    assert demo.main(["--smoke", "--output-dir", str(smoke)]) == 0
    out = capsys.readouterr().out
    ran = re.findall(r"^\[\d+/\d+\] (\S+) \.\.\.", out, flags=re.M)
    assert ran == ["evaluate", "report"], out
    assert (smoke / "report.md").stat().st_mtime_ns > report_before

