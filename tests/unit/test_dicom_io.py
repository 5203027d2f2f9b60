"""Tests of osteoscreen.io.dicom (reading, series selection) and osteoscreen.io.dicom_write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from osteoscreen.errors import InputError, NotScreenableError
from osteoscreen.io.dicom import (
    SelectionRules,
    check_plausible_ct,
    kernel_class,
    load_selection_rules,
    load_series,
    load_volume,
    read_pixels,
    scan_dicom_folder,
    select_series,
)
from osteoscreen.io.dicom_write import write_ct_series, write_localizer
from osteoscreen.io.volume import Volume

STUDY_UID = generate_uid()


def _hu_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Integer HU with air, fat and bone present (plausible CT)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1500, size=shape).astype(np.float32)


def _affine(spacing: tuple[float, float, float], origin: tuple[float, float, float]) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    return aff


def _write(volume: Volume, folder: Path, **kw: object) -> list[Path]:
    args: dict[str, object] = {
        "patient_id": "P001",
        "patient_name": "Test^Patient",
        "study_uid": STUDY_UID,
        "series_description": "test",
    }
    args.update(kw)
    return write_ct_series(volume, folder, **args)  # type: ignore[arg-type]


def _write_secondary_capture(ref: Path, out: Path) -> None:
    ref_ds = pydicom.dcmread(ref)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref_ds,
        pixel_array=np.zeros((8, 8), dtype=np.uint8),
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=generate_uid(),
        series_number=50,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        patient_orientation=("L", "P"),
    )
    sc.save_as(out)


def _write_sr(ref: Path, out: Path) -> None:
    ref_ds = pydicom.dcmread(ref, stop_before_pixels=True)
    content = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    content.ContentSequence = [
        hd.sr.TextContentItem(name=codes.DCM.Finding, value="test", relationship_type="CONTAINS")
    ]
    sr = hd.sr.ComprehensiveSR(
        evidence=[ref_ds],
        content=content,
        series_instance_uid=generate_uid(),
        series_number=60,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
    )
    sr.save_as(out)


def _write_dicomdir_like(out: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = "TEST"
    ds.save_as(out, enforce_file_format=True)


# ------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_axial_ras(tmp_path: Path) -> None:
    arr = _hu_volume((24, 20, 25))
    aff = _affine((0.8, 0.9, 2.0), (-10.5, 20.25, -300.0))
    paths = _write(Volume(arr, aff), tmp_path / "ras")
    assert len(paths) == 25
    vol, warnings = load_volume(tmp_path / "ras")
    assert warnings == []
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    assert vol.array.dtype == np.float32
    assert len(vol.source_datasets) == 25
    assert "PixelData" not in vol.source_datasets[0]
    assert vol.meta["series_description"] == "test"
    assert vol.meta["patient_id"] == "P001"
    assert vol.meta["kvp"] == 120.0
    assert vol.meta["convolution_kernel"] == "STANDARD"
    assert vol.meta["study_instance_uid"] == STUDY_UID
    assert vol.meta["spacing"] == pytest.approx((0.8, 0.9, 2.0))


def test_round_trip_lps(tmp_path: Path) -> None:
    arr = _hu_volume((16, 18, 22), seed=1)
    aff = np.array([[-0.7, 0, 0, 100.0], [0, -0.7, 0, 80.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]])
    _write(Volume(arr, aff), tmp_path / "lps")
    vol, _ = load_volume(tmp_path / "lps")
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)


def test_round_trip_pir_is_reoriented_axial(tmp_path: Path) -> None:
    # PIR: i -> posterior, j -> inferior, k -> right: a sagittal stack, written as axial slices.
    arr = _hu_volume((20, 45, 12), seed=2)
    aff = np.array([[0, 0, 1.5, 30.0], [-1.0, 0, 0, 40.0], [0, -1.2, 0, 10.0], [0, 0, 0, 1]])
    src = Volume(arr, aff)
    assert nib.aff2axcodes(aff) == ("P", "I", "R")
    _write(src, tmp_path / "pir")
    vol, _ = load_volume(tmp_path / "pir")
    assert nib.aff2axcodes(vol.affine)[2] in ("S", "I")
    a, b = src.canonical().volume, vol.canonical().volume
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)


def test_round_trip_tilted_gantry(tmp_path: Path) -> None:
    arr = _hu_volume((16, 16, 24), seed=3)
    tilt = np.radians(15.0)
    aff = _affine((0.9, 0.9, 2.0), (0.0, 0.0, 0.0))
    aff[1, 2] = 2.0 * np.tan(tilt)  # slices step along y as well: sheared geometry
    _write(Volume(arr, aff), tmp_path / "tilt")
    vol, warnings = load_volume(tmp_path / "tilt")
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    assert any("tilt" in w for w in warnings)
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(15.0, abs=0.1)


def test_written_slice_headers(tmp_path: Path) -> None:
    arr = _hu_volume((8, 8, 3))
    paths = _write(Volume(arr, np.eye(4)), tmp_path, extra={"PatientSex": "F", "PatientAge": "064Y"})
    ds = pydicom.dcmread(paths[0])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert ds.PatientSex == "F" and ds.PatientAge == "064Y"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    with pytest.raises(ValueError, match="NotAKeyword"):
        _write(Volume(arr, np.eye(4)), tmp_path / "bad", extra={"NotAKeyword": 1})


# ------------------------------------------------------------------------------------------
# Selection


def test_selection_picks_thin_soft_series(tmp_path: Path) -> None:
    study = tmp_path / "study"
    arr = _hu_volume((12, 12, 40), seed=4)
    thick_bone = Volume(arr[:, :, :20], _affine((0.8, 0.8, 5.0), (0, 0, 0)))
    thin_soft = Volume(arr, _affine((0.8, 0.8, 1.25), (0, 0, 0)))
    thin_lung = Volume(arr, _affine((0.8, 0.8, 1.0), (0, 0, 0)))
    _write(thick_bone, study / "a" / "thick", series_description="thick bone", kernel="BONE")
    soft = _write(thin_soft, study / "b" / "deep" / "soft", series_description="thin soft", kernel="B30f")
    _write(thin_lung, study / "c", series_description="thin lung", kernel="B70f")
    write_localizer(thin_soft, study / "scout.dcm", patient_id="P001", patient_name="Test^Patient")
    _write_secondary_capture(soft[0], study / "sc.dcm")
    _write_sr(soft[0], study / "sr.dcm")
    (study / "notes.txt").write_text("not dicom")
    (study / "random.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    _write_dicomdir_like(study / "DICOMDIR")
    _write_dicomdir_like(study / "dirfile")

    series = scan_dicom_folder(study)
    descriptions = sorted(s.description for s in series)
    assert "thin soft" in descriptions and "thick bone" in descriptions
    assert len(series) == 6  # three CT series, localizer, secondary capture, SR
    chosen, warnings = select_series(series)
    assert chosen.description == "thin soft"
    assert chosen.num_slices == 40
    assert warnings == []

    vol, _ = load_volume(study)
    assert vol.meta["series_description"] == "thin soft"
    np.testing.assert_array_equal(vol.array, arr)


def test_selection_prefers_soft_kernel_over_thinner_sharp(tmp_path: Path) -> None:
    arr = _hu_volume((8, 8, 30), seed=5)
    _write(
        Volume(arr, _affine((1, 1, 2.0), (0, 0, 0))), tmp_path / "soft", series_description="s", kernel="FC18"
    )
    _write(
        Volume(arr, _affine((1, 1, 1.5), (0, 0, 0))),
        tmp_path / "sharp",
        series_description="b",
        kernel="FC51",
    )
    chosen, _ = select_series(scan_dicom_folder(tmp_path))
    assert chosen.description == "s"


def test_only_sharp_kernel_warns_and_thick_slices_warn(tmp_path: Path) -> None:
    arr = _hu_volume((8, 8, 20), seed=6)
    _write(Volume(arr, _affine((1, 1, 4.0), (0, 0, 0))), tmp_path, kernel="BONEPLUS")
    _, warnings = select_series(scan_dicom_folder(tmp_path))
    assert any("sharp kernel" in w for w in warnings)
    assert any("4.0 mm" in w for w in warnings)


@pytest.mark.parametrize(
    ("kernel", "rank"),
    [
        ("STANDARD", 0),
        ("B30f", 0),
        ("B31f", 0),
        ("Br40", 0),
        ("FC18", 0),
        ("SOFT", 0),
        ("Body", 0),
        ("BONE", 2),
        ("BONEPLUS", 2),
        ("B70f", 2),
        ("LUNG", 2),
        ("FC51", 2),
        ("Br64\\3", 2),
        ("XYZ", 1),
        ("", 1),
    ],
)
def test_kernel_class(kernel: str, rank: int) -> None:
    assert kernel_class(kernel, load_selection_rules()) == rank


def test_rejections_are_explained(tmp_path: Path) -> None:
    arr = _hu_volume((8, 8, 10), seed=7)
    _write(Volume(arr, _affine((1, 1, 2.0), (0, 0, 0))), tmp_path / "short", series_description="short")
    _write(Volume(_hu_volume((8, 8, 25)), _affine((1, 1, 6.0), (0, 0, 0))), tmp_path / "thick")
    sag = Volume(
        _hu_volume((25, 8, 8)), np.array([[0, 0, 2.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    )
    paths = _write(sag, tmp_path / "sag", series_description="sag")
    # write_ct_series makes it axial; turn its slices back to sagittal by hand
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.save_as(p)
    with pytest.raises(NotScreenableError) as exc:
        load_volume(tmp_path)
    msg = str(exc.value)
    assert msg.startswith("no CT series usable for screening")
    assert "only 10 slices" in msg
    assert "6.0 mm thick" in msg
    assert "not axial" in msg
    assert "\n" not in msg


def test_enhanced_ct_rejected_with_reason(tmp_path: Path) -> None:
    paths = _write(Volume(_hu_volume((8, 8, 25)), _affine((1, 1, 2.0), (0, 0, 0))), tmp_path)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
        ds.save_as(p)
    with pytest.raises(NotScreenableError, match="Enhanced CT"):
        load_volume(tmp_path)


def test_rules_override(tmp_path: Path) -> None:
    _write(Volume(_hu_volume((8, 8, 10)), _affine((1, 1, 2.0), (0, 0, 0))), tmp_path / "dcm")
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps({"screening": {"min_slices": 5, "min_extent_mm": 10}}))
    vol, _ = load_volume(tmp_path / "dcm", rules=rules_file)
    assert vol.shape == (8, 8, 10)
    assert load_selection_rules(rules_file).min_slices == 5
    with pytest.raises(ValueError, match="unknown keys"):
        SelectionRules.from_dict({"screening": {"min_slice": 5}})


# ------------------------------------------------------------------------------------------
# Geometry repairs


def test_uneven_spacing_is_resampled_with_warning(tmp_path: Path) -> None:
    nk = 30
    base = _hu_volume((10, 10, 1), seed=8)
    arr = (base + 10.0 * np.arange(nk, dtype=np.float32)[None, None, :]).astype(np.float32)
    aff = _affine((1.0, 1.0, 2.0), (0, 0, 0))
    paths = _write(Volume(arr, aff), tmp_path)
    for k in (10, 11, 20):  # two gaps: 6 mm and 4 mm
        paths[k].unlink()
    vol, warnings = load_volume(tmp_path)
    assert any("uneven slice spacing" in w for w in warnings)
    assert vol.meta["resampled_along_k"] is True
    assert vol.shape == (10, 10, nk)
    # values are linear in k, so linear interpolation restores them
    np.testing.assert_allclose(vol.array, arr, atol=1e-3)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    assert len(vol.source_datasets) == nk - 3


def test_duplicate_positions_dropped(tmp_path: Path) -> None:
    paths = _write(Volume(_hu_volume((8, 8, 25)), _affine((1, 1, 2.0), (0, 0, 0))), tmp_path)
    ds = pydicom.dcmread(paths[3])
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(tmp_path / "dup.dcm")
    vol, warnings = load_volume(tmp_path)
    assert vol.shape[2] == 25
    assert any("duplicate" in w for w in warnings)


# ------------------------------------------------------------------------------------------
# Bad input


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(NotScreenableError, match="no DICOM files found"):
        load_volume(tmp_path)


def test_folder_of_text_files(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"f{i}.txt").write_text("hello\n" * 50)
    with pytest.raises(NotScreenableError, match="no DICOM files found"):
        load_volume(tmp_path)


def test_missing_path() -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_volume("/nonexistent/osteoscreen/input")


def test_single_non_nifti_file(tmp_path: Path) -> None:
    paths = _write(Volume(_hu_volume((8, 8, 2)), np.eye(4)), tmp_path)
    with pytest.raises(NotScreenableError, match="folder holding a DICOM CT series"):
        load_volume(paths[0])


def test_truncated_file_among_good_ones_is_skipped(tmp_path: Path) -> None:
    arr = _hu_volume((16, 16, 26), seed=9)
    paths = _write(Volume(arr, _affine((1, 1, 2.0), (0, 0, 0))), tmp_path)
    data = paths[-1].read_bytes()
    paths[-1].write_bytes(data[: len(data) - 100])  # pixel data cut short
    data = paths[-2].read_bytes()
    paths[-2].write_bytes(data[:600])  # header cut short
    vol, _ = load_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, arr[:, :, :24])


def test_truncated_file_alone(tmp_path: Path) -> None:
    paths = _write(Volume(_hu_volume((16, 16, 1)), np.eye(4)), tmp_path / "src")
    data = paths[0].read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(NotScreenableError, match="no DICOM files found"):
        load_volume(tmp_path / "in")


def test_nifti_ct_and_label_map(tmp_path: Path) -> None:
    arr = _hu_volume((20, 20, 20))
    aff = _affine((1.5, 1.5, 2.0), (1, 2, 3))
    nib.save(nib.Nifti1Image(arr, aff), tmp_path / "ct.nii.gz")
    vol, warnings = load_volume(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, aff)
    assert vol.meta["source"] == "nifti" and warnings == []

    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[5:15, 5:15, 5:15] = 20
    labels[8:12, 8:12, 8:12] = 24
    nib.save(nib.Nifti1Image(labels, aff), tmp_path / "seg.nii.gz")
    with pytest.raises(NotScreenableError, match="label map"):
        load_volume(tmp_path / "seg.nii.gz")


def test_plausible_ct_rule() -> None:
    check_plausible_ct(_hu_volume((10, 10, 10)))
    with pytest.raises(NotScreenableError):
        check_plausible_ct(np.random.default_rng(0).uniform(0, 4095, (10, 10, 10)))  # raw, no rescale
    # A wide field of view: mostly air and soft tissue, bone in 0.5 % of the voxels.
    wide = np.full((100, 100, 40), -1000.0, dtype=np.float32)
    wide[20:80, 20:80] = 40.0
    wide[45:55, 45:55, :20] = 300.0
    check_plausible_ct(wide)
    with pytest.raises(NotScreenableError, match="label map"):
        check_plausible_ct(np.repeat(np.arange(25, dtype=np.int16), 40).reshape(10, 10, 10))


# ------------------------------------------------------------------------------------------
# Real data (../shared/data)


@pytest.mark.shared
def test_ge_head_tilt_loads(shared_data: Path) -> None:
    folder = shared_data / "dicom" / "ge_head_tilt"
    series = scan_dicom_folder(folder)
    assert len(series) == 1 and series[0].num_slices == 28
    vol = load_series(series[0])
    warnings = vol.meta["warnings"]
    assert any("gantry tilt" in w for w in warnings)
    assert any("uneven slice spacing" in w for w in warnings)
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(18.5, abs=0.2)
    assert vol.meta["num_source_slices"] == 28 and len(vol.source_datasets) == 28
    # first and last slice origins land where the headers say (LPS -> RAS)
    first = np.array([float(v) for v in vol.source_datasets[0].ImagePositionPatient]) * [-1, -1, 1]
    last = np.array([float(v) for v in vol.source_datasets[-1].ImagePositionPatient]) * [-1, -1, 1]
    np.testing.assert_allclose(vol.affine[:3, 3], first, atol=1e-4)
    np.testing.assert_allclose((vol.affine @ [0, 0, vol.shape[2] - 1, 1])[:3], last, atol=0.5)
    # a head with 4 and 7 mm slices is not screenable; the reason is clear, no crash
    with pytest.raises(NotScreenableError, match="mm thick"):
        load_volume(folder)


@pytest.mark.shared
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # bad_sequence.dcm has non-DICOM UIDs
def test_codec_single_images_not_screenable(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(NotScreenableError, match="no CT series usable"):
        load_volume(shared_data / "dicom" / "codecs")


@pytest.mark.shared
@pytest.mark.parametrize(
    "name", ["693_UNCI.dcm", "693_J2KR.dcm", "D_CLUNIE_CT1_RLE_FRAGS.dcm", "CT-MONO2-16-ankle"]
)
def test_decoders(shared_data: Path, name: str) -> None:
    px = read_pixels(shared_data / "dicom" / "codecs" / name)
    assert px.shape == (512, 512) and px.dtype == np.float32
    assert px.min() < -500 and px.max() > 500  # HU after rescale


@pytest.mark.shared
@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "bad_sequence.dcm"])
def test_jpeg_lossless_decodes_or_names_the_codec(shared_data: Path, name: str) -> None:
    try:
        px = read_pixels(shared_data / "dicom" / "codecs" / name)
    except NotScreenableError as exc:
        assert "JPEG Lossless" in str(exc)
        assert "pylibjpeg" in str(exc)
    else:
        assert px.ndim == 2 and px.size > 0


def test_read_pixels_not_dicom(tmp_path: Path) -> None:
    (tmp_path / "x.dcm").write_text("nope")
    with pytest.raises(InputError):
        read_pixels(tmp_path / "x.dcm")


def test_scan_copies_of_one_file_are_duplicates(tmp_path: Path) -> None:
    paths = _write(Volume(_hu_volume((8, 8, 1)), np.eye(4)), tmp_path / "one")
    for i in range(25):
        shutil.copy(paths[0], tmp_path / "one" / f"copy{i}.dcm")
    with pytest.raises(NotScreenableError, match="only 1 slice"):
        load_volume(tmp_path / "one")


def test_scanner_order_stores_slices_the_usual_way_up(tmp_path: Path) -> None:
    arr = _hu_volume((24, 20, 25))
    aff = _affine((0.8, 0.9, 2.0), (-10.5, 20.25, -300.0))  # RAS: i to the right, j to the front
    paths = _write(Volume(arr, aff), tmp_path / "scanner", scanner_order=True)
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert [float(v) for v in ds.ImageOrientationPatient] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    vol, _ = load_volume(tmp_path / "scanner")
    a, b = vol.canonical().volume, Volume(arr, aff).canonical().volume
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
