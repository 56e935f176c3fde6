#!/usr/bin/env python3
"""Turns bench/compare.sh's raw results into one table (Markdown + JSON)
and a bar chart (SVG) of throughput per scenario.

usage: compare.py RAW.json OUT_PREFIX
"""
import json
import math
import sys

raw = json.load(open(sys.argv[1]))
out = sys.argv[2]
PEER = "node-oidc-provider"
# The highest sample of the run: the ceiling is what the cores can do, and
# the host's speed drifts.
one_core = max(c["one_core"] for c in raw["ceiling_samples"])
ceiling = max(c["all_cores"] for c in raw["ceiling_samples"])
has_peer = PEER in raw["rss_kib"]


def signing(r):
    """Rows bound by RSA-2048 signing (the ES256 rows are not)."""
    return r["scenario"].startswith("client_credentials") and not r["scenario"].endswith("es256")


def peer_of(backend):
    return PEER + "-es256" if backend.endswith("-es256") else PEER


def is_peer(backend):
    return backend.startswith(PEER)


def of_ceiling(r):
    """Throughput over the signing ceiling of the cores the server got."""
    cores = r.get("server_cores") or 0
    return round(r["rps"] / (one_core * cores), 3) if signing(r) and cores > 0 else None


def peak_mib(backend):
    return round(raw["rss_kib"][backend]["peak"] / 1024, 1)


peer_rows = {(r["backend"], r["scenario"], r["connections"]): r for r in raw["rows"] if is_peer(r["backend"])}
peer_peak = peak_mib(PEER) if has_peer else None
rows = []
for r in raw["rows"]:
    p = peer_rows.get((peer_of(r["backend"]), r["scenario"], r["connections"])) if not is_peer(r["backend"]) else None
    rows.append({
        **r,
        "peak_rss_mib": peak_mib(r["backend"]),
        "peer_rps": p["rps"] if p else None,
        "peer_p99_ms": p["p99_ms"] if p else None,
        "ratio_to_peer": round(r["rps"] / p["rps"], 2) if p else None,
        "fraction_of_all_core_ceiling": round(r["rps"] / ceiling, 3) if signing(r) else None,
        "fraction_of_ceiling_of_cores_used": of_ceiling(r),
    })
rows.sort(key=lambda r: (is_peer(r["backend"]), r["backend"].endswith("es256"), r["backend"] != "sqlite"))


def cell(v, fmt="{:,.0f}"):
    return "—" if v is None else fmt.format(v)


lines = [
    "# agentauth vs node-oidc-provider",
    "",
    f"Same machine, same run, same load tool (wrk -t2, {raw['duration']} per row; {raw['cpus']} × {raw['cpu_model']}); "
    "for each scenario the servers ran one after the other, all three started at the start. RSA-2048 signing ceiling "
    f"(openssl speed, the highest of the samples taken beside each server's rows): {one_core:,.0f}/s on one core, {ceiling:,.0f}/s on all cores. \"server cores\" is the "
    "server's CPU time over the run divided by its length (wrk takes the rest); \"of ceiling\" divides req/s by "
    "one core's signing rate times those cores.",
    "",
    "| server | scenario | conns | req/s | p50 ms | p99 ms | server cores | peak RSS MiB | × peer | of all-core ceiling | of ceiling (cores used) |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    lines.append(
        f"| {r['backend']} | {r['scenario']} | {r['connections']} | {cell(r['rps'])} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
        f"{cell(r.get('server_cores'), '{:.2f}')} | {r['peak_rss_mib']} | {cell(r.get('ratio_to_peer'), '{:.2f}×')} | "
        f"{cell(r.get('fraction_of_all_core_ceiling'), '{:.0%}')} | {cell(r.get('fraction_of_ceiling_of_cores_used'), '{:.0%}')} |"
    )

# The targets, checked against this run.
targets = []
def target(name, value, ok):
    targets.append({"target": name, "value": value, "met": bool(ok)})

for r in rows:
    if is_peer(r["backend"]):
        continue
    where = f"{r['backend']} {r['scenario']}@{r['connections']}"
    if r["scenario"] == "client_credentials" and r["ratio_to_peer"] is not None:
        # Is 3× within physics? Say what it would take.
        need = 3 * r["peer_rps"]
        target(f"{where}: ≥ 3× peer",
               f"{r['ratio_to_peer']:.2f}× (3× = {need:,.0f}/s = {need / ceiling:.0%} of the all-core signing ceiling)",
               r["ratio_to_peer"] >= 3)
    if r["scenario"] == "client_credentials" and r["connections"] == 64:
        f = r["fraction_of_ceiling_of_cores_used"]
        target(f"{where}: ≥ 80% of the signing ceiling of the cores used", cell(f, "{:.0%}"), f is not None and f >= 0.8)
        # Little's law: 64 requests always in flight wait 64 ÷ throughput on
        # average, whatever the server does; p99 cannot be below that.
        target(f"{where}: p99 < 20 ms",
               f"{r['p99_ms']:.1f} ms (mean by Little's law: 64 ÷ {r['rps']:,.0f}/s = {64000 / r['rps']:.1f} ms)",
               r["p99_ms"] < 20)
    if r["scenario"] == "client_credentials_es256" and r["ratio_to_peer"] is not None:
        target(f"{where}: ≥ 4× peer with ES256", f"{r['ratio_to_peer']:.2f}×", r["ratio_to_peer"] >= 4)
    if r["scenario"] in ("metadata", "jwks", "introspection", "jwks_under_token_load") and r["ratio_to_peer"] is not None:
        target(f"{where}: ≥ 4× peer", f"{r['ratio_to_peer']:.2f}×", r["ratio_to_peer"] >= 4)
for b in ("sqlite", "postgres"):
    if has_peer:
        mib = peak_mib(b)
        target(f"{b}: peak RSS below the peer's ({peer_peak} MiB)", f"{mib} MiB", mib < peer_peak)

lines += ["", "## Targets", "", "| target | this run | met |", "|---|---|---|"]
lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |" for t in targets]
lines += ["", "node-oidc-provider cannot introspect its JWT access tokens, so its introspection row introspects an opaque token "
          "(a second resource indicator configured for opaque tokens, looked up in its in-memory adapter); ours introspects a JWT "
          "access token (signature, claims, revocation set, client still registered). The peer keeps everything in memory; "
          "agentauth writes to SQLite or PostgreSQL."]
open(out + ".md", "w").write("\n".join(lines) + "\n")
json.dump({"stamp": raw["stamp"], "duration": raw["duration"], "cpus": raw["cpus"], "cpu_model": raw["cpu_model"],
           "ceiling": {"one_core": one_core, "all_cores": ceiling}, "ceiling_samples": raw["ceiling_samples"],
           "rows": rows, "targets": targets, "rss_kib": raw["rss_kib"]},
          open(out + ".json", "w"), indent=2)
print("\n".join(lines))

# Bar chart: req/s per scenario@connections, one bar per server.
groups = []
for r in raw["rows"]:
    key = f"{r['scenario']}@{r['connections']}"
    if key not in groups:
        groups.append(key)
series = [("agentauth SQLite", "sqlite", "#2d5bd1"), ("agentauth PostgreSQL", "postgres", "#6c8ef0"), ("node-oidc-provider", PEER, "#d9822b")]
values = {}
for r in raw["rows"]:
    values[(r["backend"].removesuffix("-es256"), f"{r['scenario']}@{r['connections']}")] = r["rps"]
top = max(values.values())
scale_max = 10 ** math.ceil(math.log10(top))
W, H, left, bottom, top_pad = 1140, 520, 130, 150, 50
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
    svg.append(f'<text transform="translate({cx:.1f},{top_pad+plot_h+14}) rotate(-40)" text-anchor="end">{g}</text>')
for si, (label, _, color) in enumerate(series):
    svg.append(f'<rect x="{left + si*220}" y="{H-24}" width="14" height="14" fill="{color}"/><text x="{left + si*220 + 20}" y="{H-12}">{label}</text>')
svg.append("</svg>")
open(out + ".svg", "w").write("\n".join(svg))
print(f"wrote {out}.md, {out}.json, {out}.svg")
