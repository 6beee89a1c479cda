"""Data-driven operation tests: tests/unit/operations/<case>.json (see tests/unit/operations.py).

Each case runs one step's @deploy function for the lab inventory with the facts it gives, and checks
the operations and commands the host gets: no host, no SSH, the same code a run prepares.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.operations import plan

CASES = sorted((Path(__file__).parent / "operations").glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_operation_case(path: Path, monkeypatch):
    case = json.loads(path.read_text())
    assert set(case) <= {"description", "step", "host", "data", "facts", "expected"}, path
    operations = plan(case["step"], case["facts"], host=case.get("host", "halo2"), data=case.get("data"),
                      monkeypatch=monkeypatch)
    expected = case["expected"]
    shown = "\n".join(f"{op.name}: {op.commands}" for op in operations)
    if "operations" in expected:
        assert [op.name for op in operations] == expected["operations"], shown
    if "fails" in expected:
        failing = [op.name for op in operations if op.name.startswith("Fail")]
        assert bool(failing) == expected["fails"], shown
    commands = [c for op in operations for c in op.commands]
    for text in expected.get("commands", []):
        assert any(text in c for c in commands), f"no command has {text!r}:\n{shown}"
    for text in expected.get("not_commands", []):
        assert not any(text in c for c in commands), f"a command has {text!r}:\n{shown}"
