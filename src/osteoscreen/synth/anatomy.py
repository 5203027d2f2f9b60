"""Procedural trunk anatomy as a tissue map: spine T1-L5 with sacrum, ribs, organs, fat, muscle,
and (generator version 3 on) the lowest cervical bodies and the base of the neck above T1.

The anatomy is drawn in RAS+ millimetres (x to the patient's right, y anterior, z superior)
on the grid given by the caller; every structure is drawn inside its own bounding box so a
512 x 512 x 200 map takes seconds. Intensities are assigned later (physics.py), in the spirit
of SynthSeg: shape first, then a randomised appearance per tissue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ..labels import name_to_id

__all__ = ["Grid", "LevelGeometry", "SpineModel", "Tissue", "draw_anatomy", "make_spine"]


class Tissue(IntEnum):
    AIR = 0
    FAT = 1
    MUSCLE = 2
    SOFT = 3  # bowel wall, organs without their own class, skin
    LIVER = 4
    KIDNEY = 5
    LUNG = 6
    BLOOD = 7  # aorta, IVC, heart chambers
    GAS = 8  # bowel gas
    CSF = 9
    DISC = 10
    CORTEX = 11  # vertebral body shell and endplates
    TRABECULAR = 12  # vertebral body interior (per-level BMD)
    POSTERIOR = 13  # pedicles, laminae, processes
    RIB = 14
    PELVIS = 15  # sacrum and iliac bones
    ISLAND = 16  # bone island (enostosis) inside a body
    METAL = 17
    VISCERAL_FAT = 18
    SPLEEN = 19


THORACIC = [f"T{i}" for i in range(1, 13)]
LUMBAR = [f"L{i}" for i in range(1, 6)]
LEVELS = THORACIC + LUMBAR
#: Cervical bodies drawn above T1 (top to bottom), rib-free: what a chest scan's top shows and
#: a reader counts down from when the last rib is missing.
NECK = ["C6", "C7"]


@dataclass
class Grid:
    """A voxel grid in RAS+ mm: voxel (i, j, k) centre = origin + (i*sx, j*sy, k*sz)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def axis(self, a: int) -> np.ndarray:
        return self.origin[a] + np.arange(self.shape[a]) * self.spacing[a]

    def index_range(self, a: int, lo: float, hi: float) -> slice:
        i0 = int(np.floor((lo - self.origin[a]) / self.spacing[a]))
        i1 = int(np.ceil((hi - self.origin[a]) / self.spacing[a])) + 1
        return slice(max(i0, 0), min(max(i1, 0), self.shape[a]))

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff


@dataclass
class LevelGeometry:
    name: str
    z_bottom: float
    z_top: float
    width: float  # left-right, mm
    depth: float  # antero-posterior, mm
    disc_below: float
    compression: float = 0.0  # 0 = intact; 0.3 = anterior height lost by 30 %
    island: tuple[float, float, float, float] | None = None  # x, y, z, radius (mm)
    screws: bool = False

    @property
    def label_id(self) -> int:
        return name_to_id(self.name)

    @property
    def z_center(self) -> float:
        return 0.5 * (self.z_bottom + self.z_top)


@dataclass
class SpineModel:
    levels: list[LevelGeometry]
    lordosis: float  # mm of anterior bulge of the lumbar curve
    kyphosis: float  # mm of posterior bulge of the thoracic curve
    scoliosis: float  # mm of lateral deviation
    body_y: float  # AP position of the body centres at the reference level
    sacrum_top: float
    has_ribs_on: list[str] = field(default_factory=lambda: list(THORACIC))
    neck: list[LevelGeometry] = field(default_factory=list)  # C6, C7 (top to bottom), or none

    def center(self, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the vertebral body centre line at height z (mm)."""
        z = np.asarray(z, dtype=np.float64)
        top = self.levels[0].z_top
        bottom = self.sacrum_top
        t = np.clip((z - bottom) / max(top - bottom, 1.0), 0.0, 1.0)
        # Lumbar lordosis (anterior) low, thoracic kyphosis (posterior) high.
        y = (
            self.body_y
            + self.lordosis * np.sin(np.pi * np.clip(t / 0.35, 0, 1))
            - self.kyphosis * np.sin(np.pi * np.clip((t - 0.3) / 0.7, 0, 1))
        )
        x = self.scoliosis * np.sin(2 * np.pi * t)
        return x, y


def make_spine(
    rng: np.random.Generator, *, hard_cases: bool = True, neck_rng: np.random.Generator | None = None
) -> SpineModel:
    """A random spine: per-level sizes, curvature, and the occasional hard case.

    With ``neck_rng``, C7 and C6 are added above T1, drawn from that generator alone, so the
    rest of the spine (and every image that does not reach above T1) is the same as without.
    """
    scale = rng.uniform(0.88, 1.12)
    levels: list[LevelGeometry] = []
    z = 0.0  # bottom endplate of L5 sits at z = 0
    for name in reversed(LEVELS):
        if name.startswith("L"):
            n = int(name[1:])
            h = (24.0 + 0.8 * n) * scale * rng.uniform(0.94, 1.06)
            w = (41.0 + 2.0 * n) * scale * rng.uniform(0.94, 1.06)
            d = (29.0 + 1.2 * n) * scale * rng.uniform(0.94, 1.06)
            disc = (8.0 + 0.6 * n) * scale * rng.uniform(0.85, 1.15)
        else:
            n = int(name[1:])
            h = (14.0 + 0.8 * n) * scale * rng.uniform(0.94, 1.06)
            w = (25.0 + 1.3 * n) * scale * rng.uniform(0.94, 1.06)
            d = (17.0 + 1.0 * n) * scale * rng.uniform(0.94, 1.06)
            disc = (3.5 + 0.2 * n) * scale * rng.uniform(0.85, 1.15)
        lv = LevelGeometry(name, z, z + h, w, d, disc)
        if hard_cases:
            if rng.random() < 0.05:
                lv.compression = rng.uniform(0.2, 0.45)
            if rng.random() < 0.08:
                r = rng.uniform(2.0, 4.5)
                lv.island = (
                    rng.uniform(-0.2, 0.2) * w,
                    rng.uniform(-0.2, 0.2) * d,
                    z + h * rng.uniform(0.35, 0.65),
                    r,
                )
        levels.append(lv)
        z += h + disc
    levels.reverse()
    # The last disc (below L5) separates it from the sacrum.
    sacrum_top = -levels[-1].disc_below
    if hard_cases and rng.random() < 0.05:
        i = rng.integers(len(levels) - 5, len(levels) - 1)
        levels[i].screws = True
        levels[i + 1].screws = True
    ribs = list(THORACIC)
    if rng.random() < 0.06:
        ribs = THORACIC[:-1]  # short 12th rib absent: a known labelling trap
    neck: list[LevelGeometry] = []
    if neck_rng is not None:
        # Cervical bodies are a little smaller than T1 and sit on thinner discs (C7-T1, C6-C7).
        z = levels[0].z_top
        for name, h0, w0, d0 in (("C7", 14.0, 23.5, 16.5), ("C6", 13.0, 21.0, 15.5)):
            disc = 4.5 * scale * neck_rng.uniform(0.85, 1.15)
            h = h0 * scale * neck_rng.uniform(0.94, 1.06)
            w = w0 * scale * neck_rng.uniform(0.94, 1.06)
            d = d0 * scale * neck_rng.uniform(0.94, 1.06)
            neck.insert(0, LevelGeometry(name, z + disc, z + disc + h, w, d, disc))
            z += disc + h
    return SpineModel(
        levels=levels,
        lordosis=rng.uniform(4.0, 18.0),
        kyphosis=rng.uniform(8.0, 30.0),
        scoliosis=rng.uniform(-1.0, 1.0) * (12.0 if rng.random() < 0.15 else 3.0),
        body_y=0.0,
        sacrum_top=sacrum_top,
        has_ribs_on=ribs,
        neck=neck,
    )


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def draw_anatomy(
    grid: Grid,
    spine: SpineModel,
    rng: np.random.Generator,
    *,
    body_a: float,
    body_b: float,
    fat_mm: float,
    diaphragm_z: float,
    apex_z: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the tissue map and the vertebral-body level map on a grid.

    Args:
        grid: where to draw; the spine's L5 lower endplate is at z = 0.
        spine: vertebral geometry.
        rng: randomness for organ placement.
        body_a: left-right semi-axis of the trunk (mm).
        body_b: antero-posterior semi-axis of the trunk (mm).
        fat_mm: subcutaneous fat thickness.
        diaphragm_z: height of the diaphragm dome (lungs above).
        apex_z: height of the lung apices; above them the base of the neck (muscle round the
            trachea and the carotid arteries). None: the lungs run to the top of the grid.

    Returns:
        (tissue map uint8, body level map int16 with VerSe ids).
    """
    nx, ny, _ = grid.shape
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    levels_map = np.zeros(grid.shape, dtype=np.int16)
    X = xs[:, None]
    Y = ys[None, :]
    # The trunk outline, fat, wall muscle and the cavity, slice by slice (2-D work only).
    spine_y0 = -body_b + rng.uniform(62.0, 80.0)  # body centre AP position at the lumbar spine
    sx_c, sy_c = spine.center(zs)
    sy_c = sy_c + spine_y0
    wall = rng.uniform(8.0, 14.0)
    liver_r = (rng.uniform(70, 95), rng.uniform(60, 80), rng.uniform(70, 95))
    liver_c = (body_a * 0.35, spine_y0 + 40.0, diaphragm_z - liver_r[2] * 0.55)
    spleen_c = (-body_a * 0.5, spine_y0 + 20.0, diaphragm_z - 40.0)
    kid_z = spine.levels[LEVELS.index("L2")].z_center
    aorta_r = rng.uniform(9.0, 13.0)
    for k, z in enumerate(zs):
        # Chest is a little wider and deeper than the abdomen; the pelvis widens.
        f = 1.0 + 0.04 * np.tanh((z - diaphragm_z) / 40.0)
        a, b = body_a * f, body_b * f
        outer = _ellipse(X, Y, 0.0, 0.0, a, b)
        inner = _ellipse(X, Y, 0.0, 0.0, a - fat_mm, b - fat_mm * 0.8)
        cavity = _ellipse(X, Y, 0.0, 0.0 + 6.0, a - fat_mm - wall, b - fat_mm - wall)
        sl = np.zeros((nx, ny), dtype=np.uint8)
        sl[outer] = Tissue.FAT
        sl[inner] = Tissue.MUSCLE
        sl[cavity] = Tissue.VISCERAL_FAT
        cx, cy = sx_c[k], sy_c[k]
        # Paraspinal muscles behind the spine, psoas beside the lumbar bodies.
        for side in (-1, 1):
            sl[_ellipse(X, Y, cx + side * 28.0, cy - 52.0, 22.0, 20.0) & outer] = Tissue.MUSCLE
        if z < spine.levels[LEVELS.index("L1")].z_top and z > spine.sacrum_top - 30:
            growth = np.clip((spine.levels[LEVELS.index("L1")].z_top - z) / 120.0, 0.2, 1.0)
            for side in (-1, 1):
                sl[
                    _ellipse(X, Y, cx + side * (30 + 14 * growth), cy - 2.0, 9 + 12 * growth, 9 + 10 * growth)
                ] = Tissue.MUSCLE
        in_neck = apex_z is not None and z > apex_z
        if in_neck:
            sl[cavity] = Tissue.MUSCLE
            sl[_ellipse(X, Y, cx, cy + 32.0, 8.0, 7.0)] = Tissue.AIR  # trachea
            for side in (-1, 1):
                sl[_ellipse(X, Y, cx + side * 24.0, cy + 34.0, 4.5, 4.5)] = Tissue.BLOOD  # carotid
        elif z > diaphragm_z:
            # Lungs fill the chest except the mediastinum and heart; they narrow to their apices.
            taper = 1.0 if apex_z is None else float(np.sqrt(np.clip((apex_z - z) / 35.0, 0.0, 1.0)))
            for side in (-1, 1) if taper >= 0.15 else ():
                lung = _ellipse(X, Y, side * a * 0.45, cy + 35.0, a * 0.42 * taper, b * 0.72 * taper) & cavity
                sl[lung] = Tissue.LUNG
            heart_z = diaphragm_z + 50.0
            if z < heart_z + 60:
                hr = 55.0 * np.sqrt(max(0.0, 1 - ((z - heart_z) / 60.0) ** 2))
                if hr > 5:
                    sl[_ellipse(X, Y, -15.0, cy + 70.0, hr * 1.1, hr * 0.9)] = Tissue.BLOOD
        else:
            # Abdomen: bowel (soft tissue with gas pockets) fills the cavity front.
            bowel = _ellipse(X, Y, 0.0, cy + 70.0, a * 0.6, b * 0.55) & cavity
            sl[bowel] = Tissue.SOFT
            if z > spine.sacrum_top - 80:
                lv = np.sqrt(np.clip(1 - ((z - liver_c[2]) / liver_r[2]) ** 2, 0, 1))
                if lv > 0.1:
                    liver = _ellipse(X, Y, liver_c[0], liver_c[1], liver_r[0] * lv, liver_r[1] * lv) & cavity
                    sl[liver] = Tissue.LIVER
                sv = np.sqrt(np.clip(1 - ((z - spleen_c[2]) / 50.0) ** 2, 0, 1))
                if sv > 0.1:
                    sl[_ellipse(X, Y, spleen_c[0], spleen_c[1], 35 * sv, 25 * sv) & cavity] = Tissue.SPLEEN
                kv = np.sqrt(np.clip(1 - ((z - kid_z) / 55.0) ** 2, 0, 1))
                if kv > 0.1:
                    for side in (-1, 1):
                        sl[_ellipse(X, Y, cx + side * 65.0, cy - 8.0, 28 * kv, 22 * kv)] = Tissue.KIDNEY
        # Aorta in front and to the left of the spine; IVC to the right.
        if spine.sacrum_top + 20 < z and not in_neck:
            sl[_ellipse(X, Y, cx - 14.0, cy + 30.0, aorta_r, aorta_r)] = Tissue.BLOOD
            if z < diaphragm_z + 20:
                sl[_ellipse(X, Y, cx + 22.0, cy + 28.0, 10.0, 8.0)] = Tissue.BLOOD
        tissue[:, :, k] = sl
    # Bowel gas: a few pockets in the abdominal soft tissue.
    abd = zs < diaphragm_z
    if abd.any():
        for _ in range(int(rng.integers(6, 18))):
            gx = rng.uniform(-0.5, 0.5) * body_a
            gy = rng.uniform(0.1, 0.6) * body_b
            gz = rng.uniform(zs[abd].min(), zs[abd].max())
            r = rng.uniform(6.0, 18.0)
            _sphere(tissue, grid, (gx, gy, gz), r, Tissue.GAS, only=Tissue.SOFT)
    _draw_spine(tissue, levels_map, grid, spine, spine_y0, (body_a - fat_mm - wall, body_b - fat_mm - wall))
    return tissue, levels_map


def _sphere(
    tissue: np.ndarray,
    grid: Grid,
    c: tuple[float, float, float],
    r: float,
    value: int,
    only: int | None = None,
) -> None:
    si, sj, sk = (grid.index_range(a, c[a] - r, c[a] + r) for a in range(3))
    if si.stop <= si.start or sj.stop <= sj.start or sk.stop <= sk.start:
        return
    x = grid.axis(0)[si][:, None, None]
    y = grid.axis(1)[sj][None, :, None]
    z = grid.axis(2)[sk][None, None, :]
    m = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r
    sub = tissue[si, sj, sk]
    if only is not None:
        m &= sub == only
    sub[m] = value


def _draw_spine(
    tissue: np.ndarray,
    levels_map: np.ndarray,
    grid: Grid,
    spine: SpineModel,
    y0: float,
    reach: tuple[float, float],
) -> None:
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)
    cx_all, cy_all = spine.center(zs)
    cy_all = cy_all + y0
    for lv in spine.neck + spine.levels:
        z_lo = lv.z_bottom - lv.disc_below
        sk = grid.index_range(2, z_lo - 2, lv.z_top + 2)
        if sk.stop <= sk.start:
            continue
        half_w = lv.width / 2 + 40
        for k in range(sk.start, sk.stop):
            z = zs[k]
            cx, cy = cx_all[k], cy_all[k]
            si = grid.index_range(0, cx - half_w, cx + half_w)
            sj = grid.index_range(1, cy - lv.depth / 2 - 70, cy + lv.depth / 2 + 5)
            X = xs[si][:, None]
            Y = ys[sj][None, :]
            sub_t = tissue[si, sj, k]
            sub_l = levels_map[si, sj, k]
            a, b = lv.width / 2, lv.depth / 2
            if z < lv.z_bottom:
                # Disc below the body: slightly wider than the endplates.
                disc = _ellipse(X, Y, cx, cy, a * 1.02, b * 1.02)
                sub_t[disc] = Tissue.DISC
                continue
            if z > lv.z_top:
                continue
            rel = (z - lv.z_bottom) / max(lv.z_top - lv.z_bottom, 1e-3)
            # Concave walls: the body waist is narrower than the endplates.
            waist = 1.0 - 0.07 * np.sin(np.pi * rel)
            # A compression fracture lowers the anterior part of the body.
            body = _ellipse(X, Y, cx, cy, a * waist, b * waist)
            # Kidney-shaped cross-section: flatten the posterior wall.
            body &= cy - b * 0.82 < Y
            if lv.compression > 0:
                ant = (Y - (cy - b)) / (2 * b)  # 0 posterior .. 1 anterior
                top_allowed = 1.0 - lv.compression * np.clip(ant, 0, 1)
                body &= rel <= top_allowed
            shell_mm = 1.2
            inner = _ellipse(X, Y, cx, cy, a * waist - shell_mm, b * waist - shell_mm) & (
                cy - b * 0.82 + shell_mm < Y
            )
            h = lv.z_top - lv.z_bottom
            if lv.compression > 0:
                ant = (Y - (cy - b)) / (2 * b)
                inner &= rel <= (1.0 - lv.compression * np.clip(ant, 0, 1)) - shell_mm / h
            if rel * h < shell_mm or (1 - rel) * h < shell_mm:
                inner[:] = False  # endplates
            sub_t[body] = Tissue.CORTEX
            sub_t[inner] = Tissue.TRABECULAR
            sub_l[body] = lv.label_id
            # Posterior elements: pedicles, a ring around the canal, spinous and transverse processes.
            canal_r = 8.0 if lv.name.startswith("L") else 7.0
            canal_y = cy - b * 0.82 - canal_r - 1.0
            if 0.15 < rel < 0.85:
                for side in (-1, 1):
                    ped = _ellipse(X, Y, cx + side * (canal_r + 3.5), canal_y + 2.0, 4.0, canal_r + 3.0)
                    sub_t[ped & (sub_t != Tissue.CORTEX) & (sub_t != Tissue.TRABECULAR)] = Tissue.POSTERIOR
                ring = _ellipse(X, Y, cx, canal_y, canal_r + 4.5, canal_r + 4.0) & ~_ellipse(
                    X, Y, cx, canal_y, canal_r, canal_r
                )
                ring &= canal_y + 2.0 > Y
                sub_t[ring] = Tissue.POSTERIOR
                sub_t[_ellipse(X, Y, cx, canal_y, canal_r, canal_r)] = Tissue.CSF
                # Spinous process slopes down and back.
                sp_len = 32.0 if lv.name.startswith("L") else 38.0
                spin = (
                    (np.abs(X - cx) < 3.5) & (canal_y - canal_r - 2.0 > Y) & (canal_y - canal_r - sp_len < Y)
                )
                sub_t[spin] = Tissue.POSTERIOR
                tp_len = 28.0 if lv.name.startswith("L") else 22.0
                tp = (
                    (np.abs(Y - canal_y) < 5.0)
                    & (np.abs(X - cx) > canal_r + 3)
                    & (np.abs(X - cx) < canal_r + 3 + tp_len)
                )
                sub_t[tp] = Tissue.POSTERIOR
            if lv.screws and 0.3 < rel < 0.6:
                for side in (-1, 1):
                    t = np.linspace(0.0, 1.0, 30)
                    px = cx + side * (canal_r + 3.5) * (1 - 0.7 * t)
                    py = canal_y - 10 + t * (b + 20)
                    for qx, qy in zip(px, py):
                        sub_t[_ellipse(X, Y, qx, qy, 2.8, 2.8)] = Tissue.METAL
        if lv.island is not None:
            ix, iy, iz, r = lv.island
            cx_i, cy_i = spine.center(iz)
            _sphere(
                tissue,
                grid,
                (float(cx_i) + ix, float(cy_i) + y0 + iy, iz),
                r,
                Tissue.ISLAND,
                only=Tissue.TRABECULAR,
            )
        if lv.name in spine.has_ribs_on:
            _draw_ribs(tissue, grid, spine, lv, y0, reach)
    _draw_sacrum_pelvis(tissue, grid, spine, y0)


def _draw_ribs(
    tissue: np.ndarray,
    grid: Grid,
    spine: SpineModel,
    lv: LevelGeometry,
    y0: float,
    reach: tuple[float, float],
) -> None:
    """Ribs leave the transverse process, curve along the inside of the chest wall and fall."""
    n = int(lv.name[1:])
    c = spine.center(lv.z_center)
    cx, cy = float(c[0]), float(c[1]) + y0
    canal_y = cy - lv.depth / 2 * 0.82 - 9.0
    rx = max(reach[0] * (0.55 + 0.03 * min(n, 8)), lv.width / 2 + 30.0)
    ry = reach[1] * (0.45 + 0.03 * min(n, 8))
    start = -np.arccos(np.clip((lv.width / 2 + 14.0) / rx, 0.0, 0.99))
    end = np.deg2rad(55.0 if n <= 10 else (-5.0 if n == 11 else -30.0))
    cyc = canal_y - ry * np.sin(start)
    r_tube = 4.0 + 0.1 * min(n, 8)
    for side in (-1, 1):
        for t in np.linspace(0.0, 1.0, 70):
            ang = start + t * (end - start)
            px = cx + side * rx * np.cos(ang)
            py = cyc + ry * np.sin(ang)
            pz = lv.z_center - 3.0 - 35.0 * t**1.5
            _sphere(tissue, grid, (px, py, pz), r_tube, Tissue.RIB, only=None)


def _draw_sacrum_pelvis(tissue: np.ndarray, grid: Grid, spine: SpineModel, y0: float) -> None:
    l5 = spine.levels[-1]
    c = spine.center(l5.z_center)
    cx, cy = float(c[0]), float(c[1]) + y0
    top = spine.sacrum_top
    zs = grid.axis(2)
    sk = grid.index_range(2, top - 110, top)
    for k in range(sk.start, sk.stop):
        z = zs[k]
        d = top - z  # depth below the sacral endplate
        t = d / 110.0
        si = grid.index_range(0, cx - 160, cx + 160)
        sj = grid.index_range(1, cy - 120, cy + 60)
        X = grid.axis(0)[si][:, None]
        Y = grid.axis(1)[sj][None, :]
        sub = tissue[si, sj, k]
        # The sacrum tilts backwards and narrows downwards.
        sw = l5.width * (0.55 + 0.5 * (1 - t)) / 2
        sy = cy - 10 - 45 * t
        sac = _ellipse(X, Y, cx, sy, sw + 12 * (1 - t), l5.depth * 0.45 * (1 - 0.5 * t))
        sub[sac] = Tissue.PELVIS
        # Iliac wings: curved plates lateral to the sacrum.
        if d > 10:
            for side in (-1, 1):
                wing = _ellipse(X, Y, cx + side * (75 + 30 * (1 - t)), sy + 15, 14, 45) & ~_ellipse(
                    X, Y, cx + side * (75 + 30 * (1 - t)), sy + 15, 8, 38
                )
                sub[wing] = Tissue.PELVIS
