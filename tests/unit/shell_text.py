"""What a POSIX shell makes of a command's text, character by character: which characters reach the
command as data (quoted, escaped, or plain characters in a word) and which the shell acts on ($, `,
;, |, quotes, spaces...). Enough of sh/bash for the commands halo-provision generates: quotes,
backslashes, comments, $(...) and `...` nesting, and here-documents (quoted or not).

    >>> literal_text("echo 'a $b' \\"$c\\" d\\\\;e")
    'echo a $b $c d;e'
    >>> data_spans("echo 'a $b' \\"$c\\"", "$b"), data_spans("echo 'a $b' \\"$c\\"", "$c")
    ([True], [False])

`scripts(text)` lists the scripts a command hands to another shell (`bash -c '<script>'`), which
must be judged again on their own.
"""

from __future__ import annotations

import re

# Characters the shell acts on when they stand unquoted in a word; everything else is plain data.
_ACTIVE = set("|&;<>()$`\\\"' \t\n*?[#~{}")
_HEREDOC = re.compile(r"<<(-?)[ \t]*((?:'[^'\n]*'|\"[^\"\n]*\"|\\?[A-Za-z0-9_]+)+)")


def scan(text: str) -> list[tuple[str, bool]]:
    """(character, reaches the command as data) for each character the shell keeps (quotes and
    escaping backslashes removed)."""
    out: list[tuple[str, bool]] = []
    # frames: "n" (unquoted, maybe inside $( )), "d" (double quotes), "b" (inside backticks)
    stack = ["n"]
    depth = [0]  # open parentheses per unquoted frame
    pending: list[tuple[str, bool]] = []  # here-documents opened on this line: (delimiter, quoted)
    i = 0
    while i < len(text):
        c = text[i]
        state = stack[-1]
        if c == "\n" and pending and state == "n":
            out.append((c, False))
            i += 1
            for delimiter, quoted in pending:
                while i < len(text):
                    end = text.find("\n", i)
                    end = len(text) if end < 0 else end
                    line = text[i:end]
                    i = end + 1
                    if line.strip("\t") == delimiter:
                        break
                    for ch in line + "\n":  # an unquoted body expands $ and ` as in double quotes
                        out.append((ch, quoted or ch not in "$`\\"))
            pending = []
            continue
        if state in ("n", "b"):
            if c == "\\" and i + 1 < len(text):
                if text[i + 1] != "\n":
                    out.append((text[i + 1], True))
                i += 2
                continue
            if c == "'":
                end = text.index("'", i + 1)
                out.extend((ch, True) for ch in text[i + 1:end])
                i = end + 1
                continue
            if c == '"':
                stack.append("d")
                i += 1
                continue
            if c == "#" and (i == 0 or text[i - 1] in " \t\n;&|("):
                end = text.find("\n", i)
                end = len(text) if end < 0 else end
                out.extend((ch, True) for ch in text[i:end])  # a comment: never run
                i = end
                continue
            if text.startswith("<<", i) and not text.startswith("<<<", i):
                match = _HEREDOC.match(text, i)
                if match:
                    word = match[2]
                    pending.append((re.sub(r"[\\'\"]", "", word), any(q in word for q in "'\"\\")))
                    out.extend((ch, False) for ch in match[0])
                    i = match.end()
                    continue
        if c == "$" and text.startswith("$(", i) and state != "b":
            stack.append("n")
            depth.append(0)
            out.extend((("$", False), ("(", False)))
            i += 2
            continue
        if c == "`":
            if state == "b":
                stack.pop()
            else:
                stack.append("b")
            out.append((c, False))
            i += 1
            continue
        if state == "d":
            if c == "\\" and i + 1 < len(text) and text[i + 1] in '$`"\\\n':
                if text[i + 1] != "\n":
                    out.append((text[i + 1], True))
                i += 2
                continue
            if c == '"':
                stack.pop()
                i += 1
                continue
            out.append((c, c not in "$`"))
            i += 1
            continue
        if c == "(":
            depth[-1] += 1
        elif c == ")":
            if depth[-1] == 0 and len(depth) > 1:
                depth.pop()
                stack.pop()
                out.append((c, False))
                i += 1
                continue
            depth[-1] -= 1
        out.append((c, c not in _ACTIVE))
        i += 1
    return out


def literal_text(text: str) -> str:
    """The characters the shell keeps, quotes and escapes removed."""
    return "".join(c for c, _ in scan(text))


def data_spans(text: str, value: str) -> list[bool]:
    """For each place `value` appears in what the shell keeps of `text`: does all of it reach the
    command as data (True), or does the shell act on a character of it (False)?"""
    kept = scan(text)
    chars = "".join(c for c, _ in kept)
    found, start = [], chars.find(value)
    while start >= 0:
        found.append(all(data for _, data in kept[start:start + len(value)]))
        start = chars.find(value, start + 1)
    return found


def words(text: str) -> list[str]:
    """The words of `text` as the shell splits them (unquoted blanks and ;&| end a word).

    >>> words("bash -c 'echo a; b' && x")
    ['bash', '-c', 'echo a; b', 'x']
    """
    result, word = [], ""
    for c, data in scan(text):
        if not data and c in " \t\n;&|":
            if word:
                result.append(word)
            word = ""
        else:
            word += c
    return result + ([word] if word else [])


def scripts(text: str) -> list[str]:
    """The scripts `text` hands to another shell: the word after `-c` of sh or bash."""
    found = []
    w = words(text)
    for i, word in enumerate(w[:-2]):
        if word.rsplit("/", 1)[-1] in ("sh", "bash") and w[i + 1] == "-c":
            found.append(w[i + 2])
    return found
