"""``tfrec export``, ``push``, ``serve`` and ``query``."""

from __future__ import annotations

import json
import os

from tfrec import contract
from tfrec.errors import TfrecError
from tfrec.cli.common import format_table


def cmd_export(args) -> int:
    from tfrec.export import exporter

    path = exporter.export(args.model, args.serving_root, args.name, version=args.version, k=args.top_k,
                           data_dir=args.data, preprocessor=args.preprocessor, explain_window=args.explain_window)
    with open(os.path.join(path, "assets.extra", exporter.METADATA_FILE)) as f:
        meta = json.load(f)
    print(f"exported {meta['task']} model to {path} (signatures: {', '.join(meta['signatures'])}); "
          "checked in a fresh TensorFlow-only process: core ops, warmup requests, outputs")
    return 0


def cmd_push(args) -> int:
    from tfrec.export import push

    d = push.push(args.candidate, args.serving_root, args.name, metric=args.metric, min_delta=args.min_delta,
                  keep=args.keep, data_dir=args.data)
    served = "nothing served yet" if d["served_version"] is None else \
        f"served version {d['served_version']}: {d['served_value']:.4f}"
    print(f"validation {d['metric']}: candidate {d['candidate_value']:.4f}, {served}")
    if d["pushed"]:
        print(f"pushed as version {d['version']}: {d['path']}")
        return 0
    print(f"not pushed: {d['reason']}")
    return 1


def _serve_options(args):
    """The server's settings from `args`, each checked; one sentence (TfrecError) for the first bad one."""
    from tfrec.serving.models import ServerOptions
    from tfrec.serving.tensors import Limits

    if bool(args.model_config_file) == bool(args.model_base_path):
        raise TfrecError("serve needs --model_base_path (with --model_name) or --model_config_file")
    for flag in ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism", "max_num_load_retries",
                 "model_config_file_poll_wait_seconds", "file_system_poll_wait_seconds", "rest_api_timeout_in_ms"):
        if getattr(args, flag) < 0:
            raise TfrecError(f"--{flag} must not be negative, got {getattr(args, flag)}")
    for flag in ("grpc_max_threads", "rest_api_num_threads", "grpc_max_concurrent_rpcs", "max_request_rows",
                 "max_tensor_elements", "max_history_length", "rest_api_max_body_bytes"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise TfrecError(f"--{flag} must be positive, got {getattr(args, flag)}")
    for flag in ("port", "rest_api_port"):
        if not 0 <= getattr(args, flag) <= 65535:
            raise TfrecError(f"--{flag} must be a port number from 0 to 65535, got {getattr(args, flag)}")
    if args.port == 0 and not args.grpc_socket_path:
        raise TfrecError("--port 0 turns gRPC's TCP port off; give --grpc_socket_path then "
                         "(at least one of them must be set)")
    if args.rest_api_port and args.rest_api_port == args.port:
        raise TfrecError(f"--rest_api_port must differ from --port (both are {args.port})")
    if args.batching_parameters_file and not args.enable_batching:
        raise TfrecError("--batching_parameters_file is set without --enable_batching=true")
    roots = tuple(os.path.abspath(r) for r in (args.model_base_path_roots or "").split(",") if r)
    options = ServerOptions(poll_seconds=args.file_system_poll_wait_seconds, warmup=args.enable_model_warmup,
                            max_num_load_retries=args.max_num_load_retries,
                            load_retry_interval_micros=args.load_retry_interval_micros,
                            allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
                            allowed_roots=roots)
    limits = Limits(max_rows=args.max_request_rows, max_elements=args.max_tensor_elements,
                    max_history_length=args.max_history_length)
    return options, limits


def cmd_serve(args) -> int:
    from tfrec.serving.errors import ServingError
    from tfrec.serving.models import ModelManager, read_config, single_model_config

    options, limits = _serve_options(args)
    import tensorflow as tf

    # Before any model loads: TensorFlow fixes its thread pools when it starts.
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    from tfrec.serving import protos
    from tfrec.serving.batching import BatchingOptions, batching_options
    from tfrec.serving.server import Server

    log = lambda m: print(f"tfrec serve: {m}", flush=True)  # noqa: E731
    try:
        batching = None
        if args.enable_batching:
            batching = batching_options(protos.read_text_proto(args.batching_parameters_file, protos.BatchingParameters,
                                                               "batching_parameters_file")) \
                if args.batching_parameters_file else BatchingOptions()
        metrics_path = None
        if args.monitoring_config_file:
            monitoring = protos.read_text_proto(args.monitoring_config_file, protos.MonitoringConfig,
                                                "monitoring_config_file")
            if monitoring.prometheus_config.enable:
                metrics_path = monitoring.prometheus_config.path or "/monitoring/prometheus/metrics"
        ssl = protos.read_text_proto(args.ssl_config_file, protos.SSLConfig, "ssl_config_file") \
            if args.ssl_config_file else None
        config = read_config(args.model_config_file) if args.model_config_file else \
            single_model_config(args.model_name, os.path.abspath(args.model_base_path))
        manager = ModelManager(config, options, log=log)
    except ServingError as e:
        raise TfrecError(str(e)) from None
    try:
        server = Server(manager, port=args.port or None, rest_api_port=args.rest_api_port or None, host=args.host,
                        workers=args.grpc_max_threads, batching=batching, metrics_path=metrics_path, limits=limits,
                        max_concurrent_rpcs=args.grpc_max_concurrent_rpcs, rest_api_num_threads=args.rest_api_num_threads,
                        rest_api_timeout_ms=args.rest_api_timeout_in_ms, ssl_config=ssl,
                        health_check=args.enable_grpc_healthcheck_service,
                        allow_reload=args.enable_reload_config_request, access_log=args.access_log_file,
                        grpc_socket_path=args.grpc_socket_path, max_rest_body_bytes=args.rest_api_max_body_bytes)
    except (OSError, RuntimeError, ValueError) as e:
        raise TfrecError(f"cannot start the server: {e}") from None
    server.stop_on_signals()
    server.start(args.model_config_file, args.model_config_file_poll_wait_seconds)
    rest = f", REST on {args.host}:{server.rest_port}" if server.rest is not None else ""
    where = f"gRPC on {args.host}:{server.port}" if server.port else f"gRPC on unix:{args.grpc_socket_path}"
    print(f"tfrec serve: {where}{rest}{' (TLS)' if ssl else ''}; models: {', '.join(manager.models)}", flush=True)
    server.wait()
    print("tfrec serve: stopped", flush=True)
    return 0


def cmd_query(args) -> int:
    from tfrec.serving.client import Client, ServingClientError

    history = [h for h in (args.history or "").split(",") if h]
    rerank = {k: v for k, v in ((contract.DIVERSITY, args.diversity),
                                (contract.POPULARITY_PENALTY, args.popularity_penalty)) if v is not None}
    if args.explain and rerank:
        raise TfrecError("--explain explains the model's own top 10; leave out --diversity and --popularity-penalty")
    users = [args.user] if args.user is not None else None
    profile = None if args.user_features is None else [[f for f in args.user_features.split(",") if f]]
    if profile and any("=" not in f for f in profile[0]):
        raise TfrecError(f"--user-features takes column=value pairs separated by commas, got {args.user_features!r}")
    client = Client(args.server, timeout=args.timeout)
    try:
        if args.explain:
            explained = client.explain(args.model, [history], user_ids=users, user_features=profile)[0][:args.k]
            rows = [(e["item_id"], e["score"]) for e in explained]
        else:
            rows = client.recommend(args.model, [history], k=args.k, user_ids=users, rerank=rerank or None,
                                    user_features=profile)[0]
    except ServingClientError as e:
        raise TfrecError(f"the server at {args.server} answered {e.code}: {e.message}") from None
    finally:
        client.close()
    titles = {}
    if args.data:
        from tfrec.data.dataset import PreparedDataset

        items = PreparedDataset(args.data).items
        if items is not None and "title" in items.columns:
            titles = dict(zip(items["item_id"].astype(str), items["title"].astype(str)))
    table = [(str(rank), item, f"{score:.4f}") + ((titles.get(item, ""),) if titles else ())
             for rank, (item, score) in enumerate(rows, 1)]
    if args.explain:
        def why(e):
            liked = [titles.get(i, i) for i, _ in e["because"]]
            text = ("because you liked " + "; ".join(liked)) if liked else "popular with everyone (no history to go on)"
            return text + (f" (shares {', '.join(e['shared_attributes'])})" if e["shared_attributes"] else "")
        table = [row + (why(e),) for row, e in zip(table, explained)]
        print(format_table(table, ("rank", "item", "score") + (("title",) if titles else ()) + ("why",)))
        return 0
    print(format_table(table, ("rank", "item", "score") + (("title",) if titles else ())))
    return 0
