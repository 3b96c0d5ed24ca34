// SPDX-License-Identifier: MIT OR Apache-2.0
//
// What xlb's XDP programs share: libbpf's section and map-definition macros, the helpers
// they call (declared by id from <linux/bpf.h>, so the build needs no libbpf headers), and
// byte-order constants. Frame fields are compared as loaded, against constants in network
// byte order.

#ifndef XLB_BPF_H
#define XLB_BPF_H

#include <linux/bpf.h>
#include <linux/types.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static __attribute__((unused)) void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __attribute__((unused)) long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   __u64 flags) = (void *)BPF_FUNC_map_update_elem;
static __attribute__((unused)) __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static __attribute__((unused)) long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;
static __attribute__((unused)) long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;
static __attribute__((unused)) __u32 (*bpf_get_prandom_u32)(void) = (void *)BPF_FUNC_get_prandom_u32;
static __attribute__((unused)) long (*bpf_xdp_load_bytes)(struct xdp_md *ctx, __u32 offset, void *buf,
                                   __u32 len) = (void *)BPF_FUNC_xdp_load_bytes;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define BE16(x) __builtin_bswap16(x)
#define BE32(x) __builtin_bswap32(x)
#else
#define BE16(x) (x)
#define BE32(x) (x)
#endif

#define ETH_LEN 14
#define IPV4_LEN 20

#endif
