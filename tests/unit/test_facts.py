"""Data-driven fact tests: tests/unit/facts/<FactClassName>/<case>.json.

Each case is ``{"description", "output", "expected"}``; ``output`` is the raw
stdout of the fact's command. Like pyinfra, empty output yields ``default()``.
"""

import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import pytest
from pyinfra.api import FactBase

import facts

CASES_DIR = Path(__file__).parent / "facts"
BROKEN_PREFIXES = ("broken_", "malformed_", "truncated_")


def fact_classes() -> dict[str, type[FactBase]]:
    """Every FactBase subclass defined in a module of the facts package, by class name."""
    found = {}
    for module_info in pkgutil.iter_modules(facts.__path__):
        module = importlib.import_module(f"facts.{module_info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, FactBase) and obj.__module__ == module.__name__:
                found[name] = obj
    return found


FACTS = fact_classes()
CASE_FILES = sorted(CASES_DIR.glob("*/*.json"))


@pytest.mark.parametrize(
    "path", CASE_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in CASE_FILES]
)
def test_fact_case(path: Path):
    fact_cls = FACTS.get(path.parent.name)
    assert fact_cls is not None, f"{path.parent.name} is not a fact class in facts/"
    case = json.loads(path.read_text())
    assert set(case) == {"description", "output", "expected"}, path

    lines = case["output"].splitlines()
    result = fact_cls().process(lines) if lines else fact_cls.default()
    assert result == case["expected"]


@pytest.mark.parametrize("name", sorted(FACTS))
def test_fact_has_real_and_broken_cases(name: str):
    cases = [p.stem for p in (CASES_DIR / name).glob("*.json")]
    broken = [c for c in cases if c.startswith(BROKEN_PREFIXES)]
    assert broken, f"{name}: no broken_/malformed_/truncated_ case"
    assert len(broken) < len(cases), f"{name}: no real case"


@pytest.mark.parametrize("name", sorted(FACTS))
def test_fact_is_documented(name: str):
    doc = inspect.getdoc(FACTS[name]) or ""
    assert "Default" in doc and ".. code::" in doc, f"{name}: docstring lacks example or default"
