"""The ``tfrec`` command line.

User mistakes (a missing file, a wrong column, a bad flag value) print one
sentence to stderr and exit with status 2; an interrupt exits with 130 and
leaves no partial output behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from tfrec import __version__, contract
from tfrec.errors import TfrecError

DATA_DIR_ENV = "TFREC_DATA_DIR"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with errors as one sentence and exit status 2 (its own convention)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"tfrec: error: {message} (see `{self.prog} --help`)\n")


def _column_map(text: str | None) -> dict[str, str]:
    mapping = {}
    for part in filter(None, (text or "").split(",")):
        if "=" not in part:
            raise TfrecError(f"--columns takes canonical=source pairs such as user_id=userId, not {part!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        mapping[key] = value
    return mapping


# ---------------------------------------------------------------------------
# Output helpers


def format_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A Markdown table with aligned columns."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def stats_rows(stats: dict) -> list[tuple[str, str]]:
    seq = stats["sequence_length"]
    rows = [
        ("users", f"{stats['num_users']:,}"),
        ("items", f"{stats['num_items']:,}"),
        ("interactions", f"{stats['num_interactions']:,}"),
        ("density", f"{stats['density']:.4%}"),
        ("sequence length min / median / mean / max", f"{seq['min']} / {seq['p50']:g} / {seq['mean']:.2f} / {seq['max']}"),
        ("sequence length p90 / p99", f"{seq['p90']:.1f} / {seq['p99']:.1f}"),
    ]
    for scheme, parts in stats.get("splits", {}).items():
        ordered = sorted(parts.items(), key=lambda kv: ("train", "valid", "test").index(kv[0]))
        rows.append((f"split {scheme}", " / ".join(f"{k} {v:,}" for k, v in ordered)))
    if "ratings" in stats:
        rows.append(("mean rating", f"{stats['ratings']['mean']:.3f}"))
    for table in ("item_features", "user_features"):
        if stats.get(table):
            rows.append((table.replace("_", " "), ", ".join(
                f"{k} ({v:.0%})" if v is not None else k for k, v in stats[table].items())))
    return rows


# ---------------------------------------------------------------------------
# Commands


def cmd_data_prepare(args) -> int:
    from tfrec.data import dataset, loaders, preprocess

    path = args.path
    if path is None and args.source not in loaders.TABLE_SOURCES:
        path = loaders.local_copy(args.source)
    kwargs = {}
    if args.source == "amazon-s3rec" and args.name:
        kwargs["name"] = args.name
    if args.source in loaders.TABLE_SOURCES:
        kwargs.update(columns=_column_map(args.columns), items=args.items, users=args.users,
                      list_columns=tuple(filter(None, (args.list_columns or "").split(","))),
                      sep=args.sep, order_as_time=args.order_as_time)
    config = preprocess.PrepareConfig(
        rating_threshold=args.rating_threshold, min_user_interactions=args.min_user_interactions,
        min_item_interactions=args.min_item_interactions, dedupe=args.dedupe,
        loo_min_length=args.loo_min_length, random_test_fraction=args.test_fraction,
        temporal_test_fraction=args.test_fraction, seed=args.seed, format=args.format, shards=args.shards,
    )
    print(f"tfrec: loading {args.source}" + (f" from {path}" if path else " (cache or download)"), file=sys.stderr)
    raw = loaders.load(args.source, path, **kwargs)
    prepared = dataset.prepare(raw, args.out, config)
    print(f"tfrec: wrote {args.out}", file=sys.stderr)
    print(format_table(stats_rows(prepared.stats), ("statistic", "value")))
    return 0


def cmd_data_stats(args) -> int:
    from tfrec.data.dataset import PreparedDataset

    prepared = PreparedDataset(args.dir)
    if args.json:
        print(json.dumps(prepared.stats, indent=2, sort_keys=True))
    else:
        print(f"{prepared.meta['source']} ({args.dir})")
        print(format_table(stats_rows(prepared.stats), ("statistic", "value")))
    return 0


def cmd_quickstart(args) -> int:
    """The main job end to end on MovieLens-100K: prepare, pretrain, fine-tune next-item and ranking,
    evaluate, export, serve, query over gRPC."""
    from tfrec.data import dataset, loaders
    from tfrec.evaluation import sequential
    from tfrec.training import task_trainer, trainer
    from tfrec.training.config import RunConfig
    from tfrec.training.finetuning import finetune

    path = args.data_dir
    if path is None:
        path = loaders.local_copy("movielens-100k")
    elif os.path.isdir(os.path.join(path, "ml-100k")):
        path = os.path.join(path, "ml-100k")
    data = os.path.join(args.workdir, "data", "movielens-100k")
    print(f"[1/7] preparing MovieLens-100K from {path or 'the cache (downloading on first use)'} -> {data}", flush=True)
    prepared = dataset.prepare(loaders.load("movielens-100k", path), data)
    print(format_table(stats_rows(prepared.stats), ("statistic", "value")), flush=True)
    config = RunConfig.from_file(args.config)
    pre, ft = os.path.join(args.workdir, "pretrain"), os.path.join(args.workdir, "finetune")
    rank = os.path.join(args.workdir, "ranking")
    print(f"[2/7] pretraining the sequence backbone -> {pre}", flush=True)
    trainer.pretrain(data, pre, config, verbose=2)
    print(f"[3/7] fine-tuning next-item recommendation from it -> {ft}", flush=True)
    finetune(data, ft, config, pretrained=pre, task=contract.NEXT_ITEM, verbose=2)
    print(f"[4/7] fine-tuning rating prediction (ranking) from it -> {rank}", flush=True)
    ranking_record = finetune(data, rank, config, pretrained=pre, task=contract.RANKING, verbose=2)
    print("[5/7] evaluating on the test split (leave-one-out, full ranking, history excluded)", flush=True)
    rows = []
    for name, which in (("popularity", {"baseline": "popularity"}), ("pretrained + fine-tuned", {"model": ft})):
        report, ranks, seqs = sequential.evaluate_saved(which.get("model"), data, "test", baseline=which.get("baseline"))
        sequential.write_report(report, ranks, seqs, os.path.join(args.workdir, f"test_{name.split()[0]}"), per_user=False)
        rows.append((name, report["metrics"]))
    print(sequential.markdown_table(rows), end="")
    print(task_trainer.summary_table(ranking_record["summary"]), end="", flush=True)
    _quickstart_serve(args.workdir, data, ft)
    return 0


def _quickstart_serve(workdir: str, data: str, model: str) -> None:
    """Exports `model`, serves it with the embedded server and asks it for one user's top 10 over gRPC."""
    import socket

    import numpy as np

    from tfrec.data import inputs, schema
    from tfrec.data.dataset import PreparedDataset
    from tfrec.export import exporter
    from tfrec.serving import Client
    from tfrec.serving.models import ModelManager, single_model_config
    from tfrec.serving.server import Server

    root = os.path.join(workdir, "serving")
    print(f"[6/7] exporting the next-item model -> {root}/movielens-100k (checked in a TensorFlow-only process)",
          flush=True)
    version = exporter.export(model, root, "movielens-100k", k=10)
    print(f"      {version}", flush=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = ModelManager(single_model_config("movielens-100k", os.path.abspath(os.path.join(root, "movielens-100k"))),
                           poll_seconds=0, warmup=True, log=lambda m: print(f"      server: {m}", flush=True))
    server = Server(manager, port=port, rest_api_port=None)
    server.start()
    print(f"[7/7] serving on 127.0.0.1:{port} (TensorFlow Serving's gRPC API); asking it for a sample user", flush=True)
    try:
        ds = PreparedDataset(data)
        seqs = inputs.loo_sequences(ds, schema.TEST)
        user = int(np.argmax([len(h) for h in seqs.histories[:50]]))
        history = [ds.item_vocab.token(int(i)) for i in seqs.histories[user]]
        titles = dict(zip(ds.items["item_id"].astype(str), ds.items["title"].astype(str))) if ds.items is not None \
            else {}
        client = Client(f"127.0.0.1:{port}", timeout=30)
        recs = client.recommend("movielens-100k", [history], k=10)[0]
        client.close()
        uid = ds.user_vocab.token(int(seqs.user_indices[user]))
        print(f"user {uid}: the last 5 of {len(history)} movies watched")
        print(format_table([(i, titles.get(i, "")) for i in history[-5:]], ("item", "title")))
        print(f"top 10 recommendations for user {uid}, from the server")
        print(format_table([(str(r), i, f"{sc:.3f}", titles.get(i, "")) for r, (i, sc) in enumerate(recs, 1)],
                           ("rank", "item", "score", "title")), flush=True)
    finally:
        server.stop(grace=2)
        print("server stopped", flush=True)


def _run_config(args, stage: str):
    """The run config of a training command: --config file, then flags, then --set overrides."""
    import yaml

    from tfrec.training.config import RunConfig

    config = RunConfig.from_file(args.config) if args.config else RunConfig()
    overrides = {f"{stage}.epochs": args.epochs, f"{stage}.batch_size": args.batch_size,
                 f"{stage}.learning_rate": args.learning_rate, "seed": args.seed, "strategy": args.strategy,
                 "split": args.split}
    for item in args.set or []:
        if "=" not in item:
            raise TfrecError(f"--set takes KEY=VALUE such as pretrain.mask_rate=0.3, not {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise TfrecError(f"--set {item}: the value cannot be parsed") from None
    for key in overrides:
        section = RunConfig().to_dict()
        for part in key.split("."):
            if not isinstance(section, dict) or part not in section:
                raise TfrecError(f"--set: unknown setting {key!r}")
            section = section[part]
    return config.updated(overrides, where="command-line settings")


def _print_summary(record: dict, out: str) -> None:
    summary = record.get("summary", {})
    valid = summary.get("valid", {})
    if valid:
        from tfrec.evaluation.sequential import markdown_table

        print(f"best epoch {summary.get('best_epoch')} of {summary.get('epochs_run')}"
              f"{' (stopped early)' if summary.get('stopped_early') else ''}; validation split:")
        print(markdown_table([(os.path.join(out, "model"), dict(valid, users=""))]), end="")


def cmd_pretrain(args) -> int:
    from tfrec.training import trainer

    config = _run_config(args, "pretrain")
    record = trainer.pretrain(args.data, args.out, config, overwrite=args.overwrite, verbose=args.verbose)
    _print_summary(record, args.out)
    return 0


def cmd_finetune(args) -> int:
    from tfrec.training.finetuning import finetune

    if not args.from_scratch and not args.pretrained:
        raise TfrecError("finetune needs --pretrained DIR, or --from-scratch to train without pretrained weights")
    if args.from_scratch and args.pretrained:
        raise TfrecError("--pretrained and --from-scratch exclude each other")
    if args.task not in contract.TASKS:
        raise TfrecError(f"unknown task {args.task!r}; known: {', '.join(contract.TASKS)}")
    if args.teacher and args.task != contract.NEXT_ITEM:
        raise TfrecError("--teacher distils into the next-item task only")
    next_item = args.task == contract.NEXT_ITEM
    config = _run_config(args, "finetune" if next_item else "tasks")
    if args.teacher:
        config = config.updated({"finetune.teacher": args.teacher}, where="--teacher")
    record = finetune(args.data, args.out, config, pretrained=args.pretrained, task=args.task,
                      overwrite=args.overwrite, verbose=args.verbose)
    if next_item:
        _print_summary(record, args.out)
    else:
        from tfrec.training import task_trainer

        print(task_trainer.summary_table(record.get("summary", {})), end="")
    return 0


def cmd_ensemble(args) -> int:
    from tfrec.evaluation import sequential
    from tfrec.training import ensemble

    summary = ensemble.combine(args.models, args.out, member_weights=args.weights, data_dir=args.data,
                               overwrite=args.overwrite)
    print(f"ensemble of {len(summary['members'])} models, weights "
          f"{', '.join(f'{w:.3g}' for w in summary['member_weights'])}")
    if summary.get("valid_metrics"):
        rows = [(path, m) for path, m in zip(summary["members"], summary["member_valid_metrics"])]
        rows.append(("ensemble", summary["valid_metrics"]))
        print("valid split, leave-one-out, full ranking over every item, history items excluded:")
        print(sequential.markdown_table(rows), end="")
    else:
        print("no validation figures: a member was refit on the validation items")
    print(f"tfrec: wrote {os.path.join(args.out, ensemble.MODEL_DIR)}", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from tfrec.evaluation import sequential

    if bool(args.model) == bool(args.baseline):
        raise TfrecError("evaluate needs exactly one of --model DIR or --baseline popularity")
    report, ranks, seqs = sequential.evaluate_saved(args.model, args.data, args.split, baseline=args.baseline,
                                                   exclude_history=not args.include_history)
    if args.out:
        out = args.out
    elif args.model:
        out = os.path.join(args.model, f"eval_{args.split}")
    else:
        out = os.path.join("artifacts", "eval", f"{args.baseline}_{args.split}")
    paths = sequential.write_report(report, ranks, seqs, out, args.per_user)
    print(f"{args.split} split, {report['protocol']}:")
    print(sequential.markdown_table([(str(report["model"]), report["metrics"])]), end="")
    print(f"tfrec: wrote {', '.join(paths)}", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from tfrec.export import exporter

    path = exporter.export(args.model, args.serving_root, args.name, version=args.version, k=args.top_k,
                           data_dir=args.data)
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


def _flag_bool(text: str) -> bool:
    """A boolean flag value as tensorflow_model_server takes it: true/false or 1/0."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


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
    client = Client(args.server, timeout=args.timeout)
    try:
        rows = client.recommend(args.model, [history], k=args.k,
                                user_ids=[args.user] if args.user is not None else None)[0]
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
    table = [(str(rank), item, f"{score:.4f}", titles.get(item, "")) for rank, (item, score) in enumerate(rows, 1)]
    print(format_table(table, ("rank", "item", "score", "title") if titles else ("rank", "item", "score", "")))
    return 0


def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared dataset folder (tfrec data prepare)")
    p.add_argument("--out", required=True, help="run folder; started again with the same command, a run resumes")
    p.add_argument("--config", help="YAML or JSON run config (sections model, pretrain, finetune, tasks); see configs/")
    p.add_argument("--split", help="loo (default), random (80/20 rows) or cold (10%% of items held out); "
                   "a task's pretraining must use the task's split")
    p.add_argument("--epochs", type=int, help="most epochs (early stopping on validation NDCG@10 may end sooner)")
    p.add_argument("--batch-size", type=int, help="sequences per batch")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate")
    p.add_argument("--seed", type=int, help="seed of weights, batches and masks")
    p.add_argument("--strategy", help="tf.distribute strategy: mirrored (default), default, one-device, "
                                      "multi-worker (the cluster in TF_CONFIG)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any config setting, e.g. --set pretrain.mask_rate=0.3 --set model.hidden_dim=128")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or different run in --out")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras progress: 1 bars, 2 a line per epoch")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tfrec", description="Pretrain once, fine-tune per task, ship to TensorFlow Serving.")
    parser.add_argument("--version", action="version", version=f"tfrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    data = sub.add_parser("data", help="prepare datasets and show their statistics")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    prep = data_sub.add_parser("prepare", help="load, clean, split a dataset and write a dataset folder")
    prep.add_argument("source", help="movielens-100k, movielens-1m, movielens-latest-small, amazon-s3rec, csv or parquet")
    prep.add_argument("--path", help="local folder of the original files (or the interactions file for csv/parquet); "
                      f"default: ${DATA_DIR_ENV}/<folder> when present, else the cache, downloading on first use")
    prep.add_argument("--out", required=True, help="dataset folder to write (replaced atomically)")
    prep.add_argument("--name", help="amazon-s3rec: which <Name>.txt (Beauty, Sports_and_Outdoors, Toys_and_Games...)")
    prep.add_argument("--columns", help="csv/parquet: canonical=source column pairs, e.g. user_id=userId,item_id=movieId")
    prep.add_argument("--items", help="csv/parquet: item feature table")
    prep.add_argument("--users", help="csv/parquet: user feature table")
    prep.add_argument("--list-columns", help="csv/parquet: comma-separated feature columns holding |-separated lists")
    prep.add_argument("--sep", default=",", help="csv: field separator (default ',')")
    prep.add_argument("--order-as-time", action="store_true", help="csv/parquet: no timestamp column; row order is time")
    prep.add_argument("--rating-threshold", type=float, help="keep interactions rated at least this (implicit feedback)")
    prep.add_argument("--min-user-interactions", type=int, default=1, help="iterated k-core bound for users (default 1: off)")
    prep.add_argument("--min-item-interactions", type=int, default=1, help="iterated k-core bound for items (default 1: off)")
    prep.add_argument("--dedupe", choices=("exact", "user_item"), default="exact",
                      help="drop identical rows (exact) or repeated (user, item) pairs, keeping the first")
    prep.add_argument("--loo-min-length", type=int, default=3, help="shorter users stay wholly in train (default 3)")
    prep.add_argument("--test-fraction", type=float, default=0.2, help="test share of the random and temporal splits")
    prep.add_argument("--seed", type=int, default=42, help="seed of the random split")
    prep.add_argument("--format", choices=("parquet", "tfrecord"), default="parquet",
                      help="tfrecord: also write each user's leave-one-out sequence to sharded TFRecord files, "
                           "which training then reads, interleaved (default parquet: the tables only)")
    prep.add_argument("--shards", type=int, default=1, help="number of TFRecord files of --format tfrecord (default 1)")
    prep.set_defaults(func=cmd_data_prepare)
    st = data_sub.add_parser("stats", help="print the statistics of a prepared dataset")
    st.add_argument("dir", help="prepared dataset folder")
    st.add_argument("--json", action="store_true", help="print stats.json instead of a table")
    st.set_defaults(func=cmd_data_stats)

    pre = sub.add_parser("pretrain", help="pretrain a sequence backbone with the masked-item objective")
    _training_options(pre)
    pre.set_defaults(func=cmd_pretrain)
    ft = sub.add_parser("finetune", help="fine-tune a pretrained backbone into a task")
    ft.add_argument("--task", default=contract.NEXT_ITEM,
                    help="next-item (default), retrieval, ranking, cold-start or multitask")
    ft.add_argument("--pretrained", help="pretraining run folder (or its model/ folder)")
    ft.add_argument("--from-scratch", action="store_true", help="start from fresh weights instead of --pretrained")
    ft.add_argument("--teacher", help="next-item: a trained next-item model or ensemble (run or model/ folder) to "
                    "distil from (finetune.teacher; finetune.distill_* settings)")
    _training_options(ft)
    ft.set_defaults(func=cmd_finetune)
    en = sub.add_parser("ensemble", help="combine next-item models into one that averages their log-probabilities")
    en.add_argument("--models", nargs="+", required=True, metavar="DIR",
                    help="two or more next-item run folders (or model/ folders) trained on the same prepared dataset")
    en.add_argument("--out", required=True, help="output folder: the ensemble goes to OUT/model")
    en.add_argument("--weights", nargs="+", type=float, metavar="W",
                    help="one positive weight per model (default: equal)")
    en.add_argument("--data", help="prepared dataset folder for the validation figures (default: the models' own)")
    en.add_argument("--overwrite", action="store_true", help="replace an ensemble already in OUT")
    en.set_defaults(func=cmd_ensemble)
    ex = sub.add_parser("export", help="export a trained model as a versioned SavedModel for TensorFlow Serving")
    ex.add_argument("--model", required=True, help="run folder or saved model folder")
    ex.add_argument("--serving-root", required=True, help="model base folder root: the export goes to ROOT/NAME/VERSION")
    ex.add_argument("--name", required=True, help="model name (the folder under the serving root)")
    ex.add_argument("--version", type=int, help="version number (default: one more than the largest present)")
    ex.add_argument("--top-k", type=int, default=100, help="items a recommendation request returns (default 100)")
    ex.add_argument("--data", help="prepared dataset folder (default: the one the model was trained on)")
    ex.set_defaults(func=cmd_export)
    pu = sub.add_parser("push", help="push an export as the next served version if it is not worse than the current")
    pu.add_argument("--candidate", required=True, help="an export folder (a version folder written by tfrec export)")
    pu.add_argument("--serving-root", required=True, help="the model base folder root the server reads")
    pu.add_argument("--name", required=True, help="model name under the serving root")
    pu.add_argument("--metric", default="ndcg@10", help="validation figure that decides (default ndcg@10; rmse for ranking)")
    pu.add_argument("--min-delta", type=float, default=0.0, help="how much worse the candidate may be (default 0)")
    pu.add_argument("--keep", type=int, default=3, help="versions kept after the push (default 3)")
    pu.add_argument("--data", help="prepared dataset folder (default: the one in the export's metadata)")
    pu.set_defaults(func=cmd_push)
    sv = sub.add_parser("serve", help="serve exports over TensorFlow Serving's gRPC and REST APIs")
    flag = dict(type=_flag_bool, nargs="?", const=True)  # --flag, --flag=true, --flag=false, as TF Serving takes them
    sv.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0: none, with --grpc_socket_path)")
    sv.add_argument("--grpc_socket_path", help="also listen for gRPC on this UNIX socket")
    sv.add_argument("--rest_api_port", type=int, default=0, help="REST port (default 0: no REST, as TF Serving)")
    sv.add_argument("--rest_api_num_threads", type=int, help="threads answering REST requests (default 4 per core)")
    sv.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                    help="time a REST request may take to arrive and to run (default 30000)")
    sv.add_argument("--model_name", default="default", help="name of the model served from --model_base_path")
    sv.add_argument("--model_base_path", help="folder of integer version folders")
    sv.add_argument("--model_config_file", help="ModelServerConfig text proto (several models, version policies, labels)")
    sv.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                    help="seconds between reads of --model_config_file for changes (default 0: read once)")
    sv.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                    help="seconds between looks for new and removed versions (0: load once)")
    sv.add_argument("--max_num_load_retries", type=int, default=5,
                    help="retries of a version that failed to load (default 5)")
    sv.add_argument("--load_retry_interval_micros", type=int, default=60_000_000,
                    help="pause between load retries in microseconds (default 60000000)")
    sv.add_argument("--allow_version_labels_for_unavailable_models", default=False, **flag,
                    help="let version_labels name versions not yet AVAILABLE (default false)")
    sv.add_argument("--enable_model_warmup", default=True, **flag,
                    help="replay assets.extra/tf_serving_warmup_requests at load (default true)")
    sv.add_argument("--enable_batching", default=False, **flag, help="server-side dynamic batching (default false)")
    sv.add_argument("--batching_parameters_file", help="BatchingParameters text proto (max_batch_size, "
                    "batch_timeout_micros, num_batch_threads, max_enqueued_batches, allowed_batch_sizes...)")
    sv.add_argument("--monitoring_config_file", help="MonitoringConfig text proto: Prometheus metrics on the REST port")
    sv.add_argument("--ssl_config_file", help="SSLConfig text proto (server_key, server_cert, custom_ca, "
                    "client_verify): TLS for gRPC")
    sv.add_argument("--enable_grpc_healthcheck_service", default=False, **flag,
                    help="serve grpc.health.v1 (default false, as TF Serving)")
    sv.add_argument("--grpc_max_threads", type=int, help="threads answering gRPC calls (default 4 per core)")
    sv.add_argument("--grpc_max_concurrent_rpcs", type=int,
                    help="gRPC calls running or waiting at once; more are RESOURCE_EXHAUSTED (default 4 per thread)")
    sv.add_argument("--max_request_rows", type=int, default=10_000,
                    help="rows one request may carry (default 10000; more: RESOURCE_EXHAUSTED)")
    sv.add_argument("--max_tensor_elements", type=int, default=10_000_000,
                    help="elements one input tensor may have (default 10000000)")
    sv.add_argument("--max_history_length", type=int, default=10_000,
                    help="longest dimension after the first, such as a history (default 10000)")
    sv.add_argument("--rest_api_max_body_bytes", type=int, help="largest REST body (default 16 MiB; more: 413)")
    sv.add_argument("--model_base_path_roots", help="comma-separated folders every base_path must lie in "
                    "(startup, config file and reload requests alike; default: anywhere)")
    sv.add_argument("--enable_reload_config_request", default=True, **flag,
                    help="accept HandleReloadConfigRequest (default true; false: UNIMPLEMENTED)")
    sv.add_argument("--access_log_file", help="append one line per request to this file (-: standard output)")
    sv.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                    help="threads one op may use (default 0: TensorFlow's choice; 1 suits many small requests)")
    sv.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                    help="ops run at once (default 0: TensorFlow's choice)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.set_defaults(func=cmd_serve)
    qu = sub.add_parser("query", help="ask a TensorFlow Serving (or tfrec serve) server for recommendations")
    qu.add_argument("--server", default="localhost:8500", help="gRPC address (default localhost:8500)")
    qu.add_argument("--model", required=True, help="model name")
    qu.add_argument("--history", required=True, help="item ids, oldest first, comma-separated")
    qu.add_argument("--user", help="user id, for models with user features")
    qu.add_argument("-k", type=int, default=10, help="items to show (default 10)")
    qu.add_argument("--data", help="prepared dataset folder, to show item titles")
    qu.add_argument("--timeout", type=float, default=5.0, help="deadline of the call in seconds (default 5)")
    qu.set_defaults(func=cmd_query)
    ev = sub.add_parser("evaluate", help="leave-one-out full-ranking evaluation of a model or a baseline")
    ev.add_argument("--model", help="run folder or saved model folder")
    ev.add_argument("--baseline", help="popularity: rank items by their training count")
    ev.add_argument("--data", required=True, help="prepared dataset folder")
    ev.add_argument("--split", default="valid", choices=("valid", "test"), help="valid (default) or test")
    ev.add_argument("--per-user", action="store_true", help="also write each user's target and rank (CSV)")
    ev.add_argument("--include-history", action="store_true", help="rank the history's items too (default: excluded)")
    ev.add_argument("--out", help="output prefix of the .json/.md files (default: <model>/eval_<split>)")
    ev.set_defaults(func=cmd_evaluate)

    qs = sub.add_parser("quickstart", help="run the main job end to end on MovieLens-100K")
    qs.add_argument("--data-dir", help=f"folder with u.data, u.item, u.user (or its parent); default ${DATA_DIR_ENV}")
    qs.add_argument("--workdir", default="artifacts/quickstart", help="where outputs go (default artifacts/quickstart)")
    qs.add_argument("--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "quickstart.yaml"),
                    help="run config (default: the short run of tfrec/configs/quickstart.yaml)")
    qs.set_defaults(func=cmd_quickstart)
    return parser


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            names = ", ".join(f"`{o}`" for o in action.option_strings)
            if action.nargs != 0:
                value = "{" + ",".join(map(str, action.choices)) + "}" if action.choices else (action.metavar or action.dest.upper())
                names += f" `{value}`"
        else:
            names = f"`{action.metavar or action.dest}`"
        need = "yes" if action.required or not action.option_strings else ""
        text = (action.help or "").replace("|", "\\|")
        rows.append(f"| {names} | {need} | {text} |")
    return rows


def cli_reference() -> str:
    """Markdown reference of every command and flag, generated from the parser (docs/cli.md holds it)."""
    import functools

    lines = []

    def walk(parser, path: list[str], help_text: str) -> None:
        subs = list(_subcommands(parser))
        if path and not subs:
            parser.formatter_class = functools.partial(argparse.HelpFormatter, width=100)
            usage = parser.format_usage().replace("usage: ", "", 1).strip()
            lines.extend([f"### `{' '.join(path)}`", "", help_text[:1].upper() + help_text[1:] + ".", "",
                          "```", usage, "```", "", "| argument | required | meaning |", "|---|---|---|",
                          *_option_rows(parser), ""])
        for name, text, sub in subs:
            walk(sub, path + [name], text)

    walk(build_parser(), ["tfrec"], "")
    return "\n".join(lines)


REFERENCE_BEGIN = "<!-- begin: generated by tfrec.cli.cli_reference(); do not edit by hand -->"
REFERENCE_END = "<!-- end: generated -->"


def write_cli_reference(path: str) -> None:
    """Replaces the generated part of `path` (docs/cli.md) with :func:`cli_reference`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, _, rest = text.partition(REFERENCE_BEGIN)
    _, _, tail = rest.partition(REFERENCE_END)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{REFERENCE_BEGIN}\n\n{cli_reference()}\n{REFERENCE_END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    from tfrec.allocator import keep_freed_memory

    keep_freed_memory()  # before TensorFlow allocates anything: see tfrec/allocator.py
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        return int(func(args) or 0)
    except TfrecError as e:
        print(f"tfrec: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("tfrec: interrupted; nothing partial was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
