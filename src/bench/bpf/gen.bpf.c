// SPDX-License-Identifier: MIT OR Apache-2.0
//
// xlb_gen: the traffic generator's XDP program, run by BPF_PROG_RUN in live-frames mode
// (BPF_F_TEST_XDP_LIVE_FRAMES, as xdp-tools' xdp-trafficgen drives it): every run gets a
// page-pool copy of the template frame (Ethernet, a 20-byte IPv4 header, TCP or UDP),
// gives it a flow and a timestamp, and returns XDP_TX, so the kernel sends it out of the
// test run's ingress device.
//
// Per run, as `gen_config` says:
//   - the template: the frame's first 60 bytes are copied from `gen_template` (restore), as
//     the page may come back changed from where the last frame in it went;
//   - the rate cap and limit: a run before the next frame is due (interval_ns), or after
//     `limit` frames, returns XDP_DROP and emits nothing (a paced generator spins, and its
//     frames leave evenly rather than in bursts);
//   - the flow: counter mode (flows > 0) walks flow i = n mod flows, source port
//     src_port + i mod port_span and source address src_addr + i / port_span; random mode
//     (flows == 0, a SYN flood's spoofed sources) draws the address among src_span from
//     src_addr and the port among port_span from src_port;
//   - the stamp: the low 32 bits of bpf_ktime_get_ns() (CLOCK_MONOTONIC), stored in host
//     order at stamp_offset (TCP: the sequence number; UDP: the first payload bytes), for
//     the sink to measure latency; stamp_offset 0 means no stamp;
//   - checksums (IPv4 header, and TCP/UDP with its pseudo-header) are updated incrementally
//     (RFC 1624) from the values the frame holds. A UDP checksum of 0 (none) stays 0.
//
// Frames too short for the configured offsets leave unchanged. Layout mirrored in generator.rs.

#include "xlb_bpf.h"

struct gen_config {
    __u32 flows;        /* flows to cycle through; 0: random sources */
    __u32 src_addr;     /* first source address, host order */
    __u32 src_span;     /* random mode: source addresses to draw from (at least 1) */
    __u16 src_port;     /* first source port, host order */
    __u16 port_span;    /* source ports per address (at least 1) */
    __u16 stamp_offset; /* frame offset of the 32-bit stamp; 0: none */
    __u16 restore;      /* 1: start every frame from `gen_template` */
    __u32 pad;
    __u64 interval_ns;  /* rate cap: at most one frame per interval; 0: no cap */
    __u64 limit;        /* emit no frame once `count` reaches this; 0: no limit */
};

struct gen_state {
    __u64 count;        /* frames emitted: the flow counter */
    __u64 next_ns;      /* rate cap: when the next frame is due */
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct gen_config);
} gen_config SEC(".maps");

/* Shared by all CPUs (an atomic add: the generator runs on one core, so it is never
 * contended) so that the walk is one sequence. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct gen_state);
} gen_state SEC(".maps");

/* The first TEMPLATE_LEN bytes of the template frame. Live-frames mode recycles pages
 * without copying the template in again, and whoever had the frame may have written to it
 * (a forwarding kernel rewrites the MACs and the TTL in place), so every frame starts anew
 * from this copy. */
#define TEMPLATE_LEN 60
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u8[TEMPLATE_LEN]);
} gen_template SEC(".maps");

/* A rate-capped generator that fell behind by more than this sends on from now rather
 * than in a burst (a burst of at most 200 µs worth). */
#define CATCH_UP_NS 200000

/* RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m'), on 16-bit words as loaded (the one's-complement
 * sum does not depend on byte order). */
static __always_inline void csum_replace2(__u16 *sum, __u16 old, __u16 new)
{
    __u32 c = (__u16)~*sum + (__u16)~old + new;
    c = (c & 0xffff) + (c >> 16);
    c = (c & 0xffff) + (c >> 16);
    *sum = ~c;
}

static __always_inline void csum_replace4(__u16 *sum, __u32 old, __u32 new)
{
    csum_replace2(sum, old & 0xffff, new & 0xffff);
    csum_replace2(sum, old >> 16, new >> 16);
}

SEC("xdp")
int xlb_gen(struct xdp_md *ctx)
{
    __u8 *frame = (__u8 *)(long)ctx->data;
    __u8 *end = (__u8 *)(long)ctx->data_end;
    __u32 zero = 0;
    struct gen_config *config = bpf_map_lookup_elem(&gen_config, &zero);
    struct gen_state *state = bpf_map_lookup_elem(&gen_state, &zero);
    if (!config || !state)
        return XDP_ABORTED;
    __u64 now = bpf_ktime_get_ns();
    if (config->interval_ns) {
        if (now < state->next_ns)
            return XDP_DROP;
        __u64 next = state->next_ns + config->interval_ns;
        state->next_ns = next + CATCH_UP_NS < now ? now : next;
    }
    if (config->limit && state->count >= config->limit)
        return XDP_DROP;
    __u64 n = __sync_fetch_and_add(&state->count, 1);

    if (config->restore) {
        __u8 *template = bpf_map_lookup_elem(&gen_template, &zero);
        if (!template || frame + TEMPLATE_LEN > end)
            return XDP_ABORTED;
        __builtin_memcpy(frame, template, TEMPLATE_LEN);
    }
    __u8 *ip = frame + ETH_LEN;
    __u8 *l4 = ip + IPV4_LEN;
    if (l4 + 20 > end)
        return XDP_TX;
    __u16 *l4_sum;
    if (ip[9] == 6)
        l4_sum = (__u16 *)(l4 + 16);
    else if (ip[9] == 17)
        l4_sum = (__u16 *)(l4 + 6);
    else
        return XDP_TX;
    int l4_has_sum = *l4_sum != 0 || ip[9] == 6;

    __u32 port_span = config->port_span ? config->port_span : 1;
    __u32 addr, port;
    if (config->flows) {
        __u32 flow = n % config->flows;
        port = config->src_port + flow % port_span;
        addr = config->src_addr + flow / port_span;
    } else {
        __u32 src_span = config->src_span ? config->src_span : 1;
        addr = config->src_addr + bpf_get_prandom_u32() % src_span;
        port = config->src_port + bpf_get_prandom_u32() % port_span;
    }
    __u32 new_addr = BE32(addr);
    __u16 new_port = BE16((__u16)port);

    __u32 *src_addr = (__u32 *)(ip + 12);
    __u16 *src_port = (__u16 *)l4;
    __u32 old_addr = *src_addr;
    __u16 old_port = *src_port;
    csum_replace4((__u16 *)(ip + 10), old_addr, new_addr);
    if (l4_has_sum) {
        csum_replace4(l4_sum, old_addr, new_addr);
        csum_replace2(l4_sum, old_port, new_port);
    }
    *src_addr = new_addr;
    *src_port = new_port;

    __u32 offset = config->stamp_offset & 0xff;
    if (offset >= ETH_LEN + IPV4_LEN + 4) {
        __u8 *at = frame + offset;
        if (at + 4 <= end) {
            __u32 stamp = (__u32)now;
            __u32 old = *(__u32 *)at;
            if (l4_has_sum)
                csum_replace4(l4_sum, old, stamp);
            *(__u32 *)at = stamp;
        }
    }
    if (ip[9] == 17 && l4_has_sum && *l4_sum == 0)
        *l4_sum = 0xffff;
    return XDP_TX;
}

char LICENSE[] SEC("license") = "MIT OR Apache-2.0";
