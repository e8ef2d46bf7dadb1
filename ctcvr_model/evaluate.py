"""Evaluate a trained CTCVR model directory (ESMM and both baselines) on a held-out table.

    python -m ctcvr_model.evaluate --model-dir models/ctcvr --table DIR/test.parquet

Per model: CTR AUC, CTCVR AUC, CVR AUC on clicked impressions (label: converted, score: pCVR) and
on all impressions (label: click-and-convert, score: pCVR; this is where the naive model's
sample-selection bias shows), log loss and expected calibration error. When the table carries the
simulator's truth columns the same AUCs of the truth itself ("oracle") are reported: the ceiling a
perfect model would reach on these sampled labels. With truth present, "AUC vs truth" also scores
each model against the truth probabilities as soft labels (row i counts as truth_p_i positives; for
pCVR over all impressions the soft label is truth_p_ctcvr):
the AUC expected over re-sampling the clicks and conversions, free of the sampling noise that
dominates a test split with a few dozen conversions.

Writes evaluation.json and reliability.png (predicted vs observed rate, equal-mass bins) next to
the model unless --output-dir says otherwise, and prints a markdown table.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctcvr_model.checkpoint import write_json
from ctcvr_model.cli import add_device_flag, command_parser, exit_invalid
from ctcvr_model.data import encode_table, predict_rows
from ctcvr_model.metrics import (
    expected_calibration_error,
    finite_or_none,
    reliability_bins,
    weighted_auc,
    weighted_logloss,
)
from ctcvr_model.schema import CTCVRError, has_truth, read_table
from ctcvr_model.scorer import CTCVRScorer

EVALUATION_FILE = "evaluation.json"
PLOT_FILE = "reliability.png"
ORACLE = "oracle"

# (json key, markdown header) in table order.
COLUMNS = (
    ("ctr_auc", "CTR AUC"),
    ("ctcvr_auc", "CTCVR AUC"),
    ("cvr_auc_clicked", "CVR AUC (clicked)"),
    ("cvr_auc_all", "CVR AUC (all imps)"),
    ("ctr_logloss", "CTR logloss"),
    ("ctcvr_logloss", "CTCVR logloss"),
    ("cvr_logloss_clicked", "CVR logloss (clicked)"),
    ("ctr_ece", "CTR ECE"),
    ("ctcvr_ece", "CTCVR ECE"),
    ("cvr_ece_clicked", "CVR ECE (clicked)"),
    ("ctr_auc_truth", "CTR AUC vs truth"),
    ("ctcvr_auc_truth", "CTCVR AUC vs truth"),
    ("cvr_auc_all_truth", "CVR AUC (all imps) vs truth"),
)


def prediction_metrics(
    click: np.ndarray, ctcvr: np.ndarray, weight: np.ndarray, pred: dict[str, np.ndarray], n_bins: int = 15
) -> dict[str, float]:
    """All metrics of one model's predictions p_ctr, p_cvr, p_ctcvr (each (N,)) against the labels (N,).

    Clicked-only CVR metrics weigh row i by weight_i * click_i with label ctcvr_i / click_i, which on
    per-impression rows is exactly "clicked rows, label = converted".
    """
    clicked_w = weight * click
    cvr_label = np.divide(ctcvr, click, out=np.zeros_like(ctcvr, dtype=np.float64), where=click > 0)
    return {
        "ctr_auc": weighted_auc(click, pred["p_ctr"], weight),
        "ctcvr_auc": weighted_auc(ctcvr, pred["p_ctcvr"], weight),
        "cvr_auc_clicked": weighted_auc(cvr_label, pred["p_cvr"], clicked_w),
        "cvr_auc_all": weighted_auc(ctcvr, pred["p_cvr"], weight),
        "ctr_logloss": weighted_logloss(click, pred["p_ctr"], weight),
        "ctcvr_logloss": weighted_logloss(ctcvr, pred["p_ctcvr"], weight),
        "cvr_logloss_clicked": weighted_logloss(cvr_label, pred["p_cvr"], clicked_w),
        "ctr_ece": expected_calibration_error(click, pred["p_ctr"], weight, n_bins),
        "ctcvr_ece": expected_calibration_error(ctcvr, pred["p_ctcvr"], weight, n_bins),
        "cvr_ece_clicked": expected_calibration_error(cvr_label, pred["p_cvr"], clicked_w, n_bins),
    }


def evaluate(model_dir: str | Path, table: str | Path, models: list[str] | None = None, device: str | None = None,
             n_bins: int = 15, cache_dir: str | None = None, hide_industry: bool = False) -> dict[str, Any]:
    """Metrics for every trained sub-model (and the oracle when truth is present) on ``table``.

    hide_industry: score every row as an item without an industry (the unknown bucket), i.e. what a
    caller that does not pass ``industry`` gets; the oracle still uses the truth.

    Returns {"table", "model_dir", "counts", "models": {name: metrics}, "reliability": {...}}.
    """
    scorer = CTCVRScorer.load(model_dir, device=device, cache_dir=cache_dir)
    trained = scorer.saved.training.get("trained_models") or ["esmm", "naive", "logreg"]
    models = list(models or trained)
    untrained = [m for m in models if m not in trained]
    if untrained:
        raise CTCVRError(f"model(s) {untrained} were not trained in {model_dir} (trained: {trained})")
    df = read_table(table)
    data = encode_table(df, scorer.encoder, scorer.saved.features, hide_industry=hide_industry)
    click, ctcvr, weight = (df[c].to_numpy(np.float64) for c in ("click", "conversion", "weight"))

    preds: dict[str, dict[str, np.ndarray]] = {}
    for name in models:
        preds[name] = predict_rows(scorer.net, data.rows, model=name, device=scorer.device)
    if has_truth(df):
        preds[ORACLE] = {
            "p_ctr": df["truth_p_click"].to_numpy(np.float64),
            "p_cvr": df["truth_p_cvr"].to_numpy(np.float64),
            "p_ctcvr": df["truth_p_ctcvr"].to_numpy(np.float64),
        }
    results = {name: prediction_metrics(click, ctcvr, weight, p, n_bins) for name, p in preds.items()}
    if ORACLE in preds:
        truth = preds[ORACLE]
        for name, p in preds.items():
            results[name]["ctr_auc_truth"] = weighted_auc(truth["p_ctr"], p["p_ctr"], weight)
            results[name]["ctcvr_auc_truth"] = weighted_auc(truth["p_ctcvr"], p["p_ctcvr"], weight)
            # pCVR ranking all impressions against their true click-and-convert probability.
            results[name]["cvr_auc_all_truth"] = weighted_auc(truth["p_ctcvr"], p["p_cvr"], weight)
    clicked_w = weight * click
    cvr_label = np.divide(ctcvr, click, out=np.zeros_like(ctcvr), where=click > 0)
    reliability = {
        name: {
            "ctr": reliability_bins(click, p["p_ctr"], weight, n_bins),
            "ctcvr": reliability_bins(ctcvr, p["p_ctcvr"], weight, n_bins),
            "cvr_clicked": reliability_bins(cvr_label, p["p_cvr"], clicked_w, n_bins),
        }
        for name, p in preds.items()
    }
    return {
        "table": str(table),
        "model_dir": str(model_dir),
        "encoder": scorer.saved.encoder_name,
        "industry_feature": bool(scorer.saved.features.industry),
        "industry_hidden": bool(hide_industry),
        "counts": {
            "rows": int(len(df)),
            "impressions": float(weight.sum()),
            "clicks": float((weight * click).sum()),
            "conversions": float((weight * ctcvr).sum()),
        },
        "models": {name: {k: finite_or_none(v) for k, v in m.items()} for name, m in results.items()},
        "reliability": reliability,
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The metrics as a markdown table, one row per model (oracle last)."""
    head = "| model | " + " | ".join(h for _, h in COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, sep]
    for name, m in result["models"].items():
        cells = []
        for key, _ in COLUMNS:
            v = m.get(key)
            cells.append("n/a" if v is None else (f"{v:.4f}" if "auc" in key else f"{v:.5f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    c = result["counts"]
    lines.append("")
    lines.append(f"{c['impressions']:.0f} impressions, {c['clicks']:.0f} clicks, {c['conversions']:.0f} conversions "
                 f"({result['table']})")
    return "\n".join(lines)


def plot_reliability(result: dict[str, Any], path: str | Path) -> Path:
    """Reliability diagram (CTR, CTCVR, CVR on clicks): mean prediction vs observed rate per bin."""
    import matplotlib

    matplotlib.use("Agg")  # headless: reward/eval machines have no display
    import matplotlib.pyplot as plt

    panels = (("ctr", "CTR (all impressions)"), ("ctcvr", "CTCVR (all impressions)"), ("cvr_clicked", "CVR (clicked impressions)"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, (key, title) in zip(axes, panels):
        top = 0.0
        for name, rel in result["reliability"].items():
            bins = rel[key]
            if not bins["pred"]:
                continue
            style = "k--" if name == ORACLE else "-o"
            ax.plot(bins["pred"], bins["observed"], style, label=name, markersize=4)
            top = max(top, max(bins["pred"]), max(bins["observed"]))
        top = top * 1.05 or 1.0
        ax.plot([0, top], [0, top], color="grey", linewidth=0.8, label="perfect calibration")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(title)
        ax.set_xlabel("mean predicted probability (equal-mass bin)")
        ax.set_ylabel("observed rate")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Reliability on {Path(result['table']).name} (encoder {result['encoder']})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("evaluate", "AUC, log loss and calibration of ESMM and its baselines (plus the oracle when the "
                       "table has truth_p_* columns) on a CTCVR table; writes evaluation.json and reliability.png.")
    p.add_argument("--model-dir", required=True, help="directory written by `python -m ctcvr_model.train`")
    p.add_argument("--table", required=True, help="held-out table in the CTCVR table schema")
    p.add_argument("--output-dir", default=None, help="where evaluation.json and reliability.png go (default: --model-dir)")
    p.add_argument("--models", default=None, help="comma-separated subset of the trained models (default: all trained)")
    add_device_flag(p)
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (optional)")
    p.add_argument("--bins", type=int, default=15, help="equal-mass bins for ECE and the reliability plot")
    p.add_argument("--hide-industry", action="store_true",
                   help="score as if no row carried an industry (the unknown bucket): what callers that omit it get")
    return p


@dataclass(frozen=True)
class EvaluateRun:
    """The settings of one ``python -m ctcvr_model.evaluate`` run (the CLI's flags, typed)."""

    model_dir: str  # directory written by ``python -m ctcvr_model.train``
    table: str  # held-out table in the CTCVR table schema
    output_dir: str | None = None  # where evaluation.json and reliability.png go; None: model_dir
    models: tuple[str, ...] | None = None  # subset of the trained models; None: all trained
    device: str | None = None  # None: CUDA when available, else CPU
    cache_dir: str | None = None  # embedding cache folder
    bins: int = 15  # equal-mass bins for ECE and the reliability plot
    hide_industry: bool = False  # score every row as an item without an industry


def run(config: EvaluateRun) -> dict[str, Any]:
    """Evaluate, write evaluation.json and reliability.png, print the table; returns the result.

    Exits 2 on invalid input (a model directory, table or model name that does not fit).
    """
    try:
        result = evaluate(config.model_dir, config.table, models=list(config.models) if config.models else None,
                          device=config.device, n_bins=config.bins, cache_dir=config.cache_dir,
                          hide_industry=config.hide_industry)
    except (CTCVRError, ValueError) as e:
        exit_invalid(e)
    out_dir = Path(config.output_dir or config.model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / EVALUATION_FILE, result)
    plot_reliability(result, out_dir / PLOT_FILE)
    print(markdown_table(result))
    print(f"\nwrote {out_dir / EVALUATION_FILE} and {out_dir / PLOT_FILE}")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: parse the flags, build the config, then :func:`run`."""
    args = build_parser().parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    return run(EvaluateRun(model_dir=args.model_dir, table=args.table, output_dir=args.output_dir, models=models,
                           device=args.device, cache_dir=args.cache_dir, bins=args.bins, hide_industry=args.hide_industry))

if __name__ == "__main__":
    main()
