"""Every variable is in group_data/all.py, in the Settings model and in the README table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import _get_group_data

from deploys.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ALL_PY = REPO / "group_data" / "all.py"
README = REPO / "README.md"

START, END = "<!-- variables:start -->", "<!-- variables:end -->"


def group_data_defaults() -> dict:
    # Loaded exactly as the pyinfra CLI loads group data (with a State in context).
    with ctx_state.use(State()):
        return _get_group_data(str(ALL_PY))["all"]


def readme_rows() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    assert START in text and END in text, f"README.md needs the markers {START} and {END}"
    section = text.split(START, 1)[1].split(END, 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("variable", "") or set(cells[0]) <= {"-", ":"}:
            continue
        rows[cells[0].strip("`")] = cells[1]
    return rows


def test_all_py_has_one_comment_line_per_variable():
    lines = ALL_PY.read_text(encoding="utf-8").splitlines()
    for node in ast.parse("\n".join(lines)).body:
        if isinstance(node, ast.Assign):
            name = node.targets[0].id
            above = lines[node.lineno - 2].strip()
            assert above.startswith("# ") and not above.startswith("# ---"), (
                f"group_data/all.py: put a one-line comment above {name}"
            )


def test_variables_everywhere():
    in_all_py = set(group_data_defaults())
    in_model = set(Settings.model_fields)
    in_readme = set(readme_rows())
    everywhere = in_all_py | in_model | in_readme
    missing = []
    for name in sorted(everywhere):
        if name not in in_all_py:
            missing.append(f"{name}: add it with a one-line comment to group_data/all.py")
        if name not in in_model:
            missing.append(f"{name}: add a field with var(...) to Settings in deploys/settings/model.py")
        if name not in in_readme:
            missing.append(
                f"{name}: add a row | `{name}` | default | meaning | to the table "
                "between the variables markers in README.md"
            )
    assert not missing, "\n".join(missing)


def test_defaults_agree():
    defaults = group_data_defaults()
    rows = readme_rows()
    wrong = []
    for name, field in Settings.model_fields.items():
        if name in defaults and defaults[name] != field.default:
            wrong.append(
                f"{name}: group_data/all.py says {defaults[name]!r}, Settings says "
                f"{field.default!r} (deploys/settings/model.py); make them equal"
            )
        if name in rows:
            match = re.fullmatch(r"`(.*)`", rows[name])
            shown = ast.literal_eval(match.group(1)) if match else rows[name]
            if shown != field.default:
                wrong.append(
                    f"{name}: README.md table shows {rows[name]}, Settings says "
                    f"{field.default!r}; fix the default column in README.md"
                )
    assert not wrong, "\n".join(wrong)


def test_defaults_validate():
    # group_data/all.py passes the model as is.
    Settings.model_validate(group_data_defaults())


def test_readme_table_and_all_py_comments_come_from_the_model():
    # The model's fields hold each variable's texts: README's meaning column is the field's description,
    # group_data/all.py's comment its summary. `python -m deploys.settings.docs` rewrites both.
    from deploys.settings import docs

    readme, all_py = README.read_text(encoding="utf-8"), ALL_PY.read_text(encoding="utf-8")
    assert docs.readme_text(readme) == readme, "README.md's variable table: run python -m deploys.settings.docs"
    assert docs.all_py_text(all_py) == all_py, "group_data/all.py's comments: run python -m deploys.settings.docs"
