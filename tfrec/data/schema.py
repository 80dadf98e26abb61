"""Canonical column, file and token names, defined once for the whole package.

Interactions: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64, seconds or
order), optional ``rating`` (float32).  Items: ``item_id`` plus features.  Users:
``user_id`` plus features.  Ids stay the strings of the source data everywhere
outside the model; integer indices come from the vocabularies.
"""

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
RATING = "rating"
# Integer indices added to prepared tables (vocabulary positions).
USER_INDEX = "user_index"
ITEM_INDEX = "item_index"

# Item features the loaders produce (any others are kept under their own names).
TITLE = "title"
YEAR = "year"
GENRES = "genres"
ATTRIBUTES = "attributes"
TAGS = "tags"
# User features.
AGE = "age"
GENDER = "gender"
OCCUPATION = "occupation"
ZIP_CODE = "zip_code"

INTERACTION_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP)

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

# Split names.
TRAIN = "train"
VALID = "valid"
TEST = "test"
SPLITS = (TRAIN, VALID, TEST)
LEAVE_ONE_OUT = "loo"
RANDOM_SPLIT = "random"
TEMPORAL_SPLIT = "temporal"
SPLIT_SCHEMES = (LEAVE_ONE_OUT, RANDOM_SPLIT, TEMPORAL_SPLIT)

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
ITEM_VOCAB_FILE = "items.txt"
USER_VOCAB_FILE = "users.txt"
FORMAT_VERSION = 1
