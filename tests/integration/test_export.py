"""tfrec export: versioned SavedModels that load in a TensorFlow-only process with the documented signatures."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, run_cli, run_cli_batch
from tests.integration.test_cli import assert_clean_error

pytestmark = pytest.mark.e2e


# Runs in a fresh interpreter that imports TensorFlow only: what the signatures of each export look like
# and answer.  argv[1]: a JSON list of [export folder, {signature: inputs}] pairs.
PROBE = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    results = []
    for path, calls in json.loads(sys.argv[1]):
        m = tf.saved_model.load(path)
        out = {}
        for name, fn in m.signatures.items():
            ins = fn.structured_input_signature[1]
            outs = fn.structured_outputs
            out[name] = {"inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in ins.items()},
                         "outputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in outs.items()}}
        answers = {}
        for name, args in calls.items():
            tensors = {k: tf.constant(v, tf.int64 if k == "timestamp" else tf.string) for k, v in args.items()}
            answers[name] = {k: v.numpy().tolist() for k, v in m.signatures[name](**tensors).items()}
        results.append({"signatures": out, "answers": answers})
    mods = sorted(k for k in ("tfrec", "keras_nlp", "tensorflow_recommenders") if k in sys.modules)
    print(json.dumps({"exports": results, "modules": mods}, default=lambda b: b.decode()))
""")


def probe_all(*pairs) -> list[dict]:
    """Loads each (export folder, calls) in one fresh TensorFlow-only process; each result also names
    the modelling modules that process had imported (none, for an export TF Serving can load)."""
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(pairs)], capture_output=True, text=True,
                       timeout=300, env={k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"})
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return [dict(result, modules=got["modules"]) for result in got["exports"]]


def probe(export_dir, calls) -> dict:
    return probe_all((export_dir, calls))[0]


def model_top(model, vocab, history: list[str], k: int, max_len: int = 12) -> list[str]:
    """The Keras next-item model's own top `k` item tokens for one history, reserved ids and the
    history's items left out: what the export's serving_default should answer."""
    import numpy as np

    from tfrec.data import inputs

    ids = vocab.lookup(history)
    scores = model.score(inputs.with_mask_slot([ids], max_len))[0]
    scores[:3] = -np.inf
    scores[ids] = -np.inf
    return [vocab.token(int(i)) for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.fixture(scope="module")
def seq_export(trained, tmp_path_factory):
    """One export of the next-item model with the default settings, for the tests that only read it."""
    _, runs, _ = trained
    root = str(tmp_path_factory.mktemp("shared-export"))
    r = run_cli("export", "--model", runs["next-item"], "--serving-root", root, "--name", "seq")
    assert r.returncode == 0, r.stderr[-2000:]
    return os.path.join(root, "seq", "1")


def test_next_item_export_has_the_documented_signatures_and_answers(trained, tmp_path):
    data, runs, _ = trained
    root = str(tmp_path / "serving")
    r = run_cli("export", "--model", runs["next-item"], "--serving-root", root, "--name", "seq", "--top-k", "5",
                "--explain-window", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.listdir(os.path.join(root, "seq")) == ["1"]
    version = os.path.join(root, "seq", "1")
    assert {"saved_model.pb", "variables", "assets", "assets.extra"} <= set(os.listdir(version))
    meta = json.load(open(os.path.join(version, "assets.extra", "tfrec_model.json")))
    assert meta["task"] == "next-item" and meta["version"] == 1 and meta["top_k"] == 5
    assert meta["explain_window"] == 2
    history = [["i3", "", "i7", "i9"], ["", "", "", "nope"]]
    got = probe(version, {"serving_default": {"history": history},
                          "item_embeddings": {"item_ids": ["i3", "unknown-id"]}})
    assert got["modules"] == []
    sigs = got["signatures"]
    assert sigs["serving_default"] == {"inputs": {"history": ["string", [None, None]]},
                                       "outputs": {"item_ids": ["string", [None, 5]], "scores": ["float32", [None, 5]]}}
    assert sigs["serving_tf_example"]["inputs"] == {"examples": ["string", [None]]}
    assert sigs["rerank"]["inputs"] == {"history": ["string", [None, None]], "diversity": ["float32", [None]],
                                        "popularity_penalty": ["float32", [None]]}
    from tensorflow.python.tools import saved_model_utils

    defaults = saved_model_utils.get_meta_graph_def(version, "serve").signature_def["rerank"].defaults
    assert {k: list(v.float_val) for k, v in defaults.items()} == {"diversity": [0.0], "popularity_penalty": [0.0]}
    assert sigs["item_embeddings"]["outputs"]["embeddings"][0] == "float32"
    answer = got["answers"]["serving_default"]
    assert len(answer["item_ids"]) == 2 and all(len(row) == 5 for row in answer["item_ids"])
    # best first, the history's items never recommended, an all-unknown history still answered
    assert all(a >= b for row in answer["scores"] for a, b in zip(row, row[1:]))
    assert not {"i3", "i7", "i9"} & set(answer["item_ids"][0])
    assert all(i.startswith("i") for i in answer["item_ids"][1])
    # the answer equals the Keras model's own top 5
    import numpy as np

    from tfrec.data.dataset import PreparedDataset
    from tfrec.models import persistence

    ds = PreparedDataset(data)
    model, _ = persistence.load(os.path.join(runs["next-item"], "model"))
    assert answer["item_ids"][0] == model_top(model, ds.item_vocab, ["i3", "i7", "i9"], 5)
    # a batch is packed no wider than its longest history: a short history scores the same beside
    # a long one (wider than max_len) as alone
    import tensorflow as tf

    fn = tf.saved_model.load(version).signatures["serving_default"]
    long = [f"i{n}" for n in range(1, 30)]
    together = fn(history=tf.constant([long, [""] * (len(long) - 3) + ["i3", "i7", "i9"]]))
    alone = fn(history=tf.constant([["i3", "i7", "i9"]]))
    np.testing.assert_allclose(together["scores"][1].numpy(), alone["scores"][0].numpy(), rtol=1e-5, atol=1e-5)
    assert together["item_ids"][1].numpy().tolist() == alone["item_ids"][0].numpy().tolist()
    # explain with a window of 2: only the two newest history items are left out, and named, with their
    # exact score drops (older items never), in a batch with a longer and a shorter history
    explain = tf.saved_model.load(version).signatures["explain"]
    history = ["i3", "i7", "i9", "i12"]
    out = explain(history=tf.constant([history, [""] * 3 + ["i5"], long[-4:]]))
    score, top = out["scores"][0, 0].numpy(), out["item_ids"][0, 0].numpy()
    drops = {}
    for item in history[-2:]:
        variant = fn(history=tf.constant([[i for i in history if i != item]]))
        drops[item.encode()] = score - variant["scores"][0].numpy()[variant["item_ids"][0].numpy().tolist().index(top)]
    expected = sorted(drops, key=drops.get, reverse=True)
    assert out["because_item_ids"][0, 0].numpy().tolist() == expected + [b""]
    np.testing.assert_allclose(out["because_weights"][0, 0].numpy()[:2], [drops[i] for i in expected],
                               rtol=1e-4, atol=1e-5)
    assert out["because_item_ids"][1, :, 0].numpy().tolist() == [b"i5"] * 5
    assert set(out["because_item_ids"][2].numpy().ravel()) <= {b"", *(i.encode() for i in long[-2:])}
    # a second export goes to version 2 (given a relative serving root: the check runs elsewhere);
    # asking for an existing version, or a negative explain window, is refused
    second, again, window = run_cli_batch(
        ("export", "--model", runs["next-item"], "--serving-root", os.path.relpath(root, REPO), "--name", "seq"),
        ("export", "--model", runs["next-item"], "--serving-root", root, "--name", "seq", "--version", "2"),
        ("export", "--model", runs["next-item"], "--serving-root", root, "--name", "seq", "--explain-window", "-1"))
    assert second.returncode == 0, second.stderr[-2000:]
    assert sorted(os.listdir(os.path.join(root, "seq"))) == ["1", "2"]
    assert_clean_error(again, "exists; versions only go up")
    assert_clean_error(window, "--explain-window must be 0 (every history item) or positive")
    assert sorted(os.listdir(os.path.join(root, "seq"))) == ["1", "2"]


def test_ensemble_combines_evaluates_and_exports(trained, tmp_path):
    import numpy as np

    from tfrec.data import inputs
    from tfrec.data.dataset import PreparedDataset
    from tfrec.models import persistence

    data, runs, root = trained
    ens = str(tmp_path / "ens")
    serving = str(tmp_path / "serving")
    made, evaluated, exported, one, again = run_cli_batch(
        ("ensemble", "--models", runs["next-item"], str(root / "pre"), runs["causal"], "--out", ens,
         "--weights", "2", "1", "1"),
        ("evaluate", "--model", ens, "--data", data, "--split", "valid", "--out", str(tmp_path / "ev")),
        ("export", "--model", ens, "--serving-root", serving, "--name", "ens", "--top-k", "5"),
        ("ensemble", "--models", runs["next-item"], "--out", str(tmp_path / "one")),
        ("ensemble", "--models", runs["next-item"], str(root / "pre"), "--out", ens))
    assert made.returncode == 0, made.stderr[-2000:]
    assert "| ensemble |" in made.stdout and "weights 0.5, 0.25, 0.25" in made.stdout
    summary = json.load(open(os.path.join(ens, "validation.json")))
    assert len(summary["member_valid_metrics"]) == 3 and 0 <= summary["valid_metrics"]["ndcg@10"] <= 1
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    report = json.load(open(str(tmp_path / "ev") + ".json"))
    assert report["metrics"]["ndcg@10"] == pytest.approx(summary["valid_metrics"]["ndcg@10"], abs=1e-6)
    assert_clean_error(one, "at least two")
    assert_clean_error(again, "exists")
    assert exported.returncode == 0, exported.stderr[-2000:]
    version = os.path.join(serving, "ens", "1")
    got = probe(version, {"serving_default": {"history": [["i3", "i7", "i9"]]}})
    assert got["modules"] == []
    assert set(got["signatures"]) == {"serving_default", "serving_tf_example", "rerank", "explain"}  # no embeddings
    # the served top 5 is the weighted mean of the members' log-softmax scores (members: a next-item
    # model, a pretrained one and a causal next-item one, which scores from its mask slot's state)
    ds = PreparedDataset(data)
    ids = inputs.with_mask_slot([ds.item_vocab.lookup(["i3", "i7", "i9"])], 12)
    parts = []
    for path in (runs["next-item"], str(root / "pre"), runs["causal"]):
        member, _ = persistence.load(os.path.join(path, "model"))
        logits = member.score(ids)[0].astype(np.float64)
        parts.append(logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
    assert member.backbone.causal and not persistence.load(os.path.join(runs["next-item"], "model"))[0].backbone.causal
    scores = (2 * parts[0] + parts[1] + parts[2]) / 4
    scores[:3] = -np.inf
    scores[ds.item_vocab.lookup(["i3", "i7", "i9"])] = -np.inf
    top = [ds.item_vocab.token(int(i)) for i in np.argsort(-scores, kind="stable")[:5]]
    assert got["answers"]["serving_default"]["item_ids"][0] == top
    np.testing.assert_allclose(got["answers"]["serving_default"]["scores"][0], np.sort(scores)[::-1][:5], atol=1e-4)


def test_retrieval_and_ranking_exports(trained, tmp_path):
    _, runs, _ = trained
    root = str(tmp_path / "serving")
    names = {"retrieval": "retrieval", "ranking": "ranking", "multitask": "both"}
    for r in run_cli_batch(*(("export", "--model", runs[task], "--serving-root", root, "--name", name)
                             for task, name in names.items())):
        assert r.returncode == 0, r.stderr[-2000:]
    calls = {"serving_default": {"user_id": ["u1", "who?"], "item_id": ["i1", "i1"], "history": [["i2"], [""]],
                                 "timestamp": [1_600_000_000, 0]}}
    # the ranking model keeps no per-user parameter (tasks.user_params: false): its users come as features
    by_features = {"serving_default": dict({k: v for k, v in calls["serving_default"].items() if k != "user_id"},
                                           user_features=[["age=30", "nope=1"], ["", ""]])}
    retrieval, ranking, both = probe_all(
        (os.path.join(root, "retrieval", "1"), {"serving_default": {"history": [["i1", "i2"]],
                                                                    "user_features": [["nope=1"]]}}),
        (os.path.join(root, "ranking", "1"), by_features),
        (os.path.join(root, "both", "1"), {"rank": calls["serving_default"],
                                           "serving_default": {"history": [["i1"]], "user_id": ["u1"]}}))
    assert retrieval["modules"] == []
    sig = retrieval["signatures"]["serving_default"]
    # its query tower reads user features only: the request carries them, the export holds no user table
    assert sig["inputs"] == {"history": ["string", [None, None]], "user_features": ["string", [None, None]]}
    assert len(retrieval["answers"]["serving_default"]["item_ids"][0]) == 40  # K = 100 capped at the catalogue
    assert both["signatures"]["serving_default"]["inputs"]["user_id"] == ["string", [None]]  # it embeds user ids
    # a user's features in the request give what the model gives that user from its own feature table
    import numpy as np
    import tensorflow as tf

    from tfrec.contract import ITEM_INDICES, USER_INDEX
    from tfrec.data.dataset import PreparedDataset
    from tfrec.export import exporter
    from tfrec.models import persistence

    data = trained[0]
    ds = PreparedDataset(data)
    users = ["u1", "u7", "u30"]
    profiles = exporter.user_feature_tokens(ds, users)
    assert all(any(t.startswith("age=") for t in p) and any(t.startswith("segment=") for t in p) for p in profiles)
    served = tf.saved_model.load(os.path.join(root, "retrieval", "1")).signatures["serving_default"]
    got = served(history=tf.constant([["i1", "i2"]] * 3), user_features=tf.constant(exporter.padded(profiles)))
    model, _ = persistence.load(os.path.join(runs["retrieval"], "model"))
    ids = np.array([[ds.item_vocab.index("i1"), ds.item_vocab.index("i2"), 1]] * 3, np.int32)
    query = model.query_vectors({ITEM_INDICES: ids, USER_INDEX: np.array([ds.user_vocab.index(u) for u in users],
                                                                         np.int32)})
    scores = query @ model.candidate_matrix().T
    for row in range(3):
        top = got["item_ids"][row].numpy().astype(str)[:5]
        np.testing.assert_allclose(got["scores"][row].numpy()[:5],
                                   [scores[row, ds.item_vocab.index(i)] for i in top], rtol=1e-4, atol=1e-4)
    assert not np.allclose(query[0], query[1])  # the features matter
    # unknown columns, values and a value that is not a number add nothing: the same as no features
    odd = served(history=tf.constant([["i1", "i2"]] * 2), user_features=tf.constant([["", ""], ["nope=1", "age=x"]]))
    np.testing.assert_allclose(odd["scores"][0].numpy(), odd["scores"][1].numpy(), rtol=1e-6)
    assert_no_user_data(os.path.join(root, "retrieval", "1"), ds)
    assert not [f for f in os.listdir(os.path.join(root, "retrieval", "1", "assets")) if "user" in f]
    assert ranking["signatures"]["serving_default"]["outputs"] == {"score": ["float32", [None]]}
    assert ranking["signatures"]["serving_default"]["inputs"] == {
        "user_features": ["string", [None, None]], "item_id": ["string", [None]],
        "history": ["string", [None, None]], "timestamp": ["int64", [None]]}
    assert both["signatures"]["rank"]["inputs"]["user_id"] == ["string", [None]]  # the multitask model's ids
    # the ranking export scores a user's features as the model scores that user from its own tables
    from tfrec.contract import ITEM_INDEX
    from tfrec.data.inputs import time_features

    rank = tf.saved_model.load(os.path.join(root, "ranking", "1")).signatures["serving_default"]
    stamps = np.array([1_600_000_000, 1_600_050_000, 1_600_100_000], np.int64)
    got = rank(user_features=tf.constant(exporter.padded(profiles)), item_id=tf.constant(["i1", "i5", "i9"]),
               history=tf.constant([["i1", "i2"]] * 3), timestamp=tf.constant(stamps))["score"].numpy()
    ranker, _ = persistence.load(os.path.join(runs["ranking"], "model"))
    assert ranker.user_embedding is None and ranker.user_bias is None and ranker.user_factor is None
    want = ranker.ratings({ITEM_INDICES: ids, USER_INDEX: np.array([ds.user_vocab.index(u) for u in users], np.int32),
                           ITEM_INDEX: np.array([ds.item_vocab.index(i) for i in ("i1", "i5", "i9")], np.int32),
                           **time_features(stamps)})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    alone = rank(user_features=tf.constant([[""]] * 3), item_id=tf.constant(["i1", "i5", "i9"]),
                 history=tf.constant([["i1", "i2"]] * 3), timestamp=tf.constant(stamps))["score"].numpy()
    assert not np.allclose(got, alone)  # the features matter
    assert_no_user_data(os.path.join(root, "ranking", "1"), ds)
    assert not [f for f in os.listdir(os.path.join(root, "ranking", "1", "assets")) if "user" in f]
    from tfrec.export import push

    figures = push.evaluate_export(os.path.join(root, "ranking", "1"), data)  # push's check sends features too
    assert figures["rows"] > 0 and 0 < figures["rmse"] < 3 and figures["mae"] <= figures["rmse"]
    assert set(ranking["signatures"]) == {"serving_default", "regress"}
    assert ranking["signatures"]["regress"]["inputs"] == {"inputs": ["string", [None]]}
    scores = ranking["answers"]["serving_default"]["score"]
    assert len(scores) == 2 and all(1.0 - 3 < s < 5.0 + 3 for s in scores)  # a rating, unknown user included
    assert set(both["signatures"]) == {"serving_default", "serving_tf_example", "item_embeddings", "rerank", "explain",
                                       "rank", "regress"}
    assert len(both["answers"]["rank"]["score"]) == 2 and "i1" not in both["answers"]["serving_default"]["item_ids"][0]
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(open(os.path.join(root, "ranking", "1", "saved_model.pb"), "rb").read())
    assert proto.meta_graphs[0].signature_def["regress"].method_name == "tensorflow/serving/regress"


def test_explain_names_the_history_items_whose_removal_lowers_each_score(trained, seq_export):
    import numpy as np
    import tensorflow as tf

    from tfrec.data.dataset import PreparedDataset

    m = tf.saved_model.load(seq_export)
    explain, default = m.signatures["explain"], m.signatures["serving_default"]
    history = ["i3", "i7", "i9", "i12"]
    out = {k: v.numpy() for k, v in explain(history=tf.constant([history, [""] * 3 + ["i5"], [""] * 4])).items()}
    assert out["item_ids"].shape == (3, 10) and out["because_item_ids"].shape == (3, 10, 3)
    plain = default(history=tf.constant([history]))
    assert out["item_ids"][0].tolist() == plain["item_ids"][0].numpy()[:10].tolist()  # the same top 10
    # occlusion by hand: the score of the first recommendation without each history item in turn
    top, score = out["item_ids"][0, 0], out["scores"][0, 0]
    drops = {}
    for j, item in enumerate(history):
        variant = default(history=tf.constant([history[:j] + history[j + 1:]]))
        ids = variant["item_ids"][0].numpy().tolist()
        drops[item.encode()] = score - variant["scores"][0].numpy()[ids.index(top)]
    expected = sorted(drops, key=drops.get, reverse=True)[:3]
    assert out["because_item_ids"][0, 0].tolist() == expected
    np.testing.assert_allclose(out["because_weights"][0, 0], [drops[i] for i in expected], rtol=1e-4, atol=1e-5)
    # one known item: it is the only reason; an empty history has none
    assert out["because_item_ids"][1, :, 0].tolist() == [b"i5"] * 10 and not out["because_item_ids"][1, :, 1:].any()
    assert not out["because_item_ids"][2].any() and not out["because_weights"][2].any()
    # shared attributes: the recommended item's own, and present in some history item
    ds = PreparedDataset(trained[0])
    items = ds.items.set_index("item_id")
    def attrs(item):
        row = items.loc[item]
        return {f"category={row['category']}"} | {f"tags={t}" for t in row["tags"]}
    had = set().union(*(attrs(i) for i in history))
    for rec, shared in zip(out["item_ids"][0], out["shared_attributes"][0]):
        named = {a.decode() for a in shared if a}
        assert named == attrs(rec.decode()) & had


def test_the_python_api_evaluation_and_export_re_rank_alike(trained, seq_export):
    import tensorflow as tf

    from tfrec.evaluation import sequential

    data, runs, _ = trained
    history = ["i3", "i7", "i9", "i12"]
    rerank = tf.saved_model.load(seq_export).signatures["rerank"]
    for knobs in ({"diversity": 0.0, "popularity_penalty": 0.0}, {"diversity": 0.8, "popularity_penalty": 0.0},
                  {"diversity": 0.3, "popularity_penalty": 2.0}):
        served = rerank(history=tf.constant([history]), **{k: tf.constant([v]) for k, v in knobs.items()})
        local = sequential.recommend(runs["next-item"], data, history, k=5, rerank=knobs)
        # the catalogue (40 items) is smaller than the candidate pool at k = 5 and at k = 100: the same lists
        assert local["item_id"].tolist() == [i.decode() for i in served["item_ids"][0].numpy()[:5]], knobs
    plain = sequential.recommend(runs["next-item"], data, history, k=5)
    assert plain["item_id"].tolist() == sequential.recommend(runs["next-item"], data, history, k=5, rerank={
        "diversity": 0.0})["item_id"].tolist()


def test_warmup_file_parses_and_the_check_catches_a_wrong_answer(seq_export, tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    version = seq_export
    logs = [prediction_log_pb2.PredictionLog.FromString(x.numpy())
            for x in tf.data.TFRecordDataset(os.path.join(version, "assets.extra", "tf_serving_warmup_requests"))]
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == \
        {"serving_default", "serving_tf_example", "item_embeddings"}
    from tfrec.errors import TfrecError
    from tfrec.export import exporter

    assert exporter.check(version)["warmup_requests"] == 3
    wrong = tmp_path / "expected.json"
    wrong.write_text(json.dumps({"serving_default": {"item_ids": [["x"] * 100] * 8, "scores": [[0.0] * 100] * 8}}))
    with pytest.raises(TfrecError, match="differs from the in-memory model"):
        exporter.check(version, str(wrong))


def assert_no_user_data(export_dir: str, ds) -> None:
    """Data minimisation: no user id in the assets, in the warm-up requests (made of catalogue items,
    feature values and the empty user id) or among the graph's string constants, and no user's history in
    the warm-up requests."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    from tfrec.data import inputs
    from tfrec.export import exporter

    users = set(ds.user_vocab.tokens[ds.user_vocab.num_reserved:])
    items = set(ds.item_vocab.tokens)
    profile = exporter.user_profile(ds)
    values = set(profile["keys"]) | {f"{c}=" for c, _, _ in profile["numeric"]}
    assets = os.path.join(export_dir, "assets")
    for name in os.listdir(assets):
        assert not users & set(open(os.path.join(assets, name)).read().split()), name
    strings = []
    for raw in tf.data.TFRecordDataset(os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests")):
        request = prediction_log_pb2.PredictionLog.FromString(raw.numpy()).predict_log.request
        for key, proto in request.inputs.items():
            if key == "examples":
                values_ = [x.decode() for v in proto.string_val for f in tf.train.Example.FromString(v)
                           .features.feature.values() for x in f.bytes_list.value]
            else:
                values_ = [v.decode() for v in proto.string_val]
            strings += values_
    numeric = {s for s in strings if s.split("=", 1)[0] + "=" in values}
    assert strings and set(strings) - numeric <= items | values | {""}
    histories = [tuple(ds.item_vocab.token(int(i)) for i in h) for h in inputs.loo_sequences(ds, "valid").histories]
    assert not set(histories) & {tuple(h) for h in exporter.warmup_rows(ds)["history"]}  # no user's history
    graph = saved_model_pb2.SavedModel.FromString(open(os.path.join(export_dir, "saved_model.pb"), "rb").read())
    constants = set()
    for meta in graph.meta_graphs:
        nodes = list(meta.graph_def.node) + [n for f in meta.graph_def.library.function for n in f.node_def]
        for node in nodes:
            if node.op == "Const" and node.attr["dtype"].type == tf.string.as_datatype_enum:
                constants |= {v.decode(errors="replace") for v in node.attr["value"].tensor.string_val}
    assert constants and not users & constants


def test_a_next_item_export_holds_no_user_data(trained, seq_export):
    from tfrec.data.dataset import PreparedDataset

    assert_no_user_data(seq_export, PreparedDataset(trained[0]))


def test_export_bad_inputs_are_one_sentence(trained, tmp_path):
    _, runs, _ = trained
    root = str(tmp_path / "serving")
    cases = [
        (("--model", tmp_path / "nothing", "--name", "m"), "does not exist"),
        (("--model", runs["next-item"], "--name", "a/b"), "must be letters, digits"),
        (("--model", runs["next-item"], "--name", "m", "--data", tmp_path), "pass --data with the prepared dataset folder"),
    ]
    results = run_cli_batch(*(("export", "--serving-root", root, *argv) for argv, _ in cases))
    for (_, message), r in zip(cases, results):
        assert_clean_error(r, message)
    assert not os.path.exists(os.path.join(root, "m"))


def test_push_blesses_only_a_model_that_is_not_worse(seq_export, tmp_path):
    served = str(tmp_path / "served")
    push = ("push", "--candidate", seq_export, "--serving-root", served, "--name", "seq")
    first, again, refused, wrong_metric, kept = run_cli_batch(
        (*push, "--metric", "hr@10"),
        # the same model again: not worse, so it is pushed as version 2
        (*push, "--metric", "hr@10"),
        # a candidate must beat the served figure by more than it can: refused, nothing written
        (*push, "--metric", "hr@10", "--min-delta", "-1"),
        (*push, "--metric", "rmse"),
        (*push, "--metric", "hr@10", "--keep", "2"))
    assert first.returncode == 0 and "nothing served yet" in first.stdout, first.stderr[-2000:]
    assert "pushed as version 1" in first.stdout
    assert again.returncode == 0 and "pushed as version 2" in again.stdout
    assert refused.returncode == 1 and "not pushed" in refused.stdout and "pushed as" not in refused.stdout
    assert_clean_error(wrong_metric, "metric 'rmse' is not reported")
    assert kept.returncode == 0 and "pushed as version 3" in kept.stdout
    assert sorted(os.listdir(os.path.join(served, "seq"))) == ["2", "3"]  # --keep 2 removed version 1
    meta = json.load(open(os.path.join(served, "seq", "2", "assets.extra", "tfrec_model.json")))
    assert meta["version"] == 2 and meta["blessing"]["candidate_value"] == meta["blessing"]["served_value"]


POLLER = textwrap.dedent("""
    import os, sys, time
    base, stop = sys.argv[1], sys.argv[2]
    seen, broken = set(), []
    while not os.path.exists(stop):
        for d in (os.listdir(base) if os.path.isdir(base) else []):
            if not d.isdigit():
                continue
            v = os.path.join(base, d)
            need = ["saved_model.pb", "variables/variables.index", "assets.extra/tfrec_model.json",
                    "assets.extra/tf_serving_warmup_requests"]
            if not all(os.path.exists(os.path.join(v, n)) for n in need):
                broken.append(d)
            seen.add(d)
        time.sleep(0.005)
    print(sorted(seen), sorted(set(broken)))
""")


def test_push_is_atomic_for_a_server_polling_the_folder(seq_export, tmp_path):
    served = str(tmp_path / "served")
    stop = str(tmp_path / "stop")
    poller = subprocess.Popen([sys.executable, "-c", POLLER, os.path.join(served, "seq"), stop],
                              stdout=subprocess.PIPE, text=True)
    r = run_cli("push", "--candidate", seq_export, "--serving-root", served, "--name", "seq", "--metric", "hr@10")
    assert r.returncode == 0, r.stderr[-2000:]
    open(stop, "w").close()
    out, _ = poller.communicate(timeout=120)
    seen, broken = out.strip().split("] [")
    assert "'1'" in seen and broken.strip("[]") == ""  # saw version 1, and never a half-written one


def test_ensemble_search_chooses_members_and_weights_on_validation(trained, tmp_path):
    """Greedy forward selection on validation NDCG@10: the figures it reports are the saved ensemble's own,
    the first member is the best single model, and no round lowers the figure.  The test split is not read."""
    data, runs, root = trained
    from tfrec.evaluation import test_reads

    reads_before = test_reads.summary(data)["reads"]
    out = str(tmp_path / "search")
    candidates = [runs["next-item"], str(root / "pre"), runs["causal"]]
    searched, weights_too = run_cli_batch(
        ("ensemble", "--search", "--models", *candidates, "--out", out, "--max-rounds", "4"),
        ("ensemble", "--search", "--models", *candidates, "--out", out, "--weights", "1", "1", "1"))
    assert searched.returncode == 0, searched.stderr[-2000:]
    assert_clean_error(weights_too, "--search chooses the weights")
    chosen = json.load(open(os.path.join(out, "search.json")))
    singles = [m["ndcg@10"] for m in chosen["single_valid"]]
    assert chosen["rounds"][0]["added"] == singles.index(max(singles))
    figures = [r["valid"]["ndcg@10"] for r in chosen["rounds"] if r.get("valid")]
    assert figures == sorted(figures) and len(figures) <= 5 and chosen["test_read"] is False
    assert sum(chosen["weights"]) == len(figures)  # one weight unit per round that added a model
    if len(chosen["members"]) > 1:  # the saved ensemble scores on validation what the search said
        summary = json.load(open(os.path.join(out, "validation.json")))
        assert summary["valid_metrics"]["ndcg@10"] == pytest.approx(chosen["valid"]["ndcg@10"], abs=1e-4)
    else:
        assert "the search kept one model" in searched.stdout
    assert test_reads.summary(data)["reads"] == reads_before
