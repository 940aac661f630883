"""Binary classification figures and the operating point, as the model card reports them."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["binary_metrics", "choose_operating_point"]


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float | int | None]:
    """Accuracy, F1, sensitivity, specificity (at ``threshold``) and ROC AUC, as plain floats.

    ``labels`` 1 = abnormal. AUC is ``None`` when only one class is present.
    """
    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, float)
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = len(y)
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    prec = tp / (tp + fp) if tp + fp else None
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None
    return {
        "n": n,
        "positives": int(y.sum()),
        "accuracy": (tp + tn) / n if n else None,
        "f1": f1,
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
        "auc": auc,
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "threshold": float(threshold),
    }


def choose_operating_point(labels: np.ndarray, probs: np.ndarray, method: str = "youden") -> float:
    """Probability threshold chosen on validation data.

    Parameters
    ----------
    method
        ``youden`` (maximise sensitivity + specificity − 1), ``sens90`` / ``sens95`` (the highest
        threshold whose sensitivity reaches 90 % / 95 %, i.e. sensitivity first), or a number
        (used as is).

    Returns
    -------
    float
        A threshold in (0, 1); an image is abnormal when ``probability >= threshold``.
    """
    try:
        return float(method)
    except ValueError:
        pass
    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, float)
    if len(set(y.tolist())) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    if method == "youden":
        j = tpr - fpr
        best = np.flatnonzero(j == j.max())
        k = int(best[len(best) // 2])  # middle of a plateau
        t = float(thr[k])
        # place the cut half-way to the next lower score so it is not on a training value
        lower = p[p < t]
        if lower.size:
            t = (t + float(lower.max())) / 2.0
        return float(np.clip(t, 1e-6, 1 - 1e-6))
    if method in ("sens90", "sens95"):
        need = 0.90 if method == "sens90" else 0.95
        ok = np.flatnonzero(tpr >= need)
        return float(np.clip(thr[ok[0]], 1e-6, 1 - 1e-6)) if ok.size else 0.5
    raise ValueError(f"unknown operating point method {method!r}: youden, sens90, sens95 or a number")
