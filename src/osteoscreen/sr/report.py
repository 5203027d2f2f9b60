"""DICOM Comprehensive 3D SR (TID 1500 Measurement Report) of a screening, built bottom-up.

Measurement (TID 300) -> VolumetricROIMeasurementsAndQualitativeEvaluations (TID 1411, one per
vertebra, referencing its DICOM SEG segment) and MeasurementsAndQualitativeEvaluations
(TID 1501, the patient-level result) -> MeasurementReport (TID 1500) ->
Comprehensive3DSR(evidence = CT slices + SEG).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from osteoscreen import __version__, codes
from osteoscreen.io.volume import Volume
from osteoscreen.results import ScreeningResult, VertebraResult
from osteoscreen.sr.seg import segment_numbers_by_label

__all__ = ["DEVICE_UID", "algorithm_identification", "build_sr"]

logger = logging.getLogger(__name__)

#: A stable UID of the osteoscreen device observer (same for every report of a version).
DEVICE_UID = generate_uid(entropy_srcs=["osteoscreen", "device-observer"])


def build_sr(
    result: ScreeningResult,
    volume: Volume,
    seg: hd.seg.Segmentation,
    *,
    series_number: int = 902,
    manufacturer: str = "osteoscreen",
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 measurement report of one screened study.

    Args:
        result: the screening result; every vertebra must have a segment of the same label
            (e.g. "L1") in ``seg``.
        volume: the CT volume whose ``source_datasets`` the results were measured on.
        seg: the DICOM SEG of the vertebral bodies (from :func:`osteoscreen.sr.seg.build_seg`).
        series_number: Series Number of the SR.
        manufacturer: Manufacturer of the SR.

    Returns:
        The SR document (a pydicom Dataset; write it with
        :func:`osteoscreen.io.atomic.write_dataset_atomic`).

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: if ``result.vertebrae`` is empty, the volume has no source datasets, or a
            vertebra has no segment in ``seg``.
    """
    if not isinstance(result, ScreeningResult):
        raise TypeError(f"result must be a ScreeningResult, got {type(result).__name__}")
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be an osteoscreen Volume, got {type(volume).__name__}")
    if not isinstance(seg, hd.seg.Segmentation):
        raise TypeError(f"seg must be a highdicom Segmentation, got {type(seg).__name__}")
    if isinstance(series_number, bool) or not isinstance(series_number, int) or series_number < 1:
        raise ValueError(f"series_number must be a positive int, got {series_number!r}")
    if not result.vertebrae:
        raise ValueError("result.vertebrae is empty: there is nothing to report")
    sources = list(volume.source_datasets)
    if not sources:
        raise ValueError("volume.source_datasets is empty: an SR needs the CT slice headers as evidence")

    segment_numbers = segment_numbers_by_label(seg)
    tracking_uids = {
        str(item.SegmentLabel): str(item.TrackingUID) for item in seg.SegmentSequence if "TrackingUID" in item
    }
    ct_series_uid = str(sources[0].SeriesInstanceUID)
    algorithm = algorithm_identification(result.models)

    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for vertebra in result.vertebrae:
        label = vertebra.label
        if label not in segment_numbers:
            raise ValueError(
                f"result.vertebrae has {label} but seg has no segment labelled {label} "
                f"(segments: {', '.join(segment_numbers) or 'none'})"
            )
        groups.append(
            _vertebra_group(
                vertebra,
                used=label in result.patient.levels_used,
                segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID,
                    sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=segment_numbers[label],
                    source_series=hd.sr.SourceSeriesForSegmentation(ct_series_uid),
                ),
                tracking_uid=tracking_uids.get(label) or generate_uid(),
                algorithm=algorithm,
            )
        )
    groups.append(_patient_group(result, algorithm))

    observer = hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_UID,
            name="osteoscreen",
            manufacturer_name=manufacturer,
            model_name="osteoscreen",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=[codes.COMPUTED_TOMOGRAPHY, codes.CT_BONE_DENSITOMETRY],
        imaging_measurements=groups,
        title=codes.IMAGING_MEASUREMENT_REPORT,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.SeriesDescription = "Bone mineral density (osteoscreen)"
    sr.SoftwareVersions = f"osteoscreen {__version__}"
    sr.CodingSchemeIdentificationSequence = [_private_scheme_item()]
    logger.info("built SR with %d vertebra groups and a patient group", len(result.vertebrae))
    return sr


def algorithm_identification(models: Mapping[str, Any]) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification of the models behind a result.

    ``models`` is ``ScreeningResult.models``: role -> {"name"/"id": ..., "version": ...} or
    role -> a plain id string. The name lists "role=model" pairs, the version their versions;
    other keys become parameters.
    """
    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a mapping, got {type(models).__name__}")
    names: list[str] = []
    versions: list[str] = []
    parameters: list[str] = []
    for role in sorted(models):
        info = models[role]
        if isinstance(info, Mapping):
            model = info.get("name") or info.get("id") or role
            version = info.get("version")
            names.append(f"{role}={model}")
            if version is not None:
                versions.append(f"{role}={version}")
            parameters += [
                f"{role}.{k}={v}" for k, v in sorted(info.items()) if k not in {"name", "id", "version"}
            ]
        else:
            names.append(f"{role}={info}")
    return hd.sr.AlgorithmIdentification(
        name="osteoscreen" + (f" ({'; '.join(names)})" if names else ""),
        version="; ".join([f"osteoscreen={__version__}", *versions]),
        parameters=parameters or None,
        family=codes.ALGORITHM_FAMILY,
    )


def _vertebra_group(
    vertebra: VertebraResult,
    *,
    used: bool,
    segment: hd.sr.ReferencedSegment,
    tracking_uid: str,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    roi = vertebra.roi
    site = hd.sr.FindingSite(codes.finding_site_code(roi.label_id))
    measurements = [
        m
        for m in (
            _measurement(codes.ATTENUATION_COEFFICIENT, roi.hu_mean, codes.UNIT_HU, codes.MEAN, roi.label),
            _measurement(
                codes.ATTENUATION_COEFFICIENT, roi.hu_median, codes.UNIT_HU, codes.MEDIAN, roi.label
            ),
            _measurement(
                codes.ATTENUATION_COEFFICIENT, roi.hu_std, codes.UNIT_HU, codes.STANDARD_DEVIATION, roi.label
            ),
            _measurement(codes.VOLUMETRIC_BMD, vertebra.bmd_mg_cm3, codes.UNIT_MG_PER_CM3, None, roi.label),
            _measurement(codes.VOLUME, roi.roi_volume_ml, codes.UNIT_CM3, None, roi.label),
        )
        if m is not None
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(codes.INCLUDED_IN_PATIENT_RESULT, codes.YES if used else codes.NO)
    ]
    if vertebra.category is not None:
        evaluations.insert(
            0, hd.sr.QualitativeEvaluation(codes.BMD_CATEGORY, codes.category_code(vertebra.category))
        )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=f"{roi.label} vertebral body"
        ),
        referenced_segment=segment,
        method=codes.TRABECULAR_ROI_METHOD,
        algorithm_id=algorithm,
        finding_sites=[site],
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _patient_group(
    result: ScreeningResult, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    patient = result.patient
    measurements = []
    bmd = patient.bmd_mg_cm3
    if bmd is not None and math.isfinite(float(bmd)):
        # The finding sites of the mean are the levels it averages.
        used_sites = [hd.sr.FindingSite(codes.finding_site_code(name)) for name in patient.levels_used]
        measurements.append(
            hd.sr.Measurement(
                name=codes.VOLUMETRIC_BMD,
                value=round(float(bmd), 3),
                unit=codes.UNIT_MG_PER_CM3,
                derivation=codes.MEAN,
                finding_sites=used_sites or None,
            )
        )
    elif bmd is not None:
        logger.warning("patient BMD is not finite (%r); left out of the SR", bmd)
    evaluations = []
    if patient.category is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(codes.BMD_CATEGORY, codes.category_code(patient.category))
        )
    if patient.classifier_category is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                codes.CLASSIFIER_BMD_CATEGORY, codes.category_code(patient.classifier_category)
            )
        )
    if patient.agreement is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                codes.BMD_CATEGORY_AGREEMENT, codes.YES if patient.agreement else codes.NO
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="patient"),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(codes.SPINE)],
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )


def _measurement(
    name: Code, value: float | None, unit: Code, derivation: Code | None, where: str
) -> hd.sr.Measurement | None:
    """A TID 300 measurement, or None (logged) for a missing or non-finite value."""
    if value is None:
        return None
    if not math.isfinite(float(value)):
        logger.warning("%s: %s is not finite (%r); left out of the SR", where, name.meaning, value)
        return None
    # Three decimals: beyond any real precision, and keeps DS strings free of float noise.
    return hd.sr.Measurement(name=name, value=round(float(value), 3), unit=unit, derivation=derivation)


def _private_scheme_item() -> Dataset:
    # Coding Scheme Identification Sequence item (PS3.3 C.12.1.1.5): declares 99OSTEO.
    item = Dataset()
    item.CodingSchemeDesignator = codes.PRIVATE_SCHEME
    item.CodingSchemeName = codes.PRIVATE_SCHEME_NAME
    item.CodingSchemeVersion = codes.PRIVATE_SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = "osteoscreen"
    return item
