"""What the testbed writes on held-out prompts: format-valid share and fact copying, per language.

The two checks of a policy that can be trained by RL at all: it writes the two-line ad format
(``relate_common.ad_format.parse_ad``), and its ads carry the prompt's own facts (the record's bidword
or one of its selling points, verbatim) rather than memorised text; plus variety between samples of
one prompt, without which every GRPO group has one reward and no advantage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from relate_common.ad_format import parse_ad
from relate_common.records import AdRecord


def copies_prompt_fact(record: AdRecord, response: str) -> bool:
    """True when ``response`` holds the record's bidword or one of its selling points verbatim
    (case-insensitive: the simulator's ads capitalise an English bidword at the start of a title)."""
    text = response.casefold()
    return any(fact.casefold() in text for fact in (record.bidword, *record.selling_points) if fact.strip())


def probe_rows(records: Sequence[AdRecord], responses: Sequence[Sequence[str]]) -> dict[str, dict[str, float]]:
    """Per language and ``all``: ``prompts``, ``format_valid`` and ``copies_fact`` (shares of the first
    sample of each prompt, the greedy one when sampling was greedy), and ``distinct_samples`` (mean
    share of distinct texts among each prompt's samples; 1/n when all n are the same)."""
    groups: dict[str, list[tuple[AdRecord, Sequence[str]]]] = defaultdict(list)
    for record, samples in zip(records, responses, strict=True):
        groups[record.language].append((record, samples))
        groups["all"].append((record, samples))
    out = {}
    for language in sorted(groups):
        rows = groups[language]
        out[language] = {
            "prompts": len(rows),
            "format_valid": sum(parse_ad(s[0]).ok for _, s in rows) / len(rows),
            "copies_fact": sum(copies_prompt_fact(r, s[0]) for r, s in rows) / len(rows),
            "distinct_samples": sum(len(set(s)) / len(s) for _, s in rows) / len(rows),
        }
    return out


def format_probe(table: dict[str, dict[str, float]], title: str) -> str:
    """A markdown table of :func:`probe_rows`."""
    lines = [f"**{title}**", "", "| language | prompts | format-valid | copies bidword / selling point | distinct samples |",
             "|---|---:|---:|---:|---:|"]
    for language, row in table.items():
        lines.append(f"| {language} | {row['prompts']:.0f} | {row['format_valid']:.1%} | {row['copies_fact']:.1%} | "
                     f"{row['distinct_samples']:.2f} |")
    return "\n".join(lines)


def sample_ads(model: Any, tokenizer: Any, messages: Sequence[Sequence[dict[str, str]]], *, n: int,
               temperature: float, max_new_tokens: int, seed: int = 0) -> list[list[str]]:
    """``n`` decoded responses per prompt (greedy at temperature 0), through the project's one
    generation path (``relate_eval.generate``: shared prompt prefixes, seeded sampling) and
    decoded as the reward decodes them in training (``reward_fns.attribution``)."""
    from relate_eval.generate import generate_responses, render_prompts
    from reward_fns.attribution import decode_batch_with_offsets

    prompt_ids = render_prompts(tokenizer, messages)
    ids = generate_responses(model, tokenizer, prompt_ids, n, temperature=temperature, top_p=1.0,
                             max_new_tokens=max_new_tokens, seed=seed, batch_size=32, progress=False)
    texts = iter(text for text, _ in decode_batch_with_offsets(tokenizer, [r for per_prompt in ids for r in per_prompt]))
    return [[next(texts) for _ in per_prompt] for per_prompt in ids]
