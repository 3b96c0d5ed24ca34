#!/usr/bin/env python3
"""The table and plot of bench/sidebyside.

usage: sidebyside_report.py RESULTS.jsonl OUT.md OUT.png [PROFILE.txt]

RESULTS.jsonl: a first line of metadata (kernel, cpu, commit, date, AF_XDP mode, load), then
one line per measurement window as bench/sidebyside writes them. Peak rows are windows with
"load": null; latency rows carry the fraction of xlb DR's peak they were offered. The table
gives each row's median over its windows; ratios are to the null forwarder and to nftables
DNAT of the same protocol. PROFILE.txt, if given, is quoted under "Where the time goes".

Rows ending in -bp ran with preferred busy polling forced on; each of their windows says
which NAPI ids the forwarder's sockets had and how much TcpExt BusyPollRxPackets rose, and
the "Busy polling" section says whether it engaged. xlb rows compare with the null
forwarder configured the same way (xlb-dr with null, xlb-dr-bp with null-bp).
"""

import json
import statistics
import sys

ROW_NAMES = {
    "xlb-dr": "xlb DR",
    "xlb-nat": "xlb NAT",
    "xlb-fullnat": "xlb FullNAT",
    "null": "null AF_XDP forwarder (I/O ceiling)",
    "xlb-dr-bp": "xlb DR, busy polling",
    "xlb-nat-bp": "xlb NAT, busy polling",
    "xlb-fullnat-bp": "xlb FullNAT, busy polling",
    "null-bp": "null AF_XDP forwarder, busy polling",
    "kernel-fwd": "kernel IPv4 forwarding",
    "nft-dnat": "kernel nftables DNAT (kube-proxy style)",
    "xdp-redirect": "XDP native redirect",
}
ORDER = list(ROW_NAMES)


def load(path):
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return lines[0], lines[1:]


def median(values):
    return statistics.median(values) if values else None


def fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def peak_rows(windows):
    """{(proto, row): summary} over the peak windows."""
    out = {}
    for proto in ("udp", "tcp"):
        for row in ORDER:
            ws = [w for w in windows if w["load"] is None and w["row"] == row and w["proto"] == proto]
            if not ws:
                continue
            rates = [w["sink"]["mpps"] for w in ws]
            cpu = [w["sink"]["cpu_us_per_packet"] for w in ws if w["sink"].get("cpu_us_per_packet")]
            out[(proto, row)] = {
                "mpps": median(rates),
                "min": min(rates),
                "max": max(rates),
                "cpu": median(cpu),
                "good": sum(w["sink"]["total"]["good"] for w in ws),
                "bad": sum(w["sink"]["total_bad"] for w in ws),
                "gen": median([w["gen"]["mpps"] for w in ws]),
                "p99": median([(w["sink"].get("latency_us") or {}).get("p99", 0) for w in ws]),
                "windows": len(ws),
            }
    return out


def ratio(value, base):
    if value is None or not base:
        return "–"
    return f"{value / base:.2f}×"


def latency_rows(windows):
    ws = [w for w in windows if w["load"] is not None]
    return sorted(ws, key=lambda w: (ORDER.index(w["row"]), w["load"]))


def targets(peaks, lats):
    """(text, met) of each of the issue's targets that the run measured."""
    out = []
    dr, nft = (peaks.get(("udp", r)) for r in ("xlb-dr", "nft-dnat"))
    for xlb_row, null_row, how in (("xlb-dr", "null", "interrupt mode"), ("xlb-dr-bp", "null-bp", "busy polling")):
        x, n = peaks.get(("udp", xlb_row)), peaks.get(("udp", null_row))
        if x and n:
            r = x["mpps"] / n["mpps"]
            out.append((f"xlb DR ≥ 1.0× the null forwarder, both in {how} (UDP): {r:.2f}×", r >= 1.0))
    if dr and nft:
        r = dr["mpps"] / nft["mpps"]
        out.append((f"xlb DR ahead of nftables DNAT (UDP): {r:.2f}×", r > 1.0))
    at = {(w["row"], w["load"]): w for w in lats}
    xlb = at.get(("xlb-dr", 0.5))
    for base in ("xdp-redirect", "kernel-fwd"):
        direct = at.get((base, 0.5))
        if xlb and direct and xlb["sink"].get("latency_us") and direct["sink"].get("latency_us"):
            added = xlb["sink"]["latency_us"]["p99"] - direct["sink"]["latency_us"]["p99"]
            out.append((f"p99 added by xlb at 50% load ≤ 50 µs (against {ROW_NAMES[base]}): {added:.1f} µs", added <= 50))
    return out


def busy_poll_lines(windows):
    """Per -bp row and protocol: the NAPI ids seen and the BusyPollRxPackets rise against the
    frames the sink counted, and whether busy polling engaged (a NAPI id on the receiving
    socket, its own or a marker's, and the counter rising; the transmit-only sink side may
    have none). The counter understates: the kernel counts its busy poll, not the second
    poll of busy_poll_stop (src/dataplane/io/afxdp/marker.rs)."""
    out = []
    for proto in ("udp", "tcp"):
        for row in ORDER:
            ws = [w for w in windows if w["row"] == row and w["proto"] == proto and row.endswith("-bp")]
            if not ws:
                continue
            napi = sorted({w.get("busy_poll", {}).get("napi", "") for w in ws} - {""})
            rx = sum(w.get("busy_poll", {}).get("rx_packets", 0) for w in ws)
            good = sum(w["sink"]["total"]["good"] for w in ws)
            ids = [part.split("=")[-1] for n in napi for part in n.split(",") if part.split(":")[0].endswith("-lg")]
            engaged = any(i not in ("", "0") for i in ids) and rx > 0
            out.append(
                f"- {proto.upper()} {ROW_NAMES[row]}: {'**engaged**' if engaged else '**not engaged**'}; "
                f"NAPI ids {', '.join(napi) or 'not logged'}; BusyPollRxPackets +{rx} over its windows "
                f"({good} good frames at the sink, {rx / good if good else 0:.0%})"
                + ("" if engaged else ": without a NAPI id the kernel has nothing to busy-poll, the "
                   "worker only spins beside the receive NAPI thread (what `--busy-poll auto`, xlb's default, avoids)")
            )
    return out


def profile_shares(profile, row):
    """(share of the core in the NAPI thread, share in xlb's own code) from the profile of
    `row`, in percent; None where the profile does not say."""
    import re

    section = profile.split(f"### {row} ")
    if len(section) < 2:
        return None, None
    text = section[1].split("### ")[0]
    napi = sum(float(m) for m in re.findall(r"^ +([0-9.]+)%  napi/", text, re.M)) or None
    own = sum(float(m) for m in re.findall(r"^ +([0-9.]+)%  \[\.\] .*xlb::", text, re.M)) or None
    return napi, own


def why(peaks, lats, profile):
    """The reasons behind the figures, with this run's numbers."""
    out = ["## Why\n"]
    dr, null, nft, fwd = (peaks.get(("udp", r)) for r in ("xlb-dr", "null", "nft-dnat", "kernel-fwd"))
    napi, own = profile_shares(profile, "xlb-dr")
    if dr and null:
        out.append(
            ("- **xlb is at the I/O ceiling.** " if dr["mpps"] >= 0.9 * null["mpps"] else "- **xlb is below the I/O ceiling.** ")
            + f"xlb DR does {dr['mpps']:.2f} Mpps where the null forwarder, the same "
            f"AF_XDP I/O with no balancing at all, does {null['mpps']:.2f}; the pure pipeline does 15–20 Mpps on one "
            "core (`bench/results/pipeline-*.md`), so the balancing is a small part of each frame's cost."
            + (f" In the profile of xlb DR's forwarding core, xlb's own code is {own:.0f}% of the samples listed and the "
               f"receive NAPI thread {napi:.0f}%." if napi and own else "")
        )
    if dr and nft and fwd:
        out.append(
            f"- **The kernel's paths start from a cheaper place on veth.** Copy-mode AF_XDP (all veth offers) copies every "
            f"frame twice: into the UMEM in the receive NAPI thread (after the steering program), and out of it into a new "
            f"skb in `sendto()`, which then crosses the veth like any skb. Kernel forwarding keeps the one skb it built, so "
            f"it does {fwd['mpps']:.2f} Mpps, and nftables DNAT with conntrack {nft['mpps']:.2f}. xlb DR is "
            f"{dr['mpps'] / nft['mpps']:.2f}× nftables here."
        )
    out.append(
        "- **One core does two jobs.** With two cores, the generator needs one, so the lb's receive NAPI thread and xlb's "
        "worker share the other under the scheduler. Under overload the NAPI thread spends part of its time on frames the "
        "full socket ring then drops. Making the NAPI thread real-time (`--napi-fifo`) starves the worker under overload "
        "(the rate collapses); spinning the worker (`--spin`) keeps the NAPI thread waiting for its time slice."
    )
    at = {(w["row"], w["load"]): w for w in lats}
    x, k = at.get(("xlb-dr", 0.5)), at.get(("kernel-fwd", 0.5))
    if x and k and x["sink"].get("latency_us") and k["sink"].get("latency_us"):
        out.append(
            f"- **Latency.** At half of xlb's peak, a frame through xlb takes {x['sink']['latency_us']['p50']:.0f} µs at the "
            f"median and {x['sink']['latency_us']['p99']:.0f} µs at p99, against {k['sink']['latency_us']['p50']:.0f} and "
            f"{k['sink']['latency_us']['p99']:.0f} µs through the kernel's forwarding: every frame needs two threads on one "
            "core (the NAPI thread hands it to the worker through the socket, and a wake-up or a time slice lies between "
            "them), where the kernel forwards in the NAPI thread alone."
        )
    out.append(
        "- **What would close the gap.** A NIC with zero-copy AF_XDP removes both copies and the skb on the way out "
        "(the reason AF_XDP exists; veth cannot do it). A core of its own for the receive NAPI thread, or AF_XDP busy "
        "polling (`SO_PREFER_BUSY_POLL`, so the worker drives the receive queue itself and no second thread shares its "
        "core), removes the hand-off that costs both rate and latency: the first needs other hardware; the second "
        "is what `xlb run` does by default where the driver links a NAPI to the socket, which veth does not; "
        "the -bp rows busy-poll veth's NAPI through a marker socket (`--busy-poll-marker`, see Busy polling)."
    )
    return "\n".join(out)


def markdown(meta, windows, profile):
    peaks = peak_rows(windows)
    lats = latency_rows(windows)
    out = []
    out.append("# Side by side: xlb against the kernel, one run, one topology\n")
    out.append(f"- machine: {meta['cpu']}, kernel {meta['kernel']}")
    out.append(f"- commit: {meta['commit']}")
    out.append(f"- date: {meta['date']}")
    out.append(f"- AF_XDP mode: {meta['xsk_mode']} (veth)")
    cores = meta["cores"]
    out.append(
        f"- cores: generator on {cores['gen']}; forwarding on {cores['forwarding']} (the lb's receive NAPI thread, "
        f"threaded and pinned, and xlb's worker or the null forwarder share it); the sink's NAPI thread on "
        f"{cores['sink_napi']}" + (" beside the generator, at SCHED_FIFO priority" if cores["sink_napi"] == cores["gen"] else "")
    )
    out.append(
        f"- traffic: 64-byte frames (60 without FCS), {meta['flows']} flows, generator = BPF_PROG_RUN live frames "
        f"(`xlb bench gen`); {meta['repeats']} round(s), each a window of {meta['measure_s']} s per row after {meta['warmup_s']} s "
        f"warm-up (rows interleaved, so other work on the machine spreads over all of them); the table shows the median "
        f"window (min–max in brackets)"
    )
    out.append(
        "- veth: the receiving ends (the lb's `lg`, the sink's `s`) have GRO on, so they accept XDP frames "
        "whatever the row attaches; the sink is an XDP program on `s` that checks, counts, times and drops"
    )
    out.append(f"- load average (1, 5, 15 min) before: {meta['load_before']}; after: {meta['load_after']}")
    out.append("")
    out.append("## Peak forwarding rate\n")
    out.append("| proto | row | Mpps | × null | × nftables | CPU-µs/packet | good / bad frames | generator Mpps |")
    out.append("|---|---|---:|---:|---:|---:|---|---:|")
    for proto in ("udp", "tcp"):
        nft = peaks.get((proto, "nft-dnat"), {}).get("mpps")
        for row in ORDER:
            p = peaks.get((proto, row))
            if not p:
                continue
            # × null: against the null forwarder configured the same way (-bp with null-bp).
            null = peaks.get((proto, "null-bp" if row.endswith("-bp") else "null"), {}).get("mpps")
            spread = f" ({p['min']:.3f}–{p['max']:.3f})" if p["windows"] > 1 else ""
            out.append(
                f"| {proto.upper()} | {ROW_NAMES[row]} | {p['mpps']:.3f}{spread} | {ratio(p['mpps'], null)} | "
                f"{ratio(p['mpps'], nft)} | {fmt(p['cpu'], 2)} | {p['good']} / {p['bad']} | {p['gen']:.2f}"
                + (" (the limit)" if p["mpps"] >= 0.9 * p["gen"] else "") + " |"
            )
    out.append("")
    out.append(
        "× null: against the null forwarder in the same busy-poll mode (busy-polling rows against the "
        "busy-polling null forwarder). Mpps: good frames the sink counted per second of the window. CPU-µs/packet: busy time of the "
        "forwarding core (`/proc/stat`: everything but idle and iowait) over the window, per good frame — "
        "under overload it includes the work spent on frames that were then dropped. TCP frames are SYNs. "
        "\"The limit\": the row forwarded about all the generator sent, so the figure is the generator's (it shares its "
        "core with the sink's NAPI thread, which takes more of it the more frames arrive)."
    )
    if lats:
        out.append("\n## Latency (UDP, generator stamp to sink, through the lb)\n")
        out.append("| row | load (of xlb DR peak) | offered Mpps | delivered Mpps | p50 µs | p99 µs | p99.9 µs |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for w in lats:
            lat = w["sink"].get("latency_us") or {}
            out.append(
                f"| {ROW_NAMES[w['row']]} | {w['load']:.0%} | {w['gen']['mpps']:.3f} | {w['sink']['mpps']:.3f} | "
                f"{fmt(lat.get('p50'), 1)} | {fmt(lat.get('p99'), 1)} | {fmt(lat.get('p999'), 1)} |"
            )
        out.append(
            "\nThe latency runs cap the generator's rate in its XDP program (a frame is emitted only when due), "
            "so frames leave evenly; the stamp is `bpf_ktime_get_ns()` at generation, read back by the sink. "
            "The percentiles include both veth hops and the sink's own wake-up."
        )
    bp = busy_poll_lines(windows)
    if bp:
        out.append("\n## Busy polling\n")
        out.extend(bp)
    t = targets(peaks, lats)
    if t:
        out.append("\n## Targets (veth, copy mode)\n")
        for text, met in t:
            out.append(f"- {'met' if met else '**missed**'}: {text}")
    out.append("")
    out.append(why(peaks, lats, profile))
    if profile:
        out.append("\n## Where the time goes\n")
        out.append(profile.rstrip())
    out.append("")
    return "\n".join(out)


def plot(meta, windows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peaks = peak_rows(windows)
    lats = latency_rows(windows)
    fig, axes = plt.subplots(1, 2 if lats else 1, figsize=(14 if lats else 9, 5.5))
    if not lats:
        axes = [axes]
    ax = axes[0]
    rows = [r for r in ORDER if any((p, r) in peaks for p in ("udp", "tcp"))]
    width = 0.38
    for i, (proto, color) in enumerate((("udp", "#3b75af"), ("tcp", "#ef8636"))):
        xs, ys, lo, hi = [], [], [], []
        for j, row in enumerate(rows):
            p = peaks.get((proto, row))
            if p:
                xs.append(j + (i - 0.5) * width)
                ys.append(p["mpps"])
                lo.append(p["mpps"] - p["min"])
                hi.append(p["max"] - p["mpps"])
        if xs:
            ax.bar(xs, ys, width, yerr=[lo, hi], label=proto.upper(), color=color, capsize=3)
            for x, y in zip(xs, ys):
                ax.text(x, y, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([ROW_NAMES[r].split(" (")[0].replace("kernel ", "kernel\n") for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Mpps (64-byte frames, one forwarding core)")
    ax.set_title("Peak rate, median of windows (bars: min–max)")
    ax.legend()
    if lats:
        ax = axes[1]
        colors = iter(["#3b75af", "#519e3e", "#c53a32", "#8d69b8", "#ef8636"])
        for row in ORDER:
            ws = [w for w in lats if w["row"] == row and w["sink"].get("latency_us")]
            if not ws:
                continue
            color = next(colors, "black")
            name = ROW_NAMES[row].split(" (")[0]
            loads = [w["load"] * 100 for w in ws]
            ax.plot(loads, [w["sink"]["latency_us"]["p99"] for w in ws], marker="o", color=color, label=f"{name} p99")
            ax.plot(loads, [w["sink"]["latency_us"]["p50"] for w in ws], marker="x", linestyle="--", color=color, label=f"{name} p50")
        ax.set_xlabel("offered load, % of xlb DR's peak")
        ax.set_ylabel("latency, µs (log)")
        ax.set_yscale("log")
        ax.set_title("Latency through the lb (UDP)")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"xlb side by side — {meta['cpu']}, kernel {meta['kernel']}, commit {meta['commit']}, "
        f"AF_XDP {meta['xsk_mode']}, {meta['date']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    meta, windows = load(sys.argv[1])
    profile = open(sys.argv[4]).read() if len(sys.argv) == 5 else ""
    with open(sys.argv[2], "w") as f:
        f.write(markdown(meta, windows, profile))
    plot(meta, windows, sys.argv[3])


if __name__ == "__main__":
    main()
