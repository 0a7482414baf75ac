"""``report.html``: one self-contained page about a run, to open in any browser from the run folder.

Written at the end of every run (and of every ``--validate``), and on demand while a run goes on with
``python orchestrate.py --report RUN_DIR``. Images are embedded as base64 data URIs and the styles are
inline, so the file can be mailed or copied on its own; the page loads nothing from anywhere. What it
shows is read by ``evolve.output.report_data``; this module only lays it out.
"""
from __future__ import annotations

import base64
import html
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from evolve.output.report_data import BOUND_EPS, ReportData, gather
from evolve.output.rundir import atomic_write_text

LOGGER = logging.getLogger(__name__)

REPORT_NAME = "report.html"
IMPORTANCE_SHOWN = 15  # the tail of a long importance list is noise

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.given{font-weight:bold}.note{color:#8a5300}.good{color:#176b1c}.muted{color:#777}
img{max-width:min(100%,800px);border:1px solid #eee;margin:.5em 0}
.bar{background:#4a7fc1;height:.8em;display:inline-block}
details{margin:.5em 0}
"""
# Tells, on the page itself, when an embedded image could not be decoded; a test reads the attribute back.
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  if (ok < imgs.length) { document.getElementById('broken').textContent =
    (imgs.length - ok) + ' image(s) could not be shown.'; }
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 5) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e(value)
    if not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            out.append(f"<td class=\"num\">{_num(cell)}</td>" if i in numeric else f"<td>{cell}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _image(name: str, data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f"<figure><img alt=\"{_e(alt)}\" src=\"data:image/png;base64,{encoded}\"><figcaption>{_e(name)}" \
           "</figcaption></figure>"


def _change(base: Any, value: Any) -> str:
    """``+25%`` (or ``+0.2`` from a base of 0, ``SGD -> AdamW`` for a choice), empty when unchanged."""
    if value is None or base is None or value == base:
        return ""
    try:
        b, v = float(base), float(value)
    except (TypeError, ValueError):
        return f"{_e(base)} &rarr; {_e(value)}"
    if math.isclose(b, v, rel_tol=1e-9, abs_tol=1e-12):
        return ""
    if not b:
        return f"{v - b:+.4g}"
    percent = (v - b) / abs(b) * 100
    return f"{percent:+.1f}%" if abs(percent) < 1 else f"{percent:+.0f}%"


def _hyps(d: ReportData) -> str:
    if d.best is None:
        return "<p class=\"note\">No trial has finished with a result yet.</p>"
    keys = d.evolved or list(d.best)
    head = ["key", "base", "best trial", "change"]
    if d.validated is not None:
        head += ["validated", "change"]
    rows = []
    for k in keys:
        base, best = d.base.get(k), d.best.get(k)
        row = [f"<code>{_e(k)}</code>", _num(base) if base is not None else "-", _num(best),
               _change(base, best)]
        if d.validated is not None:
            row += [_num(d.validated.get(k, "-")), _change(base, d.validated.get(k))]
        rows.append(row)
    best = d.best_row or {}
    intro = (f"<p>Best trial <code>{_e(best.get('trial_id', '?'))}</code> (generation "
             f"{_e(best.get('generation'))}, {_e(best.get('status'))}), fitness "
             f"<b>{_num(best.get('fitness'))}</b>: its evolved keys next to the base hyp's")
    intro += (" and the validated hyp's (<code>hyp_validated.yaml</code>)" if d.validated is not None else "")
    frozen = "" if not d.evolved else f"; the {len(d.best) - len(keys)} frozen keys are the base's"
    return intro + f"{frozen}.</p>" + _table(head, rows)


def _verdict(d: ReportData) -> str:
    if not d.verdict:
        return ("<p class=\"muted\">No validation yet (it runs after the last generation unless "
                "<code>--validate-top 0</code>; or: <code>python orchestrate.py --validate RUN_DIR</code>)."
                "</p>")
    out = "".join(f"<p><b>{_e(line)}</b></p>" if line.startswith("validated:") else f"<p>{_e(line)}</p>"
                  for line in d.verdict)
    if d.standings:
        rows = []
        for label, trial, trial_fitness, mean, sd, seeds, paired, chosen in d.standings:
            diff = "-" if paired is None else (f"{paired.mean:+.4f} [{paired.low:+.4f}, {paired.high:+.4f}]")
            rows.append((f"<b>{_e(label)}</b>" if chosen else _e(label), f"<code>{_e(trial or '-')}</code>",
                         trial_fitness, mean, f"{sd:.4f}", seeds, _e(diff)))
        out += ("<p>Paired difference to the base over the same seeds, with its 95% interval; the bold "
                "candidate is the one <code>hyp_validated.yaml</code> holds.</p>")
        out += _table(["candidate", "trial", "trial fitness", "validated mean", "sd", "seeds",
                       "difference to the base [95% interval]"], rows, numeric=(2, 3, 5))
    return out


def _diagnostics(d: ReportData) -> str:
    out = ["<h3>Best so far</h3>"]
    if len(d.best_so_far):
        out.append(f"<p>Area under the best-so-far curve, per trial: <b>{d.area:.4f}</b> (the mean of the "
                   f"best fitness after each of the {len(d.best_so_far)} trials; between runs of the same trial "
                   "budget, higher means good hyps were found sooner).</p>")
        out.append(_image("best_so_far.png", d.images["best_so_far.png"], "best fitness so far per trial"))
    out.append("<h3>Genes at a bound</h3>")
    if d.bounds:
        hints = [(b, b.hint(d.meta)) for b in d.bounds]
        rows = [(f"<code>{_e(b.key)}</code>", b.low, b.high, b.at_low, b.at_high, _e(b.best_at or ""),
                 f"<span class=\"note\">{_e(h)}</span>" if h else "")
                for b, h in sorted(hints, key=lambda bh: (not bh[1], bh[0].key))]
        out.append(f"<p>Trials with a result whose value lay within {BOUND_EPS:.0%} of the range from a "
                   f"bound ({d.bounds[0].trials} trials). A gene pressing on a bound may be held back by it.</p>")
        out.append(_table(["gene", "low", "high", "at low", "at high", "best at", "hint"], rows,
                          numeric=(1, 2, 3, 4)))
    else:
        out.append("<p class=\"muted\">Not available (no search space or no numeric gene).</p>")
    out.append("<h3>Trials by status and failures by reason</h3>")
    out.append(_table(["status", "trials"], sorted(d.statuses.items()), numeric=(1,)))
    if d.reasons:
        out.append(_table(["reason (failed or diverged)", "trials"], ((_e(r), n) for r, n in d.reasons),
                          numeric=(1,)))
    out.append("<h3>Hyperparameter importance</h3>")
    if d.importance:
        top = sorted(d.importance.items(), key=lambda kv: -kv[1])[:IMPORTANCE_SHOWN]
        rows = [(f"<code>{_e(k)}</code>", v, f"<span class=\"bar\" style=\"width:{max(1, int(v * 300))}px\">"
                 "</span>") for k, v in top]
        out.append(f"<p>{_e(d.importance_note)}; an estimate from few trials is rough.</p>")
        out.append(_table(["gene", "importance", ""], rows, numeric=(1,)))
    else:
        out.append(f"<p class=\"note\">{_e(d.importance_note)}</p>")
    return "".join(out)


def render(d: ReportData, made: str | None = None) -> str:
    """The whole page for ``d`` as HTML text."""
    made = made or time.strftime("%Y-%m-%d %H:%M:%S %Z")
    trials = len(d.trials)
    gens = d.trials["generation"].nunique() if trials else 0
    best = d.best_row["fitness"] if d.best_row else None
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Evolution report: {_e(d.run_dir.name)}</title><style>{STYLE}</style>",
        f"<script>{SCRIPT}</script></head><body>",
        f"<h1>Evolution report: {_e(d.run_dir.name)}</h1>",
        f"<p class=\"muted\">{_e(d.run_dir)} &middot; made {_e(made)} from the files there &middot; refresh "
        f"with <code>python orchestrate.py --report {_e(d.run_dir)}</code></p>",
        f"<p>{trials} trials over {gens} generation(s); best fitness "
        f"<b>{_num(best) if best is not None else '-'}</b>.</p><p id=\"broken\" class=\"note\"></p>",
    ]
    parts += [f"<p class=\"note\">{_e(n)}</p>" for n in d.notes]
    parts += ["<h2>Verdict</h2>", _verdict(d), "<h2>Hyperparameters</h2>", _hyps(d), "<h2>Plots</h2>"]
    for name in (n for n in d.images if n != "best_so_far.png"):
        parts.append(_image(name, d.images[name], name))
    parts += ["<h2>Diagnostics</h2>", _diagnostics(d), "<h2>Settings</h2>"]
    if d.settings:
        given = [(f"<code class=\"given\">{_e(f)}</code>", _e(v)) for f, v, typed in d.settings if typed]
        others = [(f"<code>{_e(f)}</code>", _e(v)) for f, v, typed in d.settings if not typed]
        parts.append("<p>Given on the command line:</p>" + (_table(["flag", "value"], given) if given else
                                                          "<p class=\"muted\">none</p>"))
        parts.append(f"<details><summary>the other {len(others)} settings, not given</summary>"
                     + _table(["flag", "value"], others) + "</details>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the run's files (atomically: a browser never sees half a page)."""
    data = gather(run_dir)
    path = atomic_write_text(data.run_dir / REPORT_NAME, render(data))
    LOGGER.info("report: %s", path)
    return path
