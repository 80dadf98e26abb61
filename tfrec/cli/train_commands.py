"""``tfrec pretrain``, ``finetune``, ``ensemble`` and ``evaluate``."""

from __future__ import annotations

import os
import sys

from tfrec import contract
from tfrec.errors import TfrecError
from tfrec.cli.common import print_summary, run_config_from_args


def cmd_pretrain(args) -> int:
    from tfrec.training import trainer

    config = run_config_from_args(args, "pretrain")
    data = args.data[0] if len(args.data) == 1 else args.data
    record = trainer.pretrain(data, args.out, config, overwrite=args.overwrite, verbose=args.verbose,
                              preprocessor=args.preprocessor, link=args.link)
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
    if args.federated:
        if not next_item or args.teacher or args.preprocessor:
            raise TfrecError("--federated fine-tunes the next-item task, without --teacher or --preprocessor")
        from tfrec.training import federated

        record = federated.finetune(args.data, args.out, config, pretrained=args.pretrained,
                                    overwrite=args.overwrite, verbose=args.verbose)
        print_summary(record, args.out)
        fed = record.get("summary", {}).get("federated", {})
        if fed:
            print(f"federated: {fed['clients']} clients, {fed['rounds']} rounds, {fed['clients_per_round']} clients a "
                  f"round; {fed['bytes_per_round'] / 1e6:.1f} MB sent and received a round")
        return 0
    record = finetune(args.data, args.out, config, pretrained=args.pretrained, task=args.task,
                      overwrite=args.overwrite, verbose=args.verbose, preprocessor=args.preprocessor)
    if next_item:
        print_summary(record, args.out)
    else:
        from tfrec.training import task_trainer

        print(task_trainer.summary_table(record.get("summary", {})), end="")
    return 0


def cmd_ensemble(args) -> int:
    from tfrec.evaluation import sequential
    from tfrec.training import ensemble

    models, weights = args.models, args.weights
    if args.search:
        if weights:
            raise TfrecError("--search chooses the weights on validation; leave out --weights")
        chosen = ensemble.search(args.models, args.out, data_dir=args.data, max_rounds=args.max_rounds,
                                 log=lambda m: print(m, flush=True))
        models, weights = chosen["members"], chosen["weights"]
        if len(models) == 1:
            print(f"the search kept one model, {models[0]} (validation NDCG@10 {chosen['valid']['ndcg@10']:.4f}): "
                  f"no other candidate raised it; no ensemble written ({os.path.join(args.out, ensemble.SEARCH_FILE)})")
            return 0
    summary = ensemble.combine(models, args.out, member_weights=weights, data_dir=args.data,
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
    rerank = None
    if args.rerank:
        rerank = {}
        for pair in args.rerank:
            key, _, value = pair.partition("=")  # no "=": an empty value, which float refuses
            try:
                rerank[key] = float(value)
            except ValueError:
                raise TfrecError(f"--rerank takes KNOB=NUMBER (diversity=0.3 popularity_penalty=0.5), got {pair!r}") \
                    from None
    report, ranks, seqs = sequential.evaluate_saved(args.model, args.data, args.split, baseline=args.baseline,
                                                   exclude_history=not args.include_history, rerank=rerank,
                                                   history_length=args.history_length)
    if args.out:
        out = args.out
    elif args.model:
        out = os.path.join(args.model, f"eval_{args.split}")
    else:
        out = os.path.join("artifacts", "eval", f"{args.baseline}_{args.split}")
    paths = sequential.write_report(report, ranks, seqs, out, args.per_user)
    print(f"{args.split} split, {report['protocol']}:")
    rows = [(str(report["model"]), report["metrics"])]
    rows += [(f"  {name}", m) for name, m in report.get("metrics_by_users", {}).items()]  # finetune.fraction < 1
    print(sequential.markdown_table(rows), end="")
    print(f"\nbeyond accuracy: the top {sequential.LIST_K} of each user, and NDCG@{sequential.LIST_K} by group of "
          "users (docs/evaluation.md):")
    print(sequential.beyond_accuracy_markdown(report), end="")
    print(f"tfrec: wrote {', '.join(paths)}", file=sys.stderr)
    return 0


def cmd_tune(args) -> int:
    from tfrec.training import tuning

    for name in ("epochs", "batch_size", "learning_rate", "seed", "strategy", "split"):
        setattr(args, name, getattr(args, name, None))  # flags tune does not take: the config's
    base = run_config_from_args(args, "finetune")
    space = tuning.load_space(args.space, base)
    tuning.tune(args.task, args.data, base, space, args.trials, args.study, workdir=args.workdir,
                pretrained=args.pretrained, sampler=args.sampler, pruner=args.pruner, study_name=args.study_name,
                log=lambda m: print(m, flush=True))
    return 0
