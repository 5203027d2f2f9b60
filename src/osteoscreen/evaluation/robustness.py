"""``osteoscreen robustness``: one real CT with reference bodies, changed the ways real scans differ.

From one image and its reference vertebral-body labels (VerSe ids) this writes variants, each
image with its labels moved the same way, and evaluates the whole pipeline on them with
``osteoscreen evaluate`` (own segmentation against the reference bodies; trabecular HU of
both measured by the same ROI code on the variant's own image):

- ``original``;
- ``lps``: the voxel array flipped left-right and front-back (LPS storage, as DICOM);
- ``pir``: axes permuted to posterior / inferior / right (VerSe's storage);
- ``chest_only``: cut at the middle of L1, keeping everything above;
- ``l2_l4``: L2 to L4 only (no last rib, no sacrum: the levels cannot be known);
- ``slices_1mm`` / ``slices_5mm``: resampled along z;
- ``noise_40`` / ``noise_80``: Gaussian noise of that SD (HU) added, seeded;
- ``osteoporotic``: HU inside the reference bodies scaled by 0.35 (about 115 HU trabecular
  bone becomes about 40), their outline (one voxel either side, the cortex) by 0.7, the rest of
  the scan unchanged; ``osteoporotic_harsh``: the outline scaled by 0.35 too.

A variant whose cut leaves none of the reference levels is skipped, saying why.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..labels import name_to_id

__all__ = ["VARIANTS", "make_variants", "run_robustness"]

log = logging.getLogger(__name__)

Image = tuple[np.ndarray, np.ndarray, np.ndarray]  # (HU, labels, affine)


def _flip_lps(hu: np.ndarray, lab: np.ndarray, aff: np.ndarray) -> Image:
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = hu.shape[0] - 1
    flip[1, 3] = hu.shape[1] - 1
    return hu[::-1, ::-1].copy(), lab[::-1, ::-1].copy(), aff @ flip


def _to_pir(hu: np.ndarray, lab: np.ndarray, aff: np.ndarray) -> Image:
    """Reorient a (near-)RAS array to posterior / inferior / right."""
    ornt = nib.orientations.axcodes2ornt(("P", "I", "R"))
    cur = nib.orientations.io_orientation(aff)
    tr = nib.orientations.ornt_transform(cur, ornt)
    new_aff = aff @ nib.orientations.inv_ornt_aff(tr, hu.shape)
    return (
        nib.orientations.apply_orientation(hu, tr).copy(),
        nib.orientations.apply_orientation(lab, tr).copy(),
        new_aff,
    )


def _crop_z(hu: np.ndarray, lab: np.ndarray, aff: np.ndarray, k0: int, k1: int) -> Image:
    shift = np.eye(4)
    shift[2, 3] = k0
    return hu[:, :, k0:k1].copy(), lab[:, :, k0:k1].copy(), aff @ shift


def _z_range(lab: np.ndarray, level: str) -> tuple[int, int]:
    ks = np.where((lab == name_to_id(level)).any(axis=(0, 1)))[0]
    if ks.size == 0:
        raise LookupError(f"the reference labels have no {level}")
    return int(ks.min()), int(ks.max()) + 1


def _chest_only(hu: np.ndarray, lab: np.ndarray, aff: np.ndarray) -> Image:
    k0, k1 = _z_range(lab, "L1")
    return _crop_z(hu, lab, aff, (k0 + k1) // 2, hu.shape[2])


def _l2_l4(hu: np.ndarray, lab: np.ndarray, aff: np.ndarray) -> Image:
    lo, _ = _z_range(lab, "L4")
    _, hi = _z_range(lab, "L2")
    gap = max(1, int(round(4.0 / float(np.linalg.norm(aff[:3, 2])))))  # half a disc, about 4 mm
    return _crop_z(hu, lab, aff, max(0, lo - gap), min(hu.shape[2], hi + gap))


def _slices(mm: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], Image]:
    def apply(hu: np.ndarray, lab: np.ndarray, aff: np.ndarray) -> Image:
        sz = float(np.linalg.norm(aff[:3, 2]))
        factor = sz / mm
        n = max(2, int(round(hu.shape[2] * factor)))
        # Sample positions: new slice centres in old voxel coordinates (same first slice).
        ks = np.arange(n) * (mm / sz)
        ks = ks[ks <= hu.shape[2] - 1]
        if mm > sz:
            # A thicker slice averages what it covers (a box of mm / sz old slices).
            hu = ndimage.uniform_filter1d(hu.astype(np.float32), size=max(1, int(round(mm / sz))), axis=2)
        ii, jj, kk = np.meshgrid(np.arange(hu.shape[0]), np.arange(hu.shape[1]), ks, indexing="ij")
        new_hu = ndimage.map_coordinates(hu.astype(np.float32), [ii, jj, kk], order=1, mode="nearest")
        new_lab = ndimage.map_coordinates(lab, [ii, jj, kk], order=0, mode="nearest")
        new_aff = aff.copy()
        new_aff[:3, 2] = aff[:3, 2] * (mm / sz)
        return new_hu, new_lab.astype(lab.dtype), new_aff

    return apply


def _noise(sd: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], Image]:
    def apply(hu: np.ndarray, lab: np.ndarray, aff: np.ndarray) -> Image:
        rng = np.random.default_rng(int(sd))
        return (hu + rng.normal(0.0, sd, hu.shape)).astype(np.float32), lab, aff

    return apply


def _osteoporotic(cortex_factor: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], Image]:
    def apply(hu: np.ndarray, lab: np.ndarray, aff: np.ndarray) -> Image:
        body = lab > 0
        shell = ndimage.binary_dilation(body, iterations=1) & ~ndimage.binary_erosion(body, iterations=1)
        out = hu.astype(np.float32).copy()
        out[body & ~shell] *= _TRABECULAR_FACTOR
        out[shell] *= cortex_factor
        return out, lab, aff

    return apply


#: About 115 HU of trabecular bone becomes about 40 (osteoporotic); the cortical shell is
#: thinned (x 0.7) or, in the harsh variant, dimmed as much as the trabecular bone.
_TRABECULAR_FACTOR = 0.35


VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], Image]] = {
    "original": lambda hu, lab, aff: (hu, lab, aff),
    "lps": _flip_lps,
    "pir": _to_pir,
    "chest_only": _chest_only,
    "l2_l4": _l2_l4,
    "slices_1mm": _slices(1.0),
    "slices_5mm": _slices(5.0),
    "noise_40": _noise(40.0),
    "noise_80": _noise(80.0),
    "osteoporotic": _osteoporotic(0.7),
    "osteoporotic_harsh": _osteoporotic(_TRABECULAR_FACTOR),
}


def make_variants(image: Path, labels: Path, out: Path, names: list[str] | None = None) -> Path:
    """Write the variants as NIfTI pairs and a cohort CSV; returns the CSV's path."""
    img: Any = nib.load(str(image))
    ref: Any = nib.load(str(labels))
    if img.shape[:3] != ref.shape[:3]:
        raise ValueError(f"image {img.shape} and labels {ref.shape} differ in shape")
    hu = np.asarray(img.dataobj, dtype=np.float32)
    lab = np.asarray(ref.dataobj).astype(np.int16)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names or list(VARIANTS):
        try:
            vhu, vlab, vaff = VARIANTS[name](hu, lab, img.affine)
        except LookupError as exc:
            log.warning("variant %s skipped: %s", name, exc)
            continue
        d = out / name
        d.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(vhu.astype(np.float32), vaff), str(d / "image.nii.gz"))
        nib.save(nib.Nifti1Image(vlab.astype(np.int16), vaff), str(d / "labels.nii.gz"))
        rows.append(
            {
                "case_id": name,
                "image": str((d / "image.nii.gz").resolve()),
                "label": str((d / "labels.nii.gz").resolve()),
            }
        )
    cohort = out / "cohort.csv"
    with open(cohort, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "image", "label"])
        w.writeheader()
        w.writerows(rows)
    return cohort


def run_robustness(
    image: Path,
    labels: Path,
    models_dir: Path,
    out: Path,
    *,
    names: list[str] | None = None,
    workers: int = 1,
    kvp: float | None = None,
) -> dict[str, Any]:
    """Make the variants and evaluate them; writes robustness.md and robustness.json in ``out``."""
    from .run import case_table_header, case_table_row, evaluate_cohort

    cohort = make_variants(image, labels, out / "variants", names)
    if kvp is not None:
        _add_kvp(cohort, kvp)
    m = evaluate_cohort(cohort, models_dir, out / "evaluation", name="robustness", workers=workers, n_boot=10)
    cases = m["segmentation"].get("per_case", [])
    md = [
        f"# Robustness on {image.name} (reference bodies {labels.name})",
        "",
        "Own segmentation against the reference bodies; HU error = trabecular mean HU of each of",
        "our bodies minus that of the reference body it overlaps most, on the same variant image",
        "(same ROI code), listed under the reference body's level.",
        "",
        case_table_header(),
        *[case_table_row(c) for c in cases],
    ]
    failed = m.get("not_screened") or []
    if failed:
        md += ["", "Not screened: " + "; ".join(f"{f['case_id']}: {f['reason']}" for f in failed)]
    (out / "robustness.md").write_text("\n".join(md) + "\n")
    (out / "robustness.json").write_text(json.dumps({"cases": cases, "not_screened": failed}, indent=2))
    return m


def _add_kvp(cohort: Path, kvp: float) -> None:
    with open(cohort, newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(cohort, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "image", "label", "kvp"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "kvp": kvp})
