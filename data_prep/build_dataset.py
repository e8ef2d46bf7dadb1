"""Ad records (JSONL / CSV / parquet) -> verl RL parquet (``train.parquet``, ``val.parquet``).

Each output row is what verl 0.9.1's ``RLHFDataset`` reads: ``data_source``, ``prompt`` (chat
messages from ``data_prep.prompts``), ``ability``, ``reward_model`` (``style`` and a
``ground_truth`` holding the record fields the RELATE rewards need) and ``extra_info``
(``index``, ``split``, every record field and any extra input column).

Examples::

    python data_prep/build_dataset.py --output-dir data/relate            # bundled sample
    python data_prep/build_dataset.py --input ads.csv --output-dir out --skip-invalid \\
        --tokenizer /models/Qwen3-8B --max-prompt-tokens 1024
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm

from data_prep.common import assign_split, handle_invalid, write_parquet
from relate_common.jsonio import write_json, write_jsonl
from data_prep.config import SAMPLE_RECORDS, DatasetConfig
from data_prep.prompts import PROMPT_STYLES, build_messages, prompt_version
from relate_common.records import AdRecord, RecordError, parse_record, read_rows
from relate_common.rl_row import GROUND_TRUTH_FIELDS, ground_truth, reward_model

# extra_info keys we set ourselves; an input column with one of these names is carried as input_<name>.
_RESERVED_EXTRA_KEYS = frozenset(("index", "split", "prompt_version", *GROUND_TRUTH_FIELDS))


def _carry_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """Input columns we do not know, kept under their names (prefixed on collision).
    Nested values become JSON text so that parquet's schema stays flat and stable."""
    out = {}
    for key, value in extra.items():
        name = f"input_{key}" if key in _RESERVED_EXTRA_KEYS else str(key)
        if value is not None and not isinstance(value, (str, int, float, bool)):
            value = json.dumps(value, ensure_ascii=False, default=str)
        out[name] = value
    return out


def unify_extra_types(rows: list[dict[str, Any]]) -> list[str]:
    """Make each extra column one type across rows (parquet needs it): a column holding mixed
    types is turned into strings everywhere. Returns the names of the columns converted."""
    types: dict[str, set[type]] = {}
    for row in rows:
        for key, value in row["extra_info"].items():
            if key not in _RESERVED_EXTRA_KEYS and value is not None:
                types.setdefault(key, set()).add(type(value))
    mixed = sorted(k for k, ts in types.items() if len(ts) > 1)
    for row in rows:
        info = row["extra_info"]
        for key in mixed:
            if info.get(key) is not None:
                info[key] = str(info[key])
    return mixed


def to_rl_row(record: AdRecord, config: DatasetConfig, split: str, index: int) -> dict[str, Any]:
    """One verl RL row for ``record``."""
    return {
        "data_source": config.data_source,
        "prompt": build_messages(record, config.prompt_style),
        "ability": config.ability,
        "reward_model": reward_model(record, config.reward_style),
        "extra_info": {"index": index, "split": split, "prompt_version": prompt_version(config.prompt_style),
                       **ground_truth(record), **_carry_extra(record.extra)},
    }


def prompt_token_count(tokenizer: Any, record: AdRecord, style: str = "full") -> int:
    """Tokens of the rendered chat prompt, generation prompt included (what the rollout sees)."""
    ids = tokenizer.apply_chat_template(build_messages(record, style), add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in newer transformers
        ids = ids["input_ids"]
    return len(ids)


def build_parser() -> argparse.ArgumentParser:
    d = DatasetConfig()
    p = argparse.ArgumentParser(
        prog="build_dataset",
        description="Turn ad records into verl RL parquet files (train.parquet, val.parquet) for RELATE.",
        epilog=(
            "Input columns: id, query, bidword, selling_points (required); landing_page, industry, "
            "language (zh/en, detected from the text when absent), title, description (optional "
            "reference ad). Any other column is carried into extra_info. Invalid rows stop the run "
            "with exit code 2 naming file, row and field, unless --skip-invalid."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--input", type=Path, default=SAMPLE_RECORDS, help="records file: .jsonl, .csv or .parquet (default: the bundled sample)")
    p.add_argument("--output-dir", type=Path, required=True, help="where train.parquet, val.parquet and summary.json go")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of records (by id hash) in val.parquet")
    p.add_argument("--seed", type=int, default=d.seed, help="salt of the id hash that assigns the split")
    p.add_argument("--sp-separator", default=d.selling_point_separator, help="separator when selling_points is one string")
    p.add_argument("--prompt-style", choices=PROMPT_STYLES, default=d.prompt_style,
                   help="full: every rule spelled out; compact: the same fields and format in far fewer tokens (small CPU policies)")
    p.add_argument("--data-source", default=d.data_source, help="value of verl's data_source column")
    p.add_argument("--skip-invalid", action="store_true", help="write rejected rows with their reason to OUTPUT_DIR/rejected.jsonl and go on")
    p.add_argument("--tokenizer", help="tokenizer folder or name; with --max-prompt-tokens, drops prompts longer than that")
    p.add_argument("--max-prompt-tokens", type=int, help="drop (and list in overlong.jsonl) prompts over this many tokens")
    return p


@dataclass(frozen=True)
class BuildDatasetSettings:
    """Everything one ``build_dataset`` run reads (one CLI flag each, see :func:`build_parser`)."""

    output_dir: Path  # train.parquet, val.parquet, summary.json (and rejected.jsonl, overlong.jsonl) go here
    input: Path = SAMPLE_RECORDS  # records file: .jsonl, .csv or .parquet
    dataset: DatasetConfig = field(default_factory=DatasetConfig)  # split, prompt style, verl columns
    skip_invalid: bool = False  # list rejected rows in rejected.jsonl and go on, instead of exit 2
    tokenizer: str | None = None  # with max_prompt_tokens: drop prompts longer than that
    max_prompt_tokens: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.dataset.val_fraction < 1.0:
            raise ValueError("--val-fraction must be in [0, 1)")
        if (self.tokenizer is None) != (self.max_prompt_tokens is None):
            raise ValueError("--tokenizer and --max-prompt-tokens go together")


def settings_from_args(args: argparse.Namespace) -> BuildDatasetSettings:
    """The run settings of parsed CLI arguments; ValueError names the flag of a bad value."""
    dataset = DatasetConfig(val_fraction=args.val_fraction, seed=args.seed, data_source=args.data_source,
                            selling_point_separator=args.sp_separator, prompt_style=args.prompt_style)
    return BuildDatasetSettings(output_dir=args.output_dir, input=args.input, dataset=dataset,
                                skip_invalid=args.skip_invalid, tokenizer=args.tokenizer,
                                max_prompt_tokens=args.max_prompt_tokens)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` and :func:`run` it; a bad flag value exits 2 with the usage (argparse's error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    return run(settings)


def run(settings: BuildDatasetSettings) -> dict[str, Any]:
    """Read, validate and split the records, write the RL parquet files; returns the summary
    (also written to ``summary.json``). Exit 2 (SystemExit) on an invalid row unless skip_invalid."""
    config = settings.dataset
    records: list[AdRecord] = []
    rejected: list[dict[str, Any]] = []
    seen: set[str] = set()
    duplicates: list[str] = []
    rows_read = 0
    try:
        rows = read_rows(settings.input)
        for row_no, raw in tqdm(rows, desc="records", unit="row", disable=None):
            rows_read += 1
            try:
                if isinstance(raw, RecordError):
                    raise raw
                record = parse_record(raw, source=str(settings.input), row=row_no, selling_point_separator=config.selling_point_separator)
            except RecordError as err:
                handle_invalid(err, settings.skip_invalid, rejected, raw)
                continue
            if record.id in seen:
                duplicates.append(record.id)  # first occurrence wins
                continue
            seen.add(record.id)
            records.append(record)
    except RecordError as err:  # unreadable file type
        handle_invalid(err, False, rejected)
    except FileNotFoundError:
        from data_prep.common import fail

        fail(f"{settings.input}: no such file")

    overlong: list[dict[str, Any]] = []
    if settings.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer)
        kept = []
        for record in tqdm(records, desc="prompt lengths", unit="prompt", disable=None):
            n = prompt_token_count(tokenizer, record, config.prompt_style)
            if n > settings.max_prompt_tokens:
                overlong.append({"id": record.id, "prompt_tokens": n, "max_prompt_tokens": settings.max_prompt_tokens})
            else:
                kept.append(record)
        records = kept

    fractions = {"val": config.val_fraction}
    by_split: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    for record in records:
        split = assign_split(record.id, config.seed, fractions)
        by_split[split].append(to_rl_row(record, config, split, len(by_split[split])))

    out = settings.output_dir
    mixed = unify_extra_types(by_split["train"] + by_split["val"])
    for split, rows in by_split.items():
        write_parquet(rows, out / f"{split}.parquet")
    if settings.skip_invalid:
        write_jsonl(rejected, out / "rejected.jsonl")
    if overlong:
        write_jsonl(overlong, out / "overlong.jsonl")

    languages = Counter(r.language for r in records)
    summary = {
        "input": str(settings.input),
        "prompt_style": config.prompt_style,
        "rows_read": rows_read,
        "written": {split: len(rows) for split, rows in by_split.items()},
        "rejected": len(rejected),
        "duplicates": len(duplicates),
        "overlong": len(overlong),
        "languages": dict(sorted(languages.items())),
        "extra_columns_stringified": mixed,
        "outputs": {split: str(out / f"{split}.parquet") for split in by_split},
    }
    write_json(summary, out / "summary.json")
    print(f"build_dataset: {settings.input}")
    print(f"  rows read      {rows_read}")
    print(f"  written        train {summary['written']['train']}, val {summary['written']['val']}  ({', '.join(f'{k} {v}' for k, v in summary['languages'].items())})")
    print(f"  rejected       {len(rejected)}" + (f"  -> {out / 'rejected.jsonl'}" if settings.skip_invalid else ""))
    print(f"  duplicates     {len(duplicates)}" + (f"  (ids: {', '.join(duplicates[:5])}{' ...' if len(duplicates) > 5 else ''})" if duplicates else ""))
    if settings.tokenizer:
        print(f"  overlong       {len(overlong)} prompts over {settings.max_prompt_tokens} tokens" + (f"  -> {out / 'overlong.jsonl'}" if overlong else ""))
    if mixed:
        print(f"  note           extra columns with mixed types stored as text: {', '.join(mixed)}")
    print(f"  outputs        {out / 'train.parquet'}, {out / 'val.parquet'}")
    return summary


if __name__ == "__main__":
    main()
