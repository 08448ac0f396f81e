"""A run as one self-contained HTML page (`vidiff report RUN --out report.html`).

Everything is inside the file: the loss curves as inline SVG (overall, each noise-level bin,
the held-out validation loss), every sample grid of the run as a playable video (the mp4 as
a data URI, its GIF beside it), the config, the eval reports found in the run folder
(``*.json`` files with a ``"metrics"`` or ``"fvd"`` key, and ``eval/``), and the machine
(``environment.json``, written by the run at its start). No script, no network, no server:
any browser opens it from disk.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

__all__ = ["build_report", "read_log", "svg_lines"]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]


def read_log(run: Path) -> list[dict]:
    """The records of ``run/log.jsonl`` (lines that are not whole records skipped)."""
    path = run / "log.jsonl"
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def svg_lines(title: str, series: dict[str, list[tuple[float, float]]], log_y: bool = True,
              width: int = 640, height: int = 260) -> str:
    """An inline SVG line chart of named (x, y) series; y on a log scale when all y > 0."""
    points = [(x, y) for s in series.values() for x, y in s if y is not None]
    if not points:
        return f"<p class='empty'>{html.escape(title)}: no data</p>"
    log_y = log_y and all(y > 0 for _, y in points)

    def fy(y):
        return math.log10(y) if log_y else y

    xs, ys = [x for x, _ in points], [fy(y) for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    left, top, right, bottom = 60, 24, width - 150, height - 30

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (right - left),
                bottom - (fy(y) - y0) / (y1 - y0) * (bottom - top))

    parts = [f"<svg class='chart' width='{width}' height='{height}' "
             f"xmlns='http://www.w3.org/2000/svg'>",
             f"<text x='{left}' y='16' class='title'>{html.escape(title)}</text>",
             f"<rect x='{left}' y='{top}' width='{right - left}' height='{bottom - top}' "
             f"fill='none' stroke='#ccc'/>"]
    for value, label in ((y0, "low"), (y1, "high")):
        shown = 10 ** value if log_y else value
        y = bottom if label == "low" else top
        parts.append(f"<text x='4' y='{y + 4:.0f}' class='tick'>{shown:.3g}</text>")
    parts.append(f"<text x='{left}' y='{height - 8}' class='tick'>step {x0:g}</text>")
    parts.append(f"<text x='{right - 60}' y='{height - 8}' class='tick'>{x1:g}</text>")
    for k, (name, data) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        coords = " ".join(f"{a:.1f},{b:.1f}" for a, b in (px(x, y) for x, y in data
                                                          if y is not None))
        if coords:
            parts.append(f"<polyline class='series' data-name='{html.escape(name)}' "
                         f"points='{coords}' fill='none' stroke='{color}' stroke-width='1.5'/>")
        parts.append(f"<text x='{right + 8}' y='{top + 14 * k + 10}' fill='{color}' "
                     f"class='legend'>{html.escape(name)}</text>")
    return "".join(parts) + "</svg>"


def _curves(records: list[dict]) -> str:
    """The three charts: the loss, the loss by level, the held-out loss by level."""
    loss = {"loss": [(r["step"], r.get("loss")) for r in records]}
    if any("val_loss" in r for r in records):
        loss["val_loss"] = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    out = [svg_lines("loss", loss)]
    for key, title in (("loss_by_level", "loss by noise level (bins of the level)"),
                       ("val_loss_by_level", "held-out loss by noise level")):
        rows = [r for r in records if r.get(key)]
        if not rows:
            continue
        n = len(rows[-1][key])
        names = ([f"{k / n:.2g}-{(k + 1) / n:.2g}" for k in range(n)] if key == "loss_by_level"
                 else [f"u={(k + 0.5) / n:.3g}" for k in range(n)])
        out.append(svg_lines(title, {name: [(r["step"], r[key][k]) for r in rows
                                            if len(r[key]) == n]
                                     for k, name in enumerate(names)}))
    return "\n".join(out)


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _samples(run: Path) -> str:
    """Each sample grid (samples/step_*.mp4) as a video, its GIF beside it."""
    grids = sorted((run / "samples").glob("step_*.mp4")) if (run / "samples").is_dir() else []
    if not grids:
        return "<p class='empty'>no sample grids</p>"
    parts = []
    for mp4 in grids:
        gif = mp4.with_suffix(".gif")
        step = int(mp4.stem.split("_")[1])
        parts.append(f"<figure class='grid' data-step='{step}'><figcaption>step {step}"
                     f"</figcaption><video controls loop muted autoplay "
                     f"src='{_data_uri(mp4, 'video/mp4')}'></video>"
                     + (f"<img alt='step {step}' src='{_data_uri(gif, 'image/gif')}'>"
                        if gif.is_file() else "") + "</figure>")
    return "\n".join(parts)


def _evals(run: Path) -> str:
    """The eval reports found in the run folder, as JSON."""
    found = []
    for path in sorted([*run.glob("*.json"), *run.glob("eval/**/*.json")]):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ({"metrics", "fvd"} & set(data) or "eval" in path.parts):
            found.append(f"<h3>{html.escape(str(path.relative_to(run)))}</h3>"
                         f"<pre>{html.escape(json.dumps(data, indent=2))}</pre>")
    return "\n".join(found) or "<p class='empty'>no eval reports (vidiff eval --out)</p>"


def _json_block(path: Path, missing: str) -> str:
    if not path.is_file():
        return f"<p class='empty'>{html.escape(missing)}</p>"
    return f"<pre>{html.escape(path.read_text(encoding='utf-8', errors='replace'))}</pre>"


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;margin-top:1.6em}
.chart{display:block;margin:.6em 0}.title{font-weight:bold;font-size:13px}
.tick,.legend{font-size:11px}.grid{display:inline-block;margin:.4em}
.grid video,.grid img{image-rendering:pixelated;width:320px;margin-right:.3em}
pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:24em;font-size:12px}
.empty{color:#888}"""


def build_report(run: str | Path) -> str:
    """The HTML page of the run folder `run` (module doc); a FileNotFoundError naming what is
    missing when `run` has no log.jsonl."""
    run = Path(run)
    if not (run / "log.jsonl").is_file():
        raise FileNotFoundError(f"{run} holds no log.jsonl: not a vidiff run folder")
    records = read_log(run)
    last = records[-1] if records else {}
    summary = (f"{len(records)} log records, last step {last.get('step', '-')}, loss "
               f"{last.get('loss', float('nan')):.4g}" if records else "no records yet")
    if "val_loss" in last:
        summary += f", held-out loss {last['val_loss']:.4g}"
    return "\n".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>vidiff run {html.escape(run.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>vidiff run <code>{html.escape(str(run))}</code></h1>",
        f"<p id='summary'>{html.escape(summary)}</p>",
        f"<h2>Loss</h2><section id='curves'>{_curves(records)}</section>",
        f"<h2>Samples</h2><section id='samples'>{_samples(run)}</section>",
        f"<h2>Evaluations</h2><section id='evals'>{_evals(run)}</section>",
        "<h2>Machine</h2><section id='machine'>"
        + _json_block(run / "environment.json", "no environment.json (an older run)")
        + "</section>",
        "<h2>Config</h2><section id='config'>"
        + _json_block(run / "config.json", "no config.json") + "</section>",
        "</body></html>"])
