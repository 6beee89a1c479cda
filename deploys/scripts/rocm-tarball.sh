# Download a ROCm tarball (TheRock) next to its destination, check its sha256, unpack it, then move it into place.
# (halo-provision deploys/rocm.py runs this file with bash on the host; do not edit there.)
#
#   HALO_URL=https://... HALO_SHA256=<64 hex> HALO_DEST=/opt/rocm-7.2.0 HALO_STAMP=.halo-rocm-tarball.sha256 \
#   bash rocm-tarball.sh
#
# Values come in as environment variables, never as shell text. Nothing is unpacked unless the sha256
# matches; the directory it replaces must be one this step unpacked (it has the stamp file).
set -euo pipefail

dest=$HALO_DEST url=$HALO_URL want=$HALO_SHA256 stamp=$HALO_STAMP
if [ -e "$dest" ] && [ ! -f "$dest/$stamp" ]; then
    echo "$dest exists but was not unpacked from a tarball by this step (ROCm packages?): remove it or use another rocm_version" >&2
    exit 1
fi
mkdir -p "$(dirname "$dest")"
work=$(mktemp -d "$dest.partial.XXXXXX")
trap 'rm -rf "$work"' EXIT
curl -sSLf --retry 3 -o "$work/rocm.tar" "$url"
got=$(sha256sum "$work/rocm.tar" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
    echo "rocm_tarball_sha256 mismatch: $url has sha256 $got, expected $want; nothing was unpacked" >&2
    exit 1
fi
mkdir "$work/root"
tar -xf "$work/rocm.tar" -C "$work/root"
rm "$work/rocm.tar"
echo "$want" > "$work/root/$stamp"
rm -rf "$dest"
mv "$work/root" "$dest"
