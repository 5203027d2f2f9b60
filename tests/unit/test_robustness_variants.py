"""The robustness variants move image and labels together and keep world positions."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from osteoscreen.evaluation.robustness import make_variants


def _case(tmp_path: Path) -> tuple[Path, Path]:
    shape = (20, 16, 30)
    hu = np.full(shape, 40.0, np.float32)
    lab = np.zeros(shape, np.int16)
    for vid, (k0, k1) in zip((19, 20, 21, 22, 23), ((24, 29), (18, 23), (12, 17), (6, 11), (1, 5))):
        lab[7:13, 8:13, k0:k1] = vid
        hu[7:13, 8:13, k0:k1] = 150.0 + vid
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = (-30.0, -20.0, 100.0)
    nib.save(nib.Nifti1Image(hu, aff), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(lab, aff), str(tmp_path / "lab.nii.gz"))
    return tmp_path / "ct.nii.gz", tmp_path / "lab.nii.gz"


def _centre(path: Path, vid: int) -> np.ndarray:
    img = nib.load(str(path))
    ijk = np.argwhere(np.asarray(img.dataobj) == vid).mean(axis=0)
    return img.affine[:3, :3] @ ijk + img.affine[:3, 3]  # type: ignore[no-any-return]


def test_variants_keep_anatomy_in_place(tmp_path: Path) -> None:
    image, labels = _case(tmp_path)
    cohort = make_variants(image, labels, tmp_path / "v")
    with open(cohort, newline="") as fh:
        rows = {r["case_id"]: r for r in csv.DictReader(fh)}
    assert set(rows) >= {"original", "lps", "pir", "chest_only", "l2_l4", "slices_5mm", "osteoporotic"}
    ref = _centre(labels, 21)
    for name in ("lps", "pir", "slices_1mm", "slices_5mm", "noise_40", "osteoporotic"):
        got = _centre(Path(rows[name]["label"]), 21)
        assert np.abs(got - ref).max() < 2.6, name  # within a slice of 5 mm / 2
        img = nib.load(rows[name]["image"])
        assert img.shape == nib.load(rows[name]["label"]).shape
    assert nib.aff2axcodes(nib.load(rows["lps"]["image"]).affine) == ("L", "P", "S")
    assert nib.aff2axcodes(nib.load(rows["pir"]["image"]).affine) == ("P", "I", "R")
    # Crops: chest-only keeps T12 and half of L1, L2-L4 has neither T12 nor L5 whole.
    chest = np.unique(np.asarray(nib.load(rows["chest_only"]["label"]).dataobj))
    assert set(chest) == {0, 19, 20}
    l24 = nib.load(rows["l2_l4"]["label"])
    assert {21, 22, 23} <= set(np.unique(np.asarray(l24.dataobj)))
    assert 19 not in np.unique(np.asarray(l24.dataobj))
    # Osteoporotic: the bodies dim (the mild variant less so at their outline), the rest
    # of the scan is unchanged.
    orig = np.asarray(nib.load(str(image)).dataobj)
    lab = np.asarray(nib.load(str(labels)).dataobj)
    inner = ndimage.binary_erosion(lab == 21)
    for name, outline in (("osteoporotic", 0.7), ("osteoporotic_harsh", 0.35)):
        ost = np.asarray(nib.load(rows[name]["image"]).dataobj)
        assert np.allclose(ost[inner], 0.35 * orig[inner]), name
        edge = (lab == 21) & ~inner
        assert np.allclose(ost[edge], outline * orig[edge]), name
        assert np.allclose(ost[0], orig[0]), name
