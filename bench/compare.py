#!/usr/bin/env python3
"""Merges agentauth's load results with node-oidc-provider's into one table
(Markdown + JSON) and a bar chart (SVG) of throughput per scenario.

usage: compare.py OURS.json PEER.json OUT_PREFIX
"""
import json
import sys

ours = json.load(open(sys.argv[1]))
peer = json.load(open(sys.argv[2]))
out = sys.argv[3]
ceiling = ours["openssl_rsa2048_sign_per_s"]["all_cores"]

peer_rows = {(r["scenario"], r["connections"]): r for r in peer["rows"]}
rows = []
for r in ours["rows"]:
    p = peer_rows.get((r["scenario"], r["connections"]))
    signing = r["scenario"].startswith("client_credentials")
    rows.append({
        **r,
        "peak_rss_mib": round(ours["rss_kib"][r["backend"]]["peak"] / 1024, 1),
        "peer_rps": p["rps"] if p else None,
        "peer_p99_ms": p["p99_ms"] if p else None,
        "ratio_to_peer": round(r["rps"] / p["rps"], 2) if p else None,
        "fraction_of_signing_ceiling": round(r["rps"] / ceiling, 3) if signing else None,
    })
for (scenario, conns), p in sorted(peer_rows.items()):
    rows.append({**p, "backend": "node-oidc-provider", "peak_rss_mib": round(peer["rss_kib"]["peak"] / 1024, 1)})

def cell(v, fmt="{:,.0f}"):
    return "—" if v is None else fmt.format(v)

lines = [
    "# agentauth vs node-oidc-provider",
    "",
    f"Same machine, same run, same load tool (wrk -t2, {ours['duration']} per row). RSA-2048 signing ceiling "
    f"(openssl speed): {ours['openssl_rsa2048_sign_per_s']['one_core']:,.0f}/s on one core, {ceiling:,.0f}/s on all cores.",
    "",
    "| server | scenario | conns | req/s | p50 ms | p99 ms | peak RSS MiB | × peer | of signing ceiling |",
    "|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    lines.append(
        f"| {r['backend']} | {r['scenario']} | {r['connections']} | {cell(r['rps'])} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
        f"{r['peak_rss_mib']} | {cell(r.get('ratio_to_peer'), '{:.2f}×')} | {cell(r.get('fraction_of_signing_ceiling'), '{:.0%}')} |"
    )
lines += ["", "node-oidc-provider cannot introspect JWT access tokens (it answers `unsupported_token_type`), so introspection has no peer row."]
open(out + ".md", "w").write("\n".join(lines) + "\n")
json.dump({"ceiling": ours["openssl_rsa2048_sign_per_s"], "rows": rows}, open(out + ".json", "w"), indent=2)
print("\n".join(lines))

# Bar chart: req/s per scenario@connections, one bar per server.
groups = []
for r in ours["rows"]:
    key = f"{r['scenario']}@{r['connections']}"
    if key not in groups:
        groups.append(key)
series = [("agentauth SQLite", "sqlite", "#2d5bd1"), ("agentauth PostgreSQL", "postgres", "#6c8ef0"), ("node-oidc-provider", "peer", "#d9822b")]
values = {}
for r in ours["rows"]:
    values[(r["backend"], f"{r['scenario']}@{r['connections']}")] = r["rps"]
for r in peer["rows"]:
    values[("peer", f"{r['scenario']}@{r['connections']}")] = r["rps"]
top = max(values.values())
import math
scale_max = 10 ** math.ceil(math.log10(top))
W, H, left, bottom, top_pad = 1100, 520, 80, 150, 50
plot_w, plot_h = W - left - 20, H - bottom - top_pad
gw = plot_w / len(groups)
bw = gw / (len(series) + 1)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="24" text-anchor="middle" font-size="16">Throughput per scenario (req/s, log scale), same machine and run</text>']
def y_of(v):
    v = max(v, 1)
    return top_pad + plot_h - plot_h * math.log10(v) / math.log10(scale_max)
for exp in range(0, int(math.log10(scale_max)) + 1):
    y = y_of(10 ** exp)
    svg.append(f'<line x1="{left}" x2="{W-20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{left-6}" y="{y+4:.1f}" text-anchor="end">{10**exp:,}</text>')
for gi, g in enumerate(groups):
    x0 = left + gi * gw + bw / 2
    for si, (_, key, color) in enumerate(series):
        v = values.get((key, g))
        if v is None:
            continue
        x = x0 + si * bw
        y = y_of(v)
        svg.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw*0.9:.1f}" height="{top_pad+plot_h-y:.1f}" fill="{color}"><title>{g} {key}: {v:,.0f}</title></rect>')
    cx = left + gi * gw + gw / 2
    svg.append(f'<text transform="translate({cx:.1f},{top_pad+plot_h+10}) rotate(40)" text-anchor="start">{g}</text>')
for si, (label, _, color) in enumerate(series):
    svg.append(f'<rect x="{left + si*220}" y="{H-24}" width="14" height="14" fill="{color}"/><text x="{left + si*220 + 20}" y="{H-12}">{label}</text>')
svg.append("</svg>")
open(out + ".svg", "w").write("\n".join(svg))
print(f"wrote {out}.md, {out}.json, {out}.svg")
