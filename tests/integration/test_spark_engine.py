"""`tfrec data prepare --engine spark` gives the pandas engine's prepared dataset: the same rows in the same
order in every table, the same vocabularies, `dataset.json`, `stats.json`, feature tables and TFRecord
sequence shards byte for byte, on MovieLens-100K, Beauty, a synthetic set and a messy CSV read by Spark.

Spark in local mode takes about 20 s to start, so one session serves the module and the tests are slow.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, dataset_dir
from tfrec.data import dataset, loaders, preprocess, schema
from tfrec.data.dataset import PreparedDataset
from tfrec.data.synthetic import generate_synthetic
from tfrec.data.table_loader import load_table
from tfrec.errors import TfrecError

pytest.importorskip("pyspark")
if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a Java runtime: no java on PATH and no JAVA_HOME", allow_module_level=True)
from tfrec.data import spark_engine, spark_source  # noqa: E402

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def spark():
    with spark_source.session("local[2]", {"spark.sql.shuffle.partitions": "4"}) as session:
        yield session


def assert_same_dataset(a: str, b: str) -> None:
    """Every file of two prepared datasets holds the same thing; all but the Parquet tables byte for byte."""
    for name in (schema.DATASET_JSON, schema.STATS_JSON):
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    vocab = sorted(os.listdir(os.path.join(a, schema.VOCAB_DIR)))
    assert vocab == sorted(os.listdir(os.path.join(b, schema.VOCAB_DIR)))
    for name in vocab:
        assert filecmp.cmp(os.path.join(a, schema.VOCAB_DIR, name), os.path.join(b, schema.VOCAB_DIR, name),
                           shallow=False), name
    for name in (schema.ITEMS_FILE, schema.USERS_FILE):
        assert os.path.exists(os.path.join(a, name)) == os.path.exists(os.path.join(b, name))
        if os.path.exists(os.path.join(a, name)):  # written on the driver by the same code
            assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    one, other = PreparedDataset(a), PreparedDataset(b)
    pd.testing.assert_frame_equal(one.interactions, other.interactions, check_exact=True)
    for scheme in schema.SPLIT_SCHEMES:
        parts = sorted(os.listdir(os.path.join(a, schema.SPLITS_DIR, scheme)))
        assert parts == sorted(os.listdir(os.path.join(b, schema.SPLITS_DIR, scheme)))
        for part in parts:
            name = part[: -len(".parquet")]
            pd.testing.assert_frame_equal(one.split(name, scheme), other.split(name, scheme), check_exact=True)
    shards = [os.path.basename(p) for p in one.sequence_shards]
    assert shards == [os.path.basename(p) for p in other.sequence_shards]
    for x, y in zip(one.sequence_shards, other.sequence_shards):
        assert filecmp.cmp(x, y, shallow=False), os.path.basename(x)


def both(spark, raw, tmp_path, config) -> tuple[str, str]:
    a, b = str(tmp_path / "pandas"), str(tmp_path / "spark")
    dataset.prepare(raw, a, config)
    spark_engine.prepare(spark, raw, b, config)
    return a, b


def test_movielens_with_k_core_threshold_and_shards(spark, tmp_path):
    config = preprocess.PrepareConfig(rating_threshold=3.5, min_user_interactions=5, min_item_interactions=5,
                                      format="tfrecord", shards=3)
    a, b = both(spark, loaders.load("movielens-100k", dataset_dir("ml-100k")), tmp_path, config)
    assert_same_dataset(a, b)
    stats = PreparedDataset(b).stats
    assert stats["cleaning"]["dropped_below_threshold"] > 0 and stats["sequence_shards"]["shards"] == 3
    # the k-core is reached: every user and item of the Spark-written table has 5 interactions or more
    inter = PreparedDataset(b).interactions
    assert inter.groupby(schema.USER_ID).size().min() >= 5 and inter.groupby(schema.ITEM_ID).size().min() >= 5
    assert os.path.isdir(os.path.join(b, schema.INTERACTIONS_FILE))  # part files, read as one table


def test_beauty_with_pair_deduplication(spark, tmp_path):
    config = preprocess.PrepareConfig(dedupe="user_item", format="tfrecord", shards=2)
    a, b = both(spark, loaders.load("amazon-s3rec", dataset_dir("amazon-beauty")), tmp_path, config)
    assert_same_dataset(a, b)


def test_synthetic_with_ties_and_features(spark, tmp_path):
    raw = generate_synthetic(num_users=300, num_items=80, seed=3)
    inter = raw.interactions.copy()
    inter[schema.TIMESTAMP] //= 200_000  # many equal timestamps: ties break by input order on both engines
    inter = pd.concat([inter, inter.iloc[::7]], ignore_index=True)  # exact duplicates
    raw.interactions = inter
    config = preprocess.PrepareConfig(min_item_interactions=3, random_test_fraction=0.3, temporal_test_fraction=0.25,
                                      seed=7)
    a, b = both(spark, raw, tmp_path, config)
    assert_same_dataset(a, b)
    assert PreparedDataset(b).stats["cleaning"]["dropped_duplicates"] > 0


def test_spark_writes_straight_to_an_object_store(spark, s3_uri, tmp_path):
    """`--out s3://…`: the executors write the tables and the shards to the store themselves (no local copy),
    and what lands there is the pandas engine's dataset."""
    from tests.integration.test_remote_store import local_files, store_files

    raw = generate_synthetic(num_users=200, num_items=60, seed=5)
    config = preprocess.PrepareConfig(format="tfrecord", shards=2)
    local = dataset.prepare(raw, str(tmp_path / "pandas"), config)
    remote = spark_engine.prepare(spark, raw, s3_uri("spark/ds"), config)
    ours, theirs = store_files(remote.store), local_files(local.path)
    tables = {name for name in theirs if name.endswith(".parquet")}
    assert {name for name in ours if not name.endswith(".parquet")} == set(theirs) - tables
    assert all(ours[name] == theirs[name] for name in set(theirs) - tables)  # json, vocabularies, shards
    assert {name.rsplit("/", 1)[0] for name in ours if "/part-" in name} == tables - {schema.ITEMS_FILE,
                                                                                    schema.USERS_FILE}
    pd.testing.assert_frame_equal(remote.interactions, local.interactions, check_exact=True)
    for scheme in schema.SPLIT_SCHEMES:
        for name in local.store.listdir(schema.SPLITS_DIR, scheme):
            name = name[: -len(".parquet")]
            pd.testing.assert_frame_equal(remote.split(name, scheme), local.split(name, scheme), check_exact=True)


def messy_csv(folder) -> str:
    """Interactions as a user's export would hold them: ISO dates, padded ids, missing values, repeats."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3000):
        user, item = f"user {rng.integers(0, 120)}", f"sku-{rng.integers(0, 90):03d}"
        when = pd.Timestamp("2024-01-01") + pd.Timedelta(minutes=int(rng.integers(0, 50_000)))
        rating = "" if i % 97 == 0 else str(rng.integers(1, 6))
        rows.append((f"  {user} " if i % 5 == 0 else user, item, when.strftime("%Y-%m-%dT%H:%M:%S"), rating))
    rows += rows[:40]  # repeated lines
    rows.append(("", "sku-001", "2024-01-02T00:00:00", "3"))  # no user
    path = os.path.join(folder, "events.csv")
    pd.DataFrame(rows, columns=["customer", "product", "ts", "stars"]).to_csv(path, index=False)
    return path


def test_a_csv_read_by_spark_in_many_partitions(spark, tmp_path):
    path = messy_csv(str(tmp_path))
    columns = {"user_id": "customer", "item_id": "product", "timestamp": "ts", "rating": "stars"}
    config = preprocess.PrepareConfig(rating_threshold=2, min_user_interactions=3)
    a, b = str(tmp_path / "pandas"), str(tmp_path / "spark")
    dataset.prepare(load_table(path, columns=columns), a, config)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8192")  # the file read as many splits, in order
    try:
        source = spark_source.read_table(spark, path, columns=columns)
        assert source.interactions.rdd.getNumPartitions() > 4
        spark_engine.prepare(spark, source, b, config)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert_same_dataset(a, b)
    cleaning = PreparedDataset(b).stats["cleaning"]
    # 31 ratings missing, one of them repeated, one user missing; 40 repeated lines less the one dropped as missing
    assert cleaning["dropped_missing"] == 33 and cleaning["dropped_duplicates"] >= 39


def test_the_pipeline_ingest_step_takes_the_engine_from_its_config(spark, tmp_path):
    from tfrec.pipeline import steps

    path = messy_csv(str(tmp_path))
    settings = {"source": "csv", "path": path, "prepare": {"min_user_interactions": 3},
                "options": {"columns": {"user_id": "customer", "item_id": "product", "timestamp": "ts"}}}
    pandas_out = steps.ingest({}, str(tmp_path / "pandas"), settings)
    spark_out = steps.ingest({}, str(tmp_path / "spark"), dict(settings, engine="spark", spark={"master": "local[2]"}))
    assert_same_dataset(pandas_out["data"], spark_out["data"])
    assert os.path.isdir(os.path.join(spark_out["data"], schema.INTERACTIONS_FILE))
    assert spark.sparkContext._jsc is not None  # the test's session still runs: ingest used it, did not stop it
    with pytest.raises(TfrecError, match="data.engine must be pandas or spark, not 'dask'"):
        steps.ingest({}, str(tmp_path / "dask"), dict(settings, engine="dask"))


def test_bad_input_gets_one_sentence(spark, tmp_path):
    path = os.path.join(str(tmp_path), "bad.csv")
    pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": ["2024-01-01", "yesterday"]}) \
        .to_csv(path, index=False)
    with pytest.raises(TfrecError, match="'yesterday' is neither a number nor a date"):
        spark_source.read_table(spark, path)
    pd.DataFrame({"who": ["a"], "item_id": ["x"], "timestamp": [1]}).to_csv(path, index=False)
    with pytest.raises(TfrecError, match=r"lacks the column user_id \(from 'customer'\); it has who, item_id"):
        spark_source.read_table(spark, path, columns={"user_id": "customer"})
    with pytest.raises(TfrecError, match="does not exist"):
        spark_source.read_table(spark, os.path.join(str(tmp_path), "missing.csv"))
    with pytest.raises(TfrecError, match="KEY=VALUE"):
        spark_source.parse_conf(["spark.driver.memory"])
    tiny = pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "timestamp": [1]})
    with pytest.raises(TfrecError, match="empty after 2-core"):
        spark_engine.prepare(spark, load_table(tiny), str(tmp_path / "out"), preprocess.PrepareConfig(
            min_user_interactions=2))
    assert not os.path.exists(tmp_path / "out")  # nothing half-written


def test_the_command_line_engine_flag(tmp_path):
    """`--engine spark` from the command line, a Spark setting passed through, and the pandas engine's dataset."""
    path = messy_csv(str(tmp_path))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    common = [sys.executable, "-m", "tfrec", "data", "prepare", "csv", "--path", path, "--columns",
              "user_id=customer,item_id=product,timestamp=ts,rating=stars", "--format", "tfrecord", "--shards", "2"]
    done = subprocess.run(common + ["--out", str(tmp_path / "pandas")], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(common + ["--out", str(tmp_path / "spark"), "--engine", "spark", "--spark-master", "local[2]",
                                    "--spark-conf", "spark.sql.shuffle.partitions=3"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| interactions " in done.stdout and "tfrec: starting Spark (local[2])" in done.stderr
    assert_same_dataset(str(tmp_path / "pandas"), str(tmp_path / "spark"))
    wrong = subprocess.run(common + ["--out", str(tmp_path / "x"), "--spark-conf", "a=b"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "apply to --engine spark only" in wrong.stderr
    assert "Traceback" not in wrong.stderr and not os.path.exists(tmp_path / "x")
