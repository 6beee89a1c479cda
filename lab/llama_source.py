"""A llama.cpp git repository the lab hosts can clone, made from a registry package that ships one.

The llama-cpp-python source distribution on PyPI vendors a full llama.cpp tree (tools/rpc,
tools/server). It becomes a bare git repository with the tag `lab-<version>` under the lab cache,
served over HTTP on the lab bridge, so deploys/llama_cpp.py clones and builds it like upstream.

    repo = llama_repo()                      # tag TAG
    upgrade = upgrade_repo(tmp_dir)          # tags TAG and NEXT_TAG (one commit later), served with serve()
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

from lab.lab import CACHE

LLAMA_CPP_PYTHON = "0.3.36"
TAG = f"lab-{LLAMA_CPP_PYTHON}"
FIXED_DATE = "2026-11-01T00:00:00Z"  # same commit hash on every run
NEXT_TAG = f"lab-{LLAMA_CPP_PYTHON}-next"  # a second ref, for upgrades: see upgrade_repo


def git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="halo-lab", GIT_AUTHOR_EMAIL="lab@halo.invalid",
               GIT_COMMITTER_NAME="halo-lab", GIT_COMMITTER_EMAIL="lab@halo.invalid",
               GIT_AUTHOR_DATE=FIXED_DATE, GIT_COMMITTER_DATE=FIXED_DATE)
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def llama_repo() -> Path:
    """The bare repository (made once and cached)."""
    root = CACHE / "llama-src"
    repo = root / f"llama.cpp-{LLAMA_CPP_PYTHON}.git"
    if (repo / "halo-lab-ready").exists():
        return repo
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(root)], check=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        work = Path(tmp) / "llama.cpp"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for member in members:
                member.name = member.name[len(prefix):]
            # `.git` there is a submodule pointer into llama-cpp-python's own repository: leave it out
            wanted = [m for m in members if m.name and m.name.split("/")[0] != ".git"]
            tar.extractall(work, members=wanted, filter="data")
        git("init", "-q", "-b", "master", cwd=work)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"llama.cpp as vendored by llama-cpp-python {LLAMA_CPP_PYTHON}", cwd=work)
        git("tag", TAG, cwd=work)
        shutil.rmtree(repo, ignore_errors=True)
        git("clone", "-q", "--bare", str(work), str(repo), cwd=root)
    git("gc", "-q", cwd=repo)
    git("update-server-info", cwd=repo)  # what git's "dumb" HTTP protocol reads
    (repo / "halo-lab-ready").touch()
    return repo


def upgrade_repo(directory: Path) -> Path:
    """A bare repository in `directory` with TAG and NEXT_TAG, one commit later that changes a comment
    of the RPC server's source (another commit and build id; an incremental build compiles little)."""
    work, bare = directory / "llama.cpp-next-work", directory / f"llama.cpp-{LLAMA_CPP_PYTHON}-next.git"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(bare, ignore_errors=True)
    git("clone", "-q", str(llama_repo()), str(work), cwd=directory)
    source = work / "tools/rpc/rpc-server.cpp"
    source.write_text(source.read_text() + "\n// halo-lab: the next ref of the lab's llama.cpp\n")
    git("commit", "-q", "-am", "halo-lab: a second ref to upgrade to", cwd=work)
    git("tag", NEXT_TAG, cwd=work)
    git("clone", "-q", "--bare", str(work), str(bare), cwd=directory)
    git("update-server-info", cwd=bare)
    shutil.rmtree(work)
    return bare


def serve(directory: Path, address: str) -> tuple[http.server.ThreadingHTTPServer, int]:
    """Serve a directory over HTTP on address:<free port> from a thread; returns (server, port)."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass
