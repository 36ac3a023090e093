"""`exaclimate classify report`: the talk's accuracy table beside ours, printed and written as Markdown."""
from __future__ import annotations

import json
from pathlib import Path

from exascale_climate.classify.study import METHOD_NAMES, METHODS, PATTERNS


def collect(runs_dir: str | Path) -> dict[tuple[str, str], dict]:
    """{(pattern, method): result.json} of every run under `runs_dir` (any depth)."""
    out = {}
    for path in sorted(Path(runs_dir).rglob("result.json")):
        r = json.loads(path.read_text())
        out[(r["pattern"], r["method"])] = r
    return out


def _cell(pair) -> str:
    return f"{pair[0]:.2f} / {pair[1]:.2f}" if pair else "-"


def _seconds(r: dict | None) -> str:
    """Tune + fit + test wall time; the process CPU time in brackets when recorded."""
    if not r:
        return "-"
    wall = f"{r['tune_seconds'] + r['fit_seconds'] + r.get('predict_seconds', 0):.0f}"
    return wall + (f" ({r['cpu_seconds']:.0f})" if r.get("cpu_seconds") is not None else "")


def _ours(r: dict | None):
    if not r or "test_accuracy" not in r:
        return None
    return 100 * r["train_accuracy"], 100 * r["test_accuracy"]


def table(results: dict) -> str:
    """Markdown: per pattern, the talk's and our train / test accuracy (%) per method, and our wall times."""
    lines = ["| pattern | source | " + " | ".join(METHOD_NAMES[m] for m in METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]
    for key, pattern in PATTERNS.items():
        lines.append(f"| {key.upper()} | talk (2017) | " + " | ".join(_cell(pattern.paper[m]) for m in METHODS) + " |")
        lines.append(f"| {key.upper()} | ours | " + " | ".join(_cell(_ours(results.get((key, m)))) for m in METHODS)
                     + " |")
        times = [results.get((key, m)) for m in METHODS]
        lines.append(f"| {key.upper()} | our wall time, s (CPU s of tune + fit) | " + " | ".join(
            _seconds(r) for r in times) + " |")
    counts = []
    for key in PATTERNS:
        r = next((results[(key, m)] for m in METHODS if (key, m) in results and "test_examples" in results[(key, m)]),
                 None)
        if r:
            counts.append(f"{key.upper()}: train {r['train_examples']} ({r['train_positives']} +), "
                          f"test {r['test_examples']} ({r['test_positives']} +)")
    note = ("\nAccuracy in % (train / test). Our examples: " + "; ".join(counts) + ".\n") if counts else "\n"
    return "\n".join(lines) + "\n" + note


def order(results: dict, pattern: str) -> tuple[list[str], list[str]]:
    """Methods by test accuracy, best first: (the talk's, ours)."""
    paper = sorted(METHODS, key=lambda m: -PATTERNS[pattern].paper[m][1])
    ours = sorted((m for m in METHODS if _ours(results.get((pattern, m)))),
                  key=lambda m: -results[(pattern, m)]["test_accuracy"])
    return paper, ours


def write_report(runs_dir: str | Path, out: str | Path | None) -> str:
    from exascale_climate.utils.io import atomic_write_text

    results = collect(runs_dir)
    text = table(results)
    orders = []
    for key in PATTERNS:
        paper, ours = order(results, key)
        if ours:
            orders.append(f"- {key.upper()}: talk {' > '.join(paper)}; ours {' > '.join(ours)}")
    if orders:
        text += "\nOrdering by test accuracy:\n" + "\n".join(orders) + "\n"
    if out:
        atomic_write_text(out, "# The 2017 patch study: the talk's table and ours\n\n"
                          "Written by `exaclimate classify report`.\n\n" + text)
    return text
