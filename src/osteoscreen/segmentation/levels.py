"""From tissue classes to labelled vertebral bodies: instances, then levels from several cues.

Instances: connected components of the body class (the disc class keeps neighbours apart).
A component as tall as several bodies (a disc missed, or joined at its rim) is cut where its
cross-section is smallest and the disc voxels under it most, as many times as its height
asks against the whole bodies nearest to it (bodies grow taller down the spine); where the
network saw any of its discs on slices thin enough to show one, only at a disc or a waist.
Candidates off the column of their neighbours are dropped, except for a part on the column
that is a body by itself, in volume and height (a body joined to false "body"
beside it).
Levels, from anatomical cues, reconciled:

- the last rib: the lowest body with rib heads beside it is T12, when a rib-free body
  follows below it (otherwise the scan may simply end above T12);
- the sacrum: the body just above the sacrum is L5;
- counting across the ordered instances from whichever anchor exists.

"Ribs" three or more rib-free bodies below the rib-bearing ones are not believed (ribs do not
come back below T12): a transverse process or the iliac crest taken for a rib, as long as
that leaves at most five bodies below the last rib (more: thoracic ribs the network missed).

When both anchors exist and disagree the confidence drops and one of them wins:

- 4 bodies between the last rib and the sacrum: the rib anchor (a sacralised L5), except where
  the body five above the sacrum bears ribs and a rib-free body separates it from the last
  "rib-bearing" one: that is a lumbar transverse process taken for a rib, and the anchors
  agree on the body five above;
- 6: the sacrum anchor. An absent or hypoplastic 12th rib, or one the network missed, leaves
  T12 looking rib-free; that is commoner than a sixth lumbar vertebra, and the sacrum is the
  larger, surer structure;
- fewer than 4 or more than 6: no anatomy explains it, the rib cue is wrong; the sacrum wins.

With the last rib alone, six rib-free bodies below it are read the same way as six above the
sacrum: the lowest is L5.

Sacral segments the network calls body (between the sacral alae) are not vertebral bodies
and are left out.
When neither anchor exists, the bodies are still returned, numbered V1, V2, ... from the top
(ids 101, 102, ...) with confidence 0: never a guessed level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..labels import UNKNOWN_LEVEL_BASE, SegClass, id_to_name, name_to_id

__all__ = ["BodyInstance", "LevelAssignment", "assign_levels", "claim_edge_slivers", "find_bodies"]

log = logging.getLogger(__name__)

_ORDER = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]


@dataclass
class BodyInstance:
    """One vertebral body found in the class map (canonical RAS grid)."""

    index: int  # 1-based, top to bottom
    mask_label: int  # its value in the instance map
    voxels: int
    centroid_ijk: tuple[float, float, float]
    z_range: tuple[int, int]
    touches_edge: bool
    rib_bearing: bool = False


#: A body candidate: (centroid slice, component label, voxels, centroid (voxels), slice range).
_Candidate = tuple[float, int, int, tuple[float, float, float], tuple[int, int]]


@dataclass
class LevelAssignment:
    """Label ids per instance and how sure we are."""

    ids: dict[int, int]  # instance mask label -> vertebra id
    confidence: float
    cues: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_bodies(
    classes: np.ndarray, spacing: tuple[float, float, float], min_volume_ml: float = 1.0
) -> tuple[np.ndarray, list[BodyInstance]]:
    """Separate the body class into instances ordered top (superior) to bottom.

    Returns:
        (instance map int32 with values 1..n, instances).
    """
    inst = np.zeros(classes.shape, dtype=np.int32)
    full = classes == SegClass.BODY
    boxes = ndimage.find_objects(full.astype(np.uint8))
    if not boxes or boxes[0] is None:
        return inst, []
    # Work inside the bodies' bounding box: the labelling statistics below scan whole arrays.
    box = boxes[0]
    off = tuple(s.start for s in box)
    body = full[box]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    lab, n = ndimage.label(body)
    if n >= 1:
        edges = (-off[2], classes.shape[2] - 1 - off[2])
        lab, n = _split_merged(lab, n, spacing, voxel_ml, min_volume_ml, classes[box] == SegClass.DISC, edges)
    if n == 0:
        return inst, []
    objs = ndimage.find_objects(lab)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    cents = _centroids(lab, objs)
    found = []
    keep = np.zeros(n + 1, dtype=np.int32)
    for i in range(n):
        if sizes[i] * voxel_ml < min_volume_ml:
            continue
        sl = objs[i]
        z0, z1 = sl[2].start + off[2], sl[2].stop - 1 + off[2]
        cent = tuple(float(c) + o for c, o in zip(cents[i], off))
        found.append((cent[2], i + 1, int(sizes[i]), cent, (z0, z1)))
    kept = _on_the_column(found, spacing, classes.shape[2])
    dropped = [t for t in found if t not in kept]
    found = kept + _trimmed_to_the_column(dropped, kept, lab, objs, off, spacing, classes.shape[2])
    found.sort(key=lambda t: -t[0])  # superior first (RAS: larger k is higher)
    # From the bottom up: a "body" between the sacrum's alae is a sacral segment.
    sacrum = classes == SegClass.SACRUM
    big_sacrum: np.ndarray | None = None
    while found and sacrum.any():
        lbl = found[-1][1]
        sl = objs[lbl - 1]
        corner = (sl[0].start + off[0], sl[1].start + off[1], sl[2].start + off[2])
        alae = sacrum
        if found[-1][4][0] == 0:
            # Cut by the scan's bottom edge, with nothing below to show a sacrum: only sacrum
            # pieces of real size count as alae (the network's sacrum breaks into small pieces
            # on noisy scans, so elsewhere every piece counts).
            big_sacrum = _sacrum_pieces(classes, spacing) if big_sacrum is None else big_sacrum
            alae = big_sacrum
        if not _between_alae(lab[sl] == lbl, corner, alae, spacing):
            break
        log.info(
            "body candidate at slices %d-%d lies between the sacral alae: not a vertebral body", *found[-1][4]
        )
        found.pop()
    bodies = []
    for rank, (_, lbl, size, cent, zr) in enumerate(found, start=1):
        keep[lbl] = rank
        touches = zr[0] == 0 or zr[1] == classes.shape[2] - 1
        bodies.append(BodyInstance(rank, rank, size, cent, zr, touches))  # type: ignore[arg-type]
    inst[box] = keep[lab]
    _mark_rib_bearing(classes, inst, bodies, spacing)
    return inst, bodies


#: A "sacrum" piece smaller than this (ml) is not the sacrum beside a body cut by the scan's
#: bottom edge: there the network calls a few hundred voxels beside a lumbar body sacrum
#: (test-1003-0067: 1.4 ml beside the last 3 slices of L2, which were then left out as a
#: sacral segment). It is also the least sacrum the sacrum anchor takes.
_SACRUM_MIN_ML = 5.0


def _sacrum_pieces(classes: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The sacrum class without its pieces under ``_SACRUM_MIN_ML``."""
    sacrum = classes == SegClass.SACRUM
    if not sacrum.any():
        return sacrum
    pieces, _ = ndimage.label(sacrum)
    ml = np.bincount(pieces.ravel()) * float(np.prod(spacing)) / 1000.0
    ml[0] = 0.0
    return (ml >= _SACRUM_MIN_ML)[pieces]


#: The sacral alae flank the S1 body on both sides within this distance (mm) ...
_ALA_REACH_MM = 40.0
#: ... in at least this share of its slices; a lumbar body (transverse processes, no alae)
#: reached 15 % at most, sacral segments taken for bodies 88 % or more (real and synthetic CT).
_ALA_SHARE = 0.5


def _between_alae(
    piece: np.ndarray, at: tuple[int, int, int], sacrum: np.ndarray, spacing: tuple[float, float, float]
) -> bool:
    """Whether sacrum voxels lie left and right of a piece in most of its slices.

    Args:
        piece: the piece's mask on its own bounding box.
        at: that box's corner on the grid of ``sacrum``.
        sacrum: the sacrum class on the whole grid.
    """
    reach = int(round(_ALA_REACH_MM / spacing[0]))
    i0 = max(0, at[0] - reach)
    i1 = min(sacrum.shape[0], at[0] + piece.shape[0] + reach)
    sac = sacrum[i0:i1, at[1] : at[1] + piece.shape[1], at[2] : at[2] + piece.shape[2]]
    flanked = 0
    slices = 0
    for k in range(piece.shape[2]):
        ii, jj = np.nonzero(piece[:, :, k])
        if ii.size == 0:
            continue
        ii = ii + (at[0] - i0)
        slices += 1
        # Beside the piece: its own front-back extent in this slice.
        side = np.asarray(sac[:, jj.min() : jj.max() + 1, k].any(axis=1))
        flanked += bool(side[: ii.min()].any() and side[ii.max() + 1 :].any())
    return slices > 0 and flanked >= _ALA_SHARE * slices


def _centroids(lab: np.ndarray, objs: list[tuple[slice, ...] | None]) -> list[tuple[float, ...]]:
    """Centre of mass (voxels) of each label 1..n, each computed inside its own box.

    ``ndimage.center_of_mass`` scans the whole array once per label.
    """
    out: list[tuple[float, ...]] = []
    for i, sl in enumerate(objs, start=1):
        if sl is None:
            out.append((float("nan"),) * lab.ndim)
            continue
        idx = np.nonzero(lab[sl] == i)
        out.append(tuple(float(ax.mean()) + s.start for ax, s in zip(idx, sl)))
    return out


#: A body lies on the column of its neighbours: farther than this in-plane (mm) from the
#: volume-weighted median of the bodies within ``_COLUMN_WINDOW_MM`` above and below, and it is
#: something else (contrast-filled heart or aorta, rib, pelvis).
_COLUMN_TOLERANCE_MM = 22.0
_COLUMN_WINDOW_MM = 90.0
#: Fragments much smaller than the median body are dropped unless the scan's edge cuts them.
_MIN_RELATIVE_VOLUME = 0.25


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cw = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cw, cw[-1] / 2.0)])


def _column_at(xyz: np.ndarray, vol: np.ndarray, z: float) -> tuple[float, float]:
    """Where the column of these bodies passes at height ``z`` (mm, in-plane x and y).

    The column curves (lordosis, kyphosis): its position is the bodies' volume-weighted median
    moved along the median of their pairwise slopes (robust to one body that is not a body).
    """
    cz = _weighted_median(xyz[:, 2], vol)
    cx = _weighted_median(xyz[:, 0], vol)
    cy = _weighted_median(xyz[:, 1], vol)
    # Slopes from the body-sized candidates only (a fragment's centroid says little).
    pts = xyz[vol >= _MIN_RELATIVE_VOLUME * float(np.median(vol))]
    if len(pts) >= 2:
        i, j = np.triu_indices(len(pts), k=1)
        dz = pts[j, 2] - pts[i, 2]
        ok = np.abs(dz) >= 10.0
        if ok.any():
            sx = float(np.median((pts[j, 0] - pts[i, 0])[ok] / dz[ok]))
            sy = float(np.median((pts[j, 1] - pts[i, 1])[ok] / dz[ok]))
            # A column tilts, it does not lie down: slopes are capped at 1 mm per mm.
            cx += float(np.clip(sx, -1.0, 1.0)) * (z - cz)
            cy += float(np.clip(sy, -1.0, 1.0)) * (z - cz)
    return cx, cy


def _on_the_column(
    found: list[_Candidate], spacing: tuple[float, float, float], n_slices: int
) -> list[_Candidate]:
    """Keep the instances that sit on the vertebral column and are not fragments.

    The column is estimated locally (bodies within a window above and below, weighted by
    volume), twice: the second pass uses only what the first kept, so that a large false body
    (a contrast-filled heart) cannot pull the column towards itself.
    """
    if len(found) < 3:
        return found
    xyz = np.array([[c[0] * spacing[0], c[1] * spacing[1], c[2] * spacing[2]] for _, _, _, c, _ in found])
    vol = np.array([float(t[2]) for t in found])
    keep = np.ones(len(found), dtype=bool)

    def neighbours(i: int, among: np.ndarray) -> np.ndarray:
        # Those within the window; at the column's end (fewer than two there), the two nearest.
        dz = np.abs(xyz[:, 2] - xyz[i, 2])
        near = among & (dz <= _COLUMN_WINDOW_MM)
        near[i] = False
        if near.sum() < 2:
            others = np.where(among & (np.arange(len(found)) != i))[0]
            near = np.zeros(len(found), dtype=bool)
            near[others[np.argsort(dz[others])[:2]]] = True
        return near

    for _ in range(2):
        new = keep.copy()
        for i in range(len(found)):
            near = neighbours(i, keep)
            if near.sum() < 2:
                continue
            cx, cy = _column_at(xyz[near], vol[near], xyz[i, 2])
            new[i] = float(np.hypot(xyz[i, 0] - cx, xyz[i, 1] - cy)) <= _COLUMN_TOLERANCE_MM
        if new.sum() >= 2:
            keep = new
    # Fragments: small against their kept neighbours (body size grows from T1 to L5).
    frag = np.zeros(len(found), dtype=bool)
    for i, t in enumerate(found):
        near = neighbours(i, keep)
        at_edge = t[4][0] == 0 or t[4][1] == n_slices - 1
        if keep[i] and near.sum() >= 2 and not at_edge:
            frag[i] = vol[i] < _MIN_RELATIVE_VOLUME * float(np.median(vol[near]))
    keep &= ~frag
    dropped = len(found) - int(keep.sum())
    if dropped:
        log.info("%d body candidate(s) off the vertebral column or fragments: dropped", dropped)
    return [t for t, k in zip(found, keep) if k]


#: A candidate dropped as off the column keeps what lies within this distance (mm) of the
#: column's axis, where that part is a body on the column by itself: the network sometimes
#: joins a body to a false "body" beside it (test-1003-0006: T12 and 29 ml of soft tissue
#: beside it at the scan's top edge, whose centroid then lay off the column; T12 was dropped
#: and the T11 tail above named T12). Lumbar bodies are about 50 mm wide.
_TRIM_RADIUS_MM = 30.0

#: ... and where that part is at least this share of its kept neighbours' median height, or
#: is cut by the scan's edge: a scrap of a body cut off by the height split is not a body of
#: its own (independent-2002-0134: the top two 5 mm slices of L3, kept as a body, put every
#: level above it one off).
_TRIM_MIN_HEIGHT = 0.5


def _trimmed_to_the_column(
    dropped: list[_Candidate],
    kept: list[_Candidate],
    lab: np.ndarray,
    objs: list[tuple[slice, ...] | None],
    off: tuple[int, ...],
    spacing: tuple[float, float, float],
    n_slices: int,
) -> list[_Candidate]:
    """The body-sized parts of dropped candidates that lie on the column of the kept ones.

    ``lab`` loses the rest of each such candidate; a candidate with no such part stays dropped.
    """
    if len(kept) < 2 or not dropped:
        return []
    xyz = np.array([[c[0] * spacing[0], c[1] * spacing[1], c[2] * spacing[2]] for _, _, _, c, _ in kept])
    vol = np.array([float(t[2]) for t in kept])
    height = np.array([float(t[4][1] - t[4][0] + 1) for t in kept])
    out: list[_Candidate] = []
    for _, lbl, size, cent, _ in dropped:
        near = np.abs(xyz[:, 2] - cent[2] * spacing[2]) <= _COLUMN_WINDOW_MM
        if near.sum() < 2:
            continue
        least = _MIN_RELATIVE_VOLUME * float(np.median(vol[near]))
        sl = objs[lbl - 1]
        if size < least or sl is None:
            continue
        corner = [s.start + o for s, o in zip(sl, off)]
        comp = lab[sl] == lbl
        ii, jj, kk = np.nonzero(comp)
        x = (ii + corner[0]) * spacing[0]
        y = (jj + corner[1]) * spacing[1]
        inside = np.zeros(len(ii), dtype=bool)
        for k in np.unique(kk):
            cx, cy = _column_at(xyz[near], vol[near], float((k + corner[2]) * spacing[2]))
            at = kk == k
            inside[at] = np.hypot(x[at] - cx, y[at] - cy) <= _TRIM_RADIUS_MM
        if inside.sum() < least:
            continue
        new_cent = tuple(float(a[inside].mean()) + c for a, c in zip((ii, jj, kk), corner))
        cx, cy = _column_at(xyz[near], vol[near], new_cent[2] * spacing[2])
        if np.hypot(new_cent[0] * spacing[0] - cx, new_cent[1] * spacing[1] - cy) > _COLUMN_TOLERANCE_MM:
            continue
        zr = (int(kk[inside].min()) + corner[2], int(kk[inside].max()) + corner[2])
        at_edge = zr[0] == 0 or zr[1] == n_slices - 1
        if not at_edge and zr[1] - zr[0] + 1 < _TRIM_MIN_HEIGHT * float(np.median(height[near])):
            continue
        outside = comp.copy()
        outside[ii[inside], jj[inside], kk[inside]] = False
        lab[sl][outside] = 0
        log.info(
            "body candidate at slices %d-%d lies partly off the column: the %d of its %d voxels on it kept",
            *zr,
            int(inside.sum()),
            len(ii),
        )
        out.append((new_cent[2], lbl, int(inside.sum()), new_cent, zr))  # type: ignore[arg-type]
    return out


#: Taller than this (mm) no single vertebral body is (lumbar bodies are 25-30 mm high): a
#: median component height above it means most bodies are joined, and the typical height
#: ``_TYPICAL_BODY_MM`` is used instead to decide how many bodies a component holds.
_MAX_BODY_MM = 38.0
_TYPICAL_BODY_MM = 27.0
#: A component's height is compared with the median of this many whole bodies nearest to it.
_NEAR_BODIES = 4


def _split_merged(
    lab: np.ndarray,
    n: int,
    spacing: tuple[float, float, float],
    voxel_ml: float,
    min_volume_ml: float,
    disc: np.ndarray | None = None,
    edge_slices: tuple[int, int] | None = None,
) -> tuple[np.ndarray, int]:
    """Cut components that span several body heights at their joints (missed discs).

    A component much taller than a body is two or more bodies joined where the disc was not
    (fully) found; the cut goes where the cross-section is smallest and the partial disc the
    segmenter did see is largest. ``edge_slices``: the scan's first and last slice in ``lab``'s
    coordinates (a component reaching one is cut by the scan's edge).
    """
    objs = ndimage.find_objects(lab)
    sizes = ndimage.sum_labels(lab > 0, lab, index=np.arange(1, n + 1))
    heights = np.array([(o[2].stop - o[2].start) * spacing[2] for o in objs])
    big = sizes * voxel_ml >= min_volume_ml
    if not big.any():
        return lab, n
    # A body's height is judged from whole bodies stacked along the column, and not from:
    # - a component cut by the scan's top or bottom edge (its height is the edge's);
    # - one lying beside a larger component (half its slices or more within the other's, and
    #   the other at least half as wide there): a fragment at that body's height, such as
    #   pieces of the neck the network called body beside the top of a merged column
    #   (test-1003-0054, 5 mm slices: four 10-25 mm pieces beside a 290 mm column made the
    #   median 15 mm and cut the column into 19 bodies, not 12). A thin strip reaching up
    #   beside a body does not make it a fragment (independent-2002-0144, arterial phase: L3-L5
    #   joined to a strip in front of the spine, most likely the enhanced aorta, 1-2 cm2 of it
    #   beside L1 and L2, whose 11 cm2 then no longer counted as bodies; L5 was cut in two);
    # - one that is itself several bodies (taller than any body, or 1.6 median heights or more).
    # Bodies grow taller down the spine (thoracic 15-20 mm, lumbar 25-30 mm), so each component
    # is then judged against the whole bodies nearest to it, not the scan's median: a scan from
    # the neck to L2 has a median near T6's, by which a whole L1 is two bodies (test-1003-0132).
    ranges = [(o[2].start, o[2].stop - 1) for o in objs]
    first, last = edge_slices if edge_slices is not None else (-1, lab.shape[2])
    whole = big & np.array([r[0] > first and r[1] < last for r in ranges])
    areas = {int(c): (lab[objs[c]] == c + 1).sum(axis=(0, 1)) for c in np.flatnonzero(big)}
    for c in np.flatnonzero(whole):
        whole[c] = not any(
            sizes[j] > sizes[c] and _beside(ranges[c], areas[int(c)], ranges[j], areas[int(j)])
            for j in np.flatnonzero(big)
        )
    if not whole.any():
        whole = big
    single = whole & (heights <= _MAX_BODY_MM)
    med = float(np.median(heights[single if single.any() else whole]))
    single &= heights < 1.6 * med
    if single.any():
        med = float(np.median(heights[single]))
    if med > _MAX_BODY_MM or single.sum() < 2:
        med = min(med, _TYPICAL_BODY_MM)
    singles = np.flatnonzero(single if single.any() else whole)
    centres = np.array([(r[0] + r[1]) / 2.0 for r in ranges])
    cut = False
    for i, o in enumerate(objs):
        if not big[i]:
            continue
        body_mm = med
        near = singles[singles != i]
        if len(near) >= 2:
            near = near[np.argsort(np.abs(centres[near] - centres[i]), kind="stable")[:_NEAR_BODIES]]
            body_mm = float(np.median(heights[near]))
            body_mm = min(body_mm, _TYPICAL_BODY_MM) if body_mm > _MAX_BODY_MM else body_mm
        pieces = int(round(heights[i] / body_mm)) if body_mm > 0 else 1
        if heights[i] < 1.6 * body_mm or pieces < 2:
            continue
        comp = lab[o] == i + 1
        area = areas[i].astype(float)  # earlier cuts touched only other components
        score = area
        disc_area = None
        if disc is not None:
            # Disc voxels under the component's footprint, slice by slice.
            foot = comp.any(axis=2)
            disc_area = (disc[o] & foot[:, :, None]).sum(axis=(0, 1)).astype(float)
            score = area - 2.0 * disc_area
        nz = len(area)
        gap = max(1, int(round(0.6 * body_mm / spacing[2])))
        edge = max(1, int(round(0.3 * body_mm / spacing[2])))
        order = np.argsort(score[edge : nz - edge], kind="stable") + edge
        chosen: list[int] = []
        for k in order:
            if all(abs(int(k) - c) >= gap for c in chosen):
                chosen.append(int(k))
            if len(chosen) == pieces - 1:
                break
        if disc_area is not None:
            joints = _joints_only(chosen, area, disc_area, spacing)
            if len(joints) < len(chosen):
                log.info(
                    "merged bodies at slices %d-%d: %d of %d cuts have neither a disc nor a waist beside "
                    "them; not cut there",
                    o[2].start,
                    o[2].stop - 1,
                    len(chosen) - len(joints),
                    len(chosen),
                )
            chosen = joints
        for k in chosen:
            sub = lab[o]
            sub[:, :, k][comp[:, :, k]] = 0
            cut = True
    if not cut:
        return lab, n
    new, m = ndimage.label(lab > 0)
    return new, int(m)


#: Disc voxels under a component's footprint within this distance (mm) of a cut count for it.
_JOINT_REACH_MM = 2.5
#: A cut "sees a disc" where the disc under the footprint near it covers at least this share of
#: the component's median cross-section.
_JOINT_DISC_SHARE = 0.1
#: Slices farther apart than this (mm) can miss a disc altogether: a disc holds a slice centre
#: only where the slices lie no farther apart than it is high, and thoracic discs are 3-5 mm
#: high. There a cut needs no disc beside it (test-1003-0002, 5 mm slices: the real cut
#: between T3 and T4 had 5 disc voxels within a slice of it).
_JOINT_MAX_SLICE_MM = 3.0
#: A cut is a waist where the component's cross-section there is at most this share of its
#: median one.
_JOINT_WAIST = 0.5


def _joints_only(
    chosen: list[int], area: np.ndarray, disc_area: np.ndarray, spacing: tuple[float, float, float]
) -> list[int]:
    """The cuts that lie at a joint, where the segmenter saw the component's discs at all.

    ``area`` is the component's cross-section and ``disc_area`` the disc voxels under its
    footprint, slice by slice.

    The number of cuts comes from the component's height, which a piece of bone beside the
    column or taller lumbar bodies (against the median, often thoracic, body height) inflate;
    the extra cuts then fall where the cross-section is merely smallest, inside a body
    (test-1003-0091: a 224 mm lumbar column cut at eight places, three of them with no disc
    within 2.5 mm and two of those through a full cross-section). Where at least one cut of the
    component has a disc beside it, a cut with neither a disc nor a waist is dropped. A
    component with no disc at any cut keeps its cuts (height is then the only evidence), and
    so do components on slices too thick to show a disc.
    """
    if not chosen or spacing[2] > _JOINT_MAX_SLICE_MM:
        return chosen
    median_area = float(np.median(area[area > 0]))
    reach = max(1, int(round(_JOINT_REACH_MM / spacing[2])))
    least = _JOINT_DISC_SHARE * median_area
    seen = {k: bool(disc_area[max(0, k - reach) : k + reach + 1].max() >= least) for k in chosen}
    if not any(seen.values()):
        return chosen
    return [k for k in chosen if seen[k] or area[k] <= _JOINT_WAIST * median_area]


#: Rib heads articulate at the body's posterolateral corner: rib voxels this far (mm) beyond the
#: body's half-width count as a rib head. The shaft of the last rib slopes down and out, so
#: at the next body's height it lies farther out and must not make that body rib-bearing.
_RIB_HEAD_REACH_MM = 22.0
#: Less rib than this (ml) in the zone is not a rib head: more than one voxel of a 3 mm grid
#: (0.027 ml), which alone had made L1 of an osteoporotic scan "rib-bearing" (the 12th rib's
#: shaft passing its top corner), every level then one off.
_RIB_HEAD_MIN_ML = 0.04
_RIB_MIN_ML = 1.0
_RIB_MIN_REACH_MM = 20.0


def _mark_rib_bearing(
    classes: np.ndarray, inst: np.ndarray, bodies: list[BodyInstance], spacing: tuple[float, float, float]
) -> None:
    """A body bears ribs when a rib reaches its posterolateral corner and runs on outwards.

    Three conditions, against known confusions: the head zone is narrow (the shaft of the
    rib above passes farther out) and a rib piece counts only where its top lies within the
    body's height (the shaft of the rib above starts higher), and the piece must be a rib (at
    least ``_RIB_MIN_ML`` or reaching ``_RIB_MIN_REACH_MM`` beyond the zone), not a lumbar
    transverse process taken for one.
    """
    rib = classes == SegClass.RIB
    if not rib.any():
        return
    voxel_ml = float(np.prod(spacing)) / 1000.0
    ribs, _ = ndimage.label(rib)
    rib_ml = np.bincount(ribs.ravel()) * voxel_ml
    rib_boxes = ndimage.find_objects(ribs)
    body_boxes = ndimage.find_objects(inst)
    for b in bodies:
        z0, z1 = b.z_range
        ci, cj, _ = b.centroid_ijk
        # The body's half-width (left-right), robust to a blob merged at its side.
        own = body_boxes[b.mask_label - 1]
        xs = np.nonzero(inst[own] == b.mask_label)[0] + own[0].start
        half_w = float(np.clip((np.percentile(xs, 95) - np.percentile(xs, 5)) * spacing[0] / 2.0, 15.0, 28.0))
        reach = int(round((half_w + _RIB_HEAD_REACH_MM) / spacing[0]))
        back = int(round(45.0 / spacing[1]))
        i0, i1 = max(0, int(ci) - reach), min(classes.shape[0], int(ci) + reach + 1)
        j0, j1 = max(0, int(cj) - back), min(classes.shape[1], int(cj) + int(round(10.0 / spacing[1])))
        zpad = int(round(3.0 / spacing[2]))
        k0, k1 = max(0, z0 - zpad), min(classes.shape[2], z1 + 1 + zpad)
        zone = ribs[i0:i1, j0:j1, k0:k1]
        ids, counts = np.unique(zone[zone > 0], return_counts=True)
        # Ribs run down and out from their heads: a piece whose top lies above this body's is
        # the shaft of a higher rib passing the zone (the 12th rib beside L1 at a chest scan's
        # bottom edge, test-1003-0051 and independent-2002-0182: every body then looked
        # rib-bearing and no level was named).
        own_level = np.array([rib_boxes[i - 1][2].stop - 1 <= z1 + zpad for i in ids], dtype=bool)
        ids, counts = ids[own_level], counts[own_level]
        if counts.sum() * voxel_ml < _RIB_HEAD_MIN_ML:
            b.rib_bearing = False
            continue
        far = (half_w + _RIB_HEAD_REACH_MM + _RIB_MIN_REACH_MM) / spacing[0]
        b.rib_bearing = any(
            rib_ml[i] >= _RIB_MIN_ML
            or max(abs(rib_boxes[i - 1][0].start - ci), abs(rib_boxes[i - 1][0].stop - ci)) >= far
            for i in ids
        )
    _mark_by_rib_ends(ribs, rib_ml, rib_boxes, bodies, spacing)


#: A rib whose head and neck the network called "posterior element" still starts beside its
#: own body: its medial end lies at most this far (mm) from the column ...
_RIB_END_MAX_LAT_MM = 75.0
#: ... behind the body's centre by this much (mm): the costotransverse joint, not the shaft of a
#: higher rib, which passes level with the body or in front of it ...
_RIB_END_AP_MM = (-45.0, -10.0)
#: ... and the rib's top lies within the body's height (plus this margin, mm): ribs run down
#: from their heads, so a piece whose top is higher belongs to a rib of a higher level.
_RIB_END_Z_PAD_MM = 3.0
#: It runs outwards at least this far (mm) from that end: a rib, not a shaft fragment.
_RIB_END_MIN_RUN_MM = 30.0


def _mark_by_rib_ends(
    ribs: np.ndarray,
    rib_ml: np.ndarray,
    rib_boxes: list[tuple[slice, ...] | None],
    bodies: list[BodyInstance],
    spacing: tuple[float, float, float],
) -> None:
    """Second cue: a whole rib (>= ``_RIB_MIN_ML``) whose medial end lies beside a body.

    On synthetic chest scans the fine VB-Net labels the proximal 3-4 cm of the ribs as
    posterior elements, so no rib reaches the head zone of ``_mark_rib_bearing`` and the
    lower thoracic bodies looked rib-free (levels then 1 to 7 off). The rib itself is still
    there: its medial end marks the level it belongs to.
    """
    if len(bodies) < 2:
        return
    zs = np.array([b.centroid_ijk[2] for b in bodies])
    order = np.argsort(zs)
    zs = zs[order]
    cis = np.array([b.centroid_ijk[0] for b in bodies])[order]
    cjs = np.array([b.centroid_ijk[1] for b in bodies])[order]
    pad = _RIB_END_Z_PAD_MM / spacing[2]
    for lbl, sl in enumerate(rib_boxes, start=1):
        if sl is None or rib_ml[lbl] < _RIB_MIN_ML:
            continue
        ii, jj, kk = np.nonzero(ribs[sl] == lbl)
        ii, jj, kk = ii + sl[0].start, jj + sl[1].start, kk + sl[2].start
        lat = np.abs(ii - np.interp(kk, zs, cis)) * spacing[0]
        a = int(lat.argmin())
        ap = (jj[a] - np.interp(kk[a], zs, cjs)) * spacing[1]
        if lat[a] > _RIB_END_MAX_LAT_MM or not _RIB_END_AP_MM[0] <= ap <= _RIB_END_AP_MM[1]:
            continue
        if lat.max() - lat[a] < _RIB_END_MIN_RUN_MM:
            continue
        # One body per rib: the highest one holding its medial end (an end in the disc space
        # between two bodies belongs to the upper one, the rib running down from there).
        for b in sorted(bodies, key=lambda b: -b.z_range[1]):
            z0, z1 = b.z_range
            if z0 - pad <= kk[a] <= z1 + pad and kk.max() <= z1 + pad:
                b.rib_bearing = True
                break


#: Rib-free bodies in a row, under rib-bearing ones, after which "ribs" are not believed. Two
#: is not enough: the fine VB-Net missed the ribs of two thoracic bodies in a row on synthetic
#: chest scans (T9 and T10 of independent-2002-0072; also test-1004-0031).
_RIB_GAP_BODIES = 3


#: Rib-free bodies below T12 that a spine can have (L1-L5; an L6 is rarer than missed ribs).
_MAX_LUMBAR_BODIES = 5


def _beside(
    range_a: tuple[int, int], area_a: np.ndarray, range_b: tuple[int, int], area_b: np.ndarray
) -> bool:
    """Whether body component a lies beside component b: side by side (``_side_by_side``) and
    b at least half as wide as a over the slices they share (median cross-sections; ``area_*``
    is each one's cross-section slice by slice from the first slice of its ``range_*``)."""
    if not _side_by_side(range_a, range_b):
        return False
    lo, hi = max(range_a[0], range_b[0]), min(range_a[1], range_b[1])
    shared_a = area_a[lo - range_a[0] : hi - range_a[0] + 1]
    shared_b = area_b[lo - range_b[0] : hi - range_b[0] + 1]
    return bool(np.median(shared_b) >= 0.5 * np.median(shared_a))


def _side_by_side(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two bodies' slice ranges overlap by half the shorter one or more: the pieces of
    one split body (neighbouring levels are stacked, a disc between them)."""
    overlap = min(a[1], b[1]) - max(a[0], b[0]) + 1
    return overlap >= 0.5 * min(a[1] - a[0] + 1, b[1] - b[0] + 1)


def _ribs_below_a_gap(flags: list[bool], z_ranges: list[tuple[int, int]]) -> list[int]:
    """Rib-bearing bodies (top to bottom) below a run of rib-free bodies under rib-bearing ones.

    Ribs sit on every thoracic body from T1 to T12, so below the last one no body bears ribs
    again. A "rib" ``_RIB_GAP_BODIES`` or more rib-free bodies below the rib-bearing ones is a
    lumbar transverse process or the iliac crest that the network called rib (on the real
    example CT resampled to 1 mm slices, the iliac crest beside L4 named L4 "T12"). Shorter gaps
    are left to the sacrum check in ``assign_levels``: a network that missed ribs leaves them
    too. Rib-free bodies above all rib-bearing ones (the neck: C7 bears none) open no gap, and
    pieces of one split body side by side (``z_ranges``) count once.
    """
    out: list[int] = []
    seen_rib, gap = False, 0
    for i, rib in enumerate(flags):
        if gap >= _RIB_GAP_BODIES:
            if rib:
                out.append(i)
        elif rib:
            seen_rib, gap = True, 0
        elif seen_rib:
            split = gap > 0 and _side_by_side(z_ranges[i - 1], z_ranges[i])
            gap += 0 if split else 1
    return out


def assign_levels(
    classes: np.ndarray, bodies: list[BodyInstance], spacing: tuple[float, float, float]
) -> LevelAssignment:
    """Give each body a level from the last-rib and sacrum anchors (or V1, V2, ... without)."""
    n = len(bodies)
    cues: list[str] = []
    warnings: list[str] = []
    anchor_rib: int | None = None  # index in bodies of T12
    rib_flags = [b.rib_bearing for b in bodies]
    below_gap = _ribs_below_a_gap(rib_flags, [b.z_range for b in bodies])
    if below_gap:
        # The overruling must leave a possible spine: at most five (lumbar) bodies below the last
        # rib. More means the gap was thoracic ribs the network missed (three in a row on two
        # synthetic chest scans, independent-2002-0036 and -0105, whose bodies then counted past L5).
        last_left = max(i for i, f in enumerate(rib_flags) if f and i not in below_gap)
        if n - 1 - last_left > _MAX_LUMBAR_BODIES:
            below_gap = []
    if below_gap:
        for i in below_gap:
            rib_flags[i] = False
        names = ", ".join(f"body {bodies[i].index}" for i in below_gap)
        warnings.append(
            f"rib-like bone beside {names}, below {_RIB_GAP_BODIES} or more rib-free bodies under the "
            "rib-bearing ones, overruled (a transverse process or the iliac crest taken for a rib)"
        )
    if any(rib_flags):
        last = max(i for i, f in enumerate(rib_flags) if f)
        if last < n - 1 and not any(rib_flags[last + 1 :]):
            anchor_rib = last
            cues.append("last_rib")
    anchor_sac: int | None = None  # index in bodies of L5
    sac = classes == SegClass.SACRUM
    if n and sac.any():
        # The sacrum is the largest "sacrum" piece that starts below the lowest body's centre:
        # stray "sacrum" elsewhere (in the chest, at the top of a scan) must not move its top.
        lowest = bodies[-1]
        pieces, _ = ndimage.label(sac)
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        tops = np.full(len(sizes), -1)
        for lbl, sl in enumerate(ndimage.find_objects(pieces), start=1):
            if sl is not None:
                tops[lbl] = sl[2].stop - 1
        sizes[tops >= lowest.centroid_ijk[2]] = 0
        big = int(sizes.argmax())
        sac_top = int(tops[big])
        gap_mm = (lowest.z_range[0] - sac_top) * spacing[2]
        if big > 0 and -15.0 <= gap_mm <= 25.0 and sizes[big] * np.prod(spacing) / 1000.0 > _SACRUM_MIN_ML:
            anchor_sac = n - 1
            cues.append("sacrum")
    ids: dict[int, int] = {}
    if anchor_rib is not None and anchor_sac is not None:
        lumbar = anchor_sac - anchor_rib
        agree = anchor_sac - 5
        if lumbar < 5 and agree >= 0 and rib_flags[agree] and not all(rib_flags[agree : anchor_rib + 1]):
            # The body five above the sacrum bears ribs, then a rib-free one, then "ribs" again:
            # a lumbar transverse process segmented as rib (a sacralised L5 would leave no
            # rib-free body in between). The two anchors agree on the body five above.
            warnings.append(
                f"rib-like bone beside {lumbar} bodies above the sacrum overruled: the rib-bearing body "
                "five above the sacrum is taken as T12"
            )
            anchor_rib, lumbar = agree, 5
            confidence = 0.8
        elif lumbar == 5:
            confidence = 1.0
        else:
            confidence = 0.6
            by = "the last rib" if lumbar == 4 else "the sacrum"
            why = "transitional anatomy suspected" if lumbar in (4, 6) else "the rib cue is unreliable"
            warnings.append(
                f"{lumbar} bodies between the last rib-bearing one and the sacrum (5 expected): "
                f"{why}; levels counted from {by}"
            )
        if lumbar == 4 or lumbar == 5:
            base, base_name = anchor_rib, "T12"
        else:
            base, base_name = anchor_sac, "L5"
    elif anchor_rib is not None:
        below = n - 1 - anchor_rib
        if below == _MAX_LUMBAR_BODIES + 1:
            # Six rib-free bodies under the last rib and no sacrum in view: read as with the
            # sacrum (six above it), an absent or missed 12th rib, not an L6. The lowest is L5
            # (test-1003-0144, a lumbar scan ending 4 mm below L5 whose spine has no 12th rib,
            # had every level one off and its L5 reported as V7).
            base, base_name, confidence = n - 1, "L5", 0.6
            warnings.append(
                f"{below} rib-free bodies below the last rib-bearing one and no sacrum in view: "
                "transitional anatomy suspected (an absent 12th rib or a sixth lumbar vertebra); "
                "the lowest is taken as L5"
            )
        else:
            base, base_name, confidence = anchor_rib, "T12", 0.8
    elif anchor_sac is not None:
        base, base_name, confidence = anchor_sac, "L5", 0.8
    else:
        for b in bodies:
            ids[b.mask_label] = UNKNOWN_LEVEL_BASE + b.index
        if bodies:
            warnings.append(
                "no last rib and no sacrum in view: vertebral levels cannot be determined "
                "(bodies named V1, V2, ...)"
            )
        return LevelAssignment(ids, 0.0, cues, warnings)
    if below_gap:
        confidence = min(confidence, 0.8)
    pos = _ORDER.index(base_name)
    for i, b in enumerate(bodies):
        p = pos + (i - base)
        if 0 <= p < len(_ORDER):
            ids[b.mask_label] = name_to_id(_ORDER[p])
        else:
            # Below L5 (an L6) or above C1: keep the body, unnamed.
            ids[b.mask_label] = UNKNOWN_LEVEL_BASE + b.index
            warnings.append(
                f"body {b.index} counts beyond the C1-L5 range from its anchor; reported as V{b.index}"
            )
    return LevelAssignment(ids, confidence, cues, warnings)


#: A body that the scan's top or bottom edge cuts to a sliver (its endplate and a few slices)
#: is at most this high (mm) ...
_EDGE_SLIVER_MAX_MM = 10.0
#: ... lies within this distance (mm) of the named body next to it (a disc between them) ...
_EDGE_SLIVER_GAP_MM = 20.0
#: ... and this share of its voxels or more lie within that body's outline seen from above
#: (the rest of its blob would be the sacrum's alae or a leak) ...
_EDGE_SLIVER_FOOTPRINT = 0.5
#: ... and it holds at least this share of a slice of that outline ...
_EDGE_SLIVER_MIN_AREA = 0.25
#: ... and is bone on average (HU): an endplate is several hundred, disc and fat below 100.
_EDGE_SLIVER_MIN_HU = 100.0


def claim_edge_slivers(
    classes: np.ndarray,
    inst: np.ndarray,
    bodies: list[BodyInstance],
    ids: dict[int, int],
    hu: np.ndarray,
    spacing: tuple[float, float, float],
) -> list[BodyInstance]:
    """Label the bone the scan's edge cut from the next body as that body (``inst``, ``ids``).

    At the scan's bottom edge the network calls the dense endplate of a body cut to one or two
    slices "sacrum": the only bone it saw at that edge in training (chest scans ending at L2:
    test-1003-0058 and -0074, 1 mm slices). At the top edge such a sliver stays under
    ``find_bodies``' least volume. Below a body named C1-L4, or above one named C3-L5, bone
    (body or sacrum class, in no body yet) that touches the edge, is at most
    ``_EDGE_SLIVER_MAX_MM`` high, lies under the column's outline, fills a quarter of a
    slice of it and is bone on average (``hu``, on the grid of ``classes``) is the next level.
    Where the named body itself reaches the bottom edge, its footprint's sacrum there is its own.
    A named body that is itself such a sliver, and every sliver added, ends at its last slice of
    bone counted from the edge (``_bone_end``).
    Returns the bodies added (all touching the edge: never measured, only shown and scored).
    """
    added: list[BodyInstance] = []
    named = [b for b in bodies if ids.get(b.mask_label, UNKNOWN_LEVEL_BASE) < UNKNOWN_LEVEL_BASE]
    if not named:
        return added
    nz = classes.shape[2]
    bone = (classes == SegClass.BODY) | (classes == SegClass.SACRUM)
    for nb, edge, step in ((named[-1], 0, 1), (named[0], nz - 1, -1)):
        pos = _ORDER.index(id_to_name(ids[nb.mask_label])) + step
        if not 0 <= pos < len(_ORDER) or _ORDER[pos] == "C1":
            continue  # below L5 lies the sacrum; C1 has no body
        z0, z1 = nb.z_range
        reach = int(round((_EDGE_SLIVER_MAX_MM + _EDGE_SLIVER_GAP_MM) / spacing[2]))
        ks = slice(0, min(nz, reach)) if edge == 0 else slice(max(0, nz - reach), nz)
        own = inst[:, :, ks] == nb.mask_label
        # The outline seen from above: the named body's, and that of the nearest body the edge
        # does not cut (a cut body's own outline may be a small part of the column's).
        whole_bodies = [b.mask_label for b in named if not b.touches_edge]
        near = [nb.mask_label] + (
            [whole_bodies[-1] if edge == 0 else whole_bodies[0]] if whole_bodies else []
        )
        footprint: np.ndarray = np.asarray(np.isin(inst, near).any(axis=2))
        cand = bone[:, :, ks] & (inst[:, :, ks] == 0) & footprint[:, :, None]
        if not cand.any():
            continue
        lab, _ = ndimage.label(cand)
        # The blobs the candidates belong to, outline or not: a piece that is only the part of
        # a wider blob under the outline (the sacrum with its alae) is not a body's end.
        whole, _ = ndimage.label(bone[:, :, ks] & (inst[:, :, ks] == 0))
        at_edge = np.unique(lab[:, :, 0 if edge == 0 else -1])
        for lbl in at_edge[at_edge > 0]:
            piece = lab == lbl
            kk = np.nonzero(piece.any(axis=(0, 1)))[0] + ks.start
            if (kk.max() - kk.min() + 1) * spacing[2] > _EDGE_SLIVER_MAX_MM:
                continue
            if piece.sum() < _EDGE_SLIVER_MIN_AREA * footprint.sum():
                continue  # a few voxels, not a slice of a body
            if float(hu[:, :, ks][piece].mean()) < _EDGE_SLIVER_MIN_HU:
                continue  # not bone: the network's "body" in the fat above T1 of a synthetic chest
            full = np.isin(whole, np.unique(whole[piece]))
            if piece.sum() < _EDGE_SLIVER_FOOTPRINT * full.sum():
                continue
            sl = (slice(None), slice(None), ks)
            touching = bool((ndimage.binary_dilation(piece) & own).any())
            if touching and edge == 0 and z0 == 0:
                inst[sl][piece] = nb.mask_label  # the named body's own cut end
                continue
            if touching:
                continue
            piece, kk = _bone_end(piece, hu[:, :, ks], edge == 0)
            kk = kk + ks.start
            gap = (z0 - kk.max() - 1) if edge == 0 else (kk.min() - z1 - 1)
            if gap * spacing[2] > _EDGE_SLIVER_GAP_MM:
                continue
            label = int(inst.max()) + 1
            inst[sl][piece] = label
            ids[label] = name_to_id(_ORDER[pos])
            ii, jj, kk2 = np.nonzero(piece)
            body = BodyInstance(
                0,
                label,
                int(piece.sum()),
                (float(ii.mean()), float(jj.mean()), float(kk2.mean() + ks.start)),
                (int(kk.min()), int(kk.max())),
                True,
            )
            added.append(body)
            log.info("a sliver of %s at the scan's edge (slices %d-%d) kept", _ORDER[pos], *body.z_range)
            break
    for b in named:
        _end_at_bone(b, inst, hu, spacing)
    return added


def _end_at_bone(
    b: BodyInstance, inst: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float]
) -> None:
    """Cut a body that is a sliver at one edge of the scan back to its last slice of bone."""
    nz = inst.shape[2]
    z0, z1 = b.z_range
    if (z0 == 0) == (z1 == nz - 1):
        return  # at neither edge, or a body the scan's two edges both cut
    # The slices it holds now (the sliver claim may have given it its edge's bone).
    reach = slice(0, z1 + 1) if z0 == 0 else slice(z0, nz)
    ks = np.nonzero((inst[:, :, reach] == b.mask_label).any(axis=(0, 1)))[0] + reach.start
    if ks.size == 0:
        return
    z0, z1 = int(ks.min()), int(ks.max())
    if (z1 - z0 + 1) * spacing[2] > _EDGE_SLIVER_MAX_MM:
        return
    sl = (slice(None), slice(None), slice(z0, z1 + 1))
    piece = inst[sl] == b.mask_label
    kept, kk = _bone_end(piece, hu[sl], z0 == 0)
    if len(kk) < z1 - z0 + 1:
        inst[sl][piece & ~kept] = 0
        b.z_range = (int(kk.min()) + z0, int(kk.max()) + z0)
        b.voxels = int(kept.sum())
        log.info("the sliver at the scan's edge ends at its last slice of bone (slices %d-%d)", *b.z_range)


def _bone_end(piece: np.ndarray, hu: np.ndarray, from_bottom: bool) -> tuple[np.ndarray, np.ndarray]:
    """A sliver up to its last slice of bone, counted from the scan's edge; and its slices.

    On thin slices the network's "bone" at a cut body's end runs on into the disc above it
    (test-1003-0118 and -0166, 1 mm: the endplate at 855 and 506 HU, then three slices of disc
    at 58-86 HU, all "body"): those slices (mean below ``_EDGE_SLIVER_MIN_HU``) are not the body.
    A piece with no slice of bone is returned whole.
    """
    ks = np.nonzero(piece.any(axis=(0, 1)))[0]
    bone = [k for k in ks if float(hu[:, :, k][piece[:, :, k]].mean()) >= _EDGE_SLIVER_MIN_HU]
    if not bone:
        return piece, ks
    last = max(bone) if from_bottom else min(bone)
    keep = ks[ks <= last] if from_bottom else ks[ks >= last]
    out = np.zeros_like(piece)
    out[:, :, keep] = piece[:, :, keep]
    return out, keep
