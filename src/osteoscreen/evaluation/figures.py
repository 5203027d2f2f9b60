"""Evaluation figures: ROC, correlation, Bland-Altman and confusion matrix (PNG, 150 dpi).

Each function draws on its own ``matplotlib.figure.Figure`` with the Agg canvas (no
pyplot state, safe in threads and without a display) and writes the PNG atomically: a
temporary file in the target folder, then ``os.replace``. The parent folder is created
when missing. Each returns the path it wrote.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from scipy import stats

from osteoscreen.config import CATEGORIES, Thresholds
from osteoscreen.evaluation.metrics import regression_metrics

__all__ = ["plot_bland_altman", "plot_confusion", "plot_correlation", "plot_roc"]

DPI = 150
UNIT = "mg/cm³"
_CLASS_COLOURS = ("#2e7d32", "#f9a825", "#c62828", "#6a1b9a", "#1565c0")
_BOX = {"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.9}


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write the figure as PNG via a temporary file and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a figure is for everyone to read
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    return "" if ci is None else f" ({_fmt(ci[0], digits)}, {_fmt(ci[1], digits)})"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _paired(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.ndim != 1 or p.shape != t.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {t.shape} and {p.shape}")
    return t, p


def _auc_entries(aucs: Mapping[str, Any]) -> tuple[dict[str, tuple[float | None, Any]], tuple[Any, Any]]:
    """Per-class and macro (auc, ci) from a classification_metrics dict or a plain mapping."""
    if "auc_per_class" in aucs:
        ci = aucs.get("auc_per_class_ci") or {}
        per = {name: (auc, ci.get(name)) for name, auc in aucs["auc_per_class"].items()}
        return per, (aucs.get("auc_macro"), aucs.get("auc_macro_ci"))
    per = {}
    macro: tuple[Any, Any] = (None, None)
    for name, value in aucs.items():
        entry = (value[0], value[1]) if isinstance(value, (tuple, list)) else (value, None)
        if name == "macro":
            macro = entry
        else:
            per[name] = entry
    return per, macro


def plot_roc(
    curves: Mapping[str, Any],
    aucs: Mapping[str, Any],
    path: str | os.PathLike[str],
    title: str,
) -> Path:
    """ROC curve per class and the macro average, with AUC (95% CI) in the legend.

    Args:
        curves: the result of :func:`osteoscreen.evaluation.metrics.roc_curves`.
        aucs: either the result of ``classification_metrics`` (its AUCs and CIs are used),
            or a mapping ``{class name or "macro": auc or (auc, [lo, hi])}``.
        path: PNG to write.
        title: figure title; n is appended.

    Returns:
        The path written.
    """
    if "per_class" not in curves or "macro" not in curves:
        raise ValueError("curves must be a roc_curves() result with 'per_class' and 'macro'")
    per_auc, (macro_auc, macro_ci) = _auc_entries(aucs)
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    for i, (name, curve) in enumerate(curves["per_class"].items()):
        colour = _CLASS_COLOURS[i % len(_CLASS_COLOURS)]
        if not curve["fpr"]:
            # Say so in the legend rather than silently dropping the class.
            ax.plot([], [], color=colour, lw=1.6, label=f"{name} (n={curve.get('n_pos', 0)}): no AUC")
            continue
        auc, ci = per_auc.get(name, (curve.get("auc"), None))
        label = f"{name} (n={curve.get('n_pos', '?')}): AUC {_fmt(auc)}{_fmt_ci(ci)}"
        ax.plot(curve["fpr"], curve["tpr"], color=colour, lw=1.6, label=label)
    macro = curves["macro"]
    if macro["fpr"]:
        if macro_auc is None:
            macro_auc = macro.get("auc")
        label = f"macro average: AUC {_fmt(macro_auc)}{_fmt_ci(macro_ci)}"
        ax.plot(macro["fpr"], macro["tpr"], color="navy", lw=2.4, ls=":", label=label)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title(f"{title}\n(n = {curves.get('n', '?')}, one-vs-rest, AUC with 95% CI)", fontsize=11)
    ax.grid(True, color="0.92")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.95)
    return _save(fig, path)


def plot_correlation(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    path: str | os.PathLike[str],
    title: str,
    thresholds: Thresholds | None = None,
) -> Path:
    """Scatter of predicted vs reference BMD with the regression line and its 95% band.

    The band is the 95% confidence interval of the fitted mean (ordinary least squares of
    prediction on reference, t distribution with n - 2 degrees of freedom). The identity
    line and the category thresholds (80 and 120 mg/cm3 by default) are drawn for orientation.

    Args:
        y_true: reference BMD, mg/cm3.
        y_pred: predicted BMD, mg/cm3.
        path: PNG to write.
        title: figure title; n is appended.
        thresholds: category thresholds; the configured defaults when None.

    Returns:
        The path written.
    """
    t, p = _paired(y_true, y_pred)
    m = regression_metrics(t, p)
    th = thresholds if thresholds is not None else Thresholds()
    n = t.size
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    ax = fig.add_subplot()
    lo = float(min(t.min(), p.min()))
    hi = float(max(t.max(), p.max()))
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    lo, hi = lo - pad, hi + pad
    for value in (th.osteoporosis_upper, th.normal_lower):
        if lo < value < hi:
            ax.axvline(value, color="0.75", lw=0.8, ls="--", zorder=0)
            ax.axhline(value, color="0.75", lw=0.8, ls="--", zorder=0)
    ax.plot([lo, hi], [lo, hi], color="0.45", lw=1, ls="--", label="identity (y = x)")
    ax.scatter(t, p, s=14, alpha=0.6, color="#1565c0", edgecolors="none", label="cases")
    if np.ptp(t) > 0:
        slope, intercept = np.polyfit(t, p, 1)
        xs = np.linspace(lo, hi, 200)
        fit = intercept + slope * xs
        resid = p - (intercept + slope * t)
        s = math.sqrt(float(np.sum(resid**2)) / (n - 2))
        sxx = float(np.sum((t - t.mean()) ** 2))
        half = float(stats.t.ppf(0.975, n - 2)) * s * np.sqrt(1.0 / n + (xs - t.mean()) ** 2 / sxx)
        ax.fill_between(xs, fit - half, fit + half, color="#c62828", alpha=0.18, lw=0, label="95% CI of fit")
        sign = "+" if intercept >= 0 else "-"
        ax.plot(xs, fit, color="#c62828", lw=1.6, label=f"fit: y = {slope:.3f} x {sign} {abs(intercept):.2f}")
    text = "\n".join(
        [
            f"n = {n}",
            f"Pearson r = {_fmt(m['pearson_r'])}, {_fmt_p(m['p_value'])}",
            f"R² = {_fmt(m['r2'])}",
            f"MAE = {_fmt(m['mae'], 2)} {UNIT}",
            f"RMSE = {_fmt(m['rmse'], 2)} {UNIT}",
        ]
    )
    ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", ha="left", fontsize=9, bbox=_BOX)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"reference BMD (QCT) [{UNIT}]")
    ax.set_ylabel(f"predicted BMD [{UNIT}]")
    ax.set_title(
        f"{title}\n(n = {n}, r = {_fmt(m['pearson_r'])}, MAE = {_fmt(m['mae'], 2)} {UNIT})", fontsize=11
    )
    ax.legend(loc="lower right", fontsize=8, framealpha=0.95)
    return _save(fig, path)


def plot_bland_altman(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    path: str | os.PathLike[str],
    title: str,
) -> Path:
    """Bland-Altman plot: mean of the two methods vs difference (predicted - reference).

    Bias and the limits of agreement (bias -+ 1.96 SD) are drawn with their 95% CIs shaded
    (Bland & Altman 1999, see :func:`~osteoscreen.evaluation.metrics.regression_metrics`).

    Args:
        y_true: reference BMD, mg/cm3.
        y_pred: predicted BMD, mg/cm3.
        path: PNG to write.
        title: figure title; n, bias and LoA are appended.

    Returns:
        The path written.
    """
    t, p = _paired(y_true, y_pred)
    ba = regression_metrics(t, p)["bland_altman"]
    mean = (t + p) / 2.0
    diff = p - t
    fig = Figure(figsize=(7.6, 6.2), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.6", lw=0.8)
    lines = [
        ("bias", ba["bias"], ba["bias_ci"], "#c62828", "-"),
        ("upper LoA (+1.96 SD)", ba["loa_high"], ba["loa_high_ci"], "#1565c0", "--"),
        ("lower LoA (-1.96 SD)", ba["loa_low"], ba["loa_low_ci"], "#1565c0", "--"),
    ]
    for name, value, ci, colour, ls in lines:
        ax.axhspan(ci[0], ci[1], color=colour, alpha=0.12, lw=0)
        label = f"{name}: {value:.2f} (95% CI {ci[0]:.2f}, {ci[1]:.2f})"
        ax.axhline(value, color=colour, lw=1.5, ls=ls, label=label)
    outside = (diff < ba["loa_low"]) | (diff > ba["loa_high"])
    ax.scatter(mean[~outside], diff[~outside], s=14, alpha=0.6, color="0.25", edgecolors="none")
    ax.scatter(
        mean[outside],
        diff[outside],
        s=18,
        alpha=0.8,
        color="#ef6c00",
        edgecolors="none",
        label=f"outside LoA: {ba['n_outside_loa']}/{t.size} ({100 * ba['share_outside_loa']:.1f}%)",
    )
    span = max(abs(ba["loa_low_ci"][0]), abs(ba["loa_high_ci"][1]), float(np.abs(diff).max()))
    ax.set_ylim(-1.15 * span, 1.15 * span)
    ax.set_xlabel(f"mean of reference and predicted BMD [{UNIT}]")
    ax.set_ylabel(f"difference, predicted - reference [{UNIT}]")
    ax.set_title(
        f"{title}\n(n = {t.size}, bias = {ba['bias']:.2f}, LoA {ba['loa_low']:.2f} to "
        f"{ba['loa_high']:.2f} {UNIT})",
        fontsize=11,
    )
    ax.grid(True, color="0.92")
    # Below the axes: inside, the legend would hide points near the limits.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, ncol=2, frameon=False)
    return _save(fig, path)


def plot_confusion(
    cm: ArrayLike,
    path: str | os.PathLike[str],
    title: str,
    labels: Sequence[str] = CATEGORIES,
) -> Path:
    """Confusion matrix heat map with counts and row percentages (rows true, columns predicted).

    Args:
        cm: square matrix of counts, rows = true class, columns = predicted class.
        path: PNG to write.
        title: figure title; n and accuracy are appended.
        labels: class names, CATEGORIES by default.

    Returns:
        The path written.
    """
    mat = np.asarray(cm)
    k = len(labels)
    if mat.shape != (k, k):
        raise ValueError(f"cm must have shape ({k}, {k}) to match labels, got {mat.shape}")
    if np.any(mat < 0):
        raise ValueError("cm must hold non-negative counts")
    mat = mat.astype(np.int64)
    n = int(mat.sum())
    rows = mat.sum(axis=1, keepdims=True)
    share = np.divide(mat, rows, out=np.zeros(mat.shape, dtype=float), where=rows > 0)
    fig = Figure(figsize=(5.8, 5.0), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of the true class")
    for i in range(k):
        for j in range(k):
            colour = "white" if share[i, j] > 0.55 else "black"
            ax.text(j, i - 0.08, f"{mat[i, j]}", ha="center", va="center", fontsize=13, color=colour)
            ax.text(
                j, i + 0.2, f"{100 * share[i, j]:.1f}%", ha="center", va="center", fontsize=8, color=colour
            )
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted category")
    ax.set_ylabel("true category")
    accuracy = float(np.trace(mat)) / n if n else float("nan")
    ax.set_title(f"{title}\n(n = {n}, accuracy = {_fmt(accuracy)})", fontsize=11)
    return _save(fig, path)
