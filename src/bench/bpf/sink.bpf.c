// SPDX-License-Identifier: MIT OR Apache-2.0
//
// xlb_sink: the benchmark sink's XDP program. It checks that every IPv4 frame is what the
// row under test should deliver (`sink_config`: destination MAC, protocol, destination
// and source address ranges, destination port), counts it good or bad (why, in per-CPU
// counters), records the latency of good frames from the generator's stamp (now minus the
// 32-bit bpf_ktime_get_ns() stamp at stamp_offset) in a per-CPU histogram, and drops it.
// Everything that is not IPv4 (ARP, which the lb's kernel or xlb may send) is counted as
// `other` and passed to the kernel.
//
// Histogram buckets: 1 us wide from 0 to 999 us (bucket = us), then 1 ms wide from 1 ms to
// 99 ms (bucket 999 + ms), then one for 100 ms and more (LAT_BUCKETS - 1). Layouts mirrored
// in sink.rs.

#include "xlb_bpf.h"

#define LAT_FINE 1000
#define LAT_BUCKETS 1100

enum sink_stat {
    SINK_GOOD,
    SINK_OTHER,
    SINK_BAD_SHORT,
    SINK_BAD_MAC,
    SINK_BAD_PROTO,
    SINK_BAD_DST,
    SINK_BAD_SRC,
    SINK_BAD_PORT,
    SINK_STAT_COUNT
};

struct sink_config {
    __u8 dst_mac[6];
    __u8 proto;         /* IP protocol number */
    __u8 pad;
    __u32 dst_first;    /* destination addresses dst_first..=dst_last, host order */
    __u32 dst_last;
    __u32 src_first;    /* source addresses src_first..=src_last, host order */
    __u32 src_last;
    __u16 dst_port;     /* host order; 0: any */
    __u16 stamp_offset; /* frame offset of the generator's stamp; 0: no latency */
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct sink_config);
} sink_config SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, SINK_STAT_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} sink_stats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, LAT_BUCKETS);
    __type(key, __u32);
    __type(value, __u64);
} sink_latency SEC(".maps");

static __always_inline void count(__u32 stat)
{
    __u64 *counter = bpf_map_lookup_elem(&sink_stats, &stat);
    if (counter)
        *counter += 1;
}

static __always_inline __u32 latency_bucket(__u32 ns)
{
    __u32 us = ns / 1000;
    if (us < LAT_FINE)
        return us;
    __u32 ms = us / 1000;
    return ms < LAT_BUCKETS - LAT_FINE ? LAT_FINE - 1 + ms : LAT_BUCKETS - 1;
}

SEC("xdp")
int xlb_sink(struct xdp_md *ctx)
{
    __u8 *frame = (__u8 *)(long)ctx->data;
    __u8 *end = (__u8 *)(long)ctx->data_end;
    __u32 zero = 0;

    if (frame + ETH_LEN > end || *(__u16 *)(frame + 12) != BE16(0x0800)) {
        count(SINK_OTHER);
        return XDP_PASS;
    }
    struct sink_config *config = bpf_map_lookup_elem(&sink_config, &zero);
    if (!config)
        return XDP_ABORTED;
    __u8 *ip = frame + ETH_LEN;
    __u8 *l4 = ip + IPV4_LEN;
    if (l4 + 4 > end || ip[0] != 0x45) {
        count(SINK_BAD_SHORT);
        return XDP_DROP;
    }
    for (int i = 0; i < 6; i++) {
        if (frame[i] != config->dst_mac[i]) {
            count(SINK_BAD_MAC);
            return XDP_DROP;
        }
    }
    if (ip[9] != config->proto) {
        count(SINK_BAD_PROTO);
        return XDP_DROP;
    }
    __u32 dst = BE32(*(__u32 *)(ip + 16));
    if (dst < config->dst_first || dst > config->dst_last) {
        count(SINK_BAD_DST);
        return XDP_DROP;
    }
    __u32 src = BE32(*(__u32 *)(ip + 12));
    if (src < config->src_first || src > config->src_last) {
        count(SINK_BAD_SRC);
        return XDP_DROP;
    }
    if (config->dst_port && BE16(*(__u16 *)(l4 + 2)) != config->dst_port) {
        count(SINK_BAD_PORT);
        return XDP_DROP;
    }
    count(SINK_GOOD);

    __u32 offset = config->stamp_offset & 0xff;
    if (offset) {
        __u8 *at = frame + offset;
        if (at + 4 <= end) {
            __u32 bucket = latency_bucket((__u32)bpf_ktime_get_ns() - *(__u32 *)at);
            __u64 *slot = bpf_map_lookup_elem(&sink_latency, &bucket);
            if (slot)
                *slot += 1;
        }
    }
    return XDP_DROP;
}

char LICENSE[] SEC("license") = "MIT OR Apache-2.0";
