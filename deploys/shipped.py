"""The files deploys ships beside its code, found wherever it is installed: Jinja templates and scripts.

    template("etc/systemd/system/halo-rpc@.service.j2")  # the path files.template takes as src
    render("etc/halo-provision/rpc.env.j2", **data)      # the text files.template writes (for tests)
    script("rpc-cache-prune.sh")                         # a script to put on hosts as it is
    script_command("llama-build.sh", {"HALO_REF": ref}, flags)  # run one there: env and arguments quoted

The templates live in the top-level templates/ at their target paths; deploys/templates is a link to
it, and a wheel copies both folders into the installed package (pyproject's package data), so the
same path works from a checkout, an editable install or site-packages.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra.api import StringCommand

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
SCRIPTS = HERE / "scripts"
JINJA = {"trim_blocks": True, "lstrip_blocks": True}  # files.template's jinja_env_kwargs for every template


def _find(folder: Path, name: str) -> str:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not shipped with deploys (looked in {folder})")
    return str(path)


def template(name: str) -> str:
    """The path of a template by its target path (with .j2).

    >>> template("etc/halo-provision/rpc.env.j2").endswith("deploys/templates/etc/halo-provision/rpc.env.j2")
    True
    """
    return _find(TEMPLATES, name)


def script(name: str) -> str:
    """The path of a script of deploys/scripts/."""
    return _find(SCRIPTS, name)


def render(name: str, **data) -> str:
    """A template rendered as files.template renders it in the steps (for tests and pure planners)."""
    from pyinfra.api.util import get_template

    return get_template(template(name), dict(JINJA)).render(data)


def script_command(name: str, env: dict[str, str], args: list[str] = ()) -> StringCommand:
    """`env K=V ... bash -c <script's text> <name> ARGS...`: every value a quoted word of its own.

    The scripts take host data only as environment and arguments, never inside their text.

    >>> str(script_command("rpc-cache-prune.sh", {"X": "a b"}, ["$(id)"])).startswith("env 'X=a b' bash -c ")
    True
    >>> str(script_command("rpc-cache-prune.sh", {}, ["$(id)"])).endswith(" rpc-cache-prune '$(id)'")
    True
    """
    text = Path(script(name)).read_text()
    words = ["env", *(f"{k}={v}" for k, v in env.items()), "bash", "-c", text, name.removesuffix(".sh"), *args]
    return StringCommand(*(shlex.quote(w) for w in words))
