"""Figures of rating predictions: RMSE, MAE and R^2 of ratings, or AUC, log loss and accuracy of likes."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    labels = labels.astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), np.float64)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def rating_metrics(predictions: np.ndarray, ratings: np.ndarray, objective: str, threshold: float) -> dict:
    if objective == "binary":
        labels = ratings >= threshold
        p = 1.0 / (1.0 + np.exp(-predictions))
        eps = 1e-7
        loss = -np.mean(labels * np.log(p + eps) + (1 - labels) * np.log(1 - p + eps))
        return {"auc": auc(labels, predictions), "log_loss": float(loss),
                "accuracy": float(np.mean((p >= 0.5) == labels)), "rows": int(len(labels))}
    error = predictions - ratings
    variance = float(np.var(ratings))
    return {"rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
            "r2": 1.0 - float(np.mean(error ** 2)) / variance if variance else float("nan"), "rows": int(len(error))}
