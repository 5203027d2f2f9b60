"""The screening graph's operators.

Each operator receives a :class:`StudyState` on its ``study`` port, runs one stage of
:mod:`osteoscreen.pipeline` and emits the state on. A study that turns out not screenable is
passed along with its reason (no further work is done on it) and the writer records it in
summary.json, so the graph always ends with a defined outcome.

Why our own loader instead of the SDK's DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator
-> DICOMSeriesToVolumeOperator chain: the SDK loader reads every file with its pixel data
before selection (the whole study in memory), skips only files pydicom calls invalid, and
its series-to-volume step assumes even slice spacing and no gantry tilt. Our loader reads
headers first, selects by rules that rank reconstructions (thinnest soft-tissue kernel),
skips truncated files, and handles uneven gaps and tilt (osteoscreen.io.dicom).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment, Operator, OperatorSpec

from ..config import DEFAULT_CONFIG, ScreeningConfig
from ..errors import NotScreenableError
from ..io.dicom import load_volume
from ..io.volume import CanonicalView, Volume
from ..models import ModelSet
from ..pipeline import (
    Bodies,
    Stages,
    assemble_result,
    classify_vertebrae,
    measure_vertebrae,
    segment_vertebrae,
    write_not_screenable,
    write_outputs,
)
from ..results import RoiMeasurement, ScreeningResult, VertebraResult

__all__ = [
    "BmdDenseNetOperator",
    "CTStudyLoaderOperator",
    "ScreeningWriterOperator",
    "StudyState",
    "TrabecularRoiOperator",
    "VertebraSegmenterOperator",
]

log = logging.getLogger(__name__)


@dataclass
class StudyState:
    """What flows through the graph for one study."""

    input_path: Path
    stages: Stages = field(default_factory=Stages)
    volume: Volume | None = None
    view: CanonicalView | None = None
    warnings: list[str] = field(default_factory=list)
    bodies: Bodies | None = None
    measurements: list[RoiMeasurement] = field(default_factory=list)
    rois: Any = None  # ROI label map on the canonical grid
    vertebrae: list[VertebraResult] = field(default_factory=list)
    reason: str | None = None  # set when the study is not screenable

    @property
    def screenable(self) -> bool:
        return self.reason is None


class CTStudyLoaderOperator(Operator):
    """Loads the CT series to screen from a DICOM folder (or a NIfTI file).

    Named outputs:
        study: StudyState with the volume (HU, RAS affine) and its canonical view.
    """

    def __init__(self, fragment: Fragment, *args: Any, input_path: Path, **kwargs: Any) -> None:
        self.input_path = Path(input_path)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("study")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        state = StudyState(self.input_path)
        try:
            with state.stages.time("load"):
                state.volume, state.warnings = load_volume(self.input_path)
                state.view = state.volume.canonical().compact(state.volume)
        except NotScreenableError as exc:
            state.reason = str(exc)
        op_output.emit(state, "study")


class VertebraSegmenterOperator(Operator):
    """VB-Net coarse-to-fine segmentation and level labelling.

    Named inputs:
        study: StudyState with a volume.
    Named outputs:
        study: StudyState with labelled bodies.
    """

    def __init__(self, fragment: Fragment, *args: Any, models: ModelSet, **kwargs: Any) -> None:
        self.models = models
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study")
        spec.output("study")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        state: StudyState = op_input.receive("study")
        if state.screenable and state.view is not None:
            try:
                with state.stages.time("segment"):
                    state.bodies = segment_vertebrae(state.view.volume, self.models)
            except NotScreenableError as exc:
                state.reason = str(exc)
        op_output.emit(state, "study")


class TrabecularRoiOperator(Operator):
    """The 3 mm trabecular ROI of each body, with its QC flags and HU statistics.

    Named inputs:
        study: StudyState with labelled bodies.
    Named outputs:
        study: StudyState with measurements and ROI masks.
    """

    def __init__(
        self, fragment: Fragment, *args: Any, config: ScreeningConfig = DEFAULT_CONFIG, **kwargs: Any
    ) -> None:
        self.config = config
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study")
        spec.output("study")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        state: StudyState = op_input.receive("study")
        if state.screenable and state.bodies is not None and state.view is not None:
            with state.stages.time("measure"):
                state.measurements, state.rois = measure_vertebrae(
                    state.view.volume, state.bodies, self.config
                )
            if not state.measurements:
                state.reason = "no vertebral body could be measured"
        op_output.emit(state, "study")


class BmdDenseNetOperator(Operator):
    """DenseNet regressor (BMD, mg/cm3) and classifier (category) per vertebra.

    Named inputs:
        study: StudyState with measurements.
    Named outputs:
        study: StudyState with vertebra results.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        models: ModelSet,
        config: ScreeningConfig = DEFAULT_CONFIG,
        **kwargs: Any,
    ) -> None:
        self.models = models
        self.config = config
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study")
        spec.output("study")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        state: StudyState = op_input.receive("study")
        if state.screenable and state.view is not None and state.bodies is not None:
            with state.stages.time("classify"):
                state.vertebrae = classify_vertebrae(
                    state.view.volume,
                    state.measurements,
                    self.models,
                    self.config,
                    state.bodies.level_confidence,
                )
        op_output.emit(state, "study")


class ScreeningWriterOperator(Operator):
    """Writes the outputs: DICOM SR (TID 1500), DICOM SEG, key image, label map, summary.json.

    Named inputs:
        study: StudyState.
    File outputs:
        summary.json always; for a screened study also vertebrae_seg.nii.gz, report.png and,
        for DICOM input, seg.dcm and sr.dcm. Written atomically.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_folder: Path,
        models: ModelSet,
        config: ScreeningConfig = DEFAULT_CONFIG,
        **kwargs: Any,
    ) -> None:
        self.output_folder = Path(output_folder)
        self.models = models
        self.config = config
        self.result: ScreeningResult | None = None
        self.reason: str | None = None
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        state: StudyState = op_input.receive("study")
        if not state.screenable or state.volume is None or state.view is None or state.bodies is None:
            self.reason = state.reason or "not screenable"
            write_not_screenable(self.output_folder, self.reason, state.input_path, state.stages.timings)
            log.warning("not screenable: %s", self.reason)
            return
        result = assemble_result(
            state.volume,
            state.input_path,
            state.bodies,
            state.vertebrae,
            state.warnings,
            self.models,
            self.config,
        )
        write_outputs(
            result,
            state.volume,
            state.view,
            state.bodies.labels,
            state.rois,
            self.output_folder,
            state.stages,
        )
        self.result = result
