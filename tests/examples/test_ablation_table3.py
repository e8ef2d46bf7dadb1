"""Table 3 over seeds and the findings' verdicts (examples/ablation/table3.py), and the seed bands of
Figure 3 (examples/plots.py): pure functions, checked on constructed runs whose answer is known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.ablation import table3 as t3
from examples.plots import plot_curves, seed_bands, series, smooth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
R = 30  # records (held-out prompts)


def per_text(values) -> t3.SeedSums:
    """One text per record, as the ablation's greedy generations are."""
    v = np.asarray(values, dtype=np.float64)
    return t3.seed_sums(v, np.arange(len(v)), len(v))


def row(*seeds) -> dict[str, list[t3.SeedSums]]:
    """Every Table 3 metric of one preset, the same per-seed values for each metric."""
    return {m: [per_text(s) for s in seeds] for m, _ in t3.COLUMNS}


def finding(result, claim_start: str) -> dict:
    return next(f for f in result["findings"] if f["claim"].startswith(claim_start))


def test_cell_is_the_mean_over_seeds_with_their_range_and_an_interval_around_it():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, R), rng.uniform(0, 1, R)
    c = t3.cell([per_text(a), per_text(b)], t3.bootstrap_counts(R, 500, 0))
    assert c["value"] == pytest.approx((a.mean() + b.mean()) / 2)
    assert c["seeds"] == pytest.approx([a.mean(), b.mean()])
    assert c["seed_range"] == pytest.approx(sorted([a.mean(), b.mean()]))
    lo, hi = c["ci95"]
    assert lo < c["value"] < hi and hi - lo < 0.5


def test_not_computed_values_are_left_out_not_zero():
    s = t3.seed_sums(np.array([1.0, np.nan, 3.0]), np.array([0, 1, 2]), 3)
    assert s.mean == pytest.approx(2.0)


def test_a_clear_gain_in_every_seed_is_reproduced_and_its_reverse_is_opposite():
    rng = np.random.default_rng(1)
    low = [rng.uniform(0.1, 0.3, R), rng.uniform(0.1, 0.3, R)]
    high = [x + 0.4 for x in low]
    sums = {"model1": row(*low), "model2": row(*high)}
    result = t3.table3(sums, R)
    assert finding(result, "the CTCVR reward raises CTCVR")["verdict"] == "reproduced"  # model2 > model1: the paper's side
    assert finding(result, "the CTCVR reward costs diversity")["verdict"] == "opposite"  # paper: model2 < model1
    d = finding(result, "the CTCVR reward raises CTCVR")["difference"]
    assert d["value"] == pytest.approx(0.4) and d["seeds"] == pytest.approx([0.4, 0.4])
    assert d["ci95"][0] == pytest.approx(0.4) and d["ci95"][1] == pytest.approx(0.4)  # paired: the prompts cancel


def test_seeds_that_disagree_are_not_separated_even_with_a_narrow_interval():
    base = np.full(R, 0.5)
    sums = {"model1": row(base, base), "model2": row(base + 0.3, base - 0.1)}
    f = finding(t3.table3(sums, R), "the CTCVR reward raises CTCVR")
    assert f["difference"]["ci95"][0] > 0  # the mean over seeds is +0.1 on every resample
    assert f["verdict"] == "not separated"  # but seed 2 went the other way


def test_noise_is_not_separated():
    rng = np.random.default_rng(2)
    sums = {"model1": row(rng.uniform(0, 1, R)), "model2": row(rng.uniform(0, 1, R))}
    assert finding(t3.table3(sums, R), "the CTCVR reward raises CTCVR")["verdict"] == "not separated"


def test_diversity_findings_are_untestable_when_g_high_stayed_empty():
    low, high = np.full(R, 0.2), np.full(R, 0.9)
    sums = {"model2": row(low), "model3": row(high), "model4": row(low), "relate": row(high)}
    acted = t3.table3(sums, R, g_high={"model3": 4.0, "model4": 2.0, "relate": 3.0})
    assert finding(acted, "a sentence-level diversity reward")["verdict"] == "reproduced"
    empty = t3.table3(sums, R, g_high={"model3": 0.0, "model4": 2.0, "relate": 3.0})
    assert finding(empty, "a sentence-level diversity reward")["verdict"] == "not testable at this size"
    assert finding(empty, "token-level credit improves diversity")["verdict"] == "reproduced"  # model4 and relate acted
    # a finding that does not involve the diversity mechanism is judged whatever G_high did
    assert finding(empty, "semantic rewards raise semantic quality")["verdict"] == "opposite"


def test_findings_of_absent_presets_are_left_out_and_render_names_every_row():
    sums = {"sft": row(np.full(R, 0.1)), "model1": row(np.full(R, 0.2)), "model2": row(np.full(R, 0.3))}
    result = t3.table3(sums, R)
    assert {f["a"] for f in result["findings"]} | {f["b"] for f in result["findings"]} <= {"model1", "model2"}
    md = t3.render(result, {"sft": "SFT", "model1": "Model 1", "model2": "Model 2"})
    assert "| SFT | 0.100 (seeds 0.100-0.100; [0.100, 0.100])" in md
    assert "| &nbsp;&nbsp;paper (Qwen3-8B, step 150) | 0.937 | 0.128 | 0.478 | 0.881 |" in md  # beside Model 1
    assert "**reproduced**" in md and "| the CTCVR reward raises CTCVR (Model 2 > Model 1) | predicted_ctcvr_pct | 0.322 |" in md


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=3, max_size=12), st.lists(st.floats(0, 1), min_size=3, max_size=12),
       st.floats(-0.5, 0.5))
def test_difference_is_antisymmetric_and_a_shift_moves_it_exactly(a, b, shift):
    n = min(len(a), len(b))
    x, y = [per_text(a[:n])], [per_text(b[:n])]
    draws = t3.bootstrap_counts(n, 200, 3)
    ab, ba = t3.difference(x, y, draws), t3.difference(y, x, draws)
    assert ab["value"] == pytest.approx(-ba["value"], abs=1e-12)
    assert ab["ci95"][0] == pytest.approx(-ba["ci95"][1], abs=1e-9)
    shifted = t3.difference([per_text(np.asarray(a[:n]) + shift)], y, draws)
    assert shifted["value"] == pytest.approx(ab["value"] + shift, abs=1e-9)
    assert t3.verdict(ab, +1) in ("reproduced", "opposite", "not separated")
    if ab["ci95"][0] > 0:
        assert t3.verdict(ab, +1) == "reproduced" and t3.verdict(ab, -1) == "opposite"
    elif ab["ci95"][1] < 0:
        assert t3.verdict(ab, -1) == "reproduced" and t3.verdict(ab, +1) == "opposite"
    else:  # the interval holds 0: no claim in either direction is decided
        assert t3.verdict(ab, +1) == t3.verdict(ab, -1) == "not separated"


@pytest.mark.parametrize("sign", [+1, -1])
def test_an_interval_that_holds_zero_decides_nothing_in_either_direction(sign):
    straddle = {"value": -0.1, "seeds": [-0.1, -0.1], "ci95": [-0.26, 0.04]}
    assert t3.verdict(straddle, sign) == "not separated"
    below = {"value": -0.1, "seeds": [-0.1, -0.2], "ci95": [-0.26, -0.01]}
    assert t3.verdict(below, sign) == ("opposite" if sign > 0 else "reproduced")


# ---- Figure 3's seed bands and the curve plot -----------------------------------------------------


def test_seed_bands_average_the_seeds_that_logged_a_step():
    s1 = [{"step": 1, "r": 0.0}, {"step": 2, "r": 1.0}, {"step": 3, "r": 2.0}]
    s2 = [{"step": 1, "r": 1.0}, {"step": 2, "r": float("nan")}, {"step": 3, "r": 4.0, "other": 5.0}]
    mean, bands = seed_bands([s1, s2], ["r", "other"])
    assert mean == [{"step": 1, "r": 0.5}, {"step": 2, "r": 1.0}, {"step": 3, "r": 3.0, "other": 5.0}]
    assert bands["r"] == ([1, 2, 3], [0.0, 1.0, 2.0], [1.0, 1.0, 4.0])
    assert bands["other"] == ([3], [5.0], [5.0])


def test_series_skips_missing_and_nan():
    rows = [{"step": 3.0, "a": 0.5}, {"step": 1.0, "a": 0.1, "val/b": 2.0}, {"step": 2.0, "a": float("nan")},
            {"step": 4.0}, {"a": 9.0}, {"step": 5.0, "a": float("inf")}]
    assert series(rows, "a") == ([1.0, 3.0], [0.1, 0.5])  # sorted by step; NaN, inf, absent and step-less rows left out
    assert series(rows, "val/b") == ([1.0], [2.0])
    assert series(rows, "absent") == ([], [])
    assert smooth([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no pull towards 0
    assert smooth([0.0, 1.0], 0.0) == [0.0, 1.0]
    with pytest.raises(ValueError):
        smooth([1.0], 1.0)


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def test_plot_curves_with_nan_gaps_and_bands(tmp_path):
    nan = float("nan")
    runs = {
        "run A": [{"step": float(s), "score": 0.1 * s, "val/score": (0.2 * s if s % 5 == 0 else nan)} for s in range(1, 21)],
        "run B": [{"step": float(s), "score": (nan if s in (3, 4) else 0.05 * s)} for s in range(1, 21)],  # no val/ at all
    }
    path = plot_curves(runs, [("score", "mean reward"), ("val/score", "validation reward")], tmp_path / "sub" / "c.png",
                       "Test curves", notes={"run B": "no validation"})
    assert path == tmp_path / "sub" / "c.png"
    assert_png(path)
    mean, band = seed_bands([runs["run A"], runs["run B"]], ["score"])
    assert_png(plot_curves({"both": mean}, [("score", "r")], tmp_path / "b.png", "bands", bands={"both": band}))
    assert_png(plot_curves({"only": runs["run A"]}, [("score", "r")], tmp_path / "s.png", "one run", smoothing=0.6))
    with pytest.raises(ValueError, match="no runs"):
        plot_curves({}, [("score", "r")], tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="no metrics"):
        plot_curves(runs, [], tmp_path / "x.png", "t")
    assert math.isfinite(mean[0]["score"])
