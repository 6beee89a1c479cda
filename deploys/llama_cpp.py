"""Build llama.cpp at one pinned commit for the whole cluster (HIP, Vulkan or CPU; RPC always on).

    pyinfra inventories/lab.py deploys/llama_cpp.py

Under `llama_cpp_prefix` (/opt/llama.cpp): `src/` is the clone of `llama_cpp_repo`, each build goes
into `builds/<commit12>-<flags hash>/` (bin/llama-server, bin/ggml-rpc-server, halo-build.json), and
`current` points at the build that serves. `current` moves only after a build succeeded and both
binaries ran, so a failed build (bad ref, compile error) leaves the previous one serving. When the
stamp of `current` already names the wanted commit and flags, the step does nothing at all.

With `llama_cpp_build_once` (the default) one host per (distro, backend) builds and the others get
a copy of its build through the machine that runs pyinfra: one build for a cluster of identical
boxes, and one binary everywhere, which RPC needs (client and servers must speak one protocol).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra import host
from pyinfra.api import (
    FileDownloadCommand,
    FileUploadCommand,
    FunctionCommand,
    StringCommand,
    deploy,
    operation,
)

from deploys.common import install_packages, once_per_run
from deploys.settings import Settings, settings
from facts.distro import Distro
from facts.llama_cpp import STAMP, LlamaCppInstall

# Build dependencies per package manager and backend (ROCm itself comes from deploys/rocm.py).
BUILD_PACKAGES = {
    ("apt", "cpu"): ["git", "cmake", "ninja-build", "g++", "ccache", "pkg-config"],
    # ggml-vulkan: find_package(Vulkan COMPONENTS glslc) and find_package(SPIRV-Headers CONFIG)
    ("apt", "vulkan"): ["libvulkan-dev", "glslc", "spirv-headers"],
    ("apt", "hip"): [],
    ("dnf", "cpu"): ["git", "cmake", "ninja-build", "gcc-c++", "ccache", "pkgconf"],
    ("dnf", "vulkan"): ["vulkan-headers", "vulkan-loader-devel", "glslc", "spirv-headers-devel"],
    ("dnf", "hip"): [],
}
BASE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_RPC=ON",
    "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries: a build can be copied to another host
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # the configure step would download the web UI otherwise
]
# What a host needs to run a build it did not compile (ROCm itself comes from deploys/rocm.py).
RUNTIME_PACKAGES = {
    ("apt", "cpu"): ["libgomp1"],
    ("apt", "vulkan"): ["libgomp1", "libvulkan1", "mesa-vulkan-drivers"],
    ("apt", "hip"): ["libgomp1"],
    ("dnf", "cpu"): ["libgomp"],
    ("dnf", "vulkan"): ["libgomp", "vulkan-loader", "mesa-vulkan-drivers"],
    ("dnf", "hip"): ["libgomp"],
}
ARTIFACTS = Path.home() / ".cache" / "halo-provision" / "llama.cpp"  # copies on the pyinfra machine


def cmake_flags(s: Settings) -> list[str]:
    """The CMake settings of a build; with the commit they are its identity.

    >>> cmake_flags(Settings(llama_cpp_backend="hip"))[-2:]
    ['-DGGML_HIP=ON', '-DGPU_TARGETS=gfx1151']
    """
    backend = {
        "hip": ["-DGGML_HIP=ON", f"-DGPU_TARGETS={';'.join(s.gpu_targets)}"],
        "vulkan": ["-DGGML_VULKAN=ON"],
        "cpu": [],
    }[s.llama_cpp_backend]
    return BASE_FLAGS + backend + list(s.llama_cpp_cmake_extra_args)


def flags_hash(flags: list[str]) -> str:
    return hashlib.sha256("\n".join(flags).encode()).hexdigest()[:8]


def build_id(commit: str, flags: list[str]) -> str:
    return f"{commit[:12]}-{flags_hash(flags)}"


def is_commit(ref: str) -> bool:
    return len(ref) == 40 and all(c in "0123456789abcdef" for c in ref)


def build_script(s: Settings, flags: list[str], jobs: int | None) -> str:
    """The shell script that clones or fetches, builds, checks and switches `current`.

    Everything before the final `mv -T` can fail without touching the serving build.
    """
    q = shlex.quote
    prefix, ref = s.llama_cpp_prefix, s.llama_cpp_ref
    hip_env = (
        'export HIP_PATH="$(hipconfig -R)" HIPCXX="$(hipconfig -l)/clang"\n'
        if s.llama_cpp_backend == "hip" else ""
    )
    cmake_args = " ".join(q(f) for f in flags)
    return f"""set -eu
prefix={q(prefix)}; ref={q(ref)}; fhash={flags_hash(flags)}
mkdir -p "$prefix/builds" "$prefix/trees"
if [ ! -d "$prefix/src/.git" ]; then
    rm -rf "$prefix/src.tmp"
    git clone --quiet --no-checkout {q(s.llama_cpp_repo)} "$prefix/src.tmp"
    mv "$prefix/src.tmp" "$prefix/src"
fi
cd "$prefix/src"
git remote set-url origin {q(s.llama_cpp_repo)}
if ! commit=$(git rev-parse --verify --quiet "$ref^{{commit}}"); then
    git fetch --quiet --tags origin || true
    git fetch --quiet origin "$ref" 2>/dev/null || true
    commit=$(git rev-parse --verify --quiet "$ref^{{commit}}") || {{
        echo "llama_cpp_ref $ref is not a tag or commit of {q(s.llama_cpp_repo)}" >&2; exit 1; }}
fi
git checkout --quiet --force --detach "$commit"
id="$(printf %.12s "$commit")-$fhash"
build="$prefix/builds/$id"
if [ ! -f "$build/{STAMP}" ]; then
    rpc=ggml-rpc-server
    grep -qs ggml-rpc-server tools/rpc/CMakeLists.txt || rpc=rpc-server
    {hip_env}tree="$prefix/trees/$fhash"  # one build tree per flags: a new ref builds incrementally
    cmake -S . -B "$tree" -G Ninja {cmake_args}
    cmake --build "$tree" --target llama-server "$rpc" -j {jobs or '"$(nproc)"'}
    rm -rf "$build.tmp" && mkdir -p "$build.tmp/bin"
    cp "$tree/bin/llama-server" "$tree/bin/$rpc" "$build.tmp/bin/"
    "$build.tmp/bin/llama-server" --version
    "$build.tmp/bin/$rpc" --help >/dev/null 2>&1
    cat > "$build.tmp/{STAMP}" <<EOF
{{"id": "$id", "commit": "$commit", "ref": "$ref", "backend": {json.dumps(s.llama_cpp_backend)},
 "flags": {json.dumps(flags)},
 "rpc_server": "$build/bin/$rpc", "server": "$build/bin/llama-server"}}
EOF
    mv "$build.tmp" "$build"
fi
ln -sfn "builds/$id" "$prefix/current.new" && mv -T "$prefix/current.new" "$prefix/current"
ls -1dt "$prefix"/builds/*/ | tail -n +4 | while read -r old; do
    [ "$(readlink -f "$old")" = "$(readlink -f "$prefix/current")" ] || rm -rf "$old"
done
echo "llama.cpp $ref ($commit) serving from $build"
"""


@operation(is_idempotent=False)
def build(s: Settings, flags: list[str], jobs: int | None):
    """Clone or fetch, build at the pinned commit, check the binaries, then move `current`."""
    yield StringCommand("bash", "-c", shlex.quote(build_script(s, flags, jobs)))


def _clear_artifacts(state, host, artifact: Path) -> None:
    """Make room for this run's copy: earlier copies of the same group are never used again."""
    artifact.parent.mkdir(parents=True, exist_ok=True)
    for old in artifact.parent.glob(artifact.name.rsplit("-", 1)[0] + "-*.tar"):
        old.unlink(missing_ok=True)


def _check_artifact(state, host, artifact: Path, builder: str) -> None:
    if not artifact.exists():
        raise OSError(f"no llama.cpp build came from {builder} in this run (its build failed?): nothing to copy")


@operation(is_idempotent=False)
def pack(prefix: str, artifact: Path):
    """Download the `current` build of the build host to the pyinfra machine for the other hosts."""
    remote = f"/tmp/halo-llama-build-{artifact.stem}.tar"
    yield FunctionCommand(_clear_artifacts, (artifact,), {})
    yield StringCommand("tar", "-C", f"{prefix}/builds", "-chf", remote, f"$(readlink {prefix}/current | xargs basename)")
    yield FileDownloadCommand(remote, str(artifact))
    yield StringCommand("rm", "-f", remote)


@operation(is_idempotent=False)
def unpack(prefix: str, artifact: Path, builder: str):
    """Install the build host's build and point `current` at it."""
    remote = f"/tmp/halo-llama-build-{artifact.stem}.tar"
    yield FunctionCommand(_check_artifact, (artifact, builder), {})
    yield FileUploadCommand(str(artifact), remote)
    script = f"""set -eu
prefix={shlex.quote(prefix)}
mkdir -p "$prefix/builds"
id=$(tar -tf {remote} | head -n 1 | cut -d/ -f1)
rm -rf "$prefix/builds/$id.tmp" && mkdir "$prefix/builds/$id.tmp"
tar -C "$prefix/builds/$id.tmp" --strip-components=1 -xf {remote}
rm -f {remote}
"$prefix/builds/$id.tmp/bin/llama-server" --version
rm -rf "$prefix/builds/$id" && mv "$prefix/builds/$id.tmp" "$prefix/builds/$id"
ln -sfn "builds/$id" "$prefix/current.new" && mv -T "$prefix/current.new" "$prefix/current"
echo "llama.cpp build $id copied from {builder}"
"""
    yield StringCommand("bash", "-c", shlex.quote(script))


@dataclass
class Plan:
    """Who builds and who copies, for one group of hosts with the same distro, backend and flags."""

    key: str
    builder: str
    wanted_commit: str | None  # None: the build host does not know the ref yet (first run)
    up_to_date: set[str] = field(default_factory=set)
    members: list[str] = field(default_factory=list)

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # this run's copy, never an older one

    @property
    def artifact(self) -> Path:
        return ARTIFACTS / f"{self.key}-{self.token}.tar"

    def waiting(self) -> list[str]:
        """Hosts of the group that take a copy of the builder's build."""
        return [n for n in self.members if n != self.builder and n not in self.up_to_date]


def host_key(distro: dict, flags: list[str]) -> str:
    """Hosts with one key run one build: same distribution (facts.distro.Distro), release and flags."""
    return f"{distro['id']}-{distro['release']}-{flags_hash(flags)}"


def plan_builds(state) -> dict[str, tuple[Plan, str]]:
    """{host: (its group's plan, its distribution)} from each host's facts (call it once per run)."""
    active = set(state.inventory.get_active_hosts())
    seen: dict[str, dict] = {}
    for other in (h for h in state.inventory if h in active):  # inventory order: the first host builds
        s = settings(other)
        flags = cmake_flags(s)
        distro = other.get_fact(Distro)
        info = other.get_fact(LlamaCppInstall, prefix=s.llama_cpp_prefix, ref=s.llama_cpp_ref)
        seen[other.name] = {"key": host_key(distro, flags), "distro": distro, "flags": flags,
                            "wanted": s.llama_cpp_ref if is_commit(s.llama_cpp_ref) else info["ref_commit"],
                            "current": info["current"], "once": s.llama_cpp_build_once}
    plans: dict[str, tuple[Plan, str]] = {}
    groups: dict[str, Plan] = {}
    for name, h in seen.items():
        if h["once"] and h["key"] in groups:  # a copy: up to date when it has the builder's commit
            plan = groups[h["key"]]
            plan.members.append(name)
        else:  # a builder: up to date when its clone's commit for the ref is the one it serves
            plan = Plan(h["key"], name, h["wanted"], members=[name])
            if h["once"]:
                groups[h["key"]] = plan
        current = h["current"]
        if plan.wanted_commit and current and current["commit"] == plan.wanted_commit \
                and current["flags"] == h["flags"]:
            plan.up_to_date.add(name)
        plans[name] = (plan, h["distro"])
    return plans


@deploy("Build llama.cpp")
def llama_cpp() -> None:
    """Every host calls every operation in the same order (pyinfra runs them host by host in step);
    `_if` keeps each to the hosts it concerns."""
    s = settings(host)
    flags = cmake_flags(s)
    plan, distro = once_per_run("llama_cpp_plans", lambda: plan_builds(host.state))[host.name]
    manager = distro["package_manager"]
    builds_here = plan.builder == host.name and host.name not in plan.up_to_date
    copies_here = plan.builder != host.name and host.name not in plan.up_to_date
    runtime = RUNTIME_PACKAGES.get((manager, s.llama_cpp_backend), [])
    tools = BUILD_PACKAGES.get((manager, "cpu"), []) + BUILD_PACKAGES.get((manager, s.llama_cpp_backend), [])
    packages = runtime + (tools if builds_here else [])
    install_packages(distro, "Install what llama.cpp needs to build and run", packages, update=builds_here)
    build(name=f"Build llama.cpp {s.llama_cpp_ref} ({s.llama_cpp_backend})", s=s, flags=flags,
          jobs=s.llama_cpp_build_jobs, _if=lambda: builds_here)
    pack(name="Fetch the build for the other hosts", prefix=s.llama_cpp_prefix, artifact=plan.artifact,
         _if=lambda: plan.builder == host.name and bool(plan.waiting()))
    unpack(name=f"Install the llama.cpp build of {plan.builder}", prefix=s.llama_cpp_prefix,
           artifact=plan.artifact, builder=plan.builder, _if=lambda: copies_here)


if __name__ in ("builtins", "__main__"):
    llama_cpp()
