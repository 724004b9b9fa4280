"""The docs as a test: each measured table's numbers are in the JSON its source line names, links resolve.

A measured table is a Markdown table whose last non-blank line above is a source line:

    Source: `COMMAND` -> `benchmarks/results/NAME.json`, measured 2026-12-07 on MACHINE.

(several `COMMAND` -> `JSON` pairs may be listed, separated by `;`). Every number in the table's body
cells must be a number of those JSON files (values, and numbers inside strings), as rounded in the cell:
`0.9012` matches 0.90118, `1,400` matches 1400.18, `4.7%` matches 0.0467, `4 ms` matches 0.0041 (s),
`93.9 MiB` matches 98,480,000 (bytes). Tables without a source line (options, layouts) are not checked.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "platform" / "supermask"
README_MAX_LINES = 300
QUICKSTART = [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/supermask run tasks/permuted_mnist.yaml",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
]

SOURCE_PREFIX = "Source:"
PAIR = re.compile(r"`(?P<command>[^`]+)`\s*->\s*`(?P<json>benchmarks/results/[\w.-]+\.json)`")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
SEPARATOR = re.compile(r"^\|\s*:?-{3,}")
NUMBER = re.compile(
    r"(?<![\w.])(?P<neg>-)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?(?:e(?P<exp>[-+]?\d+))?"
    r"(?:\s?(?P<unit>%|ms|s|min|h|B|KB|MB|GB|KiB|MiB|GiB)(?!\w))?(?!\w)(?!\.\d)"
)
UNITS = [
    {"s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0},
    {"B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 2.0**10, "MiB": 2.0**20, "GiB": 2.0**30},
]
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
NAMED_JSON = re.compile(r"benchmarks/results/[\w.-]+\.json")
# Repository files the prose names by path; each must exist (module paths are relative to the package).
NAMED_FILES = re.compile(
    r"(?<![\w/.-])(?:(?:tasks|tuning)/[\w.-]+\.yaml|(?:benchmarks|tests)/[\w.-]+\.(?:py|sh))"
)
NAMED_MODULES = re.compile(
    r"(?<![\w/.-])(?:platform/supermask/)?(?P<path>(?:core|data|store|config|recipes|runtime|interface)/[\w/]*\w\.py)"
)


def pages(root: Path = ROOT) -> list[Path]:
    """The README and every Markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, numbered from 1."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


@dataclass
class Table:
    """One Markdown table of a page and the source line above it, if any."""

    line: int
    source: str | None
    rows: list[tuple[int, list[str]]]


def cells(line: str) -> list[str]:
    """The cells of one table row."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def tables(text: str) -> tuple[list[Table], list[int]]:
    """The page's tables, and the lines of source lines that no table follows."""
    lines = prose_lines(text)
    found, orphans = [], []
    i = 0
    while i < len(lines):
        number, line = lines[i]
        if line.startswith(SOURCE_PREFIX):
            j = i + 1
            while j < len(lines) and not lines[j][1].strip():
                j += 1
            if not (j + 1 < len(lines) and lines[j][1].startswith("|") and SEPARATOR.match(lines[j + 1][1])):
                orphans.append(number)
        if line.startswith("|") and i + 1 < len(lines) and SEPARATOR.match(lines[i + 1][1]):
            above = next((text for _, text in reversed(lines[:i]) if text.strip()), "")
            source = above if above.startswith(SOURCE_PREFIX) else None
            j = i + 2
            rows = []
            while j < len(lines) and lines[j][1].startswith("|"):
                rows.append((lines[j][0], cells(lines[j][1])))
                j += 1
            found.append(Table(number, source, rows))
            i = j
            continue
        i += 1
    return found, orphans


def json_numbers(value, out: list[float]) -> list[float]:
    """Every number in a JSON value: numbers, and numbers written inside strings and keys."""
    if isinstance(value, bool) or value is None:
        return out
    if isinstance(value, int | float):
        out.append(float(value))
    elif isinstance(value, str):
        flat = re.sub(r"(?<=\d),(?=\d{3})", "", value)
        out.extend(float(m) for m in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", flat))
    elif isinstance(value, dict):
        for key, item in value.items():
            json_numbers(key, out)
            json_numbers(item, out)
    elif isinstance(value, list):
        for item in value:
            json_numbers(item, out)
    return out


def candidates(match: re.Match) -> list[tuple[float, float]]:
    """The (value, tolerance) pairs a JSON number may have to be written as this token."""
    digits = len(match["frac"]) - 1 if match["frac"] else 0
    exponent = int(match["exp"] or 0)
    value = float(match["int"].replace(",", "") + (match["frac"] or "")) * 10.0**exponent
    value = -value if match["neg"] else value
    tolerance = 0.5 * 10.0 ** (exponent - digits)
    unit = match["unit"]
    out = [(value, tolerance)]
    if unit == "%":
        out.append((value / 100, tolerance / 100))
    for family in UNITS:
        if unit in family:
            out += [
                (value * family[unit] / scale, tolerance * family[unit] / scale) for scale in family.values()
            ]
    return out


def found(match: re.Match, values: list[float]) -> bool:
    """Whether some JSON number, rounded as the token shows it, is the token."""
    for value, tolerance in candidates(match):
        slack = tolerance * (1 + 1e-9) + 1e-12
        i = bisect.bisect_left(values, value - slack)
        if i < len(values) and values[i] <= value + slack:
            return True
    return False


def cell_text(cell: str) -> str:
    """A cell without code spans and link targets, whose digits are names rather than numbers."""
    cell = re.sub(r"`[^`]*`", " ", cell)
    return re.sub(r"\]\([^)]*\)", "]", cell)


def table_errors(page: Path, root: Path = ROOT) -> list[str]:
    """Why the page's measured tables are not backed by their JSON files (empty when they are)."""
    where = page.relative_to(root)
    errors = []
    measured, orphans = tables(page.read_text())
    errors += [f"{where}:{n}: a source line with no table right after it" for n in orphans]
    for table in measured:
        if table.source is None:
            continue
        pairs = PAIR.findall(table.source)
        if not pairs:
            errors.append(
                f"{where}:{table.line}: the source line names no `COMMAND` -> `benchmarks/results/NAME.json`"
            )
            continue
        if not DATE.search(table.source):
            errors.append(
                f"{where}:{table.line}: the source line gives no date (YYYY-MM-DD) of the measurement"
            )
        values: list[float] = []
        for _, name in pairs:
            path = root / name
            if not path.is_file():
                errors.append(f"{where}:{table.line}: {name} does not exist")
                continue
            json_numbers(json.loads(path.read_text()), values)
        values.sort()
        names = ", ".join(name for _, name in pairs)
        for number, row in table.rows:
            for cell in row:
                for match in NUMBER.finditer(cell_text(cell)):
                    if not found(match, values):
                        errors.append(f"{where}:{number}: {match[0]!r} in cell {cell!r} is not in {names}")
    return errors


def slug(heading: str) -> str:
    """The anchor a Markdown heading gets on GitHub."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lstrip("#").strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(page.read_text()):
        if re.match(r"#{1,6} ", line):
            base = slug(line)
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def link_errors(page: Path, root: Path = ROOT) -> list[str]:
    """Links to missing files or headings, and named results, specs, scripts and modules that do not exist."""
    where = page.relative_to(root)
    errors = []
    text = page.read_text()
    for number, line in prose_lines(text):
        for match in LINK.finditer(line):
            target = match["target"]
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                errors.append(f"{where}:{number}: link to {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                errors.append(f"{where}:{number}: link to {target}: no such heading in {file.name}")
    for name in sorted(set(NAMED_JSON.findall(text)) | set(NAMED_FILES.findall(text))):
        if not (root / name).is_file():
            errors.append(f"{where}: names {name}, which does not exist")
    for path in sorted({m["path"] for m in NAMED_MODULES.finditer(text)}):
        if not (root / "platform" / "supermask" / path).is_file():
            errors.append(f"{where}: names the module {path}, which is not in platform/supermask/")
    return errors


def test_readme_is_short_and_keeps_the_quickstart():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move material to docs/"
    for command in QUICKSTART:
        assert command in lines, f"the Quickstart command changed or went missing: {command}"


def test_every_measured_table_is_in_its_json():
    checked = [t for page in pages() for t in tables(page.read_text())[0] if t.source is not None]
    assert len(checked) >= 10, "the measured tables lost their source lines"
    errors = [e for page in pages() for e in table_errors(page)]
    assert not errors, "\n".join(errors)


def test_links_and_named_files_exist():
    errors = [e for page in pages() for e in link_errors(page)]
    assert not errors, "\n".join(errors)


def write_page(root: Path, table: str, data: dict) -> Path:
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "benchmarks" / "results" / "x.json").write_text(json.dumps(data))
    page = root / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(
        "# A page\n\nWhat was run.\n\n"
        "Source: `python benchmarks/x.py` -> `benchmarks/results/x.json`, measured 2026-12-07 on a test.\n\n"
        f"{table}\n\nAfter the table.\n"
    )
    return page


DATA = {
    "rows": [{"K": 1, "ms": 49.311, "share": 0.04666, "bytes": 98480000, "s": 0.00438}],
    "note": "5,000 digits",
}


def test_a_table_whose_numbers_are_in_the_json_passes(tmp_path):
    table = (
        "| K (`fc1024`) | ms per step | share | memory | latency | data |\n| --- | --- | --- | --- | --- | --- |\n"
        "| 1 | 49.3 | 4.7% | 93.9 MiB | 4 ms | 5,000 |"
    )
    assert table_errors(write_page(tmp_path, table, DATA), tmp_path) == []


def test_a_number_missing_from_the_json_fails(tmp_path):
    table = "| K | ms per step |\n| --- | --- |\n| 1 | 49.4 |"
    errors = table_errors(write_page(tmp_path, table, DATA), tmp_path)
    assert len(errors) == 1 and "'49.4'" in errors[0] and "benchmarks/results/x.json" in errors[0]


@pytest.mark.parametrize(
    ("source", "why"),
    [
        (
            "Source: `python benchmarks/x.py` -> `benchmarks/results/y.json`, measured 2026-12-07.",
            "does not exist",
        ),
        ("Source: `python benchmarks/x.py` -> `benchmarks/results/x.json`.", "no date"),
        ("Source: the x benchmark, 2026-12-07.", "names no"),
    ],
)
def test_a_source_line_must_name_an_existing_json_and_a_date(tmp_path, source, why):
    page = write_page(tmp_path, "| K |\n| --- |\n| 1 |", DATA)
    page.write_text(page.read_text().replace(page.read_text().splitlines()[4], source))
    errors = table_errors(page, tmp_path)
    assert any(why in e for e in errors), errors


def test_a_source_line_without_a_table_fails(tmp_path):
    page = write_page(tmp_path, "No table here.", DATA)
    assert any("no table right after it" in e for e in table_errors(page, tmp_path))


def test_broken_links_and_missing_files_are_reported(tmp_path):
    page = write_page(tmp_path, "See [the store](store.md#guarantees) and `tasks/nothing.yaml`.", DATA)
    (tmp_path / "docs" / "store.md").write_text("# The store\n\n## Format\n")
    errors = link_errors(page, tmp_path)
    assert any("no such heading" in e for e in errors) and any("tasks/nothing.yaml" in e for e in errors)
