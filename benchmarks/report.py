"""Markdown tables and the JSON result file.

One table per row group; the columns are the union of the group's contenders, then its ratios
(``a/b`` = how many times better ``a`` is than ``b``: >1 means ``a`` is faster). A value
marked ``*`` is a median over rounds that other processes contended (too few clean rounds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GROUP_ORDER = (
    "throughput",
    "compile",
    "mfu-peak",
    "mfu",
    "quickstart",
    "quickstart-steps",
    "stacked",
    "hpo",
    "startup",
    "checkpoint",
)
GROUP_TITLES = {
    "throughput": "Train-step throughput",
    "compile": "Compile / first-round cost",
    "mfu-peak": "Matmul peak",
    "mfu": "Model FLOP utilisation",
    "quickstart": "Quickstart",
    "quickstart-steps": "Quickstart train steps",
    "stacked": "Stacked members and populations",
    "hpo": "HPO populations",
    "startup": "Start-up",
    "checkpoint": "Checkpoints",
}


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.01:
        return f"{v:.2f}"
    return f"{v:.2g}"


def _union(rows: list[dict], key: str) -> list[str]:
    out: list[str] = []
    for r in rows:
        out += [k for k in r[key] if k not in out]
    return out


def markdown(rows: list[dict]) -> str:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    order = [g for g in GROUP_ORDER if g in groups] + [g for g in groups if g not in GROUP_ORDER]
    parts = []
    for g in order:
        grp = groups[g]
        cols, ratios = _union(grp, "contenders"), _union(grp, "ratios")
        units = sorted({r["unit"] for r in grp})
        head = [f"{GROUP_TITLES.get(g, g)} ({', '.join(units)})", *cols, *ratios]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in grp:
            cells = [r["title"]]
            for c in cols:
                info = r["contenders"].get(c)
                mark = "*" if info and info.get("median_over_contended") else ""
                cells.append(fmt(info and info.get("value")) + mark)
            cells += [fmt(r["ratios"].get(k)) + ("x" if k in r["ratios"] else "") for k in ratios]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def not_run_table(entries: list[dict]) -> str:
    """Rows that did not run: ``[{"name", "status", "reason"}]`` (skipped, failed, interrupted)."""
    if not entries:
        return ""
    lines = ["| Not run | status | reason |", "|---|---|---|"]
    for e in entries:
        reason = str(e.get("reason", "")).replace("|", "/").replace("\n", " ")
        lines.append(f"| {e['name']} | {e['status']} | {reason[:200]} |")
    return "\n".join(lines)


def write_json(
    path: Path,
    env: dict,
    settings: dict,
    rows: list[dict],
    wall_s: float,
    extra: dict | None = None,
) -> None:
    """The result file, written atomically; ``extra`` adds top-level keys (the GPU check's
    ``not_run`` list and budget)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": 1,
        "environment": env,
        "settings": settings,
        "wall_seconds": wall_s,
        "rows": rows,
        **(extra or {}),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)
