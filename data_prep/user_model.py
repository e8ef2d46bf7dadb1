"""The ground-truth user model: the simulator's "real users", who click and convert on ad text.

It stands in for production traffic (see ``data_prep/SIMULATOR.md``): the impression-log
simulator samples clicks and conversions from it, and evaluation scores generated ads with it
("simulated online CTCVR"). Because it is the truth that later judges our reward functions and the
learned CTCVR scorer, it deliberately shares no code with them: its tokenisation, lexicons and
features are its own (text processing: ``data_prep.user_text``), and it imports only
``relate_common.lang``.

Model (both probabilities are logistic in six text features, each in [0, 1])::

    logit p_click = logit(base_ctr[industry]) + sum_k w_click[k] * (f_k - typical[k])
    logit p_cvr   = logit(base_cvr[industry]) + sum_k w_cvr[k]   * (f_k - typical[k])
    p_click      *= fatigue_factor(shown_before)          # template fatigue, click side only
    p_ctcvr       = p_click * p_cvr

Centering on ``typical`` makes the base rate the probability of an ordinary, never-shown ad, which
is what an industry benchmark table reports; it is the same logistic form as
``logit(base) + sum w f`` with the intercept shifted.

Fatigue depends on the stream of impressions, so it is explicit in the API: ``score`` takes a
``shown_before`` exposure count per ad, and ``FatigueState`` keeps those counts over a stream of
ad phrasings (hashed word/character 3-grams), with exponential forgetting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_prep.user_text import (
    band_fit,
    content_tokens,
    display_length,
    normalize_text,
    numbers_in,
    phrasing_keys,
    recall,
    term_pattern,
)
from relate_common.lang import detect_language, normalize_language

FEATURE_NAMES = (
    "relevance",  # query/bidword tokens found in the ad
    "concrete_facts",  # numbers (prices, durations, counts) from the selling points quoted in the ad
    "selling_point_coverage",  # share of the selling points (as text) the ad covers
    "call_to_action",  # the ad tells the user what to do next
    "length_fit",  # title and description lengths inside a comfortable band
    "exaggeration",  # absolute / blacklisted claims
)

# --------------------------------------------------------------------------------------------
# Configuration: every constant of the model in one place.
# --------------------------------------------------------------------------------------------

# Per-industry base click-through rates of an ordinary ad (public search-ads benchmarks put most
# verticals between 2% and 5%; finance/insurance/legal are lower, retail/travel/local higher).
DEFAULT_BASE_CTR: dict[str, float] = {
    "weight_loss": 0.035, "myopia": 0.025, "hair_loss": 0.030, "dental": 0.030,
    "fitness": 0.035, "beauty_skincare": 0.040, "education": 0.030, "language_learning": 0.035,
    "vocational_training": 0.030, "travel": 0.045, "recruitment": 0.040, "pets": 0.040,
    "insurance": 0.020, "finance": 0.020, "legal": 0.025, "real_estate": 0.030,
    "auto": 0.035, "software": 0.025, "home_services": 0.040, "ecommerce": 0.045,
    "home_decor": 0.030, "wedding": 0.035, "elder_care": 0.025, "telecom": 0.030,
}
# Per-industry post-click conversion rates (lead forms for local services and jobs convert well;
# big-ticket purchases such as property, cars and retail browsing convert worst).
DEFAULT_BASE_CVR: dict[str, float] = {
    "weight_loss": 0.050, "myopia": 0.040, "hair_loss": 0.045, "dental": 0.060,
    "fitness": 0.060, "beauty_skincare": 0.050, "education": 0.070, "language_learning": 0.065,
    "vocational_training": 0.060, "travel": 0.035, "recruitment": 0.080, "pets": 0.050,
    "insurance": 0.050, "finance": 0.040, "legal": 0.070, "real_estate": 0.030,
    "auto": 0.045, "software": 0.040, "home_services": 0.080, "ecommerce": 0.030,
    "home_decor": 0.040, "wedding": 0.045, "elder_care": 0.055, "telecom": 0.035,
}

# Weights are logits per unit of feature. The largest single effect (relevance) moves CTR by about
# 2.5x between "no query term" and "all query terms"; the rest are smaller, so p stays realistic.
DEFAULT_CLICK_WEIGHTS: dict[str, float] = {
    "relevance": 0.9,  # users click what matches what they searched for: the strongest signal
    "concrete_facts": 0.3,  # a price or a duration is an information scent worth clicking
    "selling_point_coverage": 0.15,  # concrete benefits, even without numbers, help a little
    "call_to_action": 0.25,  # "book now" lifts CTR modestly
    "length_fit": 0.5,  # cut-off or wall-of-text ads get skipped
    "exaggeration": 0.4,  # sensational claims attract clicks ...
}
DEFAULT_CVR_WEIGHTS: dict[str, float] = {
    "relevance": 0.5,  # a relevant click meets a relevant landing page
    "concrete_facts": 0.3,  # users who saw the price/duration before clicking are already qualified
    "selling_point_coverage": 0.2,  # the ad's promise matches what the landing page offers
    "call_to_action": 0.15,  # users primed to act (book, get a quote) fill the form more often
    "length_fit": 0.15,  # a readable ad sets expectations, weakly
    "exaggeration": -1.0,  # ... but the landing page cannot keep the promise: conversion drops
}
# Feature values of an ordinary, clean reference ad (about the means of the bundled sample's
# reference ads, rounded); the industry base rates apply at this point.
DEFAULT_TYPICAL_FEATURES: dict[str, float] = {
    "relevance": 0.6, "concrete_facts": 0.75, "selling_point_coverage": 0.8,
    "call_to_action": 0.3, "length_fit": 1.0, "exaggeration": 0.0,
}

# Calls to action, the simulator's own lexicon (matched on NFKC-lowercased text).
CTA_TERMS_ZH = (
    "立即", "马上", "立刻", "赶快", "免费咨询", "在线咨询", "咨询", "预约", "点击", "领取", "报名",
    "抢购", "下单", "申请", "了解更多", "获取", "试听", "注册", "拨打", "来电",
)
CTA_TERMS_EN = (
    "book now", "book", "get a quote", "quote", "sign up", "call now", "call today", "buy now",
    "shop now", "order now", "learn more", "apply now", "apply", "free trial", "try it free",
    "free consultation", "contact us", "register", "enroll", "enrol", "get started", "schedule",
    "request", "download", "join now", "claim",
)
# Absolute / exaggerated claims, the simulator's own lexicon (not the risk-control reward's).
EXAGGERATION_TERMS_ZH = (
    "最好", "最佳", "最强", "最低价", "第一", "顶级", "100%", "百分百", "包治", "根治", "保过", "稳赚",
    "绝对", "零风险", "无效退款", "永不反弹", "立竿见影", "神药", "特效", "国家级",
)
EXAGGERATION_TERMS_EN = (
    "best", "#1", "no. 1", "no.1", "number one", "guaranteed", "guarantee", "risk-free", "risk free",
    "cure", "cures", "cured", "miracle", "100%", "forever", "permanent", "permanently",
    "instant results", "never fail", "lowest price",
)
@dataclass(frozen=True)
class UserModelConfig:
    """All constants of the ground-truth user model (see SIMULATOR.md for the reasoning)."""

    base_ctr: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BASE_CTR))
    base_cvr: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BASE_CVR))
    # Unknown or empty industry: the middle of the benchmark range.
    default_base_ctr: float = 0.03
    default_base_cvr: float = 0.05
    click_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_CLICK_WEIGHTS))
    cvr_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_CVR_WEIGHTS))
    typical_features: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TYPICAL_FEATURES))

    # Relevance: the title is what users read first, so query terms there count extra.
    relevance_title_share: float = 0.3
    # A selling point counts as covered when half of its content tokens are in the ad.
    selling_point_covered_recall: float = 0.5
    # Two quoted facts / two absolute claims saturate their feature: an ad has room for about two
    # concrete numbers, and two superlatives already set the tone.
    facts_saturation: int = 2
    exaggeration_saturation: int = 2

    # Comfortable length bands in display units (CJK characters + Latin/number words):
    # Chinese search ads show ~30-character titles and 80-90-character descriptions; English
    # ones ~30-character (about 3-12 words) headlines and 90-character (8-35 words) descriptions.
    title_length_band: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: {"zh": (8, 30), "en": (3, 12)}
    )
    description_length_band: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: {"zh": (20, 90), "en": (8, 35)}
    )
    # Above the band, the fit falls linearly to 0 at this multiple of its upper end
    # (below the band it falls linearly to 0 at length 0).
    overlong_zero_multiple: float = 2.5
    # The description carries most of the message, so its length matters more.
    title_length_share: float = 0.4

    # Template fatigue: p_click *= floor + (1 - floor) * 0.5 ** (shown_before / half_exposure).
    fatigue_floor: float = 0.5  # a worn-out phrasing still gets half its clicks (the offer is real)
    fatigue_half_exposure: float = 25.0  # 25 recent showings of the same phrasing halve the novelty
    # Users forget: exposure counts decay with a half-life of this many passes over the catalogue
    # (half-life in impressions = rounds * number of distinct ads or records in the stream). The
    # steady-state exposure of a phrasing is share_of_impressions * half_life / ln 2: one record's
    # own wording settles near rounds / ln 2 ~ 14 (still fresh) whatever the catalogue size, while
    # a template shared by every record is shown catalogue-size times more and wears out.
    fatigue_memory_rounds: float = 10.0
    phrasing_ngram: int = 3  # word/character 3-grams identify "the same phrasing"

    # Keep logits finite so probabilities stay strictly inside (0, 1) for any input.
    logit_clip: float = 12.0

    cta_terms: tuple[str, ...] = CTA_TERMS_ZH + CTA_TERMS_EN
    exaggeration_terms: tuple[str, ...] = EXAGGERATION_TERMS_ZH + EXAGGERATION_TERMS_EN


# --------------------------------------------------------------------------------------------
# Ads as input.
# --------------------------------------------------------------------------------------------

AD_FIELDS = ("query", "bidword", "selling_points", "industry", "language", "title", "description")


@dataclass(frozen=True)
class AdText:
    """The fields of one ad the user model reads; built from a dict, an AdRecord or a row."""

    query: str = ""
    bidword: str = ""
    selling_points: tuple[str, ...] = ()
    industry: str = ""
    language: str = ""
    title: str = ""
    description: str = ""

    @classmethod
    def from_any(cls, ad: Any) -> AdText:
        """Accept a mapping or any object with the fields as attributes; missing fields are empty."""
        if isinstance(ad, AdText):
            return ad

        def get(name: str) -> Any:
            return ad.get(name) if isinstance(ad, Mapping) else getattr(ad, name, None)

        def text(name: str) -> str:
            value = get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return ""
            return str(value)

        points = get("selling_points")
        if points is None or (isinstance(points, float) and math.isnan(points)):
            points = ()
        elif isinstance(points, str):
            points = points.split("|")
        return cls(
            query=text("query"), bidword=text("bidword"),
            selling_points=tuple(str(p) for p in points),
            industry=text("industry"), language=text("language"),
            title=text("title"), description=text("description"),
        )

    def resolved_language(self) -> str:
        """'zh' / 'en': the given tag when known, else detected from the ad and query text."""
        known = normalize_language(self.language) if self.language else None
        return known or detect_language(" ".join((self.title, self.description, self.query)))


@dataclass(frozen=True)
class AdScore:
    """Ground-truth probabilities of one ad impression."""

    p_click: float
    p_cvr: float

    @property
    def p_ctcvr(self) -> float:
        return self.p_click * self.p_cvr


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------------------------
# Fatigue over a stream of impressions.
# --------------------------------------------------------------------------------------------


class FatigueState:
    """Exposure counts of ad phrasings (hashed n-grams) over a stream of impressions.

    The exposure of an ad is the mean, over its phrasing keys, of how many times each key was
    shown before, each past showing weighted ``0.5 ** (age / memory_half_life)`` (age in
    impressions of the stream). Forgetting is lazy: counts are stored divided by the running
    decay ``scale`` so one impression costs two small numpy operations, whatever the stream length.
    """

    _RENORMALISE_BELOW = 1e-150  # fold the scale back into the counts long before underflow

    def __init__(self, memory_half_life: float | None = None):
        """``memory_half_life`` in impressions; None means never forget (plain counts)."""
        self.memory_half_life = memory_half_life
        self._decay = 1.0 if not memory_half_life else 0.5 ** (1.0 / memory_half_life)
        self._slot_of: dict[int, int] = {}
        self._scaled_counts = np.zeros(1024, dtype=np.float64)
        self._scale = 1.0
        self.impressions = 0

    def slots(self, keys: np.ndarray) -> np.ndarray:
        """Register phrasing keys and return their slot indices (stable for this state)."""
        slots = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys.tolist()):
            slot = self._slot_of.get(key)
            if slot is None:
                slot = self._slot_of[key] = len(self._slot_of)
            slots[i] = slot
        if len(self._slot_of) > len(self._scaled_counts):
            grown = np.zeros(max(len(self._slot_of), 2 * len(self._scaled_counts)), dtype=np.float64)
            grown[: len(self._scaled_counts)] = self._scaled_counts
            self._scaled_counts = grown
        return slots

    def exposure_of_slots(self, slots: np.ndarray) -> float:
        """Decayed count of earlier showings, averaged over the ad's phrasing (0 for no keys)."""
        if len(slots) == 0:
            return 0.0
        return float(self._scaled_counts[slots].mean() * self._scale)

    def observe_slots(self, slots: np.ndarray) -> None:
        """Record one impression of a phrasing and advance the stream clock by one impression."""
        self._scaled_counts[slots] += 1.0 / self._scale  # slots are unique: no np.add.at needed
        self.impressions += 1
        self._scale *= self._decay
        if self._scale < self._RENORMALISE_BELOW:
            self._scaled_counts *= self._scale
            self._scale = 1.0

    def exposure(self, keys: np.ndarray) -> float:
        """``exposure_of_slots`` for phrasing keys (see ``phrasing_keys``)."""
        return self.exposure_of_slots(self.slots(keys))

    def observe(self, keys: np.ndarray) -> None:
        """``observe_slots`` for phrasing keys."""
        self.observe_slots(self.slots(keys))

    def replay(self, slot_arrays: Sequence[np.ndarray], order: Iterable[int]) -> np.ndarray:
        """Show ``slot_arrays[i]`` for each i of ``order`` in turn; return each one's exposure
        before it was shown (the hot loop of the simulator, kept free of anything else)."""
        exposures = []
        append = exposures.append
        for i in order:
            slots = slot_arrays[i]
            append(self.exposure_of_slots(slots))
            self.observe_slots(slots)
        return np.asarray(exposures, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------------------------


class UserModel:
    """Ground-truth p_click / p_cvr of ad impressions (see the module docstring for the formulas)."""

    def __init__(self, config: UserModelConfig | None = None):
        self.config = config or UserModelConfig()
        cfg = self.config
        self._cta = term_pattern(cfg.cta_terms)
        self._exaggeration = term_pattern(cfg.exaggeration_terms)
        self._typical = np.array([cfg.typical_features[k] for k in FEATURE_NAMES], dtype=np.float64)
        self._w_click = np.array([cfg.click_weights[k] for k in FEATURE_NAMES], dtype=np.float64)
        self._w_cvr = np.array([cfg.cvr_weights[k] for k in FEATURE_NAMES], dtype=np.float64)

    # -- features ---------------------------------------------------------------------------

    def count_exaggerations(self, text: str) -> int:
        """Absolute / exaggerated claims in raw text (normalised here)."""
        return len(self._exaggeration.findall(normalize_text(text)))

    def ad_features(self, ad: Any) -> np.ndarray:
        """The six features of one ad, each in [0, 1], in ``FEATURE_NAMES`` order."""
        cfg = self.config
        ad = AdText.from_any(ad)
        language = ad.resolved_language()
        title, description = normalize_text(ad.title), normalize_text(ad.description)
        ad_text = title + "\n" + description
        ad_tokens, title_tokens = content_tokens(ad_text), content_tokens(title)

        def term_relevance(text: str) -> float | None:
            needles = content_tokens(normalize_text(text))
            if not needles:
                return None
            share = cfg.relevance_title_share
            return (1 - share) * recall(needles, ad_tokens) + share * recall(needles, title_tokens)

        parts = [r for r in (term_relevance(ad.query), term_relevance(ad.bidword)) if r is not None]
        relevance = sum(parts) / len(parts) if parts else 0.0

        points = [normalize_text(p) for p in ad.selling_points]
        facts = frozenset().union(*(numbers_in(p) for p in points)) if points else frozenset()
        quoted_facts = len(facts & numbers_in(ad_text))
        covered = sum(
            1 for p in points
            if (tokens := content_tokens(p)) and recall(tokens, ad_tokens) >= cfg.selling_point_covered_recall
        )

        title_band = cfg.title_length_band[language]
        description_band = cfg.description_length_band[language]
        zero = cfg.overlong_zero_multiple
        length_fit = cfg.title_length_share * band_fit(display_length(title), *title_band, zero) + (
            1 - cfg.title_length_share
        ) * band_fit(display_length(description), *description_band, zero)

        return np.array(
            [
                relevance,
                min(1.0, quoted_facts / cfg.facts_saturation),
                covered / len(points) if points else 0.0,
                1.0 if self._cta.search(ad_text) else 0.0,
                length_fit,
                min(1.0, len(self._exaggeration.findall(ad_text)) / cfg.exaggeration_saturation),
            ],
            dtype=np.float64,
        )

    def features(self, ads: Iterable[Any]) -> np.ndarray:
        """Feature matrix, shape (n_ads, len(FEATURE_NAMES))."""
        rows = [self.ad_features(ad) for ad in _as_ads(ads)]
        return np.vstack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)))

    def base_rates(self, industries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-ad base CTR and CVR from the industry tables (defaults for unknown industries)."""
        cfg = self.config
        ctr = np.array([cfg.base_ctr.get(i.strip().lower(), cfg.default_base_ctr) for i in industries])
        cvr = np.array([cfg.base_cvr.get(i.strip().lower(), cfg.default_base_cvr) for i in industries])
        return ctr, cvr

    # -- probabilities ----------------------------------------------------------------------

    def fatigue_factor(self, shown_before: np.ndarray | float) -> np.ndarray:
        """Multiplier on p_click after ``shown_before`` (decayed) showings of the same phrasing."""
        cfg = self.config
        exposure = np.maximum(np.asarray(shown_before, dtype=np.float64), 0.0)
        return cfg.fatigue_floor + (1 - cfg.fatigue_floor) * np.power(0.5, exposure / cfg.fatigue_half_exposure)

    def score_features(
        self,
        features: np.ndarray,
        industries: Sequence[str],
        shown_before: np.ndarray | float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(p_click, p_cvr) from a precomputed feature matrix: the vectorised core."""
        base_ctr, base_cvr = self.base_rates(industries)
        centred = features - self._typical
        clip = self.config.logit_clip
        p_click = _sigmoid(np.clip(_logit(base_ctr) + centred @ self._w_click, -clip, clip))
        p_cvr = _sigmoid(np.clip(_logit(base_cvr) + centred @ self._w_cvr, -clip, clip))
        if shown_before is not None:
            p_click = p_click * self.fatigue_factor(shown_before)
        return p_click, p_cvr

    def score(
        self, ads: Iterable[Any], shown_before: np.ndarray | float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth (p_click, p_cvr) arrays for many ads.

        ``ads``: mappings (or a DataFrame, or objects such as AdRecord) with query, bidword,
        selling_points, industry, language, title, description. ``shown_before``: how often each
        ad's phrasing was already shown (scalar or one value per ad); None or 0 means fresh.
        p_ctcvr = p_click * p_cvr.
        """
        ads = _as_ads(ads)
        return self.score_features(self.features(ads), [a.industry for a in ads], shown_before)

    def score_one(self, ad: Any = None, *, shown_before: float = 0.0, **fields: Any) -> AdScore:
        """Convenience for one ad, given as a mapping/object or as keyword fields."""
        ad = AdText.from_any(ad if ad is not None else fields)
        p_click, p_cvr = self.score([ad], shown_before=shown_before)
        return AdScore(p_click=float(p_click[0]), p_cvr=float(p_cvr[0]))

    def phrasing_keys(self, ad: Any) -> np.ndarray:
        """The fatigue keys of an ad's phrasing (hashed n-grams of title and description)."""
        ad = AdText.from_any(ad)
        return phrasing_keys(ad.title, ad.description, self.config.phrasing_ngram)

    def new_fatigue_state(self, catalogue_size: int) -> FatigueState:
        """An empty exposure state for a stream over ``catalogue_size`` distinct ads (or records):
        its memory half-life is ``fatigue_memory_rounds`` passes over that catalogue."""
        return FatigueState(self.config.fatigue_memory_rounds * max(1, catalogue_size))

    def score_stream(
        self, ads: Iterable[Any], fatigue: FatigueState | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score ads as consecutive impressions of one stream: each ad is shown once, in order,
        and its p_click is fatigued by the earlier ones (and by ``fatigue``'s history, which is
        updated). Use it to give a set of generated ads the same template fatigue as real traffic:
        an ad whose phrasing repeats m earlier ones has ``shown_before`` close to m."""
        ads = _as_ads(ads)
        fatigue = fatigue if fatigue is not None else self.new_fatigue_state(len(ads))
        slot_arrays = [fatigue.slots(self.phrasing_keys(a)) for a in ads]
        exposures = fatigue.replay(slot_arrays, range(len(ads)))
        return self.score(ads, shown_before=exposures)


def _as_ads(ads: Iterable[Any]) -> list[AdText]:
    """Normalise an iterable of ads (or a pandas DataFrame) into a list of AdText."""
    if hasattr(ads, "to_dict") and hasattr(ads, "columns"):  # a pandas DataFrame
        ads = ads.to_dict("records")
    return [AdText.from_any(a) for a in ads]
