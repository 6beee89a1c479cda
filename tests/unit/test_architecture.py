"""README's "Architecture" tree names every module of deploys/, facts/ and lab/ (and nothing that is gone)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tree() -> dict[str, set[str]]:
    """{folder: names listed under it} from the fenced tree in README's Architecture section."""
    section = (ROOT / "README.md").read_text().split("\n## Architecture", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    listed: dict[str, set[str]] = {}
    folder = package = None
    for line in block.splitlines():
        top = re.match(r"^(\S+/)\s", line + " ")
        entry = re.match(r"^  (\S+)\s", line + " ")
        nested = re.match(r"^    (\S+)\s", line + " ")
        if top:
            folder = top[1]
            listed.setdefault(folder, set())
        elif entry and folder:
            listed[folder].add(entry[1])
            package = folder + entry[1] if entry[1].endswith("/") else None
        elif nested and package:
            listed.setdefault(package, set()).add(nested[1])
    return listed


def test_every_module_has_its_line_and_every_line_its_module():
    listed = tree()
    packages = [f"{folder}{p.name}/" for folder in ("deploys/", "facts/", "lab/") for p in (ROOT / folder).iterdir()
                if (p / "__init__.py").exists()]
    for folder in ("deploys/", "facts/", "lab/", *packages):
        modules = {p.name for p in (ROOT / folder).glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
        modules |= {p.name for p in (ROOT / folder).glob("*.sh")}
        modules |= {p.name + "/" for p in (ROOT / folder).iterdir() if p.is_dir() and p.name != "__pycache__"}
        assert listed.get(folder) == modules, (
            f"README's Architecture tree under {folder}: missing {sorted(modules - listed.get(folder, set()))}, "
            f"gone {sorted(listed.get(folder, set()) - modules)}")
