"""Keras callbacks of tfrec's runs, usable on their own in any ``model.fit``.

:class:`RankingMetrics` adds full-ranking validation figures (``val_ndcg@10``, ``val_hr@10``...) to the
epoch logs, so Keras' own ``EarlyStopping``, ``ModelCheckpoint`` and ``TensorBoard`` can watch them::

    model.fit(ds, epochs=20, steps_per_epoch=100, callbacks=[
        RankingMetrics(data.valid, max_len=50),          # first: the others read its figures
        tf.keras.callbacks.EarlyStopping("val_ndcg@10", mode="max", patience=3, restore_best_weights=True),
        tf.keras.callbacks.TensorBoard("logs")])

:class:`RankingValidation` is the same with the run folder's bookkeeping (best epoch kept on disk,
patience state that survives a resume); :class:`EpochCheckpoint` and :class:`Backup` keep the training
state.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.data import inputs  # noqa: E402
from tfrec.evaluation import ranking  # noqa: E402
from tfrec.fileio import write_json  # noqa: E402

MONITOR = "ndcg@10"


class RankingMetrics(tf.keras.callbacks.Callback):
    """Full-ranking validation at epoch end (every `every` epochs and the last): HR@K, NDCG@K and MRR of
    `valid` (:class:`~tfrec.data.inputs.EvalSequences`: histories and their held-out next items), the items
    of each history left out of the ranking.  Adds ``val_<metric>`` to the epoch logs, so callbacks after
    it (``EarlyStopping(monitor="val_ndcg@10", mode="max")``, TensorBoard, the History) see them.

    Works for any model that :func:`tfrec.evaluation.ranking.model_scorer` can score: a next-item
    recommender, or a cloze pretrainer scored at a mask slot after the history.  `scorer` replaces that
    default (a function from left-padded histories to item scores).  `all_sum` (a worker's of a
    multi-worker job holding part of the users, :class:`tfrec.training.cluster.WorkerShare`): the figures
    are pooled over every worker's users."""

    def __init__(self, valid: inputs.EvalSequences, max_len: int = 50, every: int = 1, exclude_history: bool = True,
                 batch_size: int = 1024, scorer=None, verbose: bool = True, all_sum=None):
        super().__init__()
        self.valid, self.max_len, self.every = valid, max_len, max(1, int(every))
        self.exclude_history, self.batch_size, self.scorer, self.verbose = exclude_history, batch_size, scorer, verbose
        self.all_sum = all_sum

    def due(self, epoch: int) -> bool:
        """Whether epoch `epoch` (0-based) is validated."""
        return (epoch + 1) % self.every == 0 or epoch + 1 >= self.params.get("epochs", epoch + 1)

    def measure(self, logs: dict) -> dict:
        """Scores the validation histories now; the figures, also put into `logs` as ``val_<metric>``."""
        scorer = self.scorer or ranking.model_scorer(self.model, self.max_len, self.batch_size)
        start = time.perf_counter()
        metrics, _ = ranking.evaluate(scorer, self.valid.histories, self.valid.targets,
                                      exclude_history=self.exclude_history, batch_size=self.batch_size)
        if self.all_sum is not None:
            metrics = ranking.pooled_metrics(metrics, self.all_sum)
        metrics["seconds"] = time.perf_counter() - start
        for k, v in metrics.items():
            if k != "users":
                logs[f"val_{k}"] = v
        return metrics

    def on_epoch_end(self, epoch, logs=None):
        if not self.due(epoch):
            return
        metrics = self.measure(logs if logs is not None else {})
        if self.verbose:
            print(f"epoch {epoch + 1}: validation NDCG@10 {metrics[MONITOR]:.4f}, HR@10 {metrics['hr@10']:.4f}",
                  flush=True)

class EpochSelection(tf.keras.callbacks.Callback):
    """The best epoch by one validation figure, and early stopping: the state shared by the
    validation callbacks of every run.

    :meth:`record` files an epoch's figures; when `value` beats the best so far (``mode``
    ``max`` or ``min``), or always with ``select=False`` (a refit, trained on the validation
    items: the last epoch is kept and nothing stops early), it calls `on_improve(epoch,
    entry)`; after `patience` records without improvement it stops training.  The state
    lives in `state_path`, written only with ``write_state`` (the chief of a multi-worker
    job), so a resumed run remembers the best epoch and the patience used.
    """

    def __init__(self, state_path: str, on_improve, patience: int = 0, mode: str = "max", select: bool = True,
                 write_state: bool = True, **state):
        super().__init__()
        self.state_path, self.on_improve, self.patience = state_path, on_improve, patience
        self.mode, self.select, self.write_state = mode, select, write_state
        self.state = dict(state, best=None, best_epoch=None, wait=0, epochs={}, stopped_early=False, last_epoch=0)

    def on_train_begin(self, logs=None):
        if os.path.isfile(self.state_path):
            with open(self.state_path) as f:
                self.state = json.load(f)
        if self.state["stopped_early"]:  # stopped, then killed before the run was marked done
            self.model.stop_training = True

    def _save_state(self) -> None:
        if self.write_state:  # the chief's; other workers read it when they resume
            write_json(self.state_path, self.state)

    def _better(self, value: float) -> bool:
        best = self.state["best"]
        return best is None or not self.select or (value > best if self.mode == "max" else value < best)

    def record(self, epoch: int, logs: dict, value: float, figures: dict | None = None) -> None:
        """Files the numeric figures of `logs` for `epoch` (1-based), `value` the one that selects;
        `on_improve` gets `figures` (default: those of `logs`)."""
        entry = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float, np.floating))}
        self.state["epochs"][str(epoch)] = dict(entry, time=time.time())
        if self._better(value):
            self.state.update(best=value, best_epoch=epoch, wait=0)
            self.on_improve(epoch, entry if figures is None else figures)
        else:
            self.state["wait"] += 1
            if self.patience and self.state["wait"] >= self.patience:
                self.model.stop_training = True
                self.state["stopped_early"] = True
        self._save_state()

    def describe(self) -> str:
        if not self.select:
            return "refit: trained on these items, not held out; the last epoch is kept"
        return f"best {self.state['best']:.4f} at epoch {self.state['best_epoch']}"


class RankingValidation(EpochSelection):
    """:class:`RankingMetrics` selecting on NDCG@10 with a run folder's state: the best epoch is handed
    to `on_improve` (which saves the model), and early stopping's patience survives a resume."""

    def __init__(self, scorer, valid: inputs.EvalSequences, state_path: str, on_improve, every: int = 1,
                 patience: int = 0, exclude_history: bool = True, batch_size: int = 1024, select: bool = True,
                 write_state: bool = True, all_sum=None):
        super().__init__(state_path, on_improve, patience, "max", select, write_state)
        self.metrics = RankingMetrics(valid, every=every, exclude_history=exclude_history, batch_size=batch_size,
                                      scorer=scorer, verbose=False, all_sum=all_sum)

    def set_params(self, params):
        super().set_params(params)
        self.metrics.set_params(params)

    def on_epoch_end(self, epoch, logs=None):
        if self.state["stopped_early"]:
            return
        logs = logs if logs is not None else {}
        self.state["last_epoch"] = epoch + 1
        if not self.metrics.due(epoch):
            self._save_state()
            return
        metrics = self.metrics.measure(logs)
        self.state["users"] = int(metrics["users"])  # how many validation targets the figures average over
        self.record(epoch + 1, logs, float(metrics[MONITOR]), metrics)
        print(f"epoch {epoch + 1}: validation NDCG@10 {metrics[MONITOR]:.4f}, HR@10 {metrics['hr@10']:.4f} "
              f"({self.describe()})", flush=True)


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """A checkpoint of the model and optimizer after every epoch; the last `keep` are kept."""

    def __init__(self, directory: str, keep: int = 3):
        super().__init__()
        self.directory, self.keep = directory, max(1, keep)

    def on_train_begin(self, logs=None):
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
        self.manager = tf.train.CheckpointManager(checkpoint, self.directory, max_to_keep=self.keep,
                                                  checkpoint_name="epoch")

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=epoch + 1)


class Backup(tf.keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` every `every` steps and at each epoch end, so a run killed at any
    point (SIGKILL included) resumes from the latest backup, mid-epoch or not."""

    def on_epoch_end(self, epoch, logs=None):
        self._backup(epoch=epoch, batch=self.params["steps"] - 1)
