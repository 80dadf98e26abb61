"""Federated next-item fine-tuning on Flower: each simulated client holds its own users' sequences, trains
the model on them and sends weights back; the server averages them (FedAvg, weighted by examples),
optionally with client-level differential privacy, and validates the global model after every round.

    tfrec finetune --federated --data DIR --out RUN [--pretrained RUN | --from-scratch] --config C.yaml

Flower runs the clients (its simulation engine, on Ray); the model, its examples and its validation are
tfrec's own: the next-item model of ``finetune`` (:func:`tfrec.training.trainer.next_item_model`) on
all-prefixes examples of each client's users.  The global model of the round with the best validation
NDCG@10 is saved as an ordinary run folder (``tfrec evaluate``, ``tfrec export`` read it).  Settings:
``federated`` in the run config (:class:`tfrec.training.config.FederatedConfig`); what the guarantee covers:
docs/privacy.md.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from tfrec import contract
from tfrec.data.store import display
from tfrec.errors import TfrecError
from tfrec.training.config import RunConfig

_CLIENT_STATE: dict = {}  # per process (a Ray worker runs many clients): the data and the model, built once


def partition(users: int, clients: int, seed: int) -> list[np.ndarray]:
    """The training sequences' indices dealt to `clients` at random (seeded), as evenly as possible."""
    order = np.random.default_rng(seed).permutation(users)
    return [np.sort(part) for part in np.array_split(order, clients)]


def _flower():
    import importlib.util

    if importlib.util.find_spec("flwr") is None:
        raise TfrecError("federated fine-tuning runs on Flower, which is not installed: pip install "
                         "'tfrec[federated]'")


def _state(data_dir: str, config: RunConfig, pretrained: str | None, fingerprint: str, data=None):
    """(data, compiled model) for this process, built on first use (from `data` where the caller has loaded
    it already)."""
    key = (data_dir, repr(config), pretrained)
    if key not in _CLIENT_STATE:
        import tensorflow as tf

        from tfrec.training import trainer
        from tfrec.training.sequence_data import SequenceData

        if data is None:
            data = SequenceData.load(data_dir, config=config)
        trainer.set_seed(config)
        model = trainer.next_item_model(config, data, pretrained, fingerprint)
        # a constant learning rate: a client's optimizer starts afresh every round (its state is reset)
        model.compile(optimizer=tf.keras.optimizers.Adam(config.finetune.learning_rate))
        _CLIENT_STATE.clear()
        _CLIENT_STATE[key] = (data, model)
    return _CLIENT_STATE[key]


def _client_app(data_dir: str, config: RunConfig, pretrained: str | None, fingerprint: str):
    from flwr.client import ClientApp, NumPyClient

    stage, fed = config.finetune, config.federated

    class SequenceClient(NumPyClient):
        def __init__(self, index: int):
            self.index = index

        def fit(self, parameters, fit_config):
            import tensorflow as tf

            from tfrec.data import inputs

            data, model = _state(data_dir, config, pretrained, fingerprint)
            own = partition(len(data.train), fed.clients, config.seed)[self.index]
            x, y = inputs.next_item_examples([data.train[i] for i in own], config.model.max_len)
            model.set_weights(parameters)
            for v in model.optimizer.variables:
                v.assign(tf.zeros_like(v))
            if len(y):
                ds = inputs.next_item_dataset(x, y, batch_size=stage.batch_size, repeat=True,
                                              seed=config.seed + int(fit_config.get("round", 0)), trim=True,
                                              sort_window=stage.sort_window)
                model.fit(ds, epochs=fed.local_epochs, steps_per_epoch=max(1, math.ceil(len(y) / stage.batch_size)),
                          verbose=0)
            return model.get_weights(), int(len(y)), {"users": int(len(own))}

    def client_fn(context):
        return SequenceClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn)


def finetune(data_dir: str, out: str, config: RunConfig | None = None, pretrained: str | None = None,
             overwrite: bool = False, verbose=None) -> dict:
    """Federated next-item fine-tuning of ``config.federated``; returns the run record (as
    :func:`tfrec.training.trainer.finetune`)."""
    _flower()
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
    from flwr.simulation import run_simulation

    from tfrec.evaluation import ranking
    from tfrec.fileio import write_json
    from tfrec.models import persistence
    from tfrec.models.persistence import MODEL_DIR, resolve_model_dir
    from tfrec.training import privacy
    from tfrec.training.runs import METRICS_FILE, VALIDATION_FILE, finish_run, prepare_run_dir
    from tfrec.training.sequence_data import SequenceData, data_fingerprint

    config = config or RunConfig()
    fed, stage = config.federated, config.finetune
    if config.split != contract.LEAVE_ONE_OUT:
        raise TfrecError(f"federated next-item fine-tuning uses the leave-one-out split; this config has "
                         f"split {config.split!r}")
    if stage.examples != "all-prefixes":
        raise TfrecError(f"federated fine-tuning trains on all-prefixes examples; this config has "
                         f"finetune.examples {stage.examples!r}")
    if config.privacy.enabled:
        raise TfrecError("federated fine-tuning takes its differential privacy on the server "
                         "(federated.noise_multiplier, federated.clip_norm), not DP-SGD's privacy settings")
    if stage.teacher or stage.contrastive_weight or config.experimental.triplet_weight:
        raise TfrecError("federated fine-tuning trains the next-item loss alone; set finetune.teacher, "
                         "finetune.contrastive_weight and experimental.triplet_weight to their defaults")
    data = SequenceData.load(data_dir, config=config)
    if fed.clients > len(data.train):
        raise TfrecError(f"federated.clients is {fed.clients} but the dataset at {data_dir} has "
                         f"{len(data.train)} training users; every client needs at least one")
    pretrained_model = resolve_model_dir(pretrained) if pretrained else None
    fingerprint = data_fingerprint(data.dataset)
    identity = {"stage": "finetune:federated", "config": config.to_dict(), "data": fingerprint,
                "pretrained": os.path.abspath(pretrained_model) if pretrained_model else None}
    done = prepare_run_dir(out, identity, overwrite)
    if done:
        print(f"{out} holds a finished federated fine-tuning run; pass --overwrite to run it again", flush=True)
        return done
    data_dir = os.path.abspath(data_dir)
    _, model = _state(data_dir, config, pretrained_model, fingerprint, data)
    weights = model.get_weights()
    sampled = max(1, int(round(fed.fraction * fed.clients)))
    extra = {"dataset": display(data_dir), "data_fingerprint": fingerprint, "run_config": config.to_dict(),
             "pretrained": identity["pretrained"], "parameters": int(sum(w.size for w in weights))}
    rounds, best = [], {"round": -1, "ndcg@10": -1.0}

    def validate(server_round, parameters, _config):
        start = time.perf_counter()
        model.set_weights(parameters)
        metrics, _ = ranking.evaluate(ranking.model_scorer(model, config.model.max_len, config.eval_batch_size),
                                      data.valid.histories, data.valid.targets, config.exclude_history,
                                      config.eval_batch_size)
        rounds.append({"round": int(server_round), **{f"val_{k}": v for k, v in metrics.items()},
                       "val_seconds": time.perf_counter() - start})
        write_json(os.path.join(out, VALIDATION_FILE), {"rounds": rounds, "best_round": best["round"]})
        if metrics["ndcg@10"] > best["ndcg@10"]:
            best.update(round=int(server_round), **metrics)
            persistence.save(model, os.path.join(out, MODEL_DIR), contract.NEXT_ITEM,
                             extra=dict(extra, epoch=int(server_round), valid_metrics=metrics))
        if verbose != 0:
            print(f"round {server_round}: validation NDCG@10 {metrics['ndcg@10']:.4f}, HR@10 {metrics['hr@10']:.4f} "
                  f"(best {best['ndcg@10']:.4f} at round {best['round']})", flush=True)
        return 0.0, {}

    def server_fn(_context):
        strategy = FedAvg(fraction_fit=fed.fraction, fraction_evaluate=0.0, min_fit_clients=sampled,
                          min_available_clients=fed.clients, evaluate_fn=validate,
                          on_fit_config_fn=lambda r: {"round": r},
                          initial_parameters=ndarrays_to_parameters(weights))
        if fed.noise_multiplier > 0:
            strategy = DifferentialPrivacyServerSideFixedClipping(strategy, fed.noise_multiplier, fed.clip_norm,
                                                                  sampled)
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=fed.rounds))

    start = time.perf_counter()
    run_simulation(ServerApp(server_fn=server_fn), _client_app(data_dir, config, pretrained_model, fingerprint),
                   num_supernodes=fed.clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}},
                   verbose_logging=False)
    seconds = time.perf_counter() - start
    if len(rounds) < fed.rounds + 1:  # round 0 (the starting weights) and every round after it
        raise TfrecError(f"the federated simulation stopped after {max(0, len(rounds) - 1)} of {fed.rounds} rounds; "
                         "its log above says why")
    sent = int(sum(w.nbytes for w in weights))
    summary = {"best_epoch": best["round"], "epochs_run": fed.rounds, "validations": len(rounds),
               "stopped_early": False, "valid": {k: v for k, v in best.items() if k != "round"},
               "fit_seconds_this_process": seconds,
               "federated": {"clients": fed.clients, "rounds": fed.rounds, "local_epochs": fed.local_epochs,
                             "clients_per_round": sampled, "model_bytes": sent,
                             "bytes_per_round": 2 * sent * sampled, "framework": "flwr",
                             "aggregation": "FedAvg" + (" with server-side fixed clipping and Gaussian noise"
                                                        if fed.noise_multiplier > 0 else "")}}
    if fed.noise_multiplier > 0:
        delta = config.privacy.delta or 1.0 / fed.clients
        eps = privacy.epsilon(fed.noise_multiplier, sampled / fed.clients, fed.rounds, delta)
        summary["privacy"] = {"unit": "client", "epsilon": eps, "delta": delta,
                              "noise_multiplier": fed.noise_multiplier, "clip_norm": fed.clip_norm,
                              "sample_rate": sampled / fed.clients, "rounds": fed.rounds}
        print(f"privacy: client-level epsilon {eps:.2f} at delta {delta:.3g} after {fed.rounds} rounds", flush=True)
    write_json(os.path.join(out, METRICS_FILE), summary)
    return finish_run(out, summary)
