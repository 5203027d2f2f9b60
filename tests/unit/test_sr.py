"""DICOM SEG and TID 1500 SR: build, write, read back with highdicom, validate with dciodvfy."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes as dcm_codes

from osteoscreen import codes
from osteoscreen.io.atomic import write_dataset_atomic
from osteoscreen.sr import build_seg, build_sr

try:
    from ._dicom_fixtures import Phantom, make_phantom
except ImportError:  # tests/unit is not a package
    from _dicom_fixtures import Phantom, make_phantom  # type: ignore[no-redef]

LABEL_IDS = [20, 21, 22]


@pytest.fixture(scope="module", autouse=True)
def _strict_pydicom() -> Iterator[None]:
    """Build and read back with enforce_valid_values on (raise on invalid values)."""
    settings = pydicom.config.settings
    old = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.RAISE
    yield
    settings.reading_validation_mode, settings.writing_validation_mode = old


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom()


@pytest.fixture(scope="module")
def seg(phantom: Phantom) -> hd.seg.Segmentation:
    return build_seg(
        phantom.volume, phantom.labels, LABEL_IDS, algorithm_name="vbnet", algorithm_version="0.3.1"
    )


@pytest.fixture(scope="module")
def sr(phantom: Phantom, seg: hd.seg.Segmentation) -> hd.sr.Comprehensive3DSR:
    return build_sr(phantom.result, phantom.volume, seg)


def _roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


# --- SEG -----------------------------------------------------------------------------------


def test_seg_reads_back_with_segments_and_pixels(phantom: Phantom, seg: hd.seg.Segmentation) -> None:
    back = hd.seg.Segmentation.from_dataset(_roundtrip(seg))
    assert back.SegmentationType == "BINARY"
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in back.SegmentSequence}
    assert labels == {1: "L1", 2: "L2", 3: "L3"}
    for number, label_id in enumerate(LABEL_IDS, start=1):
        desc = back.get_segment_description(number)
        assert desc.anatomic_regions[0].value == codes.finding_site_code(label_id).value
        assert desc.segmented_property_type.value == codes.SEG_TYPE.value
        assert desc.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    # Only frames with a segment are stored.
    expected_frames = sum(int(np.any(phantom.labels[:, :, k] == i)) for i in LABEL_IDS for k in range(40))
    assert int(back.NumberOfFrames) == expected_frames
    uids = [ds.SOPInstanceUID for ds in phantom.volume.source_datasets]
    pixels = back.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1, 2, 3], combine_segments=False
    )  # (slices, rows, cols, segments)
    for number, label_id in enumerate(LABEL_IDS, start=1):
        expected = np.transpose(phantom.labels == label_id, (2, 1, 0))
        np.testing.assert_array_equal(pixels[..., number - 1].astype(bool), expected)


def test_seg_rejects_bad_arguments(phantom: Phantom) -> None:
    kw = {"algorithm_name": "vbnet", "algorithm_version": "1"}
    with pytest.raises(ValueError, match="label_ids"):
        build_seg(phantom.volume, phantom.labels, [], **kw)
    with pytest.raises(ValueError, match="label_ids"):
        build_seg(phantom.volume, phantom.labels, [20, 23], **kw)  # 23 (L4) is absent
    with pytest.raises(ValueError, match="labels_ijk shape"):
        build_seg(phantom.volume, phantom.labels[:, :, :-1], [20], **kw)
    with pytest.raises(TypeError, match="labels_ijk"):
        build_seg(phantom.volume, phantom.labels.astype(float), [20], **kw)
    with pytest.raises(ValueError, match="algorithm_name"):
        build_seg(phantom.volume, phantom.labels, [20], algorithm_name="", algorithm_version="1")


# --- SR ------------------------------------------------------------------------------------


def _value(group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations, name, derivation=None) -> float:  # type: ignore[no-untyped-def]
    found = [
        m
        for m in group.get_measurements(name=name)
        if derivation is None or (m.derivation is not None and m.derivation.value == derivation.value)
    ]
    assert len(found) == 1, f"{name.meaning}: {len(found)} measurements"
    return float(found[0].value)


def _evaluation(group, name) -> str:  # type: ignore[no-untyped-def]
    found = group.get_qualitative_evaluations(name=name)
    assert len(found) == 1
    return str(found[0].value.value)


def test_sr_reads_back_one_group_per_vertebra(
    phantom: Phantom, seg: hd.seg.Segmentation, sr: hd.sr.Comprehensive3DSR
) -> None:
    back = hd.sr.Comprehensive3DSR.from_dataset(_roundtrip(sr))
    report = back.content
    assert isinstance(report, hd.sr.MeasurementReport)
    assert back.ConceptNameCodeSequence[0].CodeValue == dcm_codes.DCM.ImagingMeasurementReport.value
    groups = report.get_volumetric_roi_measurement_groups()
    assert len(groups) == 3
    for vertebra in phantom.result.vertebrae:
        site = codes.finding_site_code(vertebra.roi.label_id)
        (group,) = report.get_volumetric_roi_measurement_groups(finding_site=site)
        assert group.tracking_identifier == f"{vertebra.label} vertebral body"
        ref = group.referenced_segment
        assert ref is not None
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.referenced_segment_numbers == [LABEL_IDS.index(vertebra.roi.label_id) + 1]
        r = vertebra.roi
        assert _value(group, codes.ATTENUATION_COEFFICIENT, codes.MEAN) == pytest.approx(r.hu_mean, abs=1e-3)
        assert _value(group, codes.ATTENUATION_COEFFICIENT, codes.MEDIAN) == pytest.approx(
            r.hu_median, abs=1e-3
        )
        assert _value(group, codes.VOLUMETRIC_BMD) == pytest.approx(vertebra.bmd_mg_cm3, abs=1e-3)
        assert _value(group, codes.VOLUME) == pytest.approx(r.roi_volume_ml, abs=1e-3)
        assert _evaluation(group, codes.BMD_CATEGORY) == codes.category_code(vertebra.category).value
        used = vertebra.label in phantom.result.patient.levels_used
        assert _evaluation(group, codes.INCLUDED_IN_PATIENT_RESULT) == (codes.YES if used else codes.NO).value
        # The tracking UID is the SEG segment's: one identity across both objects.
        number = ref.referenced_segment_numbers[0]
        assert group.tracking_uid == seg.get_segment_description(number).tracking_uid
    # Evidence: the CT series and the SEG.
    evidence = {
        item.SeriesInstanceUID
        for study in back.CurrentRequestedProcedureEvidenceSequence
        for item in study.ReferencedSeriesSequence
    }
    assert evidence == {phantom.volume.source_datasets[0].SeriesInstanceUID, seg.SeriesInstanceUID}


def test_sr_patient_group(phantom: Phantom, sr: hd.sr.Comprehensive3DSR) -> None:
    report = hd.sr.Comprehensive3DSR.from_dataset(_roundtrip(sr)).content
    groups = report.get_image_measurement_groups()
    assert len(groups) == 1
    group = groups[0]
    patient = phantom.result.patient
    assert group.tracking_identifier == "patient"
    (bmd,) = group.get_measurements(name=codes.VOLUMETRIC_BMD)
    assert float(bmd.value) == pytest.approx(patient.bmd_mg_cm3, abs=1e-3)
    assert bmd.unit.value == codes.UNIT_MG_PER_CM3.value
    assert [s.value.value for s in bmd.finding_sites] == [
        codes.finding_site_code(n).value for n in patient.levels_used
    ]
    assert _evaluation(group, codes.BMD_CATEGORY) == codes.OSTEOPENIA.value
    assert _evaluation(group, codes.CLASSIFIER_BMD_CATEGORY) == codes.OSTEOPENIA.value
    assert _evaluation(group, codes.BMD_CATEGORY_AGREEMENT) == codes.YES.value


def test_sr_without_bmd_leaves_it_out(phantom: Phantom, seg: hd.seg.Segmentation) -> None:
    import copy

    result = copy.deepcopy(phantom.result)
    result.vertebrae[0].bmd_mg_cm3 = None
    result.patient.bmd_mg_cm3 = None
    report = hd.sr.Comprehensive3DSR.from_dataset(_roundtrip(build_sr(result, phantom.volume, seg))).content
    (l1,) = report.get_volumetric_roi_measurement_groups(finding_site=codes.finding_site_code(20))
    assert l1.get_measurements(name=codes.VOLUMETRIC_BMD) == []
    assert report.get_image_measurement_groups()[0].get_measurements(name=codes.VOLUMETRIC_BMD) == []


def test_sr_rejects_empty_result_and_unknown_segment(phantom: Phantom, seg: hd.seg.Segmentation) -> None:
    import copy

    empty = copy.deepcopy(phantom.result)
    empty.vertebrae = []
    with pytest.raises(ValueError, match="vertebrae is empty"):
        build_sr(empty, phantom.volume, seg)
    other = copy.deepcopy(phantom.result)
    other.vertebrae[0].roi.label = "L4"
    with pytest.raises(ValueError, match="no segment labelled L4"):
        build_sr(other, phantom.volume, seg)
    with pytest.raises(TypeError, match="seg"):
        build_sr(phantom.result, phantom.volume, phantom.volume.source_datasets[0])  # type: ignore[arg-type]


def test_codes() -> None:
    assert codes.finding_site_code(20) == dcm_codes.SCT.L1Vertebra
    assert codes.finding_site_code("t12").value == "23215003"
    assert codes.finding_site_code(25) == codes.VERTEBRA  # L6
    assert codes.finding_site_code(101) == codes.VERTEBRA  # V1
    assert codes.finding_site_code("S1") == dcm_codes.SCT.Sacrum
    for name in ("normal", "osteopenia", "osteoporosis"):
        assert codes.category_from_code(codes.category_code(name)) == name
    with pytest.raises(ValueError, match="category"):
        codes.category_code("osteopetrosis")
    with pytest.raises(ValueError):
        codes.finding_site_code("X9")
    with pytest.raises(TypeError):
        codes.finding_site_code(2.0)  # type: ignore[arg-type]


def test_write_dataset_atomic_leaves_no_partial_file(tmp_path: Path, sr: hd.sr.Comprehensive3DSR) -> None:
    out = tmp_path / "sr.dcm"
    write_dataset_atomic(sr, out)
    assert pydicom.dcmread(out).SOPInstanceUID == sr.SOPInstanceUID
    assert [p.name for p in tmp_path.iterdir()] == ["sr.dcm"]
    with pytest.raises(FileNotFoundError):
        write_dataset_atomic(sr, tmp_path / "missing" / "sr.dcm")


# --- External validators (dicom3tools, dcmtk) ----------------------------------------------


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
def test_dciodvfy_finds_no_errors(
    tmp_path: Path, seg: hd.seg.Segmentation, sr: hd.sr.Comprehensive3DSR
) -> None:
    for name, ds in (("seg.dcm", seg), ("sr.dcm", sr)):
        path = tmp_path / name
        write_dataset_atomic(ds, path)
        proc = subprocess.run(
            ["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{name}: {errors}"


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="dsrdump (dcmtk) is not installed")
def test_dsrdump_reads_the_sr(tmp_path: Path, sr: hd.sr.Comprehensive3DSR) -> None:
    path = tmp_path / "sr.dcm"
    write_dataset_atomic(sr, path)
    proc = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Imaging Measurement Report" in proc.stdout
    assert "L1 vertebral body" in proc.stdout
