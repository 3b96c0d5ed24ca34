#!/usr/bin/env python3
"""The table and plot of bench/sidebyside.

usage: sidebyside_report.py RESULTS.jsonl OUT.md OUT.png [PROFILE.txt]
       sidebyside_report.py --where ROW PROFILE_DIR SINK_JSON CORE
       sidebyside_report.py --window SAMPLE_BEFORE SAMPLE_AFTER
       sidebyside_report.py --refuse RAW.jsonl TOLERANCE REPEATS

RESULTS.jsonl: a first line of metadata (kernel, cpu, commit, date, AF_XDP mode, load), then
one line per measurement window as bench/sidebyside writes them. Peak rows are windows with
"load": null; latency rows carry the fraction of xlb DR's peak they were offered. The table
gives each row's median over its windows; ratios are to the null forwarder and to nftables
DNAT of the same protocol. PROFILE.txt, if given, is quoted under "Where the time goes".

--where: the Markdown section of one profiled row (bench/sidebyside appends it to
PROFILE.txt) from the raw files its profile step left in PROFILE_DIR (perf report by command,
by thread and per thread, perf stat's syscall counts, xlb's /metrics before and after) and
the window's sink JSON (its good frames per second turn counts into per-frame figures).
Whatever is missing is said to be missing, never fatal.

--window: a window's probe (JSON) from bench/sidebyside's two samples of it (window_sample):
the offered load, both cores' time by kind, and the time of the threads sharing them.
--refuse: marks the peak windows of RAW.jsonl (no metadata line) whose offered load differs by
more than TOLERANCE (a fraction) from their row's reference (the median of the upper half of the
row's windows), or after which a core's canary loop took more than 1.3 times its median over the
run (a slow vCPU), or, for xlb's DR, NAT and FullNAT rows, offered more than TOLERANCE below
the null forwarder's reference (the VM's slow state), rewriting it, and prints the
windows each row still lacks to have REPEATS kept ones ("PROTO ROW" a line); the table leaves
refused windows out and "Every window" lists them.

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


def offered(w):
    """The window's offered load, Mpps: what the generator's veth handed its peer or dropped
    for a full ring over the window (its probe), or, for windows without a probe, the
    generator's own rate over its whole run."""
    probe = w.get("probe") or {}
    value = probe.get("offered_mpps")
    return value if value is not None else w["gen"]["mpps"]


def offered_reference(values):
    """A row's reference offered load: the median of the upper half of its windows', the
    middle one included (of two or three, the mean of the best two; of four, the third
    best). Not the best alone, so that one lucky window does not get all the others refused;
    not the median of all, so that a row whose windows were mostly starved is still judged
    against the ones that were not."""
    ordered = sorted(values)
    return statistics.median(ordered[(len(ordered) - 1) // 2 :])


SLOW_CORE = 1.3
"""A window is run on a slow core when a core's canary loop after it took more than this
times that core's median over the run (the hypervisor ran the vCPU slower for a while)."""


def slow_cores(windows):
    """{id(window): [core]} of the windows whose canary loop (`loop_ns`) on some core took more
    than SLOW_CORE times that core's median over every window of the run that has one."""
    speeds = {}
    for w in windows:
        for core, ns in ((w.get("probe") or {}).get("loop_ns") or {}).items():
            speeds.setdefault(core, []).append(ns)
    typical = {core: statistics.median(values) for core, values in speeds.items()}
    out = {}
    for w in windows:
        loops = (w.get("probe") or {}).get("loop_ns") or {}
        slow = sorted(c for c, ns in loops.items() if ns > SLOW_CORE * typical[c])
        if slow:
            out[id(w)] = slow
    return out


NULL_FLOOR_ROWS = ("xlb-dr", "xlb-nat", "xlb-fullnat")
"""Rows held to the null forwarder's offered load too ([refuse]): they take their frames
through the same AF_XDP path as `null`, and deliver at most what it does, so the generator,
which shares its core with the sink's NAPI thread, is offered at least as much beside them.
One offered much less ran in the VM's slow state (0.75 Mpps against 1.45 in 06b–06g), however
alike its own windows are (06g: all three of UDP xlb DR's were, and were kept). The -bp rows
are not: their xlb rows were offered about 0.77 of null-bp's in every run of 06b–06g, the
busy-polling worker taking a share of the cores."""


def refuse(windows, tolerance, repeats):
    """Marks each peak window "refused" whose offered load differs by more than `tolerance`
    (a fraction) from its row's reference (same protocol; [offered_reference]) in the run,
    either way (a window offered much more ran in another state of the machine), or that ran
    on a slow core ([slow_cores]), with the reason in "refused_why", and returns
    [(proto, row)], one entry per window a row still lacks to have `repeats` kept ones. Each
    row has its own reference, not one rate for all rows: the sink's NAPI thread shares the
    generator's core, so a row that delivers more leaves the generator less."""
    groups = {}
    for w in windows:
        if w["load"] is None:
            groups.setdefault((w["proto"], w["row"]), []).append(w)
    slow = slow_cores(windows)
    redo = []
    references = {key: offered_reference([offered(w) for w in ws]) for key, ws in groups.items()}
    for key, ws in groups.items():
        reference = references[key]
        null = references.get((key[0], "null")) if key[1] in NULL_FLOOR_ROWS else None
        # A row held to null is judged against null's reference where its own is lower (most
        # of its windows in the slow state): its fast windows are then the ones kept.
        below_null = null is not None and reference < null
        if below_null:
            reference = null
        for w in ws:
            why = []
            if abs(offered(w) - reference) > tolerance * reference:
                why.append("offered below null" if below_null and offered(w) < reference else "offered load")
            if id(w) in slow:
                why.append("slow core " + ", ".join(slow[id(w)]))
            w["refused"] = bool(why)
            if why:
                w["refused_why"] = "; ".join(why)
            else:
                w.pop("refused_why", None)
        kept = sum(not w["refused"] for w in ws)
        redo += [key] * max(0, repeats - kept)
    return redo


def peak_rows(windows):
    """{(proto, row): summary} over the peak windows that were not refused (see [refuse]); a
    row whose every window was refused is summarised over them all, and says so ("refused"
    equal to "windows"), rather than left out."""
    out = {}
    for proto in ("udp", "tcp"):
        for row in ORDER:
            every = [w for w in windows if w["load"] is None and w["row"] == row and w["proto"] == proto]
            ws = [w for w in every if not w.get("refused")] or every
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
                "offered": median([offered(w) for w in ws]),
                "refused": len(every) - len(ws) if ws is not every else len(every),
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
    """(text, met) of each of issue 11's targets that the run measured: each xlb row against
    the null forwarder configured the same way, against nftables DNAT (×1.5) and kernel
    forwarding (×0.9), in interrupt mode and with busy polling; p99 added at 50% load."""
    out = []
    nft, fwd = (peaks.get(("udp", r)) for r in ("nft-dnat", "kernel-fwd"))
    for suffix, how in (("", "interrupt mode"), ("-bp", "busy polling")):
        n = peaks.get(("udp", "null" + suffix))
        dr = peaks.get(("udp", "xlb-dr" + suffix))
        if dr and n:
            r = dr["mpps"] / n["mpps"]
            out.append((f"xlb DR ≥ 1.0× the null forwarder, both in {how} (UDP): {r:.2f}×", r >= 1.0))
        for mode in ("dr", "nat", "fullnat"):
            x = peaks.get(("udp", f"xlb-{mode}{suffix}"))
            if x and nft:
                r = x["mpps"] / nft["mpps"]
                out.append((f"{ROW_NAMES['xlb-' + mode]} ≥ 1.5× nftables DNAT, {how} (UDP): {r:.2f}×", r >= 1.5))
        if dr and fwd:
            r = dr["mpps"] / fwd["mpps"]
            out.append((f"xlb DR ≥ 0.9× kernel IPv4 forwarding, {how} (UDP): {r:.2f}×", r >= 0.9))
    at = {(w["row"], w["load"]): w for w in lats}
    for row in ("xlb-dr", "xlb-dr-bp"):
        xlb = at.get((row, 0.5))
        for base in ("xdp-redirect", "kernel-fwd"):
            direct = at.get((base, 0.5))
            if xlb and direct and xlb["sink"].get("latency_us") and direct["sink"].get("latency_us"):
                added = xlb["sink"]["latency_us"]["p99"] - direct["sink"]["latency_us"]["p99"]
                out.append((f"p99 added by {ROW_NAMES[row]} at 50% load ≤ 50 µs (against {ROW_NAMES[base]}): {added:.1f} µs", added <= 50))
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
    # Only the whole-core blocks: the per-thread blocks below them give shares of a thread.
    text = section[1].split("### ")[0].split("By thread (tid")[0]
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


def generator_path(windows):
    """How the generator sent, from its JSON: live frames, or the fallback it names (the
    kernel refused live frames)."""
    paths = sorted({w["gen"].get("fallback") or "live" for w in windows if "gen" in w}, key=str)
    names = {
        "live": "BPF_PROG_RUN live frames",
        "afxdp": "frames made in user space and sent by AF_XDP (the kernel refused live frames)",
        "bpf-packet": "BPF_PROG_RUN on single frames sent by AF_PACKET (the kernel refused live frames "
        "and no AF_XDP socket opened: the figures may measure the generator)",
        True: "BPF_PROG_RUN on single frames sent by AF_PACKET (the kernel refused live frames)",
    }
    return "; ".join(names.get(p, str(p)) for p in paths) or "BPF_PROG_RUN live frames"


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
        f"- traffic: 64-byte frames (60 without FCS), {meta['flows']} flows, generator = {generator_path(windows)} "
        f"(`xlb bench gen`); {meta['repeats']} round(s), each a window of {meta['measure_s']} s per row after {meta['warmup_s']} s "
        f"warm-up (rows interleaved, so other work on the machine spreads over all of them); the table shows the median "
        f"window (min–max in brackets)"
    )
    out.append(
        "- veth: the receiving ends (the lb's `lg`, the sink's `s`) have GRO on, so they accept XDP frames "
        "whatever the row attaches; the sink is an XDP program on `s` that checks, counts, times and drops"
    )
    if "tolerance" in meta:
        paced = meta.get("offered", "null")
        out.append(
            "- offered load: "
            + ("the generator unpaced (as fast as it goes)" if paced in (None, "null") else f"the generator paced at {int(paced):,} frames/s")
            + f"; every window's measured (\"Every window\"); a peak window whose offered load differs by more than {meta['tolerance'] * 100:.0f}% "
            f"from its row's reference (the median of the upper half of the row's windows), an xlb DR, NAT or FullNAT one offered "
            f"that much below the null forwarder's reference, or one that ran on a slow core "
            f"(a core's canary loop after it more than {SLOW_CORE}× its median over the run), is refused and redone after "
            f"the rounds ({meta['redo']} pass(es) at most)"
        )
    out.append(f"- load average (1, 5, 15 min) before: {meta['load_before']}; after: {meta['load_after']}")
    out.append("")
    out.append("## Peak forwarding rate\n")
    out.append("| proto | row | Mpps | × null | × nftables | CPU-µs/packet | good / bad frames | offered Mpps | windows refused |")
    out.append("|---|---|---:|---:|---:|---:|---|---:|---:|")
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
                f"{ratio(p['mpps'], nft)} | {fmt(p['cpu'], 2)} | {p['good']} / {p['bad']} | {p['offered']:.3f}"
                + (" (the limit)" if p["mpps"] >= 0.9 * p["offered"] else "")
                + (f" | {p['refused']} (all: these figures are theirs) |" if p["refused"] == p["windows"] else f" | {p['refused']} |")
            )
    out.append("")
    out.append(
        "× null: against the null forwarder in the same busy-poll mode (busy-polling rows against the "
        "busy-polling null forwarder). Mpps: good frames the sink counted per second of the window. CPU-µs/packet: busy time of the "
        "forwarding core (`/proc/stat`: everything but idle and iowait) over the window, per good frame — "
        "under overload it includes the work spent on frames that were then dropped. TCP frames are SYNs. "
        "Offered Mpps: the median window's offered load, frames the generator's veth handed the lb or dropped for a "
        "full ring, per second of the window. \"The limit\": the row forwarded about all that was offered, so the "
        "figure is the generator's. Windows refused: peak windows whose offered load differed by more than "
        f"{meta.get('tolerance', 0) * 100:.0f}% from the row's reference (the median of the upper half of its "
        "windows: below it, the generator starved; above it, the machine ran faster for a while), or, for xlb's DR, NAT and FullNAT rows, that was offered more than that "
        "below the null forwarder's reference (the VM's slow state), or that ran on a "
        f"slow core (its canary loop more than {SLOW_CORE}× its median over the run); they were redone, and are left out of the medians (see \"Every window\")."
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
            "\nThe latency runs cap the generator's rate (a frame is emitted only when due: in its XDP program, or "
            "by its AF_XDP fallback's pacer, which sends at most 8 due frames per kick), so frames leave evenly; the "
            "stamp is CLOCK_MONOTONIC (`bpf_ktime_get_ns()`) at generation, read back by the sink. "
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
    out.extend(every_window(meta, windows))
    if profile:
        out.append("\n## Where the time goes\n")
        out.append(profile.rstrip())
    out.append("")
    return "\n".join(out)


def every_window(meta, windows):
    """The "Every window" section: each window's offered load and what shared its cores."""
    if not any(w.get("probe") for w in windows):
        return []
    cores = meta["cores"]
    gen_core, fwd_core = str(cores["gen"]), str(cores["forwarding"])
    out = ["\n## Every window\n"]
    out.append(
        f"In run order (rounds past {meta.get('repeats', 0)}: windows redone). Offered: frames per second the generator's veth handed the lb or dropped (full ring); "
        f"delivered: good frames at the sink. Core {gen_core} (the generator's) and core {fwd_core} (forwarding): "
        "each thread's share of the window on a CPU / runnable but waiting, from `/proc/PID/task/*/schedstat`; "
        "other: the core's busy share no listed thread accounts for (other processes, kworkers, interrupts); "
        "steal: time the hypervisor gave the vCPU to someone else (`/proc/stat`); loop ns: each core's speed "
        "right after the window, nanoseconds of CPU time per iteration of a fixed Python loop (higher: the vCPU "
        "ran slower, which no counter inside the guest shows).\n"
    )
    out.append(
        f"| # | proto | row | round | load | offered Mpps | delivered Mpps | gen | sink NAPI | other {gen_core} | steal {gen_core} "
        f"| lb NAPI | forwarder | other {fwd_core} | steal {fwd_core} | loop ns {gen_core} / {fwd_core} | kept |"
    )
    out.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")

    def share(threads, name):
        t = threads.get(name)
        return f"{t['cpu']:.2f} / {t['wait']:.2f}" if t else "–"

    for i, w in enumerate(windows, 1):
        probe = w.get("probe") or {}
        threads = probe.get("threads") or {}
        c0 = (probe.get("cores") or {}).get(gen_core, {})
        c1 = (probe.get("cores") or {}).get(fwd_core, {})
        loops = probe.get("loop_ns") or {}
        load = "peak" if w["load"] is None else f"{w['load']:.0%}"
        kept = f"**refused** ({w.get('refused_why', 'offered load')})" if w.get("refused") else "yes"
        out.append(
            f"| {i} | {w['proto'].upper()} | {w['row']} | {w['repeat']} | {load} | {offered(w):.3f} | {w['sink']['mpps']:.3f} | "
            f"{share(threads, 'gen')} | {share(threads, 'sink_napi')} | {fmt(c0.get('other'), 2)} | {fmt(c0.get('steal'), 2)} | "
            f"{share(threads, 'lb_napi')} | {share(threads, 'fwd')} | {fmt(c1.get('other'), 2)} | {fmt(c1.get('steal'), 2)} | "
            f"{fmt(loops.get(gen_core), 1)} / {fmt(loops.get(fwd_core), 1)} | {kept} |"
        )
    return out


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


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def parse_metrics(text):
    """{(name, bucket): value} summed over every other label; bucket is the le or size label's
    value, None where there is neither."""
    import re

    out = {}
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        # Buckets stay apart: a histogram's le, or a size label (batches by size).
        bucket = re.search(r'\b(?:le|size)="([^"]*)"', m.group(2) or "")
        key = (m.group(1), bucket.group(1) if bucket else None)
        out[key] = out.get(key, 0.0) + value
    return out


def parse_syscalls(text):
    """({event: count}, {thread: count of raw_syscalls:sys_enter}) from perf stat -x,
    --per-thread output; counts of '<not counted>' are skipped."""
    per_event, per_thread = {}, {}
    for line in (text or "").splitlines():
        fields = line.split(",")
        if len(fields) < 4 or line.startswith("#"):
            continue
        thread, count, event = fields[0], fields[1], fields[3]
        try:
            count = int(float(count))
        except ValueError:
            continue
        name = event.split(":")[-1].replace("sys_enter_", "")
        name = "all" if event == "raw_syscalls:sys_enter" else name
        per_event[name] = per_event.get(name, 0) + count
        if name == "all":
            per_thread[thread] = per_thread.get(thread, 0) + count
    return per_event, per_thread


def batch_sizes(before, after):
    """Markdown lines for the receive-batch size distribution between two scrapes, whichever
    way xlb exports it: counters by a size label (xlb_port_rx_batches_by_size_total{size="2-3"})
    or a histogram's cumulative buckets (..._bucket{le="8"}); a note if it exports neither."""
    import re

    def low(label):
        m = re.match(r"[0-9.]+|\+?Inf", label)
        return float("inf") if not m or "Inf" in m.group(0) else float(m.group(0))

    family = lambda name: "batch" in name and "size" in name and name.startswith("xlb_port_")  # noqa: E731
    delta = {k: after[k] - before.get(k, 0.0) for k in after if k[1] is not None and family(k[0])}
    by_size = sorted(((b, v) for (n, b), v in delta.items() if not n.endswith("_bucket")), key=lambda bv: low(bv[0]))
    cumulative = sorted(((low(b), v) for (n, b), v in delta.items() if n.endswith("_bucket")))
    rows = []
    if by_size:
        total = sum(v for _, v in by_size) or 1
        rows = [(b, v, v / total) for b, v in by_size]
    elif cumulative:
        total = cumulative[-1][1] or 1
        previous = 0.0
        for le, value in cumulative:
            rows.append((f"≤ {le:g}", value - previous, (value - previous) / total))
            previous = value
    if not rows:
        return ["- (no batch-size distribution in this xlb's /metrics: the mean above is all it says)"]
    out = ["\nReceive batches by size (frames in the batch):\n", "| frames | batches | share |", "|---:|---:|---:|"]
    out += [f"| {b} | {v:,.0f} | {share:.1%} |" for b, v, share in rows]
    return out


def where(row, directory, sink_json, core):
    """The Markdown of one profiled row."""
    import os

    path = lambda name: os.path.join(directory, name)  # noqa: E731
    sink = json.loads(sink_json) if sink_json else {}
    seconds = float(read(path("seconds")) or 0)
    out = [f"### {row} (UDP, peak): core {core}, {seconds:g} s of the window\n"]
    skipped = read(path("skipped"))
    if skipped:
        out.append(f"Not profiled: {skipped.strip()}.\n")
        return "\n".join(out) + "\n"
    rate = sink.get("mpps", 0) * 1e6
    frames = rate * seconds
    out.append(
        f"The window delivered {rate / 1e6:.3f} Mpps of good frames, so about {frames:,.0f} in the {seconds:g} s profiled "
        "(perf itself slows the row a little: its figures are not the table's).\n"
    )

    record_skipped = read(path("record.skipped"))
    if record_skipped:
        out.append(f"No CPU profile: {record_skipped.strip()}.\n")
    else:
        for title, name in (("By command", "comm.txt"), ("Hottest functions (all threads)", "symbols.txt")):
            text = read(path(name))
            if text and text.strip():
                out.append(f"{title}:\n\n```\n{text.rstrip()}\n```\n")
        threads = (read(path("threads.txt")) or "").strip()
        if threads:
            out.append(f"By thread (tid:command, share of core {core}'s samples), with the hottest functions of each "
                       "thread at 2% or more (share of that thread's samples):\n")
            for line in threads.splitlines():
                parts = line.split()
                if len(parts) < 2:
                    continue
                tid = parts[1].split(":")[0]
                out.append(f"- {' '.join(parts)}")
                top = (read(path(f"thread-{tid}.txt")) or "").rstrip()
                if top:
                    out.append("\n  ```\n" + "\n".join("  " + l for l in top.splitlines()) + "\n  ```")
            out.append("")

    stat_skipped = read(path("syscalls.skipped"))
    per_event, per_thread = parse_syscalls(read(path("syscalls.csv")))
    before, after = parse_metrics(read(path("metrics.before"))), parse_metrics(read(path("metrics.after")))
    delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}
    rx = delta.get(("xlb_port_rx_packets_total", None), 0)
    tx = delta.get(("xlb_port_tx_packets_total", None), 0)
    batches = delta.get(("xlb_port_batches_total", None), 0)
    try:
        span = float(read(path("metrics.after.t"))) - float(read(path("metrics.before.t")))
    except (TypeError, ValueError):
        span = 0.0
    # Per second, from the scrapes (each taken as a new render appeared).
    rx_rate = rx / span if span > 0 and rx else None
    batch_rate = batches / span if span > 0 and batches else None

    out.append("Syscalls of the forwarding process (perf stat on its tracepoints, every thread):\n")
    if stat_skipped:
        out.append(f"Not counted: {stat_skipped.strip()}.\n")
    elif not per_event:
        out.append("Not counted: perf stat wrote nothing.\n")
    else:
        out.append("| syscall | count | per second | per good frame | per received frame | per receive batch |")
        out.append("|---|---:|---:|---:|---:|---:|")
        named = {k: v for k, v in per_event.items() if k != "all"}
        rows = sorted(named.items(), key=lambda kv: -kv[1])
        if "all" in per_event:
            rows.append(("other", max(per_event["all"] - sum(named.values()), 0)))
            rows.append(("all", per_event["all"]))
        for name, count in rows:
            if count == 0 and name not in ("sendto", "recvfrom", "poll", "all"):
                continue
            per_second = count / seconds if seconds else 0
            per_frame = count / frames if frames else None
            per_rx = per_second / rx_rate if rx_rate else None
            per_batch = per_second / batch_rate if batch_rate else None
            out.append(
                f"| {name} | {count} | {per_second:,.0f} | {fmt(per_frame, 4)} | {fmt(per_rx, 4)} | {fmt(per_batch, 3)} |"
            )
        if per_thread:
            busiest = sorted(per_thread.items(), key=lambda kv: -kv[1])[:4]
            out.append("\nAll syscalls by thread: " + ", ".join(f"{t} {c}" for t, c in busiest) + ".")
        out.append(
            "\nPer good frame: the count over the good frames the window delivered in the seconds profiled. Per "
            "received frame and per receive batch: syscalls per second over frames and batches per second from xlb's "
            "/metrics (below; – where the row has none).\n"
        )

    if row.startswith("xlb-"):
        out.append(
            f"Batches (xlb's /metrics: the difference between a scrape just before and one just after, {span:.1f} s "
            "apart):\n"
        )
        if not after:
            out.append("No metrics: the scrape failed.\n")
        elif not batches:
            out.append("No batch counted between the scrapes.\n")
        else:
            wakeups = delta.get(("xlb_port_tx_wakeups_total", None), 0)
            out.append(
                f"- {rx_rate or 0:,.0f} frames and {batch_rate or 0:,.0f} receive batches per second; "
                f"{rx:,.0f} frames received in {batches:,.0f} receive batches: **{rx / batches:.1f} frames per batch** "
                f"(mean); {tx:,.0f} sent ({tx / rx:.0%} of received), {tx / batches:.1f} per batch; "
                f"{wakeups / batches:.3f} TX kicks per batch"
            )
            for (name, bucket), value in sorted(delta.items()):
                if name.startswith("xlb_port_") and bucket is None and name not in (
                    "xlb_port_rx_packets_total", "xlb_port_tx_packets_total", "xlb_port_batches_total",
                    "xlb_port_tx_wakeups_total"):
                    out.append(f"- {name}: +{value:,.0f} ({value / batches:.3f} per batch)")
            out.extend(batch_sizes(before, after))
            out.append("")
    return "\n".join(out) + "\n"


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def read_sample(path):
    """One window_sample file of bench/sidebyside as {key: [numbers]} ("thread NAME ..." as
    "thread:NAME")."""
    sample = {}
    for line in (read(path) or "").splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        if parts[0] == "thread" and len(parts) == 5:
            sample["thread:" + parts[1]] = [int(float(v)) for v in parts[2:]]
        elif parts[0] == "on":
            sample["on:" + parts[1]] = parts[2:]
        elif parts[0] == "speed" and len(parts) == 3:
            sample["speed:" + parts[1]] = [float(parts[2])]
        else:
            sample[parts[0]] = [float(v) for v in parts[1:]]
    return sample


def window_probe(first, last):
    """What two window_sample files say about the window between them: the offered load (frames
    the generator's veth handed its peer, and dropped for a full ring, per second), each core's
    time by kind (shares of the window, from /proc/stat; steal is time the hypervisor gave the
    vCPU to someone else) and each sharing thread's time on a CPU, waiting for one (runnable),
    and its time slices. None where a sample lacks what it needs."""
    a, b = read_sample(first), read_sample(last)
    if "t" not in a or "t" not in b or b["t"][0] <= a["t"][0]:
        return None
    seconds = b["t"][0] - a["t"][0]
    probe = {"seconds": round(seconds, 3)}
    if "gen_tx" in a and "gen_tx" in b:
        taken, dropped = (b["gen_tx"][i] - a["gen_tx"][i] for i in (0, 1))
        probe["offered_mpps"] = round((taken + dropped) / seconds / 1e6, 4)
        probe["taken_mpps"] = round(taken / seconds / 1e6, 4)
    cores = {}
    for key in sorted(k for k in a if k.startswith("cpu") and k in b):
        delta = [y - x for x, y in zip(a[key], b[key])]
        total = sum(delta[: len(CPU_FIELDS)]) or 1
        cores[key[3:]] = {name: round(d / total, 3) for name, d in zip(CPU_FIELDS, delta) if name not in ("nice", "iowait")}
    probe["cores"] = cores
    threads = {}
    for key in sorted(k for k in a if k.startswith("thread:") and k in b):
        run, wait, slices = (y - x for x, y in zip(a[key], b[key]))
        threads[key[7:]] = {"cpu": round(run / 1e9 / seconds, 3), "wait": round(wait / 1e9 / seconds, 3), "slices": slices}
    probe["threads"] = threads
    # Each core's canary right after the window (bench/sidebyside's core_speed; 0: failed).
    speeds = {k[6:]: b[k][0] for k in sorted(b) if k.startswith("speed:") and b[k][0] > 0}
    if speeds:
        probe["loop_ns"] = speeds
    # "other": the core's busy share that none of the threads placed on it account for
    # (other processes, kworkers, RCU, interrupts, steal).
    for key in (k for k in a if k.startswith("on:")):
        core = cores.get(key[3:])
        if core is not None:
            busy = 1 - core["idle"]
            core["other"] = round(busy - sum(threads[t]["cpu"] for t in a[key] if t in threads), 3)
    return probe


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--refuse":
        # --refuse RAW.jsonl TOLERANCE REPEATS: marks RAW's windows in place and prints the
        # windows still lacking, one "PROTO ROW" a line.
        with open(sys.argv[2]) as f:
            windows = [json.loads(line) for line in f if line.strip()]
        redo = refuse(windows, float(sys.argv[3]), int(sys.argv[4]))
        with open(sys.argv[2], "w") as f:
            f.writelines(json.dumps(w) + "\n" for w in windows)
        for proto, row in redo:
            print(proto, row)
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--window":
        print(json.dumps(window_probe(sys.argv[2], sys.argv[3])))
        return
    if len(sys.argv) == 6 and sys.argv[1] == "--where":
        sys.stdout.write(where(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]))
        return
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    meta, windows = load(sys.argv[1])
    profile = open(sys.argv[4]).read() if len(sys.argv) == 5 else ""
    with open(sys.argv[2], "w") as f:
        f.write(markdown(meta, windows, profile))
    plot(meta, windows, sys.argv[3])


if __name__ == "__main__":
    main()
