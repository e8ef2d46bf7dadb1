"""One config object for every reward knob, the five Table-2 presets, YAML / dict round trips.

The verl recipe stores this under a Hydra ``relate:`` section; ``RewardConfig.from_dict`` takes
that section (after ``OmegaConf.to_container``), ``to_dict`` gives it back. A dict may name a
``preset`` and override any field on top of it::

    relate:
      preset: relate
      diversity: {delta_d: 0.1}

The paper (RELATE, Baidu 2026) fixes only the reward SET of each configuration (Table 2), the
n-gram range n = 2..10 (sec. 3.3.2), the form of eq. 4-9 and G = 5 / 1440 responses per batch.
Every number below that is not one of those is ours; each says so (``# ours:``) and why.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relate_common.ad_format import LENGTH_LIMITS

# Components that can be moved to token level (eq. 5): blacklist spans and G_high occurrences are
# attributable to the tokens that produced them; nothing else is (sec. 3.4.1).
TOKEN_LEVEL_CAPABLE = ("diversity", "risk_blacklist")
FIELDS = ("title", "description")


# The reward component names, in the order the paper introduces them (sec. 3.3): declared once here,
# at the bottom layer that validates ``relate.weights``; reward_fns.compose registers exactly these, in
# this order, or fails at import (so its registry and this list cannot disagree, and this module needs
# no import of compose: compose imports it).
COMPONENTS: tuple[str, ...] = ("length", "format", "ctcvr", "diversity", "relevance", "correctness",
                               "risk_blacklist", "risk_judge")


class ConfigError(ValueError):
    """A config value or key that cannot be used; the message names the dotted key."""


def _char_limits() -> dict[str, dict[str, list[int]]]:
    return {lang: {f: list(v) for f, v in fields.items()} for lang, fields in LENGTH_LIMITS.items()}


@dataclass
class LengthConfig:
    """Length reward (length.py). Score 1 inside [lo, hi], linear decay to 0 outside."""

    # Unit per language. zh: characters, because byte-level BPE splits one Chinese character into
    # 1-3 tokens depending on the tokenizer, so a token interval would mean different things for
    # SmolLM2 and Qwen3. en: tokens, the paper's "target token-length interval" (sec. 3.3.1).
    unit: dict[str, str] = field(default_factory=lambda: {"zh": "chars", "en": "tokens"})
    # Character intervals: relate_common.ad_format.LENGTH_LIMITS, the limits the prompt states.
    char_intervals: dict[str, dict[str, list[int]]] = field(default_factory=_char_limits)
    # Token intervals. ours: LENGTH_LIMITS['en'] divided by 3.5-4 characters per English token
    # (measured on the bundled references with SmolLM2: 3.8 title, 4.0 description), rounded
    # outward so that a text inside the character limits is inside the token interval.
    # No zh default on purpose (see ``unit``); set one to use tokens for Chinese.
    token_intervals: dict[str, dict[str, list[int]]] = field(
        default_factory=lambda: {"en": {"title": [5, 18], "description": [15, 52]}}
    )
    # ours: relative distance outside the interval at which the score reaches 0. 0.5 keeps a
    # gradient for a text twice as long as allowed (hi * 1.5 -> 0), instead of a cliff.
    decay: float = 0.5
    # ours: the description carries more of the message but the title is what is seen first.
    field_weights: dict[str, float] = field(default_factory=lambda: {"title": 0.5, "description": 0.5})


@dataclass
class FormatConfig:
    """Format reward (format.py). 1 for a clean parse, minus a penalty per broken rule, >= 0."""

    # ours: penalties per rule. A missing field makes the ad unusable (score 0, not a penalty).
    # Serving rejects extra text, markdown, contact details and emoji outright, so each costs a
    # lot; cosmetic problems (punctuation, order) cost less.
    penalties: dict[str, float] = field(
        default_factory=lambda: {
            "extra_text": 0.3,
            "repeated_field": 0.3,
            "empty_field": 0.5,
            "wrong_order": 0.2,
            "markdown": 0.3,
            "url": 0.3,
            "phone": 0.3,
            "emoji": 0.2,
            "control_char": 0.2,
            "excessive_punctuation": 0.2,
        }
    )
    # ours: a run of this many identical punctuation marks is "excessive" ("!!!", "。。。");
    # '!' and '?' (either width) already at 2, and more than ``max_exclamations`` '!' in total.
    max_punct_run: int = 3
    max_exclamations: int = 2


@dataclass
class RelevanceConfig:
    """Relevance reward (relevance.py): encoder similarity + lexical bidword coverage, in [0, 1]."""

    # Encoder spec per language, for ctcvr_model.encoders.load_encoder. Offline default for both
    # (a PyPI wheel, no model hub): the multilingual USE, because MiniLM maps Chinese to [UNK]; one encoder
    # for both languages also keeps one similarity scale across a mixed batch. The encoder runs where the
    # reward runs: in RL that is verl's reward-loop workers, on the CPU (relate.scorer_device: cpu; they
    # reserve no GPU), also on a GPU node. There the paper's "Qwen/Qwen3-Embedding-0.6B" would cost ~1.2
    # GFLOP per token, ~1.2e14 FLOP for a step's 1,440 responses of ~70 tokens: minutes of CPU per step,
    # longer than the generation it must keep pace with (README "Reward workers"). Keep USE for training;
    # the 0.6B encoder fits offline scoring on a GPU (reward_fns.score, relate_eval.evaluate), with
    # cos_floor / cos_ceil recalibrated for it.
    encoder: dict[str, str] = field(default_factory=lambda: {"zh": "use-multilingual", "en": "use-multilingual"})
    # ours: weights of the three context fields in the semantic part.
    field_weights: dict[str, float] = field(
        default_factory=lambda: {"query": 0.4, "bidword": 0.3, "selling_points": 0.3}
    )
    # ours: cosine -> [0, 1] by clip((cos - floor) / (ceil - floor)). Measured with USE on the
    # bundled records: reference ad vs its own query/bidword/selling points has median cosine
    # 0.44 / 0.36 / 0.70, vs another record's 0.04 / 0.01 / 0.14; floor 0.1 maps unrelated text to
    # ~0, ceil 0.6 lets a good ad reach 1 on at least the selling points.
    cos_floor: float = 0.1
    cos_ceil: float = 0.6
    # ours: the lexical part keeps the bidword in the text (what the advertiser pays for), which
    # an encoder alone rewards only loosely.
    semantic_weight: float = 0.7
    lexical_weight: float = 0.3
    # Folder for an on-disk embedding cache (sqlite, ctcvr_model.encoders.CachedEncoder); None: memory only.
    # ours: a record's query, bidword and selling points are encoded for each of its G = 5 responses and
    # again every epoch; cached, once. One file per node (sqlite's WAL needs a local file system, not NFS):
    # the GPU scripts set an absolute node-local folder (RELEVANCE_CACHE_DIR).
    cache_dir: str | None = None


@dataclass
class JudgeConfig:
    """LLM judge (judge.py) through an OpenAI-compatible chat-completions endpoint."""

    # Explicit endpoint values win; otherwise they are read from these environment variables
    # (never store a key in a config file). No base URL -> no judge.
    base_url: str | None = None
    model: str | None = None
    base_url_env: str = "RELATE_JUDGE_BASE_URL"
    model_env: str = "RELATE_JUDGE_MODEL"
    api_key_env: str = "RELATE_JUDGE_API_KEY"
    prompt_version: str = "v1"
    # ours: generous per-request timeout for an 8B-class judge; retries cover transient failures.
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_s: float = 1.0  # first retry waits ~1 s, then 2, 4 ... (with jitter)
    backoff_max_s: float = 16.0
    concurrency: int = 16  # ours: in-flight requests per process; reward workers run in parallel
    temperature: float = 0.0  # a deterministic verdict is what makes caching sound
    max_tokens: int = 256
    # Where verdicts are cached (sqlite); None -> relate_common.assets.cache_root() / "judge".
    cache_dir: str | None = None
    # ours: the failure policy. A failed call scores this (the middle of [0, 1], neither reward
    # nor punish) and is counted; training never sees an exception from the judge.
    neutral_score: float = 0.5


@dataclass
class CorrectnessConfig:
    """Correctness reward (correctness.py): offline claim grounding, optionally + LLM judge."""

    # ours: each ungrounded claim costs 0.5, so two invented facts zero the component.
    penalty_per_claim: float = 0.5
    # Where a claim may be grounded. The spec names selling points and landing page; we add the
    # query and bidword because echoing a number the user typed ("lose 20 pounds") is not the
    # advertiser inventing one.
    sources: list[str] = field(default_factory=lambda: ["selling_points", "landing_page", "query", "bidword"])
    use_judge: bool = False  # needs an endpoint (JudgeConfig); off by default because offline
    judge_weight: float = 0.5  # ours: judge and checker count equally when both run


@dataclass
class RiskConfig:
    """Risk-control reward (risk.py): blacklist lexicon hits (+ optional judge compliance)."""

    # Lexicon files; relative paths are resolved against reward_fns/lexicons/.
    lexicons: list[str] = field(default_factory=lambda: ["risk_zh.yaml", "risk_en.yaml"])
    # Categories to enforce (None: every category in the files).
    categories: list[str] | None = None
    # ours: one blacklisted term halves the component, two zero it; a single absolute term
    # already gets a real ad rejected.
    penalty_per_hit: float = 0.5
    # Reuse the correctness judge's "compliant" verdict as the risk_judge component (same call,
    # same cache: no extra request).
    use_judge: bool = False


@dataclass
class DiversityConfig:
    """Batch n-gram diversity (ngram_stats.py, text_filters.py): G_high, eq. 4 penalty, eq. 5 indicators."""

    n_min: int = 2  # paper, sec. 3.3.2: n in [2, 10]
    n_max: int = 10
    # ours: an n-gram is high-frequency when at least this fraction of the batch's GROUPS (distinct
    # prompts) use it, and at least ``min_groups``. 5% of 288 prompts = 15 prompts writing the same
    # phrase is a template; counting groups, not responses, keeps one GRPO group agreeing with
    # itself (G = 5 samples of one prompt) from looking like one.
    min_group_fraction: float = 0.05
    min_groups: int = 3
    # ours: an n-gram must contain at least this many letters/digits/CJK characters to count.
    # Shorter ones are word fragments, function-word pairs (" of a", "的服") or, with byte-level
    # BPE, pieces of a single Chinese character; every fluent text shares them.
    min_ngram_chars: int = 4
    # An n-gram must also contain a letter/digit outside the function words of this file
    # (lexicons/stopwords.yaml): " with a" or "的是" is grammar, not a template. None: off.
    stopwords: str | None = "stopwords.yaml"
    # Drop n-gram occurrences whose text is copied from the prompt's own query, bidword or
    # selling points: that is relevance, not templating.
    exclude_prompt_copies: bool = True
    # ours: eq. 4's Delta_d per G_high occurrence. A 5-token template contains 10 n-grams of
    # n = 2..5, so it costs 0.5; ``floor`` bounds the sentence-level penalty to [-1, 0].
    delta_d: float = 0.05
    floor: float = -1.0


@dataclass
class CTCVRConfig:
    """CTCVR reward (ctcvr.py): predicted CTCVR relative to the record's reference ad."""

    # ours: reward = 0.5 + 0.5 * tanh(log(pred / ref) / scale), in (0, 1), 0.5 at parity. With
    # scale 0.5 the paper's order of effect (+9% CTCVR) moves the reward by 0.04 and a 2x lift
    # to 0.94: sensitive near parity, bounded for a scorer's outliers (reward hacking).
    scale: float = 0.5
    eps: float = 1e-6  # probabilities are clipped to [eps, 1] before the log
    # Used when a record has no reference-ad prediction; None -> such a call raises.
    fallback_reference: float | None = None


@dataclass
class CreditConfig:
    """Token-level credit assignment (eq. 5, 7)."""

    # ours: alpha of eq. 7. The sentence advantage is a z-score (std 1), so alpha * lambda is the
    # token penalty in units of one standard deviation of the group's sentence reward.
    alpha: float = 1.0
    # ours: lambda1 (blacklist) > lambda2 (template): a banned term gets an ad rejected, a common
    # phrase only makes it dull.
    lambda1: float = 0.5
    lambda2: float = 0.2


@dataclass
class RewardConfig:
    """Every reward knob in one place. Build with :func:`preset` or :meth:`from_dict`."""

    preset: str = "relate"
    # Sentence-level weights (eq. 2's f is a weighted sum). A component absent from ``weights``
    # is off. GRPO z-scores the sum inside each group, so only ratios between weights matter.
    weights: dict[str, float] = field(default_factory=dict)
    # Components routed to the token penalty (eq. 5) instead of the sentence reward.
    token_level: list[str] = field(default_factory=list)
    length: LengthConfig = field(default_factory=LengthConfig)
    format: FormatConfig = field(default_factory=FormatConfig)
    relevance: RelevanceConfig = field(default_factory=RelevanceConfig)
    correctness: CorrectnessConfig = field(default_factory=CorrectnessConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    ctcvr: CTCVRConfig = field(default_factory=CTCVRConfig)
    credit: CreditConfig = field(default_factory=CreditConfig)

    # ---- queries --------------------------------------------------------------------------
    def sentence_components(self) -> list[str]:
        """Components summed into the sentence reward (weighted, not routed to token level)."""
        return [c for c in COMPONENTS if c in self.weights and c not in self.token_level]

    def active_components(self) -> list[str]:
        """Components this preset needs computed (sentence- or token-level)."""
        return [c for c in COMPONENTS if c in self.weights]

    def is_token_level(self, component: str) -> bool:
        return component in self.token_level

    # ---- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, no tuples) that :meth:`from_dict` reads back to an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RewardConfig":
        """Config from a dict: ``preset`` (default 'relate') first, then every other key on top.

        Unknown keys raise :class:`ConfigError` naming the dotted path (a typo must not silently
        leave a default in place during a week-long run).
        """
        data = dict(data or {})
        name = data.get("preset", "relate")
        base = preset(name)
        # ``weights`` and ``token_level`` replace the preset's wholesale: a user who writes them
        # means that exact set. Every other section merges field by field.
        merged = _merge(base, {k: v for k, v in data.items() if k != "preset"}, "relate")
        merged.preset = name
        merged.validate()
        return merged

    def to_yaml(self, path: str | Path | None = None) -> str:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RewardConfig":
        """Read a YAML file; a top-level ``relate:`` section (the Hydra layout) is unwrapped."""
        return cls.from_yaml_text(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def from_yaml_text(cls, text: str) -> "RewardConfig":
        import yaml

        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"reward config must be a mapping, got {type(data).__name__}")
        if set(data) == {"relate"}:
            data = data["relate"] or {}
        return cls.from_dict(data)

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` on any value that would make a reward meaningless."""
        known = COMPONENTS
        for name, w in self.weights.items():
            if name not in known:
                raise ConfigError(f"relate.weights.{name}: unknown component (known: {', '.join(known)})")
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"relate.weights.{name}: must be a finite number >= 0, got {w!r}")
        for name in self.token_level:
            if name not in TOKEN_LEVEL_CAPABLE:
                raise ConfigError(f"relate.token_level: '{name}' cannot be token-level (only {TOKEN_LEVEL_CAPABLE})")
        L = self.length
        for lang, unit in L.unit.items():
            if unit not in ("chars", "tokens"):
                raise ConfigError(f"relate.length.unit.{lang}: 'chars' or 'tokens', got {unit!r}")
            table = L.char_intervals if unit == "chars" else L.token_intervals
            for fld in FIELDS:
                iv = (table.get(lang) or {}).get(fld)
                key = f"relate.length.{'char' if unit == 'chars' else 'token'}_intervals.{lang}.{fld}"
                if iv is None:
                    raise ConfigError(f"{key}: missing (language {lang} measures length in {unit})")
                if len(iv) != 2 or not (0 <= iv[0] <= iv[1]):
                    raise ConfigError(f"{key}: must be [lo, hi] with 0 <= lo <= hi, got {iv!r}")
        if L.decay <= 0:
            raise ConfigError("relate.length.decay: must be > 0")
        R = self.relevance
        if not R.cos_ceil > R.cos_floor:
            raise ConfigError("relate.relevance: cos_ceil must be > cos_floor")
        D = self.diversity
        if not (1 <= D.n_min <= D.n_max <= 32):
            raise ConfigError(f"relate.diversity: need 1 <= n_min <= n_max <= 32, got {D.n_min}..{D.n_max}")
        if not (0 <= D.min_group_fraction <= 1) or D.min_groups < 1:
            raise ConfigError("relate.diversity: min_group_fraction in [0, 1] and min_groups >= 1")
        if D.delta_d < 0 or D.floor > 0:
            raise ConfigError("relate.diversity: delta_d >= 0 and floor <= 0")
        if self.ctcvr.scale <= 0:
            raise ConfigError("relate.ctcvr.scale: must be > 0")
        J = self.judge
        if J.timeout_s <= 0 or J.max_retries < 0 or J.concurrency < 1:
            raise ConfigError("relate.judge: timeout_s > 0, max_retries >= 0, concurrency >= 1")
        if not (0 <= J.neutral_score <= 1):
            raise ConfigError("relate.judge.neutral_score: must be in [0, 1]")
        C = self.credit
        if C.alpha < 0 or C.lambda1 < 0 or C.lambda2 < 0:
            raise ConfigError("relate.credit: alpha, lambda1, lambda2 must be >= 0")


def _merge(obj: Any, data: dict[str, Any], path: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``data`` applied field by field (recursively)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    out = copy.deepcopy(obj)
    known = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{path}.{key}: unknown key (known: {', '.join(known)})")
        current = getattr(out, key)
        if dataclasses.is_dataclass(current):
            setattr(out, key, _merge(current, value, f"{path}.{key}"))
        else:
            setattr(out, key, _plain(value))
    return out


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so a config round-trips through YAML unchanged."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---- presets (Table 2) ---------------------------------------------------------------------------
# ours: every weight is 1 except CTCVR at 2, the paper's "primary optimisation target" (sec. 3.3.3):
# it must outweigh any single quality component but not all of them together.
_W_STRUCTURAL = {"length": 1.0, "format": 1.0}
_W_CTCVR = {"ctcvr": 2.0}
_W_DIVERSITY = {"diversity": 1.0}
# risk_judge counts only when a judge endpoint is configured and risk.use_judge is on.
_W_SEMANTIC = {"relevance": 1.0, "correctness": 1.0, "risk_blacklist": 1.0, "risk_judge": 1.0}

PRESETS: dict[str, dict[str, Any]] = {
    # Table 2, Model 1: structural quality only, sentence-level.
    "model1": {"weights": {**_W_STRUCTURAL}, "token_level": []},
    # Model 2: + CTCVR.
    "model2": {"weights": {**_W_STRUCTURAL, **_W_CTCVR}, "token_level": []},
    # Model 3: + diversity (sentence-level eq. 4 penalty).
    "model3": {"weights": {**_W_STRUCTURAL, **_W_CTCVR, **_W_DIVERSITY}, "token_level": []},
    # Model 4: + semantic quality (relevance, correctness, risk), all sentence-level.
    "model4": {"weights": {**_W_STRUCTURAL, **_W_CTCVR, **_W_DIVERSITY, **_W_SEMANTIC}, "token_level": []},
    # RELATE: Model 4's reward set; diversity and blacklist risk moved to token level (eq. 5).
    "relate": {
        "weights": {**_W_STRUCTURAL, **_W_CTCVR, **_W_DIVERSITY, **_W_SEMANTIC},
        "token_level": ["diversity", "risk_blacklist"],
    },
}


def preset(name: str) -> RewardConfig:
    """A fresh config for a Table-2 preset: 'model1'..'model4' or 'relate'."""
    if name not in PRESETS:
        raise ConfigError(f"relate.preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    p = PRESETS[name]
    cfg = RewardConfig(preset=name, weights=dict(p["weights"]), token_level=list(p["token_level"]))
    cfg.validate()
    return cfg


def resolve_config(config: "RewardConfig | str | dict[str, Any] | None") -> RewardConfig:
    """Accept a config object, a preset name, a dict or None (-> 'relate')."""
    if config is None:
        return preset("relate")
    if isinstance(config, RewardConfig):
        return config
    if isinstance(config, str):
        return preset(config)
    if isinstance(config, dict):
        return RewardConfig.from_dict(config)
    raise ConfigError(f"cannot build a reward config from {type(config).__name__}")


def load_cli_config(path: str | Path | None, preset_name: str | None) -> RewardConfig:
    """The config of a CLI's ``--config FILE --preset NAME`` (``reward_fns.score``, ``relate_eval.evaluate``).

    The file (a ``relate:`` section or its content) is read first; ``--preset`` then picks the preset,
    whose Table-2 weights the file's own entries override. Neither: the 'relate' preset.
    """
    import yaml

    data: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping")
        data = dict((loaded["relate"] if set(loaded) == {"relate"} else loaded) or {})
    if preset_name:
        data["preset"] = preset_name
    return RewardConfig.from_dict(data)
