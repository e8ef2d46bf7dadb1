"""Relevance reward: semantic similarity to query / bidword / selling points + bidword coverage.

Range [0, 1]::

    semantic = sum_f w_f * clip((cos(ad, f) - cos_floor) / (cos_ceil - cos_floor), 0, 1)
    relevance = semantic_weight * semantic + lexical_weight * bidword_coverage

``ad`` is title + description; ``f`` ranges over query, bidword and the joined selling points.
Embeddings come from a ``TextEncoder`` (ctcvr_model.encoders: (N, dim) float32, L2-normalised),
one per language (RelevanceConfig.encoder). :func:`relevance_scores` embeds a whole list of
responses in one encoder call per language; scoring one sample is the same call with a list of
one, so the reward manager and score_batch share the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
from relate_common.ad_format import ParsedAd
from relate_common.lang import is_cjk
from relate_common.records import AdRecord

from reward_fns.config import RelevanceConfig
from reward_fns.text import ad_text, normalize_chars
from reward_fns.types import ComponentScore, Trigger

CONTEXT_FIELDS = ("query", "bidword", "selling_points")
EncoderProvider = Callable[[str], object]  # language -> TextEncoder

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _stem(word: str) -> str:
    """Crude English stem, enough for coverage ("courses" ~ "course", "cleaning" ~ "clean")."""
    for suffix in ("ers", "ing", "er", "es", "s", "ed"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _units(text: str, all_chars: bool = False) -> list[str]:
    """Coverage units of normalised text: CJK character bigrams (a lone CJK character when the run
    has one; every character too with ``all_chars``, for the text a one-character bidword is
    looked up in), and stemmed Latin words."""
    units: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) == 1 or all_chars:
            units.extend(run)
        units.extend(run[i] + run[i + 1] for i in range(len(run) - 1))
        run.clear()

    for ch in text:
        if is_cjk(ch):
            run.append(ch)
        else:
            flush()
    flush()
    units.extend(_stem(w) for w in _WORD_RE.findall(text))
    return units


def bidword_coverage(bidword: str, text: str) -> float:
    """Share of the bidword's units found in ``text``, in [0, 1]; 1 when the bidword is empty.

    Chinese bidwords are cut into character bigrams ("英语培训" -> 英语, 语培, 培训) because
    Chinese has no spaces; English ones into stemmed words.
    """
    want = _units(normalize_chars(bidword))
    if not want:
        return 1.0
    have = set(_units(normalize_chars(text), all_chars=True))
    return sum(1 for u in want if u in have) / len(want)


def cosine_to_unit(cos: np.ndarray, floor: float, ceil: float) -> np.ndarray:
    """Map cosine similarities (any shape) to [0, 1] linearly between ``floor`` and ``ceil``."""
    return np.clip((np.asarray(cos, dtype=np.float64) - floor) / (ceil - floor), 0.0, 1.0)


def relevance_from_embeddings(
    ad_emb: np.ndarray, field_embs: dict[str, np.ndarray], coverage: np.ndarray, cfg: RelevanceConfig
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Relevance (N,) from ad embeddings (N, D), field embeddings {name: (N, D)}, coverage (N,).

    Returns the relevance and the per-field mapped similarities {name: (N,)} for logging.
    """
    wsum = sum(cfg.field_weights.get(f, 0.0) for f in field_embs) or 1.0
    sims = {f: cosine_to_unit(np.einsum("nd,nd->n", ad_emb, e), cfg.cos_floor, cfg.cos_ceil) for f, e in field_embs.items()}
    semantic = sum(cfg.field_weights.get(f, 0.0) * s for f, s in sims.items()) / wsum
    total = cfg.semantic_weight + cfg.lexical_weight or 1.0
    rel = (cfg.semantic_weight * semantic + cfg.lexical_weight * np.asarray(coverage, dtype=np.float64)) / total
    return np.clip(rel, 0.0, 1.0), sims


def field_text(record: AdRecord, name: str) -> str:
    value = getattr(record, name)
    return "；".join(value) if isinstance(value, list) and record.language == "zh" else (
        "; ".join(value) if isinstance(value, list) else str(value)
    )


def relevance_scores(
    records: Sequence[AdRecord],
    parsed: Sequence[ParsedAd],
    encoder_for: EncoderProvider,
    cfg: RelevanceConfig,
) -> list[ComponentScore]:
    """Relevance of each parsed response to its record, one encoder call per language.

    ``encoder_for(language)`` returns the TextEncoder for that language. A response with no
    title and no description scores 0 without being embedded.
    """
    n = len(records)
    out: list[ComponentScore | None] = [None] * n
    ads = [ad_text(p) for p in parsed]
    by_lang: dict[str, list[int]] = {}
    for i, (rec, text) in enumerate(zip(records, ads)):
        if not text:
            out[i] = ComponentScore("relevance", 0.0, [Trigger("no_ad_text", "nothing to compare")])
        else:
            by_lang.setdefault(rec.language, []).append(i)
    for lang, idx in by_lang.items():
        enc = encoder_for(lang)
        texts: list[str] = [ads[i] for i in idx]
        for f in CONTEXT_FIELDS:
            texts += [field_text(records[i], f) for i in idx]
        # Unique texts only: the G responses of a group share their context fields.
        uniq = list(dict.fromkeys(texts))
        emb = enc.encode(uniq)
        row = {t: k for k, t in enumerate(uniq)}
        mat = emb[[row[t] for t in texts]]
        m = len(idx)
        ad_emb = mat[:m]
        field_embs = {f: mat[m * (k + 1) : m * (k + 2)] for k, f in enumerate(CONTEXT_FIELDS)}
        coverage = np.array([bidword_coverage(records[i].bidword, ads[i]) for i in idx])
        rel, sims = relevance_from_embeddings(ad_emb, field_embs, coverage, cfg)
        for j, i in enumerate(idx):
            triggers = []
            if coverage[j] < 1.0:
                triggers.append(Trigger("bidword_not_covered", f"{coverage[j]:.2f} of '{records[i].bidword}'"))
            for f in CONTEXT_FIELDS:
                if sims[f][j] <= 0.0:
                    triggers.append(Trigger(f"unrelated_to_{f}", "similarity at or below cos_floor"))
            details = {f"sim_{f}": round(float(sims[f][j]), 4) for f in CONTEXT_FIELDS}
            details["bidword_coverage"] = round(float(coverage[j]), 4)
            out[i] = ComponentScore("relevance", round(float(rel[j]), 6), triggers, details)
    return [o for o in out if o is not None]  # every index was filled above


class EncoderPool:
    """Lazily loads the encoder of each language from ctcvr_model.encoders (once per process).

    ``overrides`` maps a spec to a ready encoder (tests, or a caller that already holds one).
    """

    def __init__(self, cfg: RelevanceConfig, overrides: dict[str, object] | None = None, device: str | None = None):
        self.cfg = cfg
        self.overrides = dict(overrides or {})
        self.device = device  # None: CUDA when available, else CPU (ctcvr_model.encoders.load_encoder)
        self._cache: dict[str, object] = {}

    def spec_for(self, language: str) -> str:
        return self.cfg.encoder.get(language) or self.cfg.encoder.get("en") or "use-multilingual"

    def __call__(self, language: str) -> object:
        spec = self.spec_for(language)
        if spec in self.overrides:
            return self.overrides[spec]
        if spec not in self._cache:
            from ctcvr_model.encoders import load_encoder, maybe_cached

            self._cache[spec] = maybe_cached(load_encoder(spec, device=self.device), self.cfg.cache_dir)
        return self._cache[spec]
