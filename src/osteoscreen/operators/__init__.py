"""MONAI Deploy operators: named ports and a thin compute() around the pipeline's functions.

Importing this package imports the MONAI Deploy App SDK (and holoscan); the CLI does not.
"""

from __future__ import annotations

from .screening import (
    BmdDenseNetOperator,
    CTStudyLoaderOperator,
    ScreeningWriterOperator,
    StudyState,
    TrabecularRoiOperator,
    VertebraSegmenterOperator,
)

__all__ = [
    "BmdDenseNetOperator",
    "CTStudyLoaderOperator",
    "ScreeningWriterOperator",
    "StudyState",
    "TrabecularRoiOperator",
    "VertebraSegmenterOperator",
]
