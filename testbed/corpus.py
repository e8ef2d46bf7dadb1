"""The testbed's pre-training corpus: (prompt, ad) pairs from the bundled records and the simulator's ads.

A small model trained on the 286 train records alone memorises their ads and copies nothing from the
prompt (a 0.8M-parameter prototype: 0 of 32 held-out ads held the record's bidword or a selling point).
So the corpus also holds **recombined records**: one train record's query, another's bidword and selling
points drawn from any train record of the language, their numbers redrawn. Their ads are the
simulator's variants (``data_prep.simulate_logs.make_variants``) of an ad built from the fields
(``reference_ad`` of a record with no title), so the facts in those ads exist nowhere but in the
prompt: the only way to predict them is to copy. Val records never enter the corpus (their ids are
split by ``data_prep.common.assign_split``, the RL set's rule), so held-out prompts stay unseen.

A recombined record's facts still come from a pool of a few hundred bidwords and selling points,
which a model can memorise as whole phrases and then "copy" by recalling them. So a share of the
recombined records get **invented facts** (:func:`invented_records`): strings of words (English) or
characters (Chinese) drawn at random from the train records' own text, never seen as a phrase
anywhere. Held-out facts are new phrases too; only a copy that works token by token reaches them.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from data_prep.common import assign_split
from data_prep.config import DatasetConfig
from data_prep.prompts import build_messages
from data_prep.simulate_logs import VARIANT_NAMES, make_variants
from relate_common.ad_format import render_ad
from relate_common.lang import is_cjk
from relate_common.records import AdRecord


@dataclass(frozen=True)
class CorpusPair:
    """One training example: the RL set's chat prompt and an ad in the exact output format."""

    record_id: str
    language: str
    variant: str  # the simulator's variant name
    messages: tuple[dict[str, str], ...]  # system + user turns (data_prep.prompts.build_messages)
    ad: str  # relate_common.ad_format.render_ad(title, description, language)


def train_records(records: Sequence[AdRecord], dataset: DatasetConfig) -> list[AdRecord]:
    """The records ``data_prep/build_dataset.py`` puts in train.parquet with ``dataset``'s split rule."""
    fractions = {"val": dataset.val_fraction}
    return [r for r in records if assign_split(r.id, dataset.seed, fractions) == "train"]


def fresh_numbers(text: str, rng: random.Random) -> str:
    """``text`` with every run of digits replaced by a random number of the same length (no leading 0):
    a selling point's figures then exist only in the prompt that states them."""
    return re.sub(r"\d+", lambda m: str(rng.randint(10 ** (len(m.group()) - 1) if len(m.group()) > 1 else 0,
                                                   10 ** len(m.group()) - 1)), text, flags=re.ASCII)


def records_by_language(records: Sequence[AdRecord], caller: str) -> dict[str, list[AdRecord]]:
    """``records`` grouped by language, languages in sorted order (the order made-up records draw them in)."""
    if not records:
        raise ValueError(f"{caller} needs at least one record")
    groups: dict[str, list[AdRecord]] = defaultdict(list)
    for r in records:
        groups[r.language].append(r)
    return dict(sorted(groups.items()))


def recombined_records(records: Sequence[AdRecord], n: int, seed: int,
                       points_range: tuple[int, int] = (2, 4)) -> list[AdRecord]:
    """``n`` new records of one language each: the query of one random record, the bidword of another,
    and ``points_range`` selling points drawn from all records of that language with their numbers
    redrawn (:func:`fresh_numbers`); no industry, landing page or reference ad. Nothing in them can be
    predicted from the query, so their ads can only be written by copying the prompt.

    Deterministic for ``seed``; ids are ``recombined-<seed>-<k>``."""
    by_language = records_by_language(records, "recombined_records")
    rng = random.Random(seed)
    languages = list(by_language)
    pools = {lang: sorted({p for r in by_language[lang] for p in r.selling_points}) for lang in languages}
    out = []
    for k in range(n):
        language = rng.choice(languages)
        query, bidword = rng.choice(by_language[language]).query, rng.choice(by_language[language]).bidword
        pool = pools[language]
        points = [fresh_numbers(p, rng) for p in rng.sample(pool, min(len(pool), rng.randint(*points_range)))]
        out.append(AdRecord(id=f"recombined-{seed}-{k}", query=query, bidword=bidword, selling_points=points,
                            language=language))
    return out


def fact_units(records: Sequence[AdRecord], language: str) -> list[str]:
    """The sorted units facts of ``language`` are invented from: the Chinese characters of ``records``'
    queries, bidwords and selling points for ``zh``, their words of three letters or more otherwise."""
    texts = [t for r in records for t in (r.query, r.bidword, *r.selling_points)]
    if language == "zh":
        return sorted({ch for t in texts for ch in t if is_cjk(ch)})
    return sorted({w for t in texts for w in re.findall(r"[A-Za-z]+", t) if len(w) > 2})


def invented_records(records: Sequence[AdRecord], n: int, seed: int,
                     points_range: tuple[int, int] = (2, 4)) -> list[AdRecord]:
    """``n`` records of one language each, with one record's query but an invented bidword (1-3 units)
    and ``points_range`` invented selling points (2-5 units): units of :func:`fact_units` of that
    language's records, joined by spaces for words, directly for characters (one more unit then, as
    a Chinese word has more characters than an English phrase has words).

    Deterministic for ``seed``; ids are ``invented-<seed>-<k>``."""
    by_language = records_by_language(records, "invented_records")
    rng = random.Random(seed + 1)  # not seed: the recombined records draw from random.Random(seed)
    languages = list(by_language)
    units = {lang: fact_units(by_language[lang], lang) for lang in languages}
    if empty := [lang for lang in languages if not units[lang]]:
        raise ValueError(f"no words to invent facts from in the {', '.join(empty)} records")

    def phrase(language: str, low: int, high: int) -> str:
        k = rng.randint(low, high)
        if language == "zh":
            return "".join(rng.choice(units[language]) for _ in range(k + 1))
        return " ".join(rng.choice(units[language]) for _ in range(k))

    out = []
    for k in range(n):
        language = rng.choice(languages)
        query = rng.choice(by_language[language]).query
        bidword = phrase(language, 1, 3)
        points = [phrase(language, 2, 5) for _ in range(rng.randint(*points_range))]
        out.append(AdRecord(id=f"invented-{seed}-{k}", query=query, bidword=bidword, selling_points=points,
                            language=language))
    return out


def corpus_pairs(records: Sequence[AdRecord], prompt_style: str,
                 left_out_variants: Sequence[str] = ()) -> list[CorpusPair]:
    """Every record's prompt paired with each of its simulator ad variants (nine, less
    ``left_out_variants``), in record order."""
    if unknown := set(left_out_variants) - set(VARIANT_NAMES):
        raise ValueError(f"unknown simulator variants {sorted(unknown)} (known: {', '.join(VARIANT_NAMES)})")
    pairs = []
    for index, record in enumerate(records):
        messages = tuple(build_messages(record, prompt_style))
        for variant in make_variants(record, index):
            if variant.name in left_out_variants:
                continue
            pairs.append(CorpusPair(record.id, record.language, variant.name, messages,
                                    render_ad(variant.title, variant.description, record.language)))
    return pairs


def build_corpus(records: Sequence[AdRecord], *, recombined: int, seed: int, prompt_style: str,
                 invented_share: float = 0.0, left_out_variants: Sequence[str] = (),
                 dataset: DatasetConfig = DatasetConfig()) -> list[CorpusPair]:
    """The whole corpus, shuffled with ``seed``: the train records' own variants plus those of
    ``recombined`` made-up records, ``invented_share`` of them with invented facts and the rest
    recombined (see the module docstring); every simulator variant but ``left_out_variants``.
    Val records are left out."""
    if not 0.0 <= invented_share <= 1.0:
        raise ValueError(f"invented_share must be in [0, 1], got {invented_share}")
    train = train_records(records, dataclasses.replace(dataset, prompt_style=prompt_style))
    invented = round(recombined * invented_share)
    made = recombined_records(train, recombined - invented, seed) + invented_records(train, invented, seed)
    pairs = corpus_pairs(train, prompt_style, left_out_variants) + corpus_pairs(made, prompt_style, left_out_variants)
    random.Random(seed).shuffle(pairs)
    return pairs
