"""Checks an export the way a stock TensorFlow Serving would meet it.

Run as a script in a fresh interpreter (``python check_export.py EXPORT_DIR [EXPECTED_JSON]``);
it imports TensorFlow and the serving protos, nothing of tfrec, Keras, keras-nlp or
tensorflow-recommenders.  It checks that

1. every op in the graph and its functions is registered by core TensorFlow;
2. the SavedModel loads, and loading pulled in none of the modelling libraries;
3. every warmup request in ``assets.extra/tf_serving_warmup_requests`` runs through its
   signature, and (with EXPECTED_JSON) its outputs equal the in-memory model's.

Prints one JSON line on success; on failure, one line starting ``check failed:`` and exit 1.
"""

import json
import os
import sys

# The modelling libraries an export must not need.  (TensorFlow's own Python loader may
# import Keras lazily; the C++ model server has no Python at all.)
FORBIDDEN = ("tfrec", "keras_nlp", "keras_hub", "tensorflow_recommenders", "tensorflow_text", "scann")


def fail(message: str) -> None:
    print(f"check failed: {message}", flush=True)
    sys.exit(1)


def op_names(proto) -> tuple[set, set]:
    ops, functions = set(), set()
    for graph in proto.meta_graphs:
        ops.update(node.op for node in graph.graph_def.node)
        for fn in graph.graph_def.library.function:
            functions.add(fn.signature.name)
            ops.update(node.op for node in fn.node_def)
    return ops, functions


def same_outputs(signature: str, got: dict, expected: dict) -> None:
    import numpy as np

    for key, want in expected.items():
        if key not in got:
            fail(f"signature {signature} has no output {key!r}")
        value = got[key]
        if key in ("scores", "score"):
            if np.shape(value) != np.shape(want) or not np.allclose(np.asarray(value, np.float64), np.asarray(want, np.float64), rtol=1e-3, atol=1e-3):
                fail(f"signature {signature} output {key} differs from the in-memory model's")
    if "item_ids" in expected:
        scores = np.asarray(expected["scores"], np.float64)
        got_ids = np.asarray(got["item_ids"]).astype(str)
        want_ids = np.asarray(expected["item_ids"]).astype(str)
        gaps = np.abs(np.diff(scores, axis=1))
        separated = np.ones_like(scores, bool)  # a position whose score ties no neighbour must hold the same item
        separated[:, 1:] &= gaps > 1e-3
        separated[:, :-1] &= gaps > 1e-3
        if got_ids.shape != want_ids.shape or (got_ids[separated] != want_ids[separated]).any():
            fail(f"signature {signature} ranks other items than the in-memory model")


def main() -> None:
    if len(sys.argv) not in (2, 3):
        fail("usage: check_export.py EXPORT_DIR [EXPECTED_JSON]")
    export_dir = sys.argv[1]
    expected = {}
    if len(sys.argv) == 3:
        with open(sys.argv[2]) as f:
            expected = json.load(f)
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    path = os.path.join(export_dir, "saved_model.pb")
    if not os.path.isfile(path):
        fail(f"{path} is missing")
    proto = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    ops, functions = op_names(proto)
    unknown = sorted(op for op in ops if op not in functions and op_def_registry.get(op) is None)
    if unknown:
        fail(f"ops outside core TensorFlow: {', '.join(unknown)}")
    loaded = tf.saved_model.load(export_dir)
    pulled = sorted(m for m in FORBIDDEN if m in sys.modules)
    if pulled:
        fail(f"loading the export imported {', '.join(pulled)}")

    from tensorflow_serving.apis import prediction_log_pb2

    warmup = os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests")
    if not os.path.isfile(warmup):
        fail(f"{warmup} is missing")
    count = 0
    for record in tf.data.TFRecordDataset(warmup):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            request = log.predict_log.request
            name = request.model_spec.signature_name or "serving_default"
            if name not in loaded.signatures:
                fail(f"a warmup request names signature {name!r}, which the export lacks")
            args = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            outputs = {k: v.numpy() for k, v in loaded.signatures[name](**args).items()}
        elif kind == "regress_log":
            request = log.regress_log.request
            name = request.model_spec.signature_name
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            outputs = {k: v.numpy() for k, v in loaded.signatures[name](inputs=tf.constant(examples)).items()}
            if "outputs" not in outputs or len(outputs["outputs"]) != len(examples):
                fail(f"signature {name} did not give one output per example")
            want = expected.get("rank") or expected.get("serving_default") or {}
            if "score" in want:
                same_outputs(name, {"score": outputs["outputs"]}, {"score": want["score"]})
        else:
            fail(f"warmup record of unsupported kind {kind}")
        if kind == "predict_log" and name in expected:
            same_outputs(name, outputs, expected[name])
        count += 1
    if not count:
        fail("the warmup file holds no request")
    print(json.dumps({"ops": len(ops), "warmup_requests": count, "signatures": sorted(loaded.signatures)}))


if __name__ == "__main__":
    main()
