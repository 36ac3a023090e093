"""`exaclimate classify report`: the talk's accuracy table beside ours, printed and written as Markdown."""
from __future__ import annotations

import json
from pathlib import Path

from exascale_climate.classify.study import METHOD_NAMES, METHODS, PATTERNS

NOTES_MARKER = "<!-- notes: kept by `exaclimate classify report` -->"


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
    """Features + tune + fit + test wall time; in brackets, when recorded, the training process's CPU time (all threads)
    from the features to the final fit and its training-accuracy pass: what other jobs on the machine hardly change."""
    if not r:
        return "-"
    wall = r.get("features_seconds", 0) + r["tune_seconds"] + r["fit_seconds"] + r.get("predict_seconds", 0)
    return f"{wall:.0f}" + (f" ({r['cpu_seconds']:.0f})" if r.get("cpu_seconds") is not None else "")


def _budget(r: dict | None) -> str:
    """Trials run (of the cap), the examples a trial fits, and the baselines' features."""
    if not r:
        return "-"
    out = f"{r.get('trials_run', r['trials'])}/{r['trials']} trials"
    if r.get("tune_fit_examples"):
        out += f" on {r['tune_fit_examples']}"
    if r.get("features", "pixels") != "pixels":
        out += f", {r['features'].upper()}"
    return out


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
        lines.append(f"| {key.upper()} | our wall time, s (CPU s of the training process) | " + " | ".join(
            _seconds(r) for r in times) + " |")
        lines.append(f"| {key.upper()} | our tuning | " + " | ".join(_budget(r) for r in times) + " |")
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
        kept = ""  # hand-written notes below the marker survive a re-run of the report
        if Path(out).is_file() and NOTES_MARKER in Path(out).read_text():
            kept = "\n" + NOTES_MARKER + Path(out).read_text().split(NOTES_MARKER, 1)[1]
        atomic_write_text(out, "# The 2017 patch study: the talk's table and ours\n\n"
                          "Written by `exaclimate classify report`.\n\n" + text + kept)
    return text
