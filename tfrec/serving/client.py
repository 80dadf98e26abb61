"""Clients of the TensorFlow Serving API for tfrec exports: gRPC (:class:`Client`) and REST (:class:`RestClient`).

Both speak only TF Serving's public API (PredictionService / ModelService over gRPC,
``/v1/models`` over REST) and address outputs by signature keys, so they work unchanged
against ``tensorflow_model_server`` and the embedded ``tfrec serve``.  Every gRPC call
has a deadline; read-only calls are retried when the server is briefly unavailable.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from tfrec import contract
from tfrec.serving import tensors

STATES = {v: k for k, v in get_model_status_pb2.ModelVersionStatus.State.items()}


class ServingClientError(Exception):
    """A failed call: `code` is the gRPC status name (or the HTTP status), `message` the server's words."""

    def __init__(self, code, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def _padded(histories) -> np.ndarray:
    rows = [list(h) for h in histories]
    width = max([1] + [len(r) for r in rows])
    return np.array([[""] * (width - len(r)) + [str(x) for x in r] for r in rows], dtype=object)


def _add_users(inputs: dict, user_ids, user_features) -> None:
    if user_ids is not None:
        inputs[contract.USER_ID] = np.array([str(u) for u in user_ids], dtype=object)
    if user_features is not None:
        inputs[contract.USER_FEATURES] = _padded(user_features)


class Client:
    """gRPC client: ``Client("localhost:8500").recommend("beauty", [["B001", "B002"]], k=10)``."""

    def __init__(self, target: str = "localhost:8500", timeout: float = 5.0, retries: int = 2):
        self.target, self.timeout, self.retries = target, timeout, retries
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise ServingClientError(e.code().name, e.details()) from None

    def predict(self, model: str, inputs: dict, signature: str = contract.SERVING_DEFAULT, version: int | None = None) -> dict:
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = model, signature
        if version:
            request.model_spec.version.value = version
        for key, value in inputs.items():
            tensors.to_proto(value, request.inputs[key])
        response = self._call(self.predictions.Predict, request)
        return {k: tensors.to_array(v) for k, v in response.outputs.items()}

    def recommend(self, model: str, histories, k: int | None = None, user_ids=None,
                  signature: str = contract.SERVING_DEFAULT, rerank: dict | None = None,
                  user_features=None) -> list[list[tuple[str, float]]]:
        """Top items for each history (item ids, oldest first): a list of (item id, score), best first;
        with `rerank` (``{"diversity": λ, "popularity_penalty": p}``) the ``rerank`` signature's list.
        `user_ids` for exports that take a user id; `user_features` (a list of ``"column=value"`` strings
        per history) for retrieval exports that take the user's own features."""
        inputs = {contract.HISTORY: _padded(histories)}
        _add_users(inputs, user_ids, user_features)
        if rerank:
            signature = contract.RERANK
            for key, value in rerank.items():
                inputs[key] = np.full(len(histories), value, np.float32)
        out = self.predict(model, inputs, signature)
        ids, scores = out[contract.ITEM_IDS], out[contract.SCORES]
        k = ids.shape[1] if k is None else k
        return [[(i.decode(), float(s)) for i, s in zip(row_i[:k], row_s[:k])] for row_i, row_s in zip(ids, scores)]

    def explain(self, model: str, histories, user_ids=None, user_features=None) -> list[list[dict]]:
        """The explain signature's answer per history: for each recommended item, ``{"item_id", "score",
        "because": [(history item id, score drop when it is left out)], "shared_attributes": [...]}``."""
        inputs = {contract.HISTORY: _padded(histories)}
        _add_users(inputs, user_ids, user_features)
        out = self.predict(model, inputs, contract.EXPLAIN)
        return [[{"item_id": item.decode(), "score": float(score),
                  "because": [(b.decode(), float(w)) for b, w in zip(because, weights) if b],
                  "shared_attributes": [a.decode() for a in shared if a]}
                 for item, score, because, weights, shared in zip(*row)]
                for row in zip(out[contract.ITEM_IDS], out[contract.SCORES], out[contract.BECAUSE_ITEM_IDS],
                               out[contract.BECAUSE_WEIGHTS], out[contract.SHARED_ATTRIBUTES])]

    def score(self, model: str, user_ids, item_ids, histories=None, timestamps=None,
              signature: str = contract.SERVING_DEFAULT, user_features=None) -> list[float]:
        """Ranking score (predicted rating or like probability) of each (user, item) pair.  `user_features`
        (lists of ``"column=value"`` strings) instead of `user_ids` for a ranking export without per-user
        parameters."""
        n = len(item_ids)
        inputs = {}
        _add_users(inputs, user_ids, user_features)
        inputs.update({contract.ITEM_ID: np.array([str(i) for i in item_ids], dtype=object),
                       contract.HISTORY: _padded(histories if histories is not None else [[]] * n),
                       contract.TIMESTAMP: np.asarray(timestamps if timestamps is not None else [int(time.time())] * n,
                                                      np.int64)})
        return self.predict(model, inputs, signature)[contract.SCORE].astype(float).tolist()

    def metadata(self, model: str) -> dict:
        """Signature name -> {"inputs": {key: (dtype, shape)}, "outputs": {...}, "method": ...}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        response = self._call(self.predictions.GetModelMetadata, request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)

        def describe(infos):
            return {k: (tf.dtypes.as_dtype(v.dtype).name, [d.size for d in v.tensor_shape.dim]) for k, v in infos.items()}

        return {name: {"inputs": describe(s.inputs), "outputs": describe(s.outputs), "method": s.method_name}
                for name, s in defs.signature_def.items() if not name.startswith("__")}

    def status(self, model: str) -> list[dict]:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        response = self._call(self.models.GetModelStatus, request)
        return [{"version": s.version, "state": STATES[s.state], "error": s.status.error_message}
                for s in response.model_version_status]


class RestClient:
    """The same calls over TF Serving's REST API: ``RestClient("http://localhost:8501")``."""

    def __init__(self, base_url: str = "http://localhost:8501", timeout: float = 5.0):
        self.base, self.timeout = base_url.rstrip("/"), timeout

    def _request(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", "")
            except (json.JSONDecodeError, AttributeError):
                message = e.reason
            raise ServingClientError(e.code, message) from None

    def recommend(self, model: str, histories, k: int | None = None, user_ids=None,
                  signature: str = contract.SERVING_DEFAULT, user_features=None) -> list[list[tuple[str, float]]]:
        inputs = {contract.HISTORY: _padded(histories).tolist()}
        if user_ids is not None:
            inputs[contract.USER_ID] = [str(u) for u in user_ids]
        if user_features is not None:
            inputs[contract.USER_FEATURES] = _padded(user_features).tolist()
        out = self._request(f"/v1/models/{urllib.parse.quote(model, safe='')}:predict",
                            {"signature_name": signature, "inputs": inputs})["outputs"]
        k = len(out[contract.ITEM_IDS][0]) if k is None else k
        return [[(i, float(s)) for i, s in zip(ri[:k], rs[:k])] for ri, rs in zip(out[contract.ITEM_IDS], out[contract.SCORES])]

    def score(self, model: str, user_ids, item_ids, histories=None, timestamps=None,
              signature: str = contract.SERVING_DEFAULT, user_features=None) -> list[float]:
        n = len(item_ids)
        inputs = {contract.ITEM_ID: [str(i) for i in item_ids],
                  contract.HISTORY: _padded(histories if histories is not None else [[]] * n).tolist(),
                  contract.TIMESTAMP: [int(t) for t in (timestamps if timestamps is not None else [time.time()] * n)]}
        if user_ids is not None:
            inputs[contract.USER_ID] = [str(u) for u in user_ids]
        if user_features is not None:
            inputs[contract.USER_FEATURES] = _padded(user_features).tolist()
        return [float(x) for x in self._request(f"/v1/models/{urllib.parse.quote(model, safe='')}:predict",
                                                {"signature_name": signature, "inputs": inputs})["outputs"]]

    def metadata(self, model: str) -> dict:
        """Signature name -> {"inputs": {key: (dtype, shape)}, "outputs": {...}, "method": ...}, as
        :meth:`Client.metadata` gives it, from TF Serving's REST answer (snake_case, as it writes it)."""
        defs = self._request(f"/v1/models/{urllib.parse.quote(model, safe='')}/metadata")["metadata"]
        defs = defs["signature_def"]["signature_def"]

        def describe(infos):
            return {k: (tf.dtypes.as_dtype(getattr(types_pb2, v["dtype"])).name,
                        [int(d["size"]) for d in v.get("tensor_shape", {}).get("dim", [])]) for k, v in infos.items()}

        return {name: {"inputs": describe(s.get("inputs", {})), "outputs": describe(s.get("outputs", {})),
                       "method": s.get("method_name")} for name, s in defs.items() if not name.startswith("__")}

    def status(self, model: str) -> list[dict]:
        statuses = self._request(f"/v1/models/{urllib.parse.quote(model, safe='')}")["model_version_status"]
        return [{"version": int(s["version"]), "state": s["state"], "error": s.get("status", {}).get("error_message", "")}
                for s in statuses]
