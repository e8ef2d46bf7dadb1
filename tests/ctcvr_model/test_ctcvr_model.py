"""ctcvr_model: losses, metrics, features, training, evaluation, save/load and bad model directories."""

from __future__ import annotations

import json
import math
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from ctcvr_model import evaluate as evaluate_cmd
from ctcvr_model import train as train_cmd
from ctcvr_model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_model
from ctcvr_model.data import aggregate_rows
from ctcvr_model.features import FEATURE_PRESETS, FeatureConfig, feature_preset, lexical_features
from ctcvr_model.losses import esmm_loss, logreg_loss, naive_loss
from ctcvr_model.metrics import expected_calibration_error, weighted_auc, weighted_logloss
from ctcvr_model.model import CTCVRNet, ModelConfig
from ctcvr_model.schema import ItemError, ModelDirError, TableError, read_table, validate_table
from ctcvr_model.scorer import CTCVRScorer
from ctcvr_model.synthetic import make_items, make_table

ENCODER = "use-multilingual"  # multilingual, numpy only, loads in ~0.1 s


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctcvr_tables")
    paths = {}
    for split, n, seed in (("train", 4000, 0), ("val", 1500, 1), ("test", 3000, 2)):
        paths[split] = d / f"{split}.parquet"
        make_table(n, seed=seed, split=split).to_parquet(paths[split])
    return paths


@pytest.fixture(scope="module")
def enc_cache(tmp_path_factory):
    """One embedding cache for the module: the synthetic tables share their texts, so each is encoded once."""
    return str(tmp_path_factory.mktemp("ctcvr_cache"))


@pytest.fixture(scope="module")
def model_dir(tables, tmp_path_factory, enc_cache):
    out = tmp_path_factory.mktemp("ctcvr_model")
    train_cmd.main([
        "--table", str(tables["train"]), "--val", str(tables["val"]), "--output-dir", str(out),
        "--encoder", ENCODER, "--epochs", "12", "--patience", "4", "--quiet", "--seed", "0", "--cache-dir", enc_cache,
    ])
    return out


# ------------------------------------------------------------------ losses


def test_esmm_loss_hand_computed_uses_all_impressions():
    # pCTR = [0.5, 0.8, 0.25], pCVR = [0.5, 0.25, 0.2]  => pCTCVR = [0.25, 0.2, 0.05]
    p_ctr = torch.tensor([0.5, 0.8, 0.25], dtype=torch.float64)
    p_cvr = torch.tensor([0.5, 0.25, 0.2], dtype=torch.float64)
    logit_ctr, logit_cvr = torch.logit(p_ctr), torch.logit(p_cvr).requires_grad_(True)
    click = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    ctcvr = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    weight = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    out = esmm_loss(logit_ctr, logit_cvr, click, ctcvr, weight)
    # CTR term: (-ln .5 - ln .8 - 2 ln .75) / 4 = 0.372914
    # CTCVR term: (-ln .25 - ln .8 - 2 ln .95) / 4 = 0.428006  (row 3 was never clicked, yet counts)
    assert out["ctr"].item() == pytest.approx(0.372914, abs=1e-6)
    assert out["ctcvr"].item() == pytest.approx(0.428006, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.800920, abs=1e-6)
    out["loss"].backward()
    # The un-clicked row 3 sends gradient into the CVR tower: the loss spans the entire space.
    assert logit_cvr.grad[2].item() != 0.0


def test_naive_loss_trains_cvr_on_clicked_rows_only():
    logit_ctr = torch.zeros(3, dtype=torch.float64)
    logit_cvr = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    click = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    ctcvr = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    weight = torch.ones(3, dtype=torch.float64)
    out = naive_loss(logit_ctr, logit_cvr, click, ctcvr, weight)
    assert out["cvr"].item() == pytest.approx(math.log(2), abs=1e-9)  # mean over the 2 clicked rows
    out["loss"].backward()
    assert logit_cvr.grad[2].item() == 0.0  # the un-clicked row is invisible to the naive CVR


def test_product_bce_is_finite_for_extreme_logits():
    big = torch.tensor([-40.0, 40.0, 0.0], requires_grad=True)
    out = esmm_loss(big, big.detach() * -1, torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.0, 1.0, 0.0]), torch.ones(3))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(big.grad).all()


def test_aggregated_rows_give_the_same_loss_as_impressions():
    logit_ctr, logit_cvr = torch.tensor([0.3]), torch.tensor([-1.0])
    # 4 impressions: 2 clicks, 1 of them converted  ==  one row of weight 4, click 0.5, ctcvr 0.25
    raw = esmm_loss(logit_ctr.repeat(4), logit_cvr.repeat(4), torch.tensor([1.0, 1.0, 0.0, 0.0]),
                    torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.ones(4))
    agg = esmm_loss(logit_ctr, logit_cvr, torch.tensor([0.5]), torch.tensor([0.25]), torch.tensor([4.0]))
    assert agg["loss"].item() == pytest.approx(raw["loss"].item(), rel=1e-6)
    lr = logreg_loss(logit_ctr, logit_cvr, torch.tensor([0.5]), torch.tensor([0.25]), torch.tensor([4.0]))
    assert torch.isfinite(lr["loss"])


# ------------------------------------------------------------------ metrics and data


def test_weighted_auc_matches_expanded_impressions():
    rng = np.random.default_rng(0)
    df = make_table(3000, seed=3)
    score = rng.random(len(df))
    df["score"] = df["truth_p_ctcvr"] + 0.05 * score  # any score that is constant within an ad
    df["score"] = df.groupby("record_id")["score"].transform("first")
    raw = weighted_auc(df["conversion"], df["score"], df["weight"])
    agg = aggregate_rows(validate_table(df.drop(columns=["score"])))
    agg_score = agg["record_id"].map(df.groupby("record_id")["score"].first())
    assert weighted_auc(agg["conversion"], agg_score, agg["weight"]) == pytest.approx(raw, abs=1e-12)
    assert agg["weight"].sum() == pytest.approx(len(df))
    assert weighted_logloss(agg["click"], np.full(len(agg), 0.3), agg["weight"]) == pytest.approx(
        weighted_logloss(df["click"], np.full(len(df), 0.3)), rel=1e-9)


def test_calibration_error_small_for_calibrated_probs():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.001, 0.02, 200_000)
    y = (rng.random(p.size) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.001
    assert expected_calibration_error(y, p * 3) > 0.01


def test_table_validation_names_the_problem(tmp_path):
    df = make_table(50)
    with pytest.raises(TableError, match="missing column"):
        validate_table(df.drop(columns=["title"]))
    bad = df.copy()
    bad.loc[3, "conversion"], bad.loc[3, "click"] = 1, 0
    with pytest.raises(TableError, match="row 3.*click-and-convert"):
        validate_table(bad)
    with pytest.raises(TableError, match="no such file"):
        read_table(tmp_path / "nope.parquet")


def test_lexical_features_zh_and_en():
    zh = lexical_features({"query": "减肥方法", "bidword": "减肥", "selling_points": ["首月399元"],
                           "title": "科学减肥方法", "description": "首月399元即可开始"})
    assert zh[0] == 1.0 and zh[3] == 1.0 and zh[5] == 1.0 and zh[-1] == 1.0
    en = lexical_features({"query": "tokyo flights", "bidword": "cheap", "selling_points": [],
                           "title": "", "description": ""})
    assert en[0] == 0.0 and all(math.isfinite(v) for v in en)


def test_feature_presets_dimensions():
    # compact: 3 cosines + 8 style components + 9 lexical + the industry one-hot (unknown + vocabulary)
    assert FEATURE_PRESETS["compact"].feature_dim(512) == 3 + 8 + 9 + 1
    assert feature_preset("compact", industry_vocab=("auto", "legal")).feature_dim(512) == 3 + 8 + 9 + 3
    assert feature_preset("compact", industry=False, style=0).feature_dim(512) == 3 + 9
    assert FEATURE_PRESETS["full"].feature_dim(384) == 5 * 384 + 3 + 9 + 1
    no_lex = feature_preset("full", lexical=False)
    assert not no_lex.lexical and no_lex.feature_dim(384) == FEATURE_PRESETS["embedding"].feature_dim(384)
    with pytest.raises(ValueError, match="not in slots"):
        FeatureConfig(slots=("query",), cosines=(("query", "ad"),))


# ------------------------------------------------------------------ training, evaluation, round trip


def test_small_table_trains_and_beats_chance(model_dir, tables):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert set(metrics["models"]) == {"esmm", "naive", "logreg"}
    assert metrics["data"]["train"]["rows_after_aggregation"] < metrics["data"]["train"]["rows"]
    result = evaluate_cmd.evaluate(model_dir, tables["test"])
    esmm = result["models"]["esmm"]
    assert esmm["ctr_auc"] > 0.6 and esmm["ctcvr_auc"] > 0.6
    assert result["models"]["oracle"]["ctcvr_auc"] > 0.6


def test_evaluate_cli_writes_json_plot_and_table(model_dir, tables, tmp_path, capsys):
    evaluate_cmd.main(["--model-dir", str(model_dir), "--table", str(tables["test"]), "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| esmm |" in out and "| oracle |" in out and "CTCVR AUC" in out
    ev = json.loads((tmp_path / "evaluation.json").read_text())
    for name in ("esmm", "naive", "logreg", "oracle"):
        assert {"ctr_auc", "ctcvr_auc", "cvr_auc_clicked", "cvr_auc_all", "ctcvr_ece"} <= set(ev["models"][name])
    png = tmp_path / "reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_save_load_round_trip_gives_identical_scores(model_dir, tmp_path):
    items = make_items(20, seed=5)
    first = CTCVRScorer.load(model_dir, device="cpu").predict(items)
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    second = CTCVRScorer.load(copy, device="cpu").predict(items)
    for key in ("p_ctr", "p_cvr", "p_ctcvr"):
        np.testing.assert_array_equal(first[key], second[key])
    np.testing.assert_allclose(first["p_ctcvr"], first["p_ctr"] * first["p_cvr"], rtol=1e-6)
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    assert config["encoder"] == {"name": ENCODER, "dim": 512}
    assert "cos(query,ad)" in config["feature_construction"]
    assert config["training"]["seed"] == 0


def test_training_is_reproducible_with_a_seed(tables, tmp_path, enc_cache):
    outs = []
    for run in ("a", "b"):
        train_cmd.main(["--table", str(tables["train"]), "--val", str(tables["val"]), "--output-dir", str(tmp_path / run),
                        "--encoder", ENCODER, "--epochs", "2", "--models", "esmm", "--quiet", "--seed", "7",
                        "--cache-dir", enc_cache])
        outs.append(CTCVRScorer.load(tmp_path / run).predict(make_items(5))["p_ctcvr"])
    np.testing.assert_array_equal(outs[0], outs[1])


def test_train_cli_reports_bad_table(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    make_table(30).drop(columns=["click"]).to_parquet(bad)
    with pytest.raises(SystemExit) as exc:
        train_cmd.main(["--table", str(bad), "--val", str(bad), "--output-dir", str(tmp_path / "m"), "--quiet"])
    assert exc.value.code == 2
    assert "missing column(s) ['click']" in capsys.readouterr().err


def test_cli_help(capsys):
    for cmd in (train_cmd, evaluate_cmd):
        with pytest.raises(SystemExit) as exc:
            cmd.main(["--help"])
        assert exc.value.code == 0
    assert "--model-dir" in capsys.readouterr().out


# ------------------------------------------------------------------ bad model directories


def _broken_copy(model_dir, tmp_path, name="broken"):
    dst = tmp_path / name
    shutil.copytree(model_dir, dst)
    return dst


def test_wrong_schema_version_fails_clearly(model_dir, tmp_path):
    d = _broken_copy(model_dir, tmp_path)
    cfg = json.loads((d / CONFIG_FILE).read_text())
    cfg["schema_version"] = 99
    (d / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match=r"schema_version is 99 .* reads schema_version 2.*Retrain"):
        CTCVRScorer.load(d)


def test_schema_version_1_dir_fails_with_the_reason(model_dir, tmp_path):
    d = _broken_copy(model_dir, tmp_path)
    cfg = json.loads((d / CONFIG_FILE).read_text())
    cfg["schema_version"] = 1
    for key in ("industry", "industry_vocab", "style"):
        cfg["features"].pop(key)
    (d / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match=r"schema_version is 1 .*added the industry feature.*Retrain"):
        CTCVRScorer.load(d)


class _FakeEncoder:
    name, dim = "fake-384", 384

    def encode(self, texts, batch_size=64):
        return np.ones((len(texts), self.dim), np.float32) / np.sqrt(self.dim)


def test_wrong_encoder_dimension_fails_clearly(model_dir):
    with pytest.raises(ModelDirError, match=r"trained on 512-d embeddings .* produces 384-d"):
        CTCVRScorer.load(model_dir, encoder=_FakeEncoder())


def test_corrupt_weights_fail_clearly(model_dir, tmp_path):
    d = _broken_copy(model_dir, tmp_path)
    data = bytearray((d / WEIGHTS_FILE).read_bytes())
    data[100:140] = b"\x00" * 40
    (d / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="corrupt"):
        CTCVRScorer.load(d)
    # Without the checksum (hand-edited config), the safetensors parser itself must fail clearly.
    cfg = json.loads((d / CONFIG_FILE).read_text())
    cfg.pop("weights")
    (d / CONFIG_FILE).write_text(json.dumps(cfg))
    (d / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelDirError, match="cannot be read"):
        load_model(d)


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, CONFIG_FILE])
def test_missing_file_fails_clearly(model_dir, tmp_path, missing):
    d = _broken_copy(model_dir, tmp_path)
    (d / missing).unlink()
    with pytest.raises(ModelDirError, match=f"missing file {missing}"):
        CTCVRScorer.load(d)


def test_missing_directory_and_invalid_json(tmp_path, model_dir):
    with pytest.raises(ModelDirError, match="does not exist"):
        CTCVRScorer.load(tmp_path / "nowhere")
    d = _broken_copy(model_dir, tmp_path)
    (d / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelDirError, match="not valid JSON"):
        CTCVRScorer.load(d)


def test_weights_from_another_config_fail_clearly(model_dir, tmp_path):
    d = _broken_copy(model_dir, tmp_path)
    cfg = json.loads((d / CONFIG_FILE).read_text())
    cfg["model"]["bottom_dims"] = [7]
    cfg.pop("weights")
    (d / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match="does not match"):
        CTCVRScorer.load(d)


# ------------------------------------------------------------------ property: any text scores in (0, 1)

_texts = st.one_of(
    st.sampled_from(["", " ", "😀🎉🔥", "减肥最快的方法 一个月瘦20斤", "Book now! 100% guaranteed", "\n\t", "ا لعربية"]),
    st.text(max_size=60),
)


@pytest.fixture(scope="module")
def scorer(model_dir):
    return CTCVRScorer.load(model_dir, device="cpu")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=_texts, bidword=_texts, points=st.lists(_texts, max_size=3), title=_texts, description=_texts)
def test_scores_are_probabilities_for_any_text(scorer, query, bidword, points, title, description):
    item = {"query": query, "bidword": bidword, "selling_points": points, "title": title, "description": description}
    p_ctr, p_ctcvr = scorer.score([item])
    assert 0.0 < p_ctr[0] < 1.0 and 0.0 < p_ctcvr[0] < 1.0 and p_ctcvr[0] <= p_ctr[0]


def test_net_standardisation_is_saved(model_dir):
    net, saved = load_model(model_dir)
    assert isinstance(net, CTCVRNet) and isinstance(saved.model, ModelConfig)
    assert not torch.allclose(net.feature_std, torch.ones_like(net.feature_std))


# ------------------------------------------------------------------ industry feature and style components

_TOPIC_INDUSTRIES = sorted({f"topic{t}" for t in range(12)})


def test_industry_vocabulary_is_saved_and_loaded(model_dir):
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    assert config["schema_version"] == 2
    assert config["features"]["industry"] is True
    assert config["features"]["industry_vocab"] == _TOPIC_INDUSTRIES
    assert "onehot(industry" in config["feature_construction"]
    net, saved = load_model(model_dir)
    assert saved.features.industry_vocab == tuple(_TOPIC_INDUSTRIES)
    assert net.in_dim == saved.features.feature_dim(512)
    block = saved.features.industry_columns(512)
    # the one-hot block is not standardised
    assert torch.all(net.feature_mean[block] == 0) and torch.all(net.feature_std[block] == 1)
    assert saved.features.industry_index("Topic3 ") == 1 + _TOPIC_INDUSTRIES.index("topic3")
    assert saved.features.industry_index("no such industry") == 0


def test_unknown_industry_scores_like_a_missing_one(scorer):
    base = make_items(6, seed=11)
    missing = scorer.predict(base)
    for value in ("never seen in training", "", None):
        other = scorer.predict([dict(it, industry=value) for it in base])
        np.testing.assert_array_equal(other["p_ctcvr"], missing["p_ctcvr"])
    known = scorer.predict([dict(it, industry="topic3") for it in base])
    assert np.all((known["p_ctcvr"] > 0) & (known["p_ctcvr"] < 1))
    assert not np.allclose(known["p_ctcvr"], missing["p_ctcvr"])  # the industry is used when given
    with pytest.raises(ItemError, match=r"field 'industry': must be a string"):
        scorer.score([dict(base[0], industry=7)])


def test_evaluate_can_hide_the_industry(model_dir, tables, enc_cache):
    shown = evaluate_cmd.evaluate(model_dir, tables["test"], models=["esmm"], cache_dir=enc_cache)
    hidden = evaluate_cmd.evaluate(model_dir, tables["test"], models=["esmm"], hide_industry=True, cache_dir=enc_cache)
    assert shown["industry_feature"] and hidden["industry_hidden"] and not shown["industry_hidden"]
    assert hidden["models"]["esmm"]["ctcvr_auc"] != shown["models"]["esmm"]["ctcvr_auc"]
    assert hidden["models"]["oracle"] == shown["models"]["oracle"]


def test_table_without_industry_trains_without_the_feature(tables, tmp_path, capsys, enc_cache):
    import pandas as pd

    for split in ("train", "val"):
        pd.read_parquet(tables[split]).drop(columns=["industry"]).to_parquet(tmp_path / f"{split}.parquet")
    out = tmp_path / "m"
    train_cmd.main(["--table", str(tmp_path / "train.parquet"), "--val", str(tmp_path / "val.parquet"), "--output-dir",
                    str(out), "--encoder", ENCODER, "--epochs", "1", "--models", "esmm", "--quiet", "--cache-dir", enc_cache])
    assert "no industry values" in capsys.readouterr().err
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["features"]["industry"] is False and config["features"]["industry_vocab"] == []
    p_ctr, p_ctcvr = CTCVRScorer.load(out).score([dict(make_items(1)[0], industry="topic1")])
    assert 0 < p_ctcvr[0] <= p_ctr[0] < 1


def test_style_components_are_fitted_saved_and_reloaded(tables, tmp_path, enc_cache):
    out = tmp_path / "styled"
    metrics = train_cmd.main(["--table", str(tables["train"]), "--val", str(tables["val"]), "--output-dir", str(out),
                              "--encoder", ENCODER, "--epochs", "2", "--models", "esmm", "--quiet", "--style", "4",
                              "--bottom-dims", "16", "--tower-dims", "none", "--cache-dir", enc_cache])
    assert metrics["features"]["style"] == 4
    net, saved = load_model(out)
    assert saved.features.style == 4 and saved.model.tower_dims == ()
    basis = net.style_basis.double()
    np.testing.assert_allclose((basis @ basis.T).numpy(), np.eye(4), atol=1e-5)  # orthonormal directions
    items = make_items(8, seed=2)
    first = CTCVRScorer.load(out).predict(items)
    np.testing.assert_array_equal(first["p_ctcvr"], CTCVRScorer.load(out).predict(items)["p_ctcvr"])


def test_style_is_dropped_automatically_on_few_conversions(model_dir):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["data"]["train"]["conversions"] < train_cmd.STYLE_MIN_CONVERSIONS
    assert metrics["features"]["style"] == 0 and any("style" in n for n in metrics["notes"])


def test_fit_style_basis_uses_within_group_variation():
    from ctcvr_model.features import EncodedRows, fit_style_basis

    rng = np.random.default_rng(0)
    dim = 6
    topic = np.eye(dim)[:2] * 5.0  # two advertisers far apart (between-group variation)
    style = np.array([0, 0, 1.0, 0, 0, 0])  # their rewrites differ along one shared direction
    ads = [topic[g] + sign * style + rng.normal(0, 1e-3, dim) for g in range(2) for sign in (-1, 1)]
    emb = np.vstack([np.eye(dim)[3], np.eye(dim)[4], np.eye(dim)[5], np.eye(dim)[5]] + ads).astype(np.float32)
    # rows: (query, meta, ad) indices; group 0 = (0, 2), group 1 = (1, 3)
    index = np.array([[0, 2, 4], [0, 2, 5], [1, 3, 6], [1, 3, 7]])
    rows = EncodedRows(emb, index, np.zeros((4, 0), np.float32))
    basis = fit_style_basis(rows, feature_preset("compact", style=1))
    assert basis.shape == (1, dim) and abs(basis[0, 2]) > 0.99
    np.testing.assert_array_equal(basis, fit_style_basis(rows, feature_preset("compact", style=1)))


def test_aggregation_keeps_industries_apart():
    df = validate_table(make_table(200, seed=4))
    df.loc[: len(df) // 2, "industry"] = "other"
    agg = aggregate_rows(df)
    assert agg["weight"].sum() == pytest.approx(len(df))
    assert set(agg["industry"]) == set(df["industry"])


def _without_timings(value):
    """``value`` less its wall-clock entries (keys naming seconds), which differ between two runs."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "seconds" not in k}
    return value


def test_train_run_with_a_config_matches_main(tables, tmp_path, capsys, enc_cache):
    """train.run(TrainRun) is main(argv) without the parsing: same metrics, weights and report."""
    out = tmp_path / "m"
    by_argv = train_cmd.main(["--table", str(tables["train"]), "--val", str(tables["val"]), "--output-dir", str(out),
                              "--encoder", ENCODER, "--epochs", "2", "--models", "esmm,logreg", "--quiet", "--seed", "3",
                              "--features", "compact", "--style", "0", "--cache-dir", enc_cache])
    # the tensors, not the file's bytes: safetensors writes its metadata map in no fixed order
    argv_report, argv_weights = capsys.readouterr().out, load_file(out / WEIGHTS_FILE)
    training = train_cmd.TrainConfig(encoder=ENCODER, max_epochs=2, models=("esmm", "logreg"), progress=False, seed=3,
                                     style_auto=False, features=feature_preset("compact", style=0), cache_dir=enc_cache)
    by_config = train_cmd.run(train_cmd.TrainRun(table=str(tables["train"]), val=str(tables["val"]), output_dir=str(out),
                                                 training=training))
    assert _without_timings(by_config) == _without_timings(by_argv)
    weights = load_file(out / WEIGHTS_FILE)
    assert weights.keys() == argv_weights.keys()
    assert all(torch.equal(weights[k], argv_weights[k]) for k in weights)
    assert capsys.readouterr().out == argv_report


def test_evaluate_run_with_a_config_matches_main(model_dir, tables, tmp_path, capsys):
    """evaluate.run(EvaluateRun) is main(argv) without the parsing: same result, evaluation.json and report."""
    by_argv = evaluate_cmd.main(["--model-dir", str(model_dir), "--table", str(tables["test"]), "--output-dir",
                                 str(tmp_path), "--models", "esmm,naive", "--bins", "5", "--hide-industry"])
    argv_report, argv_json = capsys.readouterr().out, (tmp_path / evaluate_cmd.EVALUATION_FILE).read_bytes()
    by_config = evaluate_cmd.run(evaluate_cmd.EvaluateRun(model_dir=str(model_dir), table=str(tables["test"]),
                                                          output_dir=str(tmp_path), models=("esmm", "naive"), bins=5,
                                                          hide_industry=True))
    assert json.dumps(by_config, sort_keys=True) == json.dumps(by_argv, sort_keys=True)
    assert (tmp_path / evaluate_cmd.EVALUATION_FILE).read_bytes() == argv_json
    assert capsys.readouterr().out == argv_report
    with pytest.raises(SystemExit) as exc:  # an untrained model name: exit 2, as main
        evaluate_cmd.run(evaluate_cmd.EvaluateRun(model_dir=str(model_dir), table=str(tables["test"]), models=("nope",)))
    assert exc.value.code == 2
