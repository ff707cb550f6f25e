"""Every relative link of README.md and docs/*.md resolves: the file exists and, for
`page.md#anchor`, the page has a heading whose GitHub anchor is that one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    body = FENCE.sub("", page.read_text())
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", body, re.M)}


def links(page: Path) -> list[str]:
    body = FENCE.sub("", page.read_text())
    body = re.sub(r"`[^`\n]*`", "", body)  # inline code is not a link
    return [m.group(1) for m in LINK.finditer(body)]


def test_anchor_rule_matches_github() -> None:
    assert github_anchor("RL metrics: scores shifted by the random policy") == (
        "rl-metrics-scores-shifted-by-the-random-policy")
    assert github_anchor("What AGS-CL does here, exactly") == "what-ags-cl-does-here-exactly"
    assert github_anchor("The library `agscl`") == "the-library-agscl"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    found = links(page)
    broken = []
    for target in found:
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.name}: {broken}"


def test_readme_links_every_docs_page_and_stays_short() -> None:
    readme = ROOT / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in links(readme)}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages not linked from README.md: {unlinked}"
    assert readme.stat().st_size <= 16_000
