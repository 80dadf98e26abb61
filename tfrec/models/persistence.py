"""Weights as TensorFlow checkpoints plus a JSON config; models are rebuilt from the config.

Keras-level ``load_model`` of models holding keras-nlp layers does not work in Keras 2,
so a saved model folder holds ``config.json`` (the backbone's ``get_config()`` and the
task) and ``ckpt/`` (a ``tf.train.Checkpoint`` of the backbone and the task model).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfrec.contract import ENSEMBLE, NEXT_ITEM, PRETRAIN
from tfrec.errors import TfrecError
from tfrec.fileio import atomic_dir
from tfrec.models import adapters
from tfrec.models.backbone_registry import TRANSFORMER, backbone_from_config
from tfrec.models.ensemble import NextItemEnsemble
from tfrec.models.sequence_backbone import SequenceBackbone
from tfrec.models.recommender import TASK_WEIGHTS, RecommenderModel
from tfrec.models.tasks import MaskedItemPretrainer, NextItemRecommender

CONFIG_FILE = "config.json"
MODEL_DIR = "model"  # where a run folder keeps its saved model
CHECKPOINT_DIR = "ckpt"
TASKS = {PRETRAIN: MaskedItemPretrainer, NEXT_ITEM: NextItemRecommender}
# The TFRS tasks share one model class; their constructor arguments are saved as "task_args".
TASKS.update({name: RecommenderModel for name in TASK_WEIGHTS})
# An ensemble's config lists its members' {task, backbone} configs under "members".
TASKS[ENSEMBLE] = NextItemEnsemble
MEMBER_TASKS = {MaskedItemPretrainer: PRETRAIN, NextItemRecommender: NEXT_ITEM}


def save(model: tf.keras.Model, path: str, task: str, extra: dict | None = None) -> None:
    """Writes `model` (a task model with a ``backbone``) to `path`, atomically."""
    if task not in TASKS:
        raise TfrecError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    with atomic_dir(path) as staging:
        config = {"task": task, "backbone": adapters.plain_config(model.backbone.get_config()), **(extra or {})}
        if task == ENSEMBLE:
            config["members"] = [{"task": MEMBER_TASKS[type(m)], "backbone": m.backbone.get_config()}
                                 for m in model.members]
            config["member_weights"] = list(model.member_weights)
        with open(os.path.join(staging, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        with adapters.merged(model):  # low-rank adapters folded into the kernels: a plain model is saved
            tf.train.Checkpoint(model=model).write(os.path.join(staging, CHECKPOINT_DIR, "model"))


def load(path: str, for_serving: bool = False) -> tuple[tf.keras.Model, dict]:
    """Rebuilds the task model saved at `path` from its config and restores its weights.

    `for_serving` leaves out the retrieval task of the TFRS models (its metrics hold a
    tf.data candidate index, which a SavedModel cannot hold); towers and networks stay.
    """
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise TfrecError(f"{path} is not a saved tfrec model: it has no {CONFIG_FILE}")
    with open(config_path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError:
            raise TfrecError(f"{config_path} is not valid JSON") from None
    task = config.get("task")
    if task not in TASKS:
        raise TfrecError(f"{config_path} names an unknown task {task!r}")
    try:
        if task == ENSEMBLE:
            members = []
            for member in config["members"]:
                if member.get("task") not in MEMBER_TASKS.values():
                    raise ValueError(f"an ensemble member has task {member.get('task')!r}")
                members.append(TASKS[member["task"]](backbone_from_config(member["backbone"])))
            model = NextItemEnsemble(members, config.get("member_weights"))
        else:
            backbone = backbone_from_config(config["backbone"])
            if TASKS[task] is RecommenderModel:
                args = dict(config["task_args"], **({"retrieval_weight": 0.0} if for_serving else {}))
                model = RecommenderModel.built(backbone, **args)
            else:
                model = TASKS[task](backbone)
    except (TypeError, ValueError, KeyError) as e:
        raise TfrecError(f"{config_path} does not describe a model this tfrec can build: {e}") from None
    status = tf.train.Checkpoint(model=model).read(os.path.join(path, CHECKPOINT_DIR, "model"))
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError:
        raise TfrecError(f"the checkpoint in {path} does not hold this model's weights") from None
    return model, config


SHAPE_KEYS = ("vocabulary_size", "max_len", "hidden_dim", "num_layers", "num_heads", "intermediate_dim",
              "feature_vocabulary_size")


def check_compatible(mine: dict, saved: dict, path: str, shape_keys=SHAPE_KEYS) -> None:
    """Raises one sentence when the saved backbone config `saved` cannot seed `mine`; `shape_keys`: the
    settings that must be equal (a pretraining on several datasets leaves out the vocabulary sizes)."""
    kinds = [c.get("backbone_type", TRANSFORMER) for c in (mine, saved)]
    if kinds[0] != kinds[1]:
        raise TfrecError(f"the pretrained model at {path} has a {kinds[1]} backbone, but this model has a "
                         f"{kinds[0]} one (model.backbone)")
    for key in shape_keys:
        if mine.get(key) != saved.get(key):
            raise TfrecError(f"the pretrained model at {path} has {key} {saved.get(key)}, "
                             f"but this model has {mine.get(key)}; it was pretrained on other data or settings")
    if (mine.get("feature_table") is None) != (saved.get("feature_table") is None):
        which = "uses" if saved.get("feature_table") is not None else "does not use"
        raise TfrecError(f"the pretrained model at {path} {which} item features and this model "
                         f"{'does not' if which == 'uses' else 'does'}; set model.item_features the same way")


def load_backbone_weights(backbone: SequenceBackbone, path: str) -> dict:
    """Copies the backbone weights of the model saved at `path` into `backbone`.

    The saved backbone must have the same shape (vocabulary, width, layers); a
    mismatch is reported in one sentence.
    """
    saved, config = load(path)
    check_compatible(backbone.get_config(), config["backbone"], path)
    backbone.set_weights(saved.backbone.get_weights())
    return config


def resolve_model_dir(path: str) -> str:
    """A saved model folder: `path` itself, or the ``model/`` of a run folder."""
    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return path
    inner = os.path.join(path, MODEL_DIR)
    if os.path.isfile(os.path.join(inner, CONFIG_FILE)):
        return inner
    if os.path.isdir(path):
        raise TfrecError(f"{path} holds no saved tfrec model (no {CONFIG_FILE} there or in {MODEL_DIR}/)")
    raise TfrecError(f"{path} does not exist")
