"""Composition: sentence reward (eq. 2), batch credit (eq. 4, 5) and ``score_batch``.

Two call patterns share this code:

* per sample (verl reward-loop worker): :func:`score_samples` with lists of one. It computes
  every sentence-level component of the preset and the sentence reward WITHOUT diversity,
  which needs the whole batch;
* per batch (the RELATE trainer's advantage step): :func:`batch_credit` (:mod:`reward_fns.credit`,
  re-exported here) on the decoded
  ``responses`` with their token offsets and group ids: G_high, the eq. 4 penalty (added to the
  sentence reward when diversity is sentence-level: Models 3-4) and eq. 5's token penalty
  (``relate``: blacklist and G_high tokens).

:func:`score_batch` runs both for offline scoring and the CLI, so the numbers are the ones
training sees.

Components: each is one function registered by name (:func:`register_reward_component`, as
verl registers advantage estimators); both call patterns compute the wanted ones in registry
order, which is the paper's. The names are declared once in ``reward_fns.config.COMPONENTS`` (the
layer that validates ``relate.weights``) and the registry is checked against them at import, so
adding a component is one decorated function and its name there.

Sentence reward: ``sum_k w_k * c_k`` over the preset's sentence-level components with a value
(``risk_judge`` has none without a judge). Ranges: length, format, relevance, correctness,
risk_* in [0, 1]; ctcvr in (0, 1); diversity (eq. 4) in [floor, 0].
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from relate_common.ad_format import ParsedAd, parse_ad
from relate_common.metric_names import EXTRA_INFO_PREFIX
from relate_common.records import AdRecord

from reward_fns.attribution import pad_batch
from reward_fns.config import COMPONENTS as _config_components
from reward_fns.config import RewardConfig, resolve_config
from reward_fns.correctness import correctness_reward, offline_correctness
from reward_fns.credit import BatchCredit, batch_credit
from reward_fns.ctcvr import ctcvr_reward
from reward_fns.format import format_reward
from reward_fns.judge import JudgeClient, JudgeRequest, JudgeVerdict
from reward_fns.length import length_reward
from reward_fns.relevance import EncoderPool, relevance_scores
from reward_fns.risk import RiskHit, find_blacklist_hits, is_compliant, risk_blacklist_reward, risk_judge_reward
from reward_fns.types import ComponentScore, Trigger

# ---- context ------------------------------------------------------------------------------------


@dataclass
class RewardContext:
    """What scoring needs besides the texts: config, encoders, judge, tokenizer (built once)."""

    cfg: RewardConfig
    encoders: EncoderPool
    judge: JudgeClient | None = None
    tokenizer: Any | None = None  # counts tokens for length when offsets are not given

    @classmethod
    def build(
        cls,
        config: RewardConfig | str | dict | None = None,
        *,
        tokenizer: Any | None = None,
        encoders: Mapping[str, Any] | None = None,
        judge: JudgeClient | None | str = "auto",
        encoder_device: str | None = None,
    ) -> "RewardContext":
        """``encoders``: {spec: ready TextEncoder} overrides; ``judge``: a client, None, or 'auto'
        (from config / environment, only when correctness or risk asks for it); ``encoder_device``:
        where the relevance encoders run (None: CUDA when available, else CPU)."""
        cfg = resolve_config(config)
        if judge == "auto":
            judge = JudgeClient.from_config(cfg.judge) if (cfg.correctness.use_judge or cfg.risk.use_judge) else None
        return cls(cfg=cfg, encoders=EncoderPool(cfg.relevance, encoders, device=encoder_device), judge=judge, tokenizer=tokenizer)

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            raise ValueError("length in tokens needs offsets or a tokenizer in the RewardContext")
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


# ---- components: a registry ---------------------------------------------------------------------


@dataclass
class ComponentInputs:
    """What the components read for N responses; the judge and blacklist work shared by several
    components runs once, on first read.

    records / responses / parsed: (N,); wanted: the component names asked for; offsets: None or
    (N,) of (L_i, 2) token spans (length in tokens re-tokenises without them); predicted_ctcvr /
    reference_ctcvr: None or (N,); given_verdicts: None or (N,) judge verdicts from the caller;
    credit: the batch's :class:`BatchCredit`, only for batch-level components (:func:`score_batch`).
    """

    records: list[AdRecord]
    responses: Sequence[str]
    parsed: list[ParsedAd]
    ctx: RewardContext
    wanted: set[str]
    offsets: Sequence[np.ndarray | None] | None = None
    predicted_ctcvr: Sequence[float] | np.ndarray | None = None
    reference_ctcvr: Sequence[float | None] | np.ndarray | None = None
    given_verdicts: Sequence[JudgeVerdict | None] | None = None
    credit: BatchCredit | None = None

    @property
    def cfg(self) -> RewardConfig:
        return self.ctx.cfg

    @cached_property
    def verdicts(self) -> list[JudgeVerdict | None]:
        """(N,): the caller's verdicts, else ``ctx.judge``'s when a wanted component uses the judge."""
        cfg, n = self.cfg, len(self.records)
        if self.given_verdicts is not None:
            verdicts = list(self.given_verdicts)
            if len(verdicts) != n:
                raise ValueError(f"{len(verdicts)} verdicts for {n} responses")
            return verdicts
        needs_judge = ("correctness" in self.wanted and cfg.correctness.use_judge) or (
            "risk_judge" in self.wanted and cfg.risk.use_judge
        )
        if needs_judge and self.ctx.judge is not None:
            reqs = [JudgeRequest.from_record(r, p) for r, p in zip(self.records, self.parsed)]
            return list(self.ctx.judge.judge_many(reqs))
        return [None] * n

    @cached_property
    def risk_hits(self) -> list[list[RiskHit]]:
        """(N,) blacklist hits: the risk_blacklist component and every response's compliance."""
        return [find_blacklist_hits(r, self.cfg.risk) for r in self.responses]


# (N,) scores from the inputs of N responses; None where a response has no value.
RewardComponentFn = Callable[[ComponentInputs], list[ComponentScore | None]]

# As verl's ADV_ESTIMATOR_REGISTRY / register_adv_est / get_adv_estimator_fn
# (verl 0.9.1, verl/trainer/ppo/core_algos.py:113-150). Registration order is computation order, and so the
# order of every score's ``components`` and of ``COMPONENTS``: the components below are registered in the
# paper's order.
REWARD_COMPONENT_REGISTRY: dict[str, RewardComponentFn] = {}
BATCH_LEVEL_COMPONENTS: set[str] = set()  # read ``ComponentInputs.credit``: only score_batch has it


def register_reward_component(
    name: str, *, batch_level: bool = False
) -> Callable[[RewardComponentFn], RewardComponentFn]:
    """Decorator to register a reward component function under ``name`` (a ``relate.weights`` key).

    batch_level: the function needs the whole batch (``ComponentInputs.credit``), so
    :func:`score_samples` skips it and :func:`score_batch` computes it. Another function under a
    registered name raises ValueError; the same one again is a no-op (a module reload).
    """

    def decorator(fn: RewardComponentFn) -> RewardComponentFn:
        if name in REWARD_COMPONENT_REGISTRY and REWARD_COMPONENT_REGISTRY[name] != fn:  # core_algos.py:127-130
            raise ValueError(
                f"reward component {name!r} has already been registered: {REWARD_COMPONENT_REGISTRY[name]} vs {fn}"
            )
        REWARD_COMPONENT_REGISTRY[name] = fn
        if batch_level:
            BATCH_LEVEL_COMPONENTS.add(name)
        return fn

    return decorator


def get_reward_component(name: str) -> RewardComponentFn:
    """The component function registered under ``name``; ValueError listing the known names."""
    if name not in REWARD_COMPONENT_REGISTRY:
        raise ValueError(f"unknown reward component {name!r} (known: {', '.join(REWARD_COMPONENT_REGISTRY)})")
    return REWARD_COMPONENT_REGISTRY[name]


def _compute_components(x: ComponentInputs, batch_level: bool) -> list[dict[str, ComponentScore]]:
    """(N,) {name: score}: the wanted registered components of one level, in registry order."""
    comps: list[dict[str, ComponentScore]] = [{} for _ in x.responses]
    for name, fn in REWARD_COMPONENT_REGISTRY.items():
        if name in x.wanted and (name in BATCH_LEVEL_COMPONENTS) == batch_level:
            for i, score in enumerate(fn(x)):
                if score is not None:
                    comps[i][name] = score
    return comps


@register_reward_component("length")
def _score_length(x: ComponentInputs) -> list[ComponentScore | None]:
    """Sec. 3.3.1, [0, 1]."""
    return [
        length_reward(p, r.language, x.cfg.length, x.offsets[i] if x.offsets is not None else None, x.ctx.count_tokens)
        for i, (r, p) in enumerate(zip(x.records, x.parsed))
    ]


@register_reward_component("format")
def _score_format(x: ComponentInputs) -> list[ComponentScore | None]:
    """Sec. 3.3.1, [0, 1]."""
    return [format_reward(t, p, r.selling_points, x.cfg.format) for t, p, r in zip(x.responses, x.parsed, x.records)]


@register_reward_component("ctcvr")
def _score_ctcvr(x: ComponentInputs) -> list[ComponentScore | None]:
    """Sec. 3.3.3, (0, 1); skipped, not invented, without a prediction unless the preset weights it."""
    n = len(x.records)
    if x.predicted_ctcvr is None:
        if "ctcvr" in x.cfg.weights:
            raise ValueError(f"preset '{x.cfg.preset}' weights ctcvr: pass predicted_ctcvr (and reference_ctcvr)")
        return [None] * n
    refs = list(x.reference_ctcvr) if x.reference_ctcvr is not None else [None] * n
    return [ctcvr_reward(float(x.predicted_ctcvr[i]), refs[i], x.cfg.ctcvr) for i in range(n)]


@register_reward_component("diversity", batch_level=True)
def _score_diversity(x: ComponentInputs) -> list[ComponentScore | None]:
    """Eq. 4, [floor, 0], from the batch's G_high (``x.credit``); its occurrences are the triggers."""
    c = x.credit
    out: list[ComponentScore | None] = []
    for b, text in enumerate(x.responses):
        trig = [Trigger("high_freq_ngram", text[a:e][:40], (a, e)) for a, e in c.diversity_spans[b]]
        detail = {"count": int(c.stats.count[b]), "score": round(float(c.stats.diversity_score[b]), 6)}
        out.append(ComponentScore("diversity", float(c.diversity_penalty[b]), trig, detail))
    return out


@register_reward_component("relevance")
def _score_relevance(x: ComponentInputs) -> list[ComponentScore | None]:
    """Sec. 3.3.1, [0, 1]; one encoder pass over the batch."""
    return list(relevance_scores(x.records, x.parsed, x.ctx.encoders, x.cfg.relevance))


@register_reward_component("correctness")
def _score_correctness(x: ComponentInputs) -> list[ComponentScore | None]:
    """Sec. 3.3.1, [0, 1]: the offline claim check, blended with the judge's score when it is used."""
    cfg = x.cfg.correctness
    out: list[ComponentScore | None] = []
    for resp, p, r, v in zip(x.responses, x.parsed, x.records, x.verdicts):
        corr = offline_correctness(resp, p, r, cfg)
        if v is not None and cfg.use_judge:
            jt = [Trigger("judge_failed", v.error or "")] if v.failed else [Trigger("judge_issue", s[:200]) for s in v.issues]
            corr = correctness_reward(corr, v.score, cfg, jt)
        out.append(corr)
    return out


@register_reward_component("risk_blacklist")
def _score_risk_blacklist(x: ComponentInputs) -> list[ComponentScore | None]:
    """Sec. 3.3.1, [0, 1]: eq. 5's V^black hits."""
    return [risk_blacklist_reward(h, x.cfg.risk) for h in x.risk_hits]


@register_reward_component("risk_judge")
def _score_risk_judge(x: ComponentInputs) -> list[ComponentScore | None]:
    """Sec. 3.3.1, [0, 1]; None without a verdict or with the judge off."""
    use, neutral = x.cfg.risk.use_judge, x.cfg.judge.neutral_score
    return [
        risk_judge_reward(v.compliant, v.issues, v.failed, neutral) if v is not None and use else None for v in x.verdicts
    ]


# The component names in the paper's order (sec. 3.3), declared in ``reward_fns.config`` (which validates
# ``relate.weights`` and must not import this module: this module imports it). The registrations above
# are exactly those names in that order, checked here once at import, so the two cannot drift apart.
if tuple(REWARD_COMPONENT_REGISTRY) != _config_components:
    raise RuntimeError(f"reward_fns.compose registers {tuple(REWARD_COMPONENT_REGISTRY)}, but reward_fns.config "
                       f"declares COMPONENTS = {_config_components}: register and declare the same names, in order")
COMPONENTS: tuple[str, ...] = _config_components


# ---- per sample ---------------------------------------------------------------------------------


@dataclass
class SampleScore:
    """Sentence-level scoring of one response."""

    response: str
    parsed: ParsedAd
    components: dict[str, ComponentScore]
    sentence_reward: float  # sum of weighted sentence-level components (no batch diversity)
    risk_hits: list[RiskHit] = field(default_factory=list)
    compliant: bool = True
    judge: JudgeVerdict | None = None

    def values(self) -> dict[str, float | None]:
        """{component: value or None}, every component name present."""
        return {c: (self.components[c].value if c in self.components else None) for c in COMPONENTS}

    def extra_info(self) -> dict[str, float]:
        """Float scalars only (NaN = not computed), as verl stacks reward_extra_info with np.array."""
        out = {f"{EXTRA_INFO_PREFIX}{c}": (float("nan") if v is None else float(v)) for c, v in self.values().items()}
        out["compliant"] = float(self.compliant)
        out["judge_failed"] = float(self.judge is not None and self.judge.failed)
        return out


def _wanted(cfg: RewardConfig, compute: str | Sequence[str]) -> set[str]:
    if compute == "active":
        return set(cfg.active_components())
    if compute == "all":
        return set(COMPONENTS)
    return set(compute)


def sentence_reward(values: Mapping[str, float | None], cfg: RewardConfig) -> float:
    """Eq. 2's f: weighted sum over the preset's sentence-level components that have a value."""
    total = 0.0
    for c in cfg.sentence_components():
        v = values.get(c)
        if v is not None:
            total += cfg.weights[c] * float(v)
    return float(total)


def _as_record(r: AdRecord | Mapping[str, Any]) -> AdRecord:
    if isinstance(r, AdRecord):
        return r
    from relate_common.records import parse_record

    return parse_record(dict(r))


def score_samples(
    records: Sequence[AdRecord | Mapping[str, Any]],
    responses: Sequence[str],
    ctx: RewardContext,
    *,
    offsets: Sequence[np.ndarray | None] | None = None,
    predicted_ctcvr: Sequence[float] | np.ndarray | None = None,
    reference_ctcvr: Sequence[float | None] | np.ndarray | None = None,
    compute: str | Sequence[str] = "active",
    verdicts: Sequence[JudgeVerdict | None] | None = None,
) -> list[SampleScore]:
    """Sentence-level components and reward of each response (diversity excluded: batch-level).

    records / responses: N each; offsets: per response (L_i, 2) token spans or None (length in
    tokens then re-tokenises via ``ctx.tokenizer``); predicted_ctcvr / reference_ctcvr: (N,),
    required when the preset weights ctcvr (the reward manager gets them from ctcvr_model's
    scorer); compute: 'active' (the preset's components), 'all' (metrics), or a list of names;
    verdicts: judge verdicts obtained by the caller (an async reward manager awaits
    ``JudgeClient.ajudge``), else ``ctx.judge`` is asked when the config uses it.
    CTCVR is skipped, not invented, when no prediction is given and the preset does not need it.
    """
    cfg = ctx.cfg
    recs = [_as_record(r) for r in records]
    if len(recs) != len(responses):
        raise ValueError(f"{len(recs)} records but {len(responses)} responses")
    x = ComponentInputs(
        recs, responses, [parse_ad(r) for r in responses], ctx, _wanted(cfg, compute), offsets,
        predicted_ctcvr, reference_ctcvr, verdicts,
    )
    comps = _compute_components(x, batch_level=False)
    verdicts, hits_all = x.verdicts, x.risk_hits  # (read even when no component did)
    out = []
    for i in range(len(recs)):
        values = {c: s.value for c, s in comps[i].items()}
        v = verdicts[i]
        judge_compliant = v.compliant if (v is not None and cfg.risk.use_judge and not v.failed) else None
        out.append(
            SampleScore(
                response=responses[i],
                parsed=x.parsed[i],
                components=comps[i],
                sentence_reward=sentence_reward(values, cfg),
                risk_hits=hits_all[i],
                # An empty ad has nothing to screen and cannot be shown: never compliant (ours; eq. 11
                # counts texts that pass screening, an empty output would inflate a weak model's rate).
                compliant=is_compliant(hits_all[i], judge_compliant) and not x.parsed[i].is_empty,
                judge=v,
            )
        )
    return out


# ---- both: score_batch --------------------------------------------------------------------------


@dataclass
class ScoredResponse:
    """Everything about one response: reward, components, triggers, token penalty, spans."""

    sentence_reward: float
    components: dict[str, ComponentScore]
    compliant: bool
    diversity_score: float  # eq. 12's normalised r_div in [0, 1]
    token_penalty: np.ndarray | None  # (L_i,) float32 for presets with token-level components
    penalised_spans: list[dict[str, Any]]  # {"span": [a, b], "source": "blacklist"|"diversity", ...}
    parsed: ParsedAd

    def values(self) -> dict[str, float | None]:
        return {c: (self.components[c].value if c in self.components else None) for c in COMPONENTS}

    def to_dict(self, with_triggers: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"sentence_reward": self.sentence_reward, "components": self.values()}
        out["diversity_score"] = self.diversity_score
        out["compliant"] = self.compliant
        if with_triggers:
            out["triggers"] = {c: [t.to_dict() for t in s.triggers] for c, s in self.components.items() if s.triggers}
        out["penalised_spans"] = self.penalised_spans
        if self.token_penalty is not None:
            out["token_penalty"] = [round(float(x), 6) for x in self.token_penalty]
        return out


@dataclass
class BatchScores:
    responses: list[ScoredResponse]
    credit: BatchCredit
    samples: list[SampleScore]


def score_batch(
    records: Sequence[AdRecord | Mapping[str, Any]],
    responses: Sequence[str],
    token_ids: Sequence[Sequence[int]] | np.ndarray,
    offsets: Sequence[Sequence[Sequence[int]]] | np.ndarray,
    config: RewardConfig | str | dict | None = None,
    group_ids: Sequence[Hashable] | None = None,
    predicted_ctcvr: Sequence[float] | np.ndarray | None = None,
    reference_ctcvr: Sequence[float | None] | np.ndarray | None = None,
    *,
    ctx: RewardContext | None = None,
    response_mask: np.ndarray | None = None,
    compute: str | Sequence[str] = "active",
) -> BatchScores:
    """Score a batch exactly as training does: per-sample components + batch credit.

    Shapes: N records / responses; token_ids (N, L) padded (with response_mask) or ragged;
    offsets (N, L, 2) or ragged (L_i, 2); group_ids (N,), default each record's id (so the G
    responses of one record form one group). Returns per response the sentence reward (with the
    sentence-level diversity term for Models 3-4), every component, the compliance flag, the
    normalised diversity score and, for presets with token-level components, r_token (eq. 5).
    """
    ctx = ctx or RewardContext.build(config)
    cfg = ctx.cfg
    recs = [_as_record(r) for r in records]
    groups = list(group_ids) if group_ids is not None else [r.id for r in recs]
    ids, off, mask = pad_batch(token_ids, offsets, response_mask)
    row_offsets = [off[b][mask[b]] for b in range(len(recs))]  # (L_i, 2) tokens inside each response
    samples = score_samples(
        recs, responses, ctx, offsets=row_offsets,
        predicted_ctcvr=predicted_ctcvr, reference_ctcvr=reference_ctcvr, compute=compute,
    )
    credit = batch_credit(responses, ids, off, groups, recs, cfg, response_mask=mask, parsed=[s.parsed for s in samples])
    x = ComponentInputs(recs, responses, [s.parsed for s in samples], ctx, _wanted(cfg, compute), credit=credit)
    batch_comps = _compute_components(x, batch_level=True)
    has_token_level = bool(cfg.token_level) and any(c in cfg.weights for c in cfg.token_level)
    out = []
    for b, s in enumerate(samples):
        comps = {**s.components, **batch_comps[b]}
        spans = [{"span": [a, e], "source": "blacklist", "category": h.category, "text": h.text}
                 for h in s.risk_hits for a, e in [h.span]]
        spans += [{"span": [a, e], "source": "diversity", "text": responses[b][a:e]} for a, e in credit.diversity_spans[b]]
        spans.sort(key=lambda d: (d["span"][0], d["source"]))
        r_tok = credit.token_penalty[b][mask[b]] if has_token_level else None
        out.append(
            ScoredResponse(
                sentence_reward=float(s.sentence_reward + credit.sentence_diversity[b]),
                components=comps,
                compliant=s.compliant,
                diversity_score=float(credit.stats.diversity_score[b]),
                token_penalty=r_tok,
                penalised_spans=spans,
                parsed=s.parsed,
            )
        )
    return BatchScores(responses=out, credit=credit, samples=samples)
