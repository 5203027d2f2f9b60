from __future__ import annotations

import numpy as np

from osteoscreen.labels import SegClass, name_to_id
from osteoscreen.segmentation.levels import assign_levels, find_bodies

SP = (2.0, 2.0, 2.0)


def _column(n_bodies: int, rib_bearing: list[bool], sacrum: bool) -> np.ndarray:
    """Bodies (8 vox tall) separated by discs (2 vox), top to bottom, on a RAS grid."""
    nz = n_bodies * 10 + 16
    cls = np.zeros((60, 40, nz), dtype=np.uint8)
    top = nz - 3
    for i in range(n_bodies):
        z1 = top - i * 10
        z0 = z1 - 8
        cls[25:35, 20:30, z0:z1] = SegClass.BODY
        cls[25:35, 20:30, z0 - 2 : z0] = SegClass.DISC
        if rib_bearing[i]:
            cls[8:14, 12:16, z0 + 2 : z0 + 6] = SegClass.RIB
            cls[46:52, 12:16, z0 + 2 : z0 + 6] = SegClass.RIB
    if sacrum:
        z_bottom = top - (n_bodies - 1) * 10 - 8 - 2
        cls[20:40, 15:32, 0:z_bottom] = SegClass.SACRUM
    return cls


def test_rib_and_sacrum_agree() -> None:
    # T11, T12 (rib-bearing), L1-L5, sacrum.
    cls = _column(7, [True, True, False, False, False, False, False], sacrum=True)
    _, bodies = find_bodies(cls, SP)
    assert [b.index for b in bodies] == list(range(1, 8))
    la = assign_levels(cls, bodies, SP)
    names = [la.ids[b.mask_label] for b in bodies]
    assert names == [name_to_id(n) for n in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")]
    assert la.confidence == 1.0
    assert set(la.cues) == {"last_rib", "sacrum"}


def test_transitional_anatomy_lowers_confidence() -> None:
    # Six rib-free bodies above the sacrum: an L6 or a sacralisation; the rib anchor wins.
    cls = _column(7, [True, False, False, False, False, False, False], sacrum=True)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[0].mask_label] == name_to_id("T12")
    assert la.confidence < 1.0
    assert any("transitional" in w for w in la.warnings)


def test_sacrum_only() -> None:
    cls = _column(3, [False, False, False], sacrum=True)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [name_to_id(n) for n in ("L3", "L4", "L5")]
    assert la.confidence == 0.8


def test_no_cue_gives_unknown_levels_not_a_guess() -> None:
    cls = _column(3, [False, False, False], sacrum=False)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [101, 102, 103]
    assert la.confidence == 0.0
    assert la.warnings


def test_ribs_to_the_end_of_the_scan_are_not_an_anchor() -> None:
    # Every body bears ribs: the scan may end above T12, so no level is claimed.
    cls = _column(3, [True, True, True], sacrum=False)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.confidence == 0.0


def test_bodies_joined_by_a_missed_disc_are_split() -> None:
    cls = _column(5, [False] * 5, sacrum=True)
    # The disc between the first two bodies was missed: body voxels join them (a narrower neck).
    ks = np.where((cls == SegClass.DISC).any(axis=(0, 1)))[0]
    top_disc = ks.max()
    neck = cls[:, :, top_disc - 1 : top_disc + 1]
    neck[27:33, 22:28][neck[27:33, 22:28] == SegClass.DISC] = SegClass.BODY
    _, bodies = find_bodies(cls, SP)
    assert len(bodies) == 5
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [name_to_id(n) for n in ("L1", "L2", "L3", "L4", "L5")]
