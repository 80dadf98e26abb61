"""Running a request against a served version, whatever transport brought it.

:class:`Runner` resolves the model spec (name, version or label) to a version it holds for the
length of the request, checks the inputs against the signature and the request limits, runs the
signature (through the version's batcher when batching is on) within the request's deadline, and
counts the request in the metrics.  Status codes follow TF Serving: an unknown signature is
``FAILED_PRECONDITION``, an input that does not fit it ``INVALID_ARGUMENT``, a request over a
limit ``RESOURCE_EXHAUSTED``, a passed deadline ``DEADLINE_EXCEEDED``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np
import tensorflow as tf

from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, status_pb2

from tfrec import contract
from tfrec.serving import tensors
from tfrec.serving.batching import Batcher, BatchingOptions
from tfrec.serving.errors import ServingError, first_line
from tfrec.serving.metrics import Metrics
from tfrec.serving.models import ModelManager, Version

DEFAULT_SIGNATURE = contract.SERVING_DEFAULT
REGRESS_METHOD = contract.REGRESS_METHOD
# TF Serving's error codes in a StatusProto (tensorflow/core/protobuf/error_codes.proto).
ERROR_CODES = {name: code for code, name in enumerate(
    ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
     "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
     "INTERNAL", "UNAVAILABLE", "DATA_LOSS"])}
ERROR_CODES["UNAUTHENTICATED"] = 16
CLASSIFY_METHOD = "tensorflow/serving/classify"


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a request names: the model, a version number or a label (or neither: the newest), the signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature: str = ""

    @property
    def signature_name(self) -> str:
        return self.signature or DEFAULT_SIGNATURE


def _described(value) -> tuple[int, list]:
    return tensors.dtype_enum(value), list(value.shape)


def with_defaults(signature_def, inputs: dict) -> dict:
    """`inputs` plus the signature's default for each input the request left out, as TensorFlow Serving
    runs a signature whose SignatureDef has ``defaults``: an input with a default may be omitted.  A
    default of one row given to a signature whose first dimension is free is repeated to the request's
    rows, which is what the graph's broadcasting computes anyway and what lets the batcher merge it."""
    missing = [key for key in signature_def.defaults if key not in inputs and key in signature_def.inputs]
    if not missing:
        return inputs
    rows = {int(np.shape(v)[0]) for v in inputs.values() if np.ndim(v)}
    out = dict(inputs)
    for key in missing:
        value = tf.make_ndarray(signature_def.defaults[key])
        dims = signature_def.inputs[key].tensor_shape.dim
        if len(rows) == 1 and value.ndim and value.shape[0] == 1 and dims and dims[0].size < 0:
            value = np.repeat(value, next(iter(rows)), axis=0)
        out[key] = value
    return out


def check_inputs(signature_def, name: str, inputs: dict, limits: tensors.Limits) -> None:
    expected = signature_def.inputs
    missing = sorted(set(expected) - set(inputs))
    unknown = sorted(set(inputs) - set(expected))
    if unknown:
        raise ServingError("INVALID_ARGUMENT", f"signature {name} has no input {unknown[0]!r}; "
                                               f"its inputs: {', '.join(sorted(expected))}")
    if missing:
        raise ServingError("INVALID_ARGUMENT", f"input {missing[0]!r} of signature {name} is missing")
    rows = set()
    for key, info in expected.items():
        dtype, shape = _described(inputs[key])
        limits.check(key, shape)
        if dtype != info.dtype:
            raise ServingError("INVALID_ARGUMENT", f"input {key!r} must be {tf.dtypes.as_dtype(info.dtype).name}, "
                                                   f"got {tf.dtypes.as_dtype(dtype).name}")
        if not info.tensor_shape.unknown_rank:
            dims = [d.size for d in info.tensor_shape.dim]
            if len(shape) != len(dims) or any(d >= 0 and d != g for d, g in zip(dims, shape)):
                raise ServingError("INVALID_ARGUMENT", f"input {key!r} must have shape "
                                                       f"{[d if d >= 0 else -1 for d in dims]}, got {shape}")
        if shape:
            rows.add(shape[0])
    if len(rows) > 1:
        raise ServingError("INVALID_ARGUMENT", f"the inputs of signature {name} have different numbers of rows: "
                                               f"{sorted(rows)}")


class Runner:
    """Runs the signatures of the versions `manager` serves."""

    def __init__(self, manager: ModelManager, batching: BatchingOptions | None = None,
                 limits: tensors.Limits | None = None, metrics: Metrics | None = None):
        self.manager, self.batching = manager, batching
        self.limits = limits or tensors.Limits()
        self.metrics = metrics or Metrics(known=lambda name: name in manager.models)

    @contextlib.contextmanager
    def version(self, spec: Spec):
        """The version `spec` names, held (not unloaded) for the block."""
        if spec.version is not None and spec.label:
            raise ServingError("INVALID_ARGUMENT", f"Both model version ({spec.version}) and model version label "
                                                   f"({spec.label}) cannot be supplied.")
        held = self.manager.model(spec.name).acquire(spec.version, spec.label)
        try:
            yield held
        finally:
            held.release()

    def signature_def(self, version: Version, name: str):
        signature = version.signature_defs.get(name)
        if signature is None or version.loaded is None or name not in version.loaded.signatures:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        return signature

    def run(self, version: Version, name: str, inputs: dict, output_filter=(), deadline: float | None = None) -> dict:
        """Calls signature `name` of `version` with numpy inputs before `deadline` (``time.monotonic()``)."""
        signature = self.signature_def(version, name)
        inputs = with_defaults(signature, inputs)
        check_inputs(signature, name, inputs, self.limits)
        unknown = sorted(set(output_filter) - set(signature.outputs))
        if unknown:
            raise ServingError("INVALID_ARGUMENT", f"output tensor alias not found in signature: {unknown[0]}")
        if deadline is not None and time.monotonic() >= deadline:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded: the deadline passed before the model ran")
        fn = version.loaded.signatures[name]

        def call(values: dict) -> dict:
            return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in values.items()}).items()}

        try:
            if self.batching:
                batcher = version.batcher(name, lambda: Batcher(call, self.batching, f"batch-{version.number}-{name}"))
                outputs = batcher(inputs, deadline)
            else:
                outputs = call(inputs)
        except ServingError:
            raise
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            raise ServingError("INVALID_ARGUMENT", f"signature {name} rejected the inputs: {first_line(e)}") from None
        except tf.errors.ResourceExhaustedError as e:
            raise ServingError("RESOURCE_EXHAUSTED", f"signature {name} ran out of memory: {first_line(e)}") from None
        if deadline is not None and time.monotonic() > deadline:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded: the model answered after the deadline")
        keys = list(output_filter) or list(outputs)
        return {k: outputs[k] for k in keys}

    def run_examples(self, version: Version, name: str, method: str, examples: list[bytes],
                     deadline: float | None = None) -> np.ndarray:
        """The one output of a Regress or Classify signature for serialised ``tf.Example``s."""
        signature = self.signature_def(version, name)
        if signature.method_name != method:
            raise ServingError("INVALID_ARGUMENT", f"Expected {method.rsplit('/', 1)[-1]} signature method_name to be "
                                                   f"{method}. Was: {signature.method_name}")
        if not examples:
            raise ServingError("INVALID_ARGUMENT", "Input is empty")
        key = next(iter(signature.inputs))
        values = np.empty(len(examples), dtype=object)
        values[:] = examples
        out = self.run(version, name, {key: values}, deadline=deadline)
        return np.asarray(next(iter(out.values())))

    def observe(self, model: str, api: str, entrypoint: str, started: float, code: str | None) -> None:
        self.metrics.observe(model, api, entrypoint, time.perf_counter() - started, code or "OK")


def model_metadata(runner: Runner, spec: Spec) -> get_model_metadata_pb2.GetModelMetadataResponse:
    with runner.version(spec) as version:
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name, response.model_spec.version.value = spec.name, version.number
        defs = get_model_metadata_pb2.SignatureDefMap()
        for k, v in version.signature_defs.items():
            defs.signature_def[k].CopyFrom(v)
    response.metadata["signature_def"].Pack(defs)
    return response


def model_status(manager: ModelManager, name: str, version: int | None = None):
    """GetModelStatus as TF Serving answers it: every version it knows of (a label is not looked at),
    or the one asked for; NOT_FOUND when there is none."""
    model = manager.model(name)
    response = get_model_status_pb2.GetModelStatusResponse()
    with model.lock:
        items = sorted(model.status.items())
    if version is not None:
        items = [(v, s) for v, s in items if v == version]
        if not items:
            raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
    elif not items:
        raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
    for number, (state, error) in items:
        entry = response.model_version_status.add(version=number, state=state)
        entry.status.CopyFrom(status_pb2.StatusProto(error_code=ERROR_CODES["UNKNOWN"] if error else 0,
                                                     error_message=error))
    return response
