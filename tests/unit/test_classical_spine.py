"""The classical spine finder: where the vertebral column is, without the networks."""

from __future__ import annotations

import numpy as np

from osteoscreen.segmentation.classical import check_bodies, find_spine_column
from osteoscreen.synth.cohort import generate_case, sample_case


def test_finds_the_column_of_synthetic_spines() -> None:
    for seed in (11, 12, 13):
        case = generate_case(sample_case(f"c{seed}", seed, "test", dicom_share=0.0))
        canon = case.volume  # the generator writes RAS
        assert np.all(np.diag(canon.affine)[:3] > 0)
        labels = np.asarray(case.bodies, dtype=np.int16)
        col = find_spine_column(canon.array, canon.spacing)
        assert col is not None, seed
        assert col.length_mm >= 60.0
        sp = canon.spacing
        # At each body's height, the column passes through the body or just behind it (its
        # pieces hold the arch too; in an osteoporotic spine only the arch is bright).
        ids = [v for v in np.unique(labels) if v > 0]
        assert ids, seed
        for vid in ids:
            i, j, k = np.argwhere(labels == vid).mean(axis=0)
            if not col.k.min() <= k <= col.k.max():
                continue
            ci, cj = col.centre_at(k)
            assert abs(ci - i) * sp[0] < 10.0, (seed, vid)
            assert -10.0 < (j - cj) * sp[1] < 45.0, (seed, vid)
        # QC: a "body" 80 mm to the side (a hip, the heart) is off the column.
        inside = [v for v in ids if col.k.min() <= np.argwhere(labels == v)[:, 2].mean() <= col.k.max()]
        i, j, k = np.argwhere(labels == inside[len(inside) // 2]).mean(axis=0)
        assert check_bodies(col, [(i, j, k), (i + 80.0 / sp[0], j, k), (i, j + 100.0 / sp[1], k)]) == [1, 2]


def test_no_column_without_a_spine() -> None:
    hu = np.full((60, 60, 40), -1000.0, np.float32)
    x, y = np.ogrid[:60, :60]
    hu[((x - 30) ** 2 + (y - 30) ** 2 < 25**2)] = 40.0  # a soft-tissue trunk, no bone
    assert find_spine_column(hu, (4.0, 4.0, 4.0)) is None
