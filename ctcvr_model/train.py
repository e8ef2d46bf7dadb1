"""Train the ESMM CTCVR model and its two baselines on a CTCVR table.

    python -m ctcvr_model.train --table DIR/train.parquet --val DIR/val.parquet \
        --encoder use-multilingual --output-dir models/ctcvr

Steps: read and validate both tables -> merge identical (query, ad, industry) rows into weighted
rows -> fit the industry vocabulary (training industries + "unknown") -> encode each distinct text
once with the frozen encoder -> fit the style directions and the feature standardisation on the
training rows -> train ESMM, the naive CVR baseline and logistic regression in turn, each with early
stopping on its own validation score (default: CTR + CTCVR log loss; the best epoch's weights are
kept) -> write model.safetensors, config.json and metrics.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ctcvr_model.checkpoint import METRICS_FILE, SavedModel, save_model, write_json
from ctcvr_model.cli import add_device_flag, command_parser, exit_invalid
from ctcvr_model.data import LabelledRows, aggregate_rows, encode_table, predict_rows
from ctcvr_model.device import default_device
from ctcvr_model.encoders import DEFAULT_ENCODER, load_encoder, maybe_cached
from ctcvr_model.features import (
    FEATURE_PRESETS,
    FeatureConfig,
    feature_moments,
    feature_preset,
    fit_industry_vocab,
    fit_style_basis,
    gather_batch,
)
from ctcvr_model.losses import esmm_loss, logreg_loss, naive_loss
from ctcvr_model.metrics import finite_or_none, weighted_auc, weighted_logloss
from ctcvr_model.model import MODEL_NAMES, CTCVRNet, ModelConfig
from ctcvr_model.schema import CTCVRError, read_table


EARLY_STOP_METRICS = ("ctcvr_auc", "ctcvr_logloss", "loss")
# With style_auto, style components are used only when the training table has at least this many
# conversions. Chosen on validation splits of the simulated logs: at ~190 training conversions
# (200k impressions) the 8 components were no better on any of 5 seeds (AUC vs truth -0.007 on
# average), at ~940 (1M impressions) they helped on 3 of 3 seeds (+0.007).
STYLE_MIN_CONVERSIONS = 500


@dataclass
class TrainConfig:
    """Every training setting in one place (saved in config.json "training")."""

    encoder: str = DEFAULT_ENCODER
    device: str | None = None  # None: CUDA when available, else CPU
    seed: int = 0
    models: tuple[str, ...] = MODEL_NAMES  # which sub-models to train (ESMM first)
    aggregate: bool = True  # merge identical (query, ad) rows into weighted rows before training
    batch_size: int = 512
    lr: float = 3e-3  # AdamW, MLPs
    weight_decay: float = 1e-4
    logreg_lr: float = 1e-2  # a linear model tolerates (and needs) a larger step
    logreg_weight_decay: float = 1e-3  # few positives: keeps the "full" presets' 2.5k weights in check
    max_epochs: int = 40
    patience: int = 6  # epochs without a better validation score (see early_stop) before stopping
    # Validation score that picks the best epoch: "ctcvr_auc" (higher is better), "ctcvr_logloss" or
    # "loss" = CTR log loss + CTCVR log loss, ESMM's objective (lower is better; log losses use every
    # validation impression and click, so they are smoother than an AUC over a few hundred conversions).
    early_stop: str = "loss"
    encode_batch_size: int = 64
    # Share of training rows whose industry is hidden (set to the unknown bucket) in each batch, so
    # that "unknown" learns the industry-free prediction used for items without an industry.
    industry_dropout: float = 0.1
    # Drop the preset's style components when the training table has < STYLE_MIN_CONVERSIONS
    # conversions (an explicit --style turns this off).
    style_auto: bool = True
    cache_dir: str | None = None  # embedding cache (CachedEncoder); None disables it
    progress: bool = True  # tqdm bars
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        self.models = tuple(self.models)
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; choose from {MODEL_NAMES}")
        if self.early_stop not in EARLY_STOP_METRICS:
            raise ValueError(f"early_stop must be one of {EARLY_STOP_METRICS}, got {self.early_stop!r}")
        if not 0.0 <= self.industry_dropout < 1.0:
            raise ValueError(f"industry_dropout must lie in [0, 1), got {self.industry_dropout}")


def compute_loss(name: str, out: dict[str, torch.Tensor], click: torch.Tensor, ctcvr: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The training loss of sub-model ``name`` for one batch (all tensors (B,))."""
    if name == "esmm":
        return esmm_loss(out["logit_ctr"], out["logit_cvr"], click, ctcvr, weight)
    if name == "naive":
        return naive_loss(out["logit_ctr"], out["logit_cvr"], click, ctcvr, weight)
    return logreg_loss(out["logit_ctr"], out["logit_ctcvr"], click, ctcvr, weight)


def validation_metrics(net: CTCVRNet, name: str, val: LabelledRows, device: torch.device) -> dict[str, float]:
    """CTR / CTCVR AUC and log loss of sub-model ``name`` on the validation rows."""
    pred = predict_rows(net, val.rows, model=name, device=device)
    return {
        "ctcvr_auc": weighted_auc(val.ctcvr, pred["p_ctcvr"], val.weight),
        "ctr_auc": weighted_auc(val.click, pred["p_ctr"], val.weight),
        "ctcvr_logloss": weighted_logloss(val.ctcvr, pred["p_ctcvr"], val.weight),
        "ctr_logloss": weighted_logloss(val.click, pred["p_ctr"], val.weight),
    }


def _head_state(net: CTCVRNet, name: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.head(name).state_dict().items()}


def train_head(
    net: CTCVRNet, name: str, train: LabelledRows, val: LabelledRows, cfg: TrainConfig, device: torch.device
) -> dict[str, Any]:
    """Train sub-model ``name`` of ``net`` in place with early stopping; return its history.

    The best epoch (best validation score, see TrainConfig.early_stop) is restored at the end. Only that head's
    parameters are optimised; the feature standardisation is fixed.
    """
    head = net.head(name)
    lr, wd = (cfg.logreg_lr, cfg.logreg_weight_decay) if name == "logreg" else (cfg.lr, cfg.weight_decay)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    rng = np.random.default_rng(cfg.seed)
    emb = torch.from_numpy(train.rows.emb).to(device)
    click = torch.from_numpy(train.click).to(device)
    ctcvr = torch.from_numpy(train.ctcvr).to(device)
    weight = torch.from_numpy(train.weight).to(device)
    n = len(train)
    ind_cols = net.feature_cfg.industry_columns(net.emb_dim)
    # Columns of the one-hot block inside extra (extra = lexical features, then the industry block).
    ind_extra = slice(net.feature_cfg.n_lexical, net.feature_cfg.n_extra)
    hide_p = cfg.industry_dropout if ind_cols.stop > ind_cols.start else 0.0
    hide_gen = torch.Generator().manual_seed(cfg.seed + 1)
    best_score, best_epoch, best_state, since_best = -math.inf, -1, _head_state(net, name), 0
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    epochs = tqdm(range(cfg.max_epochs), desc=f"train {name}", disable=not cfg.progress, leave=True)
    for epoch in epochs:
        net.train()
        order = rng.permutation(n)
        total, total_w = 0.0, 0.0
        batches = range(0, n, cfg.batch_size)
        for start in tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not cfg.progress):
            batch = order[start : start + cfg.batch_size]
            x_slots, extra = gather_batch(train.rows, emb, batch)
            if hide_p > 0:
                hide = (torch.rand(len(batch), generator=hide_gen) < hide_p).to(device)
                block = extra[:, ind_extra]  # a view: the edit lands in extra (a per-batch copy)
                block[hide] = 0.0
                block[hide, 0] = 1.0  # column 0 of the block is the unknown bucket
            idx = torch.from_numpy(batch).to(device)
            out = net(x_slots, extra, model=name)
            losses = compute_loss(name, out, click[idx], ctcvr[idx], weight[idx])
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            bw = float(weight[idx].sum())
            total += float(losses["loss"].detach()) * bw
            total_w += bw
        val_m = validation_metrics(net, name, val, device)
        record = {"epoch": epoch, "train_loss": total / max(total_w, 1e-12), **{f"val_{k}": v for k, v in val_m.items()}}
        history.append(record)
        auc = val_m["ctcvr_auc"]
        # Higher is better; NaN (e.g. no validation conversions) never counts as an improvement.
        score = {"ctcvr_auc": auc, "ctcvr_logloss": -val_m["ctcvr_logloss"],
                 "loss": -(val_m["ctr_logloss"] + val_m["ctcvr_logloss"])}[cfg.early_stop]
        tol = 1e-5 if cfg.early_stop == "ctcvr_auc" else 1e-4 * abs(score)
        if not math.isnan(score) and score > best_score + tol:
            best_score, best_epoch, best_state, since_best = score, epoch, _head_state(net, name), 0
        else:
            since_best += 1
        epochs.set_postfix(loss=f"{record['train_loss']:.4f}", val_ctcvr_auc=f"{auc:.4f}", best=f"{best_score:.4f}")
        if since_best >= cfg.patience:
            break
    if best_epoch >= 0:
        head.load_state_dict(best_state)
    final = validation_metrics(net, name, val, device)
    return {
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "seconds": time.perf_counter() - t0,
        "val": {k: finite_or_none(v) for k, v in final.items()},
        "history": [{k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in r.items()} for r in history],
    }


def _table_summary(df_raw, df_used) -> dict[str, Any]:
    w = df_raw["weight"]
    return {
        "rows": int(len(df_raw)),
        "rows_after_aggregation": int(len(df_used)),
        "impressions": float(w.sum()),
        "clicks": float((w * df_raw["click"]).sum()),
        "conversions": float((w * df_raw["conversion"]).sum()),
    }


def train(train_path: str | Path, val_path: str | Path, output_dir: str | Path, cfg: TrainConfig) -> dict[str, Any]:
    """Run the whole training (see module docstring); returns the metrics written to metrics.json."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = default_device(cfg.device)
    t_start = time.perf_counter()
    train_raw, val_raw = read_table(train_path), read_table(val_path)
    train_df = aggregate_rows(train_raw) if cfg.aggregate else train_raw
    val_df = aggregate_rows(val_raw) if cfg.aggregate else val_raw
    features = cfg.features
    notes: list[str] = []
    train_conversions = float((train_raw["weight"] * train_raw["conversion"]).sum())
    if features.style and cfg.style_auto and train_conversions < STYLE_MIN_CONVERSIONS:
        notes.append(f"{train_conversions:.0f} training conversions < {STYLE_MIN_CONVERSIONS}: trained without style "
                     "components (pass --style N to force them)")
        features = replace(features, style=0)
    if features.industry:
        vocab = fit_industry_vocab(train_df["industry"].tolist()) if "industry" in train_df.columns else ()
        if vocab:
            features = replace(features, industry_vocab=vocab)
        else:
            notes.append("the training table has no industry values: trained without the industry feature")
            features = replace(features, industry=False, industry_vocab=())
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    t0 = time.perf_counter()
    encoder = maybe_cached(load_encoder(cfg.encoder, device=str(device) if device.type == "cuda" else None), cfg.cache_dir)
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_rows = encode_table(train_df, encoder, features, cfg.encode_batch_size)
    val_rows = encode_table(val_df, encoder, features, cfg.encode_batch_size)
    encode_seconds = time.perf_counter() - t0

    net = CTCVRNet(encoder.dim, features, cfg.model).to(device)
    basis = None
    if features.style:
        basis = fit_style_basis(train_rows.rows, features)
        net.set_style_basis(torch.from_numpy(basis))
    mean, std = feature_moments(train_rows.rows, features, seed=cfg.seed, style_basis=basis)
    net.set_moments(torch.from_numpy(mean), torch.from_numpy(std))
    w = train_rows.weight.astype(np.float64)
    clicks, convs = float((w * train_rows.click).sum()), float((w * train_rows.ctcvr).sum())
    net.init_output_biases(p_ctr=clicks / w.sum(), p_cvr=convs / max(clicks, 1.0), p_ctcvr=convs / w.sum())

    results: dict[str, Any] = {}
    for name in cfg.models:
        torch.manual_seed(cfg.seed)
        results[name] = train_head(net, name, train_rows, val_rows, cfg, device)

    training = {k: v for k, v in asdict(cfg).items() if k not in ("features", "model")}
    training.update(trained_models=list(cfg.models), train_table=str(train_path), val_table=str(val_path))
    saved = SavedModel(encoder_name=encoder.name, emb_dim=encoder.dim, features=features, model=cfg.model, training=training)
    save_model(output_dir, net.cpu(), saved)
    metrics = {
        "encoder": {"name": encoder.name, "dim": encoder.dim, "load_seconds": load_seconds},
        "data": {
            "train": _table_summary(train_raw, train_df),
            "val": _table_summary(val_raw, val_df),
            "unique_texts_train": int(train_rows.rows.emb.shape[0]),
            "unique_texts_val": int(val_rows.rows.emb.shape[0]),
            "encode_seconds": encode_seconds,
            "industries": list(features.industry_vocab),
        },
        "features": {"construction": features.describe(), "style": features.style, "industries": len(features.industry_vocab)},
        "notes": notes,
        "device": str(device),
        "models": results,
        "total_seconds": time.perf_counter() - t_start,
    }
    write_json(Path(output_dir) / METRICS_FILE, metrics)
    return metrics


def _dims(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        dims = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if min(dims, default=1) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return dims


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = command_parser("train", "Train the ESMM CTR/CTCVR model (and the naive-CVR and logistic-regression baselines) "
                       "over frozen sentence embeddings of query, ad metadata and ad text.")
    p.add_argument("--table", required=True, help="training table (parquet/csv/jsonl in the CTCVR table schema)")
    p.add_argument("--val", required=True, help="validation table, used for early stopping (see --early-stop)")
    p.add_argument("--output-dir", required=True, help="where model.safetensors, config.json, metrics.json go")
    p.add_argument("--encoder", default=d.encoder, help="'use-multilingual' (zh+en), 'minilm' (English only), or a sentence-transformers path/name")
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (speeds up re-runs); off when omitted")
    add_device_flag(p)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--models", default=",".join(d.models), help=f"comma-separated subset of {','.join(MODEL_NAMES)}")
    p.add_argument("--epochs", type=int, default=d.max_epochs, help="maximum epochs per model")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience in epochs")
    p.add_argument("--early-stop", choices=EARLY_STOP_METRICS, default=d.early_stop,
                   help="validation score that picks each model's best epoch")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate of the MLPs")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--bottom-dims", type=_dims, default=d.model.bottom_dims, help="shared-bottom hidden sizes, e.g. 256,128 ('none': no bottom)")
    p.add_argument("--tower-dims", type=_dims, default=d.model.tower_dims, help="tower hidden sizes, e.g. 64 ('none': linear heads)")
    p.add_argument("--dropout", type=float, default=d.model.dropout)
    p.add_argument("--features", choices=sorted(FEATURE_PRESETS), default=d.features.name,
                   help="feature construction preset: compact = cosines of query/metadata/ad embeddings + 8 style "
                   "components of the ad embedding + lexical features (best on the simulated logs at 200k-1M impressions); "
                   "full = also the embeddings and their products; embedding = full without lexical features "
                   "(the paper's form); every preset adds the industry one-hot unless --no-industry")
    p.add_argument("--style", type=int, default=None,
                   help="style components of the ad embedding (0 = none); default: the preset's (8 for compact) "
                   f"when the training table has >= {STYLE_MIN_CONVERSIONS} conversions, else 0")
    p.add_argument("--lexical", action=argparse.BooleanOptionalAction, default=None,
                   help="override whether the preset adds term-overlap and length features")
    p.add_argument("--industry", action=argparse.BooleanOptionalAction, default=None,
                   help="one-hot of the advertiser's industry (vocabulary: the training table's industries + an "
                   "unknown bucket for items without one); default: on")
    p.add_argument("--industry-dropout", type=float, default=d.industry_dropout,
                   help="share of training rows whose industry is hidden each batch (teaches the unknown bucket)")
    p.add_argument("--aggregate", action=argparse.BooleanOptionalAction, default=d.aggregate,
                   help="merge identical (query, ad) rows into weighted rows (same losses, faster)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        encoder=args.encoder,
        device=args.device,
        seed=args.seed,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        aggregate=args.aggregate,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        max_epochs=args.epochs,
        patience=args.patience,
        early_stop=args.early_stop,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
        industry_dropout=args.industry_dropout,
        style_auto=args.style is None,
        features=feature_preset(args.features, **({} if args.lexical is None else {"lexical": args.lexical}),
                                **({} if args.industry is None else {"industry": args.industry}),
                                **({} if args.style is None else {"style": args.style})),
        model=ModelConfig(bottom_dims=args.bottom_dims, tower_dims=args.tower_dims, dropout=args.dropout),
    )


@dataclass(frozen=True)
class TrainRun:
    """The settings of one ``python -m ctcvr_model.train`` run (the CLI's flags, typed)."""

    table: str  # training table (parquet/csv/jsonl in the CTCVR table schema)
    val: str  # validation table, for early stopping
    output_dir: str  # where model.safetensors, config.json, metrics.json go
    training: TrainConfig = field(default_factory=TrainConfig)


def run(config: TrainRun) -> dict[str, Any]:
    """Train, print the validation summary and return the metrics (also metrics.json); exit 2 on invalid input."""
    try:
        metrics = train(config.table, config.val, config.output_dir, config.training)
    except (CTCVRError, ValueError) as e:
        exit_invalid(e)
    summary = {name: r["val"] for name, r in metrics["models"].items()}
    print(json.dumps({"output_dir": str(config.output_dir), "validation": summary}, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: parse the flags, build the config (exit 2 when invalid), then :func:`run`."""
    args = build_parser().parse_args(argv)
    try:
        training = config_from_args(args)
    except ValueError as e:  # TrainConfig's checks: unknown model, early-stop metric, dropout
        exit_invalid(e)
    return run(TrainRun(table=args.table, val=args.val, output_dir=args.output_dir, training=training))

if __name__ == "__main__":
    main()
