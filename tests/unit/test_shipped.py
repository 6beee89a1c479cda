"""deploys/shipped.py finds every template and script a step uses, in the checkout and in an installed copy."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from deploys import shipped

ROOT = Path(__file__).resolve().parents[2]
HELPERS = {"template": "templates", "render": "templates", "script": "scripts", "script_command": "scripts"}


def used_by_the_steps() -> dict[str, set[str]]:
    """{"templates": names, "scripts": names} passed to the helpers in deploys/ (literals or module constants)."""
    used: dict[str, set[str]] = {"templates": set(), "scripts": set()}
    for path in (ROOT / "deploys").rglob("*.py"):
        if path.name == "shipped.py":
            continue
        tree = ast.parse(path.read_text())
        constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                     for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):  # shipped.template(...), shipped.script_command(...), ...
            func = node.func if isinstance(node, ast.Call) else None
            if not (isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "shipped"
                    and func.attr in HELPERS):
                continue
            arg = node.args[0]
            name = arg.value if isinstance(arg, ast.Constant) else constants.get(getattr(arg, "id", None))
            assert isinstance(name, str), f"{path.name}:{node.lineno}: {func.attr}() takes a literal or a constant"
            used[HELPERS[func.attr]].add(name)
    return used


def shipped_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_the_helper_finds_each_template_and_script_a_step_uses_and_nothing_shipped_is_unused():
    used = used_by_the_steps()
    assert "etc/systemd/system/halo-rpc@.service.j2" in used["templates"] and "llama-build.sh" in used["scripts"]
    for name in used["templates"]:
        assert Path(shipped.template(name)).is_file()
    for name in used["scripts"]:
        assert Path(shipped.script(name)).is_file()
    assert used["templates"] == shipped_files(ROOT / "templates")
    assert used["scripts"] == shipped_files(ROOT / "deploys/scripts")


def test_a_name_that_is_not_shipped_is_refused():
    try:
        shipped.template("etc/nothing.j2")
    except FileNotFoundError as exc:
        assert "etc/nothing.j2 is not shipped with deploys" in str(exc)
    else:
        raise AssertionError("a missing template was found")


def test_an_installed_copy_finds_them_beside_its_own_code(tmp_path):
    """A wheel built from the project, installed into a folder: its templates and scripts, not the checkout's."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("deploys", "facts", "lab", "templates"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)],
                   check=True, capture_output=True, cwd=tmp_path)
    names = used_by_the_steps()
    code = (f"from deploys import shipped\n"
            f"for name in {sorted(names['templates'])!r}: print(shipped.template(name))\n"
            f"for name in {sorted(names['scripts'])!r}: print(shipped.script(name))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert len(out) == len(names["templates"]) + len(names["scripts"])
    assert all(line.startswith(f"{target}/deploys/") and not Path(line).is_symlink() for line in out), out
