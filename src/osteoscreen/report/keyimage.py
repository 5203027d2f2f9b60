"""The key image: what a radiologist looks at to check a screening in a few seconds.

A mid-sagittal and a coronal slice through the measured vertebral bodies in a bone window,
radiological conventions (sagittal: anterior on the left; coronal: patient's right on the
left; superior at the top), true physical aspect ratio, bodies outlined and tinted in their
label colours, trabecular ROIs dashed, each level annotated with its HU, BMD and category,
and the patient-level result. Rendered with matplotlib's Agg canvas (no display, no pyplot
global state) and written atomically.

Also builds a DICOM Secondary Capture of the key image (highdicom ``SCImage``) so that PACS
viewers can show it next to the CT.
"""

from __future__ import annotations

import io
import logging
import os
import textwrap
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory, offset_copy
from pydicom.uid import generate_uid

from osteoscreen import __version__
from osteoscreen.io.atomic import write_bytes_atomic
from osteoscreen.io.volume import Volume
from osteoscreen.labels import colour_of, id_to_name
from osteoscreen.results import ScreeningResult, VertebraResult

__all__ = [
    "BONE_WINDOW",
    "DISCLAIMER",
    "key_image_dicom",
    "render_key_image",
    "render_key_image_rgb",
]

logger = logging.getLogger(__name__)

#: (width, level) in HU.
BONE_WINDOW = (1500.0, 300.0)
DISCLAIMER = "Automated opportunistic screening - not for diagnostic use without review by a radiologist"
CATEGORY_COLOURS = {"normal": "#2e9e44", "osteopenia": "#e08a00", "osteoporosis": "#d62728"}
_FONT = 11.0
_WIDTH_IN = 16.0
_DPI = 100
_MARGIN_MM_INPLANE = 45.0
_MARGIN_MM_Z = 15.0


def render_key_image(
    volume_canonical: Volume,
    labels: np.ndarray,
    rois: np.ndarray | dict[int, np.ndarray] | None,
    result: ScreeningResult,
    path: str | os.PathLike[str],
) -> None:
    """Render the key image and write it as a PNG (atomically).

    Args:
        volume_canonical: CT in RAS orientation (``Volume.canonical().volume``), in HU.
        labels: vertebral-body label map (ids of :mod:`osteoscreen.labels`) on the same grid.
        rois: trabecular ROIs on the same grid: a label map (the bodies' ids), a dict of
            masks by label id, or None.
        result: the screening result to annotate.
        path: destination of the PNG; its folder must exist.

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: if the volume is not RAS or an array's shape differs from the volume's.
    """
    fig = _figure(volume_canonical, labels, rois, result)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor=fig.get_facecolor())
    write_bytes_atomic(buf.getvalue(), path)
    logger.info("wrote key image %s", path)


def render_key_image_rgb(
    volume_canonical: Volume,
    labels: np.ndarray,
    rois: np.ndarray | dict[int, np.ndarray] | None,
    result: ScreeningResult,
) -> np.ndarray:
    """The key image as an RGB uint8 array (rows, columns, 3); arguments as :func:`render_key_image`."""
    fig = _figure(volume_canonical, labels, rois, result)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def key_image_dicom(
    rgb: np.ndarray,
    volume: Volume,
    *,
    series_number: int = 903,
    manufacturer: str = "osteoscreen",
) -> hd.sc.SCImage:
    """A DICOM Secondary Capture of the key image, in the CT's study.

    Args:
        rgb: the key image, uint8 (rows, columns, 3), e.g. from :func:`render_key_image_rgb`.
        volume: the CT volume; its first source dataset gives patient and study.
        series_number: Series Number of the Secondary Capture.
        manufacturer: Manufacturer of the Secondary Capture.

    Raises:
        TypeError: if ``rgb`` is not a uint8 array or ``volume`` not a Volume.
        ValueError: for a wrong shape or a volume without source datasets.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise TypeError("rgb must be a uint8 numpy array")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must have shape (rows, columns, 3), got {rgb.shape}")
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be an osteoscreen Volume, got {type(volume).__name__}")
    if not volume.source_datasets:
        raise ValueError("volume.source_datasets is empty: a Secondary Capture needs the CT's study")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=volume.source_datasets[0],
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        # A composite of two planes: no single orientation; "F" (foot) runs down both.
        patient_orientation=("A", "F"),
    )
    sc.SeriesDescription = "Bone density key image (osteoscreen)"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "YES"
    # Laterality (Type 2C) stays absent: the spine is not a paired structure.
    sc.BodyPartExamined = "SPINE"
    sc.SoftwareVersions = f"osteoscreen {__version__}"
    return sc


# --- Internals -----------------------------------------------------------------------------


@dataclass
class _Plane:
    """One displayed slice: image rows run superior -> inferior, columns per view."""

    name: str
    axis: int  # 0 = sagittal (fixed i), 1 = coronal (fixed j)
    index: int
    lo: int  # in-plane index range shown (i for coronal, j for sagittal)
    hi: int
    k_lo: int
    k_hi: int
    spacing_col: float
    spacing_k: float
    #: Coronal only: the j index per slice k (k_lo..k_hi), following the spine's curvature.
    curve: np.ndarray | None = None

    def cut(self, a: np.ndarray) -> np.ndarray:
        if self.axis == 0:
            s = a[self.index, self.lo : self.hi, self.k_lo : self.k_hi]
        elif self.curve is not None:
            ks = np.arange(self.k_lo, self.k_hi)
            s = a[self.lo : self.hi][:, self.curve, ks]
        else:
            s = a[self.lo : self.hi, self.index, self.k_lo : self.k_hi]
        # Flip both: anterior (high j) / patient right (high i) left, superior (high k) top.
        return np.ascontiguousarray(s[::-1, ::-1].T)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return (0.0, (self.hi - self.lo) * self.spacing_col, (self.k_hi - self.k_lo) * self.spacing_k, 0.0)

    def to_display(self, col_index: float, k: float) -> tuple[float, float]:
        return (
            (self.hi - 1 - col_index + 0.5) * self.spacing_col,
            (self.k_hi - 1 - k + 0.5) * self.spacing_k,
        )


def _check(
    volume: Volume,
    labels: np.ndarray,
    rois: np.ndarray | dict[int, np.ndarray] | None,
    result: ScreeningResult,
) -> None:
    if not isinstance(volume, Volume):
        raise TypeError(f"volume_canonical must be an osteoscreen Volume, got {type(volume).__name__}")
    if not isinstance(result, ScreeningResult):
        raise TypeError(f"result must be a ScreeningResult, got {type(result).__name__}")
    axcodes = nib.aff2axcodes(volume.affine)
    if tuple(axcodes) != ("R", "A", "S"):
        raise ValueError(
            f"volume_canonical must be in RAS orientation, got {''.join(str(c) for c in axcodes)}; "
            "pass Volume.canonical().volume and reorient labels and ROIs the same way"
        )
    if not isinstance(labels, np.ndarray) or labels.shape != volume.shape:
        raise ValueError(f"labels must be an array of the volume's shape {volume.shape}")
    if isinstance(rois, np.ndarray):
        if rois.shape != volume.shape:
            raise ValueError(f"rois must be a label map of the volume's shape {volume.shape}")
    elif rois is not None:
        if not isinstance(rois, dict):
            raise TypeError(
                f"rois must be a label map, a dict of label id -> mask, or None; got {type(rois).__name__}"
            )
        for label_id, mask in rois.items():
            if not isinstance(mask, np.ndarray) or mask.shape != volume.shape:
                raise ValueError(f"rois[{label_id}] must be an array of the volume's shape {volume.shape}")


def _centres_ijk(volume: Volume, result: ScreeningResult, labels: np.ndarray) -> dict[int, np.ndarray]:
    """ROI centre (voxel indices) per label id, from the results or the label map."""
    inv = np.linalg.inv(volume.affine)
    out: dict[int, np.ndarray] = {}
    for v in result.vertebrae:
        out[v.roi.label_id] = (inv @ np.r_[np.asarray(v.roi.center_mm, dtype=float), 1.0])[:3]
    if not out:
        for label_id in np.unique(labels[labels > 0]).tolist():
            out[int(label_id)] = np.argwhere(labels == label_id).mean(axis=0)
    return out


def _planes(volume: Volume, labels: np.ndarray, centres: dict[int, np.ndarray]) -> tuple[_Plane, _Plane]:
    shape = np.array(volume.shape)
    sp = volume.spacing
    c = np.median(np.stack(list(centres.values())), axis=0) if centres else (shape - 1) / 2.0
    c = np.clip(np.round(c), 0, shape - 1).astype(int)
    fg = np.argwhere(labels > 0)
    if len(fg):
        lo_idx, hi_idx = fg.min(axis=0), fg.max(axis=0) + 1
        margin = np.array([_MARGIN_MM_INPLANE / sp[0], _MARGIN_MM_INPLANE / sp[1], _MARGIN_MM_Z / sp[2]])
        lo_idx = np.clip(np.floor(lo_idx - margin), 0, shape).astype(int)
        hi_idx = np.clip(np.ceil(hi_idx + margin), 0, shape).astype(int)
    else:
        lo_idx, hi_idx = np.zeros(3, dtype=int), shape.astype(int)
    lo, hi = [int(v) for v in lo_idx], [int(v) for v in hi_idx]
    sag = _Plane("Sagittal", 0, int(c[0]), lo[1], hi[1], lo[2], hi[2], sp[1], sp[2])
    curve = _spine_curve(labels, lo[2], hi[2])
    cor = _Plane("Coronal", 1, int(c[1]), lo[0], hi[0], lo[2], hi[2], sp[0], sp[2], curve)
    return sag, cor


def _spine_curve(labels: np.ndarray, k_lo: int, k_hi: int) -> np.ndarray | None:
    """Antero-posterior centre of the bodies per slice, smoothed: a curved coronal plane.

    With lordosis and kyphosis one flat coronal slice misses the upper or lower bodies; this
    plane follows the column so every body is cut through its middle.
    """
    ks = np.arange(k_lo, k_hi)
    js = np.full(len(ks), np.nan)
    for n, k in enumerate(ks):
        jj = np.nonzero(labels[:, :, k].any(axis=0))[0]
        if jj.size:
            js[n] = 0.5 * (jj.min() + jj.max())
    ok = ~np.isnan(js)
    if ok.sum() < 2:
        return None
    js = np.interp(ks, ks[ok], js[ok])
    width = max(3, len(ks) // 20)
    js = np.convolve(np.pad(js, width, mode="edge"), np.ones(2 * width + 1) / (2 * width + 1), mode="valid")
    return np.clip(np.round(js), 0, labels.shape[1] - 1).astype(int)


def _fmt(v: VertebraResult) -> str:
    bmd = "  --  mg/cm³" if v.bmd_mg_cm3 is None else f"{v.bmd_mg_cm3:4.0f} mg/cm³"
    text = f"{v.label:<3} {v.roi.hu_mean:4.0f} HU  {bmd}  {v.category or 'n/a'}"
    return text + (" *" if v.excluded else "")


def _figure(
    volume: Volume,
    labels: np.ndarray,
    rois: np.ndarray | dict[int, np.ndarray] | None,
    result: ScreeningResult,
) -> Figure:
    _check(volume, labels, rois, result)
    centres = _centres_ijk(volume, result, labels)
    sag, cor = _planes(volume, labels, centres)
    by_id = {v.roi.label_id: v for v in result.vertebrae}

    h_mm = (sag.k_hi - sag.k_lo) * sag.spacing_k
    w_sag = sag.extent[1]
    w_cor = cor.extent[1]
    header_in, footer_in, margin_in, gutter_in, side_in, gap_in = 1.25, 0.55, 0.3, 4.1, 3.3, 0.35
    avail_w = _WIDTH_IN - 2 * margin_in - gutter_in - side_in - 2 * gap_in
    scale = min(avail_w / (w_sag + w_cor), 8.5 / h_mm)  # inches per mm
    img_h = h_mm * scale
    height_in = max(header_in + footer_in + img_h + 2 * margin_in, 6.5)
    fig = Figure(figsize=(_WIDTH_IN, height_in), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(fig)

    def box(x_in: float, y_top_in: float, w_in: float, h_in: float) -> tuple[float, float, float, float]:
        return (x_in / _WIDTH_IN, 1 - (y_top_in + h_in) / height_in, w_in / _WIDTH_IN, h_in / height_in)

    top = margin_in + header_in
    x = margin_in
    ax_sag = fig.add_axes(box(x, top, w_sag * scale, img_h))
    x += w_sag * scale + gutter_in
    ax_cor = fig.add_axes(box(x, top, w_cor * scale, img_h))
    x += w_cor * scale + gap_in
    side_x = x

    vmin = BONE_WINDOW[1] - BONE_WINDOW[0] / 2
    vmax = BONE_WINDOW[1] + BONE_WINDOW[0] / 2
    for ax, plane in ((ax_sag, sag), (ax_cor, cor)):
        _draw_plane(ax, plane, volume.array, labels, rois, vmin, vmax)
    _annotate_sagittal(fig, ax_sag, sag, labels, centres, by_id, scale)
    _annotate_coronal(ax_cor, cor, labels, centres)
    ax_sag.set_title(
        f"Sagittal  (bone window W{BONE_WINDOW[0]:.0f} L{BONE_WINDOW[1]:.0f})",
        color="white",
        fontsize=_FONT,
        loc="left",
    )
    ax_cor.set_title("Coronal (curved along the spine)", color="white", fontsize=_FONT, loc="left")

    _header(fig, result, volume, margin_in, height_in)
    _side_panel(fig, result, side_x / _WIDTH_IN, 1 - top / height_in)
    fig.text(
        margin_in / _WIDTH_IN, 0.25 / height_in, DISCLAIMER, color="#ffcc66", fontsize=_FONT, va="bottom"
    )
    fig.text(
        1 - margin_in / _WIDTH_IN,
        0.25 / height_in,
        f"osteoscreen {__version__}  |  {datetime.now():%Y-%m-%d %H:%M}",
        color="#999999",
        fontsize=_FONT - 2,
        ha="right",
        va="bottom",
    )
    return fig


def _draw_plane(
    ax: Axes,
    plane: _Plane,
    array: np.ndarray,
    labels: np.ndarray,
    rois: np.ndarray | dict[int, np.ndarray] | None,
    vmin: float,
    vmax: float,
) -> None:
    ext = plane.extent
    ax.imshow(
        plane.cut(array),
        cmap="gray",
        vmin=vmin,
        vmax=vmax,
        extent=ext,
        origin="upper",
        interpolation="bilinear",
    )
    lab2d = plane.cut(labels)
    ids = [int(i) for i in np.unique(lab2d) if i > 0]
    if ids:
        rgba = np.zeros((*lab2d.shape, 4), dtype=np.float32)
        for label_id in ids:
            rgba[lab2d == label_id] = (*(np.array(colour_of(label_id)) / 255.0), 0.28)
        ax.imshow(rgba, extent=ext, origin="upper", interpolation="nearest")
        for label_id in ids:
            ax.contour(
                (lab2d == label_id).astype(np.float32),
                levels=[0.5],
                extent=ext,
                origin="upper",
                colors=[np.array(colour_of(label_id)) / 255.0],
                linewidths=1.4,
            )
    if isinstance(rois, np.ndarray):
        cut = plane.cut(rois)
        roi_cuts = [cut == i for i in np.unique(cut) if i > 0]
    else:
        roi_cuts = [plane.cut(mask.astype(np.uint8)) for mask in (rois or {}).values()]
    for roi2d in roi_cuts:
        if roi2d.any():
            ax.contour(
                roi2d.astype(np.float32),
                levels=[0.5],
                extent=ext,
                origin="upper",
                colors="white",
                linewidths=1.0,
                linestyles="--",
            )
    ax.set_xlim(ext[0], ext[1])
    ax.set_ylim(ext[2], ext[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_color("#444444")
    # Orientation letters and a 5 cm scale bar.
    left, right = ("A", "P") if plane.axis == 0 else ("R", "L")
    kw: dict[str, Any] = {
        "color": "#ffff99",
        "fontsize": _FONT,
        "fontweight": "bold",
        "transform": ax.transAxes,
    }
    ax.text(0.01, 0.9, left, ha="left", va="center", **kw)
    ax.text(0.99, 0.9, right, ha="right", va="center", **kw)
    ax.text(0.5, 0.99, "S", ha="center", va="top", **kw)
    ax.text(0.5, 0.01, "I", ha="center", va="bottom", **kw)
    bar_mm = 50.0 if ext[2] > 100 else 20.0  # same bar in both views: from the common S-I extent
    x0, y0 = ext[1] * 0.05, ext[2] * 0.96
    ax.plot([x0, x0 + bar_mm], [y0, y0], color="white", linewidth=2)
    ax.text(
        x0 + bar_mm / 2,
        y0 - 1.5,
        f"{bar_mm / 10:.0f} cm",
        color="white",
        fontsize=_FONT - 2,
        ha="center",
        va="bottom",
    )


def _annotate_sagittal(
    fig: Figure,
    ax: Axes,
    plane: _Plane,
    labels: np.ndarray,
    centres: dict[int, np.ndarray],
    by_id: dict[int, VertebraResult],
    scale: float,
) -> None:
    lab2d = plane.cut(labels)
    items = []
    for label_id, c in centres.items():
        x, y = plane.to_display(c[1], c[2])
        rows = np.flatnonzero((lab2d == label_id).any(axis=1))
        if rows.size:
            # Point at the body's posterior edge on the row through its centre.
            row = int(np.clip(round(y / plane.spacing_k - 0.5), rows.min(), rows.max()))
            cols = np.flatnonzero(lab2d[row] == label_id)
            if cols.size:
                x = (cols.max() + 1.0) * plane.spacing_col
        v = by_id.get(label_id)
        text = _fmt(v) if v is not None else id_to_name(label_id)
        items.append((y, x, label_id, text, v))
    items.sort()
    # Keep labels at least ~1.7 lines apart (display mm per line = points / 72 / scale).
    min_gap = _FONT * 1.7 / 72.0 / scale
    placed: list[float] = []
    for y, *_ in items:
        placed.append(max(y, placed[-1] + min_gap) if placed else y)
    # Text starts 0.15 in right of the image, at the label's height.
    trans = offset_copy(
        blended_transform_factory(ax.transAxes, ax.transData), fig=fig, x=0.15, units="inches"
    )
    for (y, x, label_id, text, v), y_text in zip(items, placed):
        colour = np.array(colour_of(label_id)) / 255.0
        cat_colour = CATEGORY_COLOURS.get(v.category or "", "white") if v is not None else "white"
        ax.annotate(
            text,
            xy=(x, y),
            xycoords="data",
            xytext=(1.0, y_text),
            textcoords=trans,
            color="#888888" if (v is not None and v.excluded) else cat_colour,
            fontsize=_FONT,
            family="monospace",
            fontweight="bold",
            va="center",
            ha="left",
            annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 1.2, "shrinkA": 2, "shrinkB": 0},
            bbox={"boxstyle": "square,pad=0.15", "facecolor": "black", "edgecolor": colour, "linewidth": 1.2},
        )


def _annotate_coronal(ax: Axes, plane: _Plane, labels: np.ndarray, centres: dict[int, np.ndarray]) -> None:
    lab2d = plane.cut(labels)
    for label_id, c in centres.items():
        x, y = plane.to_display(c[0], c[2])
        rows = np.flatnonzero((lab2d == label_id).any(axis=1))
        if rows.size:
            row = int(np.clip(round(y / plane.spacing_k - 0.5), rows.min(), rows.max()))
            cols = np.flatnonzero(lab2d[row] == label_id)
            if cols.size:
                x = cols.min() * plane.spacing_col  # left edge of the body (patient's right)
        ax.text(
            x - 3.0,
            y,
            id_to_name(label_id),
            color=np.array(colour_of(label_id)) / 255.0,
            fontsize=_FONT,
            fontweight="bold",
            ha="right",
            va="center",
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "black", "alpha": 0.6, "linewidth": 0},
        )


def _header(fig: Figure, result: ScreeningResult, volume: Volume, margin_in: float, height_in: float) -> None:
    p = result.patient
    x = margin_in / _WIDTH_IN
    y = 1 - margin_in / height_in
    if p.bmd_mg_cm3 is not None and p.category is not None:
        levels = ", ".join(p.levels_used) or "none"
        headline = f"BMD {p.bmd_mg_cm3:.0f} mg/cm³  -  {p.category.upper()}"
        pooled = [n for n in p.levels_pooled if n not in p.levels_used]
        how = levels if len(p.levels_used) == 1 and pooled else f"mean of {levels}"
        if pooled:
            each = ", each" if len(p.levels_used) > 1 else ""
            how += f"{each} as the median with its usable neighbours ({', '.join(pooled)})"
        sub = f"{how}  (ACR QCT: normal > 120, osteopenia 80-120, osteoporosis < 80 mg/cm³)"
        colour = CATEGORY_COLOURS.get(p.category, "white")
    else:
        headline, sub, colour = "No patient-level BMD", "no usable level", "white"
    fig.text(x, y, headline, color=colour, fontsize=_FONT + 9, fontweight="bold", va="top")
    fig.text(x, y - 0.45 / height_in, sub, color="white", fontsize=_FONT, va="top")
    cls = ""
    if p.classifier_category is not None:
        agree = {True: "agrees", False: "DISAGREES", None: "agreement n/a"}[p.agreement]
        cls = f"Classifier: {p.classifier_category} ({agree})"
    if p.excluded_levels:
        cls += ("   |   " if cls else "") + f"Excluded: {', '.join(p.excluded_levels)}"
    fig.text(
        x,
        y - 0.75 / height_in,
        cls,
        color="#ff6666" if p.agreement is False else "white",
        fontsize=_FONT,
        va="top",
    )
    info = result.input_info or {}
    series = (
        info.get("description")
        or info.get("series_description")
        or volume.meta.get("series_description")
        or volume.meta.get("SeriesDescription")
        or "series description n/a"
    )
    extras = []
    for key, fmt in (("kvp", "{} kVp"), ("kVp", "{} kVp"), ("slice_thickness", "{} mm slices")):
        if info.get(key) is not None:
            extras.append(fmt.format(info[key]))
    fig.text(
        1 - margin_in / _WIDTH_IN, y, f"Series: {series}", color="white", fontsize=_FONT, va="top", ha="right"
    )
    if extras:
        fig.text(
            1 - margin_in / _WIDTH_IN,
            y - 0.3 / height_in,
            "  ".join(extras),
            color="#bbbbbb",
            fontsize=_FONT - 1,
            va="top",
            ha="right",
        )


def _side_panel(fig: Figure, result: ScreeningResult, x: float, y: float) -> None:
    lines: list[tuple[str, str]] = [("Level  HU    BMD      category", "#bbbbbb")]
    for v in sorted(result.vertebrae, key=lambda t: t.roi.label_id):
        bmd = "  -- " if v.bmd_mg_cm3 is None else f"{v.bmd_mg_cm3:5.0f}"
        colour = "#888888" if v.excluded else CATEGORY_COLOURS.get(v.category or "", "white")
        lines.append((f"{v.label:<5} {v.roi.hu_mean:5.0f} {bmd}    {v.category or 'n/a'}", colour))
        if v.excluded or v.roi.flags:
            why = ", ".join(f.replace("_", " ") for f in v.roi.flags) or "not used"
            text = f"{'excluded: ' if v.excluded else ''}{why}"
            for part in textwrap.wrap(text, 34, max_lines=2, placeholder=" ..."):
                lines.append((f"      {part}", "#ff9966"))
    lines.append(("", "white"))
    lines.append(("HU: trabecular ROI mean (dashed)", "#bbbbbb"))
    lines.append(("BMD in mg/cm³", "#bbbbbb"))
    if any(v.excluded for v in result.vertebrae):
        lines.append(("* grey: excluded from patient BMD", "#bbbbbb"))
    for w in result.warnings[:6]:
        for n, part in enumerate(textwrap.wrap(w, 40, max_lines=3, placeholder=" ...")):
            lines.append((("! " if n == 0 else "  ") + part, "#ffcc66"))
    step = _FONT * 1.45 / 72.0 / fig.get_figheight()
    for n, (text, colour) in enumerate(lines):
        fig.text(x, y - n * step, text, color=colour, fontsize=_FONT - 0.5, family="monospace", va="top")
