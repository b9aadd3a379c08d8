"""One self-contained HTML page of a run: ``tir-agent report RUN -o report.html``.

RUN is what ``tir-agent restore --report`` (or ``--trajectory DIR``), ``tir-agent eval`` or
``tir-agent train rl|sft`` left. The page opens offline: every image is embedded (thumbnails for the
steps, a larger input and result for the before/after comparison), the styles and the one script
(the comparison's slider) are inline, nothing is fetched. For each restored image: the input, every
step in order with its thumbnail, tool and model, the parameters actually used, the metrics after
the step, run time and queue wait, steps off the final path marked as explored and rolled back,
and the result beside the input with a slider to compare them. For an eval run, the tables per
group and the quality-against-tool-calls plot first, each policy's row linking to its images. For
a training run, the trends as plots (made by the caller, passed as PNG files).
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from tiragent.errors import TirAgentError

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1300px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-top:1px solid #ddd;padding-top:.8em}
.meta{color:#666;font-size:.9em}
.steps{display:flex;flex-wrap:wrap;gap:.8em;margin:.8em 0}
.step{border:1px solid #ccc;border-radius:6px;padding:.4em;width:210px;font-size:.8em;background:#fff}
.step img{width:100%;border-radius:3px}
.step.explored{opacity:.55;border-style:dashed}
.step.failed{border-color:#c33;background:#fff4f4}
.step .tool{font-weight:600}
.tag{display:inline-block;padding:0 .4em;border-radius:3px;background:#eee;font-size:.85em}
.compare{position:relative;display:inline-block;max-width:100%;--pos:50%}
.compare img{display:block;max-width:100%}
.compare .after{position:absolute;top:0;left:0;clip-path:inset(0 calc(100% - var(--pos)) 0 0)}
.compare input{width:100%}
.pair{display:flex;gap:1em;flex-wrap:wrap;align-items:flex-start}
.pair figure{margin:0}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
td:first-child,th:first-child{text-align:left}
"""


def _data_uri(path: Path) -> str:
    kind = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}.get(path.suffix.lower(), "png")
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode()


EMBED_UP_TO = 20
"""Runs of at most this many images embed their images (one file that travels alone); larger ones link the image
files beside the page (relative paths, loaded lazily), so that a page of hundreds of images stays small and fast."""


class Images:
    """How the page refers to image files: embedded as data URIs, or linked relative to the page."""

    def __init__(self, page: Path | None, embed: bool) -> None:
        self.page, self.embed = page, embed

    def src(self, path: Path) -> str:
        if self.embed or self.page is None:
            return _data_uri(path)
        return html.escape(Path(os.path.relpath(path.resolve(), self.page.resolve().parent)).as_posix())


    def img(self, folder: Path, name: str | None, alt: str, cls: str = "") -> str:
        if not name or not (folder / name).is_file():
            return f'<div class="meta">({html.escape(alt)}: no image)</div>'
        return f'<img class="{cls}" src="{self.src(folder / name)}" alt="{html.escape(alt)}" loading="lazy">'


EMBEDDED = Images(None, True)


def _numbers(values: dict[str, Any]) -> str:
    return ", ".join(f"{html.escape(str(k))} {v:.3g}" if isinstance(v, (int, float)) else f"{html.escape(str(k))} {html.escape(str(v))}"
                     for k, v in values.items())  # fmt: skip


def trajectory_section(record: dict[str, Any], folder: Path, anchor: str, images: Images = EMBEDDED) -> str:
    """One restored image: its steps in order, then the input and the result with a comparison slider."""
    path = set(record.get("path", []))
    title = html.escape(Path(str(record.get("input", anchor))).name or anchor)
    files = record.get("files", {})
    parts = [f'<section class="image" id="{html.escape(anchor)}"><h2>{title}</h2>',
             f'<div class="meta">policy {html.escape(str(record.get("policy", "")))}: {record.get("tool_calls", len(record["steps"]))} tool calls, '
             f'{record.get("seconds", 0):.1f} s; {html.escape(str(record.get("stop_reason", "")))}</div>', '<div class="steps">',
             f'<div class="step input"><div class="tool">input</div>{images.img(folder, files.get("input"), "input")}'
             f'<div>{_numbers(record.get("original_metrics", {}))}</div></div>']  # fmt: skip
    for step in record["steps"]:
        failed = step.get("error") is not None
        state = "failed" if failed else ("kept" if step["index"] in path else "explored")
        label = {"kept": "on the path", "explored": "explored, rolled back", "failed": "failed"}[state]
        parts.append(
            f'<div class="step {state}" data-index="{step["index"]}" data-tool="{html.escape(step["task"])}.{html.escape(step["model"])}">'
            f'<div class="tool">{step["index"] + 1}. {html.escape(step["task"])}.{html.escape(step["model"])}</div>'
            f'<span class="tag">{label}</span>{images.img(folder, step.get("thumbnail"), step["task"])}'
            f'<div>params: {_numbers(step.get("params", {})) or "defaults"}</div>'
            f'<div>metrics: {_numbers(step.get("metrics", {})) or "-"}</div>'
            f'<div>{step.get("seconds", 0) * 1000:.0f} ms, queue {step.get("queue_wait_seconds", 0) * 1000:.0f} ms</div>'
            + (f'<div>error: {html.escape(str(step["error"]))}</div>' if failed else "") + "</div>"
        )
    parts.append("</div>")
    if files.get("input") and files.get("result"):
        before, after = images.img(folder, files["input"], "input"), images.img(folder, files["result"], "result", "after")
        parts.append(
            f'<div class="pair"><figure>{before}<figcaption>input</figcaption></figure>'
            f'<figure>{images.img(folder, files["result"], "result")}<figcaption>result</figcaption></figure>'
            f'<figure><div class="compare">{before}{after}'
            f'<input type="range" min="0" max="100" value="50" aria-label="before / after" '
            f"oninput=\"this.parentNode.style.setProperty('--pos', this.value + '%')\"></div>"
            f"<figcaption>drag: input (right) against result (left)</figcaption></figure></div>"
        )
    parts.append("</section>")
    return "".join(parts)


def find_trajectories(run: Path) -> list[tuple[dict[str, Any], Path]]:
    """Trajectory files under ``run`` (any depth), each with the folder its image paths are relative to."""
    found = []
    for path in sorted(Path(run).rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("steps"), list) and "original_id" in data:
            found.append((data, path.parent))
    return found


def page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>' + "".join(body) + "</body></html>")  # fmt: skip


def _images(count: int, out: Path | None, embed: bool | None) -> Images:
    return Images(out, count <= EMBED_UP_TO if embed is None else embed)


def restore_report(run: Path, title: str | None = None, out: Path | None = None, embed: bool | None = None) -> str:
    """``out``: where the page will be written (image links are relative to it); ``embed``: default by the run's size."""
    records = find_trajectories(run)
    if not records:
        raise TirAgentError(f"{run}: no trajectories found: restore with --report (or --trajectory DIR) to record them")
    images = _images(len(records), out, embed)
    body = [f'<p class="meta">{len(records)} image(s) from <code>{html.escape(str(run))}</code>.</p>']
    body += [trajectory_section(r, folder, f"image-{i}", images) for i, (r, folder) in enumerate(records)]
    return page(title or "tir-agent restore", body)


def eval_report(run: Path, title: str | None = None, out: Path | None = None, embed: bool | None = None) -> str:
    from tiragent.eval.report import COLUMNS, _groups

    results = json.loads((Path(run) / "results.json").read_text())
    table, records = results["table"], results["records"]
    found = find_trajectories(run)
    images = _images(len(found), out, embed)
    trajectories = {(r.get("policy"), Path(str(r.get("input", ""))).name): (r, f) for r, f in found}
    body = []
    for group in _groups(table):
        body.append(f"<h2>{'Overall' if group == 'all' else 'Group ' + html.escape(group)}</h2><table><tr><th>policy</th>"
                    + "".join(f"<th>{c[1]}</th>" for c in COLUMNS) + "</tr>")  # fmt: skip
        for policy, groups in table.items():
            if group in groups:
                row = groups[group]
                link = f'<a href="#policy-{html.escape(policy)}">{html.escape(policy)}</a>'
                body.append(f"<tr><td>{link}</td>" + "".join(f"<td>{row[k]:.{d}f}</td>" if k in row else "<td>-</td>" for k, _, d in COLUMNS) + "</tr>")
        body.append("</table>")
    plot = Path(run) / "quality_vs_calls.png"
    if plot.is_file():
        body.append(f'<h2>Quality against tool calls</h2><img src="{_data_uri(plot)}" alt="quality against tool calls" style="max-width:100%">')
    for policy in table:
        body.append(f'<h2 id="policy-{html.escape(policy)}">{html.escape(policy)}</h2>')
        mine = [r for r in records if r["policy"] == policy]
        for i, record in enumerate(mine):
            found = trajectories.get((policy, record["name"]))
            scores = _numbers({k: record[k] for k, _, _ in COLUMNS if k in record})
            body.append(f'<p class="meta">{html.escape(record["name"])} ({html.escape(record.get("combination", ""))}): {scores}</p>')
            if found:
                body.append(trajectory_section(found[0], found[1], f"{policy}-{i}", images))
    return page(title or "tir-agent eval", body)


def training_report(run: Path, plots: list[Path], title: str | None = None) -> str:
    body = [f'<p class="meta">The trends logged in <code>{html.escape(str(run))}</code>.</p>']
    body += [f'<figure><img src="{_data_uri(p)}" alt="{html.escape(p.stem)}" style="max-width:100%"><figcaption>{html.escape(p.stem)}</figcaption></figure>'
             for p in plots]  # fmt: skip
    return page(title or "tir-agent training run", body)
