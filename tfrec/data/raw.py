"""The raw dataset every loader returns, and the checks and parsers the loaders share."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pandas as pd

from tfrec.data import schema
from tfrec.errors import TfrecError


@dataclasses.dataclass
class RawDataset:
    """Tables in the canonical schema, before cleaning and splitting.

    interactions: ``user_id``, ``item_id`` (str), ``timestamp`` (int64), optional ``rating``.
    items: ``item_id`` plus feature columns (list-valued columns hold lists of str), or None.
    users: ``user_id`` plus feature columns, or None.
    checksums: input file name -> sha256, for ``dataset.json``.
    """

    source: str
    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    checksums: dict[str, str] = dataclasses.field(default_factory=dict)
    path: str | None = None
    timestamp_kind: str = "unix_seconds"  # or "order": position in the user's sequence
    # How the data was derived from the source files besides preparing them, e.g. ``{"forgotten_users": 2}``
    # after ``tfrec data forget`` (counts only: never the ids).
    derived: dict = dataclasses.field(default_factory=dict)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def require_file(folder: str, name: str, source: str) -> str:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise TfrecError(f"{path} is missing: a {source} folder must hold {name}")
    return path


def read_text(path: str, encoding: str) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise TfrecError(f"{path} is not valid {encoding} text (first bad byte at offset {e.start})") from None


def split_table(path: str, text: str, sep: str, names: list[str], min_fields: int | None = None) -> pd.DataFrame:
    """Parses separator-delimited text with no header into string columns, checking field counts."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise TfrecError(f"{path} is empty")
    want = len(names)
    rows = [ln.split(sep) for ln in lines]
    for i, r in enumerate(rows):
        if len(r) < (min_fields or want) or (min_fields is None and len(r) != want):
            shown = "tab" if sep == "\t" else repr(sep)
            raise TfrecError(
                f"{path} line {i + 1} has {len(r)} {shown}-separated fields where {want} were expected "
                f"({', '.join(names)}); wrong separator or wrong file?"
            )
    if min_fields is not None:  # keep the first `want` fields, joining the overflow into the last
        rows = [r[: want - 1] + [sep.join(r[want - 1:])] for r in rows]
    return pd.DataFrame(rows, columns=names, dtype=object)


def to_int(df: pd.DataFrame, col: str, path: str, what: str | None = None) -> pd.Series:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() & df[col].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TfrecError(f"{path}: {what or col} {df[col].iloc[i]!r} on row {i + 1} is not a number")
    return values


def clean_ids(series: pd.Series) -> pd.Series:
    return series.astype(str).str.strip()


def interactions(user, item, ts, rating=None) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            schema.USER_ID: clean_ids(pd.Series(user)).to_numpy(dtype=object),
            schema.ITEM_ID: clean_ids(pd.Series(item)).to_numpy(dtype=object),
            schema.TIMESTAMP: pd.Series(ts).to_numpy(dtype=np.int64),
        }
    )
    if rating is not None:
        df[schema.RATING] = pd.Series(rating).to_numpy(dtype=np.float32)
    return df


def check_unique(df: pd.DataFrame, col: str, path: str) -> None:
    dup = df[col].duplicated()
    if dup.any():
        raise TfrecError(f"{path}: {col} {df[col][dup].iloc[0]!r} appears more than once")
