"""reward_fns.risk (blacklist, compliance) and reward_fns.correctness (claim grounding)."""

from __future__ import annotations

import pytest
from relate_common.ad_format import parse_ad, render_ad
from relate_common.records import AdRecord

from reward_fns.config import CorrectnessConfig, RiskConfig
from reward_fns.correctness import cn_to_int, correctness_reward, find_claims, offline_correctness
from reward_fns.risk import Lexicon, find_blacklist_hits, is_compliant, risk_blacklist_reward, risk_judge_reward

RISK = RiskConfig()


def hits(text):
    return [(h.category, h.text, h.span) for h in find_blacklist_hits(text, RISK)]


# ---- risk ------------------------------------------------------------------------------------------


def test_zh_categories_and_spans():
    text = "标题：全国第一的减肥中心\n描述：包瘦不反弹，保本保息。"
    found = hits(text)
    cats = {c for c, _, _ in found}
    assert cats == {"absolute_terms", "medical_efficacy", "financial_guarantee"}
    for _, t, (a, b) in found:
        assert text[a:b] == t
    assert ("absolute_terms", "第一", (5, 7)) in found


def test_en_word_boundaries_and_case():
    found = hits("Title: The BEST plan, Risk-Free\nDescription: #1 rated. Bestow your trust; #10 list.")
    texts = sorted(t for _, t, _ in found)
    assert any("BEST" in t for t in texts) and "Risk-Free" in texts and "#1" in texts
    assert not any(t.lower().startswith("bestow") for t in texts)
    assert "#10" not in texts and all(s != (68, 70) for _, _, s in found)


def test_full_width_text_matches_with_original_spans():
    text = "Ｔｉｔｌｅ: ＢＥＳＴ course\nDescription: ＮＯ.１ in town, ｒｉｓｋ ｆｒｅｅ"
    found = hits(text)
    got = {t for _, t, _ in found}
    assert {"ＢＥＳＴ", "ＮＯ.１", "ｒｉｓｋ ｆｒｅｅ"} <= got
    for _, t, (a, b) in found:
        assert text[a:b] == t  # spans index the ORIGINAL (full-width) text


def test_exceptions_are_not_hits():
    assert hits("标题：第一次来访免费\n描述：最快5分钟到账。") == []
    assert hits("Title: Best practices for teams\nDescription: Find your cheapest day to fly.") == []
    assert hits("标题：质量保证\n描述：保证金可退。") == []


def test_patterns_match():
    assert {c for c, _, _ in hits("标题：7天瘦10斤\n描述：三天见效")} == {"medical_efficacy"}
    assert {c for c, _, _ in hits("Title: Lose 10 lbs in 7 days\nDescription: Earn guaranteed 15% a year")} == {
        "medical_efficacy", "financial_guarantee", "guarantee_promises"
    }


def test_risk_score_and_compliance_flag():
    clean = find_blacklist_hits("Title: Dental cleaning\nDescription: Book a visit.", RISK)
    assert risk_blacklist_reward(clean, RISK).value == 1.0 and is_compliant(clean)
    one = find_blacklist_hits("Title: Best dentist\nDescription: Book a visit.", RISK)
    assert risk_blacklist_reward(one, RISK).value == 0.5 and not is_compliant(one)
    many = find_blacklist_hits("Title: Best #1 dentist\nDescription: Guaranteed cure.", RISK)
    assert risk_blacklist_reward(many, RISK).value == 0.0
    assert not is_compliant(clean, judge_compliant=False)
    assert is_compliant(clean, judge_compliant=None)


def test_risk_judge_component():
    assert risk_judge_reward(True, [], False, 0.5).value == 1.0
    assert risk_judge_reward(False, ["绝对化用语"], False, 0.5).value == 0.0
    failed = risk_judge_reward(None, [], True, 0.5)
    assert failed.value == 0.5 and failed.triggers[0].rule == "judge_failed"


def test_lexicon_categories_filter_and_bad_files(tmp_path):
    lex = Lexicon.from_files(["risk_zh.yaml", "risk_en.yaml"], only=["medical_efficacy"])
    assert lex.category_names == ["medical_efficacy"]
    assert [h.category for h in lex.find("Title: Best cure")] == ["medical_efficacy"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("language: en\ncategories:\n  x:\n    terms: [a]\n    typo: [b]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="typo"):
        Lexicon.from_files([bad])


# ---- correctness -----------------------------------------------------------------------------------


def rec(selling_points, language="en", landing_page="", query="q", bidword="b"):
    return AdRecord(id="r1", query=query, bidword=bidword, selling_points=list(selling_points), language=language,
                    landing_page=landing_page)


def check(title, desc, record):
    resp = render_ad(title, desc, record.language)
    return offline_correctness(resp, parse_ad(resp), record, CorrectnessConfig())


@pytest.mark.parametrize("text, value", [("三", 3), ("十五", 15), ("二十一", 21), ("两千", 2000), ("三万", 30000),
                                         ("一百零五", 105), ("十", 10), ("abc", None), ("", None)])
def test_cn_to_int(text, value):
    assert cn_to_int(text) == value


def test_grounded_numbers_in_both_languages():
    en = rec(["Over 5,000 patients since 2012", "12-week plan from $49/month"])
    r = check("Doctor-Supervised Weight Loss Since 2012", "5000+ patients helped. 12-week plans from $49.", en)
    assert r.value == 1.0, r.triggers
    zh = rec(["已服务学员3万+", "21天为一个调整周期", "首月服务费399元"], language="zh")
    r = check("二十一天科学减重", "服务学员30000人，首月399元起。", zh)
    assert r.value == 1.0, r.triggers


def test_ungrounded_claims_hand_checked():
    en = rec(["Free consultation", "Over 40,000 procedures"])
    r = check("Chicago's #1 LASIK Surgeon", "100% success rate, results in 24 hours, only $999.", en)
    kinds = sorted(t.rule for t in r.triggers)
    assert kinds == ["ungrounded_duration", "ungrounded_percentage", "ungrounded_price", "ungrounded_superlative"]
    assert r.value == 0.0
    for t in r.triggers:
        resp = render_ad("Chicago's #1 LASIK Surgeon", "100% success rate, results in 24 hours, only $999.", "en")
        assert resp[t.span[0] : t.span[1]] == t.detail
    zh = rec(["正品探头可当面验证"], language="zh")
    r = check("热玛吉效果最佳", "三天见效，保证满意。", zh)
    assert sorted(t.rule for t in r.triggers) == ["ungrounded_duration", "ungrounded_guarantee", "ungrounded_superlative"]


def test_claims_grounded_in_selling_points_pass_correctness_even_when_risky():
    zh = rec(["7天瘦10斤，无效退款"], language="zh")
    r = check("7天瘦10斤", "无效退款，放心试。", zh)
    assert r.value == 1.0, r.triggers  # correct (the advertiser said it) ...
    assert find_blacklist_hits(render_ad("7天瘦10斤", "无效退款，放心试。", "zh"), RISK)  # ... but not compliant


def test_formats_codes_and_vague_amounts_are_not_claims():
    en = rec(["Native tutors"])
    assert check("Learn Spanish 1-on-1", "4K TVs and N2 prep, open 24/7.", en).value == 1.0
    # "5G" reads as 5 g(rams) to the checker: a claim, grounded only when the record says 5G.
    assert check("Fast plans", "5G coverage.", en).value == 0.5
    assert check("Fast plans", "5G coverage.", rec(["5G coverage nationwide"])).value == 1.0
    zh = rec(["外教"], language="zh")
    assert check("职场英语1对1", "婚礼第二天出片，不用花几千块，一天就能学会。", zh).value == 1.0


def test_query_numbers_count_as_grounded_by_default():
    zh = rec(["专业团队"], language="zh", query="一个月瘦20斤")
    assert check("一个月瘦20斤容易反弹", "专业团队帮你评估。", zh).value == 1.0
    strict = CorrectnessConfig(sources=["selling_points", "landing_page"])
    resp = render_ad("一个月瘦20斤容易反弹", "专业团队帮你评估。", "zh")
    assert offline_correctness(resp, parse_ad(resp), zh, strict).value == 0.5


def test_find_claims_only_looks_at_title_and_description():
    resp = "Title: Plan\nDescription: Save 20%\nCall 10 times"
    claims = find_claims(resp, parse_ad(resp))
    assert [c.text for c in claims] == ["20%"]


def test_correctness_mixes_judge_score():
    off = check("Plan", "Save 20%.", rec(["Save 20%"]))
    assert correctness_reward(off, None, CorrectnessConfig()) is off
    mixed = correctness_reward(off, 0.2, CorrectnessConfig(judge_weight=0.5))
    assert mixed.value == pytest.approx(0.6)
