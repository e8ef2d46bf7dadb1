"""From (query, ad) rows to model inputs: slot texts, deduplicated embeddings, feature vectors.

A row becomes three *slot* texts (configurable, see :data:`SLOT_BUILDERS`):

* ``query`` the user's search query;
* ``meta``  the ad metadata the advertiser supplies: bidword and selling points;
* ``ad``    the generated ad text: title and description.

Each slot is embedded by the frozen encoder. There are few distinct texts and many impressions, so
every distinct text is encoded once and rows hold indices into one embedding table
(:class:`EncodedRows`); the (B, F) feature matrix is built per mini-batch in torch by
:func:`combine_features`, so a 200k-row table never materialises a 200k x 2.5k float matrix.

Feature vector (its formula is written to each model's config.json), for unit slot embeddings e_s::

    [e_s for s in raw_slots]                 # what the texts are about ("full" preset)
    [e_a * e_b for (a, b) in products]       # per-direction matches, e.g. query x ad ("full")
    [cos(e_a, e_b) for (a, b) in cosines]    # does the ad answer the query / use the advertiser's
                                             #   facts; do query and bidword agree (all presets)
    e_ad @ B.T                               # optional: "style" of the ad text, k values (below)
    lexical features                         # term overlap, quoted numbers, lengths (ctcvr_model.lexical)
    onehot(industry)                         # optional: [unknown, *training vocabulary]

then standardised with the training set's mean and std (stored in the model weights), because the
products of unit vectors are ~1e-3 in scale and would otherwise be ignored by the first layer. The
industry one-hot block is left as 0/1 (mean 0, std 1): the first Linear layer of each sub-model
over it is that model's learned industry embedding (a per-industry bias for logistic regression).

Style components (``style`` = k > 0): B (k, D) holds the top-k principal directions of the ad
embeddings *centred within each (query, metadata) group* of the training rows, i.e. the directions
along which rewrites of the same advertiser's ad differ (a call to action, a claim, boilerplate, a
cut-off description) rather than what the advertiser sells. Fitted without labels on the training
texts and saved with the weights (buffer ``style_basis``). Unlike the raw 512-d ``e_ad``, k values
cannot identify the advertiser, so they transfer to unseen queries.

Industry: the advertiser's vertical (``industry`` of a table row or a scoring item), normalised
with NFKC, whitespace-trimmed and lower-cased. The vocabulary is the industries seen in the
training table (saved in config.json); an item whose industry is missing, empty or not in the
vocabulary uses the ``unknown`` bucket, which training teaches to mean "industry not known" by
hiding the industry of a random share of training rows (``industry_dropout``).
:data:`FEATURE_PRESETS` names the constructions and says which data size each suits.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ctcvr_model.encoders import TextEncoder
from ctcvr_model.lexical import LEXICAL_FEATURE_NAMES, lexical_features
from ctcvr_model.schema import ITEM_FIELDS as SLOT_FIELDS
from ctcvr_model.schema import ItemError, normalise_selling_points


def _meta_text(item: Mapping[str, Any]) -> str:
    points = normalise_selling_points(item.get("selling_points"))
    return " | ".join([str(item.get("bidword", ""))] + points)


def _ad_text(item: Mapping[str, Any]) -> str:
    return f"{item.get('title', '')}\n{item.get('description', '')}"


# slot name -> function building that slot's text from an item (table row or scoring request).
SLOT_BUILDERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "query": lambda item: str(item.get("query", "")),
    "meta": _meta_text,
    "ad": _ad_text,
    "title": lambda item: str(item.get("title", "")),
    "description": lambda item: str(item.get("description", "")),
}

UNKNOWN_INDUSTRY = "<unknown>"  # bucket 0 of the industry one-hot: missing, empty or unseen industry


def normalise_industry(value: object) -> str:
    """Canonical industry key: NFKC, trimmed, lower-cased; "" for None/NaN/blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return unicodedata.normalize("NFKC", str(value)).strip().lower()


@dataclass
class FeatureConfig:
    """How rows become feature vectors. Saved verbatim in config.json ("features").

    The default is the "compact" preset; see :data:`FEATURE_PRESETS` for the others and why.
    """

    name: str = "compact"  # preset this config came from (informational)
    slots: tuple[str, ...] = ("query", "meta", "ad")
    # Slots whose embedding itself enters the feature vector (every slot feeds products and
    # cosines). Empty: the model sees how the texts relate, not which advertiser they belong to.
    raw_slots: tuple[str, ...] = ()
    # Pairs of slots whose element-wise product (D values each) enters the feature vector.
    products: tuple[tuple[str, str], ...] = ()
    # Pairs of slots whose cosine similarity enters as a scalar.
    cosines: tuple[tuple[str, str], ...] = (("query", "ad"), ("meta", "ad"), ("query", "meta"))
    # Number of style components of the ad embedding (0: none); see the module docstring.
    style: int = 8
    # Query/metadata term overlap and length features (language-agnostic, no tokenizer needed).
    lexical: bool = True
    # One-hot of the advertiser's industry over [unknown, *industry_vocab] (see module docstring).
    industry: bool = True
    # The industries seen in training (normalised, sorted); filled in by training, saved in config.json.
    industry_vocab: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # JSON round-trips turn tuples into lists; normalise so configs compare equal.
        self.slots = tuple(self.slots)
        self.raw_slots = tuple(self.raw_slots)
        self.products = tuple(tuple(p) for p in self.products)  # type: ignore[assignment]
        self.cosines = tuple(tuple(p) for p in self.cosines)  # type: ignore[assignment]
        self.industry_vocab = tuple(str(v) for v in self.industry_vocab)
        if len(set(self.industry_vocab)) != len(self.industry_vocab):
            raise ValueError("industry_vocab has duplicate entries")
        bad_vocab = [v for v in self.industry_vocab if v != normalise_industry(v) or v in ("", UNKNOWN_INDUSTRY)]
        if bad_vocab:
            raise ValueError(f"industry_vocab entries must be normalised, non-empty industries; got {bad_vocab[:3]}")
        for slot in self.slots:
            if slot not in SLOT_BUILDERS:
                raise ValueError(f"unknown slot '{slot}'; known slots: {sorted(SLOT_BUILDERS)}")
        bad = [s for s in self.raw_slots if s not in self.slots]
        if bad:
            raise ValueError(f"raw_slots {bad} are not in slots={self.slots}")
        for a, b in self.products + self.cosines:
            if a not in self.slots or b not in self.slots:
                raise ValueError(f"pair ({a}, {b}) uses a slot not in slots={self.slots}")
        self.style = int(self.style)
        if self.style < 0:
            raise ValueError(f"style must be >= 0, got {self.style}")
        if self.style and "ad" not in self.slots:
            raise ValueError("style components need the 'ad' slot")
        if self.feature_dim(1) == 0:
            raise ValueError("the feature configuration yields no features")

    def describe(self) -> str:
        """Human-readable formula of the feature vector (written to config.json)."""
        parts = [f"e_{s}" for s in self.raw_slots] + [f"e_{a}*e_{b}" for a, b in self.products]
        parts += [f"cos({a},{b})" for a, b in self.cosines]
        if self.style:
            parts.append(f"e_ad@style_basis[{self.style}]")
        if self.lexical:
            parts.append("lexical[" + ",".join(LEXICAL_FEATURE_NAMES) + "]")
        if self.industry:
            parts.append(f"onehot(industry over [{UNKNOWN_INDUSTRY}] + {len(self.industry_vocab)} training industries)")
        texts = {"query": "query", "meta": "bidword | selling points", "ad": "title \\n description",
                 "title": "title", "description": "description"}
        slots = "; ".join(f"e_{s} = enc({texts[s]})" for s in self.slots)
        scaled = "standardised with training mean/std (the industry one-hot is left as 0/1)" if self.industry else \
            "standardised with training mean/std"
        return f"concat[{', '.join(parts)}], {scaled}; {slots}"

    @property
    def n_lexical(self) -> int:
        return len(LEXICAL_FEATURE_NAMES) if self.lexical else 0

    @property
    def n_industry(self) -> int:
        """Width of the industry one-hot block: unknown + the vocabulary (0 when disabled)."""
        return 1 + len(self.industry_vocab) if self.industry else 0

    @property
    def n_extra(self) -> int:
        """E, the columns of EncodedRows.extra: lexical features, then the industry one-hot."""
        return self.n_lexical + self.n_industry

    def industry_columns(self, emb_dim: int) -> slice:
        """Where the industry one-hot block sits in the feature vector (empty slice when disabled)."""
        end = self.feature_dim(emb_dim)
        return slice(end - self.n_industry, end)

    def industry_index(self, value: object) -> int:
        """Column of ``value`` inside the industry block: 0 (unknown) when missing or not in the vocabulary."""
        key = normalise_industry(value)
        try:
            return 1 + self.industry_vocab.index(key) if key else 0
        except ValueError:
            return 0

    def feature_dim(self, emb_dim: int) -> int:
        """F, the length of one feature vector for embeddings of size ``emb_dim``."""
        n_vectors = len(self.raw_slots) + len(self.products)
        return emb_dim * n_vectors + len(self.cosines) + self.style + self.n_extra


_ALL_SLOTS = ("query", "meta", "ad")
_PRODUCTS = (("query", "ad"), ("meta", "ad"))

# Named feature constructions. Measured on the simulated logs (AUC against the simulator's truth,
# validation splits of 3 simulation seeds; ctcvr_model/README.md has the test-split tables): with
# 200k-1M impressions over 256 training advertisers, the 512-d embedding blocks let the MLP memorise
# advertisers and lose 0.005-0.02 CTCVR AUC on unseen queries (1M, with industry: full 0.625 vs
# compact 0.645 before style components), so "compact" (relations, 8 style components, lexical
# features) is the default. "embedding" is the paper's pure embedding form, for logs with many more
# advertisers. Every preset adds the industry one-hot (industry=True) unless told otherwise.
FEATURE_PRESETS: dict[str, FeatureConfig] = {
    "compact": FeatureConfig(name="compact"),
    "full": FeatureConfig(name="full", raw_slots=_ALL_SLOTS, products=_PRODUCTS, style=0, lexical=True),
    "embedding": FeatureConfig(name="embedding", raw_slots=_ALL_SLOTS, products=_PRODUCTS, style=0, lexical=False),
}


def feature_preset(name: str, **overrides: Any) -> FeatureConfig:
    """A copy of preset ``name`` with ``overrides`` (e.g. lexical=False) applied."""
    if name not in FEATURE_PRESETS:
        raise ValueError(f"unknown feature preset '{name}'; choose one of {sorted(FEATURE_PRESETS)}")
    base = asdict(FEATURE_PRESETS[name])
    base.update(overrides)
    return FeatureConfig(**base)


def check_item(item: Any, row: int, source: str | None = None) -> None:
    """Raise ItemError naming the row and field when ``item`` lacks a field or has a wrong type."""
    if not isinstance(item, Mapping):
        raise ItemError(row, None, f"expected an object with fields {list(SLOT_FIELDS)}, got {type(item).__name__}", source)
    for name in SLOT_FIELDS:
        if name not in item:
            raise ItemError(row, name, "missing field", source)
        value = item[name]
        if name == "selling_points":
            try:
                normalise_selling_points(value)
            except TypeError as e:
                raise ItemError(row, name, str(e), source) from None
        elif not isinstance(value, str):
            raise ItemError(row, name, f"must be a string, got {type(value).__name__}", source)
    # Optional: the advertiser's industry. Absent, None or "" all mean "unknown".
    industry = item.get("industry")
    if industry is not None and not isinstance(industry, str):
        raise ItemError(row, "industry", f"must be a string (or absent/null), got {type(industry).__name__}", source)



@dataclass
class EncodedRows:
    """Rows as indices into one table of unique-text embeddings.

    emb:   (U, D) float32, one unit vector per distinct text over all slots
    index: (N, S) int64, row i's slot s text is emb[index[i, s]]
    extra: (N, E) float32 lexical features, then the industry one-hot (E = FeatureConfig.n_extra)
    """

    emb: np.ndarray
    index: np.ndarray
    extra: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


def slot_texts(items: Sequence[Mapping[str, Any]], cfg: FeatureConfig) -> list[list[str]]:
    """Per item, the text of each slot: (N, S) nested list of strings."""
    builders = [SLOT_BUILDERS[s] for s in cfg.slots]
    return [[b(item) for b in builders] for item in items]


def encode_items(
    items: Sequence[Mapping[str, Any]], encoder: TextEncoder, cfg: FeatureConfig, batch_size: int = 64
) -> EncodedRows:
    """Encode every distinct slot text once and index rows into the result.

    items: N mappings with query, bidword, selling_points, title, description and, optionally,
    industry (missing / empty / unseen: the unknown bucket).
    Returns EncodedRows with emb (U, D), index (N, S), extra (N, E).
    """
    texts = slot_texts(items, cfg)
    vocab: dict[str, int] = {}
    index = np.empty((len(items), len(cfg.slots)), dtype=np.int64)
    for i, row in enumerate(texts):
        for j, t in enumerate(row):
            index[i, j] = vocab.setdefault(t, len(vocab))
    emb = encoder.encode(list(vocab), batch_size=batch_size) if vocab else np.zeros((0, encoder.dim), np.float32)
    if emb.shape != (len(vocab), encoder.dim):
        raise ValueError(f"encoder '{encoder.name}' returned shape {emb.shape}, expected ({len(vocab)}, {encoder.dim})")
    if cfg.lexical:
        # Impression tables repeat each (query, ad) many times: compute each distinct one once.
        memo: dict[tuple, list[float]] = {}
        rows_lex = []
        for it in items:
            key = (str(it.get("query", "")), str(it.get("bidword", "")), tuple(normalise_selling_points(it.get("selling_points"))),
                   str(it.get("title", "")), str(it.get("description", "")))
            feats = memo.get(key)
            if feats is None:
                feats = memo[key] = lexical_features(it)
            rows_lex.append(feats)
        lex = np.asarray(rows_lex, dtype=np.float32).reshape(len(items), cfg.n_lexical)
    else:
        lex = np.zeros((len(items), 0), dtype=np.float32)
    if cfg.industry:
        onehot = np.zeros((len(items), cfg.n_industry), dtype=np.float32)
        onehot[np.arange(len(items)), industry_indices(items, cfg)] = 1.0
        extra = np.concatenate([lex, onehot], axis=1)
    else:
        extra = lex
    return EncodedRows(np.ascontiguousarray(emb, dtype=np.float32), index, np.ascontiguousarray(extra))


def industry_indices(items: Sequence[Mapping[str, Any]], cfg: FeatureConfig) -> np.ndarray:
    """(N,) int64 column of each item's industry in the one-hot block (0 = unknown)."""
    lookup = {v: i + 1 for i, v in enumerate(cfg.industry_vocab)}
    memo: dict[object, int] = {}
    out = np.empty(len(items), dtype=np.int64)
    for i, it in enumerate(items):
        raw = it.get("industry")
        key = raw if isinstance(raw, str) or raw is None else repr(raw)
        col = memo.get(key)
        if col is None:
            col = memo[key] = lookup.get(normalise_industry(raw), 0)
        out[i] = col
    return out


def fit_industry_vocab(values: Sequence[object]) -> tuple[str, ...]:
    """The sorted distinct normalised, non-empty industries of ``values`` (a training table's column)."""
    return tuple(sorted({k for k in (normalise_industry(v) for v in values) if k and k != UNKNOWN_INDUSTRY}))


def combine_features(slot_emb: torch.Tensor, extra: torch.Tensor, cfg: FeatureConfig,
                     style_basis: torch.Tensor | None = None) -> torch.Tensor:
    """Raw (unstandardised) feature matrix.

    slot_emb: (B, S, D) slot embeddings in cfg.slots order; extra: (B, E); style_basis: (k, D), needed
    when cfg.style = k > 0 (see :func:`fit_style_basis`).
    Returns (B, F) with F = cfg.feature_dim(D).
    """
    pos = {s: i for i, s in enumerate(cfg.slots)}
    parts = [slot_emb[:, pos[s]] for s in cfg.raw_slots]
    parts += [slot_emb[:, pos[a]] * slot_emb[:, pos[b]] for a, b in cfg.products]
    if cfg.cosines:
        # Embeddings are unit vectors, so the dot product is the cosine.
        parts.append(torch.stack([(slot_emb[:, pos[a]] * slot_emb[:, pos[b]]).sum(-1) for a, b in cfg.cosines], dim=1))
    if cfg.style:
        if style_basis is None or tuple(style_basis.shape) != (cfg.style, slot_emb.shape[2]):
            raise ValueError(f"style={cfg.style} needs a ({cfg.style}, {slot_emb.shape[2]}) style_basis")
        parts.append(slot_emb[:, pos["ad"]] @ style_basis.to(slot_emb.dtype).T)
    if extra.shape[1]:
        parts.append(extra)
    if not parts:
        return slot_emb.new_zeros((slot_emb.shape[0], 0))
    return torch.cat(parts, dim=1)


def gather_batch(rows: EncodedRows, emb: torch.Tensor, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot embeddings (B, S, D) and extra features (B, E) of the rows ``batch``.

    emb is rows.emb already moved to the target device (passed in so it is copied only once).
    """
    idx = torch.from_numpy(rows.index[batch]).to(emb.device)
    extra = torch.from_numpy(rows.extra[batch]).to(emb.device)
    return emb[idx], extra


def fit_style_basis(rows: EncodedRows, cfg: FeatureConfig) -> np.ndarray:
    """(k, D) float32: the top-k principal directions of the ad embeddings centred per (query, meta) group.

    Each distinct (group, ad text) counts once (no impression weighting: the directions describe how
    rewrites differ, not how often they were shown). Groups with a single ad carry no within-group
    variation and drop out. Signs are fixed (largest-magnitude entry positive) so the result is
    deterministic. Rows of zeros when there is not enough variation (fewer than k directions).
    """
    k, dim = cfg.style, rows.emb.shape[1]
    basis = np.zeros((k, dim), dtype=np.float32)
    if k == 0 or len(rows) == 0:
        return basis
    pos = {s: i for i, s in enumerate(cfg.slots)}
    group_cols = [pos[s] for s in ("query", "meta") if s in pos]
    ad = rows.index[:, pos["ad"]]
    groups = [tuple(r) for r in rows.index[:, group_cols]] if group_cols else [()] * len(rows)
    members: dict[tuple, set[int]] = {}
    for g, a in zip(groups, ad.tolist()):
        members.setdefault(g, set()).add(a)
    centred = []
    for ads in members.values():
        if len(ads) < 2:
            continue
        e = rows.emb[sorted(ads)].astype(np.float64)
        centred.append(e - e.mean(0))
    if not centred:
        return basis
    _, sing, vt = np.linalg.svd(np.concatenate(centred), full_matrices=False)
    n = int(min(k, int((sing > 1e-8 * max(sing[0], 1e-30)).sum())))
    vt = vt[:n]
    flip = np.sign(vt[np.arange(n), np.abs(vt).argmax(1)])
    basis[:n] = (vt * flip[:, None]).astype(np.float32)
    return basis


def feature_moments(rows: EncodedRows, cfg: FeatureConfig, max_rows: int = 50_000, seed: int = 0,
                    style_basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (each (F,)) of the raw features over (a sample of) ``rows``.

    Unweighted over rows on purpose: the standardisation only has to put features on one scale.
    """
    rng = np.random.default_rng(seed)
    n = len(rows)
    pick = np.arange(n) if n <= max_rows else rng.choice(n, size=max_rows, replace=False)
    emb = torch.from_numpy(rows.emb)
    basis = None if style_basis is None else torch.as_tensor(style_basis, dtype=torch.float32)
    total, total_sq, count = None, None, 0
    for start in range(0, len(pick), 8192):
        x_slots, extra = gather_batch(rows, emb, pick[start : start + 8192])
        x = combine_features(x_slots, extra, cfg, basis).double()
        s, s2 = x.sum(0), (x * x).sum(0)
        total = s if total is None else total + s
        total_sq = s2 if total_sq is None else total_sq + s2
        count += x.shape[0]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    # A constant feature (e.g. one language only) gets std 1 so it does not blow up.
    std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
    # The industry one-hot stays 0/1: standardising it would give the never-seen-in-training
    # unknown column (and rare industries) arbitrary scales.
    cols = cfg.industry_columns(rows.emb.shape[1])
    mean[cols], std[cols] = 0.0, 1.0
    return mean.float().numpy(), std.float().numpy()
