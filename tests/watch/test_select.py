"""Which series of a study the node scores, and the reason it records when it scores none."""

from __future__ import annotations

import re

import pytest

from medad.watch import StudyFilter
from medad.watch.study import SeriesInfo, StudyRejectedError, select_series

CT_IMAGE, MR_IMAGE, SEG, SR = (
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.88.22",
)
STUDY = {
    "1.9.1": SeriesInfo("CT", "CHEST", {CT_IMAGE}),
    "1.9.2": SeriesInfo("MR", "HEAD", {MR_IMAGE}),
    "1.9.3": SeriesInfo("SEG", "", {SEG}),
}


def test_every_image_series_without_a_filter() -> None:
    assert select_series(STUDY, StudyFilter()) == ["1.9.1", "1.9.2"]


@pytest.mark.parametrize(
    ("rule", "kept"),
    [
        (StudyFilter.parse("ct, pt", None, None), ["1.9.1"]),
        (StudyFilter.parse(None, "head", None), ["1.9.2"]),
        (StudyFilter.parse("CT,MR", "CHEST", None), ["1.9.1"]),
        (StudyFilter.parse(None, None, MR_IMAGE), ["1.9.2"]),
    ],
)
def test_filters_keep_the_matching_series(rule: StudyFilter, kept: list[str]) -> None:
    assert select_series(STUDY, rule) == kept


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (StudyFilter.parse("US", None, None), "wrong modality: the study's image series are CT, MR; --modality allows"),
        (StudyFilter.parse(None, "KNEE", None), "wrong body part: the study's image series are CHEST, HEAD;"),
        (StudyFilter.parse("MR", "CHEST", None), "wrong body part: the study's image series are HEAD;"),
        (StudyFilter.parse(None, None, "1.2.3"), f"wrong SOP class: the study's image series are {CT_IMAGE}, "),
    ],
)
def test_a_study_the_filter_excludes_is_rejected_with_the_reason(rule: StudyFilter, reason: str) -> None:
    with pytest.raises(StudyRejectedError, match="^" + re.escape(reason)):
        select_series(STUDY, rule)


def test_a_study_without_image_series_is_rejected() -> None:
    with pytest.raises(StudyRejectedError, match=r"^no image series"):
        select_series({"1.9.3": SeriesInfo("SEG", "", {SEG}), "1.9.4": SeriesInfo("SR", "", {SR})}, StudyFilter())
