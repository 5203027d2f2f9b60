"""Typed results passed between the stages and to the writers (never concatenated strings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PatientResult", "RoiMeasurement", "ScreeningResult", "VertebraResult"]


@dataclass
class RoiMeasurement:
    """The trabecular ROI of one vertebral body and its HU statistics.

    Coordinates are RAS+ millimetres; sizes are the ROI's extent along the volume's
    canonical R-L (width), A-P (depth) and S-I (height) axes.
    """

    label_id: int
    label: str
    roi_voxels: int
    body_voxels: int
    hu_mean: float
    hu_median: float
    hu_std: float
    center_mm: tuple[float, float, float]
    size_mm: tuple[float, float, float]
    roi_volume_ml: float
    flags: list[str] = field(default_factory=list)
    #: ROI mean with bone islands left out (None when none was found).
    hu_mean_without_islands: float | None = None


@dataclass
class VertebraResult:
    """Everything reported for one vertebra."""

    roi: RoiMeasurement
    bmd_mg_cm3: float | None = None
    category: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    excluded: bool = False
    level_confidence: float = 1.0

    @property
    def label(self) -> str:
        return self.roi.label

    def to_summary(self) -> dict[str, Any]:
        r = self.roi
        return {
            "label": r.label,
            "label_id": r.label_id,
            "trabecular_hu_mean": round(r.hu_mean, 2),
            "trabecular_hu_median": round(r.hu_median, 2),
            "trabecular_hu_std": round(r.hu_std, 2),
            "trabecular_hu_mean_without_islands": (
                None if r.hu_mean_without_islands is None else round(r.hu_mean_without_islands, 2)
            ),
            "roi_voxels": r.roi_voxels,
            "body_voxels": r.body_voxels,
            "roi_center_mm": [round(v, 2) for v in r.center_mm],
            "roi_size_mm": [round(v, 2) for v in r.size_mm],
            "roi_volume_ml": round(r.roi_volume_ml, 3),
            "bmd_mg_cm3": None if self.bmd_mg_cm3 is None else round(self.bmd_mg_cm3, 2),
            "category": self.category,
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
            "excluded": self.excluded,
            "level_confidence": round(self.level_confidence, 3),
            "flags": list(r.flags),
        }


@dataclass
class PatientResult:
    levels_used: list[str]
    bmd_mg_cm3: float | None
    category: str | None
    classifier_category: str | None
    agreement: bool | None
    excluded_levels: list[str] = field(default_factory=list)
    #: The bodies whose values informed the patient value (``levels_used`` and their neighbours).
    levels_pooled: list[str] = field(default_factory=list)
    #: The classifier's patient probabilities (means over the same bodies).
    probabilities: dict[str, float] = field(default_factory=dict)

    def to_summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["probabilities"] = {k: round(v, 4) for k, v in self.probabilities.items()}
        if d["bmd_mg_cm3"] is not None:
            d["bmd_mg_cm3"] = round(d["bmd_mg_cm3"], 2)
        return d


@dataclass
class ScreeningResult:
    """The whole answer for one study."""

    vertebrae: list[VertebraResult]
    patient: PatientResult
    input_info: dict[str, Any]
    models: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    status: str = "screened"
    reason: str | None = None
