"""README's variable table and group_data/all.py's comments, from the model (its fields' texts).

The model is the one source: a variable's meaning (README's table) is its field's description, its
one-line comment in group_data/all.py its summary. After changing a field, rewrite both:

    python -m deploys.settings.docs           # rewrite README.md's table and group_data/all.py's comments
    python -m deploys.settings.docs --check   # exit 1 naming the files that differ (the unit tests do this)

    >>> table_row("rpc_port").startswith("| `rpc_port` | `50052` | ")
    True
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

from deploys.settings.model import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ALL_PY = ROOT / "group_data" / "all.py"
TABLE_HEAD = "| variable | default | meaning |\n|---|---|---|\n"
START, END = "<!-- variables:start -->", "<!-- variables:end -->"


def shown_default(value: Any) -> str:
    """A default as README's table shows it: Python, strings in double quotes.

    >>> shown_default(["gfx1151"]), shown_default(None), shown_default("on")
    ('`["gfx1151"]`', '`None`', '`"on"`')
    """
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return "`[" + ", ".join(f'"{item}"' for item in value) + "]`"
    return f"`{value!r}`"


def table_row(name: str) -> str:
    field = Settings.model_fields[name]
    return f"| `{name}` | {shown_default(field.default)} | {field.description} |"


def readme_text(text: str) -> str:
    """`text` (README.md) with the table inside the variables markers made from the model."""
    head, rest = text.split(START, 1)
    section, tail = rest.split(END, 1)
    intro = section.split(TABLE_HEAD, 1)[0]
    table = TABLE_HEAD + "".join(table_row(name) + "\n" for name in Settings.model_fields)
    return f"{head}{START}{intro}{table}{END}{tail}"


def all_py_text(text: str) -> str:
    """`text` (group_data/all.py) with the comment line above each variable set to its field's summary."""
    lines = text.splitlines(keepends=True)
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and node.targets[0].id in Settings.model_fields:
            summary = Settings.model_fields[node.targets[0].id].json_schema_extra["summary"]
            lines[node.lineno - 2] = f"# {summary}\n"
    return "".join(lines)


def main(argv: list[str]) -> int:
    stale = []
    for path, render in ((README, readme_text), (ALL_PY, all_py_text)):
        text = path.read_text(encoding="utf-8")
        wanted = render(text)
        if wanted != text:
            stale.append(str(path.relative_to(ROOT)))
            if "--check" not in argv:
                path.write_text(wanted, encoding="utf-8")
    if stale and "--check" in argv:
        print(f"out of date with deploys/settings/model.py: {', '.join(stale)}; run python -m deploys.settings.docs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
