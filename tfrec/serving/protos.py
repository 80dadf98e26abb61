"""The text-proto config files of ``tensorflow_model_server`` that tensorflow-serving-api does not ship.

``--batching_parameters_file`` (``BatchingParameters``), ``--ssl_config_file`` (``SSLConfig``) and
``--monitoring_config_file`` (``MonitoringConfig``) are text protos whose messages live in TF
Serving's C++ tree only.  They are declared here, field by field with TF Serving's names and
numbers, in a descriptor pool of their own, so these files are parsed by protobuf's own text
parser: the same syntax, the same errors for an unknown field or a bad value, as the real server.
"""

from __future__ import annotations

import os

from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2
from google.protobuf import message_factory

from tfrec.serving.errors import ServingError

_F = descriptor_pb2.FieldDescriptorProto

# message name -> [(field name, number, type, label, type name of a message field)]
_MESSAGES = {
    "BatchingParameters": [
        ("max_batch_size", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
        ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
        ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
    ],
    "SSLConfig": [
        ("server_key", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("server_cert", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("custom_ca", 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("client_verify", 4, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
    ],
    "PrometheusConfig": [
        ("enable", 1, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
        ("path", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
    ],
    "MonitoringConfig": [
        ("prometheus_config", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".tensorflow.serving.PrometheusConfig"),
    ],
}


def _classes() -> dict:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(name="tfrec/serving/tf_serving_configs.proto",
                                              package="tensorflow.serving", syntax="proto3",
                                              dependency=[wrappers.name])
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field, number, kind, label, type_name in fields:
            f = message.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
            for name in _MESSAGES}


_CLASSES = _classes()
BatchingParameters = _CLASSES["BatchingParameters"]
SSLConfig = _CLASSES["SSLConfig"]
MonitoringConfig = _CLASSES["MonitoringConfig"]


def read_text_proto(path: str, message_class, flag: str):
    """Parses the text proto at `path` (the value of `--flag`); one clear sentence when it cannot."""
    if not os.path.isfile(path):
        raise ServingError("NOT_FOUND", f"--{flag}: {path} does not exist")
    message = message_class()
    try:
        with open(path, encoding="utf-8") as f:
            text_format.Parse(f.read(), message)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise ServingError("INVALID_ARGUMENT", f"--{flag}: {path} is not a {message_class.DESCRIPTOR.name} "
                                               f"text proto: {e}") from None
    return message
