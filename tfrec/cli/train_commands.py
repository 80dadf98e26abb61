"""``tfrec pretrain``, ``finetune``, ``ensemble``, ``evaluate`` and ``quickstart``."""

from __future__ import annotations

import os
import sys

from tfrec import contract
from tfrec.errors import TfrecError
from tfrec.cli.common import print_summary, run_config_from_args, format_table, stats_rows


def cmd_pretrain(args) -> int:
    from tfrec.training import trainer

    config = run_config_from_args(args, "pretrain")
    record = trainer.pretrain(args.data, args.out, config, overwrite=args.overwrite, verbose=args.verbose)
    print_summary(record, args.out)
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
    config = run_config_from_args(args, "finetune" if next_item else "tasks")
    if args.teacher:
        config = config.updated({"finetune.teacher": args.teacher}, where="--teacher")
    record = finetune(args.data, args.out, config, pretrained=args.pretrained, task=args.task,
                      overwrite=args.overwrite, verbose=args.verbose)
    if next_item:
        print_summary(record, args.out)
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
