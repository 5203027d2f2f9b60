"""The screening pipeline as plain functions, one per stage (the operators call the same ones).

load -> canonical view -> vertebral bodies (VB-Net or a given label map) -> trabecular ROIs
-> DenseNet BMD and category -> patient result -> outputs (summary.json, vertebrae_seg.nii.gz,
report.png, and for DICOM input seg.dcm and sr.dcm), written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from . import __version__
from .bmd.predict import core_hu, predict_bmd
from .config import CATEGORIES, DEFAULT_CONFIG, ScreeningConfig
from .errors import InputError, NotScreenableError
from .io.dicom import load_volume
from .io.volume import CanonicalView, Volume, read_nifti
from .labels import UNKNOWN_LEVEL_BASE, id_to_name, name_to_id
from .models import ModelSet, load_models
from .results import PatientResult, RoiMeasurement, ScreeningResult, VertebraResult
from .roi.measure import measure_labelled_body
from .segmentation.cache import ClassCache
from .segmentation.classical import check_bodies
from .segmentation.inference import segment_classes
from .segmentation.levels import assign_levels, claim_edge_slivers, find_bodies
from .segmentation.refine import refine_bodies
from .transforms import muscle_reference, scan_context

__all__ = [
    "Stages",
    "assemble_result",
    "classify_vertebrae",
    "labels_from_file",
    "measure_vertebrae",
    "patient_result",
    "protocol_guess",
    "screen",
    "segment_vertebrae",
    "write_not_screenable",
    "write_outputs",
]

log = logging.getLogger(__name__)


@dataclass
class Stages:
    """Timings of the stages of one run (seconds)."""

    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 3)


@dataclass
class Bodies:
    """Labelled vertebral bodies on the canonical grid."""

    labels: np.ndarray  # int16 VerSe ids (101+ for unknown levels)
    touches_edge: dict[int, bool]
    level_confidence: float
    cues: list[str]
    warnings: list[str]
    source: str  # "vbnet" or "given"


#: In-plane margin (mm) around the fine stage's box for the post-processing crop.
_CROP_MARGIN_MM = 10.0


def segment_vertebrae(
    canon: Volume, models: ModelSet, class_cache: ClassCache | None = None, case_id: str = ""
) -> Bodies:
    """VB-Net tissue classes -> body instances -> levels.

    With ``class_cache`` the class map of ``case_id`` is read from it where present (and
    written to it where not), so only the post-processing runs again.
    """
    seg = class_cache.load(case_id, canon.shape) if class_cache is not None else None
    if seg is None:
        seg = segment_classes(canon, models.coarse, models.fine)
        if class_cache is not None:
            class_cache.save(case_id, seg)
    # Every class voxel lies in the fine stage's box: the post-processing works on that box
    # (widened in-plane by a margin, all slices kept so that edges and heights stay the
    # volume's), a fifth of a 512 x 512 matrix or less.
    margin = [int(np.ceil(_CROP_MARGIN_MM / s)) for s in canon.spacing[:2]]
    crop = (
        *(slice(max(0, a - m), min(n, b + m)) for (a, b), m, n in zip(seg.box[:2], margin, canon.shape)),
        slice(0, canon.shape[2]),
    )
    classes = seg.classes[crop]
    inst, bodies = find_bodies(classes, canon.spacing)
    if not bodies:
        raise NotScreenableError("no vertebral body found in the image (is the spine in the field of view?)")
    inst, _ = refine_bodies(inst, classes, canon.array[crop], canon.spacing)
    levels = assign_levels(classes, bodies, canon.spacing)
    slivers = claim_edge_slivers(classes, inst, bodies, levels.ids, canon.array[crop], canon.spacing)
    lut = np.zeros(int(inst.max()) + 1, dtype=np.int16)
    for mask_label, vid in levels.ids.items():
        lut[mask_label] = vid
    labels = np.zeros(canon.shape, dtype=np.int16)
    labels[crop] = lut[inst]
    edge = {levels.ids[b.mask_label]: b.touches_edge for b in bodies + slivers}
    warnings = seg.warnings + levels.warnings
    if seg.column is not None:
        off = check_bodies(
            seg.column,
            [(i + crop[0].start, j + crop[1].start, k) for i, j, k in (b.centroid_ijk for b in bodies)],
        )
        if 2 * len(off) > len(bodies):
            names = ", ".join(id_to_name(levels.ids[bodies[i].mask_label]) for i in off)
            warnings.append(
                f"{len(off)} of {len(bodies)} bodies ({names}) lie off the vertebral column that the "
                "classical spine finder sees: review the key image"
            )
    return Bodies(labels, edge, levels.confidence, levels.cues, warnings, "vbnet")


def labels_from_file(path: Path, volume: Volume, view: CanonicalView) -> Bodies:
    """A user's vertebral-body label map (VerSe ids) on the input's grid, as Bodies.

    Raises:
        InputError: unreadable file, or a grid that does not match the input image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"segmentation file does not exist: {path}")
    try:
        img = read_nifti(path, dtype=np.float64)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise InputError(f"segmentation {path} is not a readable NIfTI label map ({exc})") from exc
    arr = img.array
    if arr.shape != volume.shape:
        raise InputError(
            f"segmentation {path.name} has shape {arr.shape}, the image {volume.shape}: "
            "they must share a grid"
        )
    if not np.allclose(img.affine, volume.affine, atol=1e-2):
        raise InputError(f"segmentation {path.name} has another geometry (affine) than the image")
    if not np.allclose(arr, np.round(arr)) or arr.min() < 0:
        raise InputError(f"segmentation {path.name} is not a label map of non-negative integers")
    lab = Volume(arr.astype(np.int16), img.affine).canonical().volume.array
    ids = [int(v) for v in np.unique(lab) if v > 0]
    bad = [v for v in ids if not (1 <= v <= 26 or v > UNKNOWN_LEVEL_BASE)]
    if bad:
        raise InputError(
            f"segmentation {path.name} has labels {bad} outside the VerSe vertebra ids (1-26, 101+)"
        )
    nz = lab.shape[2] - 1
    edge = {}
    for v in ids:
        ks = np.where((lab == v).any(axis=(0, 1)))[0]
        edge[v] = bool(ks.min() == 0 or ks.max() == nz)
    conf = 1.0 if all(v <= 26 for v in ids) else 0.0
    return Bodies(lab, edge, conf, ["given"], [], "given")


def measure_vertebrae(
    canon: Volume, bodies: Bodies, config: ScreeningConfig
) -> tuple[list[RoiMeasurement], np.ndarray]:
    """Trabecular ROI and HU statistics of every labelled body (top to bottom).

    Returns the measurements and the ROIs as one label map (the bodies' ids) on the canonical
    grid. Each body is measured on its own box, so the cost does not grow with the volume.
    """
    # One pass over the label map gives every body's box (ids are >= 0 by construction).
    boxes = ndimage.find_objects(bodies.labels)
    ids = [v for v, box in enumerate(boxes, start=1) if box is not None]
    # Anatomical order: known levels by id, unknown ones (101+) by their top-to-bottom number.
    ids.sort(key=lambda v: (v > UNKNOWN_LEVEL_BASE, v))
    roi_map = np.zeros(bodies.labels.shape, dtype=np.int16)
    out: list[RoiMeasurement] = []
    axes = _spine_axes(bodies.labels, boxes, ids, canon.spacing)
    for vid in ids:
        m, roi, sub = measure_labelled_body(
            canon.array,
            bodies.labels,
            boxes[vid - 1],
            vid,
            canon.affine,
            canon.spacing,
            config,
            touches_edge=bodies.touches_edge.get(vid, False),
            axis=axes.get(vid),
        )
        out.append(m)
        roi_map[sub][roi] = vid
    return out, roi_map


def _spine_axes(
    labels: np.ndarray, boxes: list[Any], ids: list[int], spacing: tuple[float, float, float]
) -> dict[int, tuple[float, float]]:
    """The spine's direction at each body in the sagittal plane, (anterior, superior) in mm.

    From the centroids of the bodies above and below it (one side at the column's ends), so
    that a wedge-shaped (fractured) body does not tilt its own axis; at most 45 degrees.
    """
    cents = {}
    for vid in ids:
        box = boxes[vid - 1]
        _, jj, kk = np.nonzero(labels[box] == vid)
        cents[vid] = ((jj.mean() + box[1].start) * spacing[1], (kk.mean() + box[2].start) * spacing[2])
    order = sorted(cents, key=lambda v: cents[v][1])  # inferior to superior
    axes: dict[int, tuple[float, float]] = {}
    for n, vid in enumerate(order):
        below = cents[order[max(0, n - 1)]]
        above = cents[order[min(len(order) - 1, n + 1)]]
        dy, dz = above[0] - below[0], above[1] - below[1]
        if dz > 0:
            axes[vid] = (float(np.clip(dy, -dz, dz)), float(dz))
    return axes


_EXCLUDING_FLAGS = {
    "metal",
    "fracture_suspected",
    "partial_in_view",
    "empty_roi",
    "crop_off_roi",
    "bmd_out_of_range",
}
#: The DenseNets read the bone at the ROI's centre; more than this (HU) from the ROI's own
#: median and the centre is not that bone (a concave or stray mask, a bone island at the
#: centre): the value is not used. On 1701 reference-segmented synthetic vertebrae the core
#: median lay within 39 HU of the ROI's mean in 99 % (median 3.4 HU; measured against the
#: mean, checked against the median, which an island moves less); a 3-4 mm island at the
#: centre had raised one L1 by 70 mg/cm3.
CORE_ROI_MAX_HU = 50.0
#: No adult trabecular bone lies outside this range (mg/cm3); a value outside it is an error.
BMD_RANGE = (0.0, 400.0)


def classify_vertebrae(
    canon: Volume,
    measurements: list[RoiMeasurement],
    models: ModelSet,
    config: ScreeningConfig,
    level_confidence: float,
) -> list[VertebraResult]:
    """DenseNet BMD and category for each measured body.

    The scan's context (kVp, the internal fat and paraspinal muscle references) is measured
    here and kept in ``canon.meta["scan_context"]`` for the summary.
    """
    centres = [m.center_mm for m in measurements]
    context = scan_context(canon.array, canon.meta.get("kvp"))
    if config.muscle_reference:
        context = context.with_muscle(muscle_reference(canon.array, canon.affine, centres))
    canon.meta["scan_context"] = context.to_dict()
    bmd, probs = predict_bmd(canon, centres, models.classifier, models.regressor, context)
    cores = core_hu(canon, centres, models.regressor)
    out = []
    for m, b, p, h in zip(measurements, bmd, probs, cores):
        if np.isfinite(h) and abs(h - m.hu_median) > CORE_ROI_MAX_HU and "crop_off_roi" not in m.flags:
            m.flags.append("crop_off_roi")
        if not BMD_RANGE[0] <= b <= BMD_RANGE[1] and "bmd_out_of_range" not in m.flags:
            m.flags.append("bmd_out_of_range")
        excluded = bool(_EXCLUDING_FLAGS & set(m.flags)) or m.roi_voxels < config.min_roi_voxels
        out.append(
            VertebraResult(
                roi=m,
                bmd_mg_cm3=b,
                category=config.thresholds.categorize(b),
                probabilities=p,
                excluded=excluded,
                level_confidence=level_confidence,
            )
        )
    return out


def protocol_guess(meta: dict[str, Any], labels_present: list[str]) -> str:
    """ "chest" or "abdomen" from the series description, else from the levels in view."""
    text = " ".join(
        str(meta.get(k, "")) for k in ("series_description", "body_part_examined", "study_description")
    ).lower()
    if any(w in text for w in ("abdom", "pelvi", "lumbar", "l-spine", "lspine", "urogra", "kidney", "liver")):
        return "abdomen"
    if any(w in text for w in ("chest", "thorax", "lung", "thx", "pulmo", "cardiac", "heart")):
        return "chest"
    return "abdomen" if "L3" in labels_present else "chest"


#: VerSe ids of the named levels C1-L6, consecutive from head to foot (T13, 28, is not).
_LEVEL_IDS = range(name_to_id("C1"), name_to_id("L6") + 1)


def _neighbours(v: VertebraResult, usable: list[VertebraResult], radius: int) -> list[VertebraResult]:
    """The usable bodies within ``radius`` levels of ``v``, itself included."""
    vid = v.roi.label_id
    if radius <= 0 or vid not in _LEVEL_IDS:
        return [v]
    near = [u for u in usable if u.roi.label_id in _LEVEL_IDS and abs(u.roi.label_id - vid) <= radius]
    return near or [v]


def patient_result(
    vertebrae: list[VertebraResult], config: ScreeningConfig, protocol: str
) -> tuple[PatientResult, list[str]]:
    """Mean BMD over the protocol's levels (excluded ones left out and said).

    With ``config.pool_radius`` > 0 each level's value is the median over it and its usable
    neighbours, so that a single body's error (bone island, streak, ROI) does not move the
    patient value; 0 (the default) is the plain mean of the levels.
    """
    warnings: list[str] = []
    wanted = config.chest_levels if protocol == "chest" else config.abdomen_levels
    by_name = {v.label: v for v in vertebrae}
    excluded = [v.label for v in vertebrae if v.excluded]
    usable = [v for v in vertebrae if not v.excluded and v.bmd_mg_cm3 is not None]
    used = [by_name[n] for n in wanted if n in by_name and not by_name[n].excluded]
    used = [v for v in used if v.bmd_mg_cm3 is not None]
    if not used:
        # No protocol level usable: the lowest usable lumbar / T12 bodies, else any three bodies.
        named = [v for v in usable if v.roi.label_id <= 26 and v.roi.label_id >= 19]
        pool = named or usable
        used = pool[-3:]
        if used:
            warnings.append(
                f"none of the {protocol} protocol levels ({', '.join(wanted)}) could be used; "
                f"patient value from {', '.join(v.label for v in used)}"
            )
    if not used:
        return PatientResult([], None, None, None, None, excluded), [
            *warnings,
            "no vertebra usable for a patient value",
        ]
    groups = [_neighbours(v, usable, config.pool_radius) for v in used]
    bmd = float(np.mean([np.median([u.bmd_mg_cm3 for u in g]) for g in groups]))
    mean_prob = np.mean(
        [np.mean([[u.probabilities.get(c, 0.0) for c in CATEGORIES] for u in g], axis=0) for g in groups],
        axis=0,
    )
    pooled = sorted({u.label: u.roi.label_id for g in groups for u in g}.items(), key=lambda kv: kv[1])
    cls_cat = CATEGORIES[int(np.argmax(mean_prob))]
    cat = config.thresholds.categorize(bmd)
    return (
        PatientResult(
            [v.label for v in used],
            bmd,
            cat,
            cls_cat,
            cat == cls_cat,
            excluded,
            levels_pooled=[name for name, _ in pooled],
            probabilities={c: float(p) for c, p in zip(CATEGORIES, mean_prob, strict=True)},
        ),
        warnings,
    )


def _input_info(volume: Volume, path: Path, protocol: str) -> dict[str, Any]:
    m = volume.meta
    keys = (
        "study_instance_uid",
        "series_instance_uid",
        "series_description",
        "modality",
        "kvp",
        "slice_thickness",
        "convolution_kernel",
        "manufacturer",
        "contrast_bolus_agent",
        "source",
        "scan_context",
    )
    info = {k: m.get(k) for k in keys if m.get(k) not in (None, "")}
    info.update(
        {
            "path": str(path),
            "shape": list(volume.shape),
            "spacing_mm": [round(s, 4) for s in volume.spacing],
            "protocol_guess": protocol,
        }
    )
    return info


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (Path,)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def summary_dict(result: ScreeningResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "reason": result.reason,
        "osteoscreen_version": __version__,
        "input": result.input_info,
        "vertebrae": [v.to_summary() for v in result.vertebrae],
        "patient": result.patient.to_summary(),
        "warnings": result.warnings,
        "models": result.models,
        "timings_s": result.timings_s,
    }


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A scratch folder in ``out_dir``; its files replace the final ones only if all succeed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".osteoscreen-", dir=out_dir))
    try:
        yield tmp
        for f in sorted(tmp.iterdir()):
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_outputs(
    result: ScreeningResult,
    volume: Volume,
    view: CanonicalView,
    labels_canon: np.ndarray,
    rois: np.ndarray | dict[int, np.ndarray],
    out_dir: Path,
    stages: Stages,
    *,
    reports: bool = True,
) -> list[str]:
    """Write every output; returns the file names written.

    ``reports=False`` writes only the label map and summary.json (no key image, no DICOM SEG
    or SR): for evaluations, whose metrics need nothing else.
    """
    from .io.atomic import write_dataset_atomic
    from .report.keyimage import render_key_image

    written: list[str] = []
    labels_orig = view.to_original(labels_canon)
    with _staging(Path(out_dir)) as tmp:
        with stages.time("write_nifti"):
            img = nib.Nifti1Image(labels_orig.astype(np.int16), volume.affine)
            img.set_qform(volume.affine, code=1)
            img.set_sform(volume.affine, code=1)
            nib.save(img, str(tmp / "vertebrae_seg.nii.gz"))
            written.append("vertebrae_seg.nii.gz")
        if reports:
            with stages.time("write_report_png"):
                render_key_image(view.volume, labels_canon, rois, result, tmp / "report.png")
                written.append("report.png")
        dicom_ok = bool(volume.source_datasets) and not volume.meta.get("resampled_along_k")
        if volume.source_datasets and not dicom_ok:
            result.warnings.append(
                "slices were resampled to even spacing: seg.dcm and sr.dcm are not written"
            )
        if dicom_ok and result.vertebrae and reports:
            from .sr import build_seg, build_sr

            with stages.time("write_seg"):
                ids = [v.roi.label_id for v in result.vertebrae]
                seg = build_seg(
                    volume,
                    labels_orig,
                    ids,
                    algorithm_name=str(result.input_info.get("segmentation_source", "osteoscreen")),
                    algorithm_version=__version__,
                )
                write_dataset_atomic(seg, tmp / "seg.dcm")
                written.append("seg.dcm")
            with stages.time("write_sr"):
                sr = build_sr(result, volume, seg)
                write_dataset_atomic(sr, tmp / "sr.dcm")
                written.append("sr.dcm")
        result.timings_s.update(stages.timings)
        (tmp / "summary.json").write_text(json.dumps(summary_dict(result), indent=2, default=_json_default))
        written.append("summary.json")
    return written


def write_not_screenable(
    out_dir: Path, reason: str, input_path: Path, timings: dict[str, float] | None = None
) -> None:
    """summary.json with status "not_screenable" and the reason (nothing else is written)."""
    result = ScreeningResult(
        vertebrae=[],
        patient=PatientResult([], None, None, None, None),
        input_info={"path": str(input_path)},
        models={},
        timings_s=timings or {},
        status="not_screenable",
        reason=reason,
    )
    with _staging(Path(out_dir)) as tmp:
        (tmp / "summary.json").write_text(json.dumps(summary_dict(result), indent=2, default=_json_default))


def assemble_result(
    volume: Volume,
    input_path: Path,
    bodies: Bodies,
    vertebrae: list[VertebraResult],
    warnings: list[str],
    models: ModelSet,
    config: ScreeningConfig,
) -> ScreeningResult:
    """The study's result: patient value over the protocol's levels, provenance, warnings."""
    protocol = protocol_guess(volume.meta, [v.label for v in vertebrae])
    patient, pw = patient_result(vertebrae, config, protocol)
    models_info = models.describe()
    if bodies.source == "given":
        # The SR's algorithm identification names only the models that made the numbers.
        models_info = {k: v for k, v in models_info.items() if k.startswith("densenet")}
    result = ScreeningResult(
        vertebrae=vertebrae,
        patient=patient,
        input_info={
            **_input_info(volume, input_path, protocol),
            "segmentation_source": "given label map"
            if bodies.source == "given"
            else "VB-Net (coarse-to-fine)",
            "level_cues": bodies.cues,
            "level_confidence": bodies.level_confidence,
        },
        models=models_info,
        warnings=list(warnings) + bodies.warnings + pw,
    )
    ctx = volume.meta.get("scan_context") or {}
    if ctx and not ctx.get("kvp_known", True) and models.uses_context:
        result.warnings.append(
            f"tube voltage unknown (no KVP in the input): {ctx.get('kvp'):g} kVp assumed by the BMD models"
        )
    if ctx and not ctx.get("fat_reference_used", True) and models.uses_context:
        result.warnings.append(
            "no usable fat reference in the image (too little fat in the field of view): "
            "BMD read without the scan's internal calibration"
        )
    if ctx and not ctx.get("muscle_reference_used", True) and models.uses_context_channel("muscle_hu"):
        if not config.muscle_reference:
            why = "turned off (--no-muscle-reference)"
        elif ctx.get("muscle_hu") is None:
            why = "no paraspinal muscle found behind the measured bodies"
        else:
            why = (
                f"the paraspinal muscle ({ctx['muscle_hu']:g} HU) is unlike the training scans' "
                "(too dark or bright, or against the fat reference: fatty muscle?)"
            )
        result.warnings.append(f"muscle reference not used: {why}; BMD read without it")
    if bodies.level_confidence == 0.0 and bodies.source == "vbnet":
        result.warnings.append("levels unknown: values are reported per body (V1, V2, ...) for review")
    doubtful = [v for v in vertebrae if {"fracture_suspected", "central_core_roi"} & set(v.roi.flags)]
    if bodies.source == "vbnet" and len(vertebrae) >= 3 and len(doubtful) * 3 >= len(vertebrae):
        # Many flat or fragmented bodies: far more likely a segmentation failure than fractures.
        result.warnings.append(
            f"segmentation looks unreliable on this scan ({len(doubtful)} of {len(vertebrae)} bodies "
            "flat or fragmented): review the key image before using any value"
        )
    return result


def screen(
    input_path: Path,
    out_dir: Path,
    *,
    models: ModelSet | None = None,
    models_dir: Path | None = None,
    segmentation: Path | None = None,
    config: ScreeningConfig = DEFAULT_CONFIG,
    device: str = "cpu",
    kvp: float | None = None,
    reports: bool = True,
    class_cache: ClassCache | None = None,
    case_id: str | None = None,
) -> ScreeningResult:
    """Screen one study end to end and write its outputs.

    ``kvp`` gives the tube voltage where the input does not (NIfTI); a DICOM header's KVP wins.
    ``reports=False`` leaves out the key image and the DICOM SEG and SR (see ``write_outputs``).
    ``class_cache`` keeps the segmenter's class map under ``case_id`` (default: the input's
    name) for later runs (see ``segmentation.cache``).

    Raises:
        InputError: bad arguments (missing path, unreadable models or segmentation).
        NotScreenableError: the input holds no screenable CT; summary.json says why.
    """
    stages = Stages()
    input_path = Path(input_path)
    try:
        with stages.time("load"):
            volume, warnings = load_volume(input_path)
            if kvp is not None and volume.meta.get("kvp") is None:
                volume.meta["kvp"] = float(kvp)
            view = volume.canonical().compact(volume)
            canon = view.volume
        if models is None:
            with stages.time("load_models"):
                models = load_models(models_dir, device)
        with stages.time("segment"):
            if segmentation is not None:
                bodies = labels_from_file(Path(segmentation), volume, view)
            else:
                bodies = segment_vertebrae(canon, models, class_cache, case_id or input_path.name)
        with stages.time("measure"):
            measurements, rois = measure_vertebrae(canon, bodies, config)
        if not measurements:
            raise NotScreenableError("no vertebral body could be measured")
        with stages.time("classify"):
            vertebrae = classify_vertebrae(canon, measurements, models, config, bodies.level_confidence)
    except NotScreenableError as exc:
        write_not_screenable(Path(out_dir), str(exc), input_path, stages.timings)
        raise
    result = assemble_result(volume, input_path, bodies, vertebrae, warnings, models, config)
    write_outputs(result, volume, view, bodies.labels, rois, Path(out_dir), stages, reports=reports)
    return result
