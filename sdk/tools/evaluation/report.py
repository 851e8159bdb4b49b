"""The evaluation report: one self-contained HTML page (every picture inlined as a data URI).

Metric table, per product the pixel precision-recall curve (with the operating point of the final
masks), the PRO curve (with the integration limit) and the image-score distribution, and a
gallery of the worst false negatives and false positives as overlays. Plots need matplotlib (the
``report`` extra), imported only here and only when a report is written.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from sdk.errors import InputError

from .metrics import pr_curve

_COLUMNS = (("seg_f1", "SegF1"), ("au_pro", "AucPro"), ("class_f1", "ClassF1"),
            ("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("pixel_f1_max", "pixel F1-max"))


def require_matplotlib():
    """matplotlib's Figure class, or an InputError that names the extra to install."""
    try:  # Figure + savefig renders with Agg; no pyplot, no global backend switch
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise InputError("the HTML report (--report) needs matplotlib, which is not installed: "
                         "pip install 'robis-edge[report]'") from exc
    return Figure


def _finish(fig, ax, legend: str) -> bytes:
    """Grid, legend and layout of a report plot, as PNG bytes."""
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _cell(v) -> str:
    if v is None:
        return '<td class="na">–</td>'
    hue = int(max(0.0, min(1.0, v)) * 120)  # red 0 → green 1
    return f'<td style="background:hsl({hue},70%,88%)">{v:.4f}</td>'


def _table(summary: dict) -> str:
    lim = summary["fpr_limit"]
    head = "".join(f"<th>{html.escape(label)}{f'@{lim:g}' if key == 'au_pro' else ''}</th>"
                   for key, label in _COLUMNS)
    rows = []
    for name, p in summary["products"].items():
        cells = "".join(_cell(p["metrics"][k]["value"]) for k, _ in _COLUMNS)
        rows.append(f"<tr><th class='l'>{html.escape(name)}</th><td>{p['images']}</td>"
                    f"<td>{p['defective_images']}</td><td>{p['gt_regions']}</td>{cells}</tr>")
    if len(summary["products"]) > 1:
        o = summary["overall"]
        m = o["metrics"]
        cells = "".join(_cell(m[k]["value"]) for k, _ in _COLUMNS)
        rows.append(f"<tr class='mean'><th class='l'>mean of {o['products']}</th><td>{o['images']}</td>"
                    f"<td>{m['seg_f1']['defective_images']}</td><td>{m['au_pro']['regions']}</td>{cells}</tr>")
    return (f"<table class='metrics'><tr><th class='l'>product</th><th>images</th><th>defective</th>"
            f"<th>GT regions</th>{head}</tr>{''.join(rows)}</table>")


def _plots(Figure, run, summary: dict) -> list[tuple[str, str]]:
    px = run.pixels
    res = summary["products"][run.product.name]["metrics"]
    lim = summary["fpr_limit"]
    out = []
    good = px.hist_all - px.hist_defect
    # pixel precision-recall
    fig = Figure(figsize=(3.6, 3.1))
    ax = fig.add_subplot()
    if px.hist_defect.any():
        prec, rec, _ = pr_curve(px.hist_defect, good)
        ax.plot(np.r_[0.0, rec], np.r_[prec[0] if prec.size else 1.0, prec], color="#1f5fa8", lw=1.6,
                label="continuous map")
        seg = res["seg_f1"]
        if seg["precision"] is not None and seg["recall"] is not None:
            ax.plot([seg["recall"]], [seg["precision"]], "o", color="#d62728", ms=7,
                    label=f"final masks (SegF1 {_fmt(seg['value'], 3)})")
        f1m = res["pixel_f1_max"]["value"]
        if f1m is not None:
            r = np.linspace(f1m / (2 - f1m) + 1e-6, 1, 200)
            ax.plot(r, f1m * r / (2 * r - f1m), ":", color="gray", lw=1, label=f"F1 = {f1m:.3f} (F1-max)")
    else:
        ax.text(0.5, 0.5, "no defect pixels", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (pixels)", ylabel="precision (pixels)",
           title="Pixel precision–recall")
    out.append(("precision-recall", _finish(fig, ax, "lower left")))
    # PRO
    fig = Figure(figsize=(3.6, 3.1))
    ax = fig.add_subplot()
    if px.regions and px.good_pixels:
        fpr, pro, _ = px.pro_curve()
        xmax = min(1.0, max(0.3, 2 * lim))
        keep = fpr <= xmax
        idx = int(np.searchsorted(fpr, xmax))
        x = np.r_[fpr[keep], fpr[idx]] if idx < fpr.size else fpr[keep]
        y = np.r_[pro[keep], pro[idx]] if idx < fpr.size else pro[keep]
        ax.plot(x, y, color="#1f5fa8", lw=1.6,
                label=f"PRO (AucPro@{lim:g} {_fmt(res['au_pro']['value'], 3)})")
        sel = fpr <= lim
        ax.fill_between(np.r_[fpr[sel], lim], np.r_[pro[sel], np.interp(lim, fpr, pro)], color="#1f5fa8",
                        alpha=0.15, step=None)
        ax.axvline(lim, color="#d62728", ls="--", lw=1, label=f"integration limit {lim:g}")
        ax.set_xlim(0, xmax)
    else:
        ax.text(0.5, 0.5, "no ground-truth region" if not px.regions else "no defect-free pixel",
                ha="center", va="center", transform=ax.transAxes)
    ax.set(ylim=(0, 1.02), xlabel="false-positive rate (defect-free pixels)", ylabel="per-region overlap",
           title=f"PRO curve ({px.regions} regions)")
    out.append(("PRO", _finish(fig, ax, "lower right")))
    # image scores
    fig = Figure(figsize=(3.6, 3.1))
    ax = fig.add_subplot()
    s = np.asarray(run.images.scores)
    y = np.asarray(run.images.labels, bool)
    if s.size:
        bins = np.linspace(min(0.0, s.min()), max(255.0, s.max()), 41)
        ax.hist(s[~y], bins=bins, alpha=0.6, color="#2ca02c", label=f"defect-free ({int((~y).sum())})")
        ax.hist(s[y], bins=bins, alpha=0.6, color="#d62728", label=f"defective ({int(y.sum())})")
    ax.set(xlabel="image score (max of the map)", ylabel="images",
           title=f"Image scores (AUROC {_fmt(res['image_auroc']['value'], 3)})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(("image scores", _png(fig)))
    return out


def _gallery(run, kind: str) -> str:
    items = run.worst(kind)
    if not items:
        return "<p class='none'>none</p>"
    cards = []
    for it in items:
        c = it.caption
        src = "data:image/jpeg;base64," + base64.b64encode(it.jpeg).decode("ascii")
        f1 = "–" if c["seg_f1"] is None else f"{c['seg_f1']:.3f}"
        cards.append(
            f"<figure><img src='{src}' alt='{html.escape(c['name'])}'><figcaption>"
            f"<b>{html.escape(c['name'])}</b><br>verdict <b class='{c['verdict']}'>{c['verdict']}</b>, "
            f"score {c['score']:.1f}<br>GT {c['gt_pixels']} px in {c['gt_regions']} region(s), "
            f"{c['regions_hit']} hit<br>missed {c['fn']} px, false {c['fp']} px, F1 {f1}"
            "</figcaption></figure>")
    return f"<div class='gallery'>{''.join(cards)}</div>"


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#1d2330;
background:#fafbfc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d6dbe3}
h3{font-size:15px;margin:18px 0 6px} .sub{color:#5a6475;font-size:13px}
table.metrics{border-collapse:collapse;font-size:14px;margin:10px 0}
table.metrics td,table.metrics th{border:1px solid #d6dbe3;padding:5px 10px;text-align:right}
table.metrics th{background:#eef1f6} th.l{text-align:left} tr.mean th,tr.mean td{font-weight:600}
td.na{color:#9aa3b2;text-align:center}
.plots{display:flex;flex-wrap:wrap;gap:8px} .plots img{border:1px solid #e3e7ee;background:#fff}
.gallery{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;width:255px;background:#fff;
border:1px solid #d6dbe3;padding:6px}
figure img{width:100%;max-height:340px;object-fit:contain;display:block;background:#20232a}
figcaption{font-size:12px;line-height:1.4;margin-top:4px} b.fail{color:#c62828} b.pass{color:#2e7d32}
.legend{font-size:12px;color:#5a6475} .none{color:#9aa3b2} dl{font-size:13px} dt{font-weight:600}
dd{margin:0 0 6px 16px;color:#3a4353}
"""


def write_report(path: str | Path, summary: dict, runs: list) -> Path:
    """Write the HTML report; returns its path."""
    Figure = require_matplotlib()
    path = Path(path)
    lim = summary["fpr_limit"]
    bundles = sorted({f"{r.bundle_info['bundle']} ({r.bundle_info['backend']}/{r.bundle_info['provider']}, "
                      f"{r.bundle_info['precision']})" for r in runs})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Evaluation: {html.escape(Path(summary['dataset']).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Evaluation of {html.escape(', '.join(bundles))}</h1>",
        f"<div class='sub'>dataset {html.escape(summary['dataset'])} · layout {summary['layout']} · split "
        f"{html.escape(summary['split'] or '(whole folder)')} · scope <b>{summary['scope']}</b> · "
        f"{summary['overall']['images']} images · {summary['created']}</div>",
        "<h2>Metrics</h2>", _table(summary),
        f"<p class='legend'>SegF1: pixel F1 of the final masks, counts summed over all pixels of the split. "
        f"AucPro@{lim:g}: area under the per-region-overlap curve up to a false-positive rate of {lim:g}, "
        f"divided by {lim:g}. ClassF1: F1 of the pass/fail verdicts. Maps bilinear and masks nearest to the "
        f"ground truth's resolution. Mean row: unweighted mean over products.</p>",
    ]
    t = summary["timings_s"]
    parts.append(f"<p class='legend'>time: inference {t['inspect']:.1f} s, metrics {t['metrics']:.1f} s "
                 f"({t['metrics_per_image_ms']:.1f} ms/image vs {t['inspect_per_image_ms']:.1f} ms/image "
                 f"inference), reading {t['read']:.1f} s, wall {t['wall']:.1f} s.</p>")
    for run in runs:
        name = run.product.name
        p = summary["products"][name]
        groups = ", ".join(f"{html.escape(g)} {n}" for g, n in p["groups"].items())
        errors = f" · <b>{p['errors']} image(s) could not be read or inspected</b>" if p["errors"] else ""
        parts.append(f"<h2>{html.escape(name)}</h2><div class='sub'>{groups}{errors}</div>")
        parts.append("<div class='plots'>" + "".join(f"<img alt='{a}' src='{s}' width='360' height='310'>"
                                                     for a, s in _plots(Figure, run, summary)) + "</div>")
        parts.append("<p class='legend'>Overlays: heat map of the anomaly map, <b>white</b> contours = "
                     "predicted mask, boxes = predicted regions with their peak score, <b style='color:#0a0'>"
                     "green</b> contours = ground truth.</p>")
        parts.append(f"<h3>Worst false negatives (missed defect pixels; defective parts passed first)"
                     f"</h3>{_gallery(run, 'fn')}")
        parts.append(f"<h3>Worst false positives (mask pixels outside the ground truth; good parts failed "
                     f"first)</h3>{_gallery(run, 'fp')}")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
