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
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from deploys import shipped

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
    """deploys/scripts/model-download.sh as one bash command: download `url` to `dest` through
    `<dest>.part` (resumed), check free disk and the sha256, then move it into place and write the stamp.
    `variable` names the sha256's setting in messages; a progress line (bytes, total, rate) comes every
    `every_s` seconds. With `token_file`, curl reads an Authorization header made from it when it runs."""
    env = {"HALO_URL": url, "HALO_SHA256": sha256, "HALO_DEST": dest, "HALO_VARIABLE": variable,
           "HALO_EVERY_S": str(every_s), "HALO_ATTEMPTS": str(ATTEMPTS), "HALO_TOKEN_FILE": token_file or ""}
    return str(shipped.script_command("model-download.sh", env))
