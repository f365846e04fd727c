"""The documentation runs as written: every ```python block of README.md and docs/*.md that needs no external data
runs to exit status 0, and every relative link points to a file (and heading) that exists.

A block is skipped when one of its lines is a comment ``# needs: ...`` (data a user downloads, a GPU, a trained
checkpoint): such blocks are marked for the reader too. Each other block runs on its own in a fresh Python process
(OMP_NUM_THREADS=1, no Hub access) in an empty temporary folder that links the repository's ``weights/`` and
``demo/``, so a snippet may use those paths as from the repository root. Shell examples are ```bash blocks only
when they run as written from the repository root; the others are ```console blocks with a ``# needs:`` comment.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 380
SNIPPET_TIMEOUT_S = 120
LINKED_INTO_TMP = ("weights", "demo")

FENCE = re.compile(r"^\s*```(\S*)\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def code_blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line of the opening fence, language, code) of every fenced block of ``path``."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if lang is None and match:
            lang, start, body, indent = match.group(1), number, [], len(line) - len(line.lstrip())
        elif lang is not None and line.strip() == "```":
            blocks.append((start, lang, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line[indent:] if line[:indent].strip() == "" else line)
    assert lang is None, f"{path.name}: the block opened on line {start} is never closed"
    return blocks


def needs_external(code: str) -> bool:
    return any(line.strip().startswith("# needs:") for line in code.splitlines())


def python_snippets() -> list:
    params = []
    for path in DOCS:
        for line, lang, code in code_blocks(path):
            if lang == "python" and not needs_external(code):
                params.append(pytest.param(code, id=f"{path.relative_to(ROOT)}:{line}"))
    return params


@pytest.mark.parametrize("code", python_snippets())
def test_python_snippet_runs(code: str, tmp_path: Path) -> None:
    for name in LINKED_INTO_TMP:
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    (tmp_path / "snippet.py").write_text(code)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=SNIPPET_TIMEOUT_S)
    assert proc.returncode == 0, f"snippet failed (exit {proc.returncode}):\n{code}\n--- output ---\n" \
                                 f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


def test_some_snippets_are_run() -> None:
    """The extraction finds the README's and the docs' Python examples (a broken fence would hide them all)."""
    ids = [p.id for p in python_snippets()]
    assert any(i.startswith("README.md:") for i in ids)
    assert any(i.startswith("docs/api.md:") for i in ids)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces → -."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen, in_code = set(), {}, False
    for line in path.read_text().splitlines():
        if FENCE.match(line) or (in_code and line.strip() == "```"):
            in_code = not in_code
            continue
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if match and not in_code:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    text, out, in_code = path.read_text(), [], False
    for line in text.splitlines():
        if FENCE.match(line) or (in_code and line.strip() == "```"):
            in_code = not in_code
            continue
        if not in_code:
            out += [a or b for a, b in LINK.findall(line)]
    return out


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_headings(path: Path) -> None:
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_readme_is_short_with_a_table_of_contents() -> None:
    readme = ROOT / "README.md"
    lines = readme.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): " \
                                           "move details into docs/"
    start = next((i for i, line in enumerate(lines) if re.match(r"^##\s+Contents\s*$", line)), None)
    assert start is not None, "README.md has no '## Contents' section"
    toc = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        toc += [a for a, _ in LINK.findall(line) if a]
    assert len(toc) >= 5, f"the table of contents lists {len(toc)} links"
    sections = [slug(line.lstrip("#")) for line in lines if re.match(r"^##\s", line) and "Contents" not in line]
    missing = [s for s in sections if f"#{s}" not in toc]
    assert not missing, f"sections missing from the table of contents: {missing}"
