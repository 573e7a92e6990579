"""Evaluation charts, as matplotlib figures for MLflow (rendered off-screen)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from training.metrics import reliability_table


def roc_figure(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """ROC curves of several scorers on the same labels."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC on the test months")
    ax.legend()
    fig.tight_layout()
    return fig


def precision_recall_figure(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """Precision-recall curves of several scorers on the same labels."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, score in scores.items():
        precision, recall, _ = precision_recall_curve(y, score)
        ax.plot(recall, precision, label=name)
    ax.axhline(float(np.mean(y)), color="grey", linestyle=":", label="base rate")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall on the test months")
    ax.legend()
    fig.tight_layout()
    return fig


def calibration_figure(y: np.ndarray, prob: np.ndarray, title: str) -> Figure:
    """Predicted probability against observed abuse rate, per equal-count bin."""
    table = reliability_table(y, prob)
    fig, ax = plt.subplots(figsize=(6, 5))
    top = max(float(table["predicted"].max()), float(table["observed"].max()), 0.05)
    ax.plot([0, top], [0, top], color="grey", linestyle=":")
    ax.plot(table["predicted"], table["observed"], marker="o")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed abuse rate")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def importance_figure(names: list[str], gains: np.ndarray, top: int = 20) -> Figure:
    """The features with the largest total split gain."""
    order = np.argsort(gains)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh([names[i] for i in order], gains[order], color="#4477aa")
    ax.set_xlabel("total gain")
    ax.set_title("Feature importance")
    fig.tight_layout()
    return fig
