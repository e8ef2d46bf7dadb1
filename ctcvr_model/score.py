"""Score generated ads with a trained CTCVR model.

    python -m ctcvr_model.score --model-dir models/ctcvr --input gen.jsonl --output scored.jsonl

Each input line is a JSON object with ``query``, ``bidword``, ``selling_points`` (list of strings,
or one '|'-separated string), ``title`` and ``description``, optionally ``industry`` (absent, null,
empty or not seen in training: the model's "unknown" bucket); every other key is copied through.
Each output line is the input object plus ``p_ctr`` and ``p_ctcvr`` (and ``p_cvr`` with --with-cvr).
A malformed line stops the run with an error naming the file, line and field.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ctcvr_model.cli import EXIT_INVALID_INPUT, add_device_flag, command_parser
from ctcvr_model.features import check_item
from ctcvr_model.scorer import CTCVRScorer
from ctcvr_model.schema import CTCVRError, ItemError
from relate_common.jsonio import json_lines


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """Parse and validate a JSONL file of items; ItemError names the (1-based) line and field."""
    path = Path(path)
    if not path.is_file():
        raise ItemError(0, None, "no such file", source=str(path))
    items = []
    with path.open(encoding="utf-8") as f:
        for line_no, obj in json_lines(f):
            if isinstance(obj, json.JSONDecodeError):
                raise ItemError(line_no, None, f"not valid JSON ({obj.msg} at column {obj.colno})", source=str(path))
            check_item(obj, line_no, source=str(path))
            items.append(obj)
    return items


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("score", "Add p_ctr and p_ctcvr (predicted by a trained CTCVR model) to every row of a JSONL file.")
    p.add_argument("--model-dir", required=True, help="directory written by `python -m ctcvr_model.train`")
    p.add_argument("--input", required=True, help="JSONL rows with query, bidword, selling_points, title, description")
    p.add_argument("--output", required=True, help="JSONL to write (input rows plus p_ctr, p_ctcvr)")
    p.add_argument("--model", default=None, choices=("esmm", "naive", "logreg"), help="sub-model to score with (default: esmm)")
    p.add_argument("--batch-size", type=int, default=256, help="items per scoring call")
    add_device_flag(p)
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (optional)")
    p.add_argument("--with-cvr", action="store_true", help="also write p_cvr")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@dataclass(frozen=True)
class ScoreRun:
    """The settings of one ``python -m ctcvr_model.score`` run (the CLI's flags, typed)."""

    model_dir: str  # directory written by ``python -m ctcvr_model.train``
    input: str  # JSONL rows with query, bidword, selling_points, title, description
    output: str  # JSONL to write (input rows plus p_ctr, p_ctcvr)
    model: str | None = None  # sub-model to score with; None: esmm
    batch_size: int = 256  # items per scoring call
    device: str | None = None  # None: CUDA when available, else CPU
    cache_dir: str | None = None  # embedding cache folder
    with_cvr: bool = False  # also write p_cvr
    progress: bool = True  # tqdm bar


def run(config: ScoreRun) -> int:
    """Score ``config.input`` into ``config.output``; returns the exit code (0 ok, 2 invalid input)."""
    try:
        items = read_items(config.input)
        scorer = CTCVRScorer.load(config.model_dir, device=config.device, model=config.model, cache_dir=config.cache_dir)
        out_path = Path(config.output)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for start in tqdm(range(0, len(items), config.batch_size), desc="score", disable=not config.progress):
                chunk = items[start : start + config.batch_size]
                pred = scorer.predict(chunk)
                for i, item in enumerate(chunk):
                    row = dict(item, p_ctr=float(pred["p_ctr"][i]), p_ctcvr=float(pred["p_ctcvr"][i]))
                    if config.with_cvr:
                        row["p_cvr"] = float(pred["p_cvr"][i])
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(out_path)  # never leave a half-written output behind
    except CTCVRError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    print(f"scored {len(items)} rows -> {out_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI: parse the flags, build the config, then :func:`run`; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(ScoreRun(model_dir=args.model_dir, input=args.input, output=args.output, model=args.model,
                        batch_size=args.batch_size, device=args.device, cache_dir=args.cache_dir,
                        with_cvr=args.with_cvr, progress=not args.quiet))

if __name__ == "__main__":
    sys.exit(main())
