"""reward_fns.relevance (real multilingual encoder), reward_fns.ctcvr and reward_fns.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from relate_common.ad_format import parse_ad, render_ad
from relate_common.records import AdRecord

from reward_fns.config import CTCVRConfig, RelevanceConfig
from reward_fns.ctcvr import ctcvr_reward, ctcvr_reward_values, load_ctcvr_scorer
from reward_fns.metrics import delta_ctcvr, format_summary, semantic_quality, structural_quality, table1, table3
from reward_fns.relevance import EncoderPool, bidword_coverage, cosine_to_unit, relevance_from_embeddings, relevance_scores


@pytest.fixture(scope="module")
def encoders():
    """The offline default encoder (USE multilingual), loaded once for the module."""
    pool = EncoderPool(RelevanceConfig())
    pool("zh")
    return pool


def record(language, query, bidword, selling_points, rid="r"):
    return AdRecord(id=rid, query=query, bidword=bidword, selling_points=selling_points, language=language)


ZH = record("zh", "产后肚子大怎么瘦下来", "产后修复减肥", ["产后42天起即可评估", "腹直肌分离检测免费", "上海静安、徐汇两家门店"])
EN = record("en", "how to lose belly fat fast", "lose belly fat", ["Registered dietitians on staff", "12-week plan from $49/month"])
ZH_AD = render_ad("产后小肚子难消？先查腹直肌分离", "产后修复减肥先评估，上海静安、徐汇门店提供免费腹直肌分离检测。", "zh")
EN_AD = render_ad("Lose Belly Fat With a Plan You Can Keep", "Registered dietitians build a 12-week plan from $49/month.", "en")
OFF_ZH = render_ad("广州春节宠物寄养 独立房间不关笼", "每天88元起，番禺区可上门接送。", "zh")
OFF_EN = render_ad("Cloud Phone System for Small Offices", "VoIP for teams of 2 to 200 at $19.99 per user.", "en")


def test_matched_ads_beat_unrelated_ones_in_both_languages(encoders):
    cfg = RelevanceConfig()
    recs = [ZH, ZH, EN, EN]
    ads = [ZH_AD, OFF_ZH, EN_AD, OFF_EN]
    out = relevance_scores(recs, [parse_ad(a) for a in ads], encoders, cfg)
    zh_good, zh_bad, en_good, en_bad = (o.value for o in out)
    assert zh_good > 0.6 and en_good > 0.6
    assert zh_bad < 0.25 and en_bad < 0.25
    assert out[0].details["bidword_coverage"] == pytest.approx(1.0)
    assert "bidword_not_covered" in {t.rule for t in out[1].triggers}
    for o in out:
        assert 0.0 <= o.value <= 1.0


def test_single_sample_equals_batch(encoders):
    cfg = RelevanceConfig()
    batch = relevance_scores([ZH, EN], [parse_ad(ZH_AD), parse_ad(EN_AD)], encoders, cfg)
    one = relevance_scores([EN], [parse_ad(EN_AD)], encoders, cfg)
    assert one[0].value == pytest.approx(batch[1].value, abs=1e-5)


def test_no_ad_text_scores_zero_without_encoding():
    calls = []

    class Boom:
        def encode(self, texts, batch_size=64):
            calls.append(texts)
            raise AssertionError("must not be called")

    out = relevance_scores([EN], [parse_ad("nothing parseable")], lambda lang: Boom(), RelevanceConfig())
    assert out[0].value == 0.0 and calls == []


@pytest.mark.parametrize(
    "bidword, text, expected",
    [
        ("英语培训", "英语学习培训班", 2 / 3),  # bigrams 英语, 语培, 培训: 英语 and 培训 found
        ("英语培训", "少儿英语培训", 1.0),
        ("lose belly fat", "Lose Belly Fat With a Plan", 1.0),
        ("carpet cleaning", "Carpet cleaners near you", 1.0),  # stems: clean
        ("medical weight loss austin", "Weight loss in Dallas", 0.5),
        ("", "anything", 1.0),
        ("猫", "宠物猫粮", 1.0),
    ],
)
def test_bidword_coverage_hand_checked(bidword, text, expected):
    assert bidword_coverage(bidword, text) == pytest.approx(expected)


def test_relevance_from_embeddings_hand_checked():
    cfg = RelevanceConfig(cos_floor=0.0, cos_ceil=1.0, field_weights={"query": 1.0, "bidword": 0.0, "selling_points": 0.0},
                          semantic_weight=0.5, lexical_weight=0.5)
    ad = np.array([[1.0, 0.0], [0.0, 1.0]])
    q = np.array([[0.6, 0.8], [1.0, 0.0]])
    fields = {"query": q, "bidword": q, "selling_points": q}
    rel, sims = relevance_from_embeddings(ad, fields, np.array([1.0, 0.0]), cfg)
    assert sims["query"] == pytest.approx([0.6, 0.0])
    assert rel == pytest.approx([0.5 * 0.6 + 0.5 * 1.0, 0.0])
    assert cosine_to_unit(np.array([-1.0, 0.1, 0.35, 0.6, 0.9]), 0.1, 0.6) == pytest.approx([0, 0, 0.5, 1, 1])


# ---- CTCVR ---------------------------------------------------------------------------------------------


def test_ctcvr_reward_mapping_hand_checked():
    cfg = CTCVRConfig(scale=0.5)
    assert ctcvr_reward(0.01, 0.01, cfg).value == pytest.approx(0.5)
    two_x = 0.5 + 0.5 * math.tanh(math.log(2) / 0.5)
    assert ctcvr_reward(0.02, 0.01, cfg).value == pytest.approx(two_x, abs=1e-6)
    assert ctcvr_reward(0.005, 0.01, cfg).value == pytest.approx(1 - two_x, abs=1e-6)  # symmetric in log-ratio
    assert ctcvr_reward(0.005, 0.01, cfg).triggers[0].rule == "below_reference"
    vals = ctcvr_reward_values(np.array([1e-9, 1e-3, 1e-2, 0.5, 1.0, np.nan]), np.full(6, 1e-2), cfg)
    assert np.all(np.diff(vals[:5]) >= 0) and np.all((vals > 0) & (vals < 1))
    assert vals[5] == 0.5


def test_ctcvr_needs_a_reference():
    with pytest.raises(ValueError, match="reference"):
        ctcvr_reward(0.01, None, CTCVRConfig())
    assert ctcvr_reward(0.01, None, CTCVRConfig(fallback_reference=0.01)).value == pytest.approx(0.5)


def test_per_sample_reference_rule_is_the_batch_rule():
    """score_one (the verl reward manager, one sample at a time) and predict_with_reference (the CLIs) use the
    same two halves of reward_fns.ctcvr's reference rule: own ad, the record's scored reference ad, fallback."""
    from reward_fns.ctcvr import predict_with_reference, reference_of, references_to_score

    class Scorer:  # pCTCVR = 1e-3 x (title length), enough to tell the ads apart
        def score(self, items):
            return None, [1e-3 * len(it["title"]) for it in items]

    def rec(rid, title="", description=""):
        return AdRecord(id=rid, query="q", bidword="b", selling_points=["s"], language="en", title=title,
                        description=description)

    records = [rec("a", "Ref A", "Desc A"), rec("a", "Ref A", "Desc A"), rec("b"), rec("c", "Own", "Own ad")]
    parsed = [parse_ad(render_ad(t, "d", "en")) for t in ("x", "yy", "zzz", "Own")]
    own = [False, False, False, True]
    cfg = CTCVRConfig(fallback_reference=0.007)
    cache: dict[str, float] = {}
    pred, ref = predict_with_reference(Scorer(), records, parsed, own, cfg, cache)
    assert ref.tolist() == pytest.approx([5e-3, 5e-3, 0.007, pred[3]]) and cache == pytest.approx({"a": 5e-3})
    per_sample: dict[str, float] = {}
    for i, (r, is_own) in enumerate(zip(records, own)):
        for rid, todo in references_to_score([r], [is_own], per_sample).items():
            per_sample[rid] = Scorer().score([{"title": todo.title}])[1][0]
        assert reference_of(r, pred[i], is_own, per_sample, cfg) == pytest.approx(ref[i])
    with pytest.raises(ValueError, match="record 'b' has no reference ad"):
        reference_of(records[2], pred[2], False, per_sample, CTCVRConfig())


def test_load_ctcvr_scorer_uses_ctcvr_model_when_present(tmp_path):
    # The directory is empty: ctcvr_model's loader must say what is wrong, not return nonsense.
    try:
        import ctcvr_model.scorer  # noqa: F401
    except ImportError:
        assert load_ctcvr_scorer(str(tmp_path)) is None
        return
    with pytest.raises(Exception):
        load_ctcvr_scorer(str(tmp_path))


# ---- metrics -------------------------------------------------------------------------------------------


def test_table3_and_table1_hand_checked():
    values = [
        {"length": 1.0, "format": 0.5, "relevance": 0.8, "correctness": 1.0, "risk_blacklist": 0.5, "risk_judge": None},
        {"length": 0.0, "format": 0.0, "relevance": 0.2, "correctness": 0.0, "risk_blacklist": 1.0, "risk_judge": 0.0},
    ]
    assert structural_quality(values[0]) == 0.75
    assert semantic_quality(values[0]) == pytest.approx((0.8 + 1.0 + 0.5) / 3)
    assert semantic_quality(values[1]) == pytest.approx((0.2 + 0.0 + 0.5) / 3)
    t3 = table3(values, [1.0, 0.5], [0.002, 0.004])
    assert t3["structural_quality"] == pytest.approx(0.375)
    assert t3["ctcvr_pct"] == pytest.approx(0.3)
    assert t3["diversity"] == pytest.approx(0.75)
    t1 = table1([True, False, True, True], [1, 1, 0.5, 0.5], [0.011, 0.011], [0.01, 0.01])
    assert t1["compliance_rate"] == 0.75 and t1["diversity"] == 0.75
    assert t1["delta_ctcvr"] == pytest.approx(0.1)
    assert table1([True], [1.0])["delta_ctcvr"] is None
    assert table3(values, [1.0, 1.0])["ctcvr_pct"] is None
    assert delta_ctcvr([], [0.1]) is None and delta_ctcvr([0.1], [0.0]) is None


def test_format_summary_prints_na():
    text = format_summary("gen", table1([True], [1.0]), table3([{"length": 1, "format": 1}], [1.0]), 1)
    assert "Table 1" in text and "Table 3" in text and "n/a" in text and "100.00%" in text
