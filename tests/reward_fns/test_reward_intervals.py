"""reward_fns.intervals: record-level bootstrap intervals of the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reward_fns.intervals import bootstrap_counts, lift_gap_interval, lift_interval, mean_interval

per_record = st.lists(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=4), min_size=1, max_size=30)


def flatten(groups: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray([v for g in groups for v in g])
    index = np.asarray([r for r, g in enumerate(groups) for _ in g])
    return values, index


@settings(max_examples=60, deadline=None)
@given(per_record, st.integers(0, 2**31 - 1))
def test_mean_interval_is_the_text_mean_inside_the_data_range(groups, seed):
    values, index = flatten(groups)
    counts = bootstrap_counts(len(groups), 200, seed)
    assert counts.shape == (200, len(groups)) and (counts.sum(axis=1) == len(groups)).all()
    iv = mean_interval(values, index, counts)
    assert iv.value == pytest.approx(values.mean())
    assert values.min() - 1e-12 <= iv.lo <= iv.hi <= values.max() + 1e-12
    assert mean_interval(values, index, bootstrap_counts(len(groups), 200, seed)) == iv  # seeded: reproducible


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=30), st.integers(1, 6))
def test_copies_of_a_text_within_a_record_do_not_narrow_the_interval(values, k):
    """The unit is the record: k identical samples per record carry no more information than one."""
    counts = bootstrap_counts(len(values), 300, 7)
    one = mean_interval(np.asarray(values), np.arange(len(values)), counts)
    many = mean_interval(np.repeat(values, k), np.repeat(np.arange(len(values)), k), counts)
    assert (many.value, many.lo, many.hi) == pytest.approx((one.value, one.lo, one.hi))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.001, 1, allow_nan=False), min_size=1, max_size=30))
def test_a_run_against_itself_has_zero_lift_and_zero_gap(means):
    counts = bootstrap_counts(len(means), 200, 3)
    lift = lift_interval(np.asarray(means), np.asarray(means), counts)
    assert (lift.value, lift.lo, lift.hi) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
    doubled = lift_interval(2 * np.asarray(means), np.asarray(means), counts)
    assert (doubled.value, doubled.lo, doubled.hi) == pytest.approx((1.0, 1.0, 1.0))  # eq. 10: +100%
    gap = lift_gap_interval(2 * np.asarray(means), np.asarray(means), 2 * np.asarray(means), np.asarray(means), counts)
    assert (gap.value, gap.lo, gap.hi) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)


def test_not_computed_values_are_left_out_and_nothing_gives_none():
    values = np.asarray([1.0, np.nan, 0.0, np.nan])
    iv = mean_interval(values, np.asarray([0, 0, 1, 1]), bootstrap_counts(2, 100, 0))
    assert iv.value == 0.5 and 0 <= iv.lo <= iv.hi <= 1
    none = mean_interval(np.asarray([np.nan, np.nan]), np.asarray([0, 1]), bootstrap_counts(2, 100, 0))
    assert none.value is None and none.to_json() == {"value": None, "ci95": None}
    assert mean_interval(np.asarray([0.2, 0.4]), np.asarray([0, 1]), bootstrap_counts(2, 0, 0)).to_json() == \
        {"value": pytest.approx(0.3), "ci95": None}


def test_interval_covers_the_true_rate_about_95_percent_and_narrows_with_records():
    """Bernoulli(0.3) outputs, 3 samples per record sharing a record effect: nominal coverage."""
    rng = np.random.default_rng(0)
    covered, widths = 0, {}
    for trial in range(200):
        p = np.clip(0.3 + rng.normal(0, 0.1, 80), 0, 1)  # record effects, mean 0.3
        values = (rng.random((80, 3)) < p[:, None]).astype(float).ravel()
        iv = mean_interval(values, np.repeat(np.arange(80), 3), bootstrap_counts(80, 400, trial))
        covered += iv.lo <= 0.3 <= iv.hi
    assert 0.88 <= covered / 200 <= 0.99
    for n in (50, 800):
        values = (rng.random(n) < 0.3).astype(float)
        iv = mean_interval(values, np.arange(n), bootstrap_counts(n, 400, 1))
        widths[n] = iv.hi - iv.lo
    assert widths[800] < 0.4 * widths[50]  # ~1/sqrt(16) = 0.25
