"""The docs match the tree: every relative link and #anchor in README.md, docs/*.md and results/README.md resolves
(GitHub's heading slugs), every module under harness/ and methods/ is in docs/architecture.md, every test file in
docs/testing.md, and each glossary term the README uses links to the glossary."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "README.md"]
LINK = re.compile(r"!?\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "``", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link syntax and markup dropped, lowercase, punctuation other than - and _
    removed, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(prose(page.read_text(encoding="utf-8")))]


def test_slugs_follow_github_rules():
    assert slug("`harness cllm collect`, `harness cllm train` and `harness cllm measure`") == \
        "harness-cllm-collect-harness-cllm-train-and-harness-cllm-measure"
    assert slug("Speedup: a ratio (of throughputs)") == "speedup-a-ratio-of-throughputs"
    assert slug("The `--dry-run` flag & τ") == "the---dry-run-flag--τ"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked (no network in tests)
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_architecture_lists_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = sorted(p.relative_to(ROOT).as_posix() for folder in ("harness", "methods")
                     for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    assert modules and [m for m in modules if f"`{m}`" not in text] == []


def test_testing_lists_every_test_file():
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    files = sorted(p.name for p in (ROOT / "tests").glob("test_*.py"))
    assert files and [f for f in files if f"`{f}`" not in text] == []


GLOSSARY = {"tokens/step": r"tokens/step|tokens per step", "break-even": r"break-even", "speedup": r"speedup",
            "geomean": r"geomean|geometric mean", "lossless": r"lossless", "static cache": r"static (?:KV )?cache",
            "compiled engine": r"compiled engine", "2/2/2": r"2/2/2", "15/30": r"15/30", "block size": r"block size",
            "draft": r"draft", "acceptance": r"acceptance", "τ": r"τ"}


def test_the_readme_links_its_first_use_of_each_glossary_term_to_the_glossary():
    measurement = ROOT / "docs" / "measurement.md"
    head, sep, glossary = measurement.read_text(encoding="utf-8").partition("\n## Glossary\n")
    assert sep and "\n## " not in glossary, "docs/measurement.md ends with its ## Glossary section"
    defined = anchors(measurement) - {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*$", prose(head), flags=re.M)}
    text = prose((ROOT / "README.md").read_text(encoding="utf-8"))
    spans = [(m.start(1), m.end(1), m.group(2)) for m in
             re.finditer(r"\[([^\]]+)\]\(docs/measurement\.md#([^)]+)\)", text)]
    assert {anchor for *_, anchor in spans} <= defined  # every glossary link lands in the glossary
    for term, pattern in GLOSSARY.items():
        assert re.search(pattern, glossary, flags=re.I), f"the glossary does not define {term!r}"
        first = re.search(rf"(?<!\w)(?:{pattern})", text, flags=re.I)
        if first:  # a term the README never uses needs no link
            assert any(a <= first.start() < b for a, b, _ in spans), \
                f"README: the first use of {term!r} ({text[first.start():first.start() + 40]!r}) is not a glossary link"
