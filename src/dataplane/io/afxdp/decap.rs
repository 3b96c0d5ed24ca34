//! `xlb decap`'s XDP program: the real server's side of tunnel mode. It strips IPIP and GUE
//! addressed to this host and hands the inner packet to the kernel's stack, where the
//! standard setup would need the `ipip` or `fou` module (issue 14).
//!
//! The program (`decap.bpf.c`, built by `build.rs` and embedded here) decapsulates, behind
//! the frame's own MAC header (addresses kept, Ethernet type set to the inner packet's):
//!
//! - IPIP: outer IPv4 to an address of `local4`, protocol 4 (IPv4 inside) or 41 (IPv6);
//!   a plain 20-byte outer header whose checksum is right, not a fragment;
//! - IPv6 outer (no extension header) to an address of `local6`, next header 41 or 4;
//! - GUE over either: UDP to the configured port (6080 by default, `config`), the inner
//!   packet directly after the UDP header ("variant 1") or behind a 4-byte variant 0
//!   header without options or flags (protocol 4 or 41).
//!
//! The inner packet must be whole (its header there, its length within what the outer
//! says it carries) and of the version the outer names. Everything else is passed
//! untouched (`XDP_PASS`), so the kernel decides as if the program were not there; the
//! tunnel packets to this host passed that way are counted by reason
//! ([`DecapStats`]). The UDP checksum of GUE is not checked: the inner packet's own
//! checksums are, by the kernel, end to end.
//!
//! Control side: [`DecapProgram::load`], then [`DecapProgram::set_local_addrs`] (which
//! outer destinations are this host's; `xlb decap` defaults to the device's addresses) and
//! [`DecapProgram::set_gue_port`], then [`DecapProgram::attach`] through a BPF link that
//! the kernel removes when the [`Attachment`] drops or the process dies, or
//! [`DecapProgram::attach_detached`] (netlink: it stays after the process, until
//! [`remove_detached`]). [`attached_stats`] reads the counters of the program attached to
//! a device from any process.
//!
//! Invariants:
//! - Map layouts are mirrored from the C source (checked at load by [`Map`]); addresses and
//!   the port are in network byte order as in the frame, stat indices in host order.
//! - The program never rewrites a frame it passes, and never drops one (its one `XDP_DROP`
//!   follows a head adjustment the verifier cannot see succeeded; it cannot happen).

use std::collections::BTreeMap;
use std::ffi::{CStr, c_int};
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libxdp_sys as sys;

use super::bpf::{Aligned, Map, Object, check, possible_cpus, sum_per_cpu, test_run};
use super::steer::{
    Attachment, SteerError, XdpAction, XdpMode, attach_program, attached_named, remove_named,
};

/// The program's function name, by which [`attached_stats`] and [`remove_detached`] know it
/// (the kernel keeps 15 bytes of it).
pub const PROGRAM_NAME: &str = "xlb_decap";
/// GUE's default UDP destination port (the one xlb's `encap = "gue"` sends to).
pub const DEFAULT_GUE_PORT: u16 = 6080;
/// Entries of `local4` and of `local6`.
pub const MAX_LOCAL_ADDRS: usize = 256;

static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/decap.bpf.o")));
const PROGRAM_CNAME: &CStr = c"xlb_decap";

/// The counters, in the order of `enum stat` in the C source.
const STATS: [&str; 8] =
    ["ipip", "ip6", "gue", "passed", "fragment", "ip_options", "malformed", "adjust_failed"];
const STAT_COUNT: usize = STATS.len();

/// The program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecapStats {
    /// IP in IPv4 (protocol 4 or 41) decapsulated.
    pub ipip: u64,
    /// IP in IPv6 (next header 41 or 4) decapsulated.
    pub ip6: u64,
    /// GUE (either outer) decapsulated.
    pub gue: u64,
    /// Not a tunnel packet to this host: passed untouched.
    pub passed: u64,
    /// A tunnel packet to this host that is an outer fragment: passed (the kernel
    /// reassembles it, but no XDP program sees the whole).
    pub fragment: u64,
    /// IPIP to this host with outer IPv4 options: passed.
    pub ip_options: u64,
    /// A tunnel packet to this host that is truncated, inconsistent (lengths, checksum,
    /// inner version) or carries something else than IP: passed.
    pub malformed: u64,
    /// The kernel refused to move the frame's head: passed untouched.
    pub adjust_failed: u64,
}

impl DecapStats {
    fn from_totals(totals: [u64; STAT_COUNT]) -> DecapStats {
        let [ipip, ip6, gue, passed, fragment, ip_options, malformed, adjust_failed] = totals;
        DecapStats { ipip, ip6, gue, passed, fragment, ip_options, malformed, adjust_failed }
    }

    /// (name, count) in the program's order, the names of `xlb decap --stats`.
    pub fn named(&self) -> [(&'static str, u64); STAT_COUNT] {
        let s = self;
        let counts = [
            s.ipip,
            s.ip6,
            s.gue,
            s.passed,
            s.fragment,
            s.ip_options,
            s.malformed,
            s.adjust_failed,
        ];
        let mut named = [("", 0); STAT_COUNT];
        for ((slot, name), count) in named.iter_mut().zip(STATS).zip(counts) {
            *slot = (name, count);
        }
        named
    }

    /// Frames decapsulated, all kinds.
    pub fn decapsulated(&self) -> u64 {
        self.ipip + self.ip6 + self.gue
    }
}

/// Reads the totals of a `stats` map.
fn read_stats(stats: &Map<4, 8>) -> Result<DecapStats, SteerError> {
    let mut per_cpu = vec![0u8; 8 * possible_cpus()?];
    let mut totals = [0u64; STAT_COUNT];
    for (index, total) in (0u32..).zip(totals.iter_mut()) {
        if stats.lookup_into(&index.to_ne_bytes(), &mut per_cpu)? {
            *total = sum_per_cpu(&per_cpu);
        }
    }
    Ok(DecapStats::from_totals(totals))
}

/// The loaded (not necessarily attached) program and its maps.
#[derive(Debug)]
pub struct DecapProgram {
    /// Owns the program and maps whose fds the other fields hold: closed last, on drop.
    _object: Object,
    program_fd: RawFd,
    local4: Map<4, 1>,
    local6: Map<16, 1>,
    config: Map<4, 4>,
    stats: Map<4, 8>,
}

impl DecapProgram {
    /// Opens the embedded object and loads it (the verifier runs here). GUE is off until
    /// [`set_gue_port`](Self::set_gue_port); no address is local until
    /// [`set_local_addrs`](Self::set_local_addrs). Needs `CAP_BPF` (root).
    pub fn load() -> Result<DecapProgram, SteerError> {
        let object = Object::open(OBJECT, "decap.bpf.o")?;
        let local4 = object.map(c"local4", MAX_LOCAL_ADDRS)?;
        let local6 = object.map(c"local6", MAX_LOCAL_ADDRS)?;
        let config = object.map(c"config", 1)?;
        let stats = object.map(c"stats", STAT_COUNT)?;
        object.load()?;
        Ok(DecapProgram {
            program_fd: object.program_fd(PROGRAM_CNAME)?,
            local4: object.loaded(local4)?,
            local6: object.loaded(local6)?,
            config: object.loaded(config)?,
            stats: object.loaded(stats)?,
            _object: object,
        })
    }

    /// Makes `addrs` the outer destinations the program decapsulates for (both families),
    /// and only them; an address that stays is never missing, even for a moment.
    pub fn set_local_addrs(&self, addrs: &[IpAddr]) -> Result<(), SteerError> {
        let mut v4: BTreeMap<[u8; 4], [u8; 1]> = BTreeMap::new();
        let mut v6: BTreeMap<[u8; 16], [u8; 1]> = BTreeMap::new();
        for addr in addrs {
            match addr {
                IpAddr::V4(addr) => v4.insert(addr.octets(), [1]),
                IpAddr::V6(addr) => v6.insert(addr.octets(), [1]),
            };
        }
        self.local4.sync(&v4)?;
        self.local6.sync(&v6)
    }

    /// GUE's UDP destination port (`None`: GUE off, only IPIP is stripped).
    pub fn set_gue_port(&self, port: Option<u16>) -> Result<(), SteerError> {
        let port = port.unwrap_or(0).to_be_bytes();
        self.config.update(&0u32.to_ne_bytes(), &[port[0], port[1], 0, 0])
    }

    /// Attaches to `ifindex` in `mode` through a BPF link: detached when the
    /// [`Attachment`] drops or the process dies. `EBUSY`/`EEXIST` if a program is there.
    pub fn attach(&self, ifindex: u32, mode: XdpMode) -> Result<Attachment, SteerError> {
        attach_program(self.program_fd, ifindex, mode)
    }

    /// Attaches to `ifindex` in `mode` the old way (netlink), so the program and its maps
    /// stay after the process exits, until [`remove_detached`] (or `ip link set dev IF xdp
    /// off`). Refused (`EBUSY`) if any program is attached there already.
    pub fn attach_detached(&self, ifindex: u32, mode: XdpMode) -> Result<(), SteerError> {
        // SAFETY: a null opts means defaults; `program_fd` is a loaded XDP program.
        // XDP_FLAGS_UPDATE_IF_NOEXIST makes the kernel refuse to replace another program.
        let ret = unsafe {
            sys::bpf_xdp_attach(
                ifindex as c_int,
                self.program_fd,
                mode.flags() | XDP_FLAGS_UPDATE_IF_NOEXIST,
                std::ptr::null(),
            )
        };
        check(ret, "bpf_xdp_attach", || format!("{PROGRAM_NAME} {mode:?} on ifindex {ifindex}"))
            .map(drop)
    }

    /// The counters, summed over all CPUs.
    pub fn stats(&self) -> Result<DecapStats, SteerError> {
        read_stats(&self.stats)
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (no device, queue 0):
    /// what it returned and the frame as it left it. Maps are the live ones (counters move).
    pub fn test_run(&self, frame: &[u8]) -> Result<(XdpAction, Vec<u8>), SteerError> {
        // A decapsulated frame only shrinks; room for one more byte shows it never grew.
        let mut out = vec![0u8; frame.len() + 1];
        let run = test_run(self.program_fd, frame, 0, 0, &mut out)?;
        out.truncate(run.out_len);
        Ok((XdpAction::from_retval(run.retval), out))
    }
}

/// `XDP_FLAGS_UPDATE_IF_NOEXIST` from <linux/if_link.h> (libxdp-sys does not export it).
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;

/// The counters of the `xlb_decap` program attached to `ifindex` (by a running `xlb decap`,
/// or left by `--detach`); `None` if there is none.
pub fn attached_stats(ifindex: u32) -> Result<Option<DecapStats>, SteerError> {
    let Some((program, _)) = attached_named(ifindex, PROGRAM_NAME)?.into_iter().next() else {
        return Ok(None);
    };
    for id in map_ids(&program)? {
        let Some(map) = map_by_id(id)? else { continue };
        if let Some(stats) = Map::<4, 8>::from_fd(&map, c"stats", STAT_COUNT)? {
            return read_stats(&stats).map(Some);
        }
    }
    Err(SteerError::Object(format!("{PROGRAM_NAME} on ifindex {ifindex} has no map named stats")))
}

/// Detaches an `xlb_decap` program attached to `ifindex` the old way (`--detach`):
/// `Ok(true)` if one was removed. A program of another name is never touched, nor one a
/// running `xlb decap` holds through a link (left alone: `Ok(false)`).
pub fn remove_detached(ifindex: u32) -> Result<bool, SteerError> {
    remove_named(ifindex, PROGRAM_NAME)
}

/// An fd for map `id`, or `None` if it is gone.
fn map_by_id(id: u32) -> Result<Option<OwnedFd>, SteerError> {
    // SAFETY: a plain syscall wrapper taking an integer.
    let ret = unsafe { sys::bpf_map_get_fd_by_id(id) };
    match check(ret, "bpf_map_get_fd_by_id", || format!("map id {id}")) {
        // SAFETY: the call returned a fresh fd that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(error) if error.errno() == Some(libc::ENOENT) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The ids of the maps a program uses (the first 16: `xlb_decap` has 4).
fn map_ids(program: &OwnedFd) -> Result<Vec<u32>, SteerError> {
    let mut ids = [0u32; 16];
    // SAFETY: an all-zero bpf_prog_info asks for no arrays; one is asked for below.
    let mut info: sys::bpf_prog_info = unsafe { mem::zeroed() };
    info.nr_map_ids = ids.len() as u32;
    info.map_ids = ids.as_mut_ptr() as u64;
    let mut length = mem::size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: `info` has `length` writable bytes and `ids` room for the `nr_map_ids` ids the
    // kernel writes at most; all live across the call.
    let ret = unsafe { sys::bpf_prog_get_info_by_fd(program.as_raw_fd(), &mut info, &mut length) };
    check(ret, "bpf_prog_get_info_by_fd", || format!("fd {}", program.as_raw_fd()))?;
    Ok(ids[..(info.nr_map_ids as usize).min(ids.len())].to_vec())
}

/// The addresses of device `name` (both families, link-local IPv6 left out: no tunnel
/// is addressed to one), sorted.
pub fn device_addrs(name: &str) -> Result<Vec<IpAddr>, SteerError> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `list` is a valid place for the result; freed below with freeifaddrs.
    let ret = unsafe { libc::getifaddrs(&mut list) };
    if ret != 0 {
        return Err(SteerError::Call {
            call: "getifaddrs",
            what: name.to_string(),
            errno: super::bpf::last_errno(),
        });
    }
    let mut addrs = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs built, not yet freed.
        let node = unsafe { &*entry };
        entry = node.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string of the live list.
        let node_name = unsafe { CStr::from_ptr(node.ifa_name) };
        if node.ifa_addr.is_null() || node_name.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the family it names;
        // the casts below follow that family.
        let family = c_int::from(unsafe { (*node.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*node.ifa_addr.cast::<libc::sockaddr_in>() };
            addrs.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
        } else if family == libc::AF_INET6 {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*node.ifa_addr.cast::<libc::sockaddr_in6>() };
            let addr = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            if !addr.is_unicast_link_local() {
                addrs.push(IpAddr::V6(addr));
            }
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once; no reference into it survives.
    unsafe { libc::freeifaddrs(list) };
    addrs.sort_unstable();
    addrs.dedup();
    Ok(addrs)
}

#[cfg(test)]
mod tests;
