"""Evaluation metrics of the reference study (METHOD.md section 5), on plain arrays.

Classification: one-vs-rest AUC per class and macro, each with a 95% bootstrap percentile
CI; macro F1, accuracy, precision, recall and specificity; the confusion matrix; ROC
curves per class and the macro-average curve. Regression: MAE, RMSE, R-squared, Pearson r
with its p value, and Bland-Altman bias and limits of agreement with their 95% CIs
(Bland & Altman 1999). Segmentation: Dice per label and its aggregation over cases.

Every function returns plain Python values (floats, ints, lists, dicts, ``None`` for an
undefined value), so that ``json.dumps`` takes the result as it is.

Degenerate cases:
    * A class absent from ``y_true`` (or the only class present) has no one-vs-rest AUC:
      its AUC and CI are ``None`` and the macro AUC is the mean over the classes whose AUC
      is defined. With no defined AUC at all, the macro AUC is ``None``.
    * The macro precision, recall, F1 and specificity average over the classes present in
      ``y_true`` or in the predictions (as scikit-learn does); a per-class ratio whose
      denominator is zero counts as 0 (precision, recall, F1) or is left out (specificity,
      which is undefined only when every case is of that one class).
    * Regression values that are undefined (R-squared for a constant reference, Pearson r
      for a constant input) are ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from osteoscreen.config import CATEGORIES, Thresholds

__all__ = [
    "aggregate_dice",
    "auc_ovr",
    "bmd_to_class_index",
    "body_matches",
    "classification_metrics",
    "dice_per_label",
    "level_agreement",
    "regression_metrics",
    "roc_curves",
    "to_jsonable",
]

#: z of the Bland-Altman limits of agreement (bias +- 1.96 SD).
LOA_Z = 1.96
#: Resamples per vectorised bootstrap block; bounds memory at block * n values.
_BOOT_BLOCK = 250


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Convert numpy values (and tuples) recursively to plain JSON-serialisable Python.

    NaN and infinite floats become ``None`` (JSON has no NaN); numpy arrays become
    (nested) lists; dict keys that are numpy integers become ``int``.

    Args:
        obj: any nesting of dicts, lists, tuples, numpy arrays and scalars.

    Returns:
        The same structure in plain Python types.
    """
    if isinstance(obj, Mapping):
        return {_jsonable_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def _jsonable_key(key: Any) -> Any:
    if isinstance(key, np.integer):
        return int(key)
    if isinstance(key, np.floating):
        return float(key)
    return key


def _opt_float(value: float | np.floating | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _as_labels(y_true: ArrayLike, n_classes: int, name: str = "y_true") -> NDArray[np.int64]:
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    labels = arr.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"{name} must hold class indices 0..{n_classes - 1}, got values {labels.min()}..{labels.max()}"
        )
    return labels


def _as_prob(prob: ArrayLike, n: int, n_classes: int) -> NDArray[np.float64]:
    arr = np.asarray(prob, dtype=float)
    if arr.shape != (n, n_classes):
        raise ValueError(f"prob must have shape (n, {n_classes}) = ({n}, {n_classes}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("prob must be finite")
    return arr


def _as_values(values: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def bmd_to_class_index(bmd: ArrayLike, thresholds: Thresholds | None = None) -> NDArray[np.int64]:
    """Class indices (CATEGORIES order) of BMD values, by the configured thresholds.

    Args:
        bmd: BMD values in mg/cm3.
        thresholds: category thresholds; the configured defaults when None.

    Returns:
        int64 array of class indices, same length as ``bmd``.
    """
    th = thresholds if thresholds is not None else Thresholds()
    values = _as_values(bmd, "bmd")
    return np.array([th.class_index(float(v)) for v in values], dtype=np.int64)


# ---------------------------------------------------------------------------------------
# AUC and ROC
# ---------------------------------------------------------------------------------------


def auc_ovr(positive: ArrayLike, score: ArrayLike) -> float | None:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties count one half).

    AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), with R_pos the sum of the
    mid-ranks of the positive scores among all scores.

    Args:
        positive: boolean array, True for the positive class.
        score: score of the positive class, same length.

    Returns:
        The AUC, or None when there are no positives or no negatives.
    """
    pos = np.asarray(positive, dtype=bool)
    sc = np.asarray(score, dtype=float)
    if pos.shape != sc.shape or pos.ndim != 1:
        raise ValueError(f"positive and score must be 1-D of one length, got {pos.shape} and {sc.shape}")
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(sc)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _auc_rows(pos: NDArray[np.bool_], score: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise AUC of (B, n) arrays; NaN for rows without positives or negatives."""
    ranks = stats.rankdata(score, axis=1)
    n_pos = pos.sum(axis=1).astype(float)
    n_neg = pos.shape[1] - n_pos
    rank_sum = np.where(pos, ranks, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return np.asarray(auc, dtype=float)


def _bootstrap_indices(
    y: NDArray[np.int64], size: int, rng: np.random.Generator, stratified: bool
) -> NDArray[np.int64]:
    n = y.size
    if not stratified:
        return rng.integers(0, n, size=(size, n))
    parts = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        parts.append(members[rng.integers(0, members.size, size=(size, members.size))])
    return np.concatenate(parts, axis=1)


def _percentile_ci(values: NDArray[np.float64]) -> list[float] | None:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def _roc_points(pos: NDArray[np.bool_], score: NDArray[np.float64]) -> tuple[list[float], list[float]]:
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return [], []
    order = np.argsort(-score, kind="mergesort")
    s, p = score[order], pos[order]
    tps = np.cumsum(p)
    fps = np.cumsum(~p)
    # One point per distinct threshold: the last index of each run of equal scores.
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    fpr = np.r_[0.0, fps[last] / n_neg]
    tpr = np.r_[0.0, tps[last] / n_pos]
    return fpr.tolist(), tpr.tolist()


def roc_curves(
    y_true: ArrayLike,
    prob: ArrayLike,
    class_names: Sequence[str] = CATEGORIES,
) -> dict[str, Any]:
    """One-vs-rest ROC curves per class and the macro-average curve.

    The macro curve is the mean of the per-class TPRs, each linearly interpolated onto a
    common FPR grid (the union of all per-class FPRs and 101 evenly spaced points), over the
    classes that have a curve. Its ``auc`` is the mean of the per-class AUCs (the macro AUC
    of :func:`classification_metrics`), not the area under the averaged curve.

    Args:
        y_true: class indices (0..K-1 in ``class_names`` order), shape (n,).
        prob: class scores or probabilities, shape (n, K).
        class_names: class names, CATEGORIES by default.

    Returns:
        ``{"n": n, "per_class": {name: {"fpr": [...], "tpr": [...], "auc": float|None,
        "n_pos": int}}, "macro": {"fpr": [...], "tpr": [...], "auc": float|None}}``;
        a class without positives or negatives has empty ``fpr``/``tpr`` and ``auc`` None.
    """
    names = list(class_names)
    y = _as_labels(y_true, len(names))
    p = _as_prob(prob, y.size, len(names))
    per_class: dict[str, dict[str, Any]] = {}
    grids = [np.linspace(0.0, 1.0, 101)]
    for k, name in enumerate(names):
        pos = y == k
        fpr, tpr = _roc_points(pos, p[:, k])
        per_class[name] = {"fpr": fpr, "tpr": tpr, "auc": auc_ovr(pos, p[:, k]), "n_pos": int(pos.sum())}
        if fpr:
            grids.append(np.asarray(fpr))
    grid = np.unique(np.concatenate(grids))
    curves = [c for c in per_class.values() if c["fpr"]]
    if curves:
        mean_tpr = np.mean([np.interp(grid, c["fpr"], c["tpr"]) for c in curves], axis=0)
        mean_tpr[0] = 0.0
        mean_tpr[-1] = 1.0
        macro_auc = _opt_float(np.mean([c["auc"] for c in curves]))
        macro = {"fpr": grid.tolist(), "tpr": mean_tpr.tolist(), "auc": macro_auc}
    else:
        macro = {"fpr": [], "tpr": [], "auc": None}
    return {"n": int(y.size), "per_class": per_class, "macro": macro}


# ---------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------


def _confusion(y: NDArray[np.int64], pred: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    return cm


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def classification_metrics(
    y_true: ArrayLike,
    prob: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    stratified: bool = True,
    y_pred: ArrayLike | None = None,
    class_names: Sequence[str] = CATEGORIES,
) -> dict[str, Any]:
    """Classification metrics of the reference study, with bootstrap CIs of the AUCs.

    AUC is one-vs-rest per class (Mann-Whitney U with mid-ranks for ties); the macro AUC is
    their unweighted mean over the classes whose AUC is defined. The 95% CIs are bootstrap
    percentile intervals over ``n_boot`` resamples. A stratified bootstrap (the default)
    resamples within each true class, so every resample keeps the class counts; a plain
    bootstrap resamples all cases and skips resamples that lack a class present in
    ``y_true`` (``n_boot_valid`` says how many were kept).

    The predicted class is ``argmax(prob)`` (the first class on ties) unless ``y_pred`` is
    given (for instance the category of the regressed BMD). Precision, recall, F1 and
    specificity are one-vs-rest per class and macro-averaged (see the module docstring
    for absent classes).

    Args:
        y_true: true class indices (0..K-1 in ``class_names`` order), shape (n,).
        prob: class probabilities or scores, shape (n, K).
        n_boot: bootstrap resamples; 0 skips the CIs (they are then None).
        seed: seed of the bootstrap generator.
        stratified: resample within the true classes.
        y_pred: predicted class indices overriding ``argmax(prob)``, shape (n,).
        class_names: class names, CATEGORIES by default.

    Returns:
        A dict with auc_macro, auc_macro_ci, auc_per_class, auc_per_class_ci, f1, accuracy,
        precision, recall, specificity, confusion_matrix (rows true, columns predicted),
        per_class (precision, recall, f1, specificity, support per class), class_names,
        n, n_boot, n_boot_valid.

    Raises:
        ValueError: for a wrong shape or length, class indices out of range, or a negative
            ``n_boot``.
    """
    names = list(class_names)
    k = len(names)
    y = _as_labels(y_true, k)
    p = _as_prob(prob, y.size, k)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if y_pred is None:
        pred = np.argmax(p, axis=1).astype(np.int64)
    else:
        pred = _as_labels(y_pred, k, name="y_pred")
        if pred.size != y.size:
            raise ValueError(f"y_pred has {pred.size} values but y_true has {y.size}")

    # AUCs
    auc_per_class = {name: auc_ovr(y == c, p[:, c]) for c, name in enumerate(names)}
    defined = [c for c, name in enumerate(names) if auc_per_class[name] is not None]
    defined_aucs = [float(a) for a in auc_per_class.values() if a is not None]
    auc_macro = float(np.mean(defined_aucs)) if defined_aucs else None

    boot_class = np.full((n_boot, k), np.nan)
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _BOOT_BLOCK):
        size = min(_BOOT_BLOCK, n_boot - start)
        idx = _bootstrap_indices(y, size, rng, stratified)
        yb = y[idx]
        for c in defined:
            boot_class[start : start + size, c] = _auc_rows(yb == c, p[idx, c])
    if defined:
        # A resample where any defined class lost its positives or negatives is skipped.
        valid = np.all(np.isfinite(boot_class[:, defined]), axis=1)
        boot_macro = boot_class[valid][:, defined].mean(axis=1)
    else:
        valid = np.zeros(n_boot, dtype=bool)
        boot_macro = np.empty(0)
    auc_macro_ci = _percentile_ci(boot_macro)
    auc_per_class_ci = {
        name: (_percentile_ci(boot_class[valid, c]) if c in defined else None) for c, name in enumerate(names)
    }

    # Threshold metrics
    cm = _confusion(y, pred, k)
    n = int(y.size)
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = n - tp - fp - fn
    present = (cm.sum(axis=1) + cm.sum(axis=0)) > 0
    per_class: dict[str, dict[str, Any]] = {}
    prec, rec, f1, spec = (np.full(k, np.nan) for _ in range(4))
    for c, name in enumerate(names):
        if present[c]:
            prec[c] = _ratio(tp[c], tp[c] + fp[c]) if tp[c] + fp[c] > 0 else 0.0
            rec[c] = _ratio(tp[c], tp[c] + fn[c]) if tp[c] + fn[c] > 0 else 0.0
            f1[c] = _ratio(2 * tp[c], 2 * tp[c] + fp[c] + fn[c])
            spec[c] = _ratio(tn[c], tn[c] + fp[c])
        per_class[name] = {
            "precision": _opt_float(prec[c]),
            "recall": _opt_float(rec[c]),
            "f1": _opt_float(f1[c]),
            "specificity": _opt_float(spec[c]),
            "support": int(cm[c].sum()),
        }

    def macro(values: NDArray[np.float64]) -> float | None:
        finite = values[np.isfinite(values)]
        return float(finite.mean()) if finite.size else None

    return {
        "n": n,
        "class_names": names,
        "auc_macro": auc_macro,
        "auc_macro_ci": auc_macro_ci,
        "auc_per_class": auc_per_class,
        "auc_per_class_ci": auc_per_class_ci,
        "f1": macro(f1),
        "accuracy": float(tp.sum() / n),
        "precision": macro(prec),
        "recall": macro(rec),
        "specificity": macro(spec),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "n_boot": int(n_boot),
        "n_boot_valid": int(valid.sum()),
    }


# ---------------------------------------------------------------------------------------
# regression
# ---------------------------------------------------------------------------------------


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, Any]:
    """Agreement of predicted with reference values (BMD in mg/cm3).

    R-squared is the coefficient of determination 1 - SS_res / SS_tot of the predictions
    against the reference (not the square of Pearson r). Bland-Altman uses the differences
    d = y_pred - y_true: bias = mean(d), sd = SD(d) (n - 1), limits of agreement
    bias -+ 1.96 sd. The 95% CIs follow Bland & Altman (1999): SE(bias) = sd / sqrt(n),
    SE(LoA) = sqrt(3 sd^2 / n), both with the t distribution on n - 1 degrees of freedom.

    Args:
        y_true: reference values, shape (n,), n >= 3.
        y_pred: predicted values, shape (n,).

    Returns:
        A dict with mae, rmse, r2, pearson_r, p_value, n and bland_altman {bias, bias_ci,
        sd, loa_low, loa_high, loa_low_ci, loa_high_ci, share_outside_loa, n_outside_loa}.

    Raises:
        ValueError: for mismatched lengths, non-finite values or fewer than 3 pairs.
    """
    t = _as_values(y_true, "y_true")
    pr = _as_values(y_pred, "y_pred")
    if t.size != pr.size:
        raise ValueError(f"y_true and y_pred must have one length, got {t.size} and {pr.size}")
    n = int(t.size)
    if n < 3:
        raise ValueError(f"y_true must hold at least 3 values, got {n}")
    d = pr - t
    ss_res = float(np.sum(d**2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    if np.ptp(t) > 0 and np.ptp(pr) > 0:
        res = stats.pearsonr(t, pr)
        pearson_r: float | None = _opt_float(res.statistic)
        p_value: float | None = _opt_float(res.pvalue)
    else:
        pearson_r = p_value = None

    bias = float(d.mean())
    sd = float(d.std(ddof=1))
    t_crit = float(stats.t.ppf(0.975, n - 1))
    se_bias = sd / math.sqrt(n)
    se_loa = math.sqrt(3.0 * sd**2 / n)
    loa_low, loa_high = bias - LOA_Z * sd, bias + LOA_Z * sd
    outside = int(np.sum((d < loa_low) | (d > loa_high)))
    return {
        "n": n,
        "mae": float(np.mean(np.abs(d))),
        "rmse": float(math.sqrt(ss_res / n)),
        "r2": r2,
        "pearson_r": pearson_r,
        "p_value": p_value,
        "bland_altman": {
            "bias": bias,
            "bias_ci": [bias - t_crit * se_bias, bias + t_crit * se_bias],
            "sd": sd,
            "loa_low": loa_low,
            "loa_high": loa_high,
            "loa_low_ci": [loa_low - t_crit * se_loa, loa_low + t_crit * se_loa],
            "loa_high_ci": [loa_high - t_crit * se_loa, loa_high + t_crit * se_loa],
            "share_outside_loa": outside / n,
            "n_outside_loa": outside,
        },
    }


# ---------------------------------------------------------------------------------------
# segmentation
# ---------------------------------------------------------------------------------------


def dice_per_label(pred: ArrayLike, ref: ArrayLike, labels: Iterable[int]) -> dict[int, float | None]:
    """Dice coefficient 2 |P & R| / (|P| + |R|) of each label.

    Args:
        pred: predicted label map (integers).
        ref: reference label map, same shape.
        labels: label ids to score.

    Returns:
        ``{label: dice}``, with None where the label is absent from both maps (a label
        present in only one of them scores 0.0).

    Raises:
        ValueError: if the shapes differ.
    """
    p = np.asarray(pred)
    r = np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have one shape, got {p.shape} and {r.shape}")
    out: dict[int, float | None] = {}
    for label in labels:
        lab = int(label)
        pm = p == lab
        rm = r == lab
        total = int(pm.sum()) + int(rm.sum())
        out[lab] = None if total == 0 else 2.0 * int(np.logical_and(pm, rm).sum()) / total
    return out


def aggregate_dice(
    cases: Iterable[Mapping[int, float | None]],
    names: Mapping[int, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Mean, SD, median, min and count of Dice per level over cases.

    Args:
        cases: one :func:`dice_per_label` result per case; None values are left out.
        names: label id -> level name; ``osteoscreen.labels.id_to_name`` when None (ids it
            does not know keep their number as name).

    Returns:
        ``{level name: {"mean", "sd", "median", "min", "n"}}`` in label-id order, plus
        ``"all"`` over every (case, label) pair.
    """
    from osteoscreen.labels import id_to_name

    def name_of(label: int) -> str:
        if names is not None and label in names:
            return names[label]
        try:
            return id_to_name(label)
        except ValueError:
            return str(label)

    values: dict[int, list[float]] = {}
    for case in cases:
        for label, dice in case.items():
            if dice is not None:
                values.setdefault(int(label), []).append(float(dice))

    def summary(v: list[float]) -> dict[str, Any]:
        arr = np.asarray(v, dtype=float)
        return {
            "mean": float(arr.mean()),
            "sd": float(arr.std(ddof=1)) if arr.size > 1 else None,
            "median": float(np.median(arr)),
            "min": float(arr.min()),
            "n": int(arr.size),
        }

    out = {name_of(label): summary(values[label]) for label in sorted(values)}
    everything = [d for v in values.values() for d in v]
    if everything:
        out["all"] = summary(everything)
    return out


def body_matches(pred: ArrayLike, ref: ArrayLike, min_overlap: float = 0.3) -> dict[int, int]:
    """Each predicted body's reference body: the one it overlaps most, if that is at least
    ``min_overlap`` of its voxels (whatever the two ids)."""
    p = np.asarray(pred).astype(np.int64)
    r = np.asarray(ref).astype(np.int64)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have one shape, got {p.shape} and {r.shape}")
    both = (p > 0) & (r > 0)
    pairs, counts = np.unique(np.stack([p[both], r[both]]), axis=1, return_counts=True)
    sizes = dict(zip(*np.unique(p[p > 0], return_counts=True)))
    out = {}
    for pid, size in sizes.items():
        sel = pairs[0] == pid
        if not sel.any():
            continue
        k = int(np.argmax(counts[sel]))
        if counts[sel][k] >= min_overlap * size:
            out[int(pid)] = int(pairs[1][sel][k])
    return out


def level_agreement(pred: ArrayLike, ref: ArrayLike, min_overlap: float = 0.3) -> dict[str, int]:
    """How well the predicted bodies' levels match the reference bodies.

    Each predicted body is matched to the reference body it overlaps most (at least
    ``min_overlap`` of its voxels); it is ``correct`` when the ids agree, ``wrong_level`` when
    they do not (an unknown level, 101+, counts as wrong), and ``spurious`` without a match.
    A reference body that no predicted body matches is ``missed``.

    Raises:
        ValueError: if the shapes differ.
    """
    matches = body_matches(pred, ref, min_overlap)
    p = np.asarray(pred)
    r = np.asarray(ref)
    n_pred = len({int(v) for v in np.unique(p) if v > 0})
    correct = sum(pid == rid for pid, rid in matches.items())
    ref_ids = {int(v) for v in np.unique(r) if v > 0}
    return {
        "n_pred": n_pred,
        "correct": correct,
        "wrong_level": len(matches) - correct,
        "spurious": n_pred - len(matches),
        "n_ref": len(ref_ids),
        "missed": len(ref_ids - set(matches.values())),
    }
