"""The reference documents the code cites ship with it (``docs/``), and every section or
decision a docstring names is there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"(REFERENCE|SPARSE_FL|DESIGN)\.md((?:,? (?:§[\d.]*\d|decision \d+)| and)*)")
PART = re.compile(r"§([\d.]*\d)|decision (\d+)")


def citations() -> list[tuple[str, str, str]]:
    found = []
    for folder in ("fedlab_cli", "algorithms", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for match in CITATION.finditer(path.read_text()):
                parts = PART.findall(match.group(2)) or [("", "")]
                found += [(f"{match.group(1)}.md", *part) for part in parts]
    return found


def test_every_cited_section_and_decision_exists_in_docs():
    cited = citations()
    assert len(cited) > 20  # the scan does find the docstrings' citations
    for name, section, decision in cited:
        doc = ROOT / "docs" / name
        assert doc.is_file(), f"{name} is cited but not shipped in docs/"
        text = doc.read_text()
        if section:
            assert re.search(rf"^#+ {re.escape(section)}[. ]", text, re.M), f"{name} §{section}"
        if decision:
            assert re.search(rf"^{decision}\. \*\*", text, re.M), f"{name} decision {decision}"
