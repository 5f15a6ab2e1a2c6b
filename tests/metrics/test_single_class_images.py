"""Image-level metrics need both normal and abnormal images; otherwise they are not applicable."""

from __future__ import annotations

import numpy as np
import pytest

from medad.metrics import NotApplicable, image_ap, image_auroc, image_f1_max


@pytest.mark.parametrize("metric", [image_auroc, image_ap, image_f1_max])
@pytest.mark.parametrize(("label", "reason"), [(1, "no normal images"), (0, "no abnormal images")])
def test_one_class_sets_are_not_applicable(metric, label, reason):
    result = metric(np.array([0.1, 0.7, 0.4]), np.full(3, label))
    assert isinstance(result, NotApplicable) and result.reason == reason


def test_both_classes_give_values():
    scores, labels = np.array([0.1, 0.7, 0.4, 0.9]), np.array([0, 1, 0, 1])
    assert (
        image_auroc(scores, labels) == 1.0 and image_ap(scores, labels) == 1.0 and image_f1_max(scores, labels) == 1.0
    )
