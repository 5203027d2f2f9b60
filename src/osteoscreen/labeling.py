"""What the MONAI Label app (apps/monailabel) asks of osteoscreen, with no MONAI Label import.

- :func:`label_study`: the screening pipeline on one image, its vertebral-body label map (VerSe
  ids, the input's grid) and the per-vertebra HU / BMD an annotator sees;
- :func:`tta_uncertainty`: disagreement of the VB-Net with itself under test-time
  augmentation, per vertebra, for active learning;
- :func:`finetune_segmenter` and :func:`retrain_bmd_models`: new model versions from corrected
  labels (plus synthetic cases, so a few corrections do not make the models forget) and from
  reference (QCT) BMD values, written as complete models folders that ``osteoscreen run
  --models`` takes as they are.

A model store is a folder of versions ``v001``, ``v002``, ... each a full models folder with a
``MODEL_VERSION.json`` saying where it came from.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .config import DEFAULT_CONFIG, ScreeningConfig
from .errors import InputError, NotScreenableError
from .io.dicom import load_volume
from .io.volume import Volume, read_nifti
from .labels import UNKNOWN_LEVEL_BASE, SegClass, id_to_name
from .models import MODEL_NAMES, ModelSet
from .pipeline import screen
from .segmentation.inference import segment_classes
from .segmentation.levels import assign_levels, find_bodies

__all__ = [
    "VERSION_FILE",
    "LabelledCase",
    "classes_from_correction",
    "dicom_kvp_near",
    "finetune_segmenter",
    "label_study",
    "latest_version",
    "new_model_version",
    "read_bmd_reference",
    "retrain_bmd_models",
    "tta_uncertainty",
    "validate_label_file",
    "vertebra_label_names",
]

log = logging.getLogger(__name__)

VERSION_FILE = "MODEL_VERSION.json"


def vertebra_label_names(unknown_levels: int = 12) -> dict[str, int]:
    """Label name -> value of every id a vertebra label map may hold: C1 ... L6 and S1 by level,
    then V1, V2, ... (101, 102, ...) for bodies whose level is unknown."""
    out = {}
    for vid in range(1, 29):
        try:
            out[id_to_name(vid)] = vid
        except ValueError:
            continue
    for k in range(1, unknown_levels + 1):
        out[id_to_name(UNKNOWN_LEVEL_BASE + k)] = UNKNOWN_LEVEL_BASE + k
    return out


def dicom_kvp_near(image: Path) -> float | None:
    """The tube voltage of the DICOM series a converted image came from, where one lies beside it.

    MONAI Label's DICOMweb datastore keeps ``<series>/`` (the DICOM files) next to
    ``<series>.nii.gz`` (its conversion), and the NIfTI has no KVP.
    """
    import pydicom

    image = Path(image)
    name = image.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            folder = image.parent / name[: -len(ext)]
            break
    else:
        return None
    if not folder.is_dir():
        return None
    for f in sorted(folder.iterdir())[:5]:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["KVP"])
        except Exception:  # not DICOM: look at the next file
            continue
        if "KVP" in ds and ds.KVP not in (None, ""):
            try:
                return float(ds.KVP)
            except (TypeError, ValueError):
                return None
    return None


def _compact_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The parts of summary.json an annotator reads next to the label."""
    verts = []
    keys = (
        "label",
        "label_id",
        "trabecular_hu_mean",
        "trabecular_hu_median",
        "roi_volume_ml",
        "bmd_mg_cm3",
        "category",
        "excluded",
        "flags",
    )
    for v in summary.get("vertebrae", []):
        verts.append({k: v.get(k) for k in keys})
    inp = summary.get("input", {})
    return {
        "status": summary.get("status"),
        "reason": summary.get("reason"),
        "vertebrae": verts,
        "patient": summary.get("patient"),
        "level_confidence": inp.get("level_confidence"),
        "level_cues": inp.get("level_cues"),
        "scan_context": inp.get("scan_context"),
        "warnings": summary.get("warnings", []),
    }


def label_study(
    image: Path,
    models: ModelSet,
    out_dir: Path,
    *,
    segmentation: Path | None = None,
    kvp: float | None = None,
    config: ScreeningConfig = DEFAULT_CONFIG,
) -> tuple[Path | None, dict[str, Any]]:
    """Screen ``image`` into ``out_dir``; the label map (None if not screenable) and a summary.

    With ``segmentation`` (an annotator's label map) the bodies are that map's, so the values
    show the effect of a correction. ``kvp`` defaults to the header of a DICOM series beside a
    converted image (:func:`dicom_kvp_near`).
    """
    out_dir = Path(out_dir)
    if kvp is None:
        kvp = dicom_kvp_near(Path(image))
    with contextlib.suppress(NotScreenableError):
        screen(Path(image), out_dir, models=models, segmentation=segmentation, config=config, kvp=kvp)
    summary = json.loads((out_dir / "summary.json").read_text())
    label = out_dir / "vertebrae_seg.nii.gz"
    return (label if label.is_file() and segmentation is None else None), _compact_summary(summary)


def _load_canonical_ct(image: Path, kvp: float | None = None) -> Volume:
    volume, _ = load_volume(Path(image))
    if kvp is not None and volume.meta.get("kvp") is None:
        volume.meta["kvp"] = float(kvp)
    return volume.canonical().volume


def _body_dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / s


def tta_uncertainty(
    image: Path, models: ModelSet, *, seed: int = 0, noise_hu: float = 25.0
) -> dict[str, Any]:
    """How much the segmenter disagrees with itself on ``image`` (0 = not at all).

    Test-time augmentation: the canonical volume as it is, mirrored left-right, and with added
    noise (``noise_hu`` SD). For each body the segmenter finds, its disagreement is 1 minus the
    mean Dice of the augmented body masks with the plain one inside the body's box (2 voxels
    wider). The study's score is the mean disagreement plus half the level uncertainty (1 -
    level confidence), since a wrong level is as costly as a wrong outline.
    """
    canon = _load_canonical_ct(image)
    try:
        base = segment_classes(canon, models.coarse, models.fine).classes
    except NotScreenableError as exc:
        return {"score": 1.5, "vertebrae": {}, "level_confidence": 0.0, "reason": str(exc)}
    inst, bodies = find_bodies(base, canon.spacing)
    if not bodies:
        return {"score": 1.5, "vertebrae": {}, "level_confidence": 0.0, "reason": "no vertebral body found"}
    levels = assign_levels(base, bodies, canon.spacing)
    rng = np.random.default_rng(seed)
    variants: list[np.ndarray | None] = []
    mirrored = Volume(np.ascontiguousarray(canon.array[::-1]), canon.affine)
    noisy = Volume((canon.array + rng.normal(0.0, noise_hu, canon.shape)).astype(np.float32), canon.affine)
    for vol, flip in ((mirrored, True), (noisy, False)):
        try:
            cls = segment_classes(vol, models.coarse, models.fine).classes
            variants.append(np.ascontiguousarray(cls[::-1]) if flip else cls)
        except NotScreenableError:
            variants.append(None)
    from scipy import ndimage

    boxes = ndimage.find_objects(inst)
    per: dict[str, float] = {}
    for b in bodies:
        box = boxes[b.mask_label - 1]
        if box is None:
            continue
        box = tuple(slice(max(0, s.start - 2), min(n, s.stop + 2)) for s, n in zip(box, inst.shape))
        own = inst[box] == b.mask_label
        dices = []
        for v in variants:
            if v is None:
                dices.append(0.0)
                continue
            other = (v[box] == SegClass.BODY) & ((inst[box] == 0) | own)
            dices.append(_body_dice(own, other))
        vid = levels.ids.get(b.mask_label, UNKNOWN_LEVEL_BASE + b.index)
        per[id_to_name(int(vid))] = round(1.0 - float(np.mean(dices)), 4)
    mean = float(np.mean(list(per.values()))) if per else 1.0
    return {
        "score": round(mean + 0.5 * (1.0 - float(levels.confidence)), 4),
        "mean_disagreement": round(mean, 4),
        "vertebrae": per,
        "level_confidence": float(levels.confidence),
        "augmentations": ["identity", "mirror_lr", f"noise_{noise_hu:g}hu"],
    }


def _read_label_on(image: Volume, label: Path) -> np.ndarray:
    """A label map on ``image``'s (original) grid as int16 VerSe ids.

    Raises:
        InputError: unreadable, another grid, or values that are no vertebra ids.
    """
    try:
        lab = read_nifti(label, dtype=np.float64)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise InputError(f"label {label} is not a readable NIfTI ({exc})") from exc
    arr = np.squeeze(lab.array)
    if arr.shape != image.shape:
        raise InputError(f"label {Path(label).name} has shape {arr.shape}, its image {image.shape}")
    if not np.allclose(arr, np.round(arr)) or arr.min() < 0:
        raise InputError(f"label {Path(label).name} is not a map of non-negative integers")
    ids = np.unique(arr).astype(int)
    bad = [int(v) for v in ids if v and not (1 <= v <= 26 or v > UNKNOWN_LEVEL_BASE)]
    if bad:
        raise InputError(
            f"label {Path(label).name} holds values {bad} that are not vertebra ids (1-26, 101+)"
        )
    return arr.astype(np.int16)


def _image_shape(image: Path) -> tuple[int, ...]:
    image = Path(image)
    if image.is_file() and image.name.endswith((".nii", ".nii.gz")):
        return tuple(int(n) for n in nib.load(str(image)).shape[:3])  # type: ignore[attr-defined]
    volume, _ = load_volume(image)
    return volume.shape


def validate_label_file(label: Path, image: Path) -> None:
    """Check that ``label`` is a vertebra label map (NIfTI, or raw uint8 ``.bin`` as OHIF sends)
    on ``image``'s voxel grid.

    Raises:
        ValueError: the one-line reason it is not.
    """
    label = Path(label)
    shape = _image_shape(Path(image))
    if label.name.endswith(".bin"):
        n = label.stat().st_size
        if n != int(np.prod(shape)):
            raise ValueError(f"a raw label has {n} bytes, its image {int(np.prod(shape))} voxels {shape}")
        return
    try:
        arr = np.asanyarray(nib.load(str(label)).dataobj)  # type: ignore[attr-defined]
    except Exception as exc:  # nibabel raises many kinds on a damaged or foreign file
        raise ValueError(f"not a readable NIfTI label map ({type(exc).__name__}: {exc})") from None
    arr = np.squeeze(arr)
    if arr.shape != shape:
        raise ValueError(f"label shape {arr.shape} differs from its image's {shape}")
    if not np.issubdtype(arr.dtype, np.integer) and not np.allclose(arr, np.round(arr)):
        raise ValueError("label values are not integers")
    ids = [int(v) for v in np.unique(arr) if v]
    bad = [v for v in ids if not (1 <= v <= 26 or v > UNKNOWN_LEVEL_BASE)]
    if bad:
        raise ValueError(f"label values {bad[:8]} are not vertebra ids (1-26 by level, 101+ unknown level)")


def classes_from_correction(
    image: Path, label: Path, models: ModelSet | None
) -> tuple[Volume, np.ndarray, np.ndarray]:
    """Segmenter targets from an annotator's body labels.

    The annotator draws vertebral bodies; the segmenter also learns discs, posterior elements,
    ribs and sacrum. So the targets are the current model's classes (pseudo-labels) where the
    annotator drew nothing, its bodies that the annotator removed as background, and the drawn
    bodies as BODY. Without models, everything but the drawn bodies is background.

    Returns:
        (canonical image, canonical tissue classes uint8, canonical body ids int16)
    """
    volume, _ = load_volume(Path(image))
    ids = _read_label_on(volume, Path(label))
    view = volume.canonical()
    canon = view.volume
    ids_c = Volume(ids, volume.affine).canonical().volume.array.astype(np.int16)
    classes = np.zeros(canon.shape, dtype=np.uint8)
    if models is not None:
        try:
            classes = segment_classes(canon, models.coarse, models.fine).classes.astype(np.uint8)
        except NotScreenableError:
            log.info("%s: the segmenter finds no spine; targets are the drawn bodies only", image)
    classes[classes == SegClass.BODY] = SegClass.BACKGROUND
    classes[ids_c > 0] = SegClass.BODY
    return canon, classes, ids_c


# ----------------------------------------------------------------------------- model versions


def latest_version(store: Path) -> Path | None:
    """The newest complete version in a model store (``vNNN`` with MODEL_VERSION.json), or None."""
    store = Path(store)
    if not store.is_dir():
        return None
    done = sorted(
        (p for p in store.iterdir() if p.is_dir() and p.name[1:].isdigit() and (p / VERSION_FILE).is_file()),
        key=lambda p: int(p.name[1:]),
    )
    return done[-1] if done else None


def new_model_version(base: Path, store: Path, replaced: dict[str, Path], provenance: dict[str, Any]) -> Path:
    """A new complete models folder ``store/vNNN``: ``base`` with some bundles replaced.

    Only a bundle's ``configs/``, ``models/`` and ``history.json`` are taken (no checkpoints).
    The folder appears whole or not at all.
    """
    base, store = Path(base), Path(store)
    store.mkdir(parents=True, exist_ok=True)
    last = latest_version(store)
    number = int(last.name[1:]) + 1 if last else 1
    tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=store))
    try:
        for name in MODEL_NAMES:
            src = Path(replaced.get(name, base / name))
            dst = tmp / name
            for part in ("configs", "models"):
                shutil.copytree(src / part, dst / part)
            if (src / "history.json").is_file():
                shutil.copy2(src / "history.json", dst / "history.json")
        for f in base.glob("*.json"):
            if f.name != VERSION_FILE:
                shutil.copy2(f, tmp / f.name)
        info = {
            "version": f"v{number:03d}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "parent": str(base),
            "parent_version": json.loads((base / VERSION_FILE).read_text()).get("version")
            if (base / VERSION_FILE).is_file()
            else "shipped",
            "retrained": sorted(replaced),
            **provenance,
        }
        (tmp / VERSION_FILE).write_text(json.dumps(info, indent=2))
        final = store / f"v{number:03d}"
        os.replace(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class LabelledCase:
    """One study with an annotator's label map (and, for the BMD models, reference values)."""

    case_id: str
    image: Path
    label: Path
    bmd: dict[str, float] | None = None
    kvp: float | None = None


def _replay_rows(replay: Path | None, n: int, need: str) -> list[dict[str, str]]:
    """Up to ``n`` rows of a synthetic cohort that have column ``need``, paths made absolute."""
    if replay is None or n <= 0:
        return []
    replay = Path(replay)
    if not replay.is_file():
        raise InputError(f"replay cohort not found: {replay}")
    out = []
    with open(replay, newline="") as fh:
        for r in csv.DictReader(fh):
            if not (r.get(need) or "").strip():
                continue
            for key in ("image", "label", "classes"):
                v = (r.get(key) or "").strip()
                if v and not Path(v).is_absolute():
                    r[key] = str((replay.parent / v).resolve())
            r["case_id"] = f"replay_{r['case_id']}"
            out.append(r)
            if len(out) >= n:
                break
    return out


def _write_cohort(path: Path, rows: list[dict[str, Any]]) -> Path:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in cols})
    return path


def finetune_segmenter(
    cases: list[LabelledCase],
    base: Path,
    store: Path,
    *,
    models: ModelSet | None = None,
    iterations: int = 200,
    stage: str = "fine",
    replay: Path | None = None,
    n_replay: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Fine-tune the VB-Net from corrected labels; returns the new version's folder.

    Each corrected study becomes a training case (:func:`classes_from_correction`); ``n_replay``
    cases of a synthetic cohort (``replay``, a cohort.csv with tissue classes) join them.

    Raises:
        InputError: no usable case, or a bad label or replay cohort.
    """
    from .training.segmenter import train_segmenter

    if not cases:
        raise InputError("no labelled study to train on: save a corrected label first")
    Path(store).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".train-segmenter-", dir=Path(store).parent))
    try:
        rows: list[dict[str, Any]] = []
        for c in cases:
            canon, classes, ids = classes_from_correction(c.image, c.label, models)
            img_path = work / f"{c.case_id}_image.nii.gz"
            cls_path = work / f"{c.case_id}_classes.nii.gz"
            lab_path = work / f"{c.case_id}_label.nii.gz"
            nib.save(
                nib.Nifti1Image(np.clip(canon.array, -1024, 3071).astype(np.int16), canon.affine), img_path
            )
            nib.save(nib.Nifti1Image(classes, canon.affine), cls_path)
            nib.save(nib.Nifti1Image(ids, canon.affine), lab_path)
            rows.append(
                {
                    "case_id": c.case_id,
                    "image": str(img_path),
                    "label": str(lab_path),
                    "classes": str(cls_path),
                }
            )
        rows += _replay_rows(replay, n_replay, "classes")
        if len(rows) < 2:
            raise InputError("fine-tuning needs at least 2 cases (one for validation): add a replay cohort")
        cohort = _write_cohort(work / "cohort.csv", rows)
        train_segmenter(
            cohort,
            work / "train",
            stage=stage,
            iterations=iterations,
            seed=seed,
            resume=False,
            progress=progress,
            init_from=base,
        )
        trained = {
            n: work / "train" / n
            for n in ("vbnet_coarse", "vbnet_fine")
            if (work / "train" / n / "models").is_dir()
        }
        return new_model_version(
            base,
            store,
            trained,
            {
                "task": "segmenter fine-tuning",
                "iterations": iterations,
                "stage": stage,
                "labelled_studies": [c.case_id for c in cases],
                "replay_cases": len(rows) - len(cases),
                "replay_cohort": str(replay) if replay else None,
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_bmd_reference(path: Path) -> dict[str, dict[str, Any]]:
    """A reference BMD CSV: column ``image`` (a datastore image id) and ``bmd_<LEVEL>`` columns
    (mg/cm3, e.g. bmd_L1), optionally ``kvp``.

    Raises:
        InputError: missing file or columns, or a value that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"reference BMD file not found: {path}")
    out: dict[str, dict[str, Any]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        levels = [c[4:] for c in cols if c.startswith("bmd_")]
        if "image" not in cols or not levels:
            raise InputError(f"{path.name}: needs an 'image' column and bmd_<LEVEL> columns (got {cols})")
        for bad in [lv for lv in levels if lv not in vertebra_label_names()]:
            raise InputError(f"{path.name}: column bmd_{bad} names no vertebra")
        for n, r in enumerate(reader, start=2):
            bmd = {}
            for lv in levels:
                v = (r.get(f"bmd_{lv}") or "").strip()
                if v:
                    try:
                        bmd[lv] = float(v)
                    except ValueError:
                        raise InputError(f"{path.name} line {n}: bmd_{lv} = {v!r} is not a number") from None
            kvp = (r.get("kvp") or "").strip()
            out[r["image"].strip()] = {"bmd": bmd, "kvp": float(kvp) if kvp else None}
    return out


def retrain_bmd_models(
    cases: list[LabelledCase],
    base: Path,
    store: Path,
    *,
    iterations: int = 200,
    tasks: tuple[str, ...] = ("regressor", "classifier"),
    replay: Path | None = None,
    n_replay: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Fine-tune the DenseNets on studies with reference BMD per vertebra; the new version.

    Each case needs a label map naming its vertebrae (the annotator's, or the segmenter's) and
    reference values for some of them.
    """
    from .training.common import ensemble_size
    from .training.densenet import train_densenet
    from .training.ensemble import build_ensemble

    cases = [c for c in cases if c.bmd]
    if not cases:
        raise InputError("no study with reference BMD values and a label map to train on")
    Path(store).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".train-bmd-", dir=Path(store).parent))
    try:
        rows: list[dict[str, Any]] = []
        for c in cases:
            volume, _ = load_volume(Path(c.image))
            ids = _read_label_on(volume, Path(c.label))
            present = {id_to_name(int(v)) for v in np.unique(ids) if 0 < v <= 26}
            bmd = {lv: b for lv, b in (c.bmd or {}).items() if lv in present}
            if not bmd:
                log.warning("%s: none of its reference levels is in its label map; skipped", c.case_id)
                continue
            # The DenseNets read canonical NIfTI: write the study as one (DICOM folders too).
            img_path = work / f"{c.case_id}_image.nii.gz"
            lab_path = work / f"{c.case_id}_label.nii.gz"
            nib.save(nib.Nifti1Image(volume.array.astype(np.float32), volume.affine), img_path)
            nib.save(nib.Nifti1Image(ids, volume.affine), lab_path)
            kvp = c.kvp if c.kvp is not None else volume.meta.get("kvp") or dicom_kvp_near(Path(c.image))
            rows.append(
                {
                    "case_id": c.case_id,
                    "image": str(img_path),
                    "label": str(lab_path),
                    "kvp": "" if kvp is None else f"{float(kvp):g}",
                    **{f"bmd_{lv}": f"{b:g}" for lv, b in bmd.items()},
                }
            )
        if not rows:
            raise InputError("no study's label map holds a level with a reference BMD value")
        rows += _replay_rows(replay, n_replay, "label")
        if len(rows) < 2:
            raise InputError("retraining needs at least 2 studies (one for validation): add a replay cohort")
        cohort = _write_cohort(work / "cohort.csv", rows)
        trained = {}
        for task in tasks:
            name = f"densenet_{task}"
            # An ensemble (the shipped regressor) stays one: each member is fine-tuned from
            # itself, on one validation split, and the new version holds their mean.
            members = []
            for k in range(ensemble_size(Path(base) / name)):
                train_densenet(
                    task,
                    cohort,
                    work / f"train{k}",
                    iterations=iterations,
                    seed=seed + k,
                    split_seed=seed,
                    resume=False,
                    progress=progress,
                    init_from=base,
                    init_member=k,
                )
                members.append(work / f"train{k}" / name)
            if len(members) > 1:
                build_ensemble(
                    members, work / "ensemble" / name, cohort=cohort, cache=work / "train0" / "cache"
                )
                trained[name] = work / "ensemble" / name
            else:
                trained[name] = members[0]
        return new_model_version(
            base,
            store,
            trained,
            {
                "task": "BMD model retraining",
                "iterations": iterations,
                "reference_studies": [r["case_id"] for r in rows if not r["case_id"].startswith("replay_")],
                "replay_cases": sum(1 for r in rows if r["case_id"].startswith("replay_")),
                "replay_cohort": str(replay) if replay else None,
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
