// SPDX-License-Identifier: MIT OR Apache-2.0
//
// xlb_decap: the real server's side of xlb's tunnel mode (`xlb decap`). It strips the outer
// headers of a tunnelled packet addressed to this host and hands the inner packet to the
// kernel's stack, behind the frame's own MAC header:
//   - IPIP: outer IPv4 (IHL 5, not a fragment, header checksum right) to an address of
//     `local4`, protocol 4 (inner IPv4) or 41 (inner IPv6);
//   - IPv6 outer (fixed header only: no extension header is walked) to an address of
//     `local6`, next header 41 (inner IPv6) or 4 (inner IPv4);
//   - GUE: either outer, UDP (directly after the outer header) to the destination port of
//     `config` (0: GUE off), whose payload is the inner packet directly ("variant 1": the
//     first nibble is the IP version, 4 or 6) or behind a 4-byte GUE variant 0 header with
//     no options and no flags (hlen 0, proto/ctype 4 or 41). The UDP checksum is not
//     checked: the inner IP header and transport checksums are, by the kernel, end to end.
// The inner packet must be whole: its header fully there, its version the one the outer
// protocol names, its own length (IPv4 total length, IPv6 payload length + 40) not beyond
// what the outer header (and the UDP length) says it carries. The frame then loses the
// outer headers (bpf_xdp_adjust_head), the MAC addresses move up, and the Ethernet type
// becomes the inner packet's (0x0800 or 0x86dd). Bytes past the inner packet (Ethernet
// padding, or what the outer length counted beyond it) stay: the kernel trims a packet to
// its IP length.
//
// Everything else is XDP_PASS, untouched: the program never drops and never rewrites a
// frame it does not decapsulate. What is passed untouched although it was a tunnel packet
// to this host is counted by reason (fragment, outer IPv4 options, malformed), so an
// operator sees why the kernel got it. VLAN-tagged frames are passed (not looked into).
//
// Counters: `stats`, per-CPU, one per outcome (enum stat; mirrored in decap.rs). Addresses
// and the port are kept in network byte order, as they sit in the frame.

#include "xlb_bpf.h"

#define IPV6_LEN 40
#define UDP_LEN 8
#define GUE_LEN 4

#define PROTO_IPIP 4
#define PROTO_UDP 17
#define PROTO_IPV6 41

enum stat {
    STAT_IPIP,          /* IPv4 outer, protocol 4 or 41: decapsulated */
    STAT_IP6,           /* IPv6 outer, next header 41 or 4: decapsulated */
    STAT_GUE,           /* GUE, either outer: decapsulated */
    STAT_PASSED,        /* not a tunnel packet to this host: passed untouched */
    STAT_FRAGMENT,      /* a tunnel packet to this host, an outer fragment: passed */
    STAT_IP_OPTIONS,    /* IPIP to this host with outer IPv4 options: passed */
    STAT_MALFORMED,     /* a tunnel packet to this host that is not whole or not right: passed */
    STAT_ADJUST_FAILED, /* bpf_xdp_adjust_head refused: passed untouched */
    STAT_COUNT,
};

/* The values of `config`'s one entry. */
struct decap_config {
    __u16 gue_port; /* GUE's UDP destination port, network order; 0: GUE off */
    __u16 pad;      /* always 0 */
};

struct addr6 {
    __u32 word[4];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, __u8);
} local4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, struct addr6);
    __type(value, __u8);
} local6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct decap_config);
} config SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STAT_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)BPF_FUNC_xdp_adjust_head;

/* Whether the 20-byte IPv4 header at `ip` (bounds checked by the caller) sums to 0xffff. */
static __attribute__((always_inline)) int ipv4_checksum_ok(const __u8 *ip)
{
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < IPV4_LEN; i += 2)
        sum += *(const __u16 *)(ip + i);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}

/* The Ethernet type of the inner packet at `inner` if it is whole within `avail` bytes (the
 * outer's own count, already bounded by the frame) and of `version` (4 or 6); else 0. */
static __attribute__((always_inline)) __u16 inner_type(const __u8 *inner, const __u8 *end,
                                                       __u32 avail, __u8 version)
{
    if (version == 4) {
        if (inner + IPV4_LEN > end || avail < IPV4_LEN || (inner[0] >> 4) != 4)
            return 0;
        __u32 header = (inner[0] & 0x0f) * 4;
        __u32 total = BE16(*(const __u16 *)(inner + 2));
        if (header < IPV4_LEN || total < header || total > avail)
            return 0;
        return BE16(0x0800);
    }
    if (version == 6) {
        if (inner + IPV6_LEN > end || avail < IPV6_LEN || (inner[0] >> 4) != 6)
            return 0;
        __u32 total = BE16(*(const __u16 *)(inner + 4)) + IPV6_LEN;
        if (total > avail)
            return 0;
        return BE16(0x86dd);
    }
    return 0;
}

/* The inner IP version an outer protocol number names (4: IPv4, 41: IPv6); 0 for others. */
static __attribute__((always_inline)) __u8 version_of(__u8 proto)
{
    return proto == PROTO_IPIP ? 4 : proto == PROTO_IPV6 ? 6 : 0;
}

/* For UDP at `udp` (the outer payload: `avail` bytes by the outer's count): 0 if it is not
 * to the GUE port, else STAT_GUE with `*strip` grown by the UDP (and GUE) header and
 * `*version` the inner's, or STAT_MALFORMED. */
static __attribute__((always_inline)) int gue(const __u8 *udp, const __u8 *end, __u32 avail,
                                              __u32 *strip, __u8 *version, __u32 *inner_avail)
{
    __u32 key = 0;
    struct decap_config *cfg = bpf_map_lookup_elem(&config, &key);
    if (!cfg || !cfg->gue_port)
        return 0;
    if (udp + UDP_LEN > end)
        /* Too short to say; to this host, with UDP: the kernel's. */
        return 0;
    if (*(const __u16 *)(udp + 2) != cfg->gue_port)
        return 0;
    __u32 length = BE16(*(const __u16 *)(udp + 4));
    if (length < UDP_LEN || length > avail || udp + UDP_LEN + 1 > end)
        return STAT_MALFORMED;
    const __u8 *payload = udp + UDP_LEN;
    __u32 left = length - UDP_LEN;
    __u8 variant = payload[0] >> 6;
    if (variant == 1) {
        /* The inner packet directly: 0x4_ or 0x6_. */
        *version = payload[0] >> 4;
        *strip += UDP_LEN;
        *inner_avail = left;
        return STAT_GUE;
    }
    /* Variant 0 with no option (hlen 0), no flags, carrying IPv4 or IPv6. */
    if (variant != 0 || payload + GUE_LEN > end || left < GUE_LEN ||
        payload[0] != 0 || *(const __u16 *)(payload + 2) != 0)
        return STAT_MALFORMED;
    *version = version_of(payload[1]);
    if (!*version)
        return STAT_MALFORMED;
    *strip += UDP_LEN + GUE_LEN;
    *inner_avail = left - GUE_LEN;
    return STAT_GUE;
}

SEC("xdp")
int xlb_decap(struct xdp_md *ctx)
{
    __u8 *frame = (__u8 *)(long)ctx->data;
    __u8 *end = (__u8 *)(long)ctx->data_end;
    __u32 stat = STAT_PASSED;
    int action = XDP_PASS;
    __u32 strip = 0;        /* bytes of outer headers behind the MAC header */
    __u32 inner_avail = 0;  /* bytes the outer says it carries after them */
    __u8 version = 0;       /* the inner packet's IP version */
    __u32 decapsulated = 0; /* the counter of a success */

    if (frame + ETH_LEN > end)
        goto out;
    __u16 ether_type = *(__u16 *)(frame + 12);
    __u8 *ip = frame + ETH_LEN;

    if (ether_type == BE16(0x0800)) {
        if (ip + IPV4_LEN > end || (ip[0] >> 4) != 4)
            goto out;
        if (!bpf_map_lookup_elem(&local4, ip + 16))
            goto out;
        __u8 proto = ip[9];
        if (proto != PROTO_IPIP && proto != PROTO_IPV6 && proto != PROTO_UDP)
            goto out;
        if (ip[0] != 0x45) {
            /* Options: a UDP port cannot be read where we look, so only IPIP is counted. */
            if (proto != PROTO_UDP)
                stat = STAT_IP_OPTIONS;
            goto out;
        }
        __u32 total = BE16(*(__u16 *)(ip + 2));
        __u16 fragment = *(__u16 *)(ip + 6) & BE16(0x3fff);
        if (proto == PROTO_UDP) {
            /* Only a first fragment (or a whole packet) shows the port. */
            if (fragment & BE16(0x1fff))
                goto out;
            __u32 avail = total > IPV4_LEN ? total - IPV4_LEN : 0;
            int found = gue(ip + IPV4_LEN, end, avail, &strip, &version, &inner_avail);
            if (!found)
                goto out;
            if (fragment) {
                stat = STAT_FRAGMENT;
                goto out;
            }
            if (found != STAT_GUE) {
                stat = found;
                goto out;
            }
            decapsulated = STAT_GUE;
        } else {
            if (fragment) {
                stat = STAT_FRAGMENT;
                goto out;
            }
            version = version_of(proto);
            inner_avail = total > IPV4_LEN ? total - IPV4_LEN : 0;
            decapsulated = STAT_IPIP;
        }
        /* The outer must be whole and right before anything behind it is believed. */
        if (total < IPV4_LEN || ip + total > end || !ipv4_checksum_ok(ip)) {
            stat = STAT_MALFORMED;
            goto out;
        }
        strip += IPV4_LEN;
    } else if (ether_type == BE16(0x86dd)) {
        if (ip + IPV6_LEN > end || (ip[0] >> 4) != 6)
            goto out;
        if (!bpf_map_lookup_elem(&local6, ip + 24))
            goto out;
        __u8 next = ip[6];
        __u32 payload = BE16(*(__u16 *)(ip + 4));
        if (next == PROTO_UDP) {
            int found = gue(ip + IPV6_LEN, end, payload, &strip, &version, &inner_avail);
            if (!found)
                goto out;
            if (found != STAT_GUE) {
                stat = found;
                goto out;
            }
            decapsulated = STAT_GUE;
        } else if (next == PROTO_IPIP || next == PROTO_IPV6) {
            version = version_of(next);
            inner_avail = payload;
            decapsulated = STAT_IP6;
        } else {
            goto out;
        }
        if (ip + IPV6_LEN + payload > end) {
            stat = STAT_MALFORMED;
            goto out;
        }
        strip += IPV6_LEN;
    } else {
        goto out;
    }

    /* `strip` is at most 40 + 8 + 4: a constant bound the verifier sees through the mask. */
    strip &= 0x3f;
    __u8 *inner = ip + strip;
    __u16 new_type = inner_type(inner, end, inner_avail, version);
    if (!new_type) {
        stat = STAT_MALFORMED;
        goto out;
    }

    /* The MAC addresses move up by `strip`; the Ethernet type becomes the inner's. */
    __u32 dst_head = *(__u32 *)frame;
    __u32 dst_src = *(__u32 *)(frame + 4);
    __u32 src_tail = *(__u32 *)(frame + 8);
    if (bpf_xdp_adjust_head(ctx, (int)strip)) {
        stat = STAT_ADJUST_FAILED;
        goto out;
    }
    frame = (__u8 *)(long)ctx->data;
    end = (__u8 *)(long)ctx->data_end;
    if (frame + ETH_LEN > end) {
        /* Cannot happen (the inner header was there); the frame is no longer whole. */
        stat = STAT_ADJUST_FAILED;
        action = XDP_DROP;
        goto out;
    }
    *(__u32 *)frame = dst_head;
    *(__u32 *)(frame + 4) = dst_src;
    *(__u32 *)(frame + 8) = src_tail;
    *(__u16 *)(frame + 12) = new_type;
    stat = decapsulated;

out:;
    __u64 *counter = bpf_map_lookup_elem(&stats, &stat);
    if (counter)
        *counter += 1;
    return action;
}

/* No GPL-only helper is used, so the crate's own licence will do. */
char LICENSE[] SEC("license") = "MIT OR Apache-2.0";
