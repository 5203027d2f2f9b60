"""Key image: renders, has the promised size, is not blank, follows the conventions."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pydicom
import pytest

from osteoscreen.io.volume import Volume
from osteoscreen.report.keyimage import key_image_dicom, render_key_image, render_key_image_rgb

try:
    from ._dicom_fixtures import Phantom, make_phantom
except ImportError:  # tests/unit is not a package
    from _dicom_fixtures import Phantom, make_phantom  # type: ignore[no-redef]


@pytest.fixture(scope="module")
def canonical() -> tuple[Phantom, Volume, np.ndarray, dict[int, np.ndarray]]:
    phantom = make_phantom(shape=(96, 96, 64), spacing=(1.2, 1.2, 2.0))
    view = phantom.volume.canonical()
    labels = nib.orientations.apply_orientation(phantom.labels, view.transform)
    rois = {k: nib.orientations.apply_orientation(m, view.transform) for k, m in phantom.rois.items()}
    return phantom, view.volume, labels, rois


def test_renders_png(tmp_path: Path, canonical) -> None:  # type: ignore[no-untyped-def]
    phantom, volume, labels, rois = canonical
    out = tmp_path / "report.png"
    render_key_image(volume, labels, rois, phantom.result, out)
    assert out.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["report.png"]  # no temporary left behind
    img = mpimg.imread(out)
    assert 1200 <= img.shape[1] <= 1600
    assert img.shape[0] >= 400
    rgb = img[..., :3]
    assert rgb.std() > 0.05  # not blank
    # Category colours are present: orange (osteopenia) headline, red (osteoporosis) level.
    orange = (rgb[..., 0] > 0.8) & (rgb[..., 1] > 0.45) & (rgb[..., 1] < 0.65) & (rgb[..., 2] < 0.2)
    assert orange.sum() > 200


def test_rgb_and_secondary_capture(canonical) -> None:  # type: ignore[no-untyped-def]
    phantom, volume, labels, _rois = canonical
    rgb = render_key_image_rgb(volume, labels, None, phantom.result)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    sc = key_image_dicom(rgb, phantom.volume)
    buf = io.BytesIO()
    sc.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    back = pydicom.dcmread(buf)
    assert back.StudyInstanceUID == phantom.volume.source_datasets[0].StudyInstanceUID
    assert back.PatientID == phantom.volume.source_datasets[0].PatientID
    np.testing.assert_array_equal(back.pixel_array, rgb)


def test_orientation_conventions(canonical) -> None:  # type: ignore[no-untyped-def]
    """Sagittal: anterior left; coronal: patient's right left; superior top."""
    from osteoscreen.report.keyimage import _Plane

    arr = np.zeros((4, 5, 6))
    arr[3, 4, 5] = 1  # most right, most anterior, most superior voxel
    sag = _Plane("Sagittal", 0, 3, 0, 5, 0, 6, 1.0, 1.0).cut(arr)
    cor = _Plane("Coronal", 1, 4, 0, 4, 0, 6, 1.0, 1.0).cut(arr)
    assert sag.shape == (6, 5) and sag[0, 0] == 1
    assert cor.shape == (6, 4) and cor[0, 0] == 1


def test_rejects_non_ras_volume_and_bad_shapes(tmp_path: Path, canonical) -> None:  # type: ignore[no-untyped-def]
    phantom, volume, labels, _rois = canonical
    with pytest.raises(ValueError, match="RAS"):
        render_key_image(phantom.volume, phantom.labels, None, phantom.result, tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels"):
        render_key_image(volume, labels[:-1], None, phantom.result, tmp_path / "x.png")
    with pytest.raises(TypeError, match="result"):
        render_key_image(volume, labels, None, {}, tmp_path / "x.png")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())
