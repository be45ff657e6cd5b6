"""Tests for nucleiseg.rle (Kaggle run-length encoding and submission CSVs)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nucleiseg.errors import NucleisegError
from nucleiseg.rle import (
    labels_to_rle,
    read_solution,
    read_submission,
    rle_decode,
    rle_encode,
    rle_to_labels,
    write_submission,
)


def test_hand_computed_example():
    # Pixels numbered down each column: column 0 is 1..3, column 1 is 4..6, column 2 is 7..9.
    mask = np.array([[1, 0, 0],
                     [1, 0, 1],
                     [1, 1, 0]], dtype=bool)
    assert rle_encode(mask) == "1 3 6 1 8 1"
    np.testing.assert_array_equal(rle_decode("1 3 6 1 8 1", (3, 3)), mask)


def test_first_column_and_run_across_columns():
    mask = np.zeros((3, 3), bool)
    mask[:, 0] = True
    assert rle_encode(mask) == "1 3"
    mask[0, 1] = True  # pixel 4 continues the run
    assert rle_encode(mask) == "1 4"
    mask[:] = True
    assert rle_encode(mask) == "1 9"


def test_non_square_orientation():
    mask = np.zeros((2, 4), bool)  # height 2, width 4
    mask[1, 0] = True  # pixel 2
    mask[0, 3] = True  # pixel 7
    assert rle_encode(mask) == "2 1 7 1"
    np.testing.assert_array_equal(rle_decode("2 1 7 1", (2, 4)), mask)


def test_empty_mask():
    assert rle_encode(np.zeros((4, 5), bool)) == ""
    assert not rle_decode("", (4, 5)).any()
    assert rle_decode("", (4, 5)).shape == (4, 5)


def test_overlapping_unsorted_runs_accepted():
    m = rle_decode("5 2 1 3 3 2", (3, 3))  # 5-6, 1-3, 3-4
    assert m.ravel(order="F").tolist() == [True] * 6 + [False] * 3


@pytest.mark.parametrize("bad", ["1", "1 2 3", "a 2", "1.5 2", "0 2", "1 0", "1 -1",
                                 "9 2", "10 1", "-1 2"])
def test_bad_strings_raise(bad):
    with pytest.raises(NucleisegError, match="RLE"):
        rle_decode(bad, (3, 3))


def test_bad_shape_and_mask_raise():
    with pytest.raises(NucleisegError):
        rle_decode("1 1", (0, 3))
    with pytest.raises(NucleisegError):
        rle_encode(np.zeros(5, bool))


masks = arrays(np.bool_, st.tuples(st.integers(1, 32), st.integers(1, 32)))


@settings(max_examples=50, deadline=None)
@given(masks)
def test_prop_round_trip(mask):
    rle = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(rle, mask.shape), mask)
    values = [int(v) for v in rle.split()]
    starts, lengths = values[0::2], values[1::2]
    assert all(n >= 1 for n in lengths)
    # runs are sorted and separated by at least one background pixel
    assert all(s2 > s1 + n1 for s1, n1, s2 in zip(starts, lengths, starts[1:]))


def test_labels_round_trip():
    lab = np.zeros((6, 7), dtype=np.int32)
    lab[0:2, 0:3] = 9
    lab[3:6, 2:4] = 4
    lab[5, 6] = 20
    rles = labels_to_rle(lab)
    assert len(rles) == 3
    assert rles[0] == rle_encode(lab == 4)  # ascending label order
    assert rles[1] == rle_encode(lab == 9)
    assert rles[2] == "42 1"
    back = rle_to_labels(rles, lab.shape)
    assert back.dtype == np.uint16
    assert back[lab == 4].tolist() == [1] * 6
    assert back[lab == 9].tolist() == [2] * 6
    assert back[5, 6] == 3
    assert (back == 0).sum() == (lab == 0).sum()
    assert labels_to_rle(np.zeros((3, 3), int)) == []
    assert rle_to_labels([], (3, 3)).sum() == 0


@settings(max_examples=30, deadline=None)
@given(arrays(np.int32, st.tuples(st.integers(1, 24), st.integers(1, 24)),
              elements=st.integers(0, 5)))
def test_prop_labels_round_trip(lab):
    rles = labels_to_rle(lab)
    ids = [i for i in np.unique(lab) if i]
    assert rles == [rle_encode(lab == i) for i in ids]
    back = rle_to_labels(rles, lab.shape)
    for n, i in enumerate(ids, start=1):
        np.testing.assert_array_equal(back == n, lab == i)


def test_rle_to_labels_later_wins_and_dtype():
    lab = rle_to_labels(["1 4", "3 4"], (3, 3))
    assert lab.ravel(order="F").tolist() == [1, 1, 2, 2, 2, 2, 0, 0, 0]
    big = rle_to_labels([""] * 65535 + ["1 1"], (2, 2))
    assert big.dtype == np.uint32 and big[0, 0] == 65536


def test_write_read_submission(tmp_path):
    path = tmp_path / "sub.csv"
    write_submission(path, [("img_a", ["1 3", "7 2"]), ("img_empty", []), ("img_b", ["5 1"])])
    lines = path.read_text().splitlines()
    assert lines == ["ImageId,EncodedPixels", "img_a,1 3", "img_a,7 2", "img_empty,",
                     "img_b,5 1"]
    assert read_submission(path) == {"img_a": ["1 3", "7 2"], "img_empty": [], "img_b": ["5 1"]}
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]  # no temp file left


def test_read_solution_with_extra_columns(tmp_path):
    path = tmp_path / "stage1_solution.csv"
    path.write_text("ImageId,EncodedPixels,Height,Width,Usage\n"
                    "a,1 3,3,4,Public\n"
                    "a,7 2,3,4,Public\n"
                    "b,,5,6,Private\n")
    assert read_solution(path) == {"a": (["1 3", "7 2"], (3, 4)), "b": ([], (5, 6))}
    assert read_submission(path) == {"a": ["1 3", "7 2"], "b": []}
    sub = tmp_path / "sub.csv"
    sub.write_text("ImageId,EncodedPixels\nx,1 1\n")
    assert read_solution(sub) == {"x": (["1 1"], None)}


def test_bad_submission_files_raise(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Id,Pixels\na,1 3\n")
    with pytest.raises(NucleisegError, match="bad.csv"):
        read_submission(path)
    with pytest.raises(NucleisegError, match="missing.csv"):
        read_submission(tmp_path / "missing.csv")
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("ImageId,EncodedPixels,Height,Width\na,1 1,3,x\n")
    with pytest.raises(NucleisegError, match="sizes.csv"):
        read_solution(sizes)
