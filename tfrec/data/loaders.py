"""Loaders that turn public recommendation datasets into the canonical schema.

Each loader reads a local folder, or, given none, the public original from the
cache, downloading it when the machine is online.  Every loader returns a
:class:`RawDataset` whose tables use the column names of :mod:`tfrec.data.schema`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable

import pandas as pd

from tfrec.data import schema
from tfrec.data.download import ensure_files
from tfrec.errors import TfrecError
from tfrec.data.raw import (RawDataset, check_unique, clean_ids, interactions, read_text, require_file,  # noqa: F401
                            sha256, split_table, to_int)
from tfrec.data.table_loader import load_table



# ---------------------------------------------------------------------------
# MovieLens

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"


def _title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Splits 'Title (1995)' into the title and the year (nullable Int32)."""
    extracted = titles.astype(str).str.extract(r"^(.*?)\s*\((\d{4})\)\s*$")
    year = pd.to_numeric(extracted[1], errors="coerce").astype("Int32")
    title = extracted[0].where(extracted[0].notna(), titles.astype(str).str.strip())
    return title.astype(object), year


def load_movielens_100k(path: str | None = None) -> RawDataset:
    """MovieLens 100K: ``u.data`` (tab), ``u.item`` (latin-1, ``|``), ``u.user`` (``|``)."""
    source = "movielens-100k"
    folder = path or ensure_files(
        source, {"ml-100k.zip": _GROUPLENS + "ml-100k.zip"}, ["u.data", "u.item", "u.user"],
        archive_subdir="ml-100k", hint="pass --path DIR with u.data, u.item and u.user (the ml-100k folder)",
    )
    data_path = require_file(folder, "u.data", source)
    item_path = require_file(folder, "u.item", source)
    user_path = os.path.join(folder, "u.user")

    ratings = split_table(data_path, read_text(data_path, "ascii"), "\t", ["u", "i", "r", "t"])
    inter = interactions(
        ratings["u"], ratings["i"],
        to_int(ratings, "t", data_path, "timestamp"),
        to_int(ratings, "r", data_path, "rating"),
    )

    names = ["item_id", "title", "release_date", "video_release_date", "url"] + list(ML100K_GENRES)
    raw_items = split_table(item_path, read_text(item_path, "latin-1"), "|", names)
    title, year = _title_year(raw_items["title"])
    dates = pd.to_datetime(raw_items["release_date"], format="%d-%b-%Y", errors="coerce")
    year = year.fillna(dates.dt.year.astype("Int32"))
    flags = raw_items[list(ML100K_GENRES)].to_numpy() == "1"
    genres = [[g for g, on in zip(ML100K_GENRES, row) if on] for row in flags]
    items = pd.DataFrame(
        {schema.ITEM_ID: clean_ids(raw_items["item_id"]), schema.TITLE: title, schema.YEAR: year,
         schema.GENRES: genres}
    )
    check_unique(items, schema.ITEM_ID, item_path)

    users = None
    checksums = {"u.data": sha256(data_path), "u.item": sha256(item_path)}
    if os.path.isfile(user_path):
        raw_users = split_table(user_path, read_text(user_path, "latin-1"), "|",
                                 ["user_id", "age", "gender", "occupation", "zip"])
        users = pd.DataFrame(
            {schema.USER_ID: clean_ids(raw_users["user_id"]),
             schema.AGE: to_int(raw_users, "age", user_path).astype("Int32"),
             schema.GENDER: raw_users["gender"].astype(object),
             schema.OCCUPATION: raw_users["occupation"].astype(object),
             schema.ZIP_CODE: raw_users["zip"].astype(object)}
        )
        check_unique(users, schema.USER_ID, user_path)
        checksums["u.user"] = sha256(user_path)
    return RawDataset(source, inter, items, users, checksums, folder)


def load_movielens_1m(path: str | None = None) -> RawDataset:
    """MovieLens 1M: ``ratings.dat``, ``movies.dat``, ``users.dat``, all ``::``-separated (latin-1)."""
    source = "movielens-1m"
    folder = path or ensure_files(
        source, {"ml-1m.zip": _GROUPLENS + "ml-1m.zip"}, ["ratings.dat", "movies.dat", "users.dat"],
        archive_subdir="ml-1m", hint="pass --path DIR with ratings.dat, movies.dat and users.dat",
    )
    r_path = require_file(folder, "ratings.dat", source)
    m_path = require_file(folder, "movies.dat", source)
    u_path = os.path.join(folder, "users.dat")
    ratings = split_table(r_path, read_text(r_path, "latin-1"), "::", ["u", "i", "r", "t"])
    inter = interactions(ratings["u"], ratings["i"], to_int(ratings, "t", r_path, "timestamp"),
                          to_int(ratings, "r", r_path, "rating"))
    movies = split_table(m_path, read_text(m_path, "latin-1"), "::", ["item_id", "title", "genres"])
    title, year = _title_year(movies["title"])
    items = pd.DataFrame(
        {schema.ITEM_ID: clean_ids(movies["item_id"]), schema.TITLE: title, schema.YEAR: year,
         schema.GENRES: [[g for g in s.strip().split("|") if g] for s in movies["genres"]]}
    )
    check_unique(items, schema.ITEM_ID, m_path)
    checksums = {"ratings.dat": sha256(r_path), "movies.dat": sha256(m_path)}
    users = None
    if os.path.isfile(u_path):
        raw = split_table(u_path, read_text(u_path, "latin-1"), "::", ["user_id", "gender", "age", "occupation", "zip"])
        users = pd.DataFrame(
            {schema.USER_ID: clean_ids(raw["user_id"]), schema.GENDER: raw["gender"].astype(object),
             schema.AGE: to_int(raw, "age", u_path).astype("Int32"),
             schema.OCCUPATION: raw["occupation"].astype(object), schema.ZIP_CODE: raw["zip"].astype(object)}
        )
        check_unique(users, schema.USER_ID, u_path)
        checksums["users.dat"] = sha256(u_path)
    return RawDataset(source, inter, items, users, checksums, folder)


def read_csv(path: str, required: list[str], encoding: str = "utf-8") -> pd.DataFrame:
    text = read_text(path, encoding)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, csv.Error) as e:
        raise TfrecError(f"{path} is not a readable CSV file ({str(e).splitlines()[0]})") from None
    except pd.errors.EmptyDataError:
        raise TfrecError(f"{path} is empty") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TfrecError(
            f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(it has {', '.join(map(str, df.columns[:8]))}); wrong separator or wrong file?"
        )
    return df


def load_movielens_latest_small(path: str | None = None) -> RawDataset:
    """MovieLens latest-small: ``ratings.csv``, ``movies.csv`` (``|``-separated genres), ``tags.csv``."""
    source = "movielens-latest-small"
    folder = path or ensure_files(
        source, {"ml-latest-small.zip": _GROUPLENS + "ml-latest-small.zip"}, ["ratings.csv", "movies.csv"],
        archive_subdir="ml-latest-small", hint="pass --path DIR with ratings.csv and movies.csv",
    )
    r_path = require_file(folder, "ratings.csv", source)
    m_path = require_file(folder, "movies.csv", source)
    t_path = os.path.join(folder, "tags.csv")
    ratings = read_csv(r_path, ["userId", "movieId", "rating", "timestamp"])
    inter = interactions(ratings["userId"], ratings["movieId"], to_int(ratings, "timestamp", r_path),
                          pd.to_numeric(ratings["rating"], errors="coerce"))
    if inter[schema.RATING].isna().any():
        raise TfrecError(f"{r_path}: column rating holds values that are not numbers")
    movies = read_csv(m_path, ["movieId", "title", "genres"])
    title, year = _title_year(movies["title"])
    genres = [[g for g in str(s).split("|") if g and g != "(no genres listed)"] for s in movies["genres"]]
    items = pd.DataFrame({schema.ITEM_ID: clean_ids(movies["movieId"]), schema.TITLE: title,
                          schema.YEAR: year, schema.GENRES: genres})
    check_unique(items, schema.ITEM_ID, m_path)
    checksums = {"ratings.csv": sha256(r_path), "movies.csv": sha256(m_path)}
    if os.path.isfile(t_path):
        tags = read_csv(t_path, ["userId", "movieId", "tag"])
        tags["tag"] = tags["tag"].fillna("").str.strip().str.lower()
        grouped = tags[tags["tag"] != ""].groupby("movieId")["tag"].apply(lambda s: sorted(set(s)))
        items[schema.TAGS] = [grouped.get(i, []) for i in items[schema.ITEM_ID]]
        checksums["tags.csv"] = sha256(t_path)
    return RawDataset(source, inter, items, None, checksums, folder)


# ---------------------------------------------------------------------------
# Amazon (S3-Rec / P5 preprocessing)

_S3REC = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/"
S3REC_NAMES = ("Beauty", "Sports_and_Outdoors", "Toys_and_Games", "Yelp", "LastFM")


def _find_s3rec_name(folder: str) -> str:
    names = sorted(f[:-4] for f in os.listdir(folder)
                   if f.endswith(".txt") and not f.endswith("_sample.txt") and f[0] != "." and f.lower() != "readme.txt")
    if not names:
        raise TfrecError(f"{folder} holds no <Name>.txt sequence file of the S3-Rec format")
    if len(names) > 1:
        raise TfrecError(f"{folder} holds several sequence files ({', '.join(names)}); pass --name to pick one")
    return names[0]


def load_amazon_s3rec(path: str | None = None, name: str | None = None) -> RawDataset:
    """S3-Rec/P5 sequential files: ``<Name>.txt`` (``user item1 item2 ...`` in time order) and
    ``<Name>_item2attributes.json``.  The position in the sequence becomes the timestamp."""
    source = "amazon-s3rec"
    if path is None:
        name = name or "Beauty"
        if name not in S3REC_NAMES:
            raise TfrecError(f"unknown S3-Rec dataset {name!r}; known: {', '.join(S3REC_NAMES)}")
        path = ensure_files(
            f"{source}-{name}",
            {f"{name}.txt": _S3REC + f"{name}.txt", f"{name}_item2attributes.json": _S3REC + f"{name}_item2attributes.json"},
            [f"{name}.txt"], hint=f"pass --path DIR with {name}.txt and {name}_item2attributes.json",
        )
    if not os.path.isdir(path):
        raise TfrecError(f"{path} is not a folder")
    name = name or _find_s3rec_name(path)
    seq_path = require_file(path, f"{name}.txt", source)
    users, items, order = [], [], []
    for lineno, line in enumerate(read_text(seq_path, "utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise TfrecError(f"{seq_path} line {lineno} has a user but no items; expected 'user item1 item2 ...'")
        users.extend([parts[0]] * (len(parts) - 1))
        items.extend(parts[1:])
        order.extend(range(len(parts) - 1))
    if not users:
        raise TfrecError(f"{seq_path} is empty")
    inter = interactions(users, items, order)
    checksums = {f"{name}.txt": sha256(seq_path)}
    attr_path = os.path.join(path, f"{name}_item2attributes.json")
    item_table = None
    if os.path.isfile(attr_path):
        try:
            mapping = json.loads(read_text(attr_path, "utf-8"))
        except json.JSONDecodeError as e:
            raise TfrecError(f"{attr_path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(mapping, dict):
            raise TfrecError(f"{attr_path} must hold one JSON object mapping item ids to attribute lists")
        item_table = pd.DataFrame(
            {schema.ITEM_ID: [str(k).strip() for k in mapping],
             schema.ATTRIBUTES: [[str(a) for a in (v if isinstance(v, list) else [v])] for v in mapping.values()]}
        )
        checksums[f"{name}_item2attributes.json"] = sha256(attr_path)
    return RawDataset(f"{source}:{name}", inter, item_table, None, checksums, path, timestamp_kind="order")


LOADERS: dict[str, Callable[..., RawDataset]] = {
    "movielens-100k": load_movielens_100k,
    "movielens-1m": load_movielens_1m,
    "movielens-latest-small": load_movielens_latest_small,
    "amazon-s3rec": load_amazon_s3rec,
}
# Folder names under TFREC_DATA_DIR that hold each source's local copy.
LOCAL_FOLDERS = {
    "movielens-100k": "ml-100k",
    "movielens-1m": "ml-1m",
    "movielens-latest-small": "ml-latest-small",
    "amazon-s3rec": "amazon-beauty",
}
TABLE_SOURCES = ("csv", "parquet")
DATA_DIR_ENV = "TFREC_DATA_DIR"


def local_copy(source: str) -> str | None:
    """The local copy of a named source under ``$TFREC_DATA_DIR``, when there is one."""
    root = os.environ.get(DATA_DIR_ENV)
    folder = LOCAL_FOLDERS.get(source)
    if root and folder and os.path.isdir(os.path.join(root, folder)):
        return os.path.join(root, folder)
    return None


def load(source: str, path: str | None = None, **kwargs) -> RawDataset:
    """Loads a named source (``movielens-100k``, ``amazon-s3rec``, ``csv``...) into a RawDataset.

    Without `path`, a named source is read from its local copy under ``$TFREC_DATA_DIR``
    when there is one, else from the download cache (downloading the original on first use).
    """
    if source in TABLE_SOURCES:
        if path is None:
            raise TfrecError(f"source {source!r} needs a path to the interactions file")
        return load_table(path, **kwargs)
    if source not in LOADERS:
        raise TfrecError(f"unknown data source {source!r}; known: {', '.join(list(LOADERS) + list(TABLE_SOURCES))}")
    if path is None:
        path = local_copy(source)
    elif not os.path.isdir(path):
        raise TfrecError(f"{path} is not a folder; {source} reads a folder of its original files")
    return LOADERS[source](path, **kwargs)
