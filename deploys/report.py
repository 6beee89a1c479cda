"""Reporting judged rows (deploys/checks.py): a table per host, the summary of the cluster (text,
Markdown or JSON), and for the check steps printing rows and failing the host on a FAIL.

    print(table(report))                              # "halo1: PASS" then one line per row
    entries = summary(reports); print(summary_text(entries))
    act_on(rows, "Fail: kernel too old")              # in a step: warn, print, fail the host

The verify suite (tests/verify) writes its summary with the same functions.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from pyinfra import host, logger

from deploys.checks import Report, Row
from deploys.common import fail_host, warn


def table(report: Report) -> str:
    """The rows of one host, aligned, each not-ok row followed by why.

    >>> print(table(Report("halo1", [Row("kernel", "6.18.4"), Row("IOMMU", "on", "FAIL", "run deploys/grub.py")])))
    halo1: FAIL
      kernel  ok    6.18.4
      IOMMU   FAIL  on
                    -> run deploys/grub.py
    """
    width = max(len(r.subject) for r in report.rows)
    lines = [f"{report.host}: {'PASS' if not report.failures else 'FAIL'}"]
    for r in report.rows:
        lines.append(f"  {r.subject:<{width}}  {r.verdict:<4}  {r.value}")
        if r.why:
            lines.append(f"  {'':<{width}}        -> {r.why}")
    return "\n".join(lines)


# --- the summary: one line per host ------------------------------------------------------------

REPORT_ENV = "HALO_VERIFY_REPORT"
# Summary columns: heading, and the row subjects whose values (up to any " (") and verdicts it shows.
SUMMARY_COLUMNS = (
    ("GTT", ("GTT",)),
    ("VRAM carve-out", ("VRAM carve-out",)),
    ("pages_limit", ("TTM pages_limit",)),
    ("kernel", ("kernel",)),
    ("firmware", ("firmware", "MES firmware")),
    ("ROCm", ("ROCm",)),
    ("llama.cpp build", ("llama.cpp", "same build")),
    ("RPC ports", ("RPC",)),
    ("head health", ("head",)),
)
_VERDICT_ORDER = ("ok", "info", "WARN", "FAIL")


def summary(reports: list[Report], results: dict[str, str] | None = None) -> list[dict]:
    """One entry per host: host, result (PASS/FAIL; `results` overrides it), a cell per column, all rows.

    >>> summary([Report("halo1", [Row("GTT", "120.00 GiB (wanted 120 GiB: ttm_gib)")])])[0]["cells"]["GTT"]
    {'value': '120.00 GiB', 'verdict': 'ok'}
    """
    entries = []
    for report in reports:
        cells = {}
        for heading, subjects in SUMMARY_COLUMNS:
            rows = [r for r in report.rows if r.subject in subjects]
            cells[heading] = {
                "value": "; ".join(r.value.split(" (")[0] for r in rows) or "-",
                "verdict": max((r.verdict for r in rows), key=_VERDICT_ORDER.index, default="-"),
            }
        result = (results or {}).get(report.host) or ("FAIL" if report.failures else "PASS")
        entries.append({"host": report.host, "result": result, "cells": cells,
                        "rows": [asdict(r) for r in report.rows]})
    return entries


def _cell(cell: dict) -> str:
    return cell["value"] + (f" {cell['verdict']}" if cell["verdict"] in ("WARN", "FAIL") else "")


def summary_text(entries: list[dict]) -> str:
    """The summary as a plain table, for a terminal."""
    table = [["host", *(h for h, _ in SUMMARY_COLUMNS), "result"]]
    table += [[e["host"], *(_cell(e["cells"][h]) for h, _ in SUMMARY_COLUMNS), e["result"]] for e in entries]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def summary_markdown(entries: list[dict]) -> str:
    """The summary as a Markdown table, then each host's rows that are not ok, with the fix."""
    lines = ["| host | " + " | ".join(h for h, _ in SUMMARY_COLUMNS) + " | result |",
             "|---" * (len(SUMMARY_COLUMNS) + 2) + "|"]
    for e in entries:
        cells = " | ".join(_cell(e["cells"][h]) for h, _ in SUMMARY_COLUMNS)
        lines.append(f"| {e['host']} | {cells} | **{e['result']}** |")
    notes = [f"- {e['host']}: {r['subject']} {r['verdict']} {r['value']}: {r['why']}"
             for e in entries for r in e["rows"] if r["verdict"] in ("WARN", "FAIL")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_summary(path: str, entries: list[dict]) -> None:
    """Markdown when `path` ends in .md, else JSON."""
    text = summary_markdown(entries) if path.endswith(".md") else json.dumps({"hosts": entries}, indent=1) + "\n"
    Path(path).write_text(text)


def act_on(rows: list[Row], failure: str) -> None:
    """Print each row for the current host (WARN rows as warnings); FAIL rows fail the host, named `failure`."""
    for row in rows:
        line = f"{row.subject} {row.verdict}: {row.value}" + (f" -> {row.why}" if row.why else "")
        if row.verdict == "WARN":
            warn(line)
        else:
            logger.info(f"{host.name}: {line}")
    failures = [r for r in rows if r.verdict == "FAIL"]
    if failures:
        fail_host(failure, "; ".join(f"{r.subject} {r.value}: {r.why}" for r in failures))
