"""Result tables in the layout of the reference study: Markdown for reports, CSV for sheets.

Table 1: classification per set (AUC with 95% CI, F1, accuracy, precision, recall,
specificity). Table 2: a confusion matrix. Table 3: regression per set (MAE, RMSE, R2,
Pearson r, p). Numbers are formatted as in the paper: 3 decimals for AUC, F1, accuracy,
precision, recall, specificity, R2 and r; 2 for MAE, RMSE and Bland-Altman values (mg/cm3);
p below 0.001 as "<0.001". Undefined values print as "n/a".
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from osteoscreen.config import CATEGORIES

__all__ = [
    "TABLE1_HEADER",
    "TABLE3_HEADER",
    "table1_csv",
    "table1_markdown",
    "table1_rows",
    "table2_markdown",
    "table3_csv",
    "table3_markdown",
    "table3_rows",
    "write_csv",
]

TABLE1_HEADER: tuple[str, ...] = (
    "Set",
    "n",
    "AUC (95% CI)",
    "F1",
    "Accuracy",
    "Precision",
    "Recall",
    "Specificity",
)
TABLE3_HEADER: tuple[str, ...] = ("Set", "n", "MAE (mg/cm3)", "RMSE (mg/cm3)", "R2", "Pearson r", "p")
_TABLE3_BA: tuple[str, ...] = ("Bias (95% CI)", "LoA")


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    return "" if ci is None else f" ({_num(ci[0], digits)}, {_num(ci[1], digits)})"


def _p(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def _markdown(
    header: Sequence[str], rows: Iterable[Sequence[str]], align: Sequence[str] | None = None
) -> str:
    header = [str(h) for h in header]
    align = align or ["left"] + ["right"] * (len(header) - 1)
    rule = [":---" if a == "left" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table1_rows(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of Table 1 (classification per set).

    Args:
        results: set name (e.g. "test", "independent") -> ``classification_metrics`` result.

    Returns:
        (header, rows), one row per set in the mapping's order.
    """
    rows = []
    for name, m in results.items():
        rows.append(
            [
                str(name),
                str(m.get("n", "")),
                _num(m.get("auc_macro")) + _ci(m.get("auc_macro_ci")),
                _num(m.get("f1")),
                _num(m.get("accuracy")),
                _num(m.get("precision")),
                _num(m.get("recall")),
                _num(m.get("specificity")),
            ]
        )
    return list(TABLE1_HEADER), rows


def table1_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Table 1 as Markdown: one row per set, macro AUC with its 95% CI and the macro scores.

    Args:
        results: set name -> ``classification_metrics`` result.

    Returns:
        A Markdown table ending with a newline.
    """
    header, rows = table1_rows(results)
    return _markdown(header, rows)


def table1_csv(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write Table 1 as CSV (same cells as the Markdown table).

    Args:
        results: set name -> ``classification_metrics`` result.
        path: CSV file to write.

    Returns:
        The path written.
    """
    header, rows = table1_rows(results)
    return write_csv(rows, header, path)


def table2_markdown(cm: ArrayLike, labels: Sequence[str] = CATEGORIES) -> str:
    """Confusion matrix as Markdown: rows true class, columns predicted class, with totals.

    Args:
        cm: square matrix of counts.
        labels: class names in the matrix order, CATEGORIES by default.

    Returns:
        A Markdown table ending with a newline.

    Raises:
        ValueError: if ``cm`` is not square of the size of ``labels``.
    """
    mat = np.asarray(cm)
    k = len(labels)
    if mat.shape != (k, k):
        raise ValueError(f"cm must have shape ({k}, {k}) to match labels, got {mat.shape}")
    mat = mat.astype(np.int64)
    header = ["True \\ predicted", *labels, "Total"]
    rows = [[str(labels[i]), *(str(v) for v in mat[i]), str(int(mat[i].sum()))] for i in range(k)]
    rows.append(["Total", *(str(int(v)) for v in mat.sum(axis=0)), str(int(mat.sum()))])
    return _markdown(header, rows)


def table3_rows(
    results: Mapping[str, Mapping[str, Any]], bland_altman: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of Table 3 (regression per set).

    Args:
        results: set name -> ``regression_metrics`` result.
        bland_altman: add the Bland-Altman bias (95% CI) and limits of agreement.

    Returns:
        (header, rows), one row per set in the mapping's order.
    """
    header = list(TABLE3_HEADER) + (list(_TABLE3_BA) if bland_altman else [])
    rows = []
    for name, m in results.items():
        row = [
            str(name),
            str(m.get("n", "")),
            _num(m.get("mae"), 2),
            _num(m.get("rmse"), 2),
            _num(m.get("r2")),
            _num(m.get("pearson_r")),
            _p(m.get("p_value")),
        ]
        if bland_altman:
            ba = m.get("bland_altman") or {}
            row.append(_num(ba.get("bias"), 2) + _ci(ba.get("bias_ci"), 2))
            row.append(f"{_num(ba.get('loa_low'), 2)} to {_num(ba.get('loa_high'), 2)}")
        rows.append(row)
    return header, rows


def table3_markdown(results: Mapping[str, Mapping[str, Any]], bland_altman: bool = False) -> str:
    """Table 3 as Markdown: MAE, RMSE (mg/cm3), R2, Pearson r and p per set.

    Args:
        results: set name -> ``regression_metrics`` result.
        bland_altman: add the Bland-Altman bias (95% CI) and limits of agreement.

    Returns:
        A Markdown table ending with a newline.
    """
    header, rows = table3_rows(results, bland_altman)
    return _markdown(header, rows)


def table3_csv(
    results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str], bland_altman: bool = False
) -> Path:
    """Write Table 3 as CSV (same cells as the Markdown table).

    Args:
        results: set name -> ``regression_metrics`` result.
        path: CSV file to write.
        bland_altman: add the Bland-Altman bias (95% CI) and limits of agreement.

    Returns:
        The path written.
    """
    header, rows = table3_rows(results, bland_altman)
    return write_csv(rows, header, path)


def write_csv(rows: Iterable[Sequence[Any]], header: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """Write rows under a header as UTF-8 CSV, atomically (temporary file, then rename).

    Args:
        rows: rows of cells; each row must have as many cells as the header.
        header: column names.
        path: CSV file to write; its folder is created when missing.

    Returns:
        The path written.

    Raises:
        ValueError: if a row's length differs from the header's.
    """
    header = list(header)
    rows = [list(r) for r in rows]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"rows[{i}] has {len(row)} cells but header has {len(header)}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
