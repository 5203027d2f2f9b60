"""MONAI Label tasks over osteoscreen: infer, train (segmenter, BMD models), active learning,
scoring. The vertebra logic, networks, transforms and label registry are osteoscreen's own
(``osteoscreen.labeling``); this module only adapts them to MONAI Label's interfaces."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

from osteoscreen.errors import InputError
from osteoscreen.labeling import (
    VERSION_FILE,
    LabelledCase,
    finetune_segmenter,
    label_study,
    latest_version,
    read_bmd_reference,
    retrain_bmd_models,
    tta_uncertainty,
    vertebra_label_names,
)
from osteoscreen.labels import colour_of
from osteoscreen.models import ModelSet, load_models

from .errors import BadRequest

log = logging.getLogger(__name__)

MODEL_NAME = "osteoscreen_vertebrae"


class ModelRegistry:
    """Which models folder is current: the newest version in the store, else the shipped one."""

    def __init__(self, shipped: Path, store: Path, device: str = "cpu"):
        self.shipped = Path(shipped)
        self.store = Path(store)
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[Path, ModelSet] | None = None

    def current_dir(self) -> Path:
        return latest_version(self.store) or self.shipped

    def version(self) -> str:
        d = self.current_dir()
        if (d / VERSION_FILE).is_file():
            return str(json.loads((d / VERSION_FILE).read_text()).get("version"))
        return "shipped"

    def get(self) -> ModelSet:
        d = self.current_dir()
        with self._lock:
            if self._loaded is None or self._loaded[0] != d:
                self._loaded = (d, load_models(d, self.device))
            return self._loaded[1]

    def versions(self) -> list[str]:
        if not self.store.is_dir():
            return []
        return sorted(p.name for p in self.store.iterdir() if (p / VERSION_FILE).is_file())


def _to_nifti(path: Path, work: Path) -> Path:
    """A label file as NIfTI (DICOM SEG conversions arrive as NRRD)."""
    path = Path(path)
    if path.name.endswith((".nii", ".nii.gz")):
        return path
    import SimpleITK as sitk

    fd, name = tempfile.mkstemp(suffix=".nii.gz", dir=work)
    os.close(fd)
    out = Path(name)
    sitk.WriteImage(sitk.ReadImage(str(path)), str(out))
    return out


class VertebraBodies(InferTask):
    """Vertebral bodies with their levels (VerSe ids), and each body's trabecular HU and BMD."""

    def __init__(self, models: ModelRegistry, work: Path):
        names = vertebra_label_names()
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=names,
            dimension=3,
            description="Vertebral bodies with levels (VerSe ids): osteoscreen's coarse-to-fine VB-Net, "
            "level rules (last rib, sacrum) and trabecular BMD per body",
            config={"kvp": ""},
        )
        self.models = models
        self.work = Path(work)
        self.label_colors = {n: list(colour_of(v)) for n, v in names.items()}

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["label_colors"] = self.label_colors
        d["model_version"] = self.models.version()
        return d

    def is_valid(self) -> bool:
        return (self.models.current_dir() / "vbnet_fine" / "models" / "model.ts").is_file()

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        kvp = request.get("kvp")
        try:
            kvp_value = float(kvp) if kvp not in (None, "") else None
        except (TypeError, ValueError):
            raise BadRequest(f"kvp must be a number, got {kvp!r}") from None
        self.work.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="infer-", dir=self.work))
        try:
            label, summary = label_study(Path(request["image"]), self.models.get(), out, kvp=kvp_value)
            if label is None:
                raise MONAILabelException(
                    MONAILabelError.INVALID_INPUT, f"not screenable: {summary.get('reason')}"
                )
            # The endpoint deletes the result file after sending it: move it out of our folder.
            fd, name = tempfile.mkstemp(suffix=".nii.gz", dir=self.work)
            os.close(fd)
            final = Path(name)
            shutil.move(str(label), final)
        except InputError as exc:
            raise BadRequest(str(exc)) from exc
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return str(final), {
            "label_names": vertebra_label_names(),
            "model_version": self.models.version(),
            "osteoscreen": summary,
        }


def final_label(datastore: Datastore, image_id: str) -> Path | None:
    """The saved (final) label file of a study, or None.

    A DICOMweb datastore keeps a local copy of every label saved through it; its own
    get_label_uri expects the DICOM SEG's series id instead, so the copy is looked up first and
    the SEG (saved elsewhere) fetched only where there is none.
    """
    from monailabel.datastore.dicom import DICOMWebDatastore
    from monailabel.datastore.local import LocalDatastore

    if isinstance(datastore, DICOMWebDatastore):
        uri = LocalDatastore.get_label_uri(datastore, image_id, DefaultLabelTag.FINAL)
        if not uri or not Path(uri).is_file():
            seg = datastore.get_label_info(image_id, DefaultLabelTag.FINAL).get("SeriesInstanceUID")
            uri = datastore.get_label_uri(seg, DefaultLabelTag.FINAL, image_id=image_id) if seg else ""
    else:
        uri = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL)
    return Path(uri) if uri and Path(uri).is_file() else None


def _labelled_cases(datastore: Datastore, work: Path) -> list[LabelledCase]:
    cases = []
    for i, d in enumerate(datastore.datalist()):
        image, label = Path(d["image"]), Path(d["label"])
        cases.append(LabelledCase(f"study{i:03d}", image, _to_nifti(label, work)))
    return cases


class SegmenterTraining(TrainTask):
    """Fine-tunes the VB-Net from the saved (final) labels plus replayed synthetic cases."""

    def __init__(self, models: ModelRegistry, work: Path, replay: Any):
        super().__init__(
            "Fine-tune osteoscreen's VB-Net on the corrected vertebral bodies (with synthetic replay); "
            "writes a new models version that `osteoscreen run --models` takes"
        )
        self.models = models
        self.work = Path(work)
        self.replay = replay

    def config(self) -> dict[str, Any]:
        return {"max_iterations": 200, "stage": "fine", "n_replay": 8, "seed": 0}

    def stats(self) -> dict[str, Any]:
        return {"current": self.models.version(), "versions": self.models.versions()}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        self.work.mkdir(parents=True, exist_ok=True)
        cases = _labelled_cases(datastore, self.work)
        n_replay = int(request.get("n_replay", 8))
        version = finetune_segmenter(
            cases,
            self.models.current_dir(),
            self.models.store,
            models=self.models.get(),
            iterations=int(request.get("max_iterations", 200)),
            stage=str(request.get("stage", "fine")),
            replay=self.replay(n_replay) if n_replay > 0 else None,
            n_replay=n_replay,
            seed=int(request.get("seed", 0)),
            progress=False,
        )
        return {"model_version": version.name, "models_dir": str(version), "labelled_studies": len(cases)}


class BmdTraining(TrainTask):
    """Retrains the DenseNet regressor and classifier from reference (QCT) BMD values."""

    def __init__(self, models: ModelRegistry, work: Path, replay: Any, reference_csv: str | None):
        super().__init__(
            "Retrain the BMD DenseNets from a CSV of reference BMD (QCT) per vertebra for datastore "
            "studies (columns: image, bmd_L1, bmd_L2, ...; optional kvp)"
        )
        self.models = models
        self.work = Path(work)
        self.replay = replay
        self.reference_csv = reference_csv

    def config(self) -> dict[str, Any]:
        return {"reference_csv": self.reference_csv or "", "max_iterations": 200, "n_replay": 20, "seed": 0}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        csv_path = request.get("reference_csv") or self.reference_csv
        if not csv_path:
            raise BadRequest("no reference BMD CSV: pass reference_csv (conf or request)")
        refs = read_bmd_reference(Path(csv_path))
        known = set(datastore.list_images())
        unknown = sorted(set(refs) - known)
        if unknown:
            raise BadRequest(f"reference CSV names studies not in the datastore: {unknown[:5]}")
        self.work.mkdir(parents=True, exist_ok=True)
        models = self.models.get()
        cases = []
        for image_id, ref in refs.items():
            image = Path(datastore.get_image_uri(image_id))
            saved = final_label(datastore, image_id)
            if saved is not None:
                label = _to_nifti(saved, self.work)
            else:
                # No corrected label: the segmenter's bodies name the vertebrae.
                out = Path(tempfile.mkdtemp(prefix="bmd-seg-", dir=self.work))
                found, _ = label_study(image, models, out, kvp=ref["kvp"])
                if found is None:
                    log.warning("%s: not screenable, skipped", image_id)
                    continue
                label = found
            cases.append(LabelledCase(image_id.replace(".", "_"), image, label, ref["bmd"], ref["kvp"]))
        n_replay = int(request.get("n_replay", 20))
        version = retrain_bmd_models(
            cases,
            self.models.current_dir(),
            self.models.store,
            iterations=int(request.get("max_iterations", 200)),
            replay=self.replay(n_replay) if n_replay > 0 else None,
            n_replay=n_replay,
            seed=int(request.get("seed", 0)),
            progress=False,
        )
        return {"model_version": version.name, "models_dir": str(version), "reference_studies": len(cases)}


def _forget_labelled_cache(datastore: Datastore) -> None:
    """Drop MONAI Label's cached list of labelled studies (DICOMweb: kept for
    MONAI_LABEL_DICOMWEB_CACHE_EXPIRY seconds), so that a label saved a moment ago counts and
    the study just corrected is not offered again."""
    for cls in type(datastore).__mro__:
        clear = getattr(cls.__dict__.get("get_labeled_images"), "cache_clear", None)
        if callable(clear):
            clear()


class UncertaintyStrategy(Strategy):
    """The unlabelled study the segmenter is least sure about (test-time-augmentation
    disagreement per vertebra, plus level uncertainty); scores are cached per model version."""

    def __init__(self, models: ModelRegistry, work: Path, max_new: int = 4):
        super().__init__(
            "Next study by segmenter uncertainty: test-time augmentation (mirror, noise) disagreement "
            "per vertebra plus level uncertainty"
        )
        self.models = models
        self.work = Path(work)
        self.max_new = max_new

    def _cache(self) -> Path:
        return self.work / "uncertainty.json"

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        _forget_labelled_cache(datastore)
        images = sorted(datastore.get_unlabeled_images())
        if not images:
            return {}
        version = self.models.version()
        cache: dict[str, Any] = {}
        if self._cache().is_file():
            cache = json.loads(self._cache().read_text())
        scored = cache.get(version, {})
        todo = [i for i in images if i not in scored][: int(request.get("max_new", self.max_new))]
        for image_id in todo:
            scored[image_id] = tta_uncertainty(Path(datastore.get_image_uri(image_id)), self.models.get())
        cache[version] = scored
        self.work.mkdir(parents=True, exist_ok=True)
        self._cache().write_text(json.dumps(cache, indent=1))
        ranked = sorted((i for i in images if i in scored), key=lambda i: -scored[i]["score"])
        best = ranked[0]
        return {
            "id": best,
            "score": scored[best]["score"],
            "uncertainty": scored[best],
            "ranking": [{"id": i, "score": scored[i]["score"]} for i in ranked],
            "unscored": len(images) - len(ranked),
        }


class BmdScoring(ScoringMethod):
    """Per-vertebra trabecular HU, BMD and category of labelled studies, measured on the saved
    (final) label, so an annotator sees what a correction changes."""

    def __init__(self, models: ModelRegistry, work: Path):
        super().__init__("Trabecular HU and BMD per vertebra, measured on the saved label")
        self.models = models
        self.work = Path(work)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        wanted = request.get("image")
        images = [wanted] if wanted else datastore.get_labeled_images()
        if wanted and wanted not in datastore.list_images():
            raise BadRequest(f"unknown image id {wanted!r}")
        self.work.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {}
        for image_id in images:
            saved = final_label(datastore, image_id)
            if saved is None:
                out[image_id] = {"status": "no saved label"}
                continue
            tmp = Path(tempfile.mkdtemp(prefix="score-", dir=self.work))
            try:
                label = _to_nifti(saved, self.work)
                _, summary = label_study(
                    Path(datastore.get_image_uri(image_id)), self.models.get(), tmp, segmentation=label
                )
            except InputError as exc:
                summary = {"status": "error", "reason": str(exc)}
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            out[image_id] = summary
            try:
                datastore.update_image_info(image_id, {"osteoscreen": summary})
            except Exception as exc:  # a remote datastore may not keep image info
                log.debug("image info not stored for %s: %s", image_id, exc)
        return out
