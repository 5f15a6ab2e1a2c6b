"""Every ``docs/PAGE.md#anchor`` the code prints leads somewhere: the page exists and holds the anchor."""

from __future__ import annotations

import re

from medad.data import list_datasets
from medad.protocols.paths import DATASETS_DOC
from tests.docs.test_links import ROOT, anchors

PRINTED = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")


def _printed_anchors() -> list[tuple[str, str, str]]:
    """(source file, page, anchor) of every literal ``docs/X.md#anchor`` in the package's code."""
    found = []
    for source in sorted((ROOT / "medad").rglob("*.py")):
        for page, anchor in PRINTED.findall(source.read_text()):
            found.append((str(source.relative_to(ROOT)), page, anchor))
    return found


def test_every_literal_docs_anchor_in_the_code_exists() -> None:
    broken = [
        f"{source}: docs/{page}#{anchor}"
        for source, page, anchor in _printed_anchors()
        if not (ROOT / "docs" / page).is_file() or anchor not in anchors(ROOT / "docs" / page)
    ]
    assert not broken, broken


def test_every_dataset_kind_has_the_anchor_validate_prints() -> None:
    """``medad validate`` prints ``docs/datasets.md#<kind>`` for a missing dataset of any registered kind."""
    page = ROOT / DATASETS_DOC
    missing = [kind for kind in list_datasets() if kind not in anchors(page)]
    assert not missing, f"{DATASETS_DOC} has no anchor for: {missing}"


def test_the_hint_validate_prints_for_each_kind_resolves() -> None:
    from medad.protocols.resources import _dataset_hint
    from medad.protocols.schema import DatasetSpec

    for kind in [*list_datasets(), "auto"]:
        hint = _dataset_hint(DatasetSpec(name="d", kind=kind, root="/nowhere"))
        page, anchor = PRINTED.search(hint).groups()  # type: ignore[union-attr]
        assert anchor in anchors(ROOT / "docs" / page), hint
