"""Simulate search-ad impression logs (clicks, conversions) from the ground-truth user model.

For every ad record the simulator builds the reference ad plus rule-based rewrites, some better
(a concrete selling point, a call to action, both with the query terms) and some worse (query
terms dropped, exaggerated claims, a generic template shared by all records, a truncated or an
overlong description). It then plays a stream of impressions: pick a record (mild popularity
skew), pick one of its variants, apply template fatigue from the stream so far, and sample
click ~ Bernoulli(p_click) and, after a click, conversion ~ Bernoulli(p_cvr). The truth
probabilities are written next to the sampled outcomes. Formulas: data_prep/SIMULATOR.md.

    python data_prep/simulate_logs.py --output logs.parquet --impressions 200000 --seed 0
    python -m data_prep.simulate_logs --records my_records.jsonl --output logs.parquet
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_prep.user_model import UserModel, UserModelConfig, content_tokens, normalize_text  # noqa: E402
from relate_common.records import AdRecord, RecordError, load_records  # noqa: E402

DEFAULT_RECORDS = Path(__file__).resolve().parent / "sample" / "ad_records.jsonl"
DEFAULT_IMPRESSIONS = 200_000
DEFAULT_POPULARITY_SKEW = 0.3  # Zipf exponent over records: the top record gets a few x the median

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


# ---------------------------------------------------------------------------------------------
# The impression stream.
# ---------------------------------------------------------------------------------------------

OUTPUT_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("industry", pa.string()),
        ("language", pa.string()),
        ("query", pa.string()),
        ("bidword", pa.string()),
        ("selling_points", pa.list_(pa.string())),
        ("title", pa.string()),
        ("description", pa.string()),
        ("variant", pa.string()),
        ("click", pa.int64()),
        ("conversion", pa.int64()),
        ("truth_p_click", pa.float64()),  # after fatigue: the probability the click was drawn from
        ("truth_p_cvr", pa.float64()),  # post-click conversion probability
        ("truth_p_ctcvr", pa.float64()),  # truth_p_click * truth_p_cvr
        ("truth_fatigue_factor", pa.float64()),  # the fatigue multiplier already in truth_p_click
    ]
)
# --aggregate: one row per shown ad (record x variant) with counts, the shape build_ctcvr_table and
# build_sft_dataset read as "aggregated"; the truth columns are means over that ad's impressions.
AGGREGATED_SCHEMA = pa.schema(
    [*(f for f in OUTPUT_SCHEMA if f.name not in ("click", "conversion")),
     pa.field("impressions", pa.int64()), pa.field("clicks", pa.int64()), pa.field("conversions", pa.int64())]
)


def record_popularity(n_records: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like sampling weights over records in a seeded random rank order (0 = uniform).

    Ranks are shuffled so popularity does not follow file order (which is often by industry)."""
    ranks = rng.permutation(n_records) + 1
    weights = ranks.astype(np.float64) ** -skew
    return weights / weights.sum()


def simulate(
    records: Sequence[AdRecord],
    impressions: int,
    seed: int,
    *,
    model: UserModel | None = None,
    popularity_skew: float = DEFAULT_POPULARITY_SKEW,
    progress: bool = True,
    aggregate: bool = False,
) -> pa.Table:
    """Play ``impressions`` impressions over the records' ad variants; return the log table.

    Everything that does not depend on the stream (variant texts, features, fresh probabilities,
    phrasing slots) is computed once per variant; the per-impression loop only updates fatigue.
    Same records + seed + model config -> identical table. ``aggregate``: the same draws summed per
    shown ad (:data:`AGGREGATED_SCHEMA`), so that 10M impressions fit in memory and on disk.
    """
    if not records:
        raise ValueError("no records to simulate")
    model = model or UserModel()
    rng = np.random.default_rng(seed)

    variants = [v for i, record in enumerate(records) for v in make_variants(record, i, model)]
    n_variants = len(VARIANT_NAMES)
    variant_ads = [
        {**_record_fields(records[v.record_index]), "title": v.title, "description": v.description}
        for v in variants
    ]
    p_click_fresh, p_cvr = model.score(variant_ads)
    fatigue = model.new_fatigue_state(len(records))  # users forget after a few passes over the records
    slot_arrays = [fatigue.slots(model.phrasing_keys(ad)) for ad in variant_ads]

    popularity = record_popularity(len(records), popularity_skew, rng)
    record_pick = rng.choice(len(records), size=impressions, p=popularity)
    variant_pick = record_pick * n_variants + rng.integers(n_variants, size=impressions)
    click_draw = rng.random(impressions)
    conversion_draw = rng.random(impressions)

    order = variant_pick.tolist()
    if progress:
        from tqdm import tqdm

        order = tqdm(order, desc="impressions", unit="imp", mininterval=0.5, file=sys.stderr)
    exposures = fatigue.replay(slot_arrays, order)

    fatigue_factor = model.fatigue_factor(exposures)
    truth_p_click = p_click_fresh[variant_pick] * fatigue_factor
    truth_p_cvr = p_cvr[variant_pick]
    click = click_draw < truth_p_click
    conversion = click & (conversion_draw < truth_p_cvr)

    variant_table = pa.table(
        {
            "record_id": [records[v.record_index].id for v in variants],
            "industry": [records[v.record_index].industry for v in variants],
            "language": [records[v.record_index].language for v in variants],
            "query": [records[v.record_index].query for v in variants],
            "bidword": [records[v.record_index].bidword for v in variants],
            "selling_points": pa.array(
                [list(records[v.record_index].selling_points) for v in variants], type=pa.list_(pa.string())
            ),
            "title": [v.title for v in variants],
            "description": [v.description for v in variants],
            "variant": [v.name for v in variants],
        }
    )
    if aggregate:
        return aggregate_log(variant_table, variant_pick, click, conversion, truth_p_click, truth_p_cvr, fatigue_factor)
    table = variant_table.take(pa.array(variant_pick))
    for name, values in (
        ("click", click.astype(np.int64)),
        ("conversion", conversion.astype(np.int64)),
        ("truth_p_click", truth_p_click),
        ("truth_p_cvr", truth_p_cvr),
        ("truth_p_ctcvr", truth_p_click * truth_p_cvr),
        ("truth_fatigue_factor", fatigue_factor),
    ):
        table = table.append_column(name, pa.array(values))
    return table.cast(OUTPUT_SCHEMA)


def aggregate_log(variant_table: pa.Table, variant_pick: np.ndarray, click: np.ndarray, conversion: np.ndarray,
                  truth_p_click: np.ndarray, truth_p_cvr: np.ndarray, fatigue_factor: np.ndarray) -> pa.Table:
    """Per-impression draws summed per ad: one row per ad shown at least once (never-shown ads have no row).

    Args:
        variant_table: (V rows) the text columns of every ad variant.
        variant_pick: (N,) the variant index of each impression; the other arrays are (N,) per impression.
    Returns: :data:`AGGREGATED_SCHEMA` rows; truth columns are the means over the ad's impressions
    (``truth_p_ctcvr``: the mean of the per-impression products, so it matches the expected conversions).
    """
    n = variant_table.num_rows
    imps = np.bincount(variant_pick, minlength=n)
    shown = np.flatnonzero(imps)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(variant_pick, weights=values, minlength=n)[shown]

    table = variant_table.take(pa.array(shown))
    columns = (
        ("truth_p_click", total(truth_p_click) / imps[shown]),
        ("truth_p_cvr", total(truth_p_cvr) / imps[shown]),
        ("truth_p_ctcvr", total(truth_p_click * truth_p_cvr) / imps[shown]),
        ("truth_fatigue_factor", total(fatigue_factor) / imps[shown]),
        ("impressions", imps[shown].astype(np.int64)),
        ("clicks", np.rint(total(click.astype(np.float64))).astype(np.int64)),
        ("conversions", np.rint(total(conversion.astype(np.float64))).astype(np.int64)),
    )
    for name, values in columns:
        table = table.append_column(name, pa.array(values))
    return table.cast(AGGREGATED_SCHEMA)


def _record_fields(record: AdRecord) -> dict[str, object]:
    """The record fields the user model reads besides the ad text."""
    return {
        "query": record.query, "bidword": record.bidword, "selling_points": record.selling_points,
        "industry": record.industry, "language": record.language,
    }


# ---------------------------------------------------------------------------------------------
# Summary and CLI.
# ---------------------------------------------------------------------------------------------


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def summarize(table: pa.Table) -> str:
    """Totals and a per-variant CTR/CVR table of a simulated log (either shape), as printable text."""
    variant = np.asarray(table.column("variant").to_pylist())
    if "impressions" in table.column_names:
        imps = table.column("impressions").to_numpy()
        click, conversion = table.column("clicks").to_numpy(), table.column("conversions").to_numpy()
    else:
        imps = np.ones(table.num_rows, dtype=np.int64)
        click, conversion = table.column("click").to_numpy(), table.column("conversion").to_numpy()
    truth = table.column("truth_p_ctcvr").to_numpy()
    n, clicks, conversions = int(imps.sum()), int(click.sum()), int(conversion.sum())
    lines = [
        f"impressions: {n}",
        f"clicks:      {clicks}",
        f"conversions: {conversions}",
        f"CTR:   {_rate(clicks, n):.4%}",
        f"CVR:   {_rate(conversions, clicks):.4%}  (conversions / clicks)",
        f"CTCVR: {_rate(conversions, n):.4%}  (conversions / impressions)",
        "",
        f"{'variant':<20}{'impressions':>12}{'clicks':>8}{'conv':>6}{'CTR':>9}{'CVR':>9}{'CTCVR':>9}{'truth CTCVR':>13}",
    ]
    for name in VARIANT_NAMES:
        mask = variant == name
        if not mask.any():
            continue
        m, c, v = int(imps[mask].sum()), int(click[mask].sum()), int(conversion[mask].sum())
        truth_mean = float((truth[mask] * imps[mask]).sum() / m)  # per impression, in either shape
        lines.append(
            f"{name:<20}{m:>12}{c:>8}{v:>6}{_rate(c, m):>9.3%}{_rate(v, c):>9.3%}{_rate(v, m):>9.4%}{truth_mean:>13.4%}"
        )
    return "\n".join(lines)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write atomically (temp file + rename), so an interrupted run never leaves a partial log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simulate_logs",
        description=(
            "Simulate search-ad impression logs from a documented ground-truth user model "
            "(data_prep/SIMULATOR.md). Each record's reference ad and rule-based rewrites "
            f"({', '.join(VARIANT_NAMES)}) are shown in a stream of impressions; clicks and "
            "conversions are sampled from the model's p_click (with template fatigue) and p_cvr, "
            "and the truth probabilities are written next to them."
        ),
        epilog=(
            "Output columns: record_id, industry, language, query, bidword, selling_points, title, "
            "description, variant, click (0/1), conversion (0/1, only 1 after a click), "
            "truth_p_click, truth_p_cvr, truth_p_ctcvr, truth_fatigue_factor; with --aggregate: impressions, "
            "clicks, conversions per shown ad instead of click and conversion, truth columns averaged. "
            "At the end a summary is printed: impressions, clicks, conversions, CTR, CVR "
            "(conversions / clicks), CTCVR and a per-variant table; the progress bar goes to stderr. "
            "Exit codes: 0 ok, 2 invalid input (the message names file, row and field)."
        ),
    )
    parser.add_argument(
        "--records", type=Path, default=DEFAULT_RECORDS,
        help=f"ad records (JSONL, CSV or parquet; schema of relate_common.records). Default: {DEFAULT_RECORDS}",
    )
    parser.add_argument("--output", type=Path, required=True, help="parquet file to write the impression log to")
    parser.add_argument(
        "--impressions", type=int, default=DEFAULT_IMPRESSIONS,
        help=f"number of impressions to simulate (default {DEFAULT_IMPRESSIONS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives an identical file (default 0)")
    parser.add_argument(
        "--popularity-skew", type=float, default=DEFAULT_POPULARITY_SKEW,
        help=f"Zipf exponent of record popularity, 0 = uniform (default {DEFAULT_POPULARITY_SKEW})",
    )
    parser.add_argument("--aggregate", action="store_true",
                        help="write one row per shown ad with impressions / clicks / conversions counts (and mean truth) "
                             "instead of one row per impression: the same draws, for 10M+ impressions")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return parser


@dataclass(frozen=True)
class SimulationRun:
    """The settings of one ``simulate_logs`` run (the CLI's flags, typed)."""

    output: Path  # parquet file to write the impression log to
    records: Path = DEFAULT_RECORDS  # ad records (JSONL, CSV or parquet)
    impressions: int = DEFAULT_IMPRESSIONS
    seed: int = 0  # the same seed gives an identical file
    popularity_skew: float = DEFAULT_POPULARITY_SKEW  # Zipf exponent of record popularity, 0 = uniform
    aggregate: bool = False  # one row per shown ad with counts instead of one row per impression
    progress: bool = True  # tqdm bar on stderr


def run(config: SimulationRun) -> int:
    """Simulate and write the log of ``config``, print the summary; returns the exit code (0 ok, 2 invalid input)."""
    started = time.perf_counter()
    try:
        if not config.records.is_file():
            raise RecordError(str(config.records), 0, None, "records file not found")
        records, _ = load_records(config.records)
        if not records:
            raise RecordError(str(config.records), 0, None, "no records in file")
    except RecordError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    table = simulate(
        records, config.impressions, config.seed, model=UserModel(UserModelConfig()),
        popularity_skew=config.popularity_skew, progress=config.progress, aggregate=config.aggregate,
    )
    write_parquet(table, config.output)
    elapsed = time.perf_counter() - started
    print(summarize(table))
    print(f"\nrecords: {len(records)} ({config.records})")
    print(f"output:  {config.output}")
    print(f"wall time: {elapsed:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: parse and check the flags, then :func:`run`; returns the exit code (0 ok, 2 invalid input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.impressions < 1:
        parser.error("--impressions must be at least 1")
    if args.popularity_skew < 0:
        parser.error("--popularity-skew must be >= 0")
    return run(SimulationRun(output=args.output, records=args.records, impressions=args.impressions, seed=args.seed,
                             popularity_skew=args.popularity_skew, aggregate=args.aggregate, progress=not args.no_progress))

if __name__ == "__main__":
    sys.exit(main())
