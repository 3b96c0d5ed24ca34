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
//     protocol 1); only with a plain 20-byte header, since xlb never made a reply with
//     options. A reply above the backend's MTU comes as fragments (a UDP datagram above
//     1500 bytes): a first fragment (offset 0, more fragments) of TCP/UDP is matched by its
//     ports as a whole packet is, and, when steered, its datagram (source, destination,
//     protocol, IP identification) is remembered in the LRU map `nat_frags` with
//     bpf_ktime_get_ns(); a later fragment (offset > 0: no ports) is steered when its
//     datagram's first fragment was, within FRAGMENT_WINDOW_NS (the pipeline's own fragment
//     table's FRAGMENT_TIMEOUT: the pipeline forwards later fragments as long as that).
//     A later fragment that arrives before its first one is the kernel's (nothing is held
//     here, nor in the pipeline): its datagram is lost, as through any stateless balancer;
//     senders emit fragments in order, so it takes reordering on the path. ICMP fragments
//     are the kernel's (no error is that long);
//   - ARP requests for an OWNER_XLB address (xlb answers ARP for what it owns), and ARP
//     (request or reply) whose *sender* is an OWNER_XLB address: another host claiming a
//     VIP, which xlb counts as a conflict (and answers to its probes).
//   - IPv6, the same three cases with the maps `dst6` and `nat6_src`:
//     - IPv6 to an address `dst6` maps to OWNER_XLB, whatever it carries: extension
//       headers included (the pipeline walks them, and counts what it refuses, rather
//       than the kernel dropping them uncounted: the kernel does not hold the VIP), and
//       whatever its version nibble (as IPv4: the pipeline drops it, `bad_ip_version`);
//     - unicast IPv6 from a NAT backend (not to an Ethernet group address, nor to a
//       multicast (ff00::/8) or link-local (fe80::/10) address), unless to an OWNER_KERNEL
//       address: TCP/UDP whose (source address, source port, next header) is in
//       `nat6_src`, and ICMPv6 errors (types 0-127) whose source is a NAT backend (key:
//       address, port 0, next header 58); with TCP, UDP or ICMPv6 directly after the fixed
//       header, or after the extension headers the pipeline forwards (hop-by-hop first,
//       destination options, routing with segments left 0), walked as the pipeline walks
//       them: at most MAX_EXT_HEADERS, ending within MAX_EXT_BYTES of the payload, each
//       within the frame; a chain the pipeline would refuse is the kernel's. A fragment
//       header (44) after that chain, with TCP or UDP after it, is a fragment of a reply,
//       steered as IPv4's are: a first one (offset 0, M set) by the ports after the
//       fragment header, its datagram (source, destination, next header, identification)
//       remembered in `nat6_frags`; a later one when its first one was steered within
//       FRAGMENT_WINDOW_NS; an atomic fragment (offset 0, M clear: RFC 8200 §4.5) as a whole
//       packet, by its ports;
//     - NDP (neighbour solicitation 135 or advertisement 136, ICMPv6 directly after the
//       fixed header, hop limit 255 as RFC 4861 requires) whose *target* is an OWNER_XLB
//       address (a solicitation for a VIP, to its solicited-node group or unicast; another
//       host advertising a VIP), or whose *source* is one (another host using a VIP).
// Frames with one or two VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8; VLAN 0 priority tags
// too) are steered by the same rules, read after their tags (the pipeline serves them and
// keeps the tags); a third tag, or a frame cut inside its tags, is the kernel's.
// Everything else goes to the kernel (XDP_PASS): the box's own traffic (SSH, routing, ARP
// and NDP for its own address, router advertisements, MLD, link-local), truncated frames.
//
// Every well-formed Ethernet/IPv4 ARP request or reply with a non-zero sender address is
// also recorded in `arp_seen` (sender address -> sender MAC, bpf_ktime_get_ns()), and still
// passed: xlb learns next-hop MACs without taking ARP replies away from the kernel. NDP is
// recorded the same way in `ndp_seen`: a solicitation's source address (not ::) with the
// MAC of its source link-layer address option, an advertisement's target with the MAC of
// its target link-layer address option; only the first option is read (the one every
// stack writes; a bounded parse), and a message whose first option is not that one
// records nothing.
//
// Map layouts are mirrored in steer.rs; keep the two in step. Addresses and ports are kept
// in network byte order, exactly as they sit in the frame.

#include "xlb_bpf.h"

#define ARP_LEN 28
/* A VLAN tag (TPID, TCI) as it sits between the MACs and the EtherType it precedes. */
#define TAG_LEN 4
#define IS_TAG(ether_type) ((ether_type) == BE16(0x8100) || (ether_type) == BE16(0x88a8))
#define IPV6_LEN 40
/* An NDP message up to its options: type, code, checksum, flags, target (RFC 4861 §4.3-4). */
#define NDP_LEN 24
/* A link-layer address option for Ethernet: type, length 1 (8 bytes), MAC. */
#define LINK_ADDR_OPTION_LEN 8

/* The IPv6 extension-header walk's bounds (crate::wire::ipv6::MAX_EXT_HEADERS and
 * MAX_EXT_BYTES: the pipeline's). */
#define MAX_EXT_HEADERS 8
#define MAX_EXT_BYTES 1024

#define PROTO_HOP_BY_HOP 0
#define PROTO_ROUTING 43
#define PROTO_FRAGMENT 44
/* An IPv6 fragment header: next header, reserved, offset and M flag, identification. */
#define FRAGMENT_HEADER_LEN 8
#define PROTO_DEST_OPTIONS 60
#define PROTO_ICMPV6 58
#define NDP_SOLICIT 135
#define NDP_ADVERT 136
#define OPTION_SOURCE_LINK_ADDR 1
#define OPTION_TARGET_LINK_ADDR 2

/* How long a steered first fragment lets its datagram's later fragments be steered:
 * crate::dataplane::pipeline's FRAGMENT_TIMEOUT (2 s), as long as the pipeline forwards
 * them (mirrored in steer.rs as FRAGMENT_WINDOW). */
#define FRAGMENT_WINDOW_NS 2000000000ULL

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

struct nat6_key {
    __u32 addr[4]; /* source address */
    __u16 port;    /* source port; 0 for ICMPv6 */
    __u8 proto;    /* next header */
    __u8 pad;      /* always 0 */
};

/* The IPv4 datagram a fragment belongs to (RFC 791): a key of `nat_frags`. */
struct frag_key {
    __u32 src;   /* source address */
    __u32 dst;   /* destination address */
    __u16 ident; /* IP identification */
    __u8 proto;  /* IP protocol number */
    __u8 pad;    /* always 0 */
};

/* The IPv6 datagram a fragment belongs to (RFC 8200 §4.5): a key of `nat6_frags`. */
struct frag6_key {
    __u32 src[4]; /* source address */
    __u32 dst[4]; /* destination address */
    __u32 ident;  /* the fragment header's identification */
    __u8 proto;   /* the fragment header's next header */
    __u8 pad[3];  /* always 0 */
};

/* An IPv6 address as a map key (the 16 bytes of the frame). */
struct addr6 {
    __u32 word[4];
};

/* A neighbour seen in ARP (`arp_seen`) or NDP (`ndp_seen`). */
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
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, struct addr6);
    __type(value, __u8);
} dst6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct nat6_key);
    __type(value, __u8);
} nat6_src SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1024);
    __type(key, struct addr6);
    __type(value, struct arp_entry);
} ndp_seen SEC(".maps");

/* NAT replies' datagrams whose first fragment was steered -> bpf_ktime_get_ns() then. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct frag_key);
    __type(value, __u64);
} nat_frags SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct frag6_key);
    __type(value, __u64);
} nat6_frags SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STAT_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

/* Records in `seen` (arp_seen, ndp_seen) that `addr` is at the 6-byte MAC at `mac` (both
 * bounds checked by the caller), now. */
static __attribute__((always_inline)) void record_neighbor(void *seen, const void *addr,
                                                           const __u8 *mac)
{
    struct arp_entry entry = {.seen_ns = bpf_ktime_get_ns()};
    entry.mac_head = *(const __u32 *)mac;
    entry.mac_tail = *(const __u16 *)(mac + 4);
    bpf_map_update_elem(seen, addr, &entry, BPF_ANY);
}

/* Whether the 16-byte address at `addr` (bounds checked by the caller) is ::. */
static __attribute__((always_inline)) int addr6_is_unspecified(const __u8 *addr)
{
    return (*(const __u32 *)addr | *(const __u32 *)(addr + 4) | *(const __u32 *)(addr + 8) |
            *(const __u32 *)(addr + 12)) == 0;
}

/* Whether `dst6` maps the 16-byte address at `addr` (bounds checked) to OWNER_XLB. */
static __attribute__((always_inline)) int owned6(const __u8 *addr)
{
    __u8 *owner = bpf_map_lookup_elem(&dst6, addr);
    return owner && *owner == OWNER_XLB;
}

/* Remembers in `frags` (nat_frags, nat6_frags) that `datagram`'s first fragment was
 * steered, now. */
static __attribute__((always_inline)) void remember_first_fragment(void *frags,
                                                                   const void *datagram)
{
    __u64 now = bpf_ktime_get_ns();
    bpf_map_update_elem(frags, datagram, &now, BPF_ANY);
}

/* Whether `frags` says `datagram`'s first fragment was steered within FRAGMENT_WINDOW_NS. */
static __attribute__((always_inline)) int first_fragment_steered(void *frags,
                                                                 const void *datagram)
{
    __u64 *steered_ns = bpf_map_lookup_elem(frags, datagram);
    return steered_ns && bpf_ktime_get_ns() - *steered_ns < FRAGMENT_WINDOW_NS;
}

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
    /* VLAN tags: up to two (an 802.1ad or 802.1Q tag, then an 802.1Q one), each whole with
     * the EtherType after it; `l3` is where the payload starts. A third tag, or a frame cut
     * inside its tags, is the kernel's. */
    __u8 *l3 = frame + ETH_LEN;
    /* `l3`'s offset in the frame, kept as a number beside the pointer: reads at a
     * data-dependent distance go through bpf_xdp_load_bytes at an offset, since moving a
     * packet pointer by a variable amount needs CAP_PERFMON (the verifier's Spectre
     * sanitation), which the systemd unit does not grant. */
    __u32 l3_off = ETH_LEN;
    if (IS_TAG(ether_type)) {
        if (l3 + TAG_LEN > end)
            goto out;
        ether_type = *(__u16 *)(l3 + 2);
        l3 += TAG_LEN;
        l3_off += TAG_LEN;
        if (IS_TAG(ether_type)) {
            if (l3 + TAG_LEN > end)
                goto out;
            ether_type = *(__u16 *)(l3 + 2);
            l3 += TAG_LEN;
            l3_off += TAG_LEN;
        }
    }

    if (ether_type == BE16(0x0800)) {
        __u8 *ip = l3;
        if (ip + IPV4_LEN > end)
            goto out;
        __u8 *owner = bpf_map_lookup_elem(&dst, ip + 16);
        if (owner) {
            if (*owner == OWNER_XLB)
                goto steer;
            goto out;
        }

        /* Version 4, IHL 5. */
        if (ip[0] != 0x45)
            goto out;
        /* A reply is unicast: a group destination (Ethernet group bit, or IPv4 224.0.0.0 and
         * up: multicast, reserved, 255.255.255.255) from a backend's port is its own (mDNS,
         * DHCP, NTP broadcast), the kernel's. */
        if ((frame[0] & 1) || ip[16] >= 224)
            goto out;
        struct nat_key key = {.addr = *(__u32 *)(ip + 12), .proto = ip[9]};
        /* The more-fragments flag and the offset: non-zero for any fragment. */
        __u16 fragment = *(__u16 *)(ip + 6) & BE16(0x3fff);
        struct frag_key datagram = {
            .src = key.addr, .dst = *(__u32 *)(ip + 16), .ident = *(__u16 *)(ip + 4),
            .proto = key.proto};
        if (fragment) {
            if (key.proto != 6 && key.proto != 17)
                goto out;
            /* A later fragment has no ports: its first fragment decided. */
            if (fragment & BE16(0x1fff)) {
                if (first_fragment_steered(&nat_frags, &datagram))
                    goto steer;
                goto out;
            }
        }
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
        if (bpf_map_lookup_elem(&nat_src, &key)) {
            if (fragment)
                remember_first_fragment(&nat_frags, &datagram);
            goto steer;
        }
    } else if (ether_type == BE16(0x0806)) {
        __u8 *arp = l3;
        if (arp + ARP_LEN > end)
            goto out;
        /* Ethernet (1) / IPv4 (0x0800), address lengths 6 and 4. */
        if (*(__u32 *)arp != BE32(0x00010800) || *(__u16 *)(arp + 4) != BE16(0x0604))
            goto out;
        __u16 op = *(__u16 *)(arp + 6);
        if (op != BE16(1) && op != BE16(2))
            goto out;
        __u32 sender = *(__u32 *)(arp + 14);
        if (sender)
            record_neighbor(&arp_seen, &sender, arp + 8);
        if (op == BE16(1)) {
            __u8 *owner = bpf_map_lookup_elem(&dst, arp + 24);
            if (owner && *owner == OWNER_XLB)
                goto steer;
        }
        __u8 *claimed = bpf_map_lookup_elem(&dst, arp + 14);
        if (claimed && *claimed == OWNER_XLB)
            goto steer;
    } else if (ether_type == BE16(0x86dd)) {
        __u8 *ip6 = l3;
        if (ip6 + IPV6_LEN > end)
            goto out;
        int version_6 = (ip6[0] & 0xf0) == 0x60;
        __u8 next = ip6[6];
        __u8 *l4 = ip6 + IPV6_LEN;

        /* NDP first: an advertisement answering xlb's solicitation comes to the box's own
         * address, and must be recorded before the kernel gets it. */
        if (version_6 && next == PROTO_ICMPV6 && ip6[7] == 255 && l4 + NDP_LEN <= end &&
            (l4[0] == NDP_SOLICIT || l4[0] == NDP_ADVERT)) {
            /* A solicitation is about its source, an advertisement about its target. */
            __u8 *target = l4 + 8;
            int solicit = l4[0] == NDP_SOLICIT;
            __u8 *about = solicit ? ip6 + 8 : target;
            __u8 option = solicit ? OPTION_SOURCE_LINK_ADDR : OPTION_TARGET_LINK_ADDR;
            __u8 *opt = l4 + NDP_LEN;
            if (opt + LINK_ADDR_OPTION_LEN <= end && opt[0] == option && opt[1] == 1 &&
                !addr6_is_unspecified(about))
                record_neighbor(&ndp_seen, about, opt + 2);
            if (owned6(target) || owned6(ip6 + 8))
                goto steer;
            /* Otherwise as any packet: to a VIP it is xlb's, else the kernel's (the NAT
             * path below takes no NDP: types 135 and 136 are not errors). */
        }

        /* Whatever the version nibble, as for IPv4: the pipeline drops a bad one, counted. */
        __u8 *owner = bpf_map_lookup_elem(&dst6, ip6 + 24);
        if (owner) {
            if (*owner == OWNER_XLB)
                goto steer;
            goto out;
        }
        if (!version_6)
            goto out;

        /* A reply is unicast, and not link-local: a group destination (Ethernet group bit,
         * ff00::/8) or fe80::/10 from a backend's port is its own (mDNS, its routers). */
        if ((frame[0] & 1) || ip6[24] == 0xff || (ip6[24] == 0xfe && (ip6[25] & 0xc0) == 0x80))
            goto out;
        /* The extension headers a NAT reply may carry, as the pipeline walks them: each
         * within the frame, hop-by-hop only first, a routing header's segments left 0. */
        /* Read at offsets (see `l3_off`): the walk moves by the headers' own lengths. */
        __u32 l4_off = l3_off + IPV6_LEN;
        __u32 ext_len = 0;
#pragma unroll
        for (int i = 0; i < MAX_EXT_HEADERS; i++) {
            if (next != PROTO_HOP_BY_HOP && next != PROTO_ROUTING && next != PROTO_DEST_OPTIONS)
                break;
            if (next == PROTO_HOP_BY_HOP && i > 0)
                goto out;
            __u8 ext[4];
            if (bpf_xdp_load_bytes(ctx, l4_off + ext_len, ext, sizeof(ext)) < 0)
                goto out;
            if (next == PROTO_ROUTING && ext[3] != 0)
                goto out;
            next = ext[0];
            ext_len += ((__u32)ext[1] + 1) * 8;
            if (ext_len > MAX_EXT_BYTES)
                goto out;
        }
        if (next == PROTO_HOP_BY_HOP || next == PROTO_ROUTING || next == PROTO_DEST_OPTIONS)
            goto out;
        l4_off += ext_len;

        /* A fragment header after the chain: a fragment of a TCP or UDP reply, or the
         * kernel's. `first_fragment`: offset 0 with more to come (M set). */
        int first_fragment = 0;
        struct frag6_key datagram = {};
        if (next == PROTO_FRAGMENT) {
            __u8 header[FRAGMENT_HEADER_LEN];
            if (bpf_xdp_load_bytes(ctx, l4_off, header, sizeof(header)) < 0)
                goto out;
            next = header[0];
            if (next != 6 && next != 17)
                goto out;
            l4_off += FRAGMENT_HEADER_LEN;
            datagram.proto = next;
            datagram.ident = *(__u32 *)(header + 4);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                datagram.src[i] = *(__u32 *)(ip6 + 8 + 4 * i);
                datagram.dst[i] = *(__u32 *)(ip6 + 24 + 4 * i);
            }
            /* A later fragment has no ports: its first fragment decided. */
            if (*(__u16 *)(header + 2) & BE16(0xfff8)) {
                if (first_fragment_steered(&nat6_frags, &datagram))
                    goto steer;
                goto out;
            }
            first_fragment = header[3] & 1;
        }

        struct nat6_key key = {.proto = next};
        key.addr[0] = *(__u32 *)(ip6 + 8);
        key.addr[1] = *(__u32 *)(ip6 + 12);
        key.addr[2] = *(__u32 *)(ip6 + 16);
        key.addr[3] = *(__u32 *)(ip6 + 20);
        if (next == 6 || next == 17) {
            __u8 ports[4];
            if (bpf_xdp_load_bytes(ctx, l4_off, ports, sizeof(ports)) < 0)
                goto out;
            key.port = *(__u16 *)ports;
        } else if (next == PROTO_ICMPV6) {
            /* Errors are types 0 to 127 (RFC 4443 §2.1), as crate::wire::icmpv6::is_error. */
            __u8 type;
            if (bpf_xdp_load_bytes(ctx, l4_off, &type, 1) < 0 || type >= 128)
                goto out;
        } else {
            goto out;
        }
        if (bpf_map_lookup_elem(&nat6_src, &key)) {
            if (first_fragment)
                remember_first_fragment(&nat6_frags, &datagram);
            goto steer;
        }
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
