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
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileDownloadCommand, FileUploadCommand, StringCommand, deploy, operation
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, dnf

from deploys.settings import Settings, settings
from facts.llama_cpp import STAMP, LlamaCppInstall

# Build dependencies per package family and backend (ROCm itself comes from deploys/rocm.py).
BUILD_PACKAGES = {
    ("apt", "cpu"): ["git", "cmake", "ninja-build", "g++", "ccache", "pkg-config"],
    ("apt", "vulkan"): ["libvulkan-dev", "glslc"],
    ("apt", "hip"): [],
    ("dnf", "cpu"): ["git", "cmake", "ninja-build", "gcc-c++", "ccache", "pkgconf"],
    ("dnf", "vulkan"): ["vulkan-headers", "vulkan-loader-devel", "glslc"],
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


@operation(is_idempotent=False)
def pack(prefix: str, artifact: Path):
    """Download the `current` build of the build host to the pyinfra machine for the other hosts."""
    artifact.parent.mkdir(parents=True, exist_ok=True)
    remote = f"/tmp/halo-llama-build-{artifact.stem}.tar"
    yield StringCommand("tar", "-C", f"{prefix}/builds", "-chf", remote, f"$(readlink {prefix}/current | xargs basename)")
    yield FileDownloadCommand(remote, str(artifact))
    yield StringCommand("rm", "-f", remote)


@operation(is_idempotent=False)
def unpack(prefix: str, artifact: Path, builder: str):
    """Install the build host's build and point `current` at it."""
    remote = f"/tmp/halo-llama-build-{artifact.stem}.tar"
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


def host_key(distro: dict, s: Settings, flags: list[str]) -> str:
    meta = distro.get("release_meta") or {}
    return f"{meta.get('ID', distro.get('name'))}-{meta.get('VERSION_ID', distro.get('major'))}-{flags_hash(flags)}"


def plan_for(state, s: Settings, flags: list[str]) -> dict[str, Plan]:
    """Plan the builds of all hosts once per run (each fact read once per host), cached on the state."""
    cached = getattr(state, "_halo_llama_cpp_plans", None)
    if cached is not None:
        return cached
    groups: dict[str, list] = {}
    installs = {}
    for other in state.inventory.get_active_hosts():
        os = settings(other)
        other_flags = cmake_flags(os)
        key = host_key(other.get_fact(LinuxDistribution), os, other_flags)
        groups.setdefault(key, []).append(other)
        installs[other.name] = (other.get_fact(LlamaCppInstall, prefix=os.llama_cpp_prefix, ref=os.llama_cpp_ref),
                                os, other_flags)
    plans: dict[str, Plan] = {}
    for key, members in groups.items():
        per_host = {}
        for member in members:
            info, os, member_flags = installs[member.name]
            wanted = os.llama_cpp_ref if is_commit(os.llama_cpp_ref) else info["ref_commit"]
            current = info["current"]
            fresh = bool(wanted and current and current["commit"] == wanted and current["flags"] == member_flags)
            per_host[member.name] = (wanted, fresh, os.llama_cpp_build_once)
        builder = members[0].name
        plan = Plan(key, builder, per_host[builder][0])
        for name, (wanted, fresh, once) in per_host.items():
            if fresh and (name == builder or not once or wanted == plan.wanted_commit):
                plan.up_to_date.add(name)
            plans[name] = plan if once else Plan(key, name, wanted, {name} if fresh else set())
    state._halo_llama_cpp_plans = plans
    return plans


@deploy("Build llama.cpp")
def llama_cpp() -> None:
    s = settings(host)
    flags = cmake_flags(s)
    distro = host.get_fact(LinuxDistribution)
    family = "dnf" if (distro.get("release_meta") or {}).get("ID") in ("fedora", "rhel", "centos") else "apt"
    plan = plan_for(host.state, s, flags)[host.name]
    artifact = ARTIFACTS / f"{plan.key}-{plan.wanted_commit or 'latest'}.tar"
    peers_waiting = [n for n, p in plan_for(host.state, s, flags).items()
                     if p is plan and n != plan.builder and n not in plan.up_to_date]
    if plan.builder == host.name:
        if host.name not in plan.up_to_date:
            packages = BUILD_PACKAGES[(family, "cpu")] + BUILD_PACKAGES[(family, s.llama_cpp_backend)]
            if family == "apt":
                apt.packages(name="Install the llama.cpp build tools", packages=packages, update=True,
                             cache_time=86400)
            else:
                dnf.packages(name="Install the llama.cpp build tools", packages=packages)
            build(name=f"Build llama.cpp {s.llama_cpp_ref} ({s.llama_cpp_backend})", s=s, flags=flags,
                  jobs=s.llama_cpp_build_jobs)
        if peers_waiting:
            pack(name="Fetch the build for the other hosts", prefix=s.llama_cpp_prefix, artifact=artifact)
    elif host.name not in plan.up_to_date:
        unpack(name=f"Install the llama.cpp build of {plan.builder}", prefix=s.llama_cpp_prefix,
               artifact=artifact, builder=plan.builder)


if __name__ in ("builtins", "__main__"):
    llama_cpp()
