"""The testbed's pre-training corpus: (prompt, ad) pairs from the bundled records and the simulator's ads.

A small model trained on the 288 train records alone memorises their ads and copies nothing from the
prompt (a 0.8M-parameter prototype: 0 of 32 held-out ads held the record's bidword or a selling point).
So the corpus also holds **recombined records**: one train record's query, another's bidword and selling
points drawn from any train record of the language, their numbers redrawn. Their ads are the
simulator's nine variants (``data_prep.simulate_logs.make_variants``) of an ad built from the fields
(``reference_ad`` of a record with no title), so the facts in those ads exist nowhere but in the
prompt: the only way to predict them is to copy. Val records never enter the corpus (their ids are
split by ``data_prep.common.assign_split``, the RL set's rule), so held-out prompts stay unseen.
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
from data_prep.simulate_logs import make_variants
from relate_common.ad_format import render_ad
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


def recombined_records(records: Sequence[AdRecord], n: int, seed: int,
                       points_range: tuple[int, int] = (2, 4)) -> list[AdRecord]:
    """``n`` new records of one language each: the query of one random record, the bidword of another,
    and ``points_range`` selling points drawn from all records of that language with their numbers
    redrawn (:func:`fresh_numbers`); no industry, landing page or reference ad. Nothing in them can be
    predicted from the query, so their ads can only be written by copying the prompt.

    Deterministic for ``seed``; ids are ``recombined-<seed>-<k>``."""
    if not records:
        raise ValueError("recombined_records needs at least one record")
    rng = random.Random(seed)
    by_language: dict[str, list[AdRecord]] = defaultdict(list)
    for r in records:
        by_language[r.language].append(r)
    languages = sorted(by_language)
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


def corpus_pairs(records: Sequence[AdRecord], prompt_style: str) -> list[CorpusPair]:
    """Every record's prompt paired with each of its nine simulator ad variants, in record order."""
    pairs = []
    for index, record in enumerate(records):
        messages = tuple(build_messages(record, prompt_style))
        for variant in make_variants(record, index):
            pairs.append(CorpusPair(record.id, record.language, variant.name, messages,
                                    render_ad(variant.title, variant.description, record.language)))
    return pairs


def build_corpus(records: Sequence[AdRecord], *, recombined: int, seed: int, prompt_style: str,
                 dataset: DatasetConfig = DatasetConfig()) -> list[CorpusPair]:
    """The whole corpus, shuffled with ``seed``: the train records' own variants plus those of
    ``recombined`` recombined records (see the module docstring). Val records are left out."""
    train = train_records(records, dataclasses.replace(dataset, prompt_style=prompt_style))
    pairs = corpus_pairs(train, prompt_style) + corpus_pairs(recombined_records(train, recombined, seed), prompt_style)
    random.Random(seed).shuffle(pairs)
    return pairs
