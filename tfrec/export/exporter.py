"""TFX-style export: a versioned SavedModel under a serving root, checked before it counts.

``export(model_dir, serving_root, name)`` writes ``ROOT/NAME/<version>/``:

    saved_model.pb, variables/        the serving graph (signatures in :mod:`tfrec.export.signatures`)
    assets/                           the item (and user) vocabularies the lookups read
    assets.extra/tf_serving_warmup_requests   PredictionLogs of representative requests
    assets.extra/tfrec_model.json     task, data fingerprint, config, validation metrics, time, version

The export is written beside the version folders, then checked in a fresh process
that imports only TensorFlow (and the serving protos): it loads, every op is a core
op, the warmup requests run and their outputs equal the in-memory model's.  Only then
is it renamed into place, so a server polling ROOT/NAME never sees half a model, and a
failed check leaves nothing behind.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from tfrec import contract
from tfrec.data import schema
from tfrec.errors import TfrecError

METADATA_FILE = "tfrec_model.json"
WARMUP_FILE = "tf_serving_warmup_requests"
EXPECTED_FILE = "expected_outputs.json"
SEQUENCE_TASKS = contract.SEQUENCE_TASKS
RANKING_TASKS = contract.RATED_TASKS
WARMUP_ROWS = 8


def versions(root: str) -> list[int]:
    if not os.path.isdir(root):
        return []
    return sorted(int(d) for d in os.listdir(root) if d.isdigit() and os.path.isdir(os.path.join(root, d)))


def _dataset_dir(config: dict, data_dir: str | None, model_dir: str) -> str:
    path = data_dir or config.get("dataset")
    if not path or not os.path.isfile(os.path.join(path, "dataset.json")):
        raise TfrecError(f"the dataset the model at {model_dir} was trained on ({path}) is not there; "
                         "pass --data with the prepared dataset folder (its vocabularies go into the export)")
    return path


def warmup_rows(dataset, rows: int = WARMUP_ROWS) -> dict:
    """Requests that exercise every signature and check the export, holding no user's data: histories of 1
    to 12 catalogue items taken in vocabulary order from points spread over the catalogue, the empty user
    id (an unknown user), an item id and a fixed time per row.  The same keys as :func:`validation_rows`."""
    vocab = dataset.item_vocab
    items = vocab.tokens[vocab.num_reserved:]
    n, step = len(items), max(1, len(items) // rows)
    return {"history": [[items[(r * step + j) % n] for j in range(1 + (7 * r) % 12)] for r in range(rows)],
            "user_id": [""] * rows, "item_id": [items[(r * step + step // 2) % n] for r in range(rows)],
            "timestamp": [1_600_000_000 + 86_400 * r for r in range(rows)], "rating": None}


def validation_rows(dataset, task: str, run_config: dict, rows: int | None = None) -> dict:
    """Held-out validation rows of the model's own split, as string ids (what a client sends).

    Returns ``history`` (lists of item ids), ``user_id``, ``item_id`` (the held-out item),
    ``timestamp`` (unix seconds; 0 for leave-one-out next-item rows) and ``rating`` (or
    None); `rows` picks that many, evenly spread.
    """
    from tfrec.data import inputs, schema, task_splits

    scheme = run_config.get("split", schema.LEAVE_ONE_OUT)
    if scheme == schema.LEAVE_ONE_OUT and task not in RANKING_TASKS:
        seqs = inputs.loo_sequences(dataset, schema.VALID)
        users, histories, items = seqs.user_indices, seqs.histories, seqs.targets
        ratings, timestamps = None, np.zeros(len(items), np.int64)
    else:
        part = task_splits.load(dataset, scheme, seed=run_config["seed"],
                                valid_fraction=run_config["tasks"]["valid_fraction"],
                                cold_fraction=run_config["tasks"]["cold_fraction"]).valid
        users, histories, items, ratings, timestamps = (part.users, part.histories, part.items, part.ratings,
                                                        part.timestamps)
    pick = np.arange(len(items)) if rows is None else np.linspace(0, len(items) - 1, rows).astype(int)
    item, user = dataset.item_vocab.token, dataset.user_vocab.token
    return {"history": [[item(int(x)) for x in histories[i]] for i in pick],
            "user_id": [user(int(users[i])) for i in pick], "item_id": [item(int(items[i])) for i in pick],
            "timestamp": [int(timestamps[i]) for i in pick],
            "rating": None if ratings is None else np.asarray(ratings)[pick]}


def padded(histories: list[list[str]]) -> np.ndarray:
    """Ragged string histories -> [n, longest] with empty strings in front (padding)."""
    width = max(1, max(len(h) for h in histories))
    return np.array([[""] * (width - len(h)) + list(h) for h in histories], dtype=object)


def feature_names(dataset, side: str) -> tuple[np.ndarray, list[str]]:
    """Each row's categorical and list feature ids of `side` ("item" or "user",
    :meth:`PreparedDataset.feature_table`) and the ``"column=value"`` name of every id (0: "")."""
    table, _, columns = dataset.feature_table(side)
    names = [""]
    for column in columns:
        vocab = dataset.feature_vocab(side, column)
        names += [f"{column}={vocab.token(i)}" for i in range(schema.NUM_FEATURE_RESERVED, len(vocab))]
    return table, names


def attribute_names(dataset) -> tuple[np.ndarray, list[str]]:
    """:func:`feature_names` of the items, for the explain signature (a table of one empty column where the
    items have no attribute columns)."""
    table, names = feature_names(dataset, "item")
    if not table.shape[1]:
        table = np.zeros((len(dataset.item_vocab), 1), np.int32)
    return table, names


def user_profile(dataset) -> dict | None:
    """What a retrieval export needs to read a user's own features from a request instead of a user id:
    ``keys`` (``"column=value"`` of every categorical and list user feature value) with their ``ids`` in
    the space of :meth:`PreparedDataset.feature_table` ("user"), and ``numeric``: ``(column, mean, std)`` of
    each numeric user feature, in the order of :meth:`PreparedDataset.numeric_table`.  None without users."""
    if dataset.users is None:
        return None
    _, names = feature_names(dataset, "user")
    _, numeric = dataset.numeric_table("user")
    features = dataset.user_features
    return {"keys": names[1:], "ids": list(range(1, len(names))),
            "numeric": [(c, features[c]["mean"], features[c]["std"] or 1.0) for c in numeric]}


def profile_rows(profile: dict, rows: int) -> list[list[str]]:
    """Warm-up users made of the feature values themselves (no user's data): row r names the r-th
    categorical value and, for each numeric feature, its mean plus r standard deviations over 4; row 0 none."""
    keys = profile["keys"]
    out = [[]]
    for r in range(1, rows):
        out.append(([keys[(r - 1) % len(keys)]] if keys else []) +
                   [f"{name}={mean + std * r / 4:g}" for name, mean, std in profile["numeric"]])
    return out


def profile_features(profile: dict, tokens: list[list[str]], numeric: bool) -> dict:
    """The query tower's user inputs for lists of ``"column=value"`` strings, computed in numpy as the
    export's signatures compute them in the graph (the check of one against the other)."""
    ids = dict(zip(profile["keys"], profile["ids"]))
    width = max([1] + [len(t) for t in tokens])
    table = np.zeros((len(tokens), width), np.int32)
    for row, values in enumerate(tokens):
        table[row, :len(values)] = [ids.get(v, 0) for v in values]
    out = {contract.USER_FEATURE_IDS: table}
    if numeric:
        columns = []
        for name, mean, std in profile["numeric"]:
            values = [[float(v.split("=", 1)[1]) for v in row if v.startswith(name + "=")] for row in tokens]
            columns.append([np.mean([(x - mean) / std for x in v]) if v else 0.0 for v in values])
        out[contract.USER_NUMERIC] = np.asarray(columns, np.float32).T.reshape(len(tokens), -1)
    return out


def user_feature_tokens(dataset, user_ids: list[str]) -> list[list[str]]:
    """Each user's features as a client of a features-taking export sends them: ``"column=value"``
    strings of the categorical, list and numeric user features the dataset holds (none for an unknown
    user)."""
    features, frame = dataset.user_features, dataset.users
    usable = [c for c, f in features.items() if f["kind"] in ("list", "categorical", "numeric")]
    rows = {} if frame is None else dict(zip(frame[schema.USER_ID].astype(str), frame.to_dict("records")))
    out = []
    for user in user_ids:
        row, tokens = rows.get(str(user), {}), []
        for c in usable:
            value = row.get(c)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            values = [value] if isinstance(value, str) or np.ndim(value) == 0 else list(value)
            tokens += [f"{c}={v:g}" if isinstance(v, float) else f"{c}={v}" for v in values]
        out.append(tokens)
    return out


def _expected_sequence(model, task: str, pre, requests: dict, k: int, profile: dict | None = None) -> dict:
    """Top-K of the in-memory Keras model on the features `pre` (the export's SequencePreprocessor, run
    eagerly) gives, computed without the serving graph."""
    from tfrec.data import schema

    with_users = pre.user_index is not None  # the signatures' preprocessor reads users where the model does
    features = pre(padded(requests["history"]), user_id=requests["user_id"] if with_users else None)
    ids = features[contract.ITEM_INDICES].numpy()
    if task in (contract.PRETRAIN, contract.NEXT_ITEM, contract.ENSEMBLE):
        scores = model.score(ids)
    else:
        users = {contract.USER_INDEX: features[contract.USER_INDEX].numpy() if with_users else
                 np.zeros(len(ids), np.int32)}
        if contract.USER_FEATURES in requests:  # the features the request names, read here without the graph
            users = profile_features(profile, requests[contract.USER_FEATURES],
                                     model.query_tower.user_numeric is not None)
        scores = model.query_vectors({contract.ITEM_INDICES: ids, **users}) @ model.candidate_matrix().T
    scores = np.array(scores, np.float32)
    scores[:, : schema.NUM_ITEM_RESERVED] = -np.inf
    every, known = (t.numpy() for t in pre.lookup(padded(requests["history"])))
    for row in range(len(scores)):
        scores[row, every[row][known[row]]] = -np.inf  # the whole history's items, not only the packed ones
    k = min(k, scores.shape[1] - schema.NUM_ITEM_RESERVED)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return {contract.ITEM_IDS: [[t.decode() for t in row] for row in pre.tokens(order).numpy().tolist()],
            "scores": np.take_along_axis(scores, order, axis=1).tolist()}


def _expected_ranking(model, pre, requests: dict, profile: dict) -> dict:
    by_features = model.user_embedding is None  # the request names its user by features (tasks.user_params)
    features = pre(padded(requests["history"]), user_id=None if by_features else requests["user_id"],
                   timestamp=np.asarray(requests["timestamp"], np.int64))
    features = {key: value.numpy() for key, value in features.items()}
    if by_features:
        features.update(profile_features(profile, requests[contract.USER_FEATURES], model._user_numeric is not None))
    features[contract.ITEM_INDEX] = pre.items(requests["item_id"]).numpy()
    out = model.ratings(features)
    if model.objective == "binary":
        out = 1.0 / (1.0 + np.exp(-out))
    return {"score": np.asarray(out, np.float32).tolist()}


def _warmup_logs(name: str, requests: dict, signatures: list[tuple[str, list[str]]]) -> list[bytes]:
    """Serialized PredictionLogs: one predict request per signature over the sample rows."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2, regression_pb2

    logs = []
    history = padded(requests["history"])
    for signature, inputs in signatures:
        if signature == "regress":
            request = regression_pb2.RegressionRequest(
                model_spec=model_pb2.ModelSpec(name=name, signature_name=signature))
            for row in range(len(requests["item_id"])):
                example = request.input.example_list.examples.add()
                f = example.features.feature
                if inputs == [contract.USER_FEATURES]:  # a ranking model that reads the user's features
                    f[contract.USER_FEATURES].bytes_list.value.extend(
                        x.encode() for x in requests[contract.USER_FEATURES][row])
                else:
                    f["user_id"].bytes_list.value.append(requests["user_id"][row].encode())
                f["item_id"].bytes_list.value.append(requests["item_id"][row].encode())
                f["history"].bytes_list.value.extend(x.encode() for x in requests["history"][row])
                f["timestamp"].int64_list.value.append(int(requests["timestamp"][row]))
            logs.append(prediction_log_pb2.PredictionLog(
                regress_log=prediction_log_pb2.RegressLog(request=request)).SerializeToString())
            continue
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, signature_name=signature))
        values = {"history": history, "user_id": np.array(requests["user_id"], dtype=object),
                  contract.USER_FEATURES: padded(requests.get(contract.USER_FEATURES) or [[]]),
                  "item_id": np.array(requests["item_id"], dtype=object),
                  "timestamp": np.array(requests["timestamp"], np.int64),
                  contract.ITEM_IDS: np.array(requests["item_id"], dtype=object)}
        if signature == "serving_tf_example":
            examples = []
            for row in range(len(requests["history"])):
                feature = {"history": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[x.encode() for x in requests["history"][row]])),
                           "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                               value=[requests["user_id"][row].encode()]))}
                if contract.USER_FEATURES in requests:
                    feature[contract.USER_FEATURES] = tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[x.encode() for x in requests[contract.USER_FEATURES][row]]))
                examples.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
            values["examples"] = np.array(examples, dtype=object)
        for key in inputs:
            request.inputs[key].CopyFrom(tf.make_tensor_proto(values[key]))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    return logs


def _mark_regress(export_dir: str) -> None:
    """Gives the ``regress`` signature TF Serving's regress method name (tf.saved_model.save writes predict)."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    for graph in proto.meta_graphs:
        if "regress" in graph.signature_def:
            graph.signature_def["regress"].method_name = "tensorflow/serving/regress"
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def export(model_dir: str, serving_root: str, name: str, version: int | None = None, k: int = 100,
           data_dir: str | None = None, validate: bool = True, preprocessor: str | None = None,
           explain_window: int | None = None) -> str:
    """Exports the model saved at `model_dir` to ``serving_root/name/<version>``; returns that path.

    The signatures map string ids with the vocabularies of `preprocessor` (the pipeline's transform
    artifact, checked against the dataset and the model) when given, else with the dataset's.  The
    ``explain`` signature leaves out each of the last `explain_window` history items in turn (0: every
    one; default :data:`tfrec.export.signatures.EXPLAIN_WINDOW`)."""
    import tensorflow as tf

    from tfrec import __version__
    from tfrec.data.dataset import PreparedDataset
    from tfrec.export import signatures as sig
    from tfrec.models import persistence
    from tfrec.models.persistence import resolve_model_dir

    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise TfrecError(f"model name {name!r} must be letters, digits, - or _")
    if k < 1:
        raise TfrecError(f"--top-k must be positive, got {k}")
    explain_window = sig.EXPLAIN_WINDOW if explain_window is None else explain_window
    if explain_window < 0:
        raise TfrecError(f"--explain-window must be 0 (every history item) or positive, got {explain_window}")
    model_dir = resolve_model_dir(model_dir)
    model, config = persistence.load(model_dir, for_serving=True)
    task = config["task"]
    dataset = PreparedDataset(_dataset_dir(config, data_dir, model_dir))
    if len(dataset.item_vocab) != model.backbone.vocabulary_size:
        raise TfrecError(f"the dataset at {dataset.path} has {len(dataset.item_vocab)} item ids and the model "
                         f"{model.backbone.vocabulary_size}; pass the --data the model was trained on")
    base = os.path.join(serving_root, name)
    present = versions(base)
    if version is None:
        version = (present[-1] + 1) if present else 1
    if version < 1:
        raise TfrecError(f"--version must be a positive integer, got {version}")
    if version in present:
        raise TfrecError(f"{base}/{version} exists; versions only go up (the next free one is {present[-1] + 1})")
    os.makedirs(base, exist_ok=True)
    max_len = model.backbone.max_len
    if preprocessor:
        from tfrec.data.preprocessor import check_artifact

        spec = check_artifact(preprocessor, dataset.path, max_len)
        item_vocab, user_vocab = spec["item_vocab"], spec.get("user_vocab")
    else:
        item_vocab = dataset.local_file(schema.VOCAB_DIR, schema.ITEM_VOCAB_FILE)
        user_vocab = dataset.local_file(schema.VOCAB_DIR, schema.USER_VOCAB_FILE)
    requests = warmup_rows(dataset)  # warm-up and the export check, with no user's data in the export
    # the re-rankers' popularity levels: interactions of the leave-one-out training part
    interactions = np.bincount(dataset.split(schema.TRAIN)[schema.ITEM_INDEX].to_numpy(np.int64),
                               minlength=len(dataset.item_vocab))
    attributes = attribute_names(dataset)
    profile = user_profile(dataset)
    if task in SEQUENCE_TASKS:
        module = sig.SequenceServing(model, item_vocab, user_vocab, max_len, k, interactions, attributes,
                                     explain_window, profile)
        signatures = module.signatures()
        inputs = ["history", module.user_input] if module.uses_user else ["history"]
        if module.user_input == contract.USER_FEATURES:
            requests[contract.USER_FEATURES] = profile_rows(profile, len(requests["history"]))
        warm = [(sig.SERVING_DEFAULT, inputs), (sig.SERVING_TF_EXAMPLE, ["examples"])]
        if module.serves_embeddings:
            warm.append((sig.ITEM_EMBEDDINGS, [contract.ITEM_IDS]))
        expected = {sig.SERVING_DEFAULT: _expected_sequence(model, task, module.preprocessor, requests, k, profile)}
        expected[sig.SERVING_TF_EXAMPLE] = expected[sig.SERVING_DEFAULT]
    elif task in RANKING_TASKS:
        ranking = sig.RankingServing(model, item_vocab, user_vocab, max_len, k, profile)
        default_name = sig.SERVING_DEFAULT if task == contract.RANKING else sig.RANK
        signatures = ranking.signatures(default_name)
        if ranking.user_input == contract.USER_FEATURES:  # no per-user parameters: users named by features
            requests[contract.USER_FEATURES] = profile_rows(profile or sig.NO_PROFILE, len(requests["history"]))
        rank_inputs = [ranking.user_input, "item_id", "history", "timestamp"]
        warm = [(default_name, rank_inputs), (sig.REGRESS, [ranking.user_input])]
        expected = {default_name: _expected_ranking(model, ranking.preprocessor, requests, profile or sig.NO_PROFILE)}
        module = ranking
        if task == contract.MULTITASK:
            retrieval = sig.SequenceServing(model, item_vocab, user_vocab, max_len, k, interactions, attributes,
                                            explain_window, profile)
            module.retrieval_module = retrieval
            for key, fn in retrieval.signatures().items():
                signatures[key] = fn
            inputs = ["history", retrieval.user_input] if retrieval.uses_user else ["history"]
            warm += [(sig.SERVING_DEFAULT, inputs), (sig.SERVING_TF_EXAMPLE, ["examples"]),
                     (sig.ITEM_EMBEDDINGS, [contract.ITEM_IDS])]
            expected[sig.SERVING_DEFAULT] = _expected_sequence(model, contract.RETRIEVAL, retrieval.preprocessor,
                                                               requests, k, profile)
    else:
        raise TfrecError(f"the model at {model_dir} has task {task!r}, which tfrec cannot export")

    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base)
    try:
        export_dir = os.path.join(staging, "model")
        tf.saved_model.save(module, export_dir, signatures=signatures)
        _mark_regress(export_dir)
        extra = os.path.join(export_dir, "assets.extra")
        os.makedirs(extra)
        with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
            for record in _warmup_logs(name, requests, warm):
                writer.write(record)
        metadata = {"task": task, "name": name, "version": version, "data_fingerprint": config.get("data_fingerprint"),
                    "dataset": dataset.location, "config": config.get("run_config"),
                    "task_args_keys": sorted(config.get("task_args", {})),
                    "validation_metrics": config.get("valid_metrics"), "epoch": config.get("epoch"),
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "tfrec_version": __version__, "top_k": module.k, "max_len": max_len,
                    "explain_window": explain_window if sig.EXPLAIN in signatures else None,
                    "signatures": sorted(signatures), "source_model": os.path.abspath(model_dir)}
        with open(os.path.join(extra, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
        if validate:
            with open(os.path.join(staging, EXPECTED_FILE), "w") as f:
                json.dump(expected, f)
            try:
                check(export_dir, os.path.join(staging, EXPECTED_FILE))
            except TfrecError as e:
                raise TfrecError(f"{e}; nothing was exported") from None
        final = os.path.join(base, str(version))
        os.replace(export_dir, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def check(export_dir: str, expected_path: str | None = None, timeout: float = 600) -> dict:
    """Runs :mod:`tfrec.export.check_export` in a fresh interpreter; raises with its reason on failure."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check_export.py")
    # Absolute paths: the check runs in another working directory.
    args = [sys.executable, script, os.path.abspath(export_dir)] + \
        ([os.path.abspath(expected_path)] if expected_path else [])
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tempfile.gettempdir())
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        reason = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.startswith("check failed:")]
        raise TfrecError(f"the export at {export_dir} failed its check: "
                         f"{reason[-1][len('check failed: '):] if reason else (proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(lines[-1])
