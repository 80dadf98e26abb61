"""tfrec's contract: every key, name and scheme the parts agree on, defined once, importing nothing.

Four families of names, each with one meaning:

- **Columns** of the source data and of prepared tables: ``user_id`` and ``item_id`` are the source's
  string ids everywhere; ``user_index`` and ``item_index`` are their integer positions in the vocabularies.
- **Model features and labels**: the keys of the ``tf.data`` batches and of the models' input and output
  dicts.  A history inside a model is ``item_indices`` (int32 vocabulary positions, 0 = padding), never
  ``item_ids``, which always means string ids.
- **Signatures**: the names of the exported serving signatures and of their inputs and outputs, which
  clients rely on (``history`` in, ``item_ids`` and ``scores`` out...).
- **Schemes**: the split schemes (how a dataset is cut), the split parts (which piece), and the task names
  (what a fine-tuned model does).

The words "split" and "task" each name one thing here: a *split scheme* is ``loo``, ``random``,
``temporal`` or ``cold``; a *split part* is ``train``, ``valid`` or ``test``; a *task* is one of
:data:`TASKS`.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------
# Columns

USER_ID = "user_id"  # the source's string id
ITEM_ID = "item_id"  # the source's string id
TIMESTAMP = "timestamp"
RATING = "rating"
USER_INDEX = "user_index"  # position in the user vocabulary
USER_FEATURE_IDS = "user_feature_ids"  # [batch, width] int32 a user's categorical feature ids (0 = none)
USER_NUMERIC = "user_numeric"  # [batch, k] float32 a user's standardised numeric features (0 = the mean)
ITEM_INDEX = "item_index"  # position in the item vocabulary
INTERACTION_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP)
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

# ---------------------------------------------------------------------------
# Model features and labels (tf.data batches, model inputs and outputs)

ITEM_INDICES = "item_indices"  # [batch, seq_len] int32 item vocabulary positions, 0 = padding, 1 = mask
PADDING_MASK = "padding_mask"  # [batch, seq_len] bool, True on real items
MASK_POSITIONS = "mask_positions"
TARGET = "target"
WEIGHT = "weight"
HOUR = "hour"  # time features of a ranking example, from its timestamp
WEEKDAY = "weekday"
# Labels of the item-prediction batches.
ITEMS = "items"
CONTINUES = "continues"
TEACHER_ITEMS = "teacher_items"
TEACHER_PROBS = "teacher_probs"
# Outputs of the backbone and the heads.
SEQUENCE_OUTPUT = "sequence_output"
ITEM_HIDDEN = "item_hidden"
ATTRIBUTE_LOGITS = "attribute_logits"
CONTINUATION_LOGIT = "continuation_logit"

# ---------------------------------------------------------------------------
# Serving signatures: names, inputs and outputs

SERVING_DEFAULT = "serving_default"
SERVING_TF_EXAMPLE = "serving_tf_example"
ITEM_EMBEDDINGS = "item_embeddings"
RANK = "rank"
REGRESS = "regress"
REGRESS_METHOD = "tensorflow/serving/regress"
HISTORY = "history"  # [-1, -1] string item ids, oldest first, "" = padding
# [-1, -1] string "column=value" features of the user (gender=F, age=25), "" = padding: what a retrieval
# export whose query tower reads user features only takes instead of a user id (it holds no user table)
USER_FEATURES = "user_features"
EXAMPLES = "examples"  # [-1] serialised tf.Example
ITEM_IDS = "item_ids"  # string item ids: the top-K output, and the item_embeddings input
SCORES = "scores"
# The sequence models' re-ranking signature and its optional inputs (tfrec/models/reranking.py)
RERANK = "rerank"
DIVERSITY = "diversity"
POPULARITY_PENALTY = "popularity_penalty"
RERANK_KNOBS = (DIVERSITY, POPULARITY_PENALTY)
# The sequence models' explain signature and its outputs beside item_ids and scores
EXPLAIN = "explain"
BECAUSE_ITEM_IDS = "because_item_ids"  # [-1, E, M] the history items whose removal lowers each score most
BECAUSE_WEIGHTS = "because_weights"  # [-1, E, M] that score drop
# The history items the explain signature leaves out in turn, one forward pass each: the most recent
# EXPLAIN_WINDOW (0: all).  docs/BENCHMARKS.md ("Explanations") measures how often the item whose removal
# lowers a recommendation most is among them.
EXPLAIN_WINDOW = 10
SHARED_ATTRIBUTES = "shared_attributes"  # [-1, E, F] "column=value" attributes shared with the history
SCORE = "score"
EMBEDDINGS = "embeddings"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"

# ---------------------------------------------------------------------------
# Schemes: split schemes, split parts, tasks

TRAIN = "train"
VALID = "valid"
TEST = "test"
SPLIT_PARTS = (TRAIN, VALID, TEST)
LEAVE_ONE_OUT = "loo"
RANDOM_SPLIT = "random"
TEMPORAL_SPLIT = "temporal"
COLD_SPLIT = "cold"
SPLIT_SCHEMES = (LEAVE_ONE_OUT, RANDOM_SPLIT, TEMPORAL_SPLIT)  # of a prepared dataset
TASK_SPLIT_SCHEMES = (LEAVE_ONE_OUT, RANDOM_SPLIT, TEMPORAL_SPLIT, COLD_SPLIT)  # of the TFRS tasks

PRETRAIN = "pretrain"
NEXT_ITEM = "next-item"
RETRIEVAL = "retrieval"
RANKING = "ranking"
MULTITASK = "multitask"
COLD_START = "cold-start"
ENSEMBLE = "ensemble"
TFRS_TASKS = (RETRIEVAL, RANKING, MULTITASK, COLD_START)
TASKS = (NEXT_ITEM, *TFRS_TASKS)  # what `finetune --task` takes
RATED_TASKS = (RANKING, MULTITASK)  # tasks that predict a rating
SEQUENCE_TASKS = (PRETRAIN, NEXT_ITEM, ENSEMBLE, RETRIEVAL, COLD_START)  # exported with SequenceServing

# What a fine-tuning trains (finetune.trainable; tfrec.models.adapters): every weight, the head on a frozen
# backbone, or low-rank adapters plus the head.
TRAINABLE = ("all", "head", "adapters")
