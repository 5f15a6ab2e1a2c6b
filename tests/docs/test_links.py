"""README and docs link only to files inside the repository, and every relative link and anchor resolves."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHIPPED = sorted(
    p
    for folder in ("medad", "protocols", "notebooks", "benchmarks")
    for p in (ROOT / folder).rglob("*")
    if p.suffix in {".py", ".md", ".yaml", ".ipynb", ".html", ".js"}
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
OUTSIDE = re.compile(r"(?<![\w./-])(\.\./shared|shared/(?:reference|design)|/work/)")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


EXPLICIT = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def anchors(page: Path) -> set[str]:
    """Every anchor of a Markdown page: its headings' (GitHub numbering of repeated headings included) and the
    explicit ``<a id="...">`` ones."""
    seen: dict[str, int] = {}
    text = FENCE.sub("", page.read_text())
    result: set[str] = set(EXPLICIT.findall(text))
    for line in text.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def links(page: Path) -> list[str]:
    """The link targets of a page outside code blocks."""
    text = FENCE.sub("", page.read_text())
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        if ROOT not in file.parents and file != ROOT:
            broken.append(f"{target} (outside the repository)")
        elif not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", PAGES + SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(page: Path) -> None:
    hits = [m.group(0) for m in OUTSIDE.finditer(page.read_text())]
    assert not hits, f"{page.relative_to(ROOT)} refers to files outside the repository: {hits}"


def test_the_slug_rule_matches_github() -> None:
    assert slug("Set up") == "set-up"
    assert slug("`medad run`: the protocol runner") == "medad-run-the-protocol-runner"
    assert slug("Errors (exit 2)") == "errors-exit-2"
