"""Messages about host data: the one error sentence, values shown without secrets, the error that lists them.

    >>> message("halo2", "rpc_port", 80, "expected a port from 1024", "group_data/all.py")
    'halo2: rpc_port = 80 is invalid: expected a port from 1024. Fix it in group_data/all.py.'
"""

from __future__ import annotations

import json
import re
from typing import Any

from pyinfra.api.exceptions import PyinfraError

class SettingsError(PyinfraError):
    """Invalid halo-provision host data; the message lists every problem, one per line."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))

# Values never shown: a variable whose name says it holds a secret (an API key given inline, a token).
_SECRET_NAME_RE = re.compile(r"api_?key|token|secret|passw|credential", re.IGNORECASE)
_NOT_SECRET_SUFFIXES = ("_file", "_path", "_dir", "_sha256", "_url")
# In URLs: the userinfo before '@' (a password, or a token as the user name) and secret query parameters.
_URL_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
_URL_SECRET_QUERY_RE = re.compile(
    r"(?P<name>[?&;][^=&#\s'\"]*(?:token|key|secret|sig|passw|auth|credential)[^=&#\s'\"]*=)[^&#\s'\"]*",
    re.IGNORECASE,
)


def masked(text: str) -> str:
    """`text` with the secrets of the URLs in it replaced by ***, for messages and logs.

    >>> masked("https://x-access-token:ghs_abc@github.com/o/r?x=1&token=t0p")
    'https://x-access-token:***@github.com/o/r?x=1&token=***'
    >>> masked("https://hf_AbCdEf0123456789xyz@example.org/m.gguf ssh://git@host/repo")
    'https://***@example.org/m.gguf ssh://git@host/repo'
    """

    def userinfo(match: re.Match) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        if colon:
            return f"{match['scheme']}{user}:***@"
        if re.fullmatch(r"[a-z_][a-z0-9_.-]{0,15}", user):  # a plain user name such as git
            return match[0]
        return f"{match['scheme']}***@"

    return _URL_SECRET_QUERY_RE.sub(r"\g<name>***", _URL_USERINFO_RE.sub(userinfo, text))


def _is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME_RE.search(name)) and not name.endswith(_NOT_SECRET_SUFFIXES)


def shown_value(variable: str, value: Any) -> str:
    """`value` as a message shows it: repr, a secret variable's value hidden, URLs' secrets masked."""
    if _is_secret_name(variable) and value not in (None, True, False, "", [], {}):
        return "'<hidden>'"
    return masked(repr(value))


def message(host: str, variable: str, value: Any, detail: str, fix: str) -> str:
    return masked(f"{host}: {variable} = {shown_value(variable, value)} is invalid: {detail}. Fix it in {fix}.")



def command_line_list_hint(variable: str, value: Any) -> str:
    """How to give a list with --data, shown when pyinfra parsed one as a number or a plain string.

    >>> command_line_list_hint("head_tensor_split", "1,1").split("e.g. ")[1]
    "--data 'head_tensor_split=[1, 1]'"
    """
    if isinstance(value, str):
        items: list[Any] = [item.strip() for item in value.split(",") if item.strip()]
        if variable == "head_tensor_split":
            items = [json.loads(item) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", item) else item for item in items]
        kind = "a string"
    else:
        items, kind = [value], "True or False" if isinstance(value, bool) else "a number"
    example = json.dumps(items).replace("'", "")
    return (
        f"; pyinfra read --data {variable}={value} as {kind}, not a list: write the list in JSON and quote "
        f"it for the shell, e.g. --data '{variable}={example}'"
    )

