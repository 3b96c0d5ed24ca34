// SPDX-License-Identifier: MIT OR Apache-2.0
//
// xlb_redirect: the benchmark's kernel fast-path row. Every frame at least an Ethernet
// header long gets the destination and source MACs of `redirect_config` and is redirected
// (bpf_redirect) out of its interface; nothing is parsed. Shorter ones are passed. Layout
// mirrored in redirect.rs.

#include "xlb_bpf.h"

struct redirect_config {
    __u32 ifindex; /* where frames leave */
    __u8 dst_mac[6];
    __u8 src_mac[6];
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct redirect_config);
} redirect_config SEC(".maps");

SEC("xdp")
int xlb_redirect(struct xdp_md *ctx)
{
    __u8 *frame = (__u8 *)(long)ctx->data;
    __u8 *end = (__u8 *)(long)ctx->data_end;
    __u32 zero = 0;
    struct redirect_config *config = bpf_map_lookup_elem(&redirect_config, &zero);
    if (!config || frame + ETH_LEN > end)
        return XDP_PASS;
    __builtin_memcpy(frame, config->dst_mac, 6);
    __builtin_memcpy(frame + 6, config->src_mac, 6);
    return bpf_redirect(config->ifindex, 0);
}

char LICENSE[] SEC("license") = "MIT OR Apache-2.0";
