# Fetch an apt signing key aside, and install it dearmored as a keyring only when it holds exactly one
# primary key, with the wanted fingerprint (anything else fails with both fingerprints; nothing is installed).
# (halo-provision deploys/rocm.py runs this file with bash on the host; do not edit there.)
#
#   HALO_URL=https://repo.radeon.com/rocm/rocm.gpg.key HALO_FINGERPRINT=<40 hex> \
#   HALO_PATH=/etc/apt/keyrings/rocm.gpg bash rocm-key.sh
#
# Values come in as environment variables, never as shell text. curl takes https only, redirects included.
set -euo pipefail

url=$HALO_URL want=$HALO_FINGERPRINT path=$HALO_PATH
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
curl --proto =https --proto-redir =https -sSLf "$url" -o "$work/key.asc"  # no redirect to http either
gpg --dearmor < "$work/key.asc" > "$work/key.gpg"
got=$(gpg --show-keys --with-colons "$work/key.gpg" 2>/dev/null \
      | awk -F: '$1 == "pub" { primary = 1; next } $1 == "fpr" && primary { print $10; primary = 0 }' | paste -sd' ')
if [ "$got" != "$want" ]; then
    echo "rocm_repo_key_fingerprint: the key at $url has the primary key fingerprint(s) '${got:-none}', expected" \
         "exactly $want; nothing was installed and apt trusts nothing new. Check rocm_repo_key_url, or set" \
         "rocm_repo_key_fingerprint to the fingerprint the repository publishes" >&2
    exit 1
fi
install -d -m 0755 "$(dirname "$path")"
install -m 0644 "$work/key.gpg" "$path.new" && mv "$path.new" "$path"
