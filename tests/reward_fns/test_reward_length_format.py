"""reward_fns.length and reward_fns.format, hand-checked in Chinese and English."""

from __future__ import annotations

import numpy as np
import pytest
from relate_common.ad_format import parse_ad, render_ad

from reward_fns.config import FormatConfig, LengthConfig
from reward_fns.format import format_reward
from reward_fns.length import interval_score, length_reward, tokens_in_span

# ---- length ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, expected",
    [(10, 1.0), (20, 1.0), (30, 1.0), (5, 0.0), (8, 0.6), (33, 0.8), (45, 0.0), (60, 0.0), (0, 0.0)],
)
def test_interval_score_hand_checked(x, expected):
    # [10, 30], decay 0.5: 8 is 20% short -> 1 - 0.2/0.5 = 0.6; 33 is 10% long -> 0.8.
    assert interval_score(x, 10, 30, 0.5) == pytest.approx(expected)


def test_length_zh_counts_characters():
    cfg = LengthConfig()  # zh: chars, title [10, 30], description [30, 100]
    title = "科学减重分阶段吃对三餐更轻松"  # 14 characters
    desc = "减" * 110  # 10% too long -> 0.8
    r = length_reward(parse_ad(render_ad(title, desc, "zh")), "zh", cfg)
    assert r.details["title_chars"] == 14 and r.details["description_chars"] == 110
    assert r.value == pytest.approx(0.5 * 1.0 + 0.5 * 0.8)
    assert [t.rule for t in r.triggers] == ["description_too_long"]


def test_length_en_counts_generated_tokens(tokenizer):
    cfg = LengthConfig()  # en: tokens, title [5, 18], description [15, 52]
    resp = render_ad("Lose Belly Fat With a Plan You Can Keep", "Short.", "en")
    enc = tokenizer(resp, add_special_tokens=False, return_offsets_mapping=True)
    parsed = parse_ad(resp)
    r = length_reward(parsed, "en", cfg, offsets=np.array(enc["offset_mapping"]))
    # Hand count: the title span holds the tokens of "Lose Belly Fat With a Plan You Can Keep".
    n_title = len(tokenizer(" Lose Belly Fat With a Plan You Can Keep", add_special_tokens=False)["input_ids"])
    assert r.details["title_tokens"] == n_title
    assert r.details["description_tokens"] == 2  # " Short", "."
    assert r.details["description_score"] == 0.0  # 2 tokens: 87% short of 15
    assert r.details["title_score"] == 1.0
    assert r.value == pytest.approx(0.5)
    # Same count from re-tokenising the field when no offsets are given (SmolLM2 here).
    r2 = length_reward(parsed, "en", cfg, count_tokens=lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]))
    assert r2.details["description_tokens"] == 2


def test_length_tokens_need_offsets_or_tokenizer():
    with pytest.raises(ValueError):
        length_reward(parse_ad("Title: a\nDescription: b"), "en", LengthConfig())


def test_length_missing_field_scores_zero():
    r = length_reward(parse_ad("标题：只有标题没有描述的一条广告文案"), "zh", LengthConfig())
    assert r.details["description_score"] == 0.0
    assert "description_missing" in [t.rule for t in r.triggers]
    assert r.value == pytest.approx(0.5)


def test_tokens_in_span_ignores_special_tokens():
    off = np.array([[0, 5], [5, 6], [6, 11], [11, 11]])
    assert tokens_in_span(off, (7, 11)) == 1
    assert tokens_in_span(off, (0, 11)) == 3
    assert tokens_in_span(off, (11, 11)) == 0


# ---- format ----------------------------------------------------------------------------------------

FMT = FormatConfig()


def fmt(response: str, selling_points=("卖点",)):
    return format_reward(response, parse_ad(response), list(selling_points), FMT)


@pytest.mark.parametrize(
    "response",
    [
        "标题：春节宠物寄养 独立房间不关笼\n描述：每天88元起，番禺区可上门接送。",
        "Title: Austin Medical Weight Loss | Same-Week Visits\nDescription: Board-certified doctors. Book online in minutes.",
        "Title: Invisalign® Clear Aligners\nDescription: Straighter teeth... with a plan that fits your budget.",
    ],
)
def test_clean_ads_score_one(response):
    r = fmt(response)
    assert r.value == 1.0, r.triggers
    assert r.triggers == []


@pytest.mark.parametrize(
    "response, rule, expected",
    [
        ("Title: **Best** course\nDescription: Learn fast.", "markdown", 0.7),
        ("标题：## 好课\n描述：立即报名。", "markdown", 0.7),
        ("Title: Course\nDescription: Visit https://example.com/offer now.", "url", 0.7),
        ("标题：好课推荐\n描述：访问 www.abc.cn 了解。", "url", 0.7),
        ("标题：好课推荐\n描述：咨询电话13812345678。", "phone", 0.7),
        ("Title: Plumber\nDescription: Call (555) 123-4567 today.", "phone", 0.7),
        ("标题：好课推荐\n描述：热线400-820-1234。", "phone", 0.7),
        ("Title: Sale 😀\nDescription: Big savings.", "emoji", 0.8),
        ("标题：限时优惠★\n描述：全场八折。", "emoji", 0.8),
        ("Title: Sale\u200b now\nDescription: Big savings.", "control_char", 0.8),
        ("Title: Sale\x07\nDescription: Big savings.", "control_char", 0.8),
        ("Title: Sale!!\nDescription: Big savings.", "excessive_punctuation", 0.8),
        ("标题：限时优惠！！\n描述：全场八折。", "excessive_punctuation", 0.8),
        ("标题：限时优惠。。。\n描述：全场八折。", "excessive_punctuation", 0.8),
        ("Title: Sale! Now!\nDescription: Big! savings.", "excessive_punctuation", 0.8),
        ("Title: A\nDescription: B\nClick here", "extra_text", 0.7),
        ("Description: B\nTitle: A", "wrong_order", 0.8),
        ("Title: A\nTitle: A2\nDescription: B", "repeated_field", 0.7),
        ("Title:\nDescription: B", "empty_field", 0.5),
    ],
)
def test_each_rule_hand_checked(response, rule, expected):
    r = fmt(response)
    assert rule in {t.rule for t in r.triggers}
    assert r.value == pytest.approx(expected)
    for t in r.triggers:
        if t.span is not None:
            assert 0 <= t.span[0] < t.span[1] <= len(response)


def test_missing_field_is_unusable():
    assert fmt("Title: Only a title").value == 0.0
    assert fmt("just some text").value == 0.0
    assert fmt("").value == 0.0


def test_url_and_phone_allowed_when_in_selling_points():
    resp = "标题：好课推荐\n描述：咨询电话 400-820-1234，官网 www.abc.cn"
    assert {t.rule for t in fmt(resp).triggers} == {"phone", "url"}
    allowed = fmt(resp, selling_points=["客服热线4008201234", "官网www.abc.cn"])
    assert allowed.value == 1.0, allowed.triggers


def test_penalties_add_up_and_floor_at_zero():
    r = fmt("Title: **Big** sale 😀!!!\nDescription: call 13812345678 at www.x.com\x07\nmore")
    assert {"markdown", "emoji", "excessive_punctuation", "phone", "url", "control_char", "extra_text"} <= {
        t.rule for t in r.triggers
    }
    assert r.value == 0.0


def test_digits_of_prices_are_not_phones():
    r = fmt("Title: Loans from $1,000 to $35,000\nDescription: APR 9.95%-35.99%, since 2012-2024.")
    assert "phone" not in {t.rule for t in r.triggers}
