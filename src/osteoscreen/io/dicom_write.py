"""Writing HU volumes as DICOM CT series (for synthetic studies and tests).

:func:`write_ct_series` writes one single-frame CT Image Storage file per k slice, with the
Type 1 and Type 2 attributes of the CT Image IOD (Patient, General Study, General Series,
Frame of Reference, General Equipment, General Image, Image Plane, Image Pixel, CT Image,
SOP Common), in explicit VR little endian. :func:`write_localizer` writes a LOCALIZER image
(a projection of the volume) for tests of series selection.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from osteoscreen import __version__
from osteoscreen.io.volume import Volume

__all__ = ["CT_IMAGE_STORAGE", "write_ct_series", "write_localizer"]

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ORTHOGONAL_TOL = 1e-4


def _as_lps_axial(volume: Volume) -> Volume:
    """The volume reoriented to LPS (permutation and flips only) when its k axis is not axial."""
    ornt = io_orientation(volume.affine)
    # ornt[a, 0] is the world axis (0 x, 1 y, 2 z) that array axis a is closest to.
    if int(ornt[2, 0]) == 2:
        return volume
    tf = ornt_transform(ornt, axcodes2ornt(("L", "P", "S")))
    array = np.ascontiguousarray(apply_orientation(volume.array, tf))
    affine = volume.affine @ inv_ornt_aff(tf, volume.array.shape)
    logger.info("reoriented a non-axial volume to LPS before writing DICOM")
    return Volume(array=array, affine=affine, meta=dict(volume.meta), source_datasets=[])


def _scanner_in_plane(volume: Volume) -> Volume:
    """An axial volume with its in-plane axes flipped / swapped to L, P (k unchanged)."""
    ornt = io_orientation(volume.affine)
    if int(ornt[2, 0]) != 2:
        return volume
    target = np.array([[0, -1], [1, -1], [2, ornt[2, 1]]], dtype=float)  # L, P, k as it is
    if np.array_equal(ornt, target):
        return volume
    tf = ornt_transform(ornt, target)
    array = np.ascontiguousarray(apply_orientation(volume.array, tf))
    affine = volume.affine @ inv_ornt_aff(tf, volume.array.shape)
    return Volume(array=array, affine=affine, meta=dict(volume.meta), source_datasets=[])


def _ds(value: float) -> str:
    """A DS string of at most 16 characters, as precise as that allows."""
    return format_number_as_ds(float(value))


def _ct_template(
    *,
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    series_description: str,
    kvp: float,
    kernel: str,
    manufacturer: str,
    rows: int,
    cols: int,
    pixel_spacing: tuple[float, float],
    orientation: np.ndarray,
    slice_thickness: float,
    now: _dt.datetime,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "osteoscreen synthetic CT"
    # General Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = series_description
    ds.PatientPosition = "HFS"
    # Frame of Reference
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = "osteoscreen"
    ds.SoftwareVersions = __version__
    # General Acquisition / General Image
    ds.AcquisitionNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.ImageLaterality = "U"  # unpaired (spine); satisfies General Series Laterality (2C)
    ds.AcquisitionDate, ds.AcquisitionTime = date, time
    # Image Plane
    ds.PixelSpacing = [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])]
    ds.ImageOrientationPatient = [_ds(float(v)) for v in orientation]
    ds.SliceThickness = _ds(slice_thickness)
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    # CT Image
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.KVP = _ds(kvp)
    ds.ConvolutionKernel = kernel
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    return ds


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"OSTEOSCREEN_{__version__}"[:16]
    return meta


def _to_int16(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), -32768, 32767).astype(np.int16)


def write_ct_series(
    volume: Volume,
    out_dir: str | os.PathLike[str],
    *,
    patient_id: str,
    patient_name: str,
    study_uid: str | None = None,
    series_description: str,
    kvp: float = 120,
    kernel: str = "STANDARD",
    manufacturer: str = "osteoscreen-synth",
    slice_thickness: float | None = None,
    extra: Mapping[str, Any] | None = None,
    scanner_order: bool = False,
) -> list[Path]:
    """Write a HU volume as a single-frame CT Image Storage series, one file per k slice.

    Pixels are stored as signed 16-bit integers (values rounded and clipped) with rescale
    slope 1 and intercept 0, so integer HU volumes round-trip exactly. The geometry comes from
    the affine (RAS+ converted to DICOM LPS): i runs along rows, j down columns, k across
    slices; the k step may be oblique (gantry tilt). A volume whose k axis is not the one
    closest to the patient z-axis (a sagittal or coronal stack such as PIR) is first
    reoriented to LPS (axis permutation and flips, no resampling) so that the series is axial.

    Args:
        volume: the volume, values in HU.
        out_dir: the folder to write into (created when missing).
        patient_id: PatientID.
        patient_name: PatientName (DICOM PN form, e.g. "Doe^Jane").
        study_uid: StudyInstanceUID; a new UID when None.
        series_description: SeriesDescription.
        kvp: KVP.
        kernel: ConvolutionKernel.
        manufacturer: Manufacturer.
        slice_thickness: SliceThickness in mm; the k spacing when None.
        extra: more attributes by DICOM keyword (e.g. {"PatientSex": "F", "PatientAge": "064Y",
            "ContrastBolusAgent": "IOMEPROL"}), set on every slice after the defaults, so they
            may also override defaults (SeriesInstanceUID, SeriesNumber, ...).
        scanner_order: store each axial slice as scanners do (rows from the patient's right
            to left, columns from front to back: ImageOrientationPatient 1\\0\\0\\0\\1\\0), so
            viewers show it the usual way up; the slices keep their order. Otherwise the
            volume's own in-plane order is kept (exact round trips of the array).

    Returns:
        The written file paths in k order.

    Raises:
        ValueError: when the in-plane axes are not orthogonal (DICOM cannot express a shear
            within a slice) or an ``extra`` keyword is not a DICOM keyword.
    """
    vol = _as_lps_axial(volume)
    if scanner_order:
        vol = _scanner_in_plane(vol)
    lps = _RAS_TO_LPS @ vol.affine
    col_i, col_j, col_k = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    di, dj = float(np.linalg.norm(col_i)), float(np.linalg.norm(col_j))
    row_dir, col_dir = col_i / di, col_j / dj
    if abs(float(row_dir @ col_dir)) > _ORTHOGONAL_TOL:
        raise ValueError("volume: the i and j axes must be orthogonal to be written as DICOM slices")
    normal = np.cross(row_dir, col_dir)
    spacing_k = float(abs(col_k @ normal))
    thickness = spacing_k if slice_thickness is None else float(slice_thickness)
    nk = vol.array.shape[2]
    ni, nj = vol.array.shape[0], vol.array.shape[1]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    template = _ct_template(
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid or generate_uid(),
        series_uid=series_uid,
        frame_uid=generate_uid(),
        series_description=series_description,
        kvp=kvp,
        kernel=kernel,
        manufacturer=manufacturer,
        rows=nj,
        cols=ni,
        pixel_spacing=(dj, di),
        orientation=np.concatenate([row_dir, col_dir]),
        slice_thickness=thickness,
        now=_dt.datetime.now(),
    )
    for keyword, value in (extra or {}).items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"extra: {keyword!r} is not a DICOM keyword")
        try:
            setattr(template, keyword, value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"extra: cannot set {keyword!r} ({exc})") from exc

    paths: list[Path] = []
    tag = series_uid.rsplit(".", 1)[-1][-8:]
    for k in range(nk):
        ds = Dataset()
        ds.update(template)
        sop_uid = generate_uid()
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        position = lps[:3, 3] + k * col_k
        ds.ImagePositionPatient = [_ds(float(v)) for v in position]
        ds.SliceLocation = _ds(float(position @ normal))
        ds.PixelData = _to_int16(vol.array[:, :, k].T).tobytes()
        ds.file_meta = _file_meta(CT_IMAGE_STORAGE, sop_uid)
        path = out / f"CT_{tag}_{k + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.info("wrote %d CT slices to %s", nk, out)
    return paths


def write_localizer(
    volume: Volume,
    out_path: str | os.PathLike[str],
    *,
    patient_id: str,
    patient_name: str,
    study_uid: str | None = None,
    frame_uid: str | None = None,
) -> Path:
    """Write a LOCALIZER (scout) CT image: the volume's mean projection along the patient y-axis.

    The geometry is approximate (a coronal plane through the volume's first voxel); it is an
    object for series-selection tests, which must ignore it.

    Args:
        volume: the volume, values in HU.
        out_path: the file to write.
        patient_id: PatientID.
        patient_name: PatientName.
        study_uid: StudyInstanceUID; a new UID when None.
        frame_uid: FrameOfReferenceUID; a new UID when None.

    Returns:
        The written path.
    """
    vol = volume.canonical().volume  # RAS: axis 0 = x, axis 2 = z
    projection = vol.array.mean(axis=1)  # (x, z)
    image = projection[::-1, ::-1].T  # rows go down (-z), columns go left (+L)
    sx, _, sz = vol.spacing
    ras_origin = vol.affine @ np.array([vol.shape[0] - 1, 0, vol.shape[2] - 1, 1.0])
    lps_origin = (_RAS_TO_LPS @ ras_origin)[:3]
    template = _ct_template(
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid or generate_uid(),
        series_uid=generate_uid(),
        frame_uid=frame_uid or generate_uid(),
        series_description="Topogram",
        kvp=120,
        kernel="T20s",
        manufacturer="osteoscreen-synth",
        rows=image.shape[0],
        cols=image.shape[1],
        pixel_spacing=(sz, sx),
        orientation=np.array([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]),
        slice_thickness=1.0,
        now=_dt.datetime.now(),
    )
    template.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    template.SeriesNumber = 99
    del template.RescaleType  # "HU" is not for ORIGINAL LOCALIZER images
    sop_uid = generate_uid()
    template.SOPInstanceUID = sop_uid
    template.InstanceNumber = 1
    template.ImagePositionPatient = [_ds(float(v)) for v in lps_origin]
    template.PixelData = _to_int16(image).tobytes()
    template.file_meta = _file_meta(CT_IMAGE_STORAGE, sop_uid)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    template.save_as(path, enforce_file_format=True)
    return path
