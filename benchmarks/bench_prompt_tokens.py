"""Prompt size of each style (``data_prep.prompts.PROMPT_STYLES``) in policy tokens.

    python benchmarks/bench_prompt_tokens.py [--records FILE] [--tokenizer DIR]

Renders every record's RL prompt with the tokenizer's chat template (generation prompt included:
what the rollout sees, as ``build_dataset --max-prompt-tokens`` counts it) in each style and prints
min / mean / max tokens per language and the ratio of each style's mean to the ``full`` style's,
measured in the same run. Default tokenizer: SmolLM2-135M-Instruct's, the CPU demo's policy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_prep.build_dataset import prompt_token_count
from data_prep.config import SAMPLE_RECORDS
from data_prep.prompts import PROMPT_STYLES
from relate_common.records import RecordError, parse_record, read_rows


def measure(records: list, tokenizer) -> dict[str, dict[str, list[int]]]:
    """{style: {language: [tokens of each record's prompt]}}."""
    out: dict[str, dict[str, list[int]]] = {}
    for style in PROMPT_STYLES:
        for rec in records:
            out.setdefault(style, {}).setdefault(rec.language, []).append(prompt_token_count(tokenizer, rec, style))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=Path, default=SAMPLE_RECORDS, help="records file (default: the bundled sample)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: SmolLM2-135M-Instruct's)")
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    if args.tokenizer is None:
        from relate_common.assets import smollm2_tokenizer_dir

        args.tokenizer = str(smollm2_tokenizer_dir())
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    records = []
    for row_no, raw in read_rows(args.records):
        if isinstance(raw, RecordError):
            raise raw
        records.append(parse_record(raw, source=str(args.records), row=row_no))
    sizes = measure(records, tokenizer)
    print(f"prompt tokens ({args.tokenizer}, {len(records)} records of {args.records})")
    print(f"{'style':<9} {'language':<9} {'records':>7} {'min':>5} {'mean':>7} {'max':>5} {'x full':>7}")
    for style, by_lang in sizes.items():
        for lang in sorted(by_lang):
            n = by_lang[lang]
            ratio = statistics.mean(n) / statistics.mean(sizes["full"][lang])
            print(f"{style:<9} {lang:<9} {len(n):>7} {min(n):>5} {statistics.mean(n):>7.1f} {max(n):>5} {ratio:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
