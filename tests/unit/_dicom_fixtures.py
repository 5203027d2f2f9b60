"""Tiny synthetic CT series, label maps and results for the SR / SEG / key image tests.

Everything is generated in memory: a phantom with three vertebral bodies (L1-L3, ids 20-22)
of decreasing trabecular density, its CT Image headers (pydicom Datasets, no pixel data, as
``Volume.source_datasets`` holds them), and a matching ScreeningResult.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from osteoscreen.io.volume import Volume
from osteoscreen.results import PatientResult, RoiMeasurement, ScreeningResult, VertebraResult

LEVELS = {20: ("L1", 160.0), 21: ("L2", 110.0), 22: ("L3", 70.0)}  # id: (name, trabecular HU)


@dataclass
class Phantom:
    volume: Volume
    labels: np.ndarray  # vertebral bodies, label ids on the (i, j, k) grid
    rois: dict[int, np.ndarray]  # trabecular ROI per label id
    result: ScreeningResult


def ct_headers(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], origin_lps: tuple[float, float, float]
) -> list[Dataset]:
    """Axial CT Image headers (LPS, head-first supine), one per slice, inferior first."""
    n_i, n_j, n_k = shape
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(n_k):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.PatientName = "Phantom^Spine"
        ds.PatientID = "OSTEO-0001"
        ds.PatientBirthDate = "19500101"
        ds.PatientSex = "F"
        ds.StudyDate = "20240102"
        ds.StudyTime = "101500"
        ds.SeriesDate = "20240102"
        ds.SeriesTime = "101500"
        ds.AccessionNumber = "A0001"
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.Modality = "CT"
        ds.Manufacturer = "Synthetic"
        ds.SeriesNumber = 3
        ds.SeriesDescription = "ABD 1.0 B30f"
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = 120
        ds.SliceThickness = spacing[2]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (j), column spacing (i)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin_lps[0], origin_lps[1], origin_lps[2] + k * spacing[2]]
        ds.Rows = n_j
        ds.Columns = n_i
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        out.append(ds)
    return out


def make_phantom(
    shape: tuple[int, int, int] = (64, 64, 40), spacing: tuple[float, float, float] = (1.5, 1.5, 2.5)
) -> Phantom:
    """A trunk with three stacked vertebral bodies (L3 inferior, L1 superior)."""
    n_i, n_j, n_k = shape
    sx, sy, sz = spacing
    origin_lps = (-(n_i - 1) * sx / 2, -(n_j - 1) * sy / 2, -100.0)
    # DICOM LPS -> RAS: flip x and y.
    affine = np.array(
        [
            [-sx, 0, 0, -origin_lps[0]],
            [0, -sy, 0, -origin_lps[1]],
            [0, 0, sz, origin_lps[2]],
            [0, 0, 0, 1],
        ]
    )
    ii, jj, kk = np.meshgrid(
        (np.arange(n_i) - (n_i - 1) / 2) * sx,
        (np.arange(n_j) - (n_j - 1) / 2) * sy,
        np.arange(n_k) * sz,
        indexing="ij",
    )
    # ii: mm towards patient left (LPS x), jj: mm towards posterior, kk: mm superior.
    arr = np.full(shape, -1000.0, dtype=np.float32)
    trunk = (ii / (0.45 * n_i * sx)) ** 2 + (jj / (0.4 * n_j * sy)) ** 2 <= 1.0
    arr[trunk] = 40.0
    labels = np.zeros(shape, dtype=np.int16)
    rois: dict[int, np.ndarray] = {}
    body_y = 0.1 * n_j * sy  # bodies slightly posterior of centre
    height = n_k * sz / 3.0
    vertebrae = []
    for n, (label_id, (name, hu)) in enumerate(sorted(LEVELS.items(), key=lambda t: -t[0])):
        z0, z1 = n * height + 2.5, (n + 1) * height - 2.5  # discs between bodies
        radial = (ii / 18.0) ** 2 + ((jj - body_y) / 14.0) ** 2
        body = (radial <= 1.0) & (kk >= z0) & (kk <= z1)
        cortex = body & ((radial > 0.7) | (kk < z0 + 2) | (kk > z1 - 2))
        roi = body & ((ii / 12.0) ** 2 + ((jj - body_y) / 8.5) ** 2 <= 1.0) & (kk >= z0 + 4) & (kk <= z1 - 4)
        arr[body] = hu
        arr[cortex] = 600.0
        # posterior elements
        arch = ((ii / 8.0) ** 2 + ((jj - body_y - 26.0) / 9.0) ** 2 <= 1.0) & (kk >= z0) & (kk <= z1)
        arr[arch] = 450.0
        labels[body] = label_id
        rois[label_id] = roi
        idx = np.argwhere(roi)
        centre_ijk = idx.mean(axis=0)
        centre = tuple(float(v) for v in (affine @ np.r_[centre_ijk, 1.0])[:3])
        size = tuple(float(v) for v in (np.ptp(idx, axis=0) + 1) * np.array(spacing))
        vox_ml = sx * sy * sz / 1000.0
        values = arr[roi]
        bmd = 0.8 * hu - 10.0
        category = "normal" if bmd > 120 else ("osteoporosis" if bmd < 80 else "osteopenia")
        vertebrae.append(
            VertebraResult(
                roi=RoiMeasurement(
                    label_id=label_id,
                    label=name,
                    roi_voxels=int(roi.sum()),
                    body_voxels=int(body.sum()),
                    hu_mean=float(values.mean()),
                    hu_median=float(np.median(values)),
                    hu_std=float(values.std()) + 12.5,
                    center_mm=centre,  # type: ignore[arg-type]
                    size_mm=size,  # type: ignore[arg-type]
                    roi_volume_ml=float(roi.sum() * vox_ml),
                ),
                bmd_mg_cm3=bmd,
                category=category,
                probabilities={"normal": 0.2, "osteopenia": 0.7, "osteoporosis": 0.1},
                excluded=name == "L3",
            )
        )
    vertebrae.sort(key=lambda v: v.roi.label_id)
    arr += np.random.default_rng(0).normal(0, 15, shape).astype(np.float32)
    used = [v for v in vertebrae if not v.excluded]
    mean_bmd = float(np.mean([v.bmd_mg_cm3 for v in used]))  # type: ignore[misc]
    patient = PatientResult(
        levels_used=[v.label for v in used],
        bmd_mg_cm3=mean_bmd,
        category="osteopenia",
        classifier_category="osteopenia",
        agreement=True,
        excluded_levels=["L3"],
    )
    headers = ct_headers(shape, spacing, origin_lps)
    volume = Volume(
        array=arr,
        affine=affine,
        meta={"series_uid": headers[0].SeriesInstanceUID, "series_description": "ABD 1.0 B30f"},
        source_datasets=headers,
    )
    result = ScreeningResult(
        vertebrae=vertebrae,
        patient=patient,
        input_info={"series_uid": headers[0].SeriesInstanceUID, "description": "ABD 1.0 B30f"},
        models={
            "segmenter": {"name": "vbnet", "version": "0.3.1"},
            "classifier": {"name": "densenet121-cls", "version": "1.0"},
            "regressor": {"name": "densenet121-reg", "version": "1.0"},
        },
    )
    return Phantom(volume=volume, labels=labels, rois=rois, result=result)
