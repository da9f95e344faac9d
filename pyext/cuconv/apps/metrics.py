"""Classification metrics from a confusion matrix: accuracy, per-class and macro precision,
recall and F1. A class with no predictions (or no examples) gets precision (recall) 0, as
scikit-learn's zero_division=0."""
from __future__ import annotations

from typing import Dict, Sequence

import torch


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 (num_classes, num_classes): row = true class, column = predicted class."""
    targets = targets.reshape(-1).to(torch.int64).cpu()
    predictions = predictions.reshape(-1).to(torch.int64).cpu()
    if targets.shape != predictions.shape:
        raise ValueError(f"targets {tuple(targets.shape)} and predictions {tuple(predictions.shape)} differ")
    flat = targets * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    # 0 where the denominator is 0 (no predictions / no examples), without dividing by zero.
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def classification_report(cm: torch.Tensor, classes: Sequence[str]) -> Dict:
    """Accuracy, macro precision/recall/F1 and per-class precision/recall/F1/support."""
    cm = cm.to(torch.float64)
    tp = cm.diagonal()
    predicted = cm.sum(0)   # column sums: how often each class was predicted
    actual = cm.sum(1)      # row sums: how many examples each class has
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, actual)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for name, p, r, f, s in zip(classes, precision, recall, f1, actual)},
        "confusion_matrix": cm.to(torch.int64).tolist(),
    }


def format_report(report: Dict) -> str:
    """A plain-text table of a classification_report."""
    width = max([len(n) for n in report["per_class"]] + [9])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name, m in report["per_class"].items():
        lines.append(f"{name:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:.4f}  {m['support']:7d}")
    lines.append(f"{'macro':<{width}}  {report['macro_precision']:9.4f}  {report['macro_recall']:6.4f}  "
                 f"{report['macro_f1']:.4f}")
    lines.append(f"accuracy {report['accuracy']:.4f}")
    return "\n".join(lines)
