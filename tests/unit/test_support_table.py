"""README's "Support" table claims only what a test shows: every cell has its operation test
(tests/unit/operations/matrix_*.json), a "refused" cell's case expects the host to fail and any
other cell's case expects it not to, and every test file a cell names exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).parent / "operations"
DISTROS = {
    "Debian 12": ["debian_12"], "Debian 13": ["debian_13"], "Debian testing (forky)": ["debian_forky"],
    "Ubuntu 24.04": ["ubuntu_24_04"], "Ubuntu 25.10": ["ubuntu_25_10"], "Fedora 42, 43": ["fedora_42", "fedora_43"],
}
COLUMNS = ["cpu", "vulkan", "hip_distro", "hip_amd_repo", "hip_therock"]


def support_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Support\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in DISTROS:
            rows[cells[0]] = cells[1:]
    return rows


def test_the_table_has_every_promised_distribution_and_column():
    rows = support_rows()
    assert sorted(rows) == sorted(DISTROS)
    assert all(len(cells) == len(COLUMNS) for cells in rows.values()), rows


def test_every_cell_has_an_operation_test_that_agrees_with_it():
    for distro, cells in support_rows().items():
        for column, cell in zip(COLUMNS, cells):
            for name in DISTROS[distro]:
                path = CASES / f"matrix_{name}_{column}.json"
                assert path.exists(), f"{distro} / {column} ({cell!r}): no operation test {path.name}"
                fails = json.loads(path.read_text())["expected"]["fails"]
                assert fails == cell.startswith("refused"), f"{distro} / {column}: {cell!r} but {path.name} " \
                                                           f"expects fails={fails}"


def test_every_test_a_cell_names_exists():
    named = {t for cells in support_rows().values() for c in cells for t in re.findall(r"`(test_\w+\.py)`", c)}
    assert named
    for test in named:
        assert (ROOT / "tests" / "integration" / test).exists(), test
