"""The operators' page of ``serve --http`` (``/``): one self-contained HTML document (inline style
and script, no external file, font or script) written from the service's snapshot on each request.
It refreshes itself by fetching ``/?part=body`` every second and swapping the body in; without
JavaScript a meta refresh reloads the whole page.

Every value shown carries ``data-key``, the dotted path of the same value in ``/api/stats`` (or in
``/api/cameras`` for ``cameras.<camera>.*``), so the page can be checked against the JSON."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

REFRESH_MS = 1000

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
background:#15181c;color:#e8eaed}
header{display:flex;gap:1.5em;align-items:baseline;padding:.6em 1em;background:#22272e;flex-wrap:wrap}
header h1{font-size:1.2em;margin:0}
.health-ok{color:#4cc26b}.health-degraded{color:#f0b429}.health-stopping{color:#e5534b}
main{padding:1em;display:grid;gap:1em;grid-template-columns:repeat(auto-fill,minmax(380px,1fr))}
section{background:#22272e;border-radius:6px;padding:.8em}
section h2{font-size:1em;margin:0 0 .5em 0;color:#adbac7}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{padding:.15em .4em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.cam img{width:100%;border-radius:4px;background:#000;min-height:80px}
.v{font-weight:700;padding:.1em .5em;border-radius:4px}
.v-pass{background:#2d6a3e}.v-fail{background:#a4302b}.v-error{background:#8a6d1c}.v-none{background:#444}
.big{font-size:1.6em;font-weight:700}.muted{color:#768390;font-size:.85em}
"""

_SCRIPT = """
(function(){
  function tick(){
    fetch('/?part=body',{cache:'no-store'}).then(function(r){return r.ok?r.text():null;})
      .then(function(t){if(t!==null){document.body.innerHTML=t;}})
      .catch(function(){var e=document.getElementById('conn');if(e){e.textContent='connection lost';}})
      .finally(function(){setTimeout(tick,REFRESH);});
  }
  setTimeout(tick,REFRESH);
})();
""".replace("REFRESH", str(REFRESH_MS))


def _v(key: str, value, fmt: str = "{}") -> str:
    text = "–" if value is None else fmt.format(value)
    return f'<span data-key="{escape(key)}">{escape(text)}</span>'


def _row(label: str, key: str, value, fmt: str = "{}") -> str:
    return f"<tr><td>{escape(label)}</td><td class=n>{_v(key, value, fmt)}</td></tr>"


def render_body(stats: dict, cameras: dict[str, dict]) -> str:
    """The page's body from the ``stats`` reply and the latest result per camera."""
    out = []
    health = stats.get("health", "ok")
    uptime = _v("uptime_s", stats.get("uptime_s"), "{:.0f}")
    out.append(f'<header><h1>robis-edge serve</h1><span class="health-{escape(health)}">health '
               f'{_v("health", health)}</span><span>uptime {uptime} s</span>'
               f'<span>{_v("results_per_s", stats.get("results_per_s"))} results/s</span>'
               f'<span id=conn class=muted></span></header><main>')
    for cam, c in sorted(cameras.items()):
        k = f"cameras.{cam}"
        verdict = c.get("verdict")
        src = f'/api/cameras/{quote(cam, safe="")}/latest.jpg?seq={c.get("overlay_seq")}'
        img = (f'<img alt="latest overlay of {escape(cam)}" src="{escape(src)}">'
               if c.get("overlay_seq") is not None else '<p class=muted>no overlay yet</p>')
        err = c.get("error_code") or ""
        badge = f'<span class="v v-{escape(verdict or "none")} big">{_v(k + ".verdict", verdict)}</span>'
        score, seq = _v(k + ".score", c.get("score"), "{:.1f}"), _v(k + ".seq", c.get("seq"))
        line = f'{badge} score {score} · seq {seq}'
        if c.get("product"):
            line += f' · {_v(k + ".product", c["product"])}'
        if err:
            line += f' · error {_v(k + ".error_code", err)}'
        latency = _v(k + ".latency_ms", c.get("latency_ms"), "{:.1f}")
        out.append(f'<section class=cam><h2>camera {escape(cam)}</h2><p>{line}</p>{img}'
                   f'<p class=muted>latency {latency} ms</p></section>')
    res = stats.get("results", {})
    out.append("<section><h2>results</h2><table>")
    for v in ("pass", "fail", "error"):
        out.append(_row(v, f"results.{v}", res.get(v)))
    out.append(_row("frames in", "frames_in", stats.get("frames_in")))
    out.append(_row("results out", "frames_out", stats.get("frames_out")))
    out.append(_row("dropped (overload)", "dropped", stats.get("dropped")))
    out.append("</table></section>")
    out.append("<section><h2>latency (ms, last frames)</h2><table><tr><th>stage</th><th>p50</th>"
               "<th>p99</th></tr>")
    lat = stats.get("latency_ms", {})
    for stage in ("total", "end_to_end", "infer", "queue_wait"):
        if stage in lat:
            out.append(f"<tr><td>{stage}</td><td class=n>{_v(f'latency_ms.{stage}.p50', lat[stage]['p50'])}"
                       f"</td><td class=n>{_v(f'latency_ms.{stage}.p99', lat[stage]['p99'])}</td></tr>")
    out.append("</table></section>")
    out.append("<section><h2>bundles</h2><table>")
    for product, b in stats.get("bundles", {}).items():
        k = f"bundles.{product}"
        out.append(f"<tr><th colspan=2>{escape(product)}</th></tr>")
        for field in ("backend", "provider", "precision"):
            out.append(f"<tr><td>{field}</td><td class=n>{_v(f'{k}.{field}', b.get(field))}</td></tr>")
    out.append("</table></section>")
    out.append("<section><h2>errors by code</h2><table>")
    for code, n in stats.get("errors", {}).items():
        out.append(_row(code, f"errors.{code}", n))
    out.append("</table></section>")
    outs = stats.get("outputs", {})
    if outs:
        out.append("<section><h2>outputs</h2><table><tr><th>output</th><th>connected</th><th>sent</th>"
                   "<th>dropped</th></tr>")
        for name, o in outs.items():
            k = f"outputs.{name}"
            out.append(f"<tr><td>{escape(name)}</td><td>{_v(k + '.connected', o.get('connected'))}</td>"
                       f"<td class=n>{_v(k + '.sent', o.get('sent'))}</td>"
                       f"<td class=n>{_v(k + '.dropped', o.get('dropped'))}</td></tr>")
        out.append("</table></section>")
    out.append("</main>")
    return "".join(out)


def render_page(stats: dict, cameras: dict[str, dict]) -> str:
    """The whole document: head with inline style and script, and the body."""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            "<title>robis-edge serve</title>"
            f"<noscript><meta http-equiv=refresh content={max(1, REFRESH_MS // 1000)}></noscript>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head>"
            f"<body>{render_body(stats, cameras)}</body></html>")
