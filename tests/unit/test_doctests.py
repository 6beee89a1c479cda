"""The usage examples in the product's docstrings run: deploys/, facts/ and the lab."""

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for folder in ("deploys", "facts", "lab")
    for path in [*(ROOT / folder).glob("*.py"), *(ROOT / folder).glob("*/*.py")]
    if path.name not in ("__init__.py", "__main__.py", "full.py")  # full.py is a deploy file: it runs on import
    and "scripts" not in path.parts and "__pycache__" not in path.parts
)
# Only modules that have examples: the others would pass without running anything.
MODULES = [name for name in NAMES
           if any(test.examples for test in doctest.DocTestFinder().find(importlib.import_module(name)))]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
