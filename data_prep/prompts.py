"""Chat prompts for ad writing, in Chinese and English, in two styles.

The system message states the ad-writing rules and the exact output format that
``relate_common.ad_format.parse_ad`` (and so the format reward) checks; the limits come from
``relate_common.ad_format.LENGTH_LIMITS`` so the prompt and the reward cannot disagree.

Styles (``DatasetConfig.prompt_style``, ``--prompt-style``):

* ``full``: every rule spelled out (the default; for 8B policies on GPUs).
* ``compact``: the same fields (query, bid keyword, selling points, industry, landing page) and
  the same output format and limits in one short line of rules: for small CPU policies, whose
  step time grows with the prompt. Ours, not the paper's (the paper does not print its prompt).
  ``benchmarks/bench_prompt_tokens.py`` measures both in SmolLM2 tokens.
"""

from __future__ import annotations

from relate_common.ad_format import FIELD_LABELS, LENGTH_LIMITS
from relate_common.records import AdRecord

PROMPT_VERSION = "v1"
PROMPT_STYLES = ("full", "compact")

_SYSTEM_EN = """You are an expert search-ad copywriter. Write one search ad for the advertiser below.

Rules:
1. Match the user's search query and include the bid keyword naturally.
2. Use the advertiser's selling points; state only facts given in the selling points or landing page. Never invent numbers, prices, durations or guarantees.
3. Stay compliant: no absolute or exaggerated claims (best, #1, top, 100%, guaranteed, risk-free, cure, permanent results), no promises of returns or outcomes.
4. No markdown, no emoji, no links or phone numbers unless a selling point contains them.
5. Title: {title_min}-{title_max} characters. Description: {desc_min}-{desc_max} characters.

Output exactly two lines and nothing else:
{title_label}: <title>
{desc_label}: <description>"""

_SYSTEM_ZH = """你是资深的搜索广告文案撰写人。请为下面的广告主撰写一条搜索广告。

要求：
1. 紧扣用户的搜索词，自然地包含购买关键词。
2. 使用广告主的卖点；只陈述卖点或落地页中给出的事实，不得编造数字、价格、时长或承诺。
3. 合规：不得使用绝对化或夸大用语（最好、第一、顶级、100%、保证、包治、根治、零风险等），不得承诺收益或效果。
4. 不使用Markdown、表情符号、链接或电话号码（卖点中已给出的除外）。
5. 标题{title_min}-{title_max}个字，描述{desc_min}-{desc_max}个字。

只输出以下两行，不要输出其他内容：
{title_label}：<标题>
{desc_label}：<描述>"""

_SYSTEM_COMPACT_EN = ("Write one search ad from the facts below; no exaggerated claims. Output two lines:\n"
                      "{title_label}: <{title_min}-{title_max} chars>\n{desc_label}: <{desc_min}-{desc_max} chars>")
_SYSTEM_COMPACT_ZH = ("根据以下信息写一条搜索广告，只用给出的事实，不夸大。输出两行：\n"
                      "{title_label}：<{title_min}-{title_max}字>\n{desc_label}：<{desc_min}-{desc_max}字>")
_SYSTEMS = {("full", "en"): _SYSTEM_EN, ("full", "zh"): _SYSTEM_ZH,
            ("compact", "en"): _SYSTEM_COMPACT_EN, ("compact", "zh"): _SYSTEM_COMPACT_ZH}

_USER_EN = "Search query: {query}\nBid keyword: {bidword}\nSelling points:\n{points}"
_USER_ZH = "搜索词：{query}\n购买关键词：{bidword}\n卖点：\n{points}"
_LANDING = {"en": "\nLanding page: {text}", "zh": "\n落地页：{text}"}
_INDUSTRY = {"en": "\nIndustry: {text}", "zh": "\n行业：{text}"}


def prompt_version(style: str) -> str:
    """The ``extra_info.prompt_version`` of rows written with ``style`` ('v1', 'v1-compact')."""
    check_style(style)
    return PROMPT_VERSION if style == "full" else f"{PROMPT_VERSION}-{style}"


def check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(PROMPT_STYLES)}")


def system_message(language: str, style: str = "full") -> str:
    """The system message with rules and output format for ``language`` ('zh' or 'en')."""
    check_style(style)
    template = _SYSTEMS[style, "zh" if language == "zh" else "en"]
    limits = LENGTH_LIMITS[language]
    title_label, desc_label = FIELD_LABELS[language]
    return template.format(
        title_min=limits["title"][0], title_max=limits["title"][1],
        desc_min=limits["description"][0], desc_max=limits["description"][1],
        title_label=title_label, desc_label=desc_label,
    )


def user_message(record: AdRecord) -> str:
    """The user message: query, bid keyword, selling points, then industry and landing page if any."""
    template = _USER_ZH if record.language == "zh" else _USER_EN
    points = "\n".join(f"- {p}" for p in record.selling_points)
    text = template.format(query=record.query, bidword=record.bidword, points=points)
    if record.industry:
        text += _INDUSTRY[record.language].format(text=record.industry)
    if record.landing_page:
        text += _LANDING[record.language].format(text=record.landing_page)
    return text


def build_messages(record: AdRecord, style: str = "full") -> list[dict[str, str]]:
    """Chat messages in the form verl's RLHFDataset and every chat template expect."""
    return [
        {"role": "system", "content": system_message(record.language, style)},
        {"role": "user", "content": user_message(record)},
    ]
