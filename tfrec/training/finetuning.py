"""One ``finetune(task=...)`` for every task: next-item and the TFRS tasks behind one call.

The command line, the pipeline's finetune step and the quickstart call it; the two trainers it
dispatches to share the run scaffold of :mod:`tfrec.training.runs`.
"""

from __future__ import annotations

from tfrec import contract
from tfrec.errors import TfrecError
from tfrec.training.config import RunConfig


def finetune(data_dir: str, out: str, config: RunConfig | None = None, pretrained: str | None = None,
             task: str = contract.NEXT_ITEM, overwrite: bool = False, verbose=None,
             preprocessor: str | None = None, callbacks=(), score_test: bool = True) -> dict:
    """Fine-tunes `task` (one of :data:`tfrec.contract.TASKS`) on the prepared dataset at `data_dir` into
    the run folder `out`, from the backbone (and head) of `pretrained`, or from scratch when it is None.
    `preprocessor`: the artifact of the pipeline's transform step; the run is refused unless it is this
    dataset's preprocessor for this model's length, and the run folder records which one it used.
    `callbacks`: Keras callbacks run after the validation that picks the best epoch (they see its figure
    in the logs: ``val_ndcg@10`` for next-item, :func:`monitored_figure` for each task).  `score_test`
    false: a TFRS task run does not score the test split at its end (next-item runs never do).
    Returns the run's record (its ``summary`` holds the validation figures)."""
    from tfrec.training.runs import record_preprocessor

    config = config or RunConfig()
    spec = record_preprocessor(preprocessor, data_dir, config.model.max_len) if preprocessor else None
    record = _dispatch(data_dir, out, config, pretrained, task, overwrite, verbose, callbacks, score_test)
    if spec:
        record_preprocessor(preprocessor, data_dir, config.model.max_len, out, spec)
    return record


def monitored_figure(task: str, config: RunConfig, num_items: int) -> tuple[str, str]:
    """(the Keras log key of the validation figure that picks a run's best epoch, "max" or "min")."""
    if task == contract.NEXT_ITEM:
        return "val_ndcg@10", "max"
    from tfrec.training import task_trainer

    return task_trainer.monitored(task, config, num_items)


def _dispatch(data_dir, out, config, pretrained, task, overwrite, verbose, callbacks, score_test) -> dict:
    if task == contract.NEXT_ITEM:
        from tfrec.training import trainer

        return trainer.finetune(data_dir, out, config, pretrained=pretrained, task=task, overwrite=overwrite,
                                verbose=verbose, callbacks=callbacks)
    if task in contract.TFRS_TASKS:
        from tfrec.training import task_trainer

        return task_trainer.finetune_task(data_dir, out, config, pretrained=pretrained, task=task,
                                          overwrite=overwrite, verbose=verbose, callbacks=callbacks,
                                          score_test=score_test)
    raise TfrecError(f"unknown task {task!r}; known: {', '.join(contract.TASKS)}")
