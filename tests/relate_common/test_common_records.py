"""relate_common: the bundled sample records, the record schema, language detection, the ad format."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.config import SAMPLE_RECORDS
from relate_common.ad_format import LENGTH_LIMITS, parse_ad, render_ad
from relate_common.lang import detect_language
from relate_common.records import load_records

# Terms that make an ad non-compliant (PRC Advertising Law art. 9 absolutes, guaranteed cures and
# returns); only used to check the sample gives the compliance rewards something to catch.
BAIT_TERMS = ("最", "第一", "100%", "包", "根治", "保证", "稳赚", "零风险", "国家级", "顶级", "永不",
              "guarantee", "best", "#1", "risk-free", "cure", "lowest price", "no side effects", "permanent")


def test_bundled_sample_is_large_varied_and_bilingual():
    records, errors = load_records(SAMPLE_RECORDS)
    assert not errors and len(records) >= 300
    assert len({r.id for r in records}) == len(records)
    langs = Counter(r.language for r in records)
    assert langs["zh"] / len(records) >= 0.3 and langs["en"] / len(records) >= 0.3
    industries = Counter(r.industry for r in records)
    assert len(industries) >= 15
    assert {"weight_loss", "myopia", "hair_loss", "education", "travel", "insurance", "software",
            "home_services", "legal", "auto", "finance", "ecommerce"} <= set(industries)
    assert all(2 <= len(r.selling_points) <= 5 for r in records)
    assert all(r.title and r.description for r in records)
    # Hand-written, not templated: titles and queries are all distinct.
    assert len({r.title for r in records}) == len(records)
    assert len({r.query for r in records}) == len(records)
    baited = [r for r in records if any(t in p.lower() for p in r.selling_points for t in BAIT_TERMS)]
    assert len(baited) >= 0.1 * len(records)


def test_sample_reference_ads_fit_the_prompted_lengths_mostly():
    records, _ = load_records(SAMPLE_RECORDS)
    inside = [LENGTH_LIMITS[r.language]["title"][0] <= len(r.title) <= LENGTH_LIMITS[r.language]["title"][1] for r in records]
    assert sum(inside) / len(inside) >= 0.9


def test_detect_language():
    assert detect_language("近视怎么矫正") == "zh"
    assert detect_language("iPhone 15 手机壳 包邮") == "zh"
    assert detect_language("best dim sum 点心 in London") == "en"
    assert detect_language("") == "en"


def test_render_then_parse_round_trips_both_languages():
    for lang, title, desc in (("en", "Fix Leaks Fast", "Licensed plumbers, 60-minute response."),
                              ("zh", "近视矫正 科学方案", "20年眼科经验，术前检查免费。")):
        text = render_ad(title, desc, lang)
        parsed = parse_ad(text)
        assert parsed.ok and (parsed.title, parsed.description) == (title, desc)
        assert text[slice(*parsed.title_span)] == title and text[slice(*parsed.description_span)] == desc


def test_parse_reports_each_format_problem():
    assert parse_ad("Description: d\nTitle: t").problems == ["wrong_order"]
    assert parse_ad("Title: t").problems == ["missing_description"]
    assert parse_ad("Title: a\nTitle: b\nDescription: d").problems == ["repeated_title"]
    assert parse_ad("Sure! Here is your ad:\nTitle: t\nDescription: d").problems == ["extra_text"]
    assert parse_ad("title : t\n\n描述:d").ok  # label case, spaces and either colon are tolerated
    assert set(parse_ad("").problems) == {"missing_title", "missing_description"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parse_never_raises_and_spans_point_into_the_response(text):
    parsed = parse_ad(text)
    assert text[slice(*parsed.title_span)] == parsed.title
    assert text[slice(*parsed.description_span)] == parsed.description
