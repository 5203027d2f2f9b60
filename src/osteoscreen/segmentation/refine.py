"""Anatomical clean-up of the body instances the VB-Net finds (canonical RAS grid, +y anterior).

Five rules a vertebral body obeys whatever the network learnt:

- it is solid: holes inside a body and deep bays of its outline (where the network was unsure
  of dense trabecular patches or a bone island) are body;
- it reaches back to the spinal canal: the body is everything of the vertebra in front of the
  canal's front wall, the same definition our training targets use for whole-vertebra labels
  (``training.real.body_from_vertebra``). Where the network put that boundary too far forward,
  calling the back of the body "posterior elements", those voxels go to the body. The canal is
  the hole that body and posterior elements close around in axial slices; a body whose arch
  does not close (cut by the field of view, fractured, a network miss) is left as it is;
- it ends at its cortex: where the body runs on well past its bright shell in front or at
  the sides, through tissue darker than the shell, it has run into a vessel pressed against it
  (a contrast-filled aorta or vena cava, as bright as trabecular bone) and is cut back to the
  shell. Bodies with metal in them, and rays on which no shell stands out, are left alone;
- its outline is bone: outline voxels darker than 100 HU and no brighter than the body inside
  them are soft tissue or disc and are peeled off (at most 3 mm deep), so that the 3 mm
  erosion of the trabecular ROI starts from the cortex, not from the fat around it;
- its side walls end at the cortex's edge: where the scanner's kernel blurred the cortex into
  the tissue beyond it (a voxel or two of 150-300 HU), the outline keeps only the voxels
  brighter than half-way between the cortex and that tissue, the usual edge of a blurred
  object. The network, working at 2 mm, put its outline about one fine voxel beyond it.
"""

from __future__ import annotations

import warnings

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
#: The cortex is at least this much (HU) brighter than the trabecular bone it encloses ...
_CORTEX_ABOVE_HU = 120.0
#: ... and a body reaching at least this far (mm) beyond its brightest line, through tissue
#: darker than it, has run into what lies against its front or sides (a contrast-filled
#: aorta or vena cava). The shell's outer half and a voxel of partial volume lie beyond that
#: line in every body (in an osteoporotic native scan at 1 mm up to 4.5 mm of the network's
#: body, which 3 mm would have cut).
_BEYOND_CORTEX_MM = 4.0
#: Where it has, the body keeps this much (mm) beyond the line: the shell's outer half and
#: its partial volume.
_SHELL_OUTER_MM = 2.0
#: Rays from the body's centre every this many degrees; only those pointing forwards or
#: sideways (the back wall meets pedicles and the canal, not vessels).
_RAY_STEP_DEG = 4.0
_RAY_MIN_FORWARD = -0.25
#: The cortex is this much (HU) brighter than what lies beyond it, where something does.
_RING_CONTRAST_HU = 100.0
#: The shell is looked for only on voxels this fine in-plane (mm): it is about 1 mm thick, and on
#: 3 mm voxels (a downsampled real CT) bright trabecular specks passed for it.
_MAX_PIXEL_MM = 1.25
#: A body with a voxel this bright holds metal (a screw, cement): it is left as it is.
_METAL_HU = 2000.0
#: A ray's ring nearer the centre than this share of the slice's median ring is a bone island.
_RING_MIN_SHARE = 0.7
#: Half-maximum edge of the side walls: window (mm) for the cortex and the tissue beyond it,
#: the least contrast (HU) between them that makes an edge, and how deep (mm) it may trim.
_EDGE_WINDOW_MM = 3.0
_EDGE_CONTRAST_HU = 150.0
_EDGE_MAX_PEEL_MM = 1.5
#: A slice without a cortex ring of its own (an endplate) takes the cut of a slice this near (mm).
_BORROW_MM = 6.0
#: One layer of a side wall: the in-plane 4-neighbourhood, never across slices.
_IN_PLANE_STEP = np.zeros((3, 3, 1), dtype=bool)
_IN_PLANE_STEP[1, :, 0] = _IN_PLANE_STEP[:, 1, 0] = True


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
            step = _IN_PLANE_STEP
            layer_mm = min(spacing[:2])
        else:
            step = np.ones(across, dtype=bool)
            layer_mm = spacing[2]
        own = ndimage.uniform_filter(hu.astype(np.float32), size=along)
        # Layer by layer from the outside, at most _MAX_PEEL_MM deep in the direction peeled
        # (one layer of a 5 mm slice is already deeper: never a second one).
        for _ in range(max(1, int(round(_MAX_PEEL_MM / layer_mm)))):
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


def _peel_to_half_max(body: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Trim the side walls to the cortex's half-maximum edge.

    A blurred edge lies where the CT number is half-way between the bright side (the cortex) and
    the dark side (the soft tissue or canal beyond it). Outline voxels darker than that midpoint
    are partial volume outside the bone: the network's outline, at its 2 mm working spacing,
    runs on average about one fine voxel beyond it. Each outline voxel is compared with the
    brightest body voxel and the mean of the non-body voxels within ``_EDGE_WINDOW_MM``
    in-plane; where the two differ by less than ``_EDGE_CONTRAST_HU`` (a pedicle, bone beside
    bone) there is no edge to find and the voxel stays. At most ``_EDGE_MAX_PEEL_MM`` deep.
    """
    own = ndimage.uniform_filter(hu.astype(np.float32), size=(1, 1, 3))
    r = [max(1, int(round(_EDGE_WINDOW_MM / s))) for s in spacing[:2]]
    size = (2 * r[0] + 1, 2 * r[1] + 1, 1)
    shell = ndimage.maximum_filter(np.where(body, own, -2000.0).astype(np.float32), size=size)
    outside_w = ndimage.uniform_filter((~body).astype(np.float32), size=size)
    outside = ndimage.uniform_filter(np.where(body, 0.0, own).astype(np.float32), size=size)
    outside = outside / np.maximum(outside_w, 1e-6)
    edge = (outside_w > 0.05) & (shell - outside >= _EDGE_CONTRAST_HU) & (own < 0.5 * (shell + outside))
    out = body
    for _ in range(max(1, int(round(_EDGE_MAX_PEEL_MM / min(spacing[:2]))))):
        rim = out & ~ndimage.binary_erosion(out, structure=_IN_PLANE_STEP)
        drop = rim & edge
        if not drop.any():
            break
        out = out & ~drop
    return out  # type: ignore[no-any-return]


def _ring_along(prof: np.ndarray, bright: float, step: float) -> float:
    """Where a ray from a body's centre crosses its cortex (mm), or NaN.

    The cortex is the outermost local maximum at cortex brightness that is
    ``_RING_CONTRAST_HU`` brighter than what lies beyond it; a brighter speck in a vessel
    (noise) is not, a bone island is not the outermost.
    """
    p = prof  # short name for the peak test below
    if len(p) < 3:
        return float("nan")
    peak = np.r_[p[0] >= p[1], (p[1:-1] >= p[:-2]) & (p[1:-1] >= p[2:]), p[-1] >= p[-2]] & (p >= bright)
    skip = max(1, int(round(1.0 / step)))  # a voxel of partial volume just outside it
    for c in np.nonzero(peak)[0][::-1]:
        beyond = p[c + skip + 1 :]
        if len(beyond) * step < _BEYOND_CORTEX_MM or np.median(beyond) <= p[c] - _RING_CONTRAST_HU:
            return float(c * step)
    return float("nan")


def _cut_beyond_cortex(body: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Cut off what a body's outline runs into beyond its cortex, slice by slice.

    A vertebral body ends at its cortex, the bright ring round it (``_ring_along`` finds it on
    rays from the body's centre, forwards and sideways). Where the network's body reaches
    ``_BEYOND_CORTEX_MM`` or more past that ring, what lies past it (beyond the shell's outer
    half, ``_SHELL_OUTER_MM``, and unless as bright as the ring) is a vessel or soft tissue
    pressed against the body, not bone, and is dropped. Rays without such a ring (a faint
    cortex, an aorta as bright as the cortex) cut nothing; a slice without one of its own (an
    endplate) takes the cut of a slice within ``_BORROW_MM``; a body with metal in it, or on
    voxels coarser than ``_MAX_PIXEL_MM`` in-plane, is left as it is.
    """
    out = body.copy()
    if max(spacing[:2]) > _MAX_PIXEL_MM:
        return out  # a 1 mm shell has no place of its own on coarser voxels
    if not body.any() or hu[body].max() >= _METAL_HU:
        return out  # metal and its streaks: no intensity along a ray is to be trusted
    areas = body.sum(axis=(0, 1))
    typical = float(np.median(areas[areas > 0])) if areas.any() else 0.0
    step = min(spacing[:2]) / 2.0
    angles = np.deg2rad(np.arange(0.0, 360.0, _RAY_STEP_DEG))
    dirs = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (x, y) in mm, +y anterior
    forward = dirs[:, 1] >= _RAY_MIN_FORWARD
    # Along the body axis only: the side walls run along it, noise does not.
    smooth = ndimage.uniform_filter(hu.astype(np.float32), size=(1, 1, 3))
    n_a = len(angles)
    cuts: dict[int, tuple[np.ndarray, float]] = {}
    centres: dict[int, tuple[float, float, np.ndarray]] = {}
    for k in range(body.shape[2]):
        sl = body[:, :, k]
        if not sl.any():
            continue
        depth = ndimage.distance_transform_edt(sl, sampling=spacing[:2])
        core = depth >= 0.6 * depth.max()
        ci, cj = (float(c.mean()) for c in np.nonzero(core))
        centres[k] = (ci, cj, core)
        if areas[k] < 0.5 * typical or areas[k] < 20:
            continue  # an endplate's rim: partial volume, no ring to trust
        trab = float(np.median(hu[:, :, k][core]))
        bright = trab + _CORTEX_ABOVE_HU
        rmax = int(np.ceil(max(sl.shape[0] * spacing[0], sl.shape[1] * spacing[1]) / step))
        r = np.arange(rmax) * step
        ring_r = np.full(n_a, np.nan)
        last_r = np.full(n_a, np.nan)
        for a in np.where(forward)[0]:
            ii = ci + r * dirs[a, 0] / spacing[0]
            jj = cj + r * dirs[a, 1] / spacing[1]
            ok = (ii >= 0) & (jj >= 0) & (ii <= sl.shape[0] - 1) & (jj <= sl.shape[1] - 1)
            ii, jj = ii[ok], jj[ok]
            inside = sl[np.rint(ii).astype(int), np.rint(jj).astype(int)]
            if not inside.any():
                continue
            # Up to the last voxel of the mask along the ray, across any gap in it (a bay the
            # network left around a bone island, or between the body and a vessel).
            last = int(np.nonzero(inside)[0][-1])
            last_r[a] = r[last]
            prof = ndimage.map_coordinates(smooth[:, :, k], [ii[: last + 1], jj[: last + 1]], order=1)
            ring_r[a] = _ring_along(prof, bright, step)
        # The cortex runs round the body: a "ring" far inside the others is a bone island.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no ring at all
            typical_r = np.nanmedian(ring_r)
        ring_r[ring_r < _RING_MIN_SHARE * typical_r] = np.nan
        # The cortex is a smooth closed curve: a ray's ring radius is the median of its
        # neighbours' (a noise spike in a vessel does not move it outwards) ...
        idx = (np.arange(n_a)[:, None] + np.arange(-3, 4)[None, :]) % n_a
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rays with no ring near them
            med = np.nanmedian(np.where(forward[idx], ring_r[idx], np.nan), axis=1)
        cut_r = np.where(forward & (last_r - med >= _BEYOND_CORTEX_MM), med + _SHELL_OUTER_MM, np.inf)
        # ... and a ray between two cut ones is cut too (no spokes left standing).
        cut_r = np.minimum(cut_r, np.maximum(np.roll(cut_r, 1), np.roll(cut_r, -1)))
        if np.isfinite(cut_r).any():
            cuts[k] = (cut_r, bright)
    if not cuts:
        return out
    cut_slices = np.array(sorted(cuts))
    reach = max(1, int(round(_BORROW_MM / spacing[2])))
    for k in centres:
        src = k
        if k not in cuts:
            # A slice without a ring of its own (an endplate, all cortex) takes the cut, and the
            # centre, of the nearest slice that has one, if that is close: the vessel runs on
            # along the body, and an endplate's own centre may lie in what leaked.
            src = int(cut_slices[np.argmin(np.abs(cut_slices - k))])
            if abs(src - k) > reach:
                continue
        cut_r, bright = cuts[src]
        ci, cj, core = centres[src]
        sl = body[:, :, k]
        ii, jj = np.nonzero(sl)
        dx, dy = (ii - ci) * spacing[0], (jj - cj) * spacing[1]
        bins = np.rint(np.mod(np.arctan2(dy, dx), 2 * np.pi) / np.deg2rad(_RAY_STEP_DEG)).astype(int) % n_a
        # Never a voxel as bright as the cortex itself.
        drop = (np.hypot(dx, dy) > cut_r[bins]) & (smooth[ii, jj, k] < bright)
        if drop.any():
            new = sl.copy()
            new[ii[drop], jj[drop]] = False
            # Keep the piece that holds the body's core.
            lab, n = ndimage.label(new)
            if n > 1:
                keep = np.unique(lab[core & new])
                keep = keep[keep > 0]
                if not len(keep):
                    keep = np.array([int(np.argmax(np.bincount(lab.ravel())[1:])) + 1])
                new = np.isin(lab, keep)
            out[:, :, k] = new
    return out


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
    """Fill each body's holes, extend it back to its spinal canal, cut it back to its cortex where
    it ran into a vessel, peel soft tissue off its outline, trim its side walls to the cortex's
    half-maximum edge.

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
        # The rules that only take voxels away, in turn, each inside the body's own box.
        for shrink, note in (
            (_cut_beyond_cortex, "cut_beyond_cortex"),
            (_peel_soft_rim, "soft_rim_peeled"),
            (_peel_to_half_max, "trimmed_to_half_max"),
        ):
            tight = _tight(body)
            smaller = body.copy()
            smaller[tight] = shrink(body[tight], hu[box][tight], spacing)
            if smaller.sum() < body.sum():
                body = smaller
                done.append(note)
        if done:
            region = out[box]
            region[region == lbl] = 0
            region[body & (region == 0)] = lbl
            notes[lbl] = done
    return out, notes
