# Build llama.cpp at one commit, check the binaries, then point `current` at the build.
# (halo-provision deploys/llama_cpp.py runs this file with bash on the build host; do not edit there.)
#
#   HALO_PREFIX=/opt/llama.cpp HALO_REPO=https://github.com/ggml-org/llama.cpp HALO_REF=b10760 \
#   HALO_BACKEND=cpu HALO_FLAGS_HASH=1a2b3c4d bash llama-build.sh -DCMAKE_BUILD_TYPE=Release -DGGML_RPC=ON
#
# Every value comes in as data, never as shell text: the settings in the environment variables below,
# the CMake arguments as this script's arguments. The stamp JSON is written with printf, each value
# escaped as a JSON string, so nothing in a value is ever expanded.
#
#   HALO_PREFIX       llama_cpp_prefix: src/ (the clone), trees/<flags hash>/, builds/<id>/, current
#   HALO_REPO         llama_cpp_repo
#   HALO_REF          llama_cpp_ref (a tag or commit)
#   HALO_BACKEND      llama_cpp_backend (written into the stamp; "hip" also sets up ROCm, below)
#   HALO_FLAGS_HASH   8 hex digits naming the CMake arguments (with the commit: the build's id)
#   HALO_JOBS         parallel compile jobs; empty: all cores
#   HALO_ROCM_SOURCE  rocm_source, for the HIP backend: distro, amd-repo or therock
#   HALO_ROCM_PATH    where that source installs ROCm: /usr, /opt/rocm or /opt/rocm-<version>
#   HALO_SWITCH       1 (default): point `current` at the build; 0: point `next` at it (staged)
#
# Everything before the final `mv -T` can fail without touching the build `current` serves.
# Lines `==> <stage>` name the stage for the progress lines (deploys/progress.py).
set -eu

die() {
    echo "$*" >&2
    exit 1
}

prefix=$HALO_PREFIX repo=$HALO_REPO ref=$HALO_REF backend=$HALO_BACKEND fhash=$HALO_FLAGS_HASH
jobs=${HALO_JOBS:-$(nproc)}
case $fhash in *[!0-9a-f]* | "") die "HALO_FLAGS_HASH must be hex digits, not '$fhash'" ;; esac
case $jobs in *[!0-9]* | "") die "HALO_JOBS must be a number, not '$jobs'" ;; esac

# A JSON string holding $1 exactly: backslash and double quote escaped. Values with control
# characters are refused (the settings already refuse them).
json_string() {
    case $1 in *[[:cntrl:]]*) die "a value holds a control character, which the build stamp cannot hold: '$1'" ;; esac
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

# ROCm where rocm_source installs it: its bin/ and LLVM's bin/ are not on PATH for AMD's packages
# (/opt/rocm) and TheRock (/opt/rocm-<version>). Sets PATH, HIP_PATH, HIPCXX and (outside /usr)
# ROCM_PATH, or stops naming the source, the missing tool and the fix. llama.cpp's ggml-hip needs
# HIP 6.1 or newer.
hip_toolchain() {
    local source=${HALO_ROCM_SOURCE:?HALO_ROCM_SOURCE is not set} rocm=${HALO_ROCM_PATH:?HALO_ROCM_PATH is not set}
    local fix="run deploys/rocm.py (rocm_source = '$source') first"
    [ -d "$rocm" ] || die "rocm_source = '$source': ROCm is not installed: $rocm does not exist; $fix"
    PATH="$rocm/bin:$rocm/llvm/bin:$rocm/lib/llvm/bin:$PATH"
    command -v hipconfig >/dev/null ||
        die "rocm_source = '$source': hipconfig is not in $rocm/bin (nor on PATH): ROCm's HIP is not installed there; $fix"
    local clang_dir version
    clang_dir=$(hipconfig -l) || die "rocm_source = '$source': '$(command -v hipconfig) -l' failed; $fix"
    [ -x "$clang_dir/clang" ] ||
        die "rocm_source = '$source': clang is not in '$clang_dir' (hipconfig -l): ROCm's LLVM is missing; $fix"
    version=$(hipconfig --version) || die "rocm_source = '$source': '$(command -v hipconfig) --version' failed; $fix"
    case $version in
        [0-5].* | 6.0.* | 6.0)
            die "rocm_source = '$source': HIP $version in $rocm is too old: llama.cpp's HIP backend needs HIP 6.1 or newer; use rocm_source 'amd-repo' or 'therock' (rocm_version 7.2.1)" ;;
    esac
    export PATH HIP_PATH="$rocm" HIPCXX="$clang_dir/clang"
    if [ "$rocm" = /usr ]; then
        # A distribution's clang finds its ROCm device libraries in its own resource directory; clang
        # takes ROCM_PATH as where to look instead (ROCM_PATH=/usr on Debian testing: "cannot find ROCm
        # device library"), and llama.cpp's CMake falls back to /usr without it.
        unset ROCM_PATH
    else
        export ROCM_PATH="$rocm"
    fi
    echo "ROCm for HIP: $rocm (rocm_source = '$source'), HIP $version, HIPCXX=$HIPCXX, ROCM_PATH=${ROCM_PATH:-(unset)}"
}

mkdir -p "$prefix/builds" "$prefix/trees"
if [ ! -d "$prefix/src/.git" ]; then
    echo "==> clone $repo"
    rm -rf "$prefix/src.tmp"
    git clone --quiet --no-checkout -- "$repo" "$prefix/src.tmp"
    mv "$prefix/src.tmp" "$prefix/src"
fi
cd "$prefix/src"
git remote set-url origin -- "$repo"
if ! commit=$(git rev-parse --verify --quiet "$ref^{commit}"); then
    echo "==> fetch $ref from $repo"
    git fetch --quiet --tags origin || true
    git fetch --quiet origin -- "$ref" 2>/dev/null || true
    commit=$(git rev-parse --verify --quiet "$ref^{commit}") ||
        die "llama_cpp_ref $ref is not a tag or commit of $repo"
fi
git checkout --quiet --force --detach "$commit"
id="${commit:0:12}-$fhash"
build="$prefix/builds/$id"
if [ ! -f "$build/halo-build.json" ]; then
    rpc=ggml-rpc-server
    # the RPC protocol version the client and server of this build speak (major must match across hosts)
    protocol=""
    for part in MAJOR MINOR PATCH; do
        v=$(sed -n "s/^#define RPC_PROTO_${part}_VERSION[[:space:]]*\([0-9][0-9]*\).*/\1/p" ggml/include/ggml-rpc.h 2>/dev/null | head -n 1)
        [ -n "$v" ] || { protocol=""; break; }
        protocol="$protocol${protocol:+.}$v"
    done
    grep -qs ggml-rpc-server tools/rpc/CMakeLists.txt || rpc=rpc-server
    if [ "$backend" = hip ]; then
        hip_toolchain
    fi
    tree="$prefix/trees/$fhash"  # one build tree per flags: a new ref builds incrementally
    echo "==> configure (cmake) for $commit"
    cmake -S . -B "$tree" -G Ninja "$@"
    fit=  # llama.cpp's own fitter, where the source has it (the head step reports its answer)
    [ -f tools/fit-params/CMakeLists.txt ] && fit=llama-fit-params
    echo "==> compile llama-server, $rpc${fit:+ and $fit} ($jobs jobs)"
    cmake --build "$tree" --target llama-server "$rpc" $fit -j "$jobs"
    rm -rf "$build.tmp" && mkdir -p "$build.tmp/bin"
    echo "==> check the binaries"
    cp "$tree/bin/llama-server" "$tree/bin/$rpc" ${fit:+"$tree/bin/$fit"} "$build.tmp/bin/"
    "$build.tmp/bin/llama-server" --version
    "$build.tmp/bin/$rpc" --help >/dev/null 2>&1
    {
        printf '{"id": %s, "commit": %s, "ref": %s, "repo": %s, "backend": %s,\n "flags": [' \
            "$(json_string "$id")" "$(json_string "$commit")" "$(json_string "$ref")" \
            "$(json_string "$repo")" "$(json_string "$backend")"
        sep=""
        for flag in "$@"; do
            printf '%s%s' "$sep" "$(json_string "$flag")"
            sep=", "
        done
        printf '],\n "rpc_server": %s, "server": %s, "rpc_protocol": %s}\n' \
            "$(json_string "$build/bin/$rpc")" "$(json_string "$build/bin/llama-server")" "$(json_string "$protocol")"
    } > "$build.tmp/halo-build.json"
    mv "$build.tmp" "$build"
fi
# HALO_SWITCH=0: stage the build as `next` (deploys/llama_cpp.py moves it to `current` once every host has it)
link=current
[ "${HALO_SWITCH:-1}" = 1 ] || link=next
echo "==> point $link at builds/$id"
ln -sfn "builds/$id" "$prefix/$link.new" && mv -T "$prefix/$link.new" "$prefix/$link"
ls -1dt "$prefix"/builds/*/ | tail -n +4 | while read -r old; do
    [ "$(readlink -f "$old")" = "$(readlink -f "$prefix/current")" ] || rm -rf "$old"
done
echo "llama.cpp $ref ($commit) built in $build, linked as $prefix/$link"
