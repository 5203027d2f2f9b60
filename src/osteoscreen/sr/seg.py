"""DICOM Segmentation (SEG) of the vertebral bodies, built with highdicom.

One BINARY segment per vertebral body, labelled with its level name ("L1"), coded as
Tissue / Bone with the vertebra as anatomic region, and coloured as in :mod:`labels`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.uid import generate_uid

from osteoscreen import __version__, codes
from osteoscreen.io.volume import Volume
from osteoscreen.labels import colour_of, id_to_name

__all__ = ["build_seg", "segment_numbers_by_label"]

logger = logging.getLogger(__name__)


def build_seg(
    volume: Volume,
    labels_ijk: np.ndarray,
    label_ids: Sequence[int],
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_number: int = 901,
    manufacturer: str = "osteoscreen",
) -> hd.seg.Segmentation:
    """Build a BINARY DICOM SEG with one segment per vertebral body.

    Segment ``n`` (1-based) is ``label_ids[n - 1]``. Only frames that contain a segment are
    stored (highdicom's ``omit_empty_frames``).

    Args:
        volume: the CT volume; ``volume.source_datasets`` are its slice headers in k order.
        labels_ijk: integer label map on the volume's (i, j, k) grid (label ids of
            :mod:`osteoscreen.labels`); labels not in ``label_ids`` are left out.
        label_ids: the vertebrae to store, one segment each, in segment order.
        algorithm_name: name of the segmentation model (AlgorithmIdentificationSequence).
        algorithm_version: its version.
        series_number: Series Number of the SEG.
        manufacturer: Manufacturer of the SEG.

    Returns:
        The segmentation instance (a pydicom Dataset; write it with
        :func:`osteoscreen.io.atomic.write_dataset_atomic`).

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: for a shape mismatch, missing source datasets, an empty, repeated or
            non-vertebra ``label_ids`` or a label id absent from ``labels_ijk``.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be an osteoscreen Volume, got {type(volume).__name__}")
    if not isinstance(labels_ijk, np.ndarray):
        raise TypeError(f"labels_ijk must be a numpy array, got {type(labels_ijk).__name__}")
    if not np.issubdtype(labels_ijk.dtype, np.integer):
        raise TypeError(f"labels_ijk must have an integer dtype, got {labels_ijk.dtype}")
    if labels_ijk.shape != volume.shape:
        raise ValueError(f"labels_ijk shape {labels_ijk.shape} differs from the volume's {volume.shape}")
    for arg, value in (("algorithm_name", algorithm_name), ("algorithm_version", algorithm_version)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{arg} must be a non-empty string, got {value!r}")
    if isinstance(series_number, bool) or not isinstance(series_number, int) or series_number < 1:
        raise ValueError(f"series_number must be a positive int, got {series_number!r}")
    ids = _check_label_ids(label_ids)
    sources = _check_sources(volume)

    if labels_ijk.size and int(labels_ijk.min()) < 0:
        labels_ijk = np.clip(labels_ijk, 0, None)
    # bincount: one pass, several times faster than np.unique on a 512 x 512 x 300 map.
    present = set(np.flatnonzero(np.bincount(labels_ijk.ravel())).tolist())
    missing = [i for i in ids if i not in present]
    if missing:
        raise ValueError(f"label_ids {missing} do not occur in labels_ijk")

    # Map label ids to segment numbers 1..n; everything else to 0.
    lut = np.zeros(max(max(ids), int(labels_ijk.max())) + 1, dtype=np.uint8 if len(ids) < 256 else np.uint16)
    for number, label_id in enumerate(ids, start=1):
        lut[label_id] = number
    # (i, j, k) -> frames (k), rows (j), columns (i).
    pixel_array = np.ascontiguousarray(lut[np.transpose(labels_ijk, (2, 1, 0))])

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.ALGORITHM_FAMILY, version=algorithm_version
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=id_to_name(label_id),
            segmented_property_category=codes.SEG_CATEGORY,
            segmented_property_type=codes.SEG_TYPE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=generate_uid(),
            tracking_id=f"{id_to_name(label_id)} vertebral body",
            anatomic_regions=[codes.finding_site_code(label_id)],
            display_color=hd.color.CIELabColor.from_rgb(*colour_of(label_id)),
        )
        for number, label_id in enumerate(ids, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name="osteoscreen",
        software_versions=f"osteoscreen {__version__}",
        device_serial_number="0",
        content_label="VERTEBRAE",
        content_description="Vertebral bodies",
        content_creator_name="osteoscreen^automatic",
        omit_empty_frames=True,
    )
    seg.SeriesDescription = "Vertebral bodies (osteoscreen)"
    logger.info(
        "built SEG with %d segments (%s) and %d frames",
        len(ids),
        ", ".join(id_to_name(i) for i in ids),
        int(seg.NumberOfFrames),
    )
    return seg


def segment_numbers_by_label(seg: hd.seg.Segmentation) -> dict[str, int]:
    """Segment number of each segment label ("L1" -> 1) of a SEG."""
    if not isinstance(seg, hd.seg.Segmentation):
        raise TypeError(f"seg must be a highdicom Segmentation, got {type(seg).__name__}")
    return {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}


def _check_label_ids(label_ids: Sequence[int]) -> list[int]:
    if isinstance(label_ids, (str, bytes)) or not isinstance(label_ids, Sequence):
        raise TypeError(f"label_ids must be a sequence of ints, got {type(label_ids).__name__}")
    ids: list[int] = []
    for value in label_ids:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"label_ids must hold ints, got {value!r}")
        ids.append(int(value))
    if not ids:
        raise ValueError("label_ids must not be empty")
    if len(set(ids)) != len(ids):
        raise ValueError(f"label_ids must not repeat, got {ids}")
    for value in ids:
        id_to_name(value)  # raises ValueError naming the id for a non-vertebra
    return ids


def _check_sources(volume: Volume) -> list:
    sources = list(volume.source_datasets)
    if not sources:
        raise ValueError("volume.source_datasets is empty: a DICOM SEG needs the CT slice headers")
    n_i, n_j, n_k = volume.shape
    if len(sources) != n_k:
        raise ValueError(f"volume has {n_k} slices but {len(sources)} source_datasets")
    first = sources[0]
    if int(first.Rows) != n_j or int(first.Columns) != n_i:
        raise ValueError(
            f"source_datasets are {first.Rows}x{first.Columns} (rows x columns) but the volume's "
            f"(j, i) size is {n_j}x{n_i}"
        )
    return sources
