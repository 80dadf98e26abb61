"""`tfrec data prepare --engine spark`: the prepared dataset of :func:`tfrec.data.dataset.prepare`,
computed on Apache Spark, in local mode on one machine or on a cluster (``--spark-master``).

The same inputs and settings give the same dataset as the pandas engine: the same rows in the same
order in every table, the same vocabularies, ``dataset.json`` and ``stats.json`` byte for byte, and
the same TFRecord sequence shards byte for byte.  The Parquet tables are folders of part files,
written in order (``interactions.parquet/part-00000.parquet`` …), which pandas and pyarrow read as
one table.  The executors write the tables and the shards through pyarrow's file systems, to a local
folder or straight to a remote store (``--out s3://…``, :mod:`tfrec.data.store`), and import no
TensorFlow: the shards' records are framed by :mod:`tfrec.data.tfrecord`.

What runs where:

- executors: reading a ``csv``/``parquet`` source, cleaning, duplicates, the rating threshold, the
  iterated k-core, the chronological order, the three splits, every count, the tables and the
  sequence shards;
- the driver: the vocabularies (it writes them, one line per item or user; to a remote store through a
  local staging folder uploaded at the end, ``dataset.json`` last), the random split's draw
  (numpy's permutation, so that the split is the pandas engine's: 8 bytes per interaction), the item
  and user feature tables (one row per catalogue entry) and the statistics.

Three orderings run on one partition: the item vocabulary's (one row per item), the user vocabulary's and
the running count of interactions over users in id order (one row per user each).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tfrec.data import dataset, preprocess, schema, spark_source
from tfrec.data.raw import RawDataset
from tfrec.data.spark_source import ROW, SparkSource, from_raw
from tfrec.data.vocab import Vocabulary
from tfrec.errors import TfrecError
from tfrec.data.store import Store, dataset_output

ROWS_PER_FILE = 1_000_000  # rows of a table's Parquet part file, at most (and one file per core at least)

_POS = "_pos"  # position in the chronological table
_RANK = "_rank"  # position within the user's interactions
_LENGTH = "_length"  # the user's number of interactions
_USER_POS = "_user_pos"  # the user's position in id order (the sequence shards' `position`)
_LOO = "_loo"  # leave-one-out part
_RANDOM_TEST = "_random_test"
_TEMPORAL_TEST = "_temporal_test"


def _count(df) -> int:
    return int(df.count())


def _clean(df, config: preprocess.PrepareConfig, where: str):
    """:func:`tfrec.data.preprocess.clean` on Spark."""
    from pyspark.sql import functions as F
    from pyspark.sql import Window

    with_rating = schema.RATING in df.columns
    report = {"input_rows": _count(df)}
    missing = (F.col(schema.USER_ID).isNull() | F.col(schema.ITEM_ID).isNull() | F.col(schema.TIMESTAMP).isNull()
               | (F.col(schema.RATING).isNull() if with_rating else F.lit(False)))
    missing = missing | F.coalesce((F.length(schema.USER_ID) == 0) | (F.length(schema.ITEM_ID) == 0), F.lit(True))
    df = df.filter(~missing).localCheckpoint()
    kept = _count(df)
    report["dropped_missing"] = report["input_rows"] - kept
    keys = [c for c in df.columns if c != ROW]
    if config.dedupe == "user_item":  # the earliest interaction of each pair; ties by input order
        first = Window.partitionBy(schema.USER_ID, schema.ITEM_ID).orderBy(schema.TIMESTAMP, ROW)
        df = df.withColumn("_n", F.row_number().over(first)).filter("_n = 1").drop("_n")
    else:  # identical rows: the first in input order
        df = df.groupBy(*keys).agg(F.min(ROW).alias(ROW))
    df = df.localCheckpoint()
    remaining = _count(df)
    report["dropped_duplicates"] = kept - remaining
    if config.rating_threshold is not None:
        if not with_rating:
            raise TfrecError(f"a rating threshold was given but {where} have no rating column")
        # float32 against float32, as numpy compares a float32 column with a Python float
        df = df.filter(F.col(schema.RATING) >= F.lit(float(np.float32(config.rating_threshold))).cast("float"))
        df = df.localCheckpoint()
        deduped, remaining = remaining, _count(df)
        report["dropped_below_threshold"] = deduped - remaining
    if remaining == 0:
        raise TfrecError(f"{where} are empty after cleaning (missing values, duplicates, rating threshold)")
    return df, report


def _k_core(df, min_user: int, min_item: int, where: str):
    """:func:`tfrec.data.preprocess.k_core` on Spark: drop, count again, to the fixed point."""
    from pyspark.sql import functions as F

    if min_user <= 1 and min_item <= 1:
        return df
    while True:
        users = df.groupBy(schema.USER_ID).count().filter(F.col("count") < min_user).select(schema.USER_ID)
        items = df.groupBy(schema.ITEM_ID).count().filter(F.col("count") < min_item).select(schema.ITEM_ID)
        if users.limit(1).count() == 0 and items.limit(1).count() == 0:
            return df
        df = df.join(users, schema.USER_ID, "left_anti").join(items, schema.ITEM_ID, "left_anti").localCheckpoint()
        if df.limit(1).count() == 0:
            raise TfrecError(
                f"{where} are empty after {min_user}-core filtering of users and {min_item}-core filtering of items")


def _positions(spark, positions: np.ndarray, rows_per_slice: int = 1_000_000):
    """A one-column DataFrame (``_pos``) of positions drawn on the driver, shipped in slices, one per task
    (a DataFrame made from local data would put every row in every task's plan)."""
    slices = np.array_split(positions, max(1, -(-len(positions) // rows_per_slice)))
    rdd = spark.sparkContext.parallelize(slices, len(slices)).flatMap(lambda part: [(int(x),) for x in part])
    return spark.createDataFrame(rdd, schema=f"{_POS} long")


def _temporal_cut(df, n: int, n_test: int):
    """The newest `n_test` of the `n` rows by (timestamp, chronological position), as a filter: whole
    timestamps above a cut, and the latest positions at the cut.  The cut is looked for among the timestamps
    near the share's approximate quantile, then, failing that, among all timestamps from the newest."""
    from pyspark.sql import functions as F

    if n_test == 0:
        return F.lit(False)
    ts = F.col(schema.TIMESTAMP)
    share = 1 - n_test / n
    low, high = df.approxQuantile(schema.TIMESTAMP, [max(0.0, share - 0.002), min(1.0, share + 0.002)], 0.0005)
    counts = df.groupBy(schema.TIMESTAMP).count()
    cut = None
    for candidates, seen in ((counts.filter((ts >= low) & (ts <= high)), df.filter(ts > high).count()), (counts, 0)):
        if seen >= n_test:
            continue
        for row in candidates.orderBy(F.desc(schema.TIMESTAMP)).toLocalIterator():
            if seen + row["count"] >= n_test:
                cut, need = row[schema.TIMESTAMP], n_test - seen
                break
            seen += row["count"]
        if cut is not None:
            break
    at_cut = df.filter(ts == cut).orderBy(F.desc(_POS)).limit(need).agg(F.min(_POS)).collect()[0][0]
    return (ts > F.lit(cut)) | ((ts == F.lit(cut)) & (F.col(_POS) >= at_cut))


def _write_table(df, store: Store, name: str) -> None:
    """`df` as a folder of Parquet part files at `name` in `store`, one per partition in partition order
    (``part-00000.parquet`` …), each written by its task through pyarrow: to a local folder or straight
    to a remote store, under a name a retried task writes again."""
    import pyarrow as pa

    arrow = {"string": pa.string(), "integer": pa.int32(), "long": pa.int64(), "float": pa.float32(),
             "double": pa.float64()}
    target = pa.schema([pa.field(f.name, arrow[f.dataType.typeName()]) for f in df.schema.fields])

    def write(batches):
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        part, rows = TaskContext.get().partitionId(), 0
        with store.open_output(name, f"part-{part:05d}.parquet") as stream:
            with pq.ParquetWriter(stream, target, compression="zstd") as writer:  # empty partition: no rows
                for batch in batches:
                    writer.write_batch(batch.cast(target))
                    rows += batch.num_rows
        yield pa.RecordBatch.from_arrays([pa.array([part], pa.int32()), pa.array([rows], pa.int64())], ["part", "rows"])

    parts = df.rdd.getNumPartitions()
    written = df.mapInArrow(write, "part int, rows long").collect()
    if sorted(row["part"] for row in written) != list(range(parts)):
        raise TfrecError(f"Spark wrote {len(written)} of the {parts} part files of {store.name(name)}")


def _write_sequence_shards(annotated, store: Store, shards: int) -> None:
    """The pandas engine's TFRecord shards (one ``tf.train.Example`` per user, users dealt round-robin
    by position), each written by one task, without TensorFlow (:mod:`tfrec.data.tfrecord`), to a local
    folder or straight to a remote store."""
    from pyspark.sql import functions as F

    user_index, item_index, train, valid, test = (schema.USER_INDEX, schema.ITEM_INDEX, schema.TRAIN,
                                                  schema.VALID, schema.TEST)
    held = annotated.groupBy(_USER_POS, user_index).agg(
        F.sort_array(F.collect_list(F.when(F.col(_LOO) == train, F.struct(_POS, item_index)))).alias("items"),
        F.max(F.when(F.col(_LOO) == valid, F.col(item_index))).alias("valid_item"),
        F.max(F.when(F.col(_LOO) == test, F.col(item_index))).alias("test_item"))

    def write(index, rows):
        from tfrec.data import tfrecord
        from tfrec.data.shards import sequence_example

        with store.open_output(schema.SEQUENCES_DIR, schema.SEQUENCE_SHARD.format(index=index, count=shards)) as f:
            for _, row in sorted(rows, key=lambda kv: kv[0]):
                f.write(tfrecord.frame(sequence_example(
                    row[_USER_POS], row[user_index], [pair[1] for pair in row["items"]], row["valid_item"] or 0,
                    row["test_item"] or 0)))
        yield index

    written = held.rdd.map(lambda row: (row[_USER_POS], row)) \
        .partitionBy(shards, lambda position: position % shards).mapPartitionsWithIndex(write).collect()
    if sorted(written) != list(range(shards)):
        raise TfrecError(f"Spark wrote {len(written)} of {shards} sequence shards")


def prepare(spark, source: SparkSource | RawDataset, out: str,
            config: preprocess.PrepareConfig | None = None) -> dataset.PreparedDataset:
    """:func:`tfrec.data.dataset.prepare` on Spark; `out` is a local folder, replaced atomically, or a folder
    on a remote store (:func:`tfrec.data.store.dataset_output`), which the executors write to directly."""
    from pyspark.sql import functions as F
    from pyspark.sql import Window

    config = config or preprocess.PrepareConfig()
    if isinstance(source, RawDataset):
        source = from_raw(spark, source)
    raw = source.raw
    where = f"the interactions of {raw.source}"
    df, report = _clean(source.interactions, config, where)
    df = _k_core(df, config.min_user_interactions, config.min_item_interactions, where)

    # Vocabularies, as indices computed here and tokens collected in order for the vocabulary files: items
    # by count, most frequent first, ties by id; users by id length, then id.
    items = df.groupBy(schema.ITEM_ID).count().withColumn(schema.ITEM_INDEX, (F.row_number().over(
        Window.orderBy(F.desc("count"), schema.ITEM_ID)) + schema.NUM_ITEM_RESERVED - 1).cast("int")) \
        .select(schema.ITEM_ID, schema.ITEM_INDEX).localCheckpoint()
    # The chronological order (user id, timestamp, input position) as positions: a user's first row
    # comes after every row of the users before it in id order.
    by_id = Window.orderBy(schema.USER_ID)
    users = df.groupBy(schema.USER_ID).agg(F.count(F.lit(1)).alias(_LENGTH)) \
        .withColumn(schema.USER_INDEX, (F.row_number().over(Window.orderBy(F.length(schema.USER_ID), schema.USER_ID))
                                        + schema.NUM_FEATURE_RESERVED - 1).cast("int")) \
        .withColumn(_USER_POS, F.row_number().over(by_id).cast("long") - 1) \
        .withColumn("_first", F.coalesce(F.sum(_LENGTH).over(by_id.rowsBetween(Window.unboundedPreceding, -1)),
                                         F.lit(0)).cast("long")).localCheckpoint()
    item_tokens = [row[0] for row in items.orderBy(schema.ITEM_INDEX).select(schema.ITEM_ID).toLocalIterator()]
    user_tokens = [row[0] for row in users.orderBy(schema.USER_INDEX).select(schema.USER_ID).toLocalIterator()]
    item_vocab, user_vocab = Vocabulary.for_items(item_tokens), Vocabulary.for_features(user_tokens)
    in_user = Window.partitionBy(schema.USER_ID).orderBy(schema.TIMESTAMP, ROW)
    df = df.withColumn(_RANK, F.row_number().over(in_user).cast("long") - 1).join(users, schema.USER_ID) \
        .withColumn(_POS, F.col("_first") + F.col(_RANK)).drop("_first", ROW).join(items, schema.ITEM_ID)
    df = df.localCheckpoint()
    n = _count(df)
    n_random = int(round(n * config.random_test_fraction))
    n_temporal = int(round(n * config.temporal_test_fraction))
    newest = _temporal_cut(df, n, n_temporal)  # on the checkpointed table: its searches scan it alone

    # Leave-one-out: the last interaction test, the one before validation, for users long enough.
    from_end = F.col(_LENGTH) - 1 - F.col(_RANK)
    eligible = F.col(_LENGTH) >= config.loo_min_length
    df = df.withColumn(_LOO, F.when(eligible & (from_end == 0), schema.TEST)
                       .when(eligible & (from_end == 1), schema.VALID).otherwise(schema.TRAIN))
    # Random: numpy's permutation of the chronological positions, drawn here as the pandas engine draws it.
    drawn = np.sort(np.random.default_rng(config.seed).permutation(n)[:n_random]).astype(np.int64)
    df = df.join(_positions(spark, drawn).withColumn(_RANDOM_TEST, F.lit(True)), _POS, "left") \
        .withColumn(_RANDOM_TEST, F.coalesce(F.col(_RANDOM_TEST), F.lit(False)))
    # Temporal: the newest share of rows by timestamp, ties by position.
    df = df.withColumn(_TEMPORAL_TEST, newest)
    parts = max(spark.sparkContext.defaultParallelism, -(-n // ROWS_PER_FILE))
    df = df.repartitionByRange(parts, _POS).sortWithinPartitions(_POS).localCheckpoint()

    counts = {row[_LOO]: row["count"] for row in df.groupBy(_LOO).count().collect()}
    split_counts = {
        schema.LEAVE_ONE_OUT: {name: counts.get(name, 0) for name in (schema.TRAIN, schema.VALID, schema.TEST)},
        schema.RANDOM_SPLIT: {schema.TRAIN: n - n_random, schema.TEST: n_random},
        schema.TEMPORAL_SPLIT: {schema.TRAIN: n - n_temporal, schema.TEST: n_temporal},
    }
    histogram = users.groupBy(_LENGTH).count().collect()
    lengths = np.repeat([row[_LENGTH] for row in histogram], [row["count"] for row in histogram])
    ratings = None
    if schema.RATING in df.columns:
        total = df.agg(F.sum(F.col(schema.RATING).cast("double"))).collect()[0][0]
        # the pandas engine's float32 mean: exact sum, then float32 division
        mean = np.float32(total) / np.float32(n)
        by_rating = df.groupBy(schema.RATING).count().orderBy(schema.RATING).collect()
        ratings = (mean, [(np.float32(row[schema.RATING]), row["count"]) for row in by_rating])
    stats = dataset.statistics(len(user_tokens), len(item_tokens), n, lengths, report, split_counts, ratings)

    columns = [schema.USER_ID, schema.USER_INDEX, schema.ITEM_ID, schema.ITEM_INDEX, schema.TIMESTAMP]
    columns += [schema.RATING] if schema.RATING in df.columns else []
    tables = {schema.INTERACTIONS_FILE: F.lit(True)}
    for name in (schema.TRAIN, schema.VALID, schema.TEST):
        tables[os.path.join(schema.SPLITS_DIR, schema.LEAVE_ONE_OUT, f"{name}.parquet")] = F.col(_LOO) == name
    for scheme, flag in ((schema.RANDOM_SPLIT, _RANDOM_TEST), (schema.TEMPORAL_SPLIT, _TEMPORAL_TEST)):
        tables[os.path.join(schema.SPLITS_DIR, scheme, f"{schema.TRAIN}.parquet")] = ~F.col(flag)
        tables[os.path.join(schema.SPLITS_DIR, scheme, f"{schema.TEST}.parquet")] = F.col(flag)
    text = str(pd.Series(np.array(["a"], dtype=object)).dtype)  # how this pandas names a column of str
    dtypes = {schema.USER_ID: text, schema.USER_INDEX: "int32", schema.ITEM_ID: text, schema.ITEM_INDEX: "int32",
              schema.TIMESTAMP: "int64", schema.RATING: "float32"}
    with dataset_output(out) as (store, staging):
        for name, keep in tables.items():
            _write_table(df.filter(keep).select(*columns), store, name)
        if config.format == "tfrecord":
            _write_sequence_shards(df, store, config.shards)
            stats["sequence_shards"] = {"shards": config.shards, "users": len(user_tokens)}
        dataset.write_description(staging, raw, config, item_vocab, user_vocab, stats,
                                  {c: dtypes[c] for c in columns})
    return dataset.PreparedDataset(out)


def prepare_source(source: str, path: str | None, options: dict, out: str, config: preprocess.PrepareConfig,
                   master: str | None = None, conf: dict[str, str] | None = None, log=None) -> dataset.PreparedDataset:
    """``tfrec data prepare --engine spark`` and the pipeline's ingest step: a session on `master` (default
    :data:`tfrec.data.spark_source.LOCAL_MASTER`), the
    source read by Spark (``csv``/``parquet``) or loaded by its pandas loader (the named datasets, which
    are small), the dataset prepared; a failed Spark job is one sentence."""
    from tfrec.data import loaders

    say = log or (lambda message: None)
    say(f"starting Spark ({master or spark_source.LOCAL_MASTER})")
    with spark_source.session(master, conf) as spark:
        if source in loaders.TABLE_SOURCES:
            if path is None:
                raise TfrecError(f"source {source!r} needs a path to the interactions file")
            say(f"reading {path} with Spark")
            data = spark_source.read_table(spark, path, **options)
        else:
            say(f"loading {source}" + (f" from {path}" if path else " (cache or download)"))
            data = loaders.load(source, path, **options)
        try:
            return prepare(spark, data, out, config)
        except spark_source.SPARK_ERRORS as e:  # a job that failed: out of memory, a lost executor...
            raise TfrecError(f"Spark failed to prepare {out}: {spark_source.spark_error(e)}") from None
