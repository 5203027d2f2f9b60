"""DICOM writers built with highdicom: the vertebral-body SEG and the TID 1500 SR."""

from __future__ import annotations

from osteoscreen.sr.report import algorithm_identification, build_sr
from osteoscreen.sr.seg import build_seg, segment_numbers_by_label

__all__ = ["algorithm_identification", "build_seg", "build_sr", "segment_numbers_by_label"]
