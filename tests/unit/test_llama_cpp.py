"""deploys/llama_cpp.py without hosts: build flags and identity, build deps, and the build and copy
scripts (deploys/scripts/) run here with bash on a small CMake project in a local git repository."""

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from deploys.llama_cpp import (
    BUILD_PACKAGES,
    build_env,
    build_id,
    build_script,
    cmake_flags,
    host_key,
    is_commit,
    rocm_path,
)
from deploys.settings import Settings
from deploys.shipped import SCRIPTS, script_command
from facts.llama_cpp import STAMP, parse_stamp


def test_hip_build_targets_the_gpu_and_always_has_rpc():
    flags = cmake_flags(Settings(llama_cpp_backend="hip", gpu_targets=["gfx1151", "gfx1100"]))
    assert "-DGGML_RPC=ON" in flags and "-DGGML_HIP=ON" in flags
    assert "-DGPU_TARGETS=gfx1151;gfx1100" in flags
    assert not any("ROCWMMA" in f or "HIP_UMA" in f for f in flags), "options gone upstream must not be passed"


@pytest.mark.parametrize(("backend", "present", "absent"), [
    ("vulkan", "-DGGML_VULKAN=ON", "-DGGML_HIP=ON"),
    ("cpu", "-DGGML_RPC=ON", "-DGGML_VULKAN=ON"),
])
def test_other_backends(backend, present, absent):
    flags = cmake_flags(Settings(llama_cpp_backend=backend))
    assert present in flags and absent not in flags
    assert not any(f.startswith("-DGPU_TARGETS") for f in flags)


def test_extra_cmake_args_are_part_of_the_identity():
    plain = cmake_flags(Settings(llama_cpp_backend="hip"))
    extra = cmake_flags(Settings(llama_cpp_backend="hip", llama_cpp_cmake_extra_args=["-DGGML_HIP_NO_VMM=ON"]))
    assert extra[-1] == "-DGGML_HIP_NO_VMM=ON"
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert build_id(commit, plain) != build_id(commit, extra)
    assert build_id(commit, plain) == build_id(commit, list(plain))
    assert build_id(commit, plain).startswith("0123456789ab-")


@pytest.mark.parametrize(("family", "backend", "wanted"), [
    ("apt", "vulkan", {"libvulkan-dev", "glslc", "cmake", "git"}),
    ("dnf", "vulkan", {"vulkan-loader-devel", "glslc", "gcc-c++", "cmake"}),
    ("apt", "hip", {"cmake", "ninja-build", "g++"}),
    ("dnf", "hip", {"cmake", "ninja-build", "gcc-c++"}),
])
def test_build_packages_per_family_and_backend(family, backend, wanted):
    packages = set(BUILD_PACKAGES[(family, "cpu")] + BUILD_PACKAGES[(family, backend)])
    assert wanted <= packages
    assert not any("dkms" in p for p in packages)


def test_is_commit():
    assert is_commit("0123456789abcdef0123456789abcdef01234567")
    assert not is_commit("b10760") and not is_commit("0123456")


def test_rdma_is_off_unless_asked():
    assert "-DGGML_RPC_RDMA=OFF" in cmake_flags(Settings(llama_cpp_backend="cpu"))
    flags = cmake_flags(Settings(llama_cpp_backend="cpu", llama_cpp_rpc_rdma=True))
    assert "-DGGML_RPC_RDMA=ON" in flags and "-DGGML_RPC_RDMA=OFF" not in flags


@pytest.mark.parametrize(("source", "version", "path"), [
    ("distro", "7.2.1", "/usr"), ("amd-repo", "7.2.1", "/opt/rocm"), ("therock", "7.2.1", "/opt/rocm-7.2.1"),
    ("therock", "7.2", "/opt/rocm-7.2.0"),
])
def test_hip_build_looks_for_rocm_where_its_source_installs_it(source, version, path):
    s = Settings(llama_cpp_backend="hip", rocm_source=source, rocm_version=version,
                 **({"rocm_tarball_url": "https://example.org/r.tar.gz", "rocm_tarball_sha256": "ab" * 32}
                    if source == "therock" else {}))
    assert rocm_path(s) == path
    env = build_env(s, cmake_flags(s), None)
    assert (env["HALO_ROCM_SOURCE"], env["HALO_ROCM_PATH"]) == (source, path)
    assert "HALO_ROCM_PATH" not in build_env(Settings(llama_cpp_backend="cpu"), [], None)


def test_host_key_names_files_safely():
    assert host_key({"id": "debian", "release": "12"}, []) == "debian-12-e3b0c442"
    assert host_key({"id": "x$(id)`y`", "release": "1 2"}, []) == "x__id__y_-1_2-e3b0c442"


def test_the_scripts_are_valid_bash_and_write_the_stamp_the_fact_reads():
    for script in SCRIPTS.glob("*.sh"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    assert f'"$build.tmp/{STAMP}"' in (SCRIPTS / "llama-build.sh").read_text()


def test_script_moves_current_or_next_only_after_the_binaries_ran():
    script = (SCRIPTS / "llama-build.sh").read_text()
    order = [script.index(step) for step in (
        "cmake --build", "bin/llama-server\" --version", "--help", 'mv "$build.tmp" "$build"',
        'mv -T "$prefix/$link.new" "$prefix/$link"')]
    assert order == sorted(order)


# --- the build script, run here ------------------------------------------------------------------

PROJECT = {
    # Two executables named like llama.cpp's; the configure step records ROCm's environment variables.
    "CMakeLists.txt": """cmake_minimum_required(VERSION 3.16)
project(fake_llama C)
file(WRITE "${CMAKE_BINARY_DIR}/rocm-env.txt" "ROCM_PATH=$ENV{ROCM_PATH}\\nHIP_PATH=$ENV{HIP_PATH}\\nHIPCXX=$ENV{HIPCXX}\\n")
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin")
add_executable(llama-server main.c)
add_executable(ggml-rpc-server main.c)
""",
    "main.c": '#include <stdio.h>\nint main(void) { puts("version: 1 (test)"); return 0; }\n',
    "tools/rpc/CMakeLists.txt": "# ggml-rpc-server\n",
}
# Shell metacharacters that would run a command or expand a variable if a value were spliced into shell
# text: each would leave a file "pwned*" in the working directory or put this machine's HOME into the stamp.
HOSTILE = ["$(touch${IFS}pwned1)", "`touch${IFS}pwned2`", "$HOME", "${HOME}", "'\"\\", ";touch${IFS}pwned3",
           "|touch${IFS}pwned4", "&&touch${IFS}pwned5"]


def git(*args: str, cwd: Path) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t.invalid")
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def make_repo(path: Path) -> Path:
    for name, text in PROJECT.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "fake llama.cpp", cwd=path)
    git("tag", "b1", cwd=path)
    return path


def at(tmp_path: Path, s: Settings) -> Settings:
    """`s` with llama_cpp_prefix under tmp_path (a place the settings refuse on hosts: the units' PrivateTmp)."""
    return s.model_copy(update={"llama_cpp_prefix": str(tmp_path / "prefix")})


def run_op(command, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess:
    """The operation's command as the host's shell gets it (pyinfra sends the joined words to sh -c)."""
    env = dict(os.environ, PATH=path or os.environ["PATH"])
    return subprocess.run(["sh", "-c", command.get_raw_value()], cwd=cwd, capture_output=True, text=True, env=env)


def run_script(script: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess:
    """A long_work script as the host runs it: `bash <file>`."""
    (cwd / "script").write_text(script)
    env = dict(os.environ, PATH=path or os.environ["PATH"])
    return subprocess.run(["bash", str(cwd / "script")], cwd=cwd, capture_output=True, text=True, env=env)


needs_toolchain = pytest.mark.skipif(not all(shutil.which(t) for t in ("cmake", "ninja", "cc", "git")),
                                     reason="needs cmake, ninja, a C compiler and git")


@needs_toolchain
def test_build_passes_every_value_as_data_and_expands_nothing(tmp_path: Path):
    # The repository's path and every CMake argument hold shell metacharacters.
    repo = make_repo(Path(tmp_path / ("repo-" + "".join(v for v in HOSTILE if "/" not in v))))
    repo.mkdir(exist_ok=True)
    extra = [f"-DHALO_TEST_{i}={value}" for i, value in enumerate(HOSTILE)]
    s = at(tmp_path, Settings(llama_cpp_backend="cpu", llama_cpp_repo=str(repo), llama_cpp_ref="b1",
                              llama_cpp_cmake_extra_args=extra))
    flags = cmake_flags(s)
    work = tmp_path / "cwd"
    work.mkdir()
    script = build_script(s, flags, 2)  # what the operation runs on the host (deploys/progress.py)
    proc = run_script(script, work)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert not list(tmp_path.rglob("pwned*")), "a value ran as a command"

    assert not (tmp_path / "prefix/current").exists()  # staged: deploys/llama_cpp.py's switch serves it
    stamp = json.loads((tmp_path / "prefix/next" / STAMP).read_text())
    assert stamp["flags"] == flags and stamp["repo"] == str(repo)
    assert stamp["rpc_protocol"] == ""  # this project has no ggml/include/ggml-rpc.h
    assert parse_stamp(json.dumps(stamp))["flags"] == flags
    cache = (tmp_path / "prefix/trees" / stamp["id"].split("-")[1] / "CMakeCache.txt").read_text()
    for i, value in enumerate(HOSTILE):
        assert f"HALO_TEST_{i}:UNINITIALIZED={value}\n" in cache, value  # cmake got each value verbatim
    assert os.environ["HOME"] not in (tmp_path / "prefix/next" / STAMP).read_text()

    again = run_script(script, work)  # the same build: nothing is configured or compiled again
    assert again.returncode == 0 and "Build files have been written" not in again.stdout


@needs_toolchain
def test_unpack_passes_the_builder_and_archive_as_data(tmp_path: Path):
    from deploys.llama_cpp import unpack

    build_dir = tmp_path / "b" / "0123456789ab-1a2b3c4d"
    (build_dir / "bin").mkdir(parents=True)
    (build_dir / "bin/llama-server").write_text("#!/bin/sh\necho version: 1\n")
    (build_dir / "bin/llama-server").chmod(0o755)
    archive = tmp_path / "build.tar"
    subprocess.run(["tar", "-C", str(tmp_path / "b"), "-cf", str(archive), build_dir.name], check=True)
    command = script_command("llama-unpack.sh", {"HALO_PREFIX": str(tmp_path / "p"), "HALO_ARCHIVE": str(archive),
                                                  "HALO_BUILDER": "halo1$(touch${IFS}pwned)`touch${IFS}pwned2`"})
    proc = run_op(command, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "copied from halo1$(touch${IFS}pwned)`touch${IFS}pwned2`" in proc.stdout
    assert not list(tmp_path.rglob("pwned*"))
    assert os.readlink(tmp_path / "p/current") == "builds/0123456789ab-1a2b3c4d" and not archive.exists()
    assert unpack  # the operation that yields this command


# --- finding ROCm for the HIP build ---------------------------------------------------------------

def fake_rocm(root: Path, hip_version: str = "7.2.53211-1", llvm: str = "llvm/bin", clang: bool = True) -> Path:
    """A ROCm prefix shaped like AMD's /opt/rocm-<version>: bin/hipconfig (answering -l and --version
    from its own location, as ROCm's does) and <llvm>/clang. Nothing of it is on the test's PATH."""
    (root / "bin").mkdir(parents=True)
    (root / llvm).mkdir(parents=True)
    hipconfig = root / "bin/hipconfig"
    hipconfig.write_text(f"""#!/bin/sh
here=$(cd "$(dirname "$0")/.." && pwd)
case $1 in -l) echo "$here/{llvm}" ;; --version) printf %s {hip_version} ;; *) exit 2 ;; esac
""")
    hipconfig.chmod(0o755)
    if clang:
        (root / llvm / "clang").write_text("#!/bin/sh\nexit 0\n")
        (root / llvm / "clang").chmod(0o755)
    return root


def hip_build(tmp_path: Path, source: str, version: str = "7.2.1") -> subprocess.CompletedProcess:
    """The HIP build operation with ROCm where `source` puts it, under tmp_path instead of /."""
    repo = make_repo(tmp_path / "repo")
    therock = {"rocm_tarball_url": "https://example.org/r.tar.gz", "rocm_tarball_sha256": "ab" * 32}
    s = at(tmp_path, Settings(llama_cpp_backend="hip", rocm_source=source, rocm_version=version,
                              llama_cpp_repo=str(repo), llama_cpp_ref="b1", **(therock if source == "therock" else {})))
    # -DGGML_HIP=ON means nothing to the small project; the ROCm path is moved under tmp_path.
    text = build_script(s, cmake_flags(s), 2).replace(f"HALO_ROCM_PATH={shlex.quote(rocm_path(s))}",
                                                      f"HALO_ROCM_PATH={shlex.quote(f'{tmp_path}{rocm_path(s)}')}")
    path = ":".join(d for d in os.environ["PATH"].split(":") if not Path(d, "hipconfig").exists())
    return run_script(text, tmp_path, path)


def rocm_env(tmp_path: Path) -> dict[str, str]:
    (tree,) = (tmp_path / "prefix/trees").iterdir()
    return dict(line.split("=", 1) for line in (tree / "rocm-env.txt").read_text().splitlines())


@needs_toolchain
@pytest.mark.parametrize(("source", "version", "prefix", "llvm"), [
    ("amd-repo", "7.2.1", "opt/rocm", "llvm/bin"),
    ("therock", "7.2.1", "opt/rocm-7.2.1", "lib/llvm/bin"),
])
def test_hip_build_finds_rocm_off_path(tmp_path: Path, source, version, prefix, llvm):
    rocm = fake_rocm(tmp_path / prefix, llvm=llvm)
    proc = hip_build(tmp_path, source, version)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert rocm_env(tmp_path) == {"ROCM_PATH": str(rocm), "HIP_PATH": str(rocm), "HIPCXX": f"{rocm}/{llvm}/clang"}
    assert f"ROCm for HIP: {rocm} (rocm_source = '{source}'), HIP 7.2.53211-1" in proc.stdout


@needs_toolchain
@pytest.mark.parametrize(("case", "words"), [
    ("missing", ["rocm_source = 'therock': ROCm is not installed:", "/opt/rocm-7.2.1 does not exist",
                 "run deploys/rocm.py (rocm_source = 'therock') first"]),
    ("no hipconfig", ["rocm_source = 'therock': hipconfig is not in", "/opt/rocm-7.2.1/bin"]),
    ("no clang", ["rocm_source = 'therock': clang is not in", "/opt/rocm-7.2.1/llvm/bin' (hipconfig -l)"]),
    ("HIP 5.7", ["HIP 5.7.31921 in", "is too old: llama.cpp's HIP backend needs HIP 6.1 or newer"]),
])
def test_hip_build_stops_naming_the_source_and_what_is_missing(tmp_path: Path, case, words):
    rocm = tmp_path / "opt/rocm-7.2.1"
    if case == "no hipconfig":
        (rocm / "llvm/bin").mkdir(parents=True)
    elif case != "missing":
        fake_rocm(rocm, hip_version="5.7.31921" if case == "HIP 5.7" else "7.2.1", clang=case != "no clang")
    proc = hip_build(tmp_path, "therock")
    assert proc.returncode == 1
    for word in words:
        assert word in proc.stderr, proc.stderr
    assert not (tmp_path / "prefix/current").exists() and not (tmp_path / "prefix/next").exists()
    assert not list((tmp_path / "prefix/trees").glob("*/CMakeCache.txt"))


# --- settings: values git or the build would misread ------------------------------------------------

def problem_of(**data) -> str:
    from pyinfra.api import Inventory

    from deploys.settings import SettingsError, validate_inventory

    with pytest.raises(SettingsError) as info:
        validate_inventory(Inventory(([("halo1", {"ssh_hostname": "10.151.0.11", **data})], {})))
    (problem,) = info.value.problems
    return problem


@pytest.mark.parametrize("url", [
    "-uhelp", "--upload-pack=touch${IFS}/tmp/pwned", "ext::sh${IFS}-c${IFS}touch%/tmp/pwned", "fd::3",
    "ssh://-oProxyCommand=touch${IFS}/tmp/pwned/x", "ssh://git@-oProxyCommand=x/y", "https://example.org/a b",
    "https://example.org/a\tb", "https://example.org/\x01",
])
def test_git_urls_read_as_options_or_transports_are_refused(url):
    problem = problem_of(llama_cpp_repo=url)
    assert problem.startswith(f"halo1: llama_cpp_repo = {url!r} is invalid: ")
    assert "Fix it in the inventory's host data or group_data/all.py." in problem


def test_plain_git_urls_and_paths_are_fine():
    for url in ("https://github.com/ggml-org/llama.cpp", "ssh://git@example.org/llama.cpp.git", "/srv/llama.cpp.git",
                "file:///srv/llama.cpp.git", "http://10.151.0.1:8000/llama.cpp.git"):
        assert Settings(llama_cpp_repo=url).llama_cpp_repo == url


def test_rdma_is_set_by_its_variable_not_by_extra_args():
    problem = problem_of(llama_cpp_cmake_extra_args=["-DGGML_RPC_RDMA=ON"])
    assert "set llama_cpp_rpc_rdma = True instead" in problem
    assert "entry '-DX=a\\x1bb' is not allowed" in problem_of(llama_cpp_cmake_extra_args=["-DX=a\x1bb"])


@needs_toolchain
@pytest.mark.skipif(Path("/usr/bin/hipconfig").exists(), reason="this machine has ROCm in /usr")
def test_hip_build_with_the_distros_rocm_leaves_rocm_path_unset(tmp_path: Path):
    # A distribution's clang finds its device libraries itself; ROCM_PATH=/usr would send it elsewhere.
    rocm = fake_rocm(tmp_path / "distro-tools")  # hipconfig found on PATH, as /usr/bin is
    repo = make_repo(tmp_path / "repo")
    s = at(tmp_path, Settings(llama_cpp_backend="hip", llama_cpp_repo=str(repo), llama_cpp_ref="b1"))
    script = build_script(s, cmake_flags(s), 2)
    assert "export HALO_ROCM_PATH=/usr\n" in script
    (tmp_path / "script").write_text(script)
    env = dict(os.environ, PATH=f"{os.environ['PATH']}:{rocm}/bin", ROCM_PATH="/somewhere/else")
    proc = subprocess.run(["bash", "script"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert rocm_env(tmp_path) == {"ROCM_PATH": "", "HIP_PATH": "/usr", "HIPCXX": f"{rocm}/llvm/bin/clang"}
    assert "ROCM_PATH=(unset)" in proc.stdout


# --- staging: `next` becomes `current` on every host at once, or on none ----------------------------

class FakeState:
    """The parts of pyinfra's State that cluster_lost reads."""

    def __init__(self, hosts: dict[str, tuple[str, ...]], active: set[str], limit: set[str] | None = None):
        from collections import namedtuple

        host = namedtuple("Host", "name groups")
        self.inventory = [host(n, g) for n, g in hosts.items()]
        self.active_hosts = {h for h in self.inventory if h.name in active}
        self.limit = limit

    def is_host_in_limit(self, host) -> bool:
        return self.limit is None or host.name in self.limit


CLUSTER = {"halo1": ("head", "rpc_workers"), "halo2": ("rpc_workers",), "halo3": ("rpc_workers",),
           "spare": ("spare",)}


def switch_commands(state: FakeState) -> tuple[list[str], list[str]]:
    from types import SimpleNamespace

    from pyinfra.context import ctx_host

    from deploys.llama_cpp import switch

    noops: list[str] = []
    fake = SimpleNamespace(name="halo2", state=state, noop=noops.append)
    with ctx_host.use(fake):
        commands = [c.get_raw_value() for c in switch._inner("/opt/llama.cpp")]
    return commands, noops


def test_the_staged_build_is_served_once_every_host_of_the_cluster_has_it():
    commands, _ = switch_commands(FakeState(CLUSTER, active={"halo1", "halo2", "halo3"}))
    assert commands == ["mv -T /opt/llama.cpp/next /opt/llama.cpp/current"]


def test_a_host_that_failed_its_build_or_copy_keeps_the_whole_cluster_on_the_old_build():
    commands, noops = switch_commands(FakeState(CLUSTER, active={"halo1", "halo2", "spare"}))
    assert commands == [] and noops == ["the new build waits for halo3"]


def test_hosts_outside_the_limit_or_the_cluster_do_not_hold_the_switch():
    from deploys.llama_cpp import cluster_lost

    assert cluster_lost(FakeState(CLUSTER, active={"halo1", "halo2"}, limit={"halo1", "halo2"})) == []
    assert cluster_lost(FakeState(CLUSTER, active={"halo1", "halo2", "halo3"})) == []
