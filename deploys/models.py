"""The model files the head downloads: one GGUF file (model_url) or every part of a split one
(model_files), each checked against its own sha256, resumed after an interruption, with the free disk
space checked first and a progress line every PROGRESS_EVERY_S seconds.

    name-00001-of-00003.gguf  name-00002-of-00003.gguf  name-00003-of-00003.gguf
    -> llama-server is given the first part and finds the others next to it.

A part is downloaded to `<part>.part` and moves to its place only when its sha256 matches, with the
stamp `<part>.sha256` beside it (later runs do not hash it again). An interrupted transfer leaves the
`.part` file: the next attempt, in the same run or a later one, asks the server for the rest only.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

PROGRESS_EVERY_S = 10
ATTEMPTS = 5  # transfers per part in one run; each resumes where the last one stopped
SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf$")


def url_name(url: str) -> str:
    """The file name a URL ends in ('' when there is none).

    >>> url_name("https://example.org/m/Qwen3-00001-of-00002.gguf?download=true")
    'Qwen3-00001-of-00002.gguf'
    """
    return PurePosixPath(unquote(urlsplit(url).path)).name


def part_url(s, part) -> str:
    """Where a model_files entry is downloaded from: its url, or its file on the Hugging Face hub.

    >>> from deploys.settings import ModelFile, Settings
    >>> part_url(Settings(), ModelFile(hf="unsloth/Qwen3-GGUF/Q4_K_M/Qwen3-00001-of-00002.gguf", sha256="a" * 64))
    'https://huggingface.co/unsloth/Qwen3-GGUF/resolve/main/Q4_K_M/Qwen3-00001-of-00002.gguf'
    """
    if part.url is not None:
        return part.url
    owner, repo, path = part.hf.split("/", 2)
    return f"{s.model_hf_endpoint.rstrip('/')}/{owner}/{repo}/resolve/{s.model_hf_revision}/{path}"


def token_file_problem(info: dict | None) -> str | None:
    """Why the token file (its File fact) may not be used: missing, readable by others, or empty.

    >>> token_file_problem({"user": "root", "mode": 644, "size": 37})
    'others may read it; expected a root-only file: chown root:root FILE; chmod 600 FILE'
    >>> token_file_problem({"user": "root", "mode": 600, "size": 37}) is None
    True
    """
    if not info:
        return "there is no such file on the head; expected a root-only file holding the token: (umask 077; cat > FILE)"
    if info["user"] != "root" or info["mode"] % 100:
        return "others may read it; expected a root-only file: chown root:root FILE; chmod 600 FILE"
    if not info["size"]:
        return "it is empty; expected the token on its first line"
    return None


def split_problems(urls: list[str]) -> list[str]:
    """What is wrong with the URLs of a split model: every part once, in order, one model.

    >>> split_problems(["http://h/a-00001-of-00002.gguf", "http://h/a-00002-of-00002.gguf"])
    []
    >>> split_problems(["http://h/a-00001-of-00003.gguf", "http://h/a-00002-of-00003.gguf"])
    ['a split in 3 parts needs 3 entries, in order; the list has 2']
    >>> split_problems(["http://h/a.gguf", "http://h/b.gguf"])
    ["entry 1 ends in 'a.gguf', not in a part name like 'model-00001-of-00002.gguf'"]
    """
    if len(urls) == 1 and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.gguf", url_name(urls[0]) or ""):
        return []  # one ordinary GGUF file
    parts = []
    for i, url in enumerate(urls, 1):
        match = SPLIT_RE.match(url_name(url))
        if not match or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", match["stem"]):
            return [f"entry {i} ends in {url_name(url)!r}, not in a part name like 'model-00001-of-00002.gguf'"]
        parts.append(match)
    count = int(parts[0]["count"])
    if len(parts) != count:
        return [f"a split in {count} parts needs {count} entries, in order; the list has {len(parts)}"]
    for i, match in enumerate(parts, 1):
        if (match["stem"], int(match["no"]), int(match["count"])) != (parts[0]["stem"], i, count):
            return [f"entry {i} is {url_name(urls[i - 1])!r}; expected {parts[0]['stem']}-{i:05d}-of-{count:05d}.gguf"]
    return []


def download_script(url: str, sha256: str, dest: str, variable: str = "model_sha256",
                    every_s: int = PROGRESS_EVERY_S, token_file: str | None = None) -> str:
    """Download `url` to `dest` through `<dest>.part` (resumed), check free disk and the sha256, then
    move it into place and write the stamp. `variable` names the sha256's setting in messages; a
    progress line (bytes, total, rate) comes every `every_s` seconds. With `token_file`, curl reads
    an Authorization header made from it when it runs (through a pipe: the token is in no argument,
    script or log; curl does not send it on to another host of a redirect)."""
    auth = ""
    if token_file is not None:
        auth = """ -H @<(printf 'Authorization: Bearer %s\\n' "$(head -n 1 "$token" | tr -d '\\r\\n ')")"""
    return f"""set -uo pipefail
token={shlex.quote(token_file or "")}
dest={shlex.quote(dest)} url={shlex.quote(url)} want={sha256} variable={shlex.quote(variable)}
part="$dest.part" name=$(basename "$dest")
human() {{ numfmt --to=iec-i --suffix=B "$1" 2>/dev/null || echo "$1 bytes"; }}
size() {{ stat -c %s "$part" 2>/dev/null || echo 0; }}
# the size the server announces (the last Content-Length after redirects), then free disk space
total=$(curl -sSLfI -m 30{auth} "$url" 2>/dev/null | tr -d '\\r' | awk 'tolower($1)=="content-length:" {{n=$2}} END {{print n+0}}')
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
    curl -sSLf --connect-timeout 30{auth} -C - -o "$part" "$url" &
    pid=$! last=$have next=$(( $(date +%s) + {every_s} ))
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        if [ "$(date +%s)" -ge "$next" ]; then
            got=$(size)
            echo "$name: $(human "$got") of $( [ "$total" -gt 0 ] && human "$total" || echo '?') at $(human $(( (got - last) / {every_s} )))/s"
            last=$got next=$(( next + {every_s} ))
        fi
    done
    if wait "$pid"; then break; fi
    if [ "$attempt" -ge {ATTEMPTS} ]; then
        echo "downloading $url failed {ATTEMPTS} times; $(human "$(size)") of it are kept in $part: run again to resume" >&2
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
"""
