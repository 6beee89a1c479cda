"""Build llama.cpp at one pinned commit for the whole cluster (HIP, Vulkan or CPU; RPC always on).

    pyinfra inventories/lab.py deploys/llama_cpp.py

Under `llama_cpp_prefix` (/opt/llama.cpp): `src/` is the clone of `llama_cpp_repo`, each build goes
into `builds/<commit12>-<flags hash>/` (bin/llama-server, bin/ggml-rpc-server, halo-build.json), and
`current` points at the build that serves. When the stamp of `current` already names the wanted
commit and flags, the step does nothing at all.

A new build is staged first: built (or copied) and checked while the old one keeps serving, then
linked as `next`. Only once every host of the cluster in this run (groups head and rpc_workers,
within --limit) has it, one operation moves `next` to `current` on all of them; the RPC servers
(deploys/rpc_worker.py) and then llama-server (deploys/head.py) restart on it later in the run. A
failed build or copy on any host (bad ref, compile error, a host lost) leaves every host on the
build it serves, with the new one staged for the next run.

With `llama_cpp_build_once` (the default) one host per (distro, backend) builds and the others get
a copy of its build through the machine that runs pyinfra: one build for a cluster of identical
boxes, and one binary everywhere, which RPC needs (client and servers must speak one protocol).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import (
    FileDownloadCommand,
    FileUploadCommand,
    FunctionCommand,
    StringCommand,
    deploy,
    operation,
)
from pyinfra.facts.deb import DebPackages

from deploys import shipped
from deploys.common import failure_unless, install_packages
from deploys.progress import long_work
from deploys.rocm import refuse_unsupported_rocm, rocm_prefix
from deploys.runcache import once_per_run, run_store
from deploys.settings import HEAD_GROUP, RPC_WORKERS_GROUP, Settings, settings
from deploys.topology import Plan, build_plans
from facts.distro import Distro
from facts.llama_cpp import LlamaCppInstall

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

    >>> cmake_flags(Settings(llama_cpp_backend="hip"))[-3:]
    ['-DGGML_RPC_RDMA=OFF', '-DGGML_HIP=ON', '-DGPU_TARGETS=gfx1151']
    """
    # ggml-rpc turns its RDMA transport on by itself when the build host has libibverbs
    # (ggml/src/ggml-rpc/CMakeLists.txt: option(GGML_RPC_RDMA ... ON) after find_library(ibverbs)),
    # and a copy of that build then needs libibverbs on every host: off unless llama_cpp_rpc_rdma.
    rdma = [f"-DGGML_RPC_RDMA={'ON' if s.llama_cpp_rpc_rdma else 'OFF'}"]
    backend = {
        "hip": ["-DGGML_HIP=ON", f"-DGPU_TARGETS={';'.join(s.gpu_targets)}"],
        "vulkan": ["-DGGML_VULKAN=ON"],
        "cpu": [],
    }[s.llama_cpp_backend]
    return BASE_FLAGS + rdma + backend + list(s.llama_cpp_cmake_extra_args)


def flags_hash(flags: list[str]) -> str:
    return hashlib.sha256("\n".join(flags).encode()).hexdigest()[:8]


def build_id(commit: str, flags: list[str]) -> str:
    return f"{commit[:12]}-{flags_hash(flags)}"


def is_commit(ref: str) -> bool:
    return len(ref) == 40 and all(c in "0123456789abcdef" for c in ref)


def rocm_path(s: Settings) -> str:
    """Where `rocm_source` installs ROCm: the HIP build puts its bin/ and LLVM's bin/ on PATH.

    >>> [rocm_path(Settings(rocm_source=src)) for src in ("distro", "amd-repo")]
    ['/usr', '/opt/rocm']
    """
    return rocm_prefix(s.rocm_source, s.rocm_version)


def build_env(s: Settings, flags: list[str], jobs: int | None) -> dict[str, str]:
    """The environment of deploys/scripts/llama-build.sh (the CMake arguments go as its arguments)."""
    env = {"HALO_PREFIX": s.llama_cpp_prefix, "HALO_REPO": s.llama_cpp_repo, "HALO_REF": s.llama_cpp_ref,
           "HALO_BACKEND": s.llama_cpp_backend, "HALO_FLAGS_HASH": flags_hash(flags),
           "HALO_JOBS": str(jobs or ""), "HALO_SWITCH": "0"}
    if s.llama_cpp_backend == "hip":
        env |= {"HALO_ROCM_SOURCE": s.rocm_source, "HALO_ROCM_PATH": rocm_path(s)}
    return env


BUILD_WORK = "llama-cpp-build"  # its script and log on the build host: /var/lib/halo-provision/work/<this>/


def build_script(s: Settings, flags: list[str], jobs: int | None) -> str:
    """deploys/scripts/llama-build.sh with its environment and arguments set first, each a quoted word.

    >>> [line for line in build_script(Settings(), ["-DA=$(x)"], 2).splitlines() if "DA=" in line]
    ["set -- '-DA=$(x)'"]
    """
    lines = [f"export {k}={shlex.quote(v)}" for k, v in build_env(s, flags, jobs).items()]
    lines.append("set -- " + " ".join(shlex.quote(flag) for flag in flags))
    return "\n".join(lines) + "\n" + Path(shipped.script("llama-build.sh")).read_text()


@operation(is_idempotent=False)
def build(s: Settings, flags: list[str], jobs: int | None, needed: bool = True):
    """Clone or fetch, build at the pinned commit, check the binaries, then move `current`; in the
    background with a progress line every 30 s (stage, ninja's steps, elapsed), its log on the host."""
    if not needed:
        host.noop(f"the build of llama.cpp {s.llama_cpp_ref} serves, or comes from the build host")
        return
    yield from long_work(BUILD_WORK, f"build llama.cpp {s.llama_cpp_ref} ({s.llama_cpp_backend})",
                         build_script(s, flags, jobs), tail_lines=30)


def _clear_artifacts(state, host, artifact: Path) -> None:
    """Make room for this run's copy: earlier copies of the same group are never used again."""
    artifact.parent.mkdir(parents=True, exist_ok=True)
    for old in artifact.parent.glob(artifact.name.rsplit("-", 1)[0] + "-*.tar"):
        old.unlink(missing_ok=True)


@operation(is_idempotent=False)
def pack(prefix: str, artifact: Path, link: str = "current", needed: bool = True):
    """Download the build host's build (`link`: `next`, staged in this run, or `current`) to the
    pyinfra machine for the other hosts."""
    if not needed:
        host.noop("no other host waits for this host's build")
        return
    remote = f"/tmp/halo-llama-build-{artifact.stem}.tar"
    yield FunctionCommand(_clear_artifacts, (artifact,), {})
    builds, build = shlex.quote(f"{prefix}/builds"), shlex.quote(f"{prefix}/{link}")
    yield StringCommand("tar", "-C", builds, "-chf", shlex.quote(remote), f"$(readlink {build} | xargs basename)")
    yield FileDownloadCommand(remote, str(artifact))
    yield StringCommand("rm", "-f", shlex.quote(remote))


@operation(is_idempotent=False)
def unpack(prefix: str, artifact: Path, builder: str, needed: bool = True):
    """Install the build host's build and point `current` at it."""
    if not needed:
        host.noop(f"this host builds llama.cpp itself, or has the build of {builder}")
        return
    remote = f"/tmp/halo-llama-build-{artifact.stem}.tar"
    yield failure_unless(artifact.exists, f"no llama.cpp build came from {builder} in this run (its build "
                         "failed?): nothing to copy")
    yield FileUploadCommand(str(artifact), remote)
    yield shipped.script_command("llama-unpack.sh", {"HALO_PREFIX": prefix, "HALO_ARCHIVE": remote,
                                                     "HALO_BUILDER": builder, "HALO_SWITCH": "0"})


def cluster_lost(state) -> list[str]:
    """Hosts of the cluster (groups head and rpc_workers, within --limit) that are not active in this
    run any more (a failed operation, no connection): the new build waits for them."""
    return [h.name for h in state.inventory if (HEAD_GROUP in h.groups or RPC_WORKERS_GROUP in h.groups)
            and state.is_host_in_limit(h) and h not in state.active_hosts]


@operation(is_idempotent=False)
def switch(prefix: str, needed: bool = True):
    """Point `current` at the build staged as `next` in this run, unless a host of the cluster did not
    get it (then every host keeps serving what it serves, and the run says why)."""
    if not needed:
        host.noop("no new build on this host in this run")
        return
    lost = cluster_lost(host.state)
    if lost:
        logger.warning(f"{host.name}: the new llama.cpp build stays staged in {prefix}/next and is not served: "
                       f"{', '.join(lost)} did not get it in this run, and RPC needs one build on every host; "
                       "fix what failed there and run again")
        host.noop("the new build waits for " + ", ".join(lost))
        return
    yield StringCommand("mv", "-T", shlex.quote(f"{prefix}/next"), shlex.quote(f"{prefix}/current"))


def artifact(plan: Plan) -> Path:
    """Where this run's copy of the plan's build is kept on the pyinfra machine."""
    return ARTIFACTS / f"{plan.key}-{plan.token}.tar"


def host_key(distro: dict, flags: list[str]) -> str:
    """Hosts with one key run one build: same distribution (facts.distro.Distro), release and flags.

    >>> host_key({"id": "debian", "release": "14"}, [])
    'debian-14-e3b0c442'
    """
    key = f"{distro['id']}-{distro['release']}-{flags_hash(flags)}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)  # it names files here and on the hosts


def plan_builds(state) -> dict[str, tuple[Plan, str]]:
    """{host: (its group's plan, its distribution)} from each host's facts (call it once per run).

    Raises SettingsError when a HIP host's rocm_source cannot work on its distro (see deploys/rocm.py).
    """
    active = set(state.inventory.get_active_hosts())
    seen: dict[str, dict] = {}
    for other in (h for h in state.inventory if h in active):  # inventory order: the first host builds
        s = settings(other)
        flags = cmake_flags(s)
        distro = other.get_fact(Distro)
        if s.llama_cpp_backend == "hip":  # before any change: a ROCm this distro cannot give stops the run
            refuse_unsupported_rocm(s, distro)
        info = other.get_fact(LlamaCppInstall, prefix=s.llama_cpp_prefix, ref=s.llama_cpp_ref)
        seen[other.name] = {"key": host_key(distro, flags), "distro": distro, "flags": flags,
                            "wanted": s.llama_cpp_ref if is_commit(s.llama_cpp_ref) else info["ref_commit"],
                            "current": info["current"], "once": s.llama_cpp_build_once}
    plans = build_plans(seen)
    return {name: (plans[name], h["distro"]) for name, h in seen.items()}


def coming_build(s: Settings) -> dict | None:
    """What this run's llama.cpp step will make `current` on this host, while the run is prepared:
    {"id", "commit"} of the build it builds or copies here (id and commit None when the build host's
    clone does not know the ref yet), or None when `current` stays (or the step is not in this run)."""
    plans = run_store("once_per_run").get("llama_cpp_plans")
    if not plans or host.name not in plans:
        return None
    plan = plans[host.name][0]
    if host.name in plan.up_to_date:
        return None
    commit = plan.wanted_commit
    return {"id": build_id(commit, cmake_flags(s)) if commit else None, "commit": commit}


def reads(s: Settings) -> list:
    """The facts this step reads that deploys/verify.host_reads does not (for deploys/full.py's one prefetch):
    apt's installed packages (install_packages; a host without dpkg leaves it out)."""
    return [(DebPackages, {})]


@deploy("Build llama.cpp")
def llama_cpp() -> None:
    """Every host calls every operation in the same order (pyinfra runs them host by host in step);
    `needed` keeps each to the hosts it concerns."""
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
    # `needed` rather than _if=: pyinfra ignores _if while it predicts changes (a dry run)
    build(name=f"Build llama.cpp {s.llama_cpp_ref} ({s.llama_cpp_backend})", s=s, flags=flags,
          jobs=s.llama_cpp_build_jobs, needed=builds_here)
    pack(name="Fetch the build for the other hosts", prefix=s.llama_cpp_prefix, artifact=artifact(plan),
         link="next" if builds_here else "current", needed=plan.builder == host.name and bool(plan.waiting()))
    unpack(name=f"Install the llama.cpp build of {plan.builder}", prefix=s.llama_cpp_prefix,
           artifact=artifact(plan), builder=plan.builder, needed=copies_here)
    switch(name="Serve the new build on every host at once", prefix=s.llama_cpp_prefix,
           needed=builds_here or copies_here)


if __name__ in ("builtins", "__main__"):
    llama_cpp()
