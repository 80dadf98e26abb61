"""Canonical column, file and token names, defined once for the whole package.

Interactions: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64, seconds or
order), optional ``rating`` (float32).  Items: ``item_id`` plus features.  Users:
``user_id`` plus features.  Ids stay the strings of the source data everywhere
outside the model; integer indices come from the vocabularies.
"""

# The column names and split schemes are tfrec's contract (tfrec/contract.py); they are named here too,
# beside the file and token names of a prepared dataset, for the data modules.
from tfrec.contract import (AGE, ATTRIBUTES, GENDER, GENRES, INTERACTION_COLUMNS, ITEM_ID,  # noqa: F401
                            ITEM_INDEX, LEAVE_ONE_OUT, OCCUPATION, RANDOM_SPLIT, RATING, SPLIT_SCHEMES, TAGS,
                            TEMPORAL_SPLIT, TEST, TIMESTAMP, TITLE, TRAIN, USER_ID, USER_INDEX, VALID, YEAR,
                            ZIP_CODE)
from tfrec.contract import SPLIT_PARTS as SPLITS  # noqa: F401

# Reserved vocabulary entries.  Item vocabulary: 0 = padding, 1 = mask, 2 = out of
# vocabulary, real items from 3.  Feature and user vocabularies: 0 = padding,
# 1 = out of vocabulary.
PAD_TOKEN = "[PAD]"
MASK_TOKEN = "[MASK]"
OOV_TOKEN = "[OOV]"
PAD_ID = 0
MASK_ID = 1
ITEM_OOV_ID = 2
NUM_ITEM_RESERVED = 3
FEATURE_OOV_ID = 1
NUM_FEATURE_RESERVED = 2

# Files of a prepared dataset folder.
DATASET_JSON = "dataset.json"
STATS_JSON = "stats.json"
INTERACTIONS_FILE = "interactions.parquet"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
VOCAB_DIR = "vocab"
SPLITS_DIR = "splits"
# With `tfrec data prepare --format tfrecord`: each user's leave-one-out sequence as a
# tf.train.Example, in sharded TFRecord files.
SEQUENCES_DIR = "sequences"
SEQUENCE_SHARD = "loo-{index:05d}-of-{count:05d}.tfrecord"
SEQUENCE_SHARD_GLOB = "loo-*-of-*.tfrecord"
FORMATS = ("parquet", "tfrecord")
ENGINES = ("pandas", "spark")  # what computes a prepared dataset: the same files either way
ITEM_VOCAB_FILE = "items.txt"
USER_VOCAB_FILE = "users.txt"
FORMAT_VERSION = 1
