"""``report.html``: one static page of a report folder that opens from disk in any browser.

It is rendered from the files :func:`ddrm.report.build.build_report` wrote next to it: the tables of
``table.md``, the report's plots (embedded as base64, so the page can be moved, mailed or opened as an MLflow
artifact on its own), the per-seed values of ``runs.csv``, the configs (the settings that differ between
rows, and those every run shares) and ``best_config.yaml`` when the study was a search. No scripts, no
network.
"""

from __future__ import annotations

import base64
import html
import numbers
import re
from pathlib import Path

import pandas as pd

SEED_METRICS = ("test_recall_at_20", "test_ndcg_at_20", "test_recall_at_10", "test_ndcg_at_10",
                "best_recall_at_20", "best_epoch")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
code { background: #f3f3f3; padding: 0 0.2em; } .meta { color: #555; font-size: 0.9em; }
"""


def _inline(text: str) -> str:
    """Escape ``text`` and turn Markdown ``code`` spans into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _markdown_table(lines: list[str]) -> str:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    rows = [r for r in rows if not all(re.fullmatch(r":?-+:?", c) for c in r)]  # drop the |---| rule
    if not rows:
        return ""
    head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def markdown_to_html(text: str) -> str:
    """The small Markdown subset ``table.md`` uses: ``#`` headings, paragraphs, pipe tables, ``code``."""
    parts, table = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        if table:
            parts.append(_markdown_table(table))
            table = []
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 1)  # "# x" sits under the page's <h1>
            parts.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            parts.append(f"<p>{_inline(line.strip())}</p>")
    return "\n".join(parts)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return '<td class="num"></td>' if pd.isna(value) else f'<td class="num">{value:.4f}</td>'
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def frame_to_html(frame: pd.DataFrame) -> str:
    """A plain HTML table of ``frame`` (floats with 4 decimals)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>"
                   for row in frame.itertuples(index=False, name=None))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _per_seed(runs: pd.DataFrame) -> str:
    metrics = [m for m in SEED_METRICS if m in runs.columns]
    metrics += sorted(c for c in runs.columns if c.startswith("diag_") and c.endswith("noise_auc"))
    columns = [c for c in ("model", "variant", "seed") if c in runs.columns] + metrics
    columns += [c for c in ("run_id",) if c in runs.columns]
    return frame_to_html(runs[columns])


def _configs(runs: pd.DataFrame) -> str:
    params = [c for c in runs.columns if c.startswith("param.") and c != "param.seed"]
    if not params:
        return "<p>No params logged.</p>"
    values = runs[params].astype(str)
    varying = [c for c in params if values[c].nunique() > 1]
    shared = [c for c in params if c not in varying]
    parts = []
    if varying:
        keys = [c for c in ("model", "variant") if c in runs.columns]
        table = runs[keys + varying].astype({c: str for c in varying}).drop_duplicates()
        table.columns = keys + [c.removeprefix("param.") for c in varying]
        parts.append("<p>Settings that differ between rows:</p>" + frame_to_html(table))
    if shared:
        table = pd.DataFrame({"key": [c.removeprefix("param.") for c in shared],
                              "value": [values[c].iloc[0] for c in shared]})
        parts.append(f"<details><summary>Settings every run shares ({len(shared)})</summary>"
                     f"{frame_to_html(table)}</details>")
    return "\n".join(parts)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def write_html(out: Path, title: str, plots: list[Path], best_config: Path | None = None, meta: str = "") -> Path:
    """Render the report in folder ``out`` (its ``table.md`` and ``runs.csv``, the given ``plots`` and
    ``best_config``) into ``out/report.html``; returns its path."""
    sections = [f"<h1>{html.escape(title)}</h1>"]
    if meta:
        sections.append(f'<p class="meta">{_inline(meta)}</p>')
    if (out / "table.md").is_file():
        text = "\n".join(line for line in (out / "table.md").read_text().splitlines()
                         if not line.startswith("# "))  # its title is the page's
        sections += ["<h2>Results</h2>", markdown_to_html(text)]
    if plots:
        sections += ["<h2>Plots</h2>", "\n".join(_image(p) for p in plots)]
    if (out / "runs.csv").is_file():
        runs = pd.read_csv(out / "runs.csv", dtype={"run_id": str})
        sections += ["<h2>Per-seed values</h2>", "<p>One row per run; <code>best_*</code> are the validation "
                     "metrics of the epoch chosen on validation Recall@20 (<code>best_epoch</code>), "
                     "<code>test_*</code> the test metrics there (none in a search: its trials score no test). "
                     "<code>runs.csv</code> has every metric, the runs' cost (<code>cost_*</code>) and every "
                     "param.</p>", _per_seed(runs), "<h2>Configs</h2>", _configs(runs)]
    if best_config is not None:
        sections += ["<h2>Best config</h2>", f"<pre>{html.escape(best_config.read_text())}</pre>"]
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(sections) + "\n</body></html>\n")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
