"""Tests of the ground-truth user model (data_prep/user_model.py) and the impression-log
simulator (data_prep/simulate_logs.py). All CPU, each a few seconds at most."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep import simulate_logs
from data_prep.simulate_logs import OUTPUT_SCHEMA, VARIANT_NAMES, main, make_variants, reference_ad, simulate
from data_prep.user_model import DEFAULT_BASE_CTR, FatigueState, UserModel
from data_prep.user_text import _CJK_RUN, content_tokens, normalize_text, phrasing_keys
from relate_common.lang import is_cjk
from relate_common.records import parse_record

RAW_RECORDS = [
    {"id": "zh-001", "query": "最有效的减肥方法", "bidword": "食疗减肥", "selling_points": ["营养师一对一定制食谱", "30天平均减重5斤", "不节食不反弹"], "industry": "weight_loss", "language": "zh", "title": "减肥食谱一周七天一日三餐-营养均衡", "description": "科学减重分阶段，效果稳也更健康。营养师一对一定制食谱，吃饱也能瘦。"},
    {"id": "zh-002", "query": "近视怎么矫正", "bidword": "近视矫正", "selling_points": ["三甲医院眼科专家坐诊", "术前检查38项", "术后15天复查免费"], "industry": "myopia", "language": "zh", "title": "近视矫正怎么选？专家帮你分析", "description": "孩子近视要警惕！抓住视力矫正黄金期，三甲医院眼科专家坐诊，个性化方案。"},
    {"id": "zh-003", "query": "脱发怎么办", "bidword": "脱发治疗", "selling_points": ["毛囊检测免费", "12年专注头皮健康", "全国200家门店"], "industry": "hair_loss", "language": "zh", "title": "脱发治疗找对方法很重要", "description": "脱发原因多，先做毛囊检测再对症调理，12年专注头皮健康，全国200家门店。"},
    {"id": "zh-004", "query": "雅思培训哪家好", "bidword": "雅思培训", "selling_points": ["小班教学每班6人", "名师平均教龄8年", "不过免费重读"], "industry": "language_learning", "language": "zh", "title": "雅思培训小班课，提分更高效", "description": "小班教学每班6人，名师一对一批改作文，针对性提分。"},
    {"id": "zh-005", "query": "家政保洁上门服务", "bidword": "家政保洁", "selling_points": ["2小时快速上门", "保洁员持证上岗", "不满意免费返工"], "industry": "home_services", "language": "zh"},
    {"id": "zh-006", "query": "汽车保险哪家便宜", "bidword": "车险报价", "selling_points": ["在线比价10家保险公司", "3分钟出报价", "理赔专员全程协助"], "industry": "insurance", "language": "zh", "title": "车险报价在线比，省钱又省心", "description": "在线比价10家保险公司，3分钟出报价，理赔专员全程协助。"},
    {"id": "en-001", "query": "weight loss program for women", "bidword": "weight loss program", "selling_points": ["Dietitian-designed meal plans", "Lose up to 10 lbs in 30 days", "Cancel anytime"], "industry": "weight_loss", "language": "en", "title": "Weight Loss Program Designed by Dietitians", "description": "Personal meal plans from registered dietitians that fit your life and your tastes."},
    {"id": "en-002", "query": "teeth whitening near me", "bidword": "teeth whitening", "selling_points": ["Results in 1 visit", "From $199", "Licensed dentists"], "industry": "dental", "language": "en", "title": "Professional Teeth Whitening", "description": "Brighter smile with in-office whitening by licensed dentists. Results in 1 visit."},
    {"id": "en-003", "query": "cheap flights to tokyo", "bidword": "flights to tokyo", "selling_points": ["Fares from $499 round trip", "No booking fees", "24/7 support"], "industry": "travel", "language": "en", "title": "Flights to Tokyo from $499", "description": "Compare fares from top airlines with no booking fees and friendly 24/7 support."},
    {"id": "en-004", "query": "learn python online", "bidword": "python course", "selling_points": ["40 hours of video lessons", "Certificate on completion", "Projects reviewed by mentors"], "industry": "education", "language": "en", "title": "Online Python Course for Beginners", "description": "Learn Python with 40 hours of video lessons and hands-on projects reviewed by mentors."},
    {"id": "en-005", "query": "car insurance quote", "bidword": "car insurance", "selling_points": ["Compare 10 insurers", "Quote in 3 minutes", "Save up to $500"], "industry": "insurance", "language": "en"},
    {"id": "en-006", "query": "dog grooming service", "bidword": "dog grooming", "selling_points": ["Mobile van comes to you", "Certified groomers", "First groom 20% off"], "industry": "pets", "language": "en", "title": "Mobile Dog Grooming at Your Door", "description": "Certified groomers bring a fully equipped van to your home for a calm, stress-free groom."},
]
RECORDS = [parse_record(raw, source="inline", row=i + 1) for i, raw in enumerate(RAW_RECORDS)]
WORSE_VARIANTS = ("no_query_terms", "exaggerated", "generic_template", "truncated", "overlong")


@pytest.fixture(scope="module")
def model() -> UserModel:
    return UserModel()


@pytest.fixture()
def records_file(tmp_path: Path) -> Path:
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RAW_RECORDS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def log_20k():
    """A realistic run: 20k impressions over the inline records."""
    return simulate(RECORDS, 20_000, seed=0, progress=False).to_pandas()


def _ad(record, title: str, description: str) -> dict:
    return {
        "query": record.query, "bidword": record.bidword, "selling_points": record.selling_points,
        "industry": record.industry, "language": record.language, "title": title, "description": description,
    }


def _variant_scores(model: UserModel, record) -> dict[str, tuple[float, float, float]]:
    """Fresh (never shown) p_click, p_cvr, p_ctcvr of each variant of a record."""
    variants = make_variants(record, 0, model)
    p_click, p_cvr = model.score([_ad(record, v.title, v.description) for v in variants])
    return {v.name: (c, r, c * r) for v, c, r in zip(variants, p_click, p_cvr)}


# ------------------------------------------------------------------------------------------
# The user model.
# ------------------------------------------------------------------------------------------


def test_tokenisation_is_bigrams_for_chinese_and_words_for_english():
    assert content_tokens(normalize_text("减肥方法")) == {"减肥", "肥方", "方法"}
    assert content_tokens(normalize_text("The Best Teeth Whitening near me")) == {"best", "teeth", "whitening"}
    # full-width digits and letters are normalised, mixed scripts give both kinds of token
    assert content_tokens(normalize_text("ＩＥＬＴＳ雅思")) == {"ielts", "雅思"}
    # function characters split runs, question words carry no topic
    assert content_tokens(normalize_text("减肥的方法怎么选")) == {"减肥", "方法", "法怎", "么选"}


def test_cjk_ranges_match_relate_common_lang():
    """The user model's ideograph regex covers exactly what relate_common.lang.is_cjk calls CJK."""
    for cp in (0x33FF, 0x3400, 0x4DBF, 0x4DC0, 0x4DFF, 0x4E00, 0x9FFF, 0xA000, 0xF8FF, 0xF900, 0xFAFF, 0xFB00):
        ch = chr(cp)
        assert bool(_CJK_RUN.fullmatch(ch)) == is_cjk(ch), hex(cp)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_better_variant_beats_worse_ones(model, language):
    """Relevant + concrete selling point + call to action beats every worse rewrite and the
    reference, for every record of the language."""
    for record in (r for r in RECORDS if r.language == language):
        scores = _variant_scores(model, record)
        best = scores["best_practice"][2]
        for worse in (*WORSE_VARIANTS, "reference"):
            assert best > scores[worse][2], (record.id, worse, scores)
        # the single-step improvements do not hurt
        assert scores["plus_cta"][2] >= scores["reference"][2], record.id
        assert scores["plus_selling_point"][2] >= scores["reference"][2], record.id


@pytest.mark.parametrize(
    "good, bad",
    [
        (
            {"title": "雅思培训小班课｜每班6人", "description": "雅思培训哪家好？小班教学每班6人，名师平均教龄8年。立即免费咨询。"},
            {"title": "专业服务，值得信赖", "description": "我们拥有专业团队，服务周到。"},
        ),
        (
            {"title": "Teeth Whitening From $199", "description": "Teeth whitening near you: results in 1 visit, from $199, by licensed dentists. Book now."},
            {"title": "Professional Service", "description": "A friendly team that cares about you."},
        ),
    ],
    ids=["zh", "en"],
)
def test_hand_written_good_ad_beats_off_topic_ad(model, good, bad):
    record = RECORDS[3] if "雅思" in good["title"] else RECORDS[7]
    good_score = model.score_one(_ad(record, **good))
    bad_score = model.score_one(_ad(record, **bad))
    assert good_score.p_click > bad_score.p_click
    assert good_score.p_cvr > bad_score.p_cvr
    assert good_score.p_ctcvr > 2 * bad_score.p_ctcvr


@pytest.mark.parametrize("record", [RECORDS[0], RECORDS[7]], ids=["zh", "en"])
def test_exaggerated_claim_raises_clicks_and_lowers_conversion(model, record):
    title, description = reference_ad(record)
    claim = "100%有效，效果最好，包治根治！" if record.language == "zh" else "Guaranteed results, the best, 100% risk-free!"
    plain = model.score_one(_ad(record, title, description))
    hyped = model.score_one(_ad(record, title, description + claim))
    assert hyped.p_click > plain.p_click
    assert hyped.p_cvr < plain.p_cvr
    assert hyped.p_ctcvr < plain.p_ctcvr
    scores = _variant_scores(model, record)
    assert scores["exaggerated"][0] > scores["reference"][0] and scores["exaggerated"][1] < scores["reference"][1]


def test_ordinal_first_is_not_a_claim(model):
    assert model.count_exaggerations("第一次体验免费") == 0
    assert model.count_exaggerations("全网第一，效果最好") == 2
    assert model.count_exaggerations("bestseller in guaranteed-free town") == 1  # "guaranteed", not "best"


def test_fatigue_same_phrasing_loses_clicks_other_phrasing_does_not(model):
    record = RECORDS[7]
    ad_a = _ad(record, "Professional Teeth Whitening", "Brighter smile with in-office whitening by licensed dentists.")
    ad_b = _ad(record, "Teeth Whitening From $199", "Results in 1 visit at our downtown clinic, book today.")
    fresh_a, fresh_b = model.score_one(ad_a).p_click, model.score_one(ad_b).p_click

    state = FatigueState(memory_half_life=None)  # plain counts
    keys_a, keys_b = model.phrasing_keys(ad_a), model.phrasing_keys(ad_b)
    assert not set(keys_a.tolist()) & set(keys_b.tolist())
    for _ in range(30):
        state.observe(keys_a)
    assert state.exposure(keys_a) == pytest.approx(30.0)
    assert state.exposure(keys_b) == 0.0
    tired_a = model.score_one(ad_a, shown_before=state.exposure(keys_a)).p_click
    still_b = model.score_one(ad_b, shown_before=state.exposure(keys_b)).p_click
    assert tired_a < 0.8 * fresh_a
    assert still_b == pytest.approx(fresh_b)

    # the same through the stream API: the 20th showing of A is fatigued, B's first is not
    p_click, p_cvr = model.score_stream([ad_a] * 20 + [ad_b])
    assert p_click[0] == pytest.approx(fresh_a)
    assert np.all(np.diff(p_click[:20]) < 0)
    assert p_click[-1] == pytest.approx(fresh_b)
    assert np.allclose(p_cvr[:20], p_cvr[0])  # fatigue acts on clicks only


def test_fatigue_is_forgotten_with_the_memory_half_life(model):
    keys = phrasing_keys("Same old title", "Same old description of the offer")
    other = phrasing_keys("Something else", "A different description entirely here")
    state = FatigueState(memory_half_life=10)
    state.observe(keys)
    for _ in range(9):
        state.observe(other)
    assert state.exposure(keys) == pytest.approx(0.5)  # 10 impressions later: half remembered
    assert model.fatigue_factor(0.0) == pytest.approx(1.0)
    assert model.fatigue_factor(1e9) == pytest.approx(model.config.fatigue_floor)


def test_score_accepts_records_dicts_and_dataframes(model, log_20k):
    rows = log_20k.head(50)
    from_frame = model.score(rows)
    from_dicts = model.score(rows.to_dict("records"))
    assert np.allclose(from_frame[0], from_dicts[0]) and np.allclose(from_frame[1], from_dicts[1])
    # the fresh probabilities times the logged fatigue factor are the logged truth
    assert np.allclose(from_frame[0] * rows["truth_fatigue_factor"], rows["truth_p_click"])
    assert np.allclose(from_frame[1], rows["truth_p_cvr"])


_SPECIAL_TEXTS = ["", " ", "😀" * 40, "a" * 10_000, "最好" * 5_000, "ｆｕｌｌ－ｗｉｄｔｈ　１００％", "Mixed 中文 and English 123 ١٢٣ עברית", "\x00\n\t", "#1 best 第一 100% 包治"]
_texts = st.one_of(st.text(max_size=300), st.sampled_from(_SPECIAL_TEXTS))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query=_texts, bidword=_texts, title=_texts, description=_texts,
    selling_points=st.lists(_texts, max_size=5),
    industry=st.one_of(st.sampled_from(sorted(DEFAULT_BASE_CTR)), st.text(max_size=20)),
    language=st.sampled_from(["zh", "en", "", "fr", "ZH-cn"]),
    shown_before=st.floats(min_value=0, max_value=1e9, allow_nan=False),
)
def test_any_text_gives_probabilities_strictly_inside_0_1(
    model, query, bidword, title, description, selling_points, industry, language, shown_before
):
    ad = {"query": query, "bidword": bidword, "selling_points": selling_points, "industry": industry,
          "language": language, "title": title, "description": description}
    p_click, p_cvr = model.score([ad], shown_before=shown_before)
    for p in (p_click[0], p_cvr[0], p_click[0] * p_cvr[0]):
        assert np.isfinite(p) and 0.0 < p < 1.0
    features = model.features([ad])
    assert np.all((features >= 0) & (features <= 1))
    assert model.phrasing_keys(ad).dtype == np.uint64


# ------------------------------------------------------------------------------------------
# The simulator.
# ------------------------------------------------------------------------------------------


def test_variants_exist_in_both_languages_and_differ(model):
    for record in RECORDS:
        variants = make_variants(record, 0, model)
        assert [v.name for v in variants] == list(VARIANT_NAMES)
        texts = {(v.title, v.description) for v in variants}
        assert len(texts) >= len(VARIANT_NAMES) - 1, record.id  # at most one rewrite is a no-op
        assert all(v.title and v.description for v in variants)


def test_missing_reference_ad_is_built_from_the_record():
    for record in (r for r in RECORDS if not r.title):
        title, description = reference_ad(record)
        assert record.bidword.lower() in title.lower() and record.selling_points[0] in title + description


def test_schema_columns_and_dtypes(log_20k, tmp_path):
    table = simulate(RECORDS, 500, seed=3, progress=False)
    assert table.schema == OUTPUT_SCHEMA
    required = ["record_id", "industry", "language", "query", "bidword", "selling_points", "title",
                "description", "variant", "click", "conversion", "truth_p_click", "truth_p_cvr", "truth_p_ctcvr"]
    assert table.column_names[: len(required)] == required
    frame = log_20k
    assert set(frame["click"].unique()) <= {0, 1} and set(frame["conversion"].unique()) <= {0, 1}
    assert set(frame["variant"]) == set(VARIANT_NAMES)
    assert set(frame["language"]) == {"zh", "en"}
    assert np.allclose(frame["truth_p_ctcvr"], frame["truth_p_click"] * frame["truth_p_cvr"])
    for column in ("truth_p_click", "truth_p_cvr", "truth_p_ctcvr"):
        assert frame[column].between(0, 1, inclusive="neither").all()
    assert frame["truth_fatigue_factor"].between(0, 1, inclusive="right").all()


def test_conversion_only_after_click(log_20k):
    assert (log_20k["conversion"] <= log_20k["click"]).all()
    assert log_20k["conversion"].sum() > 0


def test_realistic_overall_rates(log_20k):
    impressions, clicks, conversions = len(log_20k), log_20k["click"].sum(), log_20k["conversion"].sum()
    assert 0.01 <= clicks / impressions <= 0.05
    assert 0.02 <= conversions / clicks <= 0.10
    # the truth agrees (no sampling noise)
    assert 0.01 <= log_20k["truth_p_click"].mean() <= 0.05
    clicked = log_20k[log_20k["click"] == 1]
    assert 0.02 <= clicked["truth_p_cvr"].mean() <= 0.10


def test_shared_template_wears_out_while_diverse_ads_keep_their_ctr(model):
    """One pass over the records: the generic template repeats its phrasing across records and
    loses clicks; each record's own reference ad is new phrasing and keeps its fresh CTR."""
    for language in ("zh", "en"):
        records = [r for r in RECORDS if r.language == language]
        template = [make_variants(r, 0, model)[VARIANT_NAMES.index("generic_template")] for r in records]
        templates = [_ad(r, v.title, v.description) for r, v in zip(records, template)]
        references = [_ad(r, *reference_ad(r)) for r in records]
        tired = model.score_stream(templates)[0] / model.score(templates)[0]
        diverse = model.score_stream(references)[0] / model.score(references)[0]
        assert np.all(np.diff(tired) < 0) and tired[-1] < 0.96  # 5 earlier showings of the template
        assert np.allclose(diverse, 1.0, atol=0.02)


BUNDLED_RECORDS = simulate_logs.DEFAULT_RECORDS


@pytest.mark.skipif(not BUNDLED_RECORDS.is_file(), reason="bundled sample records not present")
def test_bundled_records_template_fatigue_and_rates():
    """On the bundled catalogue (hundreds of records), the shared template settles near the
    fatigue floor while each record's own phrasing stays mostly fresh."""
    from relate_common.records import load_records

    records, _ = load_records(BUNDLED_RECORDS)
    frame = simulate(records, 20_000, seed=0, progress=False).to_pandas()
    fatigue = frame.groupby("variant")["truth_fatigue_factor"].mean()
    assert fatigue["generic_template"] < fatigue["reference"] - 0.2
    assert fatigue["reference"] > 0.75
    assert 0.01 <= frame["click"].mean() <= 0.05


def test_logs_carry_variant_signal(log_20k):
    truth = log_20k.groupby("variant")["truth_p_ctcvr"].mean()
    assert truth["best_practice"] > 1.5 * truth["reference"] > 1.5 * truth["no_query_terms"]


def test_same_seed_same_file_other_seed_other_file(records_file, tmp_path, capsys):
    outputs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        outputs[name] = tmp_path / f"{name}.parquet"
        assert main(["--records", str(records_file), "--output", str(outputs[name]), "--impressions", "3000",
                     "--seed", str(seed), "--no-progress"]) == 0
    assert outputs["a"].read_bytes() == outputs["b"].read_bytes()
    a, c = pq.read_table(outputs["a"]), pq.read_table(outputs["c"])
    assert not a.equals(c)
    assert a.column("variant").to_pylist() != c.column("variant").to_pylist()


def test_same_seed_same_file_across_processes(records_file, tmp_path):
    """Python salts str hashes per process; nothing in the simulator may depend on that."""
    outputs = []
    for hash_seed in ("1", "999"):
        output = tmp_path / f"h{hash_seed}.parquet"
        subprocess.run(
            [sys.executable, "-m", "data_prep.simulate_logs", "--records", str(records_file), "--output", str(output),
             "--impressions", "2000", "--seed", "5", "--no-progress"],
            check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1]


def test_cli_end_to_end(records_file, tmp_path, capsys):
    output = tmp_path / "out" / "logs.parquet"
    rc = main(["--records", str(records_file), "--output", str(output), "--impressions", "2000", "--seed", "1"])
    assert rc == 0
    table = pq.read_table(output)
    assert table.num_rows == 2000 and table.schema == OUTPUT_SCHEMA
    out = capsys.readouterr()
    for text in ("impressions: 2000", "CTR:", "CVR:", "CTCVR:", "best_practice", "generic_template", str(output)):
        assert text in out.out
    assert "impressions" in out.err  # the progress bar
    assert set(table.column("record_id").to_pylist()) <= {r["id"] for r in RAW_RECORDS}


def test_bad_records_file_exits_2_naming_file_row_field(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    rows = [dict(RAW_RECORDS[0]), dict(RAW_RECORDS[6]), {k: v for k, v in RAW_RECORDS[1].items() if k != "query"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    output = tmp_path / "logs.parquet"
    assert main(["--records", str(path), "--output", str(output), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "row 3" in err and "'query'" in err
    assert not output.exists()
    assert main(["--records", str(tmp_path / "missing.jsonl"), "--output", str(output)]) == 2


def test_help_and_module_entry_point(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for text in ("--records", "--impressions", "--seed", "truth_p_click", "ad_records.jsonl"):
        assert text in help_text
    assert simulate_logs.DEFAULT_RECORDS.name == "ad_records.jsonl"
    assert simulate_logs.DEFAULT_RECORDS.parent == Path(simulate_logs.__file__).resolve().parent / "sample"


def test_simulator_does_not_import_what_it_judges():
    """The truth must not share code with the rewards or the learned scorer it evaluates."""
    code = (
        "import sys, data_prep.simulate_logs, data_prep.user_model\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('reward_fns', 'ctcvr_model') or m == 'relate_common.ad_format']\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(impressions=st.integers(1, 3000), seed=st.integers(0, 2**16))
def test_aggregated_log_is_the_per_impression_log_summed_per_ad(impressions, seed):
    per = simulate(RECORDS, impressions, seed=seed, progress=False).to_pandas()
    agg = simulate(RECORDS, impressions, seed=seed, progress=False, aggregate=True)
    assert agg.schema == simulate_logs.AGGREGATED_SCHEMA
    agg = agg.to_pandas().set_index(["record_id", "variant"]).sort_index()
    grouped = per.groupby(["record_id", "variant"]).agg(
        impressions=("click", "size"), clicks=("click", "sum"), conversions=("conversion", "sum"),
        truth_p_click=("truth_p_click", "mean"), truth_p_ctcvr=("truth_p_ctcvr", "mean")).sort_index()
    # only shown ads have a row, and every count and truth mean is the per-impression log's
    assert list(agg.index) == list(grouped.index)
    for col in ("impressions", "clicks", "conversions"):
        assert (agg[col].to_numpy() == grouped[col].to_numpy()).all(), col
    for col in ("truth_p_click", "truth_p_ctcvr"):
        np.testing.assert_allclose(agg[col].to_numpy(), grouped[col].to_numpy(), rtol=1e-12)
    assert int(agg["impressions"].sum()) == impressions


def test_aggregated_log_feeds_the_ctcvr_tables_with_the_same_totals(tmp_path, records_file):
    from data_prep import build_ctcvr_table

    for flag in ([], ["--aggregate"]):
        name = "agg" if flag else "per"
        assert main(["--records", str(records_file), "--output", str(tmp_path / f"{name}.parquet"),
                     "--impressions", "4000", "--seed", "5", "--no-progress", *flag]) == 0
    per = build_ctcvr_table.main(["--logs", str(tmp_path / "per.parquet"), "--output-dir", str(tmp_path / "t_per")])
    agg = build_ctcvr_table.main(["--logs", str(tmp_path / "agg.parquet"), "--output-dir", str(tmp_path / "t_agg")])
    assert agg["shape"] == "aggregated" and per["shape"] == "impression"
    for split in ("train", "val", "test"):
        for key in ("impressions", "clicks", "conversions", "queries"):
            assert agg["splits"][split][key] == per["splits"][split][key], (split, key)



def test_run_with_a_config_matches_main(records_file, tmp_path, capsys):
    """run(SimulationRun) is main(argv) without the parsing: same exit code, file and report."""
    output = tmp_path / "logs.parquet"
    assert main(["--records", str(records_file), "--output", str(output), "--impressions", "500", "--seed", "2",
                 "--popularity-skew", "0.5", "--aggregate", "--no-progress"]) == 0
    argv_log, argv_report = output.read_bytes(), capsys.readouterr().out
    config = simulate_logs.SimulationRun(output=output, records=records_file, impressions=500, seed=2,
                                         popularity_skew=0.5, aggregate=True, progress=False)
    assert simulate_logs.run(config) == 0
    assert output.read_bytes() == argv_log

    def without_wall_time(report: str) -> str:
        return "\n".join(line for line in report.splitlines() if not line.startswith("wall time:"))

    assert without_wall_time(capsys.readouterr().out) == without_wall_time(argv_report)
    missing = tmp_path / "missing.jsonl"
    assert main(["--records", str(missing), "--output", str(output)]) == 2
    assert simulate_logs.run(simulate_logs.SimulationRun(output=output, records=missing)) == 2
