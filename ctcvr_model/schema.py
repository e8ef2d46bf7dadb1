"""The CTCVR training-table schema, its validating reader, and the package's exceptions.

A table (parquet, one row per impression or per aggregated group of identical impressions) has::

    record_id (str), query (str), bidword (str), selling_points (list<str>), title (str),
    description (str), industry (str, optional: a model feature), language ("zh"/"en"), click (0/1),
    conversion (0/1, 1 only if click: it IS the click-and-convert label), weight (float), split
    optional simulator truth: truth_p_click, truth_p_cvr, truth_p_ctcvr (never used as features)

``click`` and ``conversion`` may also be fractions in [0, 1] on aggregated rows (a group of
``weight`` impressions of which a fraction clicked); everything downstream treats a row as
``weight * label`` positives and ``weight * (1 - label)`` negatives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TEXT_COLUMNS = ("query", "bidword", "title", "description")
LABEL_COLUMNS = ("click", "conversion")
REQUIRED_COLUMNS = TEXT_COLUMNS + ("selling_points",) + LABEL_COLUMNS
TRUTH_COLUMNS = ("truth_p_click", "truth_p_cvr", "truth_p_ctcvr")
# Fields a scoring item must carry (a subset of a table row).
ITEM_FIELDS = ("query", "bidword", "selling_points", "title", "description")
# Fields a scoring item may carry: the advertiser's industry (absent / empty / unseen = "unknown").
OPTIONAL_ITEM_FIELDS = ("industry",)


class CTCVRError(Exception):
    """Base class of every error this package raises on purpose."""


class TableError(CTCVRError, ValueError):
    """A training/evaluation table that does not fit the schema; says which file, column, row."""


class ItemError(CTCVRError, ValueError):
    """A scoring item (row of a JSONL file or a Mapping) with a missing or mistyped field."""

    def __init__(self, row: int, field: str | None, reason: str, source: str | None = None):
        self.row, self.field, self.reason, self.source = row, field, reason, source
        where = (f"{source}: " if source else "") + f"row {row}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {reason}")


class ModelDirError(CTCVRError):
    """A model directory that cannot be loaded: names the directory, the problem and the fix."""

    def __init__(self, model_dir: str | Path, problem: str, fix: str):
        self.model_dir, self.problem, self.fix = str(model_dir), problem, fix
        super().__init__(f"cannot load CTCVR model from '{model_dir}': {problem}. {fix}")


def normalise_selling_points(value: object) -> list[str]:
    """A list of strings from a list/array, a '|'-separated string, or None/NaN (empty list)."""
    if value is None:
        return []
    if isinstance(value, float) and np.isnan(value):
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split("|") if p.strip()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(p) for p in value]
    raise TypeError(f"selling_points must be a list of strings or a string, got {type(value).__name__}")


def validate_table(df: pd.DataFrame, source: str = "<table>") -> pd.DataFrame:
    """Check columns, types and label consistency; return a cleaned copy.

    Cleaning: text NaN -> "", industry NaN -> "" (when the column exists), selling_points -> list[str],
    weight defaults to 1.0, labels -> float.
    Raises TableError naming the column (and the first bad row) on any violation.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise TableError(
            f"{source}: missing column(s) {missing}; a CTCVR table needs {list(REQUIRED_COLUMNS)} "
            "(build one with `python -m data_prep.build_ctcvr_table`)"
        )
    if len(df) == 0:
        raise TableError(f"{source}: the table has no rows")
    df = df.copy()
    for col in TEXT_COLUMNS + OPTIONAL_ITEM_FIELDS:
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    try:
        df["selling_points"] = [normalise_selling_points(v) for v in df["selling_points"]]
    except TypeError as e:
        raise TableError(f"{source}: column 'selling_points': {e}") from None
    if "weight" not in df.columns:
        df["weight"] = 1.0
    for col in LABEL_COLUMNS + ("weight",):
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise TableError(f"{source}: column '{col}' row {int(bad[0])}: not a finite number ({df[col].iloc[bad[0]]!r})")
        df[col] = values
    for col in LABEL_COLUMNS:
        bad = np.flatnonzero((df[col] < 0) | (df[col] > 1))
        if bad.size:
            raise TableError(f"{source}: column '{col}' row {int(bad[0])}: label must lie in [0, 1]")
    bad = np.flatnonzero(df["weight"] <= 0)
    if bad.size:
        raise TableError(f"{source}: column 'weight' row {int(bad[0])}: weight must be > 0")
    # conversion is click-AND-convert: a conversion without a click means the table was built with
    # the post-click CVR label, which would silently train the wrong target.
    bad = np.flatnonzero(df["conversion"] > df["click"] + 1e-9)
    if bad.size:
        raise TableError(
            f"{source}: row {int(bad[0])}: conversion > click; 'conversion' must be the click-and-convert "
            "label (1 only on clicked impressions)"
        )
    for col in TRUTH_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float64)
    return df.reset_index(drop=True)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a parquet (or CSV / JSONL) CTCVR table and validate it (see :func:`validate_table`)."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix == ".csv":
            df = pd.read_csv(path)
        elif suffix in (".jsonl", ".json"):
            df = pd.read_json(path, lines=True)
        else:
            raise TableError(f"{path}: unsupported file type '{suffix}' (use .parquet, .csv or .jsonl)")
    except TableError:
        raise
    except Exception as e:  # pyarrow/pandas raise many types; the user needs the file name
        raise TableError(f"{path}: cannot read table: {e}") from e
    return validate_table(df, source=str(path))


def has_truth(df: pd.DataFrame) -> bool:
    """True when all three simulator truth columns are present and fully populated."""
    return all(c in df.columns and df[c].notna().all() for c in TRUTH_COLUMNS)
