// SPDX-License-Identifier: MIT OR Apache-2.0
//
// xlb_steer: the XDP program that hands xlb only the frames xlb owns.
//
// Redirected into the AF_XDP socket at XSKMAP[rx_queue_index] (or passed, if that queue
// has no socket):
//   - IPv4 to an address `dst` maps to OWNER_XLB (a VIP or a FullNAT local address),
//     whatever it carries;
//   - unicast IPv4 from a NAT backend (not to an Ethernet group address nor to 224.0.0.0
//     and up: no reply is multicast or broadcast), unless it goes to an address `dst` maps
//     to OWNER_KERNEL (the box's own: its health checks and SSH talk to backends too):
//     TCP/UDP whose
//     (source address, source port, protocol) is in `nat_src` (a reply xlb must un-NAT),
//     and ICMP errors whose source address is a NAT backend (key: address, port 0,
//     protocol 1); only unfragmented packets with a plain 20-byte header, since xlb never
//     made a reply with options or fragments;
//   - ARP requests for an OWNER_XLB address (xlb answers ARP for what it owns), and ARP
//     (request or reply) whose *sender* is an OWNER_XLB address: another host claiming a
//     VIP, which xlb counts as a conflict (and answers to its probes).
// Everything else goes to the kernel (XDP_PASS): the box's own traffic (SSH, routing, ARP
// for its own address), VLAN tags, IPv6, truncated frames.
//
// Every well-formed Ethernet/IPv4 ARP request or reply with a non-zero sender address is
// also recorded in `arp_seen` (sender address -> sender MAC, bpf_ktime_get_ns()), and still
// passed: xlb learns next-hop MACs without taking ARP replies away from the kernel.
//
// Map layouts are mirrored in steer.rs; keep the two in step. Addresses and ports are kept
// in network byte order, exactly as they sit in the frame.

#include "xlb_bpf.h"

#define ARP_LEN 28

/* ICMP types that are errors quoting a packet: 3 unreachable, 4 source quench, 5 redirect,
 * 11 time exceeded, 12 parameter problem (the set crate::wire::icmp::is_error accepts). */
#define ICMP_ERROR_TYPES ((1u << 3) | (1u << 4) | (1u << 5) | (1u << 11) | (1u << 12))

/* Values of `dst`: who answers for the address. */
enum owner { OWNER_XLB = 1, OWNER_KERNEL = 2 };

enum stat { STAT_STEERED, STAT_PASSED, STAT_NO_SOCKET, STAT_COUNT };

struct nat_key {
    __u32 addr;  /* source address */
    __u16 port;  /* source port; 0 for ICMP */
    __u8 proto;  /* IP protocol number */
    __u8 pad;    /* always 0 */
};

struct arp_entry {
    /* The sender MAC's six bytes as in the frame, split to copy in two loads. */
    __u32 mac_head;
    __u16 mac_tail;
    __u16 pad;
    __u64 seen_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
};

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, __u32);
} xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u8);
} dst SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct nat_key);
    __type(value, __u8);
} nat_src SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, struct arp_entry);
} arp_seen SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STAT_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

SEC("xdp")
int xlb_steer(struct xdp_md *ctx)
{
    __u8 *frame = (__u8 *)(long)ctx->data;
    __u8 *end = (__u8 *)(long)ctx->data_end;
    __u32 stat = STAT_PASSED;
    int action = XDP_PASS;

    if (frame + ETH_LEN > end)
        goto out;
    __u16 ether_type = *(__u16 *)(frame + 12);

    if (ether_type == BE16(0x0800)) {
        __u8 *ip = frame + ETH_LEN;
        if (ip + IPV4_LEN > end)
            goto out;
        __u8 *owner = bpf_map_lookup_elem(&dst, ip + 16);
        if (owner) {
            if (*owner == OWNER_XLB)
                goto steer;
            goto out;
        }

        /* Version 4, IHL 5, not a fragment. */
        if (ip[0] != 0x45 || (*(__u16 *)(ip + 6) & BE16(0x3fff)))
            goto out;
        /* A reply is unicast: a group destination (Ethernet group bit, or IPv4 224.0.0.0 and
         * up: multicast, reserved, 255.255.255.255) from a backend's port is its own (mDNS,
         * DHCP, NTP broadcast), the kernel's. */
        if ((frame[0] & 1) || ip[16] >= 224)
            goto out;
        struct nat_key key = {.addr = *(__u32 *)(ip + 12), .proto = ip[9]};
        __u8 *l4 = ip + IPV4_LEN;
        if (key.proto == 6 || key.proto == 17) {
            if (l4 + 4 > end)
                goto out;
            key.port = *(__u16 *)l4;
        } else if (key.proto == 1) {
            if (l4 + 1 > end || l4[0] > 31 || !((ICMP_ERROR_TYPES >> l4[0]) & 1))
                goto out;
        } else {
            goto out;
        }
        if (bpf_map_lookup_elem(&nat_src, &key))
            goto steer;
    } else if (ether_type == BE16(0x0806)) {
        __u8 *arp = frame + ETH_LEN;
        if (arp + ARP_LEN > end)
            goto out;
        /* Ethernet (1) / IPv4 (0x0800), address lengths 6 and 4. */
        if (*(__u32 *)arp != BE32(0x00010800) || *(__u16 *)(arp + 4) != BE16(0x0604))
            goto out;
        __u16 op = *(__u16 *)(arp + 6);
        if (op != BE16(1) && op != BE16(2))
            goto out;
        __u32 sender = *(__u32 *)(arp + 14);
        if (sender) {
            struct arp_entry entry = {.seen_ns = bpf_ktime_get_ns()};
            entry.mac_head = *(__u32 *)(arp + 8);
            entry.mac_tail = *(__u16 *)(arp + 12);
            bpf_map_update_elem(&arp_seen, &sender, &entry, BPF_ANY);
        }
        if (op == BE16(1)) {
            __u8 *owner = bpf_map_lookup_elem(&dst, arp + 24);
            if (owner && *owner == OWNER_XLB)
                goto steer;
        }
        __u8 *claimed = bpf_map_lookup_elem(&dst, arp + 14);
        if (claimed && *claimed == OWNER_XLB)
            goto steer;
    }
    goto out;

steer:
    /* XDP_REDIRECT when the queue has a socket; otherwise the fallback, XDP_PASS. */
    action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
    stat = action == XDP_REDIRECT ? STAT_STEERED : STAT_NO_SOCKET;
out:;
    __u64 *counter = bpf_map_lookup_elem(&stats, &stat);
    if (counter)
        *counter += 1;
    return action;
}

/* No GPL-only helper is used, so the crate's own licence will do. */
char LICENSE[] SEC("license") = "MIT OR Apache-2.0";
