"""Any registered backbone goes the whole way: pretrain, fine-tune, export, serve.

One backbone is defined in this file and registered here, with no change to the library; the GRU
ships with tfrec and is driven through the command line."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_cli_batch
from tfrec.contract import ITEM_INDICES, PADDING_MASK, SEQUENCE_OUTPUT
from tfrec.models.backbone_registry import register_backbone

pytestmark = pytest.mark.slow


@register_backbone("test-mean-of-left", causal=True)
class MeanOfLeftBackbone(tf.keras.Model):
    """A backbone written in a test: each position's state is a projection of the mean embedding of the
    items up to it.  It keeps the protocol of backbone_registry (embedding, sizes, config)."""

    def __init__(self, vocabulary_size, max_len=50, hidden_dim=16, dropout=0.0, output_extra_dim=0,
                 output_last_item=False, **unused):
        import keras_nlp

        item_ids = tf.keras.Input(shape=(None,), dtype="int32", name=ITEM_INDICES)
        padding_mask = tf.keras.Input(shape=(None,), dtype="bool", name=PADDING_MASK)
        embedding = keras_nlp.layers.ReversibleEmbedding(vocabulary_size, hidden_dim, name="item_embedding")
        x = embedding(item_ids)
        present = tf.keras.layers.Lambda(lambda m: tf.cast(m, tf.float32)[..., None])(padding_mask)
        summed = tf.keras.layers.Lambda(lambda t: tf.cumsum(t[0] * t[1], axis=1))([x, present])
        count = tf.keras.layers.Lambda(lambda m: tf.maximum(tf.cumsum(m, axis=1), 1.0))(present)
        mean = tf.keras.layers.Lambda(lambda t: t[0] / t[1])([summed, count])
        out = tf.keras.layers.Dense(hidden_dim, activation="tanh", name="project")(mean)
        super().__init__(inputs={ITEM_INDICES: item_ids, PADDING_MASK: padding_mask}, outputs={SEQUENCE_OUTPUT: out})
        self.vocabulary_size, self.max_len, self.hidden_dim, self.dropout = vocabulary_size, max_len, hidden_dim, dropout
        self.token_embedding, self.feature_embedding = embedding, None
        self.causal, self.output_features = True, False
        self.output_extra_dim, self.output_last_item = int(output_extra_dim), bool(output_last_item)

    def output_item_embeddings(self):
        return self.token_embedding.embeddings

    def get_config(self):
        return {"backbone_type": "test-mean-of-left", "vocabulary_size": self.vocabulary_size,
                "max_len": self.max_len, "hidden_dim": self.hidden_dim, "dropout": self.dropout,
                "output_extra_dim": self.output_extra_dim, "output_last_item": self.output_last_item}

    @classmethod
    def from_config(cls, config):
        return cls(**{k: v for k, v in config.items() if k != "backbone_type"})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic

    path = str(tmp_path_factory.mktemp("backbones") / "data")
    prepare(generate_synthetic(num_users=80, num_items=30, seed=5), path)
    return path


def test_a_backbone_defined_outside_the_library_pretrains_finetunes_exports_and_serves(data, tmp_path):
    from tfrec.export import exporter
    from tfrec.models import persistence
    from tfrec.serving import Client
    from tfrec.serving.models import ModelManager, single_model_config
    from tfrec.serving.server import Server
    from tfrec.training import trainer
    from tfrec.training.config import RunConfig

    config = RunConfig.from_dict({"model": {"backbone": "test-mean-of-left", "hidden_dim": 16, "max_len": 12},
                                  "pretrain": {"epochs": 1, "validate_every": 1},
                                  "finetune": {"epochs": 1, "examples": "causal"}})
    pre, ft = str(tmp_path / "pre"), str(tmp_path / "ft")
    pretrained = trainer.pretrain(data, pre, config, verbose=0)
    finetuned = trainer.finetune(data, ft, config, pretrained=pre, verbose=0)
    assert pretrained["summary"]["valid"]["ndcg@10"] >= 0 and finetuned["summary"]["valid"]["ndcg@10"] > 0
    model, saved = persistence.load(os.path.join(ft, "model"))
    assert type(model.backbone) is MeanOfLeftBackbone and saved["backbone"]["backbone_type"] == "test-mean-of-left"
    version = exporter.export(ft, str(tmp_path / "serving"), "mean", k=5)  # checked in a TensorFlow-only process
    manager = ModelManager(single_model_config("mean", os.path.dirname(version)), poll_seconds=0)
    server = Server(manager, port=0, rest_api_port=None)
    server.start()
    client = Client(f"127.0.0.1:{server.port}", timeout=20)
    try:
        recs = client.recommend("mean", [["i1", "i2"]], k=5)[0]
    finally:
        client.close()
        server.stop(grace=1)
    assert len(recs) == 5 and not {"i1", "i2"} & {i for i, _ in recs}


def test_a_gru_pretrained_autoregressively_fine_tunes_and_exports_from_the_command_line(data, tmp_path):
    small = ["--set", "model.hidden_dim=16", "--set", "model.max_len=12", "--set", "pretrain.validate_every=1",
             "--verbose", "2"]
    gru = ["--set", "model.backbone=gru"]
    results = run_cli_batch(
        # its natural objective: every position predicts the item after it
        ("pretrain", "--data", data, "--out", tmp_path / "pre", "--epochs", "1", "--set",
         "pretrain.objective=autoregressive", *small, *gru),
        ("finetune", "--data", data, "--pretrained", tmp_path / "pre", "--out", tmp_path / "ft", "--epochs", "1",
         "--set", "finetune.examples=causal", *small, *gru),
        ("export", "--model", tmp_path / "ft", "--serving-root", tmp_path / "serving", "--name", "gru", "--top-k", "5"),
        # a GRU reads left to right: prefix examples are refused in one sentence
        ("finetune", "--data", data, "--from-scratch", "--out", tmp_path / "bad", "--epochs", "1", *small, *gru),
        # and a transformer's pretrained weights do not seed it
        ("finetune", "--data", data, "--pretrained", tmp_path / "pre", "--out", tmp_path / "bad2", "--epochs", "1",
         "--set", "finetune.examples=causal", *small))
    for r in results[:3]:
        assert r.returncode == 0, r.stderr[-2000:]
    import json

    with open(tmp_path / "pre" / "model" / "config.json") as f:
        saved = json.load(f)
    assert saved["task"] == "next-item" and saved["backbone"]["backbone_type"] == "gru"
    assert saved["pretrain_objective"] == "autoregressive"
    with open(tmp_path / "ft" / "validation.json") as f:
        assert json.load(f)["epochs"]  # validated after its epoch
    assert results[3].returncode == 2 and "finetune.examples: causal" in results[3].stderr
    assert results[4].returncode == 2 and "has a gru backbone, but this model has a transformer one" in results[4].stderr
    export = tmp_path / "serving" / "gru" / "1"
    loaded = tf.saved_model.load(str(export))
    out = loaded.signatures["serving_default"](history=tf.constant([["i1", "i2", "i3"]]))
    assert out["item_ids"].shape == (1, 5) and np.all(np.diff(out["scores"].numpy()[0]) <= 0)
