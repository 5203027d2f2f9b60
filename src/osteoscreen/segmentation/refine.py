"""Anatomical clean-up of the body instances the VB-Net finds (canonical RAS grid, +y anterior).

Three rules a vertebral body obeys whatever the network learnt:

- it is solid: holes inside a body and deep bays of its outline (where the network was unsure
  of dense trabecular patches or a bone island) are body;
- it reaches back to the spinal canal: the body is everything of the vertebra in front of the
  canal's front wall, the same definition our training targets use for whole-vertebra labels
  (``training.real.body_from_vertebra``). Where the network put that boundary too far forward,
  calling the back of the body "posterior elements", those voxels go to the body. The canal is
  the hole that body and posterior elements close around in axial slices; a body whose arch
  does not close (cut by the field of view, fractured, a network miss) is left as it is;
- its outline is bone: outline voxels darker than 100 HU and no brighter than the body inside
  them are soft tissue or disc and are peeled off (at most 3 mm deep), so that the 3 mm
  erosion of the trabecular ROI starts from the cortex, not from the fat around it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, Delaunay

from ..labels import SegClass

__all__ = ["refine_bodies"]

#: At least this much canal (ml) must be found before the body is extended to it.
_MIN_CANAL_ML = 0.1
#: The body grows back by at most this much (mm): a larger gap is not a misplaced boundary.
_MAX_EXTENSION_MM = 10.0
#: A bay of a body's outline this deep (mm) is a miss of the network, filled.
_BAY_DEPTH_MM = 6.0
#: An outline voxel below this (HU) and darker than the body inside it is soft tissue: muscle
#: and fat are below it, cortical bone (even a 3 mm voxel half filled by it) above it.
_RIM_HU = 100.0
_RIM_TOLERANCE_HU = 15.0
#: Soft tissue is peeled off an outline at most this deep (mm; at least one voxel).
_MAX_PEEL_MM = 3.0


def _convex_hull_2d(sl: np.ndarray) -> np.ndarray:
    """The convex hull of a 2-D mask's voxel centres, as a mask."""
    pts = np.argwhere(sl)
    if len(pts) < 4 or np.linalg.matrix_rank(pts - pts.mean(axis=0)) < 2:
        return sl.copy()
    lo, hi = pts.min(axis=0), pts.max(axis=0) + 1
    tri = Delaunay(pts[ConvexHull(pts).vertices])
    grid = np.argwhere(np.ones(hi - lo, dtype=bool)) + lo
    out = np.zeros_like(sl)
    inside = grid[tri.find_simplex(grid) >= 0]
    out[inside[:, 0], inside[:, 1]] = True
    return out | sl  # type: ignore[no-any-return]


def _fill_holes(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Holes and bays of a body (per axial slice), but not its back wall's concavity.

    A vertebral body's outline is convex except for its back wall, which curves in around the
    spinal canal. Enclosed holes are filled; so is every bay of the outline's convex hull whose
    centre lies in front of the body's back third and that reaches ``_BAY_DEPTH_MM`` into the
    hull (a network miss, often around a bone island; shallower notches are partial volume).
    """
    out = np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)
    areas = out.sum(axis=(0, 1))
    typical = float(np.median(areas[areas > 0])) if areas.any() else 0.0
    for k in range(out.shape[2]):
        sl = out[:, :, k]
        if not sl.any():
            continue
        sl = np.asarray(ndimage.binary_fill_holes(sl), dtype=bool)
        if areas[k] < 0.5 * typical:
            # An endplate's slice: its outline is partial volume, not a body's cross-section.
            out[:, :, k] = sl
            continue
        js = np.where(sl.any(axis=0))[0]
        back_third = js.min() + (js.max() - js.min()) / 3.0
        hull = _convex_hull_2d(sl)
        depth = ndimage.distance_transform_edt(np.pad(hull, 1), sampling=spacing[:2])[1:-1, 1:-1]
        bays, n = ndimage.label(hull & ~sl)
        for i in range(1, n + 1):
            bay = bays == i
            # A notch of the outline is partial volume; a deep bay is a miss.
            if np.where(bay)[1].mean() > back_third and depth[bay].max() >= _BAY_DEPTH_MM:
                sl |= bay
        out[:, :, k] = sl
    return out


def _peel_soft_rim(body: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Drop outline voxels that are soft tissue or disc, not bone: below ``_RIM_HU`` and darker
    than the body next to them (or no more than ``_RIM_TOLERANCE_HU`` brighter: soft tissue
    several voxels deep), layer by layer up to ``_MAX_PEEL_MM``. A real cortex or endplate voxel
    is brighter than the trabecular bone inside it, even in an osteoporotic body, and stops it.

    The side walls (in-plane outline) and the endplates (top and bottom along z) are peeled in
    turn; each voxel's HU is averaged along its wall (z for side walls, in-plane for endplates)
    against noise, never across it.
    """
    out = body
    for across, along in (((3, 3, 1), (1, 1, 3)), ((1, 1, 3), (3, 3, 1))):
        if across == (3, 3, 1):
            step = np.zeros(across, dtype=bool)
            step[1, :, 0] = step[:, 1, 0] = True
        else:
            step = np.ones(across, dtype=bool)
        own = ndimage.uniform_filter(hu.astype(np.float32), size=along)
        # Layer by layer from the outside, at most _MAX_PEEL_MM deep.
        for _ in range(max(1, int(round(_MAX_PEEL_MM / min(spacing))))):
            inner = ndimage.binary_erosion(out, structure=step)
            rim = out & ~inner
            weight = ndimage.uniform_filter(inner.astype(np.float32), size=across)
            inside = ndimage.uniform_filter(np.where(inner, hu, 0).astype(np.float32), size=across)
            inside = inside / np.maximum(weight, 1e-6)
            soft = rim & (weight > 0) & (own < _RIM_HU) & (own < inside + _RIM_TOLERANCE_HU)
            if not soft.any():
                break
            out = out & ~soft
    return out  # type: ignore[no-any-return]


def _canal_front(whole: np.ndarray, slices: np.ndarray, spacing: tuple[float, float, float]) -> int | None:
    """The canal's front wall (j index) of one vertebra, median over the body's slices."""
    fronts = []
    canal_voxels = 0
    for k in slices:
        sl = whole[:, :, k]
        if not sl.any():
            continue
        canal = ndimage.binary_fill_holes(sl) & ~sl
        if not canal.any():
            continue
        # The canal is the largest hole; small ones are foramina or noise.
        lab, n = ndimage.label(canal)
        sizes = ndimage.sum(canal, lab, range(1, n + 1))
        big = lab == (int(np.argmax(sizes)) + 1)
        canal_voxels += int(big.sum())
        fronts.append(int(np.where(big.any(axis=0))[0].max()))
    if not fronts or canal_voxels * float(np.prod(spacing)) / 1000.0 < _MIN_CANAL_ML:
        return None
    return int(np.median(fronts))


def _tight(mask: np.ndarray) -> tuple[slice, ...]:
    """The mask's bounding box grown by one voxel (clipped to the array)."""
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    return tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(sl, mask.shape))


def refine_bodies(
    inst: np.ndarray, classes: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, dict[int, list[str]]]:
    """Fill each body's holes, extend it back to its spinal canal, peel soft tissue off its outline.

    Args:
        inst: body instance map (0 background, 1..n bodies).
        classes: the VB-Net's tissue classes on the same grid.
        hu: the CT (HU) on the same grid.
        spacing: voxel size (mm).

    Returns:
        (the refined instance map, per instance the refinements applied).
    """
    out = inst.copy()
    notes: dict[int, list[str]] = {}
    posterior = classes == SegClass.POSTERIOR
    max_ext = max(1, int(round(_MAX_EXTENSION_MM / spacing[1])))
    boxes = ndimage.find_objects(inst)
    for lbl, sl in enumerate(boxes, start=1):
        if sl is None:
            continue
        # The body's box, widened in-plane to take in its arch (pedicles, laminae).
        pad = [int(np.ceil(25.0 / spacing[0])), int(np.ceil(40.0 / spacing[1])), 0]
        box = tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(sl, pad, inst.shape))
        body = inst[box] == lbl
        done: list[str] = []
        others = (inst[box] > 0) & ~body
        # Filling and peeling stay inside the body's own bounding box (plus a voxel): cheap.
        tight = _tight(body)
        filled = body.copy()
        filled[tight] = _fill_holes(body[tight], spacing) & ~others[tight]
        if filled.sum() > body.sum():
            done.append("holes_filled")
            body = filled
        # Its arch: posterior-element voxels touching this body, in the body's own slices.
        post = posterior[box] & ~others
        lab, _ = ndimage.label(post | body)
        ids = np.unique(lab[body])
        whole = np.isin(lab, ids[ids > 0])
        slices = np.where(body.any(axis=(0, 1)))[0]
        front = _canal_front(whole, slices, spacing)
        if front is not None:
            back = int(np.where(body.any(axis=(0, 2)))[0].min())  # its most posterior row now
            if back - front <= max_ext:
                xs = np.where(body.any(axis=(1, 2)))[0]
                # In front of the canal, inside the body's width and slices.
                add = np.zeros_like(body)
                add[xs.min() : xs.max() + 1, front + 1 :, slices.min() : slices.max() + 1] = True
                add &= whole & ~body
                if add.any():
                    body = body | add
                    done.append("extended_to_canal")
        tight = _tight(body)
        peeled = body.copy()
        peeled[tight] = _peel_soft_rim(body[tight], hu[box][tight], spacing)
        if peeled.sum() < body.sum():
            body = peeled
            done.append("soft_rim_peeled")
        if done:
            region = out[box]
            region[region == lbl] = 0
            region[body & (region == 0)] = lbl
            notes[lbl] = done
    return out, notes
