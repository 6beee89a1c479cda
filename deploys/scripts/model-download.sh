# Download a model file (or one part of a split model) resumably, check free disk and its sha256, then
# move it into place and write <dest>.sha256.
# (halo-provision deploys/head.py runs this file with bash on the head; do not edit there.)
#
#   HALO_URL=https://... HALO_SHA256=<64 hex> HALO_DEST=/srv/models/m.gguf HALO_VARIABLE=model_sha256 \
#   HALO_EVERY_S=10 HALO_ATTEMPTS=5 HALO_TOKEN_FILE= bash model-download.sh
#
# Values come in as environment variables, never as shell text. The file grows as <dest>.part (a later
# run resumes it); a progress line (bytes, total, rate) comes every HALO_EVERY_S seconds. With
# HALO_TOKEN_FILE, curl reads an Authorization header made from that file when it runs (through a pipe:
# the token is in no argument, script or log; curl does not send it on to another host of a redirect).
set -uo pipefail

token=$HALO_TOKEN_FILE dest=$HALO_DEST url=$HALO_URL want=$HALO_SHA256 variable=$HALO_VARIABLE
every_s=$HALO_EVERY_S attempts=$HALO_ATTEMPTS
part="$dest.part" name=$(basename "$dest")
header=()  # curl reads the header from fd 3 (see auth), only with a token file
if [ -n "$token" ]; then header=(-H @/dev/fd/3); fi
auth() { if [ -n "$token" ]; then printf 'Authorization: Bearer %s\n' "$(head -n 1 "$token" | tr -d '\r\n ')"; fi; }
human() { numfmt --to=iec-i --suffix=B "$1" 2>/dev/null || echo "$1 bytes"; }
size() { stat -c %s "$part" 2>/dev/null || echo 0; }
# the size the server announces (the last Content-Length after redirects), then free disk space
total=$(curl -sSLfI -m 30 "${header[@]}" "$url" 3< <(auth) 2>/dev/null | tr -d '\r' \
    | awk 'tolower($1)=="content-length:" {n=$2} END {print n+0}')
have=$(size)
avail=$(df -B1 --output=avail "$(dirname "$dest")" | tail -n 1 | tr -d ' ')
if [ "$total" -gt 0 ] && [ $(( total - have )) -gt "$avail" ]; then
    echo "not enough disk space for $name: $(human $(( total - have ))) still to download, $(human "$avail") free in $(dirname "$dest"); free some space or set model_dir to a bigger file system" >&2
    exit 1
fi
attempt=0
while :; do
    attempt=$(( attempt + 1 )) have=$(size)
    if [ "$total" -gt 0 ] && [ "$have" -gt "$total" ]; then rm -f "$part"; have=0; fi  # not this file's start
    if [ "$total" -gt 0 ] && [ "$have" -eq "$total" ]; then break; fi
    [ "$have" -gt 0 ] && echo "$name: resuming at $(human "$have") (attempt $attempt)"
    curl -sSLf --connect-timeout 30 "${header[@]}" -C - -o "$part" "$url" 3< <(auth) &
    pid=$! last=$have next=$(( $(date +%s) + every_s ))
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        if [ "$(date +%s)" -ge "$next" ]; then
            got=$(size)
            echo "$name: $(human "$got") of $( [ "$total" -gt 0 ] && human "$total" || echo '?') at $(human $(( (got - last) / every_s )))/s"
            last=$got next=$(( next + every_s ))
        fi
    done
    if wait "$pid"; then break; fi
    if [ "$attempt" -ge "$attempts" ]; then
        echo "downloading $url failed $attempts times; $(human "$(size)") of it are kept in $part: run again to resume" >&2
        exit 1
    fi
    sleep 2
done
got=$(sha256sum "$part" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
    rm -f "$part"
    echo "$variable mismatch: $url has sha256 $got, expected $want; the download was deleted, $dest is unchanged" >&2
    exit 1
fi
chmod 0644 "$part"
mv -f "$part" "$dest"
echo "$want  $name" > "$dest.sha256"
echo "downloaded $url to $dest (sha256 checked)"
