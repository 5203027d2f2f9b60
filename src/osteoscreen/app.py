"""OsteoScreenApp: the MONAI Deploy application graph.

CT study loader -> VB-Net vertebra segmenter -> trabecular ROI -> DenseNet BMD / category
-> writer (DICOM SR, DICOM SEG, key image, label map, summary.json).

Runs as ``python -m osteoscreen.app -i IN -o OUT -m MODELS`` or with HOLOSCAN_INPUT_PATH,
HOLOSCAN_OUTPUT_PATH and HOLOSCAN_MODEL_PATH set (the MAP's entry, apps/map, calls it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application

from .config import DEFAULT_CONFIG
from .models import load_models
from .operators import (
    BmdDenseNetOperator,
    CTStudyLoaderOperator,
    ScreeningWriterOperator,
    TrabecularRoiOperator,
    VertebraSegmenterOperator,
)

__all__ = ["OsteoScreenApp"]

log = logging.getLogger(__name__)


class OsteoScreenApp(Application):
    """Opportunistic osteoporosis screening of one CT study."""

    name = "osteoscreen"
    description = "Vertebral trabecular BMD and osteoporosis category from routine CT"

    def __init__(self, *args, device: str = "cpu", **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.device = device
        self.writer: ScreeningWriterOperator | None = None
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        ctx = Application.init_app_context(self.argv)
        input_path = Path(ctx.input_path)
        output_path = Path(ctx.output_path)
        model_path = Path(ctx.model_path) if ctx.model_path else None
        models = load_models(model_path, self.device)
        config = DEFAULT_CONFIG
        loader = CTStudyLoaderOperator(
            self, CountCondition(self, 1), input_path=input_path, name="ct_study_loader"
        )
        segmenter = VertebraSegmenterOperator(self, models=models, name="vbnet_vertebra_segmenter")
        roi = TrabecularRoiOperator(self, config=config, name="trabecular_roi")
        bmd = BmdDenseNetOperator(self, models=models, config=config, name="densenet_bmd")
        self.writer = ScreeningWriterOperator(
            self, output_folder=output_path, models=models, config=config, name="report_writer"
        )
        self.add_flow(loader, segmenter, {("study", "study")})
        self.add_flow(segmenter, roi, {("study", "study")})
        self.add_flow(roi, bmd, {("study", "study")})
        self.add_flow(bmd, self.writer, {("study", "study")})


if __name__ == "__main__":
    OsteoScreenApp().run()
