"""The ad variants of the impression-log simulator: each record's reference ad and its rewrites.

Some rewrites are better (a concrete selling point, a call to action, both with the query terms),
some worse (query terms dropped, exaggerated claims, a generic template shared by all records, a
truncated or an overlong description). ``data_prep.simulate_logs`` shows them in its impression
stream; ``testbed.corpus`` builds its pretraining corpus from them. Formulas: data_prep/SIMULATOR.md.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from data_prep.user_model import UserModel
from data_prep.user_text import content_tokens, normalize_text
from relate_common.records import AdRecord

# ---------------------------------------------------------------------------------------------
# Phrases the rewrites use (the simulator's own; the user model only sees the resulting text).
# ---------------------------------------------------------------------------------------------

CTA_PHRASES = {
    "zh": ("立即免费咨询", "立即预约，名额有限", "点击领取专属方案", "马上报名，了解更多"),
    "en": ("Book now.", "Get a free quote today.", "Sign up now.", "Call now for a free consultation."),
}
EXAGGERATED_TITLE_PREFIX = {"zh": "【全网第一】", "en": "#1 Best "}
EXAGGERATED_CLAIM = {"zh": "100%有效，效果最好，绝对保证！", "en": "Guaranteed results, 100% risk-free!"}
GENERIC_TITLE_SUFFIX = {"zh": "-专业服务，值得信赖", "en": " - Trusted Professional Service"}
GENERIC_DESCRIPTION = {
    "zh": "专业团队，品质保障，服务周到，口碑之选，欢迎来电咨询。",
    "en": "Professional team, quality service and great value. Trusted by thousands of happy customers. Contact us today.",
}
OVERLONG_FILLER = {
    "zh": "我们始终坚持以客户为中心，为您提供全方位、多层次、个性化的优质服务体验，",
    "en": "We are committed to putting our customers first and to providing comprehensive, multi-level, personalised, high-quality service experiences. ",
}
OVERLONG_REPEATS = 4  # enough to push any description well past the comfortable band
TRUNCATED_KEEP_SHARE = 0.3  # a description cut at 30% loses its message and its selling points
FALLBACK_NO_QUERY_TITLE = {"zh": "专业服务", "en": "Professional Service"}

_SENTENCE_END = {"zh": "。", "en": "."}
_TRAILING_PUNCT = " \t\n。.！!，,；;、"


@dataclass(frozen=True)
class AdVariant:
    """One ad text shown for a record: the reference or a named rewrite of it."""

    record_index: int
    name: str
    title: str
    description: str


# ---------------------------------------------------------------------------------------------
# Rewrites.
# ---------------------------------------------------------------------------------------------


def _stable_pick(options: Sequence[str], key: str) -> str:
    """Pick an option by a stable hash of ``key`` (the same record always gets the same phrase)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return options[int.from_bytes(digest, "little") % len(options)]


def _append_sentence(text: str, sentence: str, language: str) -> str:
    """Append a sentence with the language's punctuation and spacing."""
    base = text.rstrip(_TRAILING_PUNCT)
    sentence = sentence.strip()
    if not base:
        return sentence
    if language == "zh":
        return f"{base}。{sentence}"
    return f"{base}. {sentence}"


def _ensure_end(text: str, language: str) -> str:
    """End a sentence with punctuation unless it already has some."""
    text = text.strip()
    if text and text[-1] not in "。.！!？?":
        text += _SENTENCE_END[language]
    return text


def _capitalise(text: str) -> str:
    """Upper-case the first letter only (str.title() would also turn "real estate crm" into "Crm")."""
    return text[:1].upper() + text[1:]


def reference_ad(record: AdRecord) -> tuple[str, str]:
    """The record's reference title/description; a missing one is built from its fields.

    A built description states only the first two selling points, like a typical hand-written
    ad, so the "plus_selling_point" rewrite still has one to add."""
    points = record.selling_points
    if record.language == "zh":
        title = record.title or f"{record.bidword}｜{points[0]}"
        description = record.description or _ensure_end("，".join(points[:2]), "zh")
    else:
        title = record.title or f"{_capitalise(record.bidword)}: {points[0]}"
        description = record.description or _ensure_end(". ".join(points[:2]), "en")
    return title, description


def _unquoted_point(record: AdRecord, ad_text: str, model: UserModel) -> str | None:
    """The first selling point with a number the ad does not quote yet, else the first one the ad
    does not contain verbatim; None when the ad already says them all. Points with an absolute
    claim ("7天瘦10斤，无效退款") are skipped: a careful copywriter would not add them."""
    normalised_ad = normalize_text(ad_text)
    points = [p for p in record.selling_points if not model.count_exaggerations(p)]
    for point in points:
        numbers = re.findall(r"\d+", normalize_text(point), flags=re.ASCII)
        if numbers and not all(n in normalised_ad for n in numbers):
            return point
    for point in points:
        if normalize_text(point) not in normalised_ad:
            return point
    return None


def rewrite_plus_selling_point(record: AdRecord, title: str, description: str, model: UserModel) -> tuple[str, str]:
    """Better: the description also states a concrete selling point (a number when there is one).
    An ad that already states every (clean) selling point is left as it is."""
    point = _unquoted_point(record, title + " " + description, model)
    if point is None:
        return title, description
    return title, _ensure_end(_append_sentence(description, point, record.language), record.language)


def rewrite_plus_cta(record: AdRecord, title: str, description: str, model: UserModel) -> tuple[str, str]:
    """Better: the description ends with a call to action."""
    cta = _stable_pick(CTA_PHRASES[record.language], record.id)
    return title, _ensure_end(_append_sentence(description, cta, record.language), record.language)


def rewrite_best_practice(record: AdRecord, title: str, description: str, model: UserModel) -> tuple[str, str]:
    """Best: query and bidword up front, two concrete clean selling points, a call to action."""
    lang = record.language
    fact = _unquoted_point(record, "", model) or record.selling_points[0]
    second = _unquoted_point(record, fact, model)
    others = [second] if second else []
    cta = _stable_pick(CTA_PHRASES[lang], record.id)
    # Echo the search, unless the query itself holds an absolute term ("best crm ...").
    echo = record.bidword if model.count_exaggerations(record.query) else record.query
    if lang == "zh":
        new_title = f"{record.bidword}｜{fact}"
        body = "，".join([fact, *others])
        new_description = _ensure_end(f"{echo}？{body}。{cta}", "zh")
    else:
        new_title = f"{_capitalise(record.bidword)}: {fact}"
        body = ". ".join([fact, *others])
        new_description = _ensure_end(f"Looking for {echo}? {body}. {cta}", "en")
    return new_title, new_description


def _query_terms(record: AdRecord) -> list[str]:
    """Strings to delete so the ad no longer mentions the query: the query, the bidword, their
    English words and their Chinese two-character pieces, longest first."""
    terms = {record.query, record.bidword}
    for text in (record.query, record.bidword):
        for token in content_tokens(normalize_text(text)):
            terms.add(token)
    return sorted((t for t in terms if t.strip()), key=lambda t: (-len(t), t))  # set order is salted


def _strip_terms(text: str, terms: Sequence[str]) -> str:
    """Delete every term (case-insensitively, whole words for Latin terms) and tidy the spacing."""
    for term in terms:
        pattern = re.escape(term)
        if term.isascii():
            pattern = rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"
        text = re.sub(pattern, "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    text = re.sub(r"([，。、；：！？])\1+", r"\1", text)
    return re.sub(r"\s{2,}", " ", text).strip(" ,.;:，、；：-｜|")


def rewrite_no_query_terms(record: AdRecord, title: str, description: str, model: UserModel) -> tuple[str, str]:
    """Worse: the same ad with the query and bidword terms removed (an off-target ad)."""
    terms = _query_terms(record)
    new_title = _strip_terms(title, terms) or FALLBACK_NO_QUERY_TITLE[record.language]
    new_description = _strip_terms(description, terms) or GENERIC_DESCRIPTION[record.language]
    return new_title, new_description


def rewrite_exaggerated(record: AdRecord, title: str, description: str, model: UserModel) -> tuple[str, str]:
    """Worse for conversion: absolute claims in the title and the description (more clicks, fewer
    conversions: the landing page cannot keep the promise)."""
    lang = record.language
    return EXAGGERATED_TITLE_PREFIX[lang] + title, _append_sentence(description, EXAGGERATED_CLAIM[lang], lang)


def rewrite_generic_template(record: AdRecord, title: str, description: str, model: UserModel) -> tuple[str, str]:
    """Worse: boilerplate shared by every record (only the bidword differs), so it fatigues fast."""
    lang = record.language
    bidword = record.bidword if lang == "zh" else _capitalise(record.bidword)
    return bidword + GENERIC_TITLE_SUFFIX[lang], GENERIC_DESCRIPTION[lang]


def rewrite_truncated(record: AdRecord, title: str, description: str, model: UserModel) -> tuple[str, str]:
    """Worse: the description is cut off after its first 30%."""
    if record.language == "zh":
        keep = max(4, int(len(description) * TRUNCATED_KEEP_SHARE))
        return title, description[:keep].rstrip(_TRAILING_PUNCT) + "…"
    words = description.split()
    keep = max(2, int(len(words) * TRUNCATED_KEEP_SHARE))
    return title, " ".join(words[:keep]).rstrip(_TRAILING_PUNCT) + "…"


def rewrite_overlong(record: AdRecord, title: str, description: str, model: UserModel) -> tuple[str, str]:
    """Worse: the description is padded with corporate filler far past a readable length."""
    lang = record.language
    filler = (OVERLONG_FILLER[lang] * OVERLONG_REPEATS).strip().rstrip("，,")
    return title, _ensure_end(_append_sentence(description, filler, lang), lang)


# A rewrite maps (record, reference title, reference description, user model) to a new
# (title, description); the model is only used to read its lexicons (e.g. to avoid risky points).
Rewrite = Callable[[AdRecord, str, str, UserModel], tuple[str, str]]

# The variant list, in output order. "reference" is the record's own ad.
REWRITES: dict[str, Rewrite | None] = {
    "reference": None,
    "plus_selling_point": rewrite_plus_selling_point,
    "plus_cta": rewrite_plus_cta,
    "best_practice": rewrite_best_practice,
    "no_query_terms": rewrite_no_query_terms,
    "exaggerated": rewrite_exaggerated,
    "generic_template": rewrite_generic_template,
    "truncated": rewrite_truncated,
    "overlong": rewrite_overlong,
}
VARIANT_NAMES = tuple(REWRITES)


def make_variants(record: AdRecord, record_index: int = 0, model: UserModel | None = None) -> list[AdVariant]:
    """The reference ad and every rewrite of it, in ``VARIANT_NAMES`` order."""
    model = model or UserModel()
    title, description = reference_ad(record)
    variants = []
    for name, rewrite in REWRITES.items():
        new_title, new_description = (
            (title, description) if rewrite is None else rewrite(record, title, description, model)
        )
        variants.append(AdVariant(record_index, name, new_title, new_description))
    return variants
