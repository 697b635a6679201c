"""Classification figures shared by training (float) and export (int8), so both report alike."""

from __future__ import annotations

import numpy as np

from edgedistill.recipe import SILENCE, UNKNOWN, is_keyword


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, per-class recall, confusion matrix (rows: truth), and false accepts.

    A false accept is a negative clip (`_unknown_` or `_silence_`) that the model calls a keyword:
    the error that wakes a device for nothing.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    totals = confusion.sum(axis=1)
    recall = {label: (float(confusion[i, i] / totals[i]) if totals[i] else None) for i, label in enumerate(labels)}
    keyword_ids = [i for i, label in enumerate(labels) if is_keyword(label)]
    false_accepts = {}
    for negative in (UNKNOWN, SILENCE):
        if negative in labels:
            row = labels.index(negative)
            false_accepts[negative] = float(confusion[row, keyword_ids].sum() / totals[row]) if totals[row] else None
    return {
        "count": int(y_true.size),
        "accuracy": float((y_true == y_pred).mean()) if y_true.size else None,
        "per_class_recall": recall,
        "false_accept_rate": false_accepts,
        "confusion": confusion.tolist(),
        "labels": labels,
    }
