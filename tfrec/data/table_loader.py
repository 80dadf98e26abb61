"""``csv`` and ``parquet`` sources: any interactions table, its columns mapped onto the canonical schema."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import pandas as pd

from tfrec.data import schema
from tfrec.errors import TfrecError
from tfrec.data.raw import RawDataset, check_unique, clean_ids, interactions, read_text, sha256


# ---------------------------------------------------------------------------
# Generic tables


def parse_timestamps(series: pd.Series, where: str) -> np.ndarray:
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().all():
        return numeric.to_numpy(dtype=np.float64).astype(np.int64)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna() & series.notna()
    if bad.any():
        value = series[bad].iloc[0]
        raise TfrecError(f"{where}: timestamp {value!r} is neither a number nor a date")
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def read_frame(obj, what: str, sep: str = ",") -> tuple[pd.DataFrame, str, dict[str, str]]:
    """A table from a DataFrame, a ``.parquet`` file or a CSV/TSV file (all columns str): (frame, where, checksums)."""
    if isinstance(obj, pd.DataFrame):
        return obj.copy(), f"the {what} DataFrame", {}
    if not os.path.isfile(obj):
        raise TfrecError(f"{obj} does not exist")
    sums = {os.path.basename(obj): sha256(obj)}
    if obj.endswith(".parquet"):
        try:
            return pd.read_parquet(obj), obj, sums
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise TfrecError(f"{obj} is not a readable parquet file ({type(e).__name__})") from None
    file_sep = "\t" if obj.endswith(".tsv") else sep
    text = read_text(obj, "utf-8")
    try:
        df = pd.read_csv(io.StringIO(text), sep=file_sep, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise TfrecError(f"{obj} is empty") from None
    except (pd.errors.ParserError, csv.Error) as e:
        raise TfrecError(f"{obj} is not a readable table ({str(e).splitlines()[0]})") from None
    return df, obj, sums


def read_side(obj, key: str, what: str, columns: dict[str, str], checksums: dict[str, str],
              list_columns: tuple[str, ...] = (), list_sep: str = "|", sep: str = ",") -> pd.DataFrame | None:
    """An item or user feature table, renamed by `columns`, ids cleaned and unique, list columns split;
    its checksum is added to `checksums`."""
    if obj is None:
        return None
    inv = {src: dst for dst, src in columns.items()}
    table, twhere, sums = read_frame(obj, what, sep)
    checksums.update(sums)
    table = table.rename(columns=inv)
    if key not in table.columns:
        raise TfrecError(f"{twhere} lacks the column {key} (from {columns.get(key, key)!r})")
    table[key] = clean_ids(table[key])
    check_unique(table, key, twhere)
    for col in list_columns:
        if col in table.columns:
            table[col] = [[v.strip() for v in str(s).split(list_sep) if v.strip()] if isinstance(s, str) else
                          (list(s) if isinstance(s, (list, tuple, np.ndarray)) else []) for s in table[col]]
    return table


def load_table(
    data: str | pd.DataFrame,
    columns: dict[str, str] | None = None,
    items: str | pd.DataFrame | None = None,
    users: str | pd.DataFrame | None = None,
    list_columns: tuple[str, ...] = (),
    list_sep: str = "|",
    sep: str = ",",
    order_as_time: bool = False,
) -> RawDataset:
    """Interactions from a CSV or parquet file or a DataFrame, with a column mapping.

    Args:
        data: a ``.csv``/``.tsv``/``.parquet`` path or a DataFrame of interactions.
        columns: canonical name -> source column, e.g. ``{"user_id": "userId"}``; the same
            mapping renames item and user tables.
        list_columns: feature columns holding ``list_sep``-separated values.
        order_as_time: with no timestamp column, the row order within a user is the time.
    """
    columns = dict(columns or {})

    inv = {src: dst for dst, src in columns.items()}
    df, where, checksums = read_frame(data, "interactions", sep)
    df = df.rename(columns=inv)
    required = [schema.USER_ID, schema.ITEM_ID] + ([] if order_as_time else [schema.TIMESTAMP])
    missing = [c for c in required if c not in df.columns]
    if missing:
        wanted = ", ".join(f"{c} (from {columns.get(c, c)!r})" for c in missing)
        raise TfrecError(f"{where} lacks the column {wanted}; it has {', '.join(map(str, df.columns[:10]))}")
    if df.empty:
        raise TfrecError(f"{where} holds no rows")
    kind = "unix_seconds"
    if order_as_time and schema.TIMESTAMP not in df.columns:
        ts = df.groupby(schema.USER_ID, sort=False).cumcount().to_numpy(dtype=np.int64)
        kind = "order"
    else:
        ts = parse_timestamps(df[schema.TIMESTAMP], where)
    rating = None
    if schema.RATING in df.columns:
        rating = pd.to_numeric(df[schema.RATING], errors="coerce")
        if (rating.isna() & df[schema.RATING].notna()).any():
            raise TfrecError(f"{where}: column {schema.RATING} holds values that are not numbers")
    inter = interactions(df[schema.USER_ID].where(df[schema.USER_ID].notna(), None),
                          df[schema.ITEM_ID].where(df[schema.ITEM_ID].notna(), None), ts, rating)
    # Missing ids stay missing (not the string 'None') so that cleaning drops them.
    inter.loc[df[schema.USER_ID].isna().to_numpy(), schema.USER_ID] = None
    inter.loc[df[schema.ITEM_ID].isna().to_numpy(), schema.ITEM_ID] = None

    item_table = read_side(items, schema.ITEM_ID, "items", columns, checksums, list_columns, list_sep, sep)
    user_table = read_side(users, schema.USER_ID, "users", columns, checksums, list_columns, list_sep, sep)
    path = data if isinstance(data, str) else None
    source = "parquet" if isinstance(data, str) and data.endswith(".parquet") else (
        "dataframe" if isinstance(data, pd.DataFrame) else "csv")
    return RawDataset(source, inter, item_table, user_table, checksums, path, timestamp_kind=kind)
