"""Unit tests of osteoscreen.evaluation: metrics, figures and tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from osteoscreen.evaluation.figures import plot_bland_altman, plot_confusion, plot_correlation, plot_roc
from osteoscreen.evaluation.metrics import (
    aggregate_dice,
    auc_ovr,
    bmd_to_class_index,
    classification_metrics,
    dice_per_label,
    regression_metrics,
    roc_curves,
    to_jsonable,
)
from osteoscreen.evaluation.tables import (
    TABLE1_HEADER,
    table1_csv,
    table1_markdown,
    table2_markdown,
    table3_csv,
    table3_markdown,
    write_csv,
)

# Six cases, two per class. Hand-computed one-vs-rest AUCs (ties count one half):
#   normal:       positives 0.8, 0.4 vs negatives 0.4, 0.3, 0.2, 0.1 -> (4 + 3.5) / 8 = 0.9375
#   osteopenia:   positives 0.3, 0.6 vs negatives 0.1, 0.5, 0.2, 0.3 -> (2.5 + 4) / 8 = 0.8125
#   osteoporosis: positives 0.6, 0.6 vs negatives 0.1, 0.1, 0.3, 0.1 -> 8 / 8 = 1.0
# argmax predictions: 0, 1, 0, 1, 2, 2.
TINY_Y = np.array([0, 0, 1, 1, 2, 2])
TINY_P = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.4, 0.5, 0.1],
        [0.4, 0.3, 0.3],
        [0.3, 0.6, 0.1],
        [0.2, 0.2, 0.6],
        [0.1, 0.3, 0.6],
    ]
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _synthetic_classifier(n: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += signal
    prob = np.exp(logits)
    return y, prob / prob.sum(axis=1, keepdims=True)


def _synthetic_bmd(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bmd = np.clip(rng.normal(120.0, 38.0, n), 20.0, 250.0)
    return bmd, bmd + rng.normal(0.6, 8.5, n)


# --- classification -------------------------------------------------------------------


def test_auc_matches_hand_computed_values() -> None:
    m = classification_metrics(TINY_Y, TINY_P, n_boot=0)
    assert m["auc_per_class"]["normal"] == pytest.approx(0.9375)
    assert m["auc_per_class"]["osteopenia"] == pytest.approx(0.8125)
    assert m["auc_per_class"]["osteoporosis"] == pytest.approx(1.0)
    assert m["auc_macro"] == pytest.approx((0.9375 + 0.8125 + 1.0) / 3)
    assert m["auc_macro_ci"] is None
    assert auc_ovr(TINY_Y == 0, TINY_P[:, 0]) == pytest.approx(0.9375)


def test_confusion_matrix_and_macro_scores_match_hand_example() -> None:
    m = classification_metrics(TINY_Y, TINY_P, n_boot=0)
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class (P, R, F1): (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (1, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # specificity per class: 3/4, 3/4, 4/4
    assert m["specificity"] == pytest.approx((0.75 + 0.75 + 1.0) / 3)
    assert m["per_class"]["osteoporosis"]["support"] == 2


def test_y_pred_overrides_argmax() -> None:
    m = classification_metrics(TINY_Y, TINY_P, n_boot=0, y_pred=TINY_Y)
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert m["accuracy"] == 1.0


def test_perfect_classifier_auc_one_with_degenerate_ci() -> None:
    y = np.repeat([0, 1, 2], 20)
    prob = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(y, prob, n_boot=50, seed=3)
    assert m["auc_macro"] == 1.0
    assert m["auc_macro_ci"] == [1.0, 1.0]
    assert all(ci == [1.0, 1.0] for ci in m["auc_per_class_ci"].values())
    assert m["f1"] == m["accuracy"] == m["specificity"] == 1.0


def test_random_classifier_auc_near_half() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 2000)
    prob = rng.dirichlet(np.ones(3), size=2000)
    m = classification_metrics(y, prob, n_boot=100, seed=1)
    assert m["auc_macro"] == pytest.approx(0.5, abs=0.03)
    lo, hi = m["auc_macro_ci"]
    assert lo < m["auc_macro"] < hi
    assert lo - 0.01 < 0.5 < hi + 0.01


@pytest.mark.parametrize("stratified", [True, False])
def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible(stratified: bool) -> None:
    y, prob = _synthetic_classifier(150, 1.5, seed=2)
    a = classification_metrics(y, prob, n_boot=80, seed=5, stratified=stratified)
    b = classification_metrics(y, prob, n_boot=80, seed=5, stratified=stratified)
    assert a["auc_macro_ci"] == b["auc_macro_ci"]
    lo, hi = a["auc_macro_ci"]
    assert lo <= a["auc_macro"] <= hi
    assert 0 < a["n_boot_valid"] <= 80


def test_absent_class_gives_none_auc_and_macro_over_present() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    prob = np.array([[0.9, 0.1, 0.0]] * 3 + [[0.2, 0.7, 0.1]] * 3)
    m = classification_metrics(y, prob, n_boot=20, stratified=False)
    assert m["auc_per_class"]["osteoporosis"] is None
    assert m["auc_per_class_ci"]["osteoporosis"] is None
    assert m["auc_macro"] == 1.0
    # osteoporosis is neither true nor predicted: left out of the macro averages.
    assert m["f1"] == 1.0
    json.dumps(m, allow_nan=False)


def test_classification_result_is_json_serialisable() -> None:
    y, prob = _synthetic_classifier(60, 1.0, seed=4)
    m = classification_metrics(y, prob, n_boot=20)
    json.dumps(m, allow_nan=False)
    json.dumps(roc_curves(y, prob), allow_nan=False)


@pytest.mark.parametrize(
    ("y", "prob", "match"),
    [
        (np.array([0, 1]), np.ones((3, 3)) / 3, "prob"),
        (np.array([0, 1, 2]), np.ones((3, 2)) / 2, "prob"),
        (np.array([0, 1, 3]), np.ones((3, 3)) / 3, "y_true"),
        (np.array([0.5, 1, 2]), np.ones((3, 3)) / 3, "y_true"),
    ],
)
def test_classification_rejects_bad_input(y: np.ndarray, prob: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, prob, n_boot=0)


def test_roc_curves_area_equals_auc() -> None:
    y, prob = _synthetic_classifier(200, 1.2, seed=9)
    curves = roc_curves(y, prob)
    m = classification_metrics(y, prob, n_boot=0)
    for name, curve in curves["per_class"].items():
        fpr, tpr = np.asarray(curve["fpr"]), np.asarray(curve["tpr"])
        area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        assert area == pytest.approx(m["auc_per_class"][name])
        assert curve["fpr"][0] == 0.0 and curve["tpr"][-1] == 1.0
    macro = curves["macro"]
    assert macro["auc"] == pytest.approx(m["auc_macro"])
    assert np.all(np.diff(macro["fpr"]) > 0)
    assert np.all(np.diff(macro["tpr"]) >= 0)


def test_bmd_to_class_index_uses_thresholds() -> None:
    assert bmd_to_class_index([150.0, 120.0, 100.0, 80.0, 60.0]).tolist() == [0, 1, 1, 1, 2]


# --- regression -----------------------------------------------------------------------


def test_regression_constant_offset() -> None:
    y_true = np.linspace(40.0, 200.0, 50)
    m = regression_metrics(y_true, y_true + 2.0)
    assert m["mae"] == pytest.approx(2.0)
    assert m["rmse"] == pytest.approx(2.0)
    assert m["pearson_r"] == pytest.approx(1.0)
    assert m["p_value"] < 1e-10
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    assert m["r2"] == pytest.approx(1.0 - 4.0 * 50 / ss_tot)
    ba = m["bland_altman"]
    assert ba["bias"] == pytest.approx(2.0)
    assert ba["sd"] == pytest.approx(0.0, abs=1e-9)
    assert ba["loa_low"] == pytest.approx(2.0) and ba["loa_high"] == pytest.approx(2.0)
    json.dumps(m, allow_nan=False)


def test_bland_altman_limits_for_known_normal_noise() -> None:
    rng = np.random.default_rng(11)
    n = 20000
    y_true = rng.uniform(50.0, 200.0, n)
    y_pred = y_true + rng.normal(1.5, 5.0, n)
    ba = regression_metrics(y_true, y_pred)["bland_altman"]
    assert ba["bias"] == pytest.approx(1.5, abs=0.15)
    assert ba["sd"] == pytest.approx(5.0, rel=0.03)
    assert ba["loa_low"] == pytest.approx(1.5 - 1.96 * 5.0, abs=0.35)
    assert ba["loa_high"] == pytest.approx(1.5 + 1.96 * 5.0, abs=0.35)
    assert ba["share_outside_loa"] == pytest.approx(0.05, abs=0.008)
    # Bland & Altman 1999: SE(LoA) = sqrt(3 s^2 / n); the CI is +- t * SE.
    half = (ba["loa_high_ci"][1] - ba["loa_high_ci"][0]) / 2
    assert half == pytest.approx(1.96 * math.sqrt(3 * ba["sd"] ** 2 / n), rel=0.01)
    assert ba["bias_ci"][0] < ba["bias"] < ba["bias_ci"][1]


def test_regression_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="length"):
        regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="y_pred"):
        regression_metrics([1.0, 2.0, 3.0], [1.0, float("nan"), 3.0])
    with pytest.raises(ValueError, match="at least 3"):
        regression_metrics([1.0, 2.0], [1.0, 2.0])


def test_regression_constant_reference_gives_none() -> None:
    m = regression_metrics([100.0, 100.0, 100.0], [99.0, 101.0, 100.0])
    assert m["r2"] is None and m["pearson_r"] is None and m["p_value"] is None


# --- segmentation ---------------------------------------------------------------------


def test_dice_per_label_tiny_arrays() -> None:
    pred = np.array([[1, 1, 0], [2, 0, 0]])
    ref = np.array([[1, 0, 0], [2, 2, 0]])
    dice = dice_per_label(pred, ref, [1, 2, 3])
    assert dice[1] == pytest.approx(2 * 1 / (2 + 1))
    assert dice[2] == pytest.approx(2 * 1 / (1 + 2))
    assert dice[3] is None
    assert dice_per_label(pred, np.zeros_like(ref), [1])[1] == 0.0
    with pytest.raises(ValueError, match="shape"):
        dice_per_label(pred, ref[:1], [1])


def test_aggregate_dice_by_level_name() -> None:
    agg = aggregate_dice([{20: 0.9, 21: None}, {20: 0.8, 21: 0.7}])
    assert agg["L1"]["mean"] == pytest.approx(0.85)
    assert agg["L1"]["n"] == 2
    assert agg["L2"] == {"mean": 0.7, "sd": None, "median": 0.7, "min": 0.7, "n": 1}
    assert agg["all"]["n"] == 3


def test_dice_summary_tells_a_misnamed_body_from_a_bad_outline() -> None:
    from osteoscreen.evaluation.run import dice_summary, segmentation_markdown

    # Case a: L1 well outlined but named L2 (0 by level, 0.9 by overlap); case b: both right.
    records = [
        {"dice": {"20": 0.0, "21": 0.0}, "dice_matched": {"L1": 0.9, "L2": 0.8}},
        {"dice": {"20": 0.92, "21": 0.94}, "dice_matched": {"L1": 0.92, "L2": 0.94}},
        {"case_id": "no labels"},
    ]
    seg = dice_summary(records)
    assert seg["dice_per_level"]["L1"] == pytest.approx(0.46)
    assert seg["dice_matched_per_level"]["L1"] == pytest.approx(0.91)
    assert seg["dice_matched_detail"]["L2"]["n"] == 2
    md = "\n".join(segmentation_markdown(seg))
    assert "| L1 | 0.460 | 0.910 | 0.910 |" in md
    assert dice_summary([{"case_id": "no labels"}]) == {}


def test_to_jsonable_converts_numpy_and_nan() -> None:
    obj = {np.int64(3): np.float32(0.5), "a": np.array([1, 2]), "b": (np.nan, np.bool_(True))}
    out = to_jsonable(obj)
    assert out == {3: 0.5, "a": [1, 2], "b": [None, True]}
    json.dumps(out, allow_nan=False)


# --- figures --------------------------------------------------------------------------


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_figures_write_png(tmp_path: Path) -> None:
    y, prob = _synthetic_classifier(90, 2.0, seed=1)
    m = classification_metrics(y, prob, n_boot=20)
    bmd, pred = _synthetic_bmd(90, seed=1)
    written = [
        plot_roc(roc_curves(y, prob), m, tmp_path / "roc.png", "ROC"),
        plot_roc(
            roc_curves(y, prob), {"normal": 0.9, "macro": (0.8, [0.7, 0.9])}, tmp_path / "roc2.png", "R"
        ),
        plot_correlation(bmd, pred, tmp_path / "corr.png", "Correlation"),
        plot_bland_altman(bmd, pred, tmp_path / "sub" / "ba.png", "Bland-Altman"),
        plot_confusion(m["confusion_matrix"], tmp_path / "cm.png", "Confusion"),
    ]
    for path in written:
        _assert_png(path)


def test_figures_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cm"):
        plot_confusion(np.ones((2, 2)), tmp_path / "x.png", "x")
    with pytest.raises(ValueError, match="y_pred"):
        plot_correlation([1.0, 2.0, 3.0], [1.0, 2.0], tmp_path / "x.png", "x")


# --- tables ---------------------------------------------------------------------------


def test_table1_markdown_and_csv(tmp_path: Path) -> None:
    results = {
        "test": classification_metrics(TINY_Y, TINY_P, n_boot=20),
        "independent": classification_metrics(TINY_Y, TINY_P, n_boot=0),
    }
    md = table1_markdown(results)
    first = md.splitlines()[0]
    for column in TABLE1_HEADER:
        assert column in first
    assert "| test | 6 | 0.917 (" in md
    assert "| independent | 6 | 0.917 | 0.667 | 0.667 | 0.667 | 0.667 | 0.833 |" in md
    path = table1_csv(results, tmp_path / "table1.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(TABLE1_HEADER)
    assert [r[0] for r in rows[1:]] == ["test", "independent"]


def test_table2_markdown_confusion() -> None:
    md = table2_markdown([[1, 1, 0], [1, 1, 0], [0, 0, 2]], ["normal", "osteopenia", "osteoporosis"])
    lines = md.splitlines()
    assert lines[0] == "| True \\ predicted | normal | osteopenia | osteoporosis | Total |"
    assert "| osteoporosis | 0 | 0 | 2 | 2 |" in lines
    assert lines[-1] == "| Total | 2 | 2 | 2 | 6 |"
    with pytest.raises(ValueError, match="cm"):
        table2_markdown(np.ones((3, 2)))


def test_table3_markdown_and_csv(tmp_path: Path) -> None:
    bmd, pred = _synthetic_bmd(120, seed=2)
    results = {"test": regression_metrics(bmd, pred)}
    md = table3_markdown(results)
    assert md.splitlines()[0] == "| Set | n | MAE (mg/cm3) | RMSE (mg/cm3) | R2 | Pearson r | p |"
    assert "<0.001" in md
    assert f"{results['test']['mae']:.2f}" in md
    md_ba = table3_markdown(results, bland_altman=True)
    assert "Bias (95% CI)" in md_ba and " to " in md_ba
    path = table3_csv(results, tmp_path / "t3.csv", bland_altman=True)
    assert path.read_text(encoding="utf-8").startswith("Set,n,MAE (mg/cm3)")


def test_write_csv_checks_row_length(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rows"):
        write_csv([["a"]], ["x", "y"], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_level_agreement_counts_right_wrong_spurious_and_missed() -> None:
    from osteoscreen.evaluation.metrics import level_agreement

    ref = np.zeros((10, 10, 40), dtype=np.int16)
    pred = np.zeros_like(ref)
    for i, vid in enumerate((19, 20, 21, 22)):
        ref[2:8, 2:8, i * 10 : i * 10 + 8] = vid
    pred[2:8, 2:8, 0:8] = 19  # right
    pred[2:8, 2:8, 10:18] = 21  # L1 called L2
    pred[2:8, 2:8, 20:28] = 102  # L2 with an unknown level
    pred[0:2, 0:2, 30:38] = 23  # beside L3: no overlap
    out = level_agreement(pred, ref)
    assert out == {"n_pred": 4, "correct": 1, "wrong_level": 2, "spurious": 1, "n_ref": 4, "missed": 1}


def test_hu_error_pairs_bodies_by_overlap_not_by_label() -> None:
    from osteoscreen.evaluation.metrics import body_matches
    from osteoscreen.evaluation.run import hu_errors

    ref = np.zeros((4, 4, 12), np.int16)
    pred = np.zeros_like(ref)
    ref[:, :, 0:4], ref[:, :, 6:10] = 21, 20  # L2 below L1
    pred[:, :, 0:4], pred[:, :, 6:10] = 22, 21  # ours: one level off
    assert body_matches(pred, ref) == {22: 21, 21: 20}
    own = {
        "vertebrae": [
            {"label": "L3", "trabecular_hu_mean": 130.0},
            {"label": "L2", "trabecular_hu_mean": 118.0},
        ]
    }
    theirs = {
        "vertebrae": [
            {"label": "L2", "trabecular_hu_mean": 125.0},
            {"label": "L1", "trabecular_hu_mean": 120.0},
        ]
    }
    assert hu_errors(own, theirs, {"L3": "L2", "L2": "L1"}) == {"L2": 5.0, "L1": -2.0}
    assert hu_errors(own, theirs) == {"L2": -7.0}  # by label: L2 against the other body's L2
