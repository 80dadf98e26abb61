"""Spark for `tfrec data prepare --engine spark`: the session, and the interactions as a Spark DataFrame
(a ``csv``/``parquet`` source read by Spark itself, or a named dataset loaded by pandas and handed over)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import warnings

import numpy as np
import pandas as pd

from tfrec.data import schema
from tfrec.data.raw import RawDataset, sha256
from tfrec.data.table_loader import read_side
from tfrec.errors import TfrecError

LOCAL_MASTER = "local[*]"
# Settings tfrec gives every session (``--spark-conf`` overrides them): dates without a zone are UTC,
# as in the pandas engine; no web UI for a command-line job.  (The tables are written by pyarrow in the tasks,
# zstd as the pandas engine writes, so no Parquet setting of Spark's applies.)
DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # a driver out of memory exits (and the command says so) instead of living on with a dead scheduler
    "spark.driver.extraJavaOptions": "-XX:+ExitOnOutOfMemoryError",
}
ROW = "_row"  # position in the input: the tie-break of equal timestamps, as in the pandas engine


@dataclasses.dataclass
class SparkSource:
    """A ``csv``/``parquet`` source read by Spark: the interactions as a Spark DataFrame (canonical
    columns plus the input position), and what a :class:`RawDataset` says besides."""

    raw: RawDataset  # interactions empty; items, users, checksums, source, timestamp kind
    interactions: object  # pyspark.sql.DataFrame


@contextlib.contextmanager
def session(master: str | None = None, conf: dict[str, str] | None = None):
    """A Spark session on `master` (default :data:`LOCAL_MASTER`) for one preparation, stopped afterwards;
    or, where this process already runs one (a notebook's, a test's), that session, left running and its
    settings kept."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise TfrecError("--engine spark needs PySpark (pip install pyspark) and a Java runtime") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    master = master or LOCAL_MASTER
    builder = SparkSession.builder.appName("tfrec data prepare").master(master)
    if master.startswith("local"):
        if not os.environ.get("PYSPARK_PYTHON"):
            os.environ["PYSPARK_PYTHON"] = sys.executable  # local workers run this interpreter, with tfrec's packages
    # tfrec hands Spark Arrow tables, never pandas frames, so PySpark's pandas version check does not apply
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # no Java, a master that does not answer, a bad setting
        raise TfrecError(f"Spark did not start with master {master!r}: {spark_error(e)}") from None
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


def parse_conf(pairs: list[str] | None) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> dict, with one clear sentence for a pair without ``=``."""
    conf = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TfrecError(f"--spark-conf takes KEY=VALUE, not {pair!r}")
        conf[key.strip()] = value.strip()
    return conf


def _is_uri(path: str) -> bool:
    return "://" in path


def uri(path: str) -> str:
    """`path` as a URI Spark writes to: local paths as file://, so that a cluster default file system is not used."""
    return path if _is_uri(path) else "file://" + os.path.abspath(path)


def spark_error(e: Exception) -> str:
    """The first line of a Spark or Py4J error (the rest is a Java stack)."""
    if type(e).__name__ in ("Py4JNetworkError", "ConnectionRefusedError") or "Answer from Java side is empty" in str(e):
        return ("the Spark driver stopped (out of memory? give it more with --spark-conf spark.driver.memory=..., "
                "or run on a cluster)")
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _spark_errors() -> tuple[type, ...]:
    try:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException
    except ImportError:
        return ()
    return (PySparkException, Py4JError)


SPARK_ERRORS = _spark_errors()


def read_table(spark, path: str, columns: dict[str, str] | None = None, items=None, users=None,
               list_columns: tuple[str, ...] = (), list_sep: str = "|", sep: str = ",",
               order_as_time: bool = False) -> SparkSource:
    """The ``csv``/``parquet`` source of :func:`tfrec.data.table_loader.load_table`, its interactions read by
    Spark (a file, or a folder of part files; a local path or any URI Spark reads).  Timestamps are numbers
    (seconds) or ISO-8601 dates; the item and user tables, catalogue-sized, are read on the driver."""
    from pyspark.sql import functions as F
    from pyspark.sql import Window

    columns = dict(columns or {})
    if not _is_uri(path) and not os.path.exists(path):
        raise TfrecError(f"{path} does not exist")
    try:
        if path.endswith(".parquet"):
            df = spark.read.parquet(uri(path))
        else:
            df = spark.read.option("header", True).option("sep", "\t" if path.endswith(".tsv") else sep) \
                .option("mode", "FAILFAST").option("encoding", "UTF-8").csv(uri(path))
        df = df.withColumn(ROW, F.monotonically_increasing_id())
        empty = df.limit(1).count() == 0
    except Exception as e:
        raise TfrecError(f"{path} is not a readable table ({spark_error(e)})") from None
    inv = {src: dst for dst, src in columns.items()}
    df = df.select(*[F.col(f"`{c}`").alias(inv.get(c, c)) for c in df.columns])
    required = [schema.USER_ID, schema.ITEM_ID] + ([] if order_as_time else [schema.TIMESTAMP])
    missing = [c for c in required if c not in df.columns]
    if missing:
        wanted = ", ".join(f"{c} (from {columns.get(c, c)!r})" for c in missing)
        raise TfrecError(f"{path} lacks the column {wanted}; it has {', '.join(df.columns[:10])}")
    if empty:
        raise TfrecError(f"{path} holds no rows")

    def text_id(name):  # the pandas engine's str.strip(): Unicode white space at both ends
        return F.regexp_replace(F.col(name).cast("string"), r"(?U)^\s+|\s+$", "")

    if order_as_time and schema.TIMESTAMP not in df.columns:
        ts = F.row_number().over(Window.partitionBy(schema.USER_ID).orderBy(ROW)).cast("long") - 1
        kind = "order"
    else:
        raw_ts = F.col(schema.TIMESTAMP)
        numeric = raw_ts.try_cast("double")
        if df.filter(raw_ts.isNotNull() & numeric.isNull()).limit(1).count():
            dates = F.try_to_timestamp(raw_ts.cast("string"))
            bad = df.filter(raw_ts.isNotNull() & dates.isNull()).select(schema.TIMESTAMP).limit(1).collect()
            if bad:
                raise TfrecError(f"{path}: timestamp {bad[0][0]!r} is neither a number nor a date")
            ts = F.floor(F.unix_micros(dates) / 1_000_000).cast("long")
        else:
            ts = numeric.cast("long")
        kind = "unix_seconds"
    out = [text_id(schema.USER_ID).alias(schema.USER_ID), text_id(schema.ITEM_ID).alias(schema.ITEM_ID),
           ts.alias(schema.TIMESTAMP)]
    if schema.RATING in df.columns:
        rating = F.col(schema.RATING).try_cast("float")
        if df.filter(F.col(schema.RATING).isNotNull() & rating.isNull()).limit(1).count():
            raise TfrecError(f"{path}: column {schema.RATING} holds values that are not numbers")
        out.append(rating.alias(schema.RATING))
    interactions = df.select(*out, ROW)
    checksums = {}
    if not _is_uri(path) and os.path.isfile(path):
        checksums[os.path.basename(path)] = sha256(path)
    item_table = read_side(items, schema.ITEM_ID, "items", columns, checksums, list_columns, list_sep, sep)
    user_table = read_side(users, schema.USER_ID, "users", columns, checksums, list_columns, list_sep, sep)
    source = "parquet" if path.endswith(".parquet") else "csv"
    raw = RawDataset(source, pd.DataFrame(), item_table, user_table, checksums, path, timestamp_kind=kind)
    return SparkSource(raw, interactions)


def from_raw(spark, raw: RawDataset) -> SparkSource:
    """A source loaded by a pandas loader (the named datasets), handed to Spark through Arrow."""
    import pyarrow as pa

    frame = raw.interactions
    arrays = {schema.USER_ID: pa.array(frame[schema.USER_ID].to_numpy(dtype=object), pa.string()),
              schema.ITEM_ID: pa.array(frame[schema.ITEM_ID].to_numpy(dtype=object), pa.string()),
              schema.TIMESTAMP: pa.array(frame[schema.TIMESTAMP].to_numpy(dtype=np.int64), pa.int64())}
    if schema.RATING in frame.columns:
        arrays[schema.RATING] = pa.array(frame[schema.RATING].to_numpy(dtype=np.float32), pa.float32())
    arrays[ROW] = pa.array(np.arange(len(frame), dtype=np.int64))
    return SparkSource(dataclasses.replace(raw, interactions=pd.DataFrame()),
                       spark.createDataFrame(pa.table(arrays)))
