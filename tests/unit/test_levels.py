from __future__ import annotations

import numpy as np

from osteoscreen.labels import SegClass, name_to_id
from osteoscreen.segmentation.levels import assign_levels, claim_edge_slivers, find_bodies

SP = (2.0, 2.0, 2.0)


def _column(n_bodies: int, rib_bearing: list[bool], sacrum: bool) -> np.ndarray:
    """Bodies (8 vox tall) separated by discs (2 vox), top to bottom, on a RAS grid."""
    nz = n_bodies * 10 + 16
    cls = np.zeros((90, 40, nz), dtype=np.uint8)
    top = nz - 3
    for i in range(n_bodies):
        z1 = top - i * 10
        z0 = z1 - 8
        cls[40:50, 20:30, z0:z1] = SegClass.BODY
        cls[40:50, 20:30, z0 - 2 : z0] = SegClass.DISC
        if rib_bearing[i]:
            # A rib from the body's posterolateral corner outwards (40 mm long, 2.6 ml).
            cls[10:30, 12:16, z0 + 2 : z0 + 6] = SegClass.RIB
            cls[60:80, 12:16, z0 + 2 : z0 + 6] = SegClass.RIB
    if sacrum:
        z_bottom = top - (n_bodies - 1) * 10 - 8 - 2
        cls[35:55, 15:32, 0:z_bottom] = SegClass.SACRUM
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


def test_six_rib_free_bodies_above_the_sacrum_are_counted_from_the_sacrum() -> None:
    # An absent (or missed) 12th rib, or an L6: the sacrum wins and the confidence drops.
    cls = _column(7, [True, False, False, False, False, False, False], sacrum=True)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[0].mask_label] == name_to_id("T11")
    assert la.ids[bodies[-1].mask_label] == name_to_id("L5")
    assert la.confidence < 1.0
    assert any("transitional" in w and "from the sacrum" in w for w in la.warnings)


def test_a_rib_cue_three_levels_off_the_sacrum_is_overruled() -> None:
    # Ribs seen down to the body eight above the sacrum: no anatomy has eight lumbar bodies.
    cls = _column(9, [True] + [False] * 8, sacrum=True)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[-1].mask_label] == name_to_id("L5")
    assert la.ids[bodies[3].mask_label] == name_to_id("T12")
    assert any("unreliable" in w for w in la.warnings)


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
    neck[42:48, 22:28][neck[42:48, 22:28] == SegClass.DISC] = SegClass.BODY
    _, bodies = find_bodies(cls, SP)
    assert len(bodies) == 5
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [name_to_id(n) for n in ("L1", "L2", "L3", "L4", "L5")]


def test_a_false_body_off_the_column_is_dropped() -> None:
    # T12, L1-L5 and sacrum, plus a bright blob in front (a contrast-filled vessel taken for bone).
    cls = _column(6, [True] + [False] * 5, sacrum=True)
    k = np.where((cls == SegClass.BODY).any(axis=(0, 1)))[0]
    cls[40:50, 0:8, k.max() - 20 : k.max() - 12] = SegClass.BODY  # 24-40 mm in front of the column
    cls[82:88, 20:26, k.max() - 30 : k.max() - 26] = SegClass.BODY  # and one far to the side
    _, bodies = find_bodies(cls, SP)
    assert len(bodies) == 6
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [
        name_to_id(n) for n in ("T12", "L1", "L2", "L3", "L4", "L5")
    ]


def test_last_rib_shaft_and_transverse_processes_do_not_bear_ribs() -> None:
    cls = _column(4, [True, False, False, False], sacrum=True)
    ks = sorted({int(k) for k in np.where((cls == SegClass.BODY).any(axis=(0, 1)))[0]}, reverse=True)
    l1_mid = ks[12]  # a slice of the second body
    # The T12 rib slopes down: at L1's height its shaft lies 60-80 mm out, not at the body.
    cls[0:10, 14:20, l1_mid - 2 : l1_mid + 2] = SegClass.RIB
    # A transverse process of L2 taken for a rib: beside the body, short and small.
    l2_mid = ks[20]
    cls[33:37, 16:19, l2_mid - 1 : l2_mid + 1] = SegClass.RIB
    _, bodies = find_bodies(cls, SP)
    assert [b.rib_bearing for b in bodies] == [True, False, False, False]


def test_rib_like_bone_beside_a_lumbar_body_is_overruled_by_the_sacrum() -> None:
    # T12 bears ribs, L1 none, L3 "ribs" (a transverse process taken for one), sacrum below L5.
    cls = _column(7, [False, True, False, False, True, False, False], sacrum=True)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    names = [la.ids[b.mask_label] for b in bodies]
    assert names == [name_to_id(n) for n in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")]
    assert la.confidence == 0.8
    assert any("overruled" in w for w in la.warnings)


def test_rib_like_bone_three_rib_free_bodies_below_the_last_rib_is_overruled_without_a_sacrum() -> None:
    # T12 (ribs) at the top, L1-L3 rib-free, "ribs" beside L4 (the iliac crest), L5; no sacrum.
    cls = _column(6, [True, False, False, False, True, False], sacrum=False)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    names = [la.ids[b.mask_label] for b in bodies]
    assert names == [name_to_id(n) for n in ("T12", "L1", "L2", "L3", "L4", "L5")]
    assert la.confidence == 0.8
    assert any("body 5" in w and "overruled" in w for w in la.warnings)


def test_a_split_body_counts_once_in_a_rib_gap() -> None:
    # T9 (ribs), T10 and T11 whose ribs the network missed, T11 split in two side by side,
    # T12 (ribs), L1 at the scan's end: two rib-free levels, not three, so T12's ribs are
    # believed (seen on a synthetic chest scan, test-1003-0173, whose levels the overruling had
    # shifted by three).
    cls = _column(5, [True, False, False, True, False], sacrum=False)
    k = np.where((cls == SegClass.BODY).any(axis=(0, 1)))[0]
    t11 = k.max() - 2 * 10  # the third body from the top
    cls[44:46, :, t11 - 8 : t11 + 1] = 0
    _, bodies = find_bodies(cls, SP)
    assert len(bodies) == 6
    la = assign_levels(cls, bodies, SP)
    names = [la.ids[b.mask_label] for b in bodies]
    assert names[-2:] == [name_to_id(n) for n in ("T12", "L1")]
    assert not any("overruled" in w for w in la.warnings)


def test_rib_free_bodies_above_the_ribs_and_a_two_body_gap_are_believed() -> None:
    # The neck (C6, C7 rib-free) above T1, T2: the last rib-bearing body is the anchor.
    cls = _column(5, [False, False, True, True, False], sacrum=False)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[3].mask_label] == name_to_id("T12")
    assert not any("overruled" in w for w in la.warnings)
    # Two rib-free bodies between rib-bearing ones may be missed ribs (seen on synthetic chest
    # scans): no sacrum to say otherwise.
    cls = _column(6, [True, False, False, True, False, False], sacrum=False)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[3].mask_label] == name_to_id("T12")


def test_a_rib_gap_that_would_leave_more_than_five_lumbar_bodies_is_believed() -> None:
    # Three missed ones, but believing the gap would leave eight bodies below the last rib:
    # the ribs are kept (T12 is the last rib-bearing body).
    cls = _column(9, [True, False, False, False, True, False, False, False, False], sacrum=False)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[4].mask_label] == name_to_id("T12")
    assert not any("overruled" in w for w in la.warnings)


def test_sacralised_l5_keeps_the_rib_anchor() -> None:
    # Ribs on the two bodies above four rib-free ones and the sacrum: four lumbar bodies.
    cls = _column(6, [True, True, False, False, False, False], sacrum=True)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[1].mask_label] == name_to_id("T12")
    assert any("transitional" in w for w in la.warnings)


def test_stray_sacrum_voxels_at_the_top_do_not_hide_the_sacrum() -> None:
    cls = _column(3, [False, False, False], sacrum=True)
    cls[0:6, 0:6, -3:] = SegClass.SACRUM  # a few "sacrum" voxels at the scan's top edge ...
    cls[60:90, 0:40, -5:-1] = SegClass.SACRUM  # ... and a piece larger than the sacrum itself
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [name_to_id(n) for n in ("L3", "L4", "L5")]


def test_a_lone_piece_far_below_the_column_and_off_it_is_not_a_body() -> None:
    # Five bodies, then 80 mm lower and 70 mm to the side a bony blob (a hip bone, say): with
    # fewer than two bodies within the column window it is judged against the nearest two.
    col = _column(5, [False] * 5, sacrum=False)
    pad = 60
    cls = np.concatenate([np.zeros((*col.shape[:2], pad), dtype=np.uint8), col], axis=2)
    lowest_bottom = pad + (col.shape[2] - 3) - 4 * 10 - 8
    z = lowest_bottom - 40  # 80 mm below
    cls[5:12, 20:30, z - 3 : z + 2] = SegClass.BODY
    _, bodies = find_bodies(cls, SP)
    assert len(bodies) == 5
    assert all(abs(b.centroid_ijk[0] - 44.5) < 2 for b in bodies)


def test_a_sacral_segment_between_the_alae_is_not_a_body() -> None:
    # T12 (ribs), L1-L5, and below L5 the S1 body segmented as body with sacral alae either side.
    cls = _column(6, [True] + [False] * 5, sacrum=False)
    pad = 20
    cls = np.concatenate([np.zeros((*cls.shape[:2], pad), dtype=np.uint8), cls], axis=2)
    l5_bottom = pad + (cls.shape[2] - pad - 3) - 5 * 10 - 8
    s1 = slice(l5_bottom - 12, l5_bottom - 3)
    cls[40:50, 20:30, s1] = SegClass.BODY
    cls[25:38, 18:32, : l5_bottom - 3] = SegClass.SACRUM  # the alae, and the sacrum below them
    cls[52:65, 18:32, : l5_bottom - 3] = SegClass.SACRUM
    cls[40:50, 20:30, : s1.start] = SegClass.SACRUM
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [
        name_to_id(n) for n in ("T12", "L1", "L2", "L3", "L4", "L5")
    ]
    assert set(la.cues) == {"last_rib", "sacrum"}


def test_a_body_cut_by_the_bottom_edge_beside_stray_sacrum_voxels_is_kept() -> None:
    # A chest scan: T10-T12 (ribs), L1, and the top 3 slices of L2 at the bottom edge, which
    # the network flanked with a little "sacrum" (2 x 0.96 ml): not the alae of S1.
    cls = _column(4, [True, True, True, False], sacrum=False)
    l1_bottom = (cls.shape[2] - 3) - 3 * 10 - 8
    cls = cls[:, :, l1_bottom - 5 :]
    cls[40:50, 20:30, 0:3] = SegClass.BODY
    cls[34:38, 20:30, 0:3] = SegClass.SACRUM
    cls[52:56, 20:30, 0:3] = SegClass.SACRUM
    _, bodies = find_bodies(cls, SP)
    assert len(bodies) == 5 and bodies[-1].touches_edge
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[-1].mask_label] == name_to_id("L2")
    assert "sacrum" not in la.cues


def test_a_rib_whose_head_was_called_posterior_element_still_marks_its_body() -> None:
    # T11, T12, L1-L5 and the sacrum; the ribs of T11 and T12 begin 40 mm out (their heads and
    # necks segmented as posterior elements, as the fine VB-Net does on chest scans), so none
    # reaches the head zone beside the body.
    cls = _column(7, [False] * 7, sacrum=True)
    ks = sorted({int(k) for k in np.where((cls == SegClass.BODY).any(axis=(0, 1)))[0]}, reverse=True)
    for body in (0, 1):
        mid = ks[body * 8 + 4]
        cls[25:28, 14:18, mid - 2 : mid + 2] = SegClass.POSTERIOR
        cls[0:25, 12:16, mid - 3 : mid + 1] = SegClass.RIB  # 42-90 mm out, sloping down
        cls[65:90, 12:16, mid - 3 : mid + 1] = SegClass.RIB
    _, bodies = find_bodies(cls, SP)
    assert [b.rib_bearing for b in bodies] == [True, True] + [False] * 5
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [
        name_to_id(n) for n in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")
    ]
    assert la.confidence == 1.0


def _hu(cls: np.ndarray) -> np.ndarray:
    """CT numbers for a class map: bone 400 HU, everything else fat."""
    bone = (cls == SegClass.BODY) | (cls == SegClass.SACRUM)
    return np.where(bone, 400.0, -100.0).astype(np.float32)


def _chest_scan_ending_below(l1_gap: int) -> np.ndarray:
    """T10-T12 (ribs) and L1, the scan's bottom edge ``l1_gap`` slices below L1."""
    cls = _column(4, [True, True, True, False], sacrum=False)
    l1_bottom = (cls.shape[2] - 3) - 3 * 10 - 8
    return cls[:, :, l1_bottom - l1_gap :].copy()


def test_the_endplate_of_a_body_cut_by_the_bottom_edge_is_that_body() -> None:
    # The scan ends one slice into L2; the network called that slice (its dense endplate) sacrum.
    cls = _chest_scan_ending_below(3)
    cls[40:50, 20:30, 0] = SegClass.SACRUM
    inst, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies][-1] == name_to_id("L1")
    added = claim_edge_slivers(cls, inst, bodies, la.ids, _hu(cls), SP)
    assert len(added) == 1 and added[0].touches_edge and added[0].z_range == (0, 0)
    assert la.ids[added[0].mask_label] == name_to_id("L2")
    assert (inst[40:50, 20:30, 0] == added[0].mask_label).all()


def test_a_sliver_ends_at_its_last_slice_of_bone() -> None:
    # As above, and the network also called the slice of disc above the endplate "body": that
    # slice (60 HU) is not part of L2.
    cls = _chest_scan_ending_below(5)
    cls[40:50, 20:30, 0] = SegClass.SACRUM
    cls[40:50, 20:30, 1] = SegClass.BODY
    hu = _hu(cls)
    hu[:, :, 1] = 60.0
    inst, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    added = claim_edge_slivers(cls, inst, bodies, la.ids, hu, SP)
    assert len(added) == 1 and added[0].z_range == (0, 0)
    assert la.ids[added[0].mask_label] == name_to_id("L2")
    assert (inst[40:50, 20:30, 0] == added[0].mask_label).all()
    assert not inst[:, :, 1].any()
    # The same where the network called all three slices body, so that they are a body of
    # their own (L2): it too ends at its endplate.
    cls[40:50, 20:30, 0:3] = SegClass.BODY
    hu[:, :, 2] = 60.0
    inst, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[-1].mask_label] == name_to_id("L2") and bodies[-1].z_range == (0, 2)
    assert claim_edge_slivers(cls, inst, bodies, la.ids, hu, SP) == []
    assert bodies[-1].z_range == (0, 0)
    assert (inst[40:50, 20:30, 0] == bodies[-1].mask_label).all()
    assert not inst[:, :, 1:3].any()


def test_bone_at_the_bottom_edge_below_l5_stays_sacrum() -> None:
    # T12 (ribs), L1-L5, then one slice of S1 at the edge, as narrow as a body: the sacrum.
    cls = _column(6, [True, False, False, False, False, False], sacrum=False)
    l5_bottom = (cls.shape[2] - 3) - 5 * 10 - 8
    cls = cls[:, :, l5_bottom - 3 :].copy()
    cls[40:50, 20:30, 0] = SegClass.SACRUM
    inst, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[-1].mask_label] == name_to_id("L5")
    before = inst.copy()
    assert claim_edge_slivers(cls, inst, bodies, la.ids, _hu(cls), SP) == []
    assert np.array_equal(inst, before)


def test_a_wide_blob_or_a_few_voxels_at_the_edge_is_not_a_sliver() -> None:
    # Sacrum-like bone three times the body's width (alae, or a leak) is not L2's endplate,
    # nor are a few stray voxels under the column.
    for patch in ((slice(25, 65), slice(15, 35)), (slice(44, 46), slice(24, 26))):
        cls = _chest_scan_ending_below(3)
        cls[patch[0], patch[1], 0] = SegClass.SACRUM
        inst, bodies = find_bodies(cls, SP)
        la = assign_levels(cls, bodies, SP)
        assert claim_edge_slivers(cls, inst, bodies, la.ids, _hu(cls), SP) == []
    # Nor is "body" the network saw in fat at the top edge (above T1 of a synthetic chest).
    cls = _column(6, [True, False, False, False, False, False], sacrum=True)
    cls[40:50, 20:30, -1] = SegClass.BODY
    inst, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    hu = _hu(cls)
    hu[:, :, -1] = -110.0
    assert claim_edge_slivers(cls, inst, bodies, la.ids, hu, SP) == []


def test_a_sliver_at_the_top_edge_under_the_least_body_volume_is_the_level_above() -> None:
    # A lumbar scan: T12 (ribs), L1-L5, sacrum; one slice of T11 (0.8 ml, under find_bodies'
    # least volume of 1 ml) at the top edge.
    cls = _column(6, [True, False, False, False, False, False], sacrum=True)
    cls[40:50, 20:30, -1] = SegClass.BODY
    inst, bodies = find_bodies(cls, SP)
    assert len(bodies) == 6
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[0].mask_label] == name_to_id("T12")
    added = claim_edge_slivers(cls, inst, bodies, la.ids, _hu(cls), SP)
    assert [la.ids[b.mask_label] for b in added] == [name_to_id("T11")]
    assert added[0].z_range == (cls.shape[2] - 1, cls.shape[2] - 1)


def test_six_rib_free_bodies_below_the_last_rib_without_a_sacrum_end_at_l5() -> None:
    # T11 (ribs), T12 without its rib, L1-L5 and no sacrum in view: read as with the sacrum,
    # an absent 12th rib rather than an L6, so the lowest body is L5 and none is left unnamed.
    cls = _column(7, [True] + [False] * 6, sacrum=False)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    names = [la.ids[b.mask_label] for b in bodies]
    assert names == [name_to_id(n) for n in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")]
    assert la.confidence == 0.6
    assert any("transitional" in w and "L5" in w for w in la.warnings)
    # Five rib-free bodies keep the last rib as T12.
    cls = _column(6, [True] + [False] * 5, sacrum=False)
    _, bodies = find_bodies(cls, SP)
    la = assign_levels(cls, bodies, SP)
    assert la.ids[bodies[0].mask_label] == name_to_id("T12")
    assert la.confidence == 0.8


def test_the_last_rib_passing_the_body_below_at_the_scan_edge_does_not_mark_it() -> None:
    # A chest scan ending in L1: T12's rib runs down from T12's height and passes 8-16 mm
    # beside L1's top corner (within its head zone), a whole rib of 2 ml. It is T12's rib: L1
    # stays rib-free, so the last rib anchors the levels (test-1003-0051 had no level named).
    cls = _column(3, [True, True, False], sacrum=False)
    ks = sorted({int(k) for k in np.where((cls == SegClass.BODY).any(axis=(0, 1)))[0]}, reverse=True)
    t12_mid, l1_mid = ks[12], ks[20]
    for z in range(t12_mid, l1_mid - 1, -1):  # out by a voxel every two slices down
        out = 4 + (t12_mid - z) // 2
        cls[40 - out - 4 : 40 - out, 12:17, z] = SegClass.RIB
        cls[50 + out : 50 + out + 4, 12:17, z] = SegClass.RIB
    _, bodies = find_bodies(cls, SP)
    assert [b.rib_bearing for b in bodies] == [True, True, False]
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [name_to_id(n) for n in ("T11", "T12", "L1")]


def test_a_merged_column_is_cut_only_at_its_joints() -> None:
    # T11 and T12 (ribs; 12 mm tall), then L1-L5 (20 mm tall) joined into one component by body
    # voxels around the rim of each disc, and the sacrum. The height count alone (116 mm over
    # the 12 mm median body) asks for nine cuts: five of them would fall inside bodies.
    nz = 2 * 8 + 5 * 12 + 10
    cls = np.zeros((90, 40, nz), dtype=np.uint8)
    z1 = nz - 2
    for _ in ("T11", "T12"):
        z0 = z1 - 6
        cls[40:50, 20:30, z0:z1] = SegClass.BODY
        cls[10:30, 12:16, z0 + 1 : z0 + 5] = SegClass.RIB
        cls[60:80, 12:16, z0 + 1 : z0 + 5] = SegClass.RIB
        cls[40:50, 20:30, z0 - 2 : z0] = SegClass.DISC
        z1 = z0 - 2
    for i in range(5):
        z0 = z1 - 10
        cls[40:50, 20:30, z0:z1] = SegClass.BODY
        if i < 4:
            cls[40:50, 20:30, z0 - 2 : z0] = SegClass.BODY  # the rim of the disc taken for body
            cls[41:49, 21:29, z0 - 2 : z0] = SegClass.DISC
        z1 = z0 - 2
    cls[35:55, 15:32, 0:z1] = SegClass.SACRUM
    _, bodies = find_bodies(cls, SP)
    assert len(bodies) == 7
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [
        name_to_id(n) for n in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")
    ]
    assert la.confidence == 1.0


def test_a_body_joined_to_false_bone_beside_it_keeps_its_part_on_the_column() -> None:
    # T12 (ribs), L1-L5, sacrum; the network called 60 mm of soft tissue beside L1 "body" too:
    # the joined component's centroid lies 30 mm off the column.
    cls = _column(6, [True] + [False] * 5, sacrum=True)
    l1 = np.where(cls[45, 25] == SegClass.BODY)[0]
    l1 = l1[(l1 < l1.max() - 9) & (l1 >= l1.max() - 17)]  # the second body from the top
    cls[50:80, 20:30, l1.min() : l1.max() + 1] = SegClass.BODY
    inst, bodies = find_bodies(cls, SP)
    assert len(bodies) == 6
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [
        name_to_id(n) for n in ("T12", "L1", "L2", "L3", "L4", "L5")
    ]
    # What lies beyond 30 mm of the column's axis is not part of L1.
    assert not inst[61:, :, :].any()
    assert inst[40:50, 20:30, l1.min() : l1.max() + 1].all()


def test_a_scrap_of_a_body_joined_to_false_bone_is_not_a_body_of_its_own() -> None:
    # T12 (ribs), L1-L5, sacrum; the top three slices of L2 are cut off from the rest of it and
    # joined to 60 mm of soft tissue beside it taken for "body". Their on-column part has the
    # volume of a body fragment (300 voxels against the 800 of a body) but not its height.
    cls = _column(6, [True] + [False] * 5, sacrum=True)
    zs = np.where(cls[45, 25] == SegClass.BODY)[0]
    l2 = zs[(zs < zs.max() - 19) & (zs >= zs.max() - 27)]  # the third body from the top
    cls[40:50, 20:30, l2.max() - 3] = SegClass.BACKGROUND
    cls[50:80, 20:30, l2.max() - 2 : l2.max() + 1] = SegClass.BODY
    inst, bodies = find_bodies(cls, SP)
    assert len(bodies) == 6
    la = assign_levels(cls, bodies, SP)
    assert [la.ids[b.mask_label] for b in bodies] == [
        name_to_id(n) for n in ("T12", "L1", "L2", "L3", "L4", "L5")
    ]
    assert not inst[40:50, 20:30, l2.max() - 2 : l2.max() + 1].any()


def test_fragments_beside_a_merged_column_do_not_set_the_body_height() -> None:
    # Five 20 mm bodies joined into one 108 mm component (thick slices show no disc, only the
    # waist where the disc was), two separate 20 mm bodies below, and three 12 mm fragments
    # beside the column's top (the neck of a chest scan, which the network called body). The
    # fragments do not set the body height: the column is cut into its five bodies (seven on
    # the column with the two below), not into seven of its own.
    nz = 5 * 10 + 4 + 2 * 12 + 10
    cls = np.zeros((90, 40, nz), dtype=np.uint8)
    z1 = nz - 2
    for i in range(5):
        z0 = z1 - 10
        cls[40:50, 20:30, z0:z1] = SegClass.BODY
        if i < 4:
            cls[43:47, 23:27, z0 - 1] = SegClass.BODY  # the waist of a missed disc
        z1 = z0 - 1
    top = nz - 2
    for x0 in (12, 64, 76):
        cls[x0 : x0 + 6, 22:28, top - 6 : top] = SegClass.BODY
    z1 -= 1
    for _ in range(2):
        z0 = z1 - 10
        cls[40:50, 20:30, z0:z1] = SegClass.BODY
        cls[40:50, 20:30, z0 - 2 : z0] = SegClass.DISC
        z1 = z0 - 2
    _, bodies = find_bodies(cls, SP)
    on_column = [b for b in bodies if 40 <= b.centroid_ijk[0] < 50]
    assert len(on_column) == 7
    heights = [b.z_range[1] - b.z_range[0] + 1 for b in on_column]
    assert all(9 <= h <= 11 for h in heights), heights


def test_a_tall_body_below_short_ones_is_judged_by_its_neighbours() -> None:
    # A scan from the upper thoracic spine to L1: eight 14 mm bodies, then 16-20 mm ones and a
    # 24 mm L1. The scan's median body (14 mm) would call L1 two bodies; its neighbours
    # (16-20 mm) do not.
    heights_vox = [7] * 8 + [8, 9, 10, 10, 12]
    nz = sum(heights_vox) + 2 * len(heights_vox) + 8
    cls = np.zeros((90, 40, nz), dtype=np.uint8)
    z1 = nz - 3
    for h in heights_vox:
        z0 = z1 - h
        cls[40:50, 20:30, z0:z1] = SegClass.BODY
        cls[40:50, 20:30, z0 - 2 : z0] = SegClass.DISC
        z1 = z0 - 2
    _, bodies = find_bodies(cls, SP)
    assert [b.z_range[1] - b.z_range[0] + 1 for b in bodies] == heights_vox


def test_bodies_beside_a_thin_false_body_still_set_the_body_height() -> None:
    # T9-T12 (ribs, 20 mm) and L1-L5 (32 mm) on 4 mm slices, and in front of L1-L4 the
    # enhanced aorta of an arterial phase taken for "body": a component of its own, 1 cm2
    # across and longer than any body, so larger than each. Lying beside it does not make the
    # lumbar bodies fragments (it is a quarter of their width); were they left out, the
    # thoracic bodies alone would set the height and cut each lumbar body in two.
    sp = (2.0, 2.0, 4.0)
    heights_vox = [5] * 4 + [8] * 5
    nz = sum(heights_vox) + len(heights_vox) + 6
    cls = np.zeros((90, 60, nz), dtype=np.uint8)
    z1 = nz - 1
    for i, h in enumerate(heights_vox):
        z0 = z1 - h
        cls[40:50, 20:30, z0:z1] = SegClass.BODY
        if i < 4:
            cls[10:30, 12:16, z0 + 1 : z0 + 3] = SegClass.RIB
            cls[60:80, 12:16, z0 + 1 : z0 + 3] = SegClass.RIB
        cls[40:50, 20:30, z0 - 1] = SegClass.DISC
        z1 = z0 - 1
    cls[35:55, 15:32, 0:z1] = SegClass.SACRUM
    cls[43:48, 40:45, z1 + 12 : z1 + 52] = SegClass.BODY  # the aorta, 20 mm in front
    _, bodies = find_bodies(cls, sp)
    assert [b.z_range[1] - b.z_range[0] + 1 for b in bodies] == heights_vox
    la = assign_levels(cls, bodies, sp)
    assert [la.ids[b.mask_label] for b in bodies] == [
        name_to_id(n) for n in ("T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
    ]
