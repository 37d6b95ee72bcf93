"""The docs hold together: no dead links or anchors, a README that is a front page."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
            ROOT / "pipelines" / "README.md", *sorted((ROOT / "examples").glob("**/*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)}


def dead_links(page: Path) -> list:
    text = FENCE.sub("", page.read_text())
    dead = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            dead.append(f"{page.relative_to(ROOT)}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            dead.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    return dead


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_dead_links(page):
    assert dead_links(page) == []


def test_link_check_can_fail(tmp_path):
    (tmp_path / "other.md").write_text("# A heading (with punctuation)\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading-with-punctuation) [gone](missing.md) "
                    "[bad anchor](other.md#nope)\n```\n[in code](ignored.md)\n```\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert dead_links(page) == ["page.md: missing.md: no such file", "page.md: other.md#nope: no such heading"]
    finally:
        ROOT = saved


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12 * 1024, f"README.md is {len(text.encode())} bytes"
    head = text.splitlines()[:40]
    assert 'pip install -e . && python -m tsn_dali.demo' in "\n".join(head)
    assert 'pip install -e ".[test]" && python -m pytest -q' in "\n".join(head)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && python -m pytest -q' in ci


def test_every_doc_page_is_reachable_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"docs/{page.name} is not linked from README.md"


# --------------------------------------------------------------------------- headline figures

FIGURE = re.compile(r"(\d+(?:\.\d+)?)(?=%|x\b| s\b|-\d)")


def section(text: str, anchor: str) -> str:
    """The text under the heading whose anchor is ``anchor``, up to the next heading of the
    same or a higher level ("" where there is none)."""
    heads = list(re.finditer(r"^(#{1,6})\s+(.*)$", text, re.M))
    for i, head in enumerate(heads):
        if slug(head.group(2)) == anchor:
            level = len(head.group(1))
            end = next((h.start() for h in heads[i + 1:] if len(h.group(1)) <= level), len(text))
            return text[head.end():end]
    return ""


def stale_headlines(readme: str, pages_text: dict) -> list:
    """README headline rows whose figures (numbers with %, x or s, range ends) are not in the
    measurements section the row links to."""
    table = section(readme, "headline-figures")
    stale = []
    for row in re.findall(r"^\|(.+)\|\s*$", table, re.M):
        cells = [c.strip() for c in row.split("|")]
        link = re.search(r"\]\(([^)#]+)#([^)]+)\)", cells[-1]) if len(cells) >= 3 else None
        if not link or link.group(1) not in pages_text:
            continue
        where = section(pages_text[link.group(1)], link.group(2))
        numbers = set(re.findall(r"\d+(?:\.\d+)?", where))
        stale += [f"{cells[0]}: {n} not in {link.group(1)}#{link.group(2)}" for n in FIGURE.findall(cells[1])
                  if n not in numbers]
    return stale


def test_readme_headline_figures_are_the_measured_ones():
    measurements = (ROOT / "docs" / "measurements.md").read_text()
    assert stale_headlines((ROOT / "README.md").read_text(), {"docs/measurements.md": measurements}) == []


def test_a_stale_headline_figure_is_caught():
    page = "## Headline figures\n\n| what | figure | measured |\n| --- | --- | --- |\n" \
           "| the demo | {} top-1 in {} | [m](docs/measurements.md#the-demo-cpu) |\n\n## Next\n"
    measured = {"docs/measurements.md": "# M\n\n## The demo (CPU)\n\n| 98.4% | 110 s |\n\n## Other\n\n95.3% 130 s\n"}
    assert stale_headlines(page.format("98.4%", "110 s"), measured) == []
    assert stale_headlines(page.format("95.3%", "130 s"), measured) == [
        "the demo: 95.3 not in docs/measurements.md#the-demo-cpu", "the demo: 130 not in docs/measurements.md#the-demo-cpu"]


def demo_results() -> list:
    return sorted((ROOT / "benchmarks" / "results").glob("demo-*/results.json"))


def test_the_demo_figures_in_the_docs_are_the_committed_runs():
    """Each committed demo run (its results.json, as the demo writes it) is quoted in the
    measurements page's demo section with its own top-1 and total time."""
    import json

    runs = demo_results()
    assert runs, "no committed demo run under benchmarks/results/demo-*/"
    demo = section((ROOT / "docs" / "measurements.md").read_text(), "the-demo-cpu")
    for path in runs:
        figures = json.loads(path.read_text())
        assert f"{figures['top1']:.1f}%" in demo and f"{figures['seconds']['total']:.0f} s" in demo, path
        assert path.parent.name in demo, f"{path.parent.name} is not linked from the demo section"
