"""Reading CT input: DICOM series folders and NIfTI volumes.

The flow for a folder is :func:`scan_dicom_folder` (headers only) -> :func:`select_series`
(rules from ``resources/series_selection.json``) -> :func:`load_series` (pixels to HU, with the
geometry checked and, where needed, repaired). :func:`load_volume` runs the whole flow for a
path and is what the CLI and the application operators call.

Errors meant for the user are :class:`~osteoscreen.errors.InputError` (the path is wrong) and
:class:`~osteoscreen.errors.NotScreenableError` (the input is readable but cannot be screened).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import SpatialImage
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from osteoscreen.errors import InputError, NotScreenableError
from osteoscreen.io.volume import Volume

__all__ = [
    "SelectionRules",
    "SeriesInfo",
    "check_plausible_ct",
    "kernel_class",
    "load_selection_rules",
    "load_series",
    "load_volume",
    "read_pixels",
    "scan_dicom_folder",
    "select_series",
]

logger = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # DICOMDIR
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

# Plausible-CT rule (see check_plausible_ct): CT in HU holds fat (about -100 HU) or air
# (-1000 HU) and bone (> 150 HU) in any field of view that contains a vertebra, so its 1st
# percentile is below PLAUSIBLE_CT_P1_MAX and its 99th above PLAUSIBLE_CT_P99_MIN. Label maps
# (0..N), MR and PET intensities (>= 0) and CT stored without its rescale (0..4095) all fail.
PLAUSIBLE_CT_P1_MAX = -50.0
PLAUSIBLE_CT_P99_MIN = 100.0

# Slice positions closer than this along the normal (mm) are the same position.
_DUPLICATE_TOL_MM = 1e-3
# Relative deviation of a slice step from the median step beyond which we resample along k.
_UNEVEN_SPACING_TOL = 0.10
# Angle (degrees) between the slice-to-slice step and the slice normal reported as gantry tilt.
_TILT_TOL_DEG = 0.5
# Slice origins further than this (mm) from the line through the first and last one: not a stack.
_COLLINEAR_TOL_MM = 1.0

_HEADER_READ_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, struct.error)
_PIXEL_READ_ERRORS = (
    InvalidDicomError,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    RuntimeError,
    NotImplementedError,
    struct.error,
)


# --------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True)
class SelectionRules:
    """The series-selection rules (the ``screening`` block of the rules JSON).

    Attributes:
        modality: the required Modality.
        required_image_type: values that ImageType must all contain.
        excluded_image_type: values that ImageType must not contain.
        sop_classes: SOP Class UID -> "supported" or the reason it is rejected.
        max_axial_angle_deg: largest angle between slice normal and patient z still axial
            (gantry-tilted acquisitions tilt the image plane by up to about 30 degrees).
        max_slice_thickness_mm: thicker series are rejected.
        warn_slice_thickness_mm: thicker series are used with a warning.
        min_slices: fewest distinct slice positions.
        min_extent_mm: smallest distance covered from first to last slice.
        sharp_kernels: regular expressions of bone / lung kernels (least preferred).
        soft_kernels: regular expressions of soft-tissue kernels (preferred).
    """

    modality: str = "CT"
    required_image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY")
    excluded_image_type: tuple[str, ...] = ("LOCALIZER",)
    sop_classes: dict[str, str] = field(default_factory=lambda: {CT_IMAGE_STORAGE: "supported"})
    max_axial_angle_deg: float = 35.0
    max_slice_thickness_mm: float = 5.0
    warn_slice_thickness_mm: float = 3.0
    min_slices: int = 20
    min_extent_mm: float = 40.0
    sharp_kernels: tuple[str, ...] = ()
    soft_kernels: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectionRules:
        """Build the rules from the parsed JSON (the whole file or its ``screening`` block).

        Raises:
            ValueError: when a value has the wrong type or a key is unknown.
        """
        block = data.get("screening", data)
        if not isinstance(block, dict):
            raise ValueError("rules: 'screening' must be an object")
        known = {
            "modality",
            "required_image_type",
            "excluded_image_type",
            "sop_classes",
            "max_axial_angle_deg",
            "max_slice_thickness_mm",
            "warn_slice_thickness_mm",
            "min_slices",
            "min_extent_mm",
            "kernels",
        }
        unknown = set(block) - known
        if unknown:
            raise ValueError(f"rules: unknown keys {sorted(unknown)}; known keys are {sorted(known)}")
        kernels = block.get("kernels", {})
        defaults = cls()
        try:
            return cls(
                modality=str(block.get("modality", defaults.modality)),
                required_image_type=tuple(
                    str(v).upper() for v in block.get("required_image_type", defaults.required_image_type)
                ),
                excluded_image_type=tuple(
                    str(v).upper() for v in block.get("excluded_image_type", defaults.excluded_image_type)
                ),
                sop_classes={
                    str(k): str(v) for k, v in block.get("sop_classes", defaults.sop_classes).items()
                },
                max_axial_angle_deg=float(block.get("max_axial_angle_deg", defaults.max_axial_angle_deg)),
                max_slice_thickness_mm=float(
                    block.get("max_slice_thickness_mm", defaults.max_slice_thickness_mm)
                ),
                warn_slice_thickness_mm=float(
                    block.get("warn_slice_thickness_mm", defaults.warn_slice_thickness_mm)
                ),
                min_slices=int(block.get("min_slices", defaults.min_slices)),
                min_extent_mm=float(block.get("min_extent_mm", defaults.min_extent_mm)),
                sharp_kernels=tuple(str(v) for v in kernels.get("sharp", ())),
                soft_kernels=tuple(str(v) for v in kernels.get("soft", ())),
            )
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"rules: malformed value ({exc})") from exc


def load_selection_rules(path: str | os.PathLike[str] | None = None) -> SelectionRules:
    """Read the series-selection rules.

    Args:
        path: a rules JSON file; None for the packaged ``resources/series_selection.json``.

    Returns:
        The rules.

    Raises:
        InputError: when ``path`` is missing or is not valid rules JSON.
    """
    try:
        if path is None:
            text = resources.files("osteoscreen.resources").joinpath("series_selection.json").read_text()
        else:
            text = Path(path).read_text(encoding="utf-8")
        return SelectionRules.from_dict(json.loads(text))
    except (OSError, json.JSONDecodeError, ValueError) as exc:
        raise InputError(f"cannot read series-selection rules {path or '(packaged)'}: {exc}") from exc


def kernel_class(kernel: str, rules: SelectionRules) -> int:
    """Rank a convolution kernel: 0 soft tissue, 1 unknown, 2 sharp (bone, lung).

    Sharp patterns are tried first so that "BONEPLUS" or "LUNG" never count as soft.
    """
    name = kernel.strip()
    if not name:
        return 1
    if any(re.search(p, name, flags=re.IGNORECASE) for p in rules.sharp_kernels):
        return 2
    if any(re.search(p, name, flags=re.IGNORECASE) for p in rules.soft_kernels):
        return 0
    return 1


# --------------------------------------------------------------------------------------------
# Scanning


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder (headers only, no pixel data).

    Attributes:
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        modality: Modality.
        description: SeriesDescription ("" when absent).
        image_type: ImageType values, upper case.
        sop_class_uid: SOPClassUID of the first file.
        slice_thickness: median SliceThickness in mm, None when absent.
        kernel: ConvolutionKernel (multiple values joined by backslash), "" when absent.
        kvp: KVP, None when absent.
        orientation: ImageOrientationPatient of the first file, None when absent.
        paths: the files, in the order found.
        headers: the headers (no pixel data), parallel to ``paths``.
    """

    series_uid: str
    study_uid: str
    modality: str
    description: str
    image_type: tuple[str, ...]
    sop_class_uid: str
    slice_thickness: float | None
    kernel: str
    kvp: float | None
    orientation: tuple[float, ...] | None
    paths: list[Path] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)

    @property
    def num_slices(self) -> int:
        """Number of files (instances) in the series."""
        return len(self.paths)

    @property
    def label(self) -> str:
        """A short name for messages: the description, else the end of the UID."""
        return self.description or f"...{self.series_uid[-12:]}"


def _read_header(path: Path) -> Dataset | None:
    """The header of a complete DICOM file, or None (not DICOM, DICOMDIR, truncated)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=False)
            pixel_start = fp.tell()  # pydicom rewinds to the start of (7FE0,0010)
    except _HEADER_READ_ERRORS as exc:
        logger.debug("skipping %s: not readable as DICOM (%s)", path, exc)
        return None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY_STORAGE:
        logger.debug("skipping %s: DICOMDIR", path)
        return None
    if "SOPClassUID" not in ds or "SeriesInstanceUID" not in ds:
        logger.warning("skipping %s: DICOM header without SOP class or series UID (truncated?)", path)
        return None
    if "Rows" in ds and not _pixel_data_complete(ds, path, pixel_start, size):
        logger.warning("skipping %s: pixel data missing or truncated", path)
        return None
    return ds


def _pixel_data_complete(ds: Dataset, path: Path, pixel_start: int, size: int) -> bool:
    """Whether an image file holds all its pixel data (cheap checks, no decoding)."""
    remaining = size - pixel_start
    if remaining <= 12:
        return False
    tsuid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    ts = UID(tsuid) if tsuid else UID("1.2.840.10008.1.2")
    if ts.is_compressed:
        # Encapsulated pixel data ends with a Sequence Delimitation Item (FFFE,E0DD), length 0.
        tail = min(remaining, 4096)
        try:
            with path.open("rb") as fp:
                fp.seek(size - tail)
                return b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" in fp.read(tail)
        except OSError:
            return False
    try:
        bits = int(ds.BitsAllocated)
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
        expected *= int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return False
    expected = math.ceil(expected * bits / 8)
    header = 12 if ts.is_implicit_VR is False else 8
    return remaining >= header + expected


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _multi_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def scan_dicom_folder(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Find the DICOM series under a folder, reading headers only.

    Walks any nesting. Files that are not DICOM (no "DICM" preamble), DICOMDIR files and
    unreadable or truncated files are skipped (logged), never fatal.

    Args:
        path: the folder.

    Returns:
        One :class:`SeriesInfo` per SeriesInstanceUID, in the order first found.

    Raises:
        InputError: when ``path`` does not exist or is not a folder.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"input path does not exist: {root}")
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    groups: dict[str, SeriesInfo] = {}
    thickness: dict[str, list[float]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            if name.upper() == "DICOMDIR" or not file.is_file():
                continue
            ds = _read_header(file)
            if ds is None:
                continue
            uid = str(ds.SeriesInstanceUID)
            info = groups.get(uid)
            if info is None:
                iop = ds.get("ImageOrientationPatient")
                info = SeriesInfo(
                    series_uid=uid,
                    study_uid=str(ds.get("StudyInstanceUID", "")),
                    modality=str(ds.get("Modality", "")),
                    description=str(ds.get("SeriesDescription", "") or ""),
                    image_type=tuple(str(v).strip().upper() for v in (ds.get("ImageType") or ())),
                    sop_class_uid=str(ds.SOPClassUID),
                    slice_thickness=None,
                    kernel=_multi_str(ds.get("ConvolutionKernel")),
                    kvp=_float_or_none(ds.get("KVP")),
                    orientation=tuple(float(v) for v in iop) if iop is not None and len(iop) == 6 else None,
                )
                groups[uid] = info
                thickness[uid] = []
            info.paths.append(file)
            info.headers.append(ds)
            t = _float_or_none(ds.get("SliceThickness"))
            if t is not None and t > 0:
                thickness[uid].append(t)
    for uid, info in groups.items():
        if thickness[uid]:
            info.slice_thickness = float(np.median(thickness[uid]))
    logger.info("found %d DICOM series under %s", len(groups), root)
    return list(groups.values())


# --------------------------------------------------------------------------------------------
# Geometry


@dataclass
class _StackGeometry:
    row_dir: np.ndarray  # LPS unit vector along a row (increasing column index, i)
    col_dir: np.ndarray  # LPS unit vector down a column (increasing row index, j)
    normal: np.ndarray
    pixel_spacing: tuple[float, float]  # (between rows, between columns) as in DICOM
    order: np.ndarray  # indices into the headers, sorted along the normal, duplicates removed
    positions: np.ndarray  # distance along the normal of each kept slice (mm)
    origins: np.ndarray  # (n, 3) LPS ImagePositionPatient of each kept slice
    duplicates: int


def _stack_geometry(headers: Sequence[Dataset]) -> _StackGeometry:
    """Sort a stack of single-frame images; raise NotScreenableError if it is not one."""
    try:
        iops = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
        ipps = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
        ps = [float(v) for v in headers[0].PixelSpacing]
    except (AttributeError, TypeError, ValueError) as exc:
        raise NotScreenableError("images lack a valid position, orientation or pixel spacing") from exc
    if iops.shape[1] != 6 or ipps.shape[1] != 3 or len(ps) != 2 or min(ps) <= 0:
        raise NotScreenableError("images have malformed position, orientation or pixel spacing")
    if np.abs(iops - iops[0]).max() > 1e-3:
        raise NotScreenableError("series mixes image orientations")
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(sizes) > 1:
        raise NotScreenableError(f"series mixes image sizes {sorted(sizes)}")
    row_dir = iops[0, :3] / np.linalg.norm(iops[0, :3])
    col_dir = iops[0, 3:] / np.linalg.norm(iops[0, 3:])
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 0.5:
        raise NotScreenableError("image orientation is degenerate")
    normal /= np.linalg.norm(normal)
    dist = ipps @ normal
    order = np.argsort(dist, kind="stable")
    keep = [int(order[0])]
    for idx in order[1:]:
        if dist[idx] - dist[keep[-1]] > _DUPLICATE_TOL_MM:
            keep.append(int(idx))
    kept = np.array(keep, dtype=int)
    return _StackGeometry(
        row_dir=row_dir,
        col_dir=col_dir,
        normal=normal,
        pixel_spacing=(ps[0], ps[1]),
        order=kept,
        positions=dist[kept],
        origins=ipps[kept],
        duplicates=len(headers) - len(kept),
    )


# --------------------------------------------------------------------------------------------
# Selection


def _evaluate(info: SeriesInfo, rules: SelectionRules) -> tuple[str | None, list[str]]:
    """Why a series cannot be screened (None if it can), and the warnings if it is used."""
    if info.modality.upper() != rules.modality.upper():
        return f"modality {info.modality or 'unknown'}", []
    verdict = rules.sop_classes.get(info.sop_class_uid)
    if verdict is None:
        return f"not a CT image ({UID(info.sop_class_uid).name})", []
    if verdict != "supported":
        return verdict, []
    missing = [v for v in rules.required_image_type if v not in info.image_type]
    excluded = [v for v in rules.excluded_image_type if v in info.image_type]
    if excluded:
        return f"image type {'/'.join(excluded).lower()}", []
    if missing:
        have = "\\".join(info.image_type) or "absent"
        return f"image type {have} (needs {'/'.join(missing)})", []
    try:
        geo = _stack_geometry(info.headers)
    except NotScreenableError as exc:
        return str(exc), []
    angle = math.degrees(math.acos(min(1.0, abs(float(geo.normal[2])))))
    if angle > rules.max_axial_angle_deg:
        return f"not axial (slices {angle:.0f} deg from the axial plane)", []
    warnings: list[str] = []
    thickness = info.slice_thickness
    if thickness is None and len(geo.positions) > 1:
        thickness = float(np.median(np.diff(geo.positions)))
    if thickness is not None and thickness > rules.max_slice_thickness_mm:
        return f"slices {thickness:.1f} mm thick (max {rules.max_slice_thickness_mm:g} mm)", []
    n = len(geo.positions)
    if n < rules.min_slices:
        return f"only {n} slice{'s' if n != 1 else ''} (needs at least {rules.min_slices})", []
    extent = float(np.linalg.norm(geo.origins[-1] - geo.origins[0]))
    if extent < rules.min_extent_mm:
        return f"covers {extent:.0f} mm (needs at least {rules.min_extent_mm:g} mm)", []
    if thickness is not None and thickness > rules.warn_slice_thickness_mm:
        warnings.append(
            f"series '{info.label}' has {thickness:.1f} mm slices (thicker than "
            f"{rules.warn_slice_thickness_mm:g} mm): trabecular HU will be less precise"
        )
    if kernel_class(info.kernel, rules) == 2:
        warnings.append(
            f"series '{info.label}' uses a sharp kernel ({info.kernel}): trabecular HU may be biased"
        )
    return None, warnings


def select_series(
    series: Sequence[SeriesInfo], rules: SelectionRules | str | os.PathLike[str] | None = None
) -> tuple[SeriesInfo, list[str]]:
    """Choose the series to screen.

    A series qualifies when it is a single-frame CT image series of ORIGINAL/PRIMARY (not
    LOCALIZER) images, axial (tilted gantry included), thin enough and long enough. Among those,
    soft-tissue kernels beat unknown ones beat sharp (bone, lung) ones, then thinner slices win,
    then more slices.

    Args:
        series: the output of :func:`scan_dicom_folder`.
        rules: rules, a rules JSON path, or None for the packaged rules.

    Returns:
        The chosen series and warnings about it.

    Raises:
        NotScreenableError: when no series qualifies (the message gives each one's reason).
    """
    if not isinstance(rules, SelectionRules):
        rules = load_selection_rules(rules)
    if not series:
        raise NotScreenableError("no DICOM series found")
    candidates: list[tuple[tuple[int, float, int], SeriesInfo, list[str]]] = []
    rejected: list[str] = []
    for info in series:
        reason, warnings = _evaluate(info, rules)
        if reason is not None:
            logger.info("series %s (%s) rejected: %s", info.series_uid, info.label, reason)
            rejected.append(f"'{info.label}' ({info.modality}, {info.num_slices} files): {reason}")
            continue
        thickness = info.slice_thickness if info.slice_thickness is not None else math.inf
        key = (kernel_class(info.kernel, rules), thickness, -info.num_slices)
        candidates.append((key, info, warnings))
    if not candidates:
        shown = "; ".join(rejected[:6])
        more = f"; and {len(rejected) - 6} more" if len(rejected) > 6 else ""
        raise NotScreenableError(f"no CT series usable for screening: {shown}{more}")
    candidates.sort(key=lambda c: c[0])
    _, chosen, warnings = candidates[0]
    logger.info(
        "selected series %s (%s, %d files, kernel %s, %s mm) among %d candidates",
        chosen.series_uid,
        chosen.label,
        chosen.num_slices,
        chosen.kernel,
        chosen.slice_thickness,
        len(candidates),
    )
    return chosen, list(warnings)


# --------------------------------------------------------------------------------------------
# Pixels


def _check_decodable(ds: Dataset, where: str) -> None:
    tsuid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsuid is None:
        return
    ts = UID(tsuid)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise NotScreenableError(f"{where}: unsupported transfer syntax {ts.name} ({ts})") from exc
    if not decoder.is_available:
        hint = "; ".join(decoder.missing_dependencies) or "no decoder plugin"
        raise NotScreenableError(
            f"{where}: cannot decode {ts.name} pixel data, no decoder installed ({hint})"
        )


def _decode(ds: Dataset, where: str) -> np.ndarray:
    if "PixelData" not in ds:
        raise NotScreenableError(f"{where}: no pixel data")
    _check_decodable(ds, where)
    try:
        return ds.pixel_array
    except _PIXEL_READ_ERRORS as exc:
        raise NotScreenableError(f"{where}: pixel data cannot be decoded ({exc})") from exc


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = _float_or_none(ds.get("RescaleSlope"))
    intercept = _float_or_none(ds.get("RescaleIntercept"))
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


def read_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one DICOM file's pixel data, with the rescale (modality LUT) applied.

    Args:
        path: a DICOM file.

    Returns:
        float32 array, (rows, columns) or (frames, rows, columns).

    Raises:
        InputError: when the file is missing or not DICOM.
        NotScreenableError: when the pixel data is absent or cannot be decoded (the message
            names the transfer syntax when its decoder is not installed).
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"input path does not exist: {file}")
    try:
        ds = pydicom.dcmread(file, force=False)
    except _HEADER_READ_ERRORS as exc:
        raise InputError(f"not a readable DICOM file: {file} ({exc})") from exc
    px = _decode(ds, file.name)
    slope, intercept = _rescale(ds)
    out = px.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


# --------------------------------------------------------------------------------------------
# Loading


def _meta_from_header(ds: Dataset) -> dict[str, Any]:
    def s(keyword: str) -> str | None:
        value = ds.get(keyword)
        return None if value is None or value == "" else _multi_str(value)

    return {
        "source": "dicom",
        "study_instance_uid": s("StudyInstanceUID"),
        "series_instance_uid": s("SeriesInstanceUID"),
        "frame_of_reference_uid": s("FrameOfReferenceUID"),
        "series_description": s("SeriesDescription"),
        "modality": s("Modality"),
        "kvp": _float_or_none(ds.get("KVP")),
        "slice_thickness": _float_or_none(ds.get("SliceThickness")),
        "convolution_kernel": s("ConvolutionKernel"),
        "manufacturer": s("Manufacturer"),
        "model": s("ManufacturerModelName"),
        "patient_id": s("PatientID"),
        "patient_name": s("PatientName"),
        "patient_sex": s("PatientSex"),
        "patient_age": s("PatientAge"),
        "study_date": s("StudyDate"),
        "body_part_examined": s("BodyPartExamined"),
        "contrast_bolus_agent": s("ContrastBolusAgent"),
    }


def load_series(info: SeriesInfo) -> Volume:
    """Read a selected series into a HU volume.

    Slices are sorted along the slice normal and exact duplicates dropped. Uneven spacing (a
    step more than 10 % off the median) is resampled to the median step by linear
    interpolation along k. Gantry tilt (slices stepping off the normal) is kept exact with a
    sheared affine. Warnings go to ``meta["warnings"]`` (and the log).

    ``source_datasets`` holds the original headers (no pixel data) of the slices used, in k
    order. When ``meta["resampled_along_k"]`` is True the k grid no longer matches those
    slices one to one (there are then a different number of them).

    Args:
        info: a series from :func:`scan_dicom_folder`, normally chosen by :func:`select_series`.

    Returns:
        The volume: float32 HU indexed (i = column, j = row, k = slice), RAS+ affine.

    Raises:
        NotScreenableError: when the series is not a usable stack or its pixels cannot be decoded.
    """
    warnings: list[str] = []
    geo = _stack_geometry(info.headers)
    n = len(geo.order)
    if n < 2:
        raise NotScreenableError(f"series '{info.label}' has a single slice position; a volume is needed")
    if geo.duplicates:
        warnings.append(f"dropped {geo.duplicates} duplicate slice(s) at an already-seen position")
    headers = [info.headers[i] for i in geo.order]
    paths = [info.paths[i] for i in geo.order]
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)

    d = geo.positions - geo.positions[0]
    # Step per mm along the normal; equals the normal itself unless the gantry is tilted.
    step_dir = (geo.origins[-1] - geo.origins[0]) / d[-1]
    predicted = geo.origins[0] + np.outer(d, step_dir)
    if np.linalg.norm(geo.origins - predicted, axis=1).max() > _COLLINEAR_TOL_MM:
        raise NotScreenableError(f"series '{info.label}': slice positions do not lie on a line")
    tilt = math.degrees(math.acos(min(1.0, 1.0 / float(np.linalg.norm(step_dir)))))
    if tilt > _TILT_TOL_DEG:
        warnings.append(
            f"gantry tilt of {tilt:.1f} deg: geometry kept exact with a sheared affine "
            "(the volume is not on an orthogonal grid)"
        )

    # One float32 array, filled slice by slice; F order keeps each slice contiguous.
    raw = np.empty((cols, rows, n), dtype=np.float32, order="F")
    for k, path in enumerate(paths):
        where = f"{path.name}"
        try:
            ds = pydicom.dcmread(path, force=False)
        except _HEADER_READ_ERRORS as exc:
            raise NotScreenableError(f"{where}: cannot be read ({exc})") from exc
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise NotScreenableError(f"{where}: multi-frame images are not supported")
        px = _decode(ds, where)
        if px.shape != (rows, cols):
            raise NotScreenableError(f"{where}: pixel array {px.shape} does not match {rows}x{cols}")
        out = raw[:, :, k]
        np.copyto(out, px.T, casting="unsafe")
        slope, intercept = _rescale(ds)
        if slope != 1.0:
            out *= np.float32(slope)
        if intercept != 0.0:
            out += np.float32(intercept)
        del ds, px

    steps = np.diff(d)
    median_step = float(np.median(steps))
    resampled = bool(np.abs(steps - median_step).max() > _UNEVEN_SPACING_TOL * median_step)
    if resampled:
        array = _resample_k(raw, d, median_step)
        warnings.append(
            f"uneven slice spacing ({steps.min():.2f} to {steps.max():.2f} mm, gaps or mixed "
            f"reconstructions): resampled to {median_step:.2f} mm along k by linear interpolation "
            f"({n} -> {array.shape[2]} slices)"
        )
        del raw
        k_step = median_step
    else:
        array = raw
        k_step = float(d[-1] / (n - 1))

    lps = np.eye(4)
    lps[:3, 0] = geo.row_dir * geo.pixel_spacing[1]
    lps[:3, 1] = geo.col_dir * geo.pixel_spacing[0]
    lps[:3, 2] = step_dir * k_step
    lps[:3, 3] = geo.origins[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps

    meta = _meta_from_header(headers[0])
    volume = Volume(array=array, affine=affine, meta=meta, source_datasets=headers)
    meta["spacing"] = volume.spacing
    meta["gantry_tilt_deg"] = round(tilt, 2) if tilt > _TILT_TOL_DEG else 0.0
    meta["resampled_along_k"] = resampled
    meta["num_source_slices"] = n
    meta["warnings"] = warnings
    for w in warnings:
        logger.warning("%s", w)
    return volume


def _resample_k(raw: np.ndarray, d: np.ndarray, step: float) -> np.ndarray:
    """Linear interpolation along k from positions ``d`` (increasing, d[0] = 0) to a uniform grid."""
    n_out = math.floor(d[-1] / step + 1e-6) + 1
    out = np.empty((*raw.shape[:2], n_out), dtype=np.float32, order="F")
    for m in range(n_out):
        t = min(m * step, float(d[-1]))
        hi = int(np.searchsorted(d, t, side="left"))
        if hi == 0 or abs(d[hi] - t) < 1e-6:
            out[:, :, m] = raw[:, :, hi]
            continue
        lo = hi - 1
        w = np.float32((t - d[lo]) / (d[hi] - d[lo]))
        np.multiply(raw[:, :, lo], np.float32(1.0) - w, out=out[:, :, m])
        out[:, :, m] += w * raw[:, :, hi]
    return out


def check_plausible_ct(array: np.ndarray, what: str = "volume") -> None:
    """Raise NotScreenableError unless the values look like CT in Hounsfield units.

    The rule: the 1st percentile must be below -50 HU (fat or air present) and the 99th
    percentile above 100 HU (bone present). Any CT field of view that holds a vertebra meets
    both; a label map (0..N), MR or PET intensities (>= 0) and CT stored without its rescale
    (0..4095) do not. Percentiles are computed on a regular subsample for speed.

    Args:
        array: the voxel values.
        what: the name of the input, for the message.

    Raises:
        NotScreenableError: when the values are implausible for CT.
    """
    stride = max(1, round((array.size / 2_000_000) ** (1 / 3)))
    sample = np.asarray(array[::stride, ::stride, ::stride], dtype=np.float32)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise NotScreenableError(f"{what} holds no finite values")
    # 99.9th, not 99th: in a wide field of view (much air, lungs) bone can be under 1 % of voxels.
    p1, p99 = (float(v) for v in np.percentile(finite, [1, 99.9]))
    if not (p1 < PLAUSIBLE_CT_P1_MAX and p99 > PLAUSIBLE_CT_P99_MIN):
        raise NotScreenableError(
            f"{what} does not look like CT in Hounsfield units (1st percentile {p1:.0f}, 99.9th "
            f"{p99:.0f}; CT needs values below {PLAUSIBLE_CT_P1_MAX:.0f} and above "
            f"{PLAUSIBLE_CT_P99_MIN:.0f}): is it a label map or another modality?"
        )


def _load_nifti(path: Path) -> Volume:
    try:
        img = nib.load(str(path))
        if not isinstance(img, SpatialImage):
            raise InputError(f"{path} is not a NIfTI image")
        shape = img.shape
        if len(shape) == 4 and shape[3] == 1:
            data = np.asarray(img.dataobj, dtype=np.float32)[..., 0]
        elif len(shape) == 3:
            data = img.get_fdata(dtype=np.float32)
        else:
            raise NotScreenableError(f"{path.name}: a 3-D volume is needed, got shape {shape}")
        affine = img.affine
    except (OSError, EOFError, ValueError, ImageFileError) as exc:
        raise InputError(f"cannot read NIfTI file {path}: {exc}") from exc
    if affine is None:
        raise InputError(f"NIfTI file {path} has no affine")
    volume = Volume(array=data, affine=affine, meta={"source": "nifti", "source_path": str(path)})
    volume.meta["spacing"] = volume.spacing
    volume.meta["warnings"] = []
    return volume


def load_volume(
    path: str | os.PathLike[str], rules: SelectionRules | str | os.PathLike[str] | None = None
) -> tuple[Volume, list[str]]:
    """Load the CT to screen from a DICOM folder or a NIfTI file.

    Args:
        path: a folder holding DICOM files (any nesting, any number of series) or a
            ``.nii`` / ``.nii.gz`` file in HU.
        rules: series-selection rules (see :func:`select_series`).

    Returns:
        The volume and the warnings (selection and loading).

    Raises:
        InputError: when the path does not exist or cannot be read.
        NotScreenableError: when no usable CT is found, or the values are not plausible CT.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input path does not exist: {p}")
    if p.is_dir():
        series = scan_dicom_folder(p)
        if not series:
            raise NotScreenableError(f"no DICOM files found in {p}")
        info, warnings = select_series(series, rules)
        volume = load_series(info)
        warnings = warnings + list(volume.meta.get("warnings", []))
        volume.meta["warnings"] = warnings
        what = f"series '{info.label}'"
    elif p.name.lower().endswith((".nii", ".nii.gz")):
        volume = _load_nifti(p)
        warnings = []
        what = p.name
    else:
        raise NotScreenableError(
            f"{p} is a single file: give a folder holding a DICOM CT series, or a NIfTI (.nii/.nii.gz) volume"
        )
    check_plausible_ct(volume.array, what)
    return volume, warnings
