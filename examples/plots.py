"""Plots for the example jobs: training curves of one or several verl runs, alone or as seed bands.

Pure functions: data in, a PNG out (matplotlib's headless Agg backend). Rows are one dict per
step (``examples.report.verl_metric_rows`` merges verl's FileLogger lines into them); a metric a
step did not log is absent, never zero.

    from examples.plots import plot_curves, seed_bands
    rows = {"Model 1": seed_bands([rows_seed1, rows_seed2], keys)[0], ...}
    from relate_common.metric_names import SCORE_MEAN   # every metric name: relate_common.metric_names
    plot_curves(rows, [(SCORE_MEAN, "mean sentence reward r_i")], "curves.png", "Training reward")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_curves", "seed_bands", "series"]

Band = dict[str, tuple[list[float], list[float], list[float]]]  # {metric: (steps, low, high)}

# A fixed colour per run position, so a run keeps its colour in every subplot (paper Figure 3
# colours the five configurations consistently: blue, yellow, green, red, purple).
RUN_COLOURS = ("tab:blue", "goldenrod", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
               "tab:olive", "tab:cyan")


def _finite(value: object) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def series(rows: Sequence[Mapping[str, float]], key: str, x_key: str = "step") -> tuple[list[float], list[float]]:
    """(x, y) of the rows where both ``x_key`` and ``key`` are present and finite, sorted by x.

    Rows without the metric (a validation column on a training-only step, a component the run
    did not compute) or with NaN are gaps, not zeros.
    """
    points = []
    for row in rows:
        x, y = _finite(row.get(x_key)), _finite(row.get(key))
        if x is not None and y is not None:
            points.append((x, y))
    points.sort()
    return [p[0] for p in points], [p[1] for p in points]


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard-style exponential moving average (debiased); ``weight`` in [0, 1), 0 = none."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1.0 - weight) * v
        norm = weight * norm + (1.0 - weight)
        out.append(last / norm)
    return out


def seed_bands(seed_rows: Sequence[Sequence[Mapping[str, float]]], keys: Sequence[str],
               x_key: str = "step") -> tuple[list[dict[str, float]], Band]:
    """Mean rows and (min, max) bands over the runs of several seeds.

    At each step a metric's mean is taken over the seeds that logged it there (so one seed's gap
    does not drop the step); the band spans the lowest and highest of those seeds.
    """
    points: dict[str, dict[float, list[float]]] = {k: {} for k in keys}
    for rows in seed_rows:
        for k in keys:
            for x, y in zip(*series(rows, k, x_key)):
                points[k].setdefault(x, []).append(y)
    mean: dict[float, dict[str, float]] = {}
    bands: Band = {}
    for k, by_x in points.items():
        xs = sorted(by_x)
        for x in xs:
            mean.setdefault(x, {x_key: x})[k] = float(sum(by_x[x]) / len(by_x[x]))
        bands[k] = (xs, [min(by_x[x]) for x in xs], [max(by_x[x]) for x in xs])
    return [mean[x] for x in sorted(mean)], bands


def plot_curves(runs: Mapping[str, Sequence[Mapping[str, float]]], metrics: Sequence[tuple[str, str]],
                path: str | Path, title: str, x_key: str = "step", smoothing: float = 0.0,
                x_label: str | None = None, columns: int | None = None, notes: Mapping[str, str] | None = None,
                bands: Mapping[str, Band] | None = None) -> Path:
    """One subplot per metric, one line per run; writes a PNG to ``path`` and returns it.

    runs: {run name: rows}, rows as ``read_metrics`` returns them (dicts of floats, one per step;
      missing keys and NaN are skipped and the line joins the points around them, so a metric
      logged only on some steps, e.g. ``val/`` columns, is still a line; up to 30 points get
      markers, so a single point is visible and the logged steps can be told apart).
    metrics: [(row key, subplot label)]; the label titles the subplot and names the y axis.
    smoothing: exponential moving-average weight in [0, 1) (0: raw values, the default); when > 0
      the raw values are drawn faintly behind the smoothed line.
    notes: {run name: text} shown in the legend for a run with no point in a subplot (default
      "not logged"), so an absent line is explained rather than silently missing.
    columns: subplots per row (default: up to 2 for <= 4 metrics, else 3).
    bands: {run name: :data:`Band`} shaded behind the run's line (e.g. the seeds' range of
      :func:`seed_bands`, whose mean rows are then the ``runs``).
    """
    if not runs:
        raise ValueError("plot_curves: no runs to plot")
    if not metrics:
        raise ValueError("plot_curves: no metrics to plot")
    import matplotlib

    matplotlib.use("Agg")  # headless: training machines have no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    n = len(metrics)
    cols = columns or (min(n, 2) if n <= 4 else 3)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(6.0 * cols, 3.9 * rows_), squeeze=False)
    notes = dict(notes or {})
    colours = {name: RUN_COLOURS[i % len(RUN_COLOURS)] for i, name in enumerate(runs)}
    for ax, (key, label) in zip(axes.flat, metrics):
        whole = True
        for name, rows in runs.items():
            xs, ys = series(rows, key, x_key)
            whole = whole and all(float(x).is_integer() for x in xs)
            colour = colours[name]
            if not xs:  # an invisible entry, so the legend says why this run has no line here
                ax.plot([], [], color=colour, linestyle=":", label=f"{name} ({notes.get(name, 'not logged')})")
                continue
            marker = "o" if len(xs) <= 30 else None
            band = (bands or {}).get(name, {}).get(key)
            if band is not None and band[0]:
                ax.fill_between(band[0], band[1], band[2], color=colour, alpha=0.18, linewidth=0)
            if smoothing > 0:
                ax.plot(xs, ys, color=colour, alpha=0.25, linewidth=1.0)
                ax.plot(xs, smooth(ys, smoothing), color=colour, linewidth=1.8, marker=marker, markersize=3.5,
                        label=name)
            else:
                ax.plot(xs, ys, color=colour, linewidth=1.6, marker=marker, markersize=3.5, label=name)
        ax.set_title(label)
        ax.set_xlabel(x_label or x_key)
        if whole:  # steps: whole-number ticks only
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title + (f" (EMA smoothing {smoothing:g})" if smoothing > 0 else ""))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
