"""Prepared dataset folders: what `tfrec data prepare` writes and every later step reads.

Layout::

    DIR/dataset.json            schema, source, input checksums, settings
    DIR/stats.json              counts, density, sequence-length percentiles
    DIR/interactions.parquet    cleaned, chronological; ids, indices, timestamp[, rating]
    DIR/items.parquet           one row per catalogue item, in index order (when features exist)
    DIR/users.parquet           one row per user, in index order (when features exist)
    DIR/vocab/items.txt, users.txt, item_<feature>.txt, user_<feature>.txt
    DIR/splits/{loo,random,temporal}/{train,valid,test}.parquet
    DIR/sequences/loo-0000K-of-0000N.tfrecord   with --format tfrecord: each user's sequence, sharded
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from functools import cached_property

import numpy as np
import pandas as pd

from tfrec.data import preprocess, schema, shards
from tfrec.data.loaders import RawDataset
from tfrec.data.store import Store, dataset_output
from tfrec.data.vocab import Vocabulary
from tfrec.errors import TfrecError

# A string column with at most this share of distinct values is categorical; above it, text.
_CATEGORICAL_MAX_UNIQUE_SHARE = 0.5


def _is_list_column(series: pd.Series) -> bool:
    sample = series.dropna()
    return len(sample) > 0 and isinstance(sample.iloc[0], (list, tuple, np.ndarray))


def _feature_kind(series: pd.Series) -> str:
    if _is_list_column(series):
        return "list"
    if pd.api.types.is_bool_dtype(series):
        return "categorical"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    values = series.dropna().astype(str)
    if len(values) and values.nunique() <= max(2, _CATEGORICAL_MAX_UNIQUE_SHARE * len(values)):
        return "categorical"
    return "text"


def _side_table(table: pd.DataFrame | None, key: str, vocab: Vocabulary, index_col: str,
                prefix: str, vocab_dir: str) -> tuple[pd.DataFrame | None, dict]:
    """Aligns a feature table to `vocab` order, writes feature vocabularies, returns its schema."""
    if table is None:
        return None, {}
    table = table.drop_duplicates(key, keep="first").set_index(key)
    ids = vocab.tokens[vocab.num_reserved:]
    aligned = table.reindex(ids)
    aligned.index.name = key
    aligned = aligned.reset_index()
    aligned.insert(1, index_col, np.arange(vocab.num_reserved, len(vocab), dtype=np.int32))
    features = {}
    for col in table.columns:
        kind = _feature_kind(table[col])
        info: dict = {"kind": kind, "coverage": float(aligned[col].notna().mean()) if kind != "list" else None}
        if kind == "list":
            aligned[col] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else [] for v in aligned[col]]
            info["coverage"] = float(np.mean([len(v) > 0 for v in aligned[col]])) if len(aligned) else 0.0
            values = [str(x) for v in aligned[col] for x in v]
        elif kind == "categorical":
            aligned[col] = aligned[col].astype(object).where(aligned[col].notna(), None)
            aligned[col] = [None if v is None else str(v) for v in aligned[col]]
            values = [v for v in aligned[col] if v is not None]
        else:
            features[col] = info
            if kind == "numeric":
                num = pd.to_numeric(aligned[col], errors="coerce")
                info.update(mean=float(num.mean()) if num.notna().any() else 0.0,
                            std=float(num.std()) if num.notna().sum() > 1 else 1.0)
            continue
        fvocab = Vocabulary.by_frequency(values)
        fname = f"{prefix}_{col}.txt"
        fvocab.save(os.path.join(vocab_dir, fname))
        info.update(vocab=fname, vocab_size=len(fvocab))
        features[col] = info
    return aligned, features


def _length_stats(lengths: np.ndarray) -> dict:
    q = np.percentile(lengths, [25, 50, 75, 90, 95, 99])
    return {"min": int(lengths.min()), "p25": float(q[0]), "p50": float(q[1]), "p75": float(q[2]),
            "p90": float(q[3]), "p95": float(q[4]), "p99": float(q[5]), "max": int(lengths.max()),
            "mean": float(lengths.mean())}


def _write_parquet(df: pd.DataFrame, path: str) -> None:
    df.to_parquet(path, index=False, engine="pyarrow", compression="zstd")


def statistics(n_users: int, n_items: int, n_interactions: int, lengths: np.ndarray, report: dict,
               split_counts: dict, ratings: tuple | None) -> dict:
    """``stats.json`` of a prepared dataset, from the figures either engine counts.

    `lengths` holds each user's number of interactions (any order); `ratings` is None or
    ``(mean, [(rating, count), ...])`` with float32 ratings in increasing order.
    """
    stats = {
        "num_users": n_users,
        "num_items": n_items,
        "num_interactions": n_interactions,
        "density": n_interactions / float(n_users * n_items),
        "sequence_length": _length_stats(np.asarray(lengths)),
        "cleaning": report,
        "splits": {scheme: {name: int(n) for name, n in parts.items()} for scheme, parts in split_counts.items()},
    }
    if ratings is not None:
        mean, counts = ratings
        stats["ratings"] = {"mean": float(mean), "counts": {f"{np.float32(k):g}": int(v) for k, v in counts}}
    return stats


def write_description(staging: str, raw: RawDataset, config: preprocess.PrepareConfig, item_vocab: Vocabulary,
                      user_vocab: Vocabulary, stats: dict, dtypes: dict) -> None:
    """Writes the vocabularies, the item and user feature tables, ``dataset.json`` and ``stats.json``
    into `staging`: the part of a prepared dataset both engines write alike, on the driver."""
    vocab_dir = os.path.join(staging, schema.VOCAB_DIR)
    os.makedirs(vocab_dir)
    item_vocab.save(os.path.join(vocab_dir, schema.ITEM_VOCAB_FILE))
    user_vocab.save(os.path.join(vocab_dir, schema.USER_VOCAB_FILE))
    items, item_features = _side_table(raw.items, schema.ITEM_ID, item_vocab, schema.ITEM_INDEX, "item", vocab_dir)
    users, user_features = _side_table(raw.users, schema.USER_ID, user_vocab, schema.USER_INDEX, "user", vocab_dir)
    if items is not None:
        stats["item_features"] = {k: v.get("coverage") for k, v in item_features.items()}
        _write_parquet(items, os.path.join(staging, schema.ITEMS_FILE))
    if users is not None:
        stats["user_features"] = {k: v.get("coverage") for k, v in user_features.items()}
        _write_parquet(users, os.path.join(staging, schema.USERS_FILE))
    meta = {
        "format_version": schema.FORMAT_VERSION,
        "source": raw.source,
        "input_checksums": dict(sorted(raw.checksums.items())),
        "settings": dataclasses.asdict(config),
        "timestamp_kind": raw.timestamp_kind,
        "schema": {"interactions": dtypes, "item_features": item_features, "user_features": user_features},
        "vocabularies": {"items": {"file": schema.ITEM_VOCAB_FILE, "size": len(item_vocab)},
                         "users": {"file": schema.USER_VOCAB_FILE, "size": len(user_vocab)}},
    }
    if raw.derived:
        meta["derived"] = dict(sorted(raw.derived.items()))
    for name, data in ((schema.DATASET_JSON, meta), (schema.STATS_JSON, stats)):
        with open(os.path.join(staging, name), "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")


def prepare(raw: RawDataset, out: str, config: preprocess.PrepareConfig | None = None) -> "PreparedDataset":
    """Cleans, filters, orders and splits `raw`, and writes a dataset folder at `out`.

    The folder appears only when complete; the same inputs and settings give
    byte-identical files.
    """
    config = config or preprocess.PrepareConfig()
    where = f"the interactions of {raw.source}"
    df, report = preprocess.clean(raw.interactions, config, where)
    df = preprocess.k_core(df, config.min_user_interactions, config.min_item_interactions, where)
    df = preprocess.chronological(df)

    item_vocab = Vocabulary.by_frequency(df[schema.ITEM_ID], kind="item")
    user_vocab = Vocabulary.for_features(sorted(df[schema.USER_ID].unique(), key=lambda u: (len(u), u)))
    df.insert(1, schema.USER_INDEX, user_vocab.lookup(df[schema.USER_ID]))
    df.insert(3, schema.ITEM_INDEX, item_vocab.lookup(df[schema.ITEM_ID]))

    splits = {
        schema.LEAVE_ONE_OUT: preprocess.leave_one_out(df, config.loo_min_length),
        schema.RANDOM_SPLIT: preprocess.random_split(df, config.random_test_fraction, config.seed),
        schema.TEMPORAL_SPLIT: preprocess.temporal_split(df, config.temporal_test_fraction),
    }
    lengths = df.groupby(schema.USER_INDEX, sort=False).size().to_numpy()
    ratings = None
    if schema.RATING in df.columns:
        counts = df[schema.RATING].value_counts().sort_index()
        ratings = (df[schema.RATING].mean(), list(counts.items()))
    split_counts = {scheme: {name: len(part) for name, part in parts.items()} for scheme, parts in splits.items()}
    stats = statistics(len(user_vocab) - 2, len(item_vocab) - 3, len(df), lengths, report, split_counts, ratings)

    with dataset_output(out) as (_, staging):  # a remote `out` gets the staging folder uploaded
        _write_parquet(df, os.path.join(staging, schema.INTERACTIONS_FILE))
        if config.format == "tfrecord":
            stats["sequence_shards"] = shards.write_pandas(splits[schema.LEAVE_ONE_OUT], staging, config.shards)
        for scheme, parts in splits.items():
            os.makedirs(os.path.join(staging, schema.SPLITS_DIR, scheme))
            for name, part in parts.items():
                _write_parquet(part.reset_index(drop=True), os.path.join(staging, schema.SPLITS_DIR, scheme, f"{name}.parquet"))
        write_description(staging, raw, config, item_vocab, user_vocab, stats,
                          {c: str(df[c].dtype) for c in df.columns})
    return PreparedDataset(out)


class PreparedDataset:
    """Read access to a folder written by :func:`prepare`; tables load on first use."""

    def __init__(self, path: str):
        self.path = path
        self.store = Store(path)  # a local folder, or one on a store named by a URI (tfrec.data.store)
        meta_path = self.store.name(schema.DATASET_JSON)
        if self.store.kind() != "dir":
            raise TfrecError(f"{path} is not a folder; prepare one with `tfrec data prepare`")
        if self.store.kind(schema.DATASET_JSON) != "file":
            raise TfrecError(f"{path} is not a prepared dataset: it has no {schema.DATASET_JSON} "
                             "(prepare one with `tfrec data prepare`)")
        try:
            self.meta = json.loads(self.store.read_text(schema.DATASET_JSON))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TfrecError(f"{meta_path} is not valid JSON") from None
        self._local_copy: str | None = None
        if self.meta.get("format_version") != schema.FORMAT_VERSION:
            raise TfrecError(f"{meta_path} has format version {self.meta.get('format_version')}, "
                             f"this tfrec reads {schema.FORMAT_VERSION}; prepare the data again")

    @property
    def location(self) -> str:
        """What runs and exports record as the dataset's place: an absolute path, or the store's URI."""
        return self.store.name()

    def _file(self, *parts: str) -> tuple[str, ...]:
        if not self.store.exists(*parts):
            raise TfrecError(f"{self.store.name(*parts)} is missing from the prepared dataset")
        return parts

    def local_file(self, *parts: str) -> str:
        """A local path of one of the dataset's files, for readers that open paths themselves (TensorFlow's
        vocabulary tables): the file itself, or for a dataset on a remote store a copy made once."""
        self._file(*parts)
        if not self.store.remote:
            return self.store.path(*parts)
        if self._local_copy is None:
            import tempfile

            self._local_copy = tempfile.mkdtemp(prefix="tfrec-dataset-")
        path = os.path.join(self._local_copy, *parts)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "wb") as f:
                f.write(self.store.read_bytes(*parts))
            os.replace(path + ".tmp", path)
        return path

    @property
    def fingerprint(self) -> str:
        """What runs and exports record of the data they were trained on: a hash of ``dataset.json`` and
        ``stats.json``."""
        h = hashlib.sha256()
        for name in (schema.DATASET_JSON, schema.STATS_JSON):
            h.update(self.store.read_bytes(*self._file(name)))
        return h.hexdigest()[:16]

    @cached_property
    def stats(self) -> dict:
        return json.loads(self.store.read_text(*self._file(schema.STATS_JSON)))

    @cached_property
    def interactions(self) -> pd.DataFrame:
        return self.store.read_parquet(*self._file(schema.INTERACTIONS_FILE))

    @cached_property
    def items(self) -> pd.DataFrame | None:
        return self.store.read_parquet(schema.ITEMS_FILE) if self.store.exists(schema.ITEMS_FILE) else None

    @cached_property
    def users(self) -> pd.DataFrame | None:
        return self.store.read_parquet(schema.USERS_FILE) if self.store.exists(schema.USERS_FILE) else None

    def _vocabulary(self, name: str, kind: str = "feature") -> Vocabulary:
        parts = self._file(schema.VOCAB_DIR, name)
        return Vocabulary.from_text(self.store.read_text(*parts), self.store.name(*parts), kind)

    @cached_property
    def item_vocab(self) -> Vocabulary:
        return self._vocabulary(schema.ITEM_VOCAB_FILE, kind="item")

    @cached_property
    def user_vocab(self) -> Vocabulary:
        return self._vocabulary(schema.USER_VOCAB_FILE)

    @property
    def item_features(self) -> dict:
        return self.meta["schema"]["item_features"]

    @property
    def user_features(self) -> dict:
        return self.meta["schema"]["user_features"]

    @property
    def has_ratings(self) -> bool:
        return schema.RATING in self.meta["schema"]["interactions"]

    def feature_vocab(self, table: str, name: str) -> Vocabulary:
        features = self.item_features if table == "item" else self.user_features
        if name not in features or "vocab" not in features[name]:
            raise TfrecError(f"the dataset at {self.path} has no {table} feature {name!r} with a vocabulary; "
                             f"it has {', '.join(features) or 'none'}")
        return self._vocabulary(features[name]["vocab"])

    def item_feature_table(self, columns: list[str] | None = None, max_features: int = 16) -> tuple[np.ndarray, int, list[str]]:
        """Each item's categorical and list feature ids in one shared id space.

        Returns ``(table [item vocabulary size, width] int32, id space size, columns used)``:
        row `i` holds the feature ids of item index `i` (0 = none), at most `max_features`
        per column; column ids are offset so that they never collide.  `columns` defaults
        to every categorical or list item feature.
        """
        return self.feature_table("item", columns, max_features)

    def feature_table(self, table: str, columns: list[str] | None = None,
                      max_features: int = 16) -> tuple[np.ndarray, int, list[str]]:
        """:meth:`item_feature_table` for ``table`` "item" or "user" (rows in vocabulary order)."""
        features, frame, vocab, index_col = self._side(table)
        usable = [c for c, f in features.items() if f["kind"] in ("list", "categorical") and "vocab" in f]
        if columns is None:
            columns = usable
        for c in columns:
            if c not in usable:
                raise TfrecError(f"the dataset at {self.path} has no categorical or list {table} feature {c!r}; "
                                 f"it has {', '.join(usable) or 'none'}")
        size = len(vocab)
        blocks, offset = [], 0
        for c in columns:
            fvocab = self.feature_vocab(table, c)
            rows = [[] if v is None else ([v] if isinstance(v, str) else [str(x) for x in v])
                    for v in (frame[c].tolist() if frame is not None else [])]
            width = max(1, min(max_features, max((len(r) for r in rows), default=1)))
            block = np.zeros((size, width), np.int32)
            for index, values in zip(frame[index_col].tolist(), rows):
                ids = fvocab.lookup(values[:width]) if values else np.zeros(0, np.int32)
                ids = ids[ids >= schema.NUM_FEATURE_RESERVED]  # padding and unknown values add nothing
                block[index, :len(ids)] = ids - schema.NUM_FEATURE_RESERVED + 1 + offset
            blocks.append(block)
            offset += len(fvocab) - schema.NUM_FEATURE_RESERVED
        if not blocks:
            return np.zeros((size, 0), np.int32), 1, []
        return np.concatenate(blocks, axis=1), offset + 1, list(columns)

    def numeric_table(self, table: str) -> tuple[np.ndarray, list[str]]:
        """Standardised numeric features ``[vocabulary size, k]`` float32 (missing = 0 = the mean)."""
        features, frame, vocab, index_col = self._side(table)
        columns = [c for c, f in features.items() if f["kind"] == "numeric"]
        out = np.zeros((len(vocab), len(columns)), np.float32)
        for j, c in enumerate(columns):
            values = pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64)
            z = (values - features[c]["mean"]) / (features[c]["std"] or 1.0)
            out[frame[index_col].to_numpy(), j] = np.nan_to_num(z, nan=0.0)
        return out, columns

    def text_table(self, table: str, column: str, min_count: int = 2,
                   max_tokens: int = 8) -> tuple[np.ndarray, int]:
        """Word ids of a text feature (lower-cased ``[a-z0-9]+`` words seen `min_count` times).

        Returns ``(table [vocabulary size, max_tokens] int32, word id space size)``; 0 = none.
        Tokenisation happens here, before any model sees the data, so no served graph
        needs a text op.
        """
        features, frame, vocab, index_col = self._side(table)
        if features.get(column, {}).get("kind") != "text":
            raise TfrecError(f"the dataset at {self.path} has no text {table} feature {column!r}")
        words = [re.findall(r"[a-z0-9]+", str(v).lower()) if v is not None else [] for v in frame[column].tolist()]
        counts: dict[str, int] = {}
        for ws in words:
            for w in set(ws):
                counts[w] = counts.get(w, 0) + 1
        kept = sorted(w for w, n in counts.items() if n >= min_count)
        ids = {w: i + 1 for i, w in enumerate(kept)}
        out = np.zeros((len(vocab), max_tokens), np.int32)
        for index, ws in zip(frame[index_col].tolist(), words):
            row = [ids[w] for w in ws if w in ids][:max_tokens]
            out[index, :len(row)] = row
        return out, len(kept) + 1

    def _side(self, table: str):
        if table == "item":
            return self.item_features, self.items, self.item_vocab, schema.ITEM_INDEX
        if table == "user":
            return self.user_features, self.users, self.user_vocab, schema.USER_INDEX
        raise ValueError(f"table must be 'item' or 'user', got {table!r}")

    @property
    def sequence_shards(self) -> list[str]:
        """The TFRecord files of a dataset prepared with ``--format tfrecord`` (else empty)."""
        import fnmatch

        return [self.store.path(schema.SEQUENCES_DIR, f) for f in self.store.listdir(schema.SEQUENCES_DIR)
                if fnmatch.fnmatch(f, schema.SEQUENCE_SHARD_GLOB)]

    def split(self, name: str, scheme: str = schema.LEAVE_ONE_OUT) -> pd.DataFrame:
        if scheme not in schema.SPLIT_SCHEMES:
            raise TfrecError(f"unknown split scheme {scheme!r}; known: {', '.join(schema.SPLIT_SCHEMES)}")
        parts = (schema.SPLITS_DIR, scheme, f"{name}.parquet")
        if not self.store.exists(*parts):
            raise TfrecError(f"split {scheme}/{name} does not exist in {self.path}")
        return self.store.read_parquet(*parts)

    def __repr__(self) -> str:
        s = self.stats
        return (f"PreparedDataset({self.path!r}: {s['num_users']} users, {s['num_items']} items, "
                f"{s['num_interactions']} interactions)")
