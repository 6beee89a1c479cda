# Install a llama.cpp build made on another host (a tar of builds/<id>/) and point `current` at it.
# (halo-provision deploys/llama_cpp.py runs this file with bash on the receiving host; do not edit there.)
#
#   HALO_PREFIX=/opt/llama.cpp HALO_ARCHIVE=/tmp/halo-llama-build-x.tar HALO_BUILDER=halo1 HALO_SWITCH=0 bash llama-unpack.sh
#
# Values come in as environment variables, never as shell text. The archive is removed once unpacked;
# `current` (or with HALO_SWITCH=0, `next`) moves only after the build's llama-server ran here.
set -eu

die() {
    echo "$*" >&2
    exit 1
}

prefix=$HALO_PREFIX archive=$HALO_ARCHIVE builder=$HALO_BUILDER
mkdir -p "$prefix/builds"
id=$(tar -tf "$archive" | head -n 1 | cut -d/ -f1)
case $id in *[!0-9a-f-]* | "") die "$archive from $builder is not a llama.cpp build (first entry: '$id')" ;; esac
rm -rf "$prefix/builds/$id.tmp" && mkdir "$prefix/builds/$id.tmp"
tar -C "$prefix/builds/$id.tmp" --strip-components=1 -xf "$archive"
rm -f "$archive"
"$prefix/builds/$id.tmp/bin/llama-server" --version
rm -rf "$prefix/builds/$id" && mv "$prefix/builds/$id.tmp" "$prefix/builds/$id"
link=current  # HALO_SWITCH=0: staged as `next`, moved to `current` once every host has the build
[ "${HALO_SWITCH:-1}" = 1 ] || link=next
ln -sfn "builds/$id" "$prefix/$link.new" && mv -T "$prefix/$link.new" "$prefix/$link"
echo "llama.cpp build $id copied from $builder, linked as $prefix/$link"
