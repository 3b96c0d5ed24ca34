//! What xlb's BPF programs share: libbpf calls made safe to use from the rest of `afxdp`
//! (the steering program) and from the benchmark's programs in [`crate::bench`], which have
//! no `unsafe` of their own.
//!
//! - [`Object`]: an embedded BPF object (built by `build.rs`), opened, loaded, and closed on
//!   drop; [`Map`]: one of its maps with key and value sizes checked against the object.
//! - [`test_run`]: `BPF_PROG_TEST_RUN` of a loaded program, once on a frame (tests, table
//!   checks) or in the kernel's live-frames mode (the benchmark's traffic generator,
//!   `bench/generator.rs`).
//! - `opts_size!`, [`check`]: libbpf options sizing and error reporting.
//! - [`monotonic_ns`]: the clock `bpf_ktime_get_ns()` reads, for stamps made in user space.
//!
//! Every call reports a [`SteerError`] (the steering program was the first user; the type
//! names the call, what it was done to, and the errno).
//!
//! Invariants:
//! - What the crate outside `afxdp` may call (`pub(crate)`: the benchmark's programs) is
//!   sound whatever the arguments; what takes a raw libbpf pointer ([`Map::find`],
//!   [`Map::loaded`]) stays `pub(super)`.
//! - Map keys and values are fixed-size byte arrays whose sizes are checked against the
//!   opened object before any map call, so every pointer handed to libbpf covers exactly
//!   what the kernel reads or writes. Per-CPU maps, whose values the kernel reads and
//!   writes once per possible CPU, are recognised at `find`: a lookup into a buffer shorter
//!   than that is refused, and so is an update (which would need one value per CPU).
//! - libbpf option structs are zeroed and sized to the last field used (`opts_size!`), so
//!   libbpf never inspects padding.

use std::collections::BTreeMap;
use std::ffi::{CStr, c_int, c_void};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};

use libxdp_sys as sys;

use super::steer::SteerError;

/// The `sz` of a libbpf options struct that ends at `field`, the last one used ("offsetofend"
/// in libbpf). Not the whole struct: libbpf insists that bytes past the fields it knows be
/// zero, and Rust does not keep padding zeroed.
macro_rules! opts_size {
    ($opts:ident, $type:ident, $field:ident) => {
        std::mem::offset_of!(libxdp_sys::$type, $field) + std::mem::size_of_val(&$opts.$field)
    };
}
pub(super) use opts_size;

/// The errno of a libbpf call that returned `ret`: libbpf 1.x returns `-errno` (and sets
/// errno too).
pub(super) fn errno_of(ret: c_int) -> i32 {
    if ret < 0 { -ret } else { last_errno() }
}

/// errno, for calls that report failure by a null pointer.
pub(super) fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// `Ok(ret)` for a non-negative return, else the call's error.
pub(super) fn check(
    ret: c_int,
    call: &'static str,
    what: impl FnOnce() -> String,
) -> Result<c_int, SteerError> {
    if ret >= 0 {
        Ok(ret)
    } else {
        Err(SteerError::Call { call, what: what(), errno: errno_of(ret) })
    }
}

/// The changes that turn a map holding `current` into one holding `wanted`: the keys to
/// delete, then the entries to write. A key whose value stays is in neither, so it is
/// never missing, not even for a moment.
pub(super) fn plan<K: Ord + Copy, V: Eq + Copy>(
    current: &BTreeMap<K, V>,
    wanted: &BTreeMap<K, V>,
) -> (Vec<K>, Vec<(K, V)>) {
    let gone = current.keys().filter(|key| !wanted.contains_key(*key)).copied().collect();
    let changed = wanted
        .iter()
        .filter(|(key, value)| current.get(*key) != Some(*value))
        .map(|(key, value)| (*key, *value))
        .collect();
    (gone, changed)
}

/// A map of the loaded object: its fd, with key and value sizes `K` and `V` checked at load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Map<const K: usize, const V: usize> {
    pub(super) name: &'static str,
    cname: &'static CStr,
    fd: RawFd,
    pub(super) max_entries: usize,
    /// The bytes the kernel writes on a lookup: `V`, or for a per-CPU map `V` rounded up to
    /// 8 for each possible CPU; `None` for a plain map.
    per_cpu_len: Option<usize>,
}

/// Whether the kernel keeps one value per possible CPU in maps of type `map_type`.
fn is_per_cpu(map_type: sys::bpf_map_type) -> bool {
    matches!(
        map_type,
        sys::bpf_map_type_BPF_MAP_TYPE_PERCPU_HASH
            | sys::bpf_map_type_BPF_MAP_TYPE_PERCPU_ARRAY
            | sys::bpf_map_type_BPF_MAP_TYPE_LRU_PERCPU_HASH
            | sys::bpf_map_type_BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE
    )
}

impl<const K: usize, const V: usize> Map<K, V> {
    /// Finds map `name` in an opened (not yet loaded) object and checks its layout: K-byte
    /// keys, V-byte values, `entries` entries.
    pub(super) fn find(
        object: NonNull<sys::bpf_object>,
        name: &'static CStr,
        entries: usize,
    ) -> Result<Map<K, V>, SteerError> {
        let label = name.to_str().unwrap_or("?");
        // SAFETY: `object` is a live bpf_object from bpf_object__open_mem, and `name` is a
        // NUL-terminated string that outlives the call.
        let map = unsafe { sys::bpf_object__find_map_by_name(object.as_ptr(), name.as_ptr()) };
        if map.is_null() {
            return Err(SteerError::Object(format!("no map named {label}")));
        }
        // SAFETY: `map` was just returned non-null by libbpf and belongs to `object`, which
        // the caller keeps alive.
        let (key_size, value_size, max_entries, map_type) = unsafe {
            (
                sys::bpf_map__key_size(map),
                sys::bpf_map__value_size(map),
                sys::bpf_map__max_entries(map),
                sys::bpf_map__type(map),
            )
        };
        if (key_size as usize, value_size as usize, max_entries as usize) != (K, V, entries) {
            return Err(SteerError::Object(format!(
                "map {label} has {key_size}-byte keys, {value_size}-byte values and \
                 {max_entries} entries; this module expects {K}, {V} and {entries}"
            )));
        }
        let per_cpu_len = if is_per_cpu(map_type) {
            Some(V.next_multiple_of(8) * possible_cpus()?)
        } else {
            None
        };
        Ok(Map { name: label, cname: name, fd: -1, max_entries: max_entries as usize, per_cpu_len })
    }

    /// The same map with its fd, once the object is loaded.
    pub(super) fn loaded(self, object: NonNull<sys::bpf_object>) -> Result<Map<K, V>, SteerError> {
        // SAFETY: `object` is a live, loaded bpf_object; `cname` is NUL-terminated.
        let fd =
            unsafe { sys::bpf_object__find_map_fd_by_name(object.as_ptr(), self.cname.as_ptr()) };
        let fd = check(fd, "bpf_object__find_map_fd_by_name", || self.what())?;
        Ok(Map { fd, ..self })
    }

    /// Map `name` of a program already in the kernel, through `fd` (from its id): `None`
    /// if the map behind `fd` has another name, an error if it is laid out otherwise than
    /// K-byte keys, V-byte values and `entries` entries. The caller keeps `fd` open while it
    /// uses the map.
    pub(super) fn from_fd(
        fd: &OwnedFd,
        name: &'static CStr,
        entries: usize,
    ) -> Result<Option<Map<K, V>>, SteerError> {
        let label = name.to_str().unwrap_or("?");
        // SAFETY: an all-zero bpf_map_info is a valid value for the kernel to fill.
        let mut info: sys::bpf_map_info = unsafe { mem::zeroed() };
        let mut length = mem::size_of::<sys::bpf_map_info>() as u32;
        // SAFETY: `info` has `length` writable bytes; both live across the call.
        let ret = unsafe { sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut length) };
        check(ret, "bpf_map_get_info_by_fd", || format!("map fd {}", fd.as_raw_fd()))?;
        let kernel_name: Vec<u8> =
            info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        if kernel_name != name.to_bytes() {
            return Ok(None);
        }
        let (key_size, value_size, max_entries) =
            (info.key_size, info.value_size, info.max_entries);
        if (key_size as usize, value_size as usize, max_entries as usize) != (K, V, entries) {
            return Err(SteerError::Object(format!(
                "map {label} in the kernel has {key_size}-byte keys, {value_size}-byte values \
                 and {max_entries} entries; this module expects {K}, {V} and {entries}"
            )));
        }
        let per_cpu_len = if is_per_cpu(info.type_) {
            Some(V.next_multiple_of(8) * possible_cpus()?)
        } else {
            None
        };
        Ok(Some(Map {
            name: label,
            cname: name,
            fd: fd.as_raw_fd(),
            max_entries: max_entries as usize,
            per_cpu_len,
        }))
    }

    pub(super) fn what(&self) -> String {
        format!("map {}", self.name)
    }

    /// Writes `value` under `key`; refused for a per-CPU map (the kernel would read one value
    /// per CPU).
    pub(crate) fn update(&self, key: &[u8; K], value: &[u8; V]) -> Result<(), SteerError> {
        if self.per_cpu_len.is_some() {
            return Err(SteerError::Object(format!(
                "map {} is per-CPU; an update takes one value per CPU",
                self.name
            )));
        }
        // SAFETY: the map's key and value sizes are K and V (checked in `find`) and it is
        // not per-CPU (checked above), so the kernel reads exactly the two arrays, which
        // live across the call.
        let ret = unsafe {
            sys::bpf_map_update_elem(
                self.fd,
                key.as_ptr().cast(),
                value.as_ptr().cast(),
                sys::BPF_ANY as u64,
            )
        };
        check(ret, "bpf_map_update_elem", || self.what()).map(drop)
    }

    /// Deletes `key`; `Ok(false)` if it was not there.
    pub(super) fn delete(&self, key: &[u8; K]) -> Result<bool, SteerError> {
        // SAFETY: the map's key size is K, so the kernel reads exactly `key`.
        let ret = unsafe { sys::bpf_map_delete_elem(self.fd, key.as_ptr().cast()) };
        match check(ret, "bpf_map_delete_elem", || self.what()) {
            Ok(_) => Ok(true),
            Err(error) if error.errno() == Some(libc::ENOENT) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Looks up `key` into `value`, which must hold the map's value (per-CPU maps: `V`
    /// rounded up to 8 for each possible CPU, refused if shorter); `Ok(false)` if absent.
    pub(crate) fn lookup_into(&self, key: &[u8; K], value: &mut [u8]) -> Result<bool, SteerError> {
        let needed = self.per_cpu_len.unwrap_or(V);
        if value.len() < needed {
            return Err(SteerError::Object(format!(
                "{}-byte buffer for map {}, whose values take {needed}",
                value.len(),
                self.name
            )));
        }
        // SAFETY: the kernel reads K bytes of `key` and writes the map's value size into
        // `value`: V for plain maps, and V rounded up to 8 per possible CPU for per-CPU maps
        // (`per_cpu_len`, from the map's type at `find`); the check above guarantees room.
        let ret = unsafe {
            sys::bpf_map_lookup_elem(self.fd, key.as_ptr().cast(), value.as_mut_ptr().cast())
        };
        match check(ret, "bpf_map_lookup_elem", || self.what()) {
            Ok(_) => Ok(true),
            Err(error) if error.errno() == Some(libc::ENOENT) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Every key, walking with `bpf_map_get_next_key`. The walk restarts when the program
    /// evicts the key it stands on (LRU maps), so it stops after twice the capacity and the
    /// result is deduplicated.
    fn keys(&self) -> Result<Vec<[u8; K]>, SteerError> {
        let mut keys = Vec::new();
        let mut previous: Option<[u8; K]> = None;
        for _ in 0..2 * self.max_entries + 1 {
            let mut next = [0u8; K];
            let previous_ptr =
                previous.as_ref().map_or(ptr::null(), |key| key.as_ptr().cast::<c_void>());
            // SAFETY: `previous_ptr` is null (first key) or points at K readable bytes;
            // `next` has room for the K bytes the kernel writes.
            let ret = unsafe {
                sys::bpf_map_get_next_key(self.fd, previous_ptr, next.as_mut_ptr().cast())
            };
            match check(ret, "bpf_map_get_next_key", || self.what()) {
                Ok(_) => {}
                Err(error) if error.errno() == Some(libc::ENOENT) => break,
                Err(error) => return Err(error),
            }
            keys.push(next);
            previous = Some(next);
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Every entry; keys that vanish between the walk and the lookup are skipped.
    pub(super) fn entries(&self) -> Result<BTreeMap<[u8; K], [u8; V]>, SteerError> {
        let mut entries = BTreeMap::new();
        for key in self.keys()? {
            let mut value = [0u8; V];
            if self.lookup_into(&key, &mut value)? {
                entries.insert(key, value);
            }
        }
        Ok(entries)
    }

    /// Makes the map hold exactly `wanted` (see [`plan`]).
    pub(super) fn sync(&self, wanted: &BTreeMap<[u8; K], [u8; V]>) -> Result<(), SteerError> {
        if wanted.len() > self.max_entries {
            return Err(SteerError::TooMany {
                map: self.name,
                count: wanted.len(),
                max: self.max_entries,
            });
        }
        let (gone, changed) = plan(&self.entries()?, wanted);
        for key in &gone {
            self.delete(key)?;
        }
        for (key, value) in &changed {
            self.update(key, value)?;
        }
        Ok(())
    }
}

/// The number of possible CPUs, which sizes per-CPU map values: the highest index in
/// `/sys/devices/system/cpu/possible` ("0-3", "0,2-5") plus one.
pub(crate) fn possible_cpus() -> Result<usize, SteerError> {
    const PATH: &str = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(PATH).map_err(|error| SteerError::Call {
        call: "read",
        what: PATH.into(),
        errno: error.raw_os_error().unwrap_or(libc::EIO),
    })?;
    parse_cpu_list(&text)
        .ok_or_else(|| SteerError::Object(format!("{PATH}: unreadable list {text:?}")))
}

/// The highest CPU in a kernel CPU list, plus one.
pub(super) fn parse_cpu_list(text: &str) -> Option<usize> {
    text.trim()
        .split(',')
        .map(|range| range.rsplit('-').next().and_then(|last| last.trim().parse::<usize>().ok()))
        .try_fold(0, |highest, last| last.map(|last| highest.max(last + 1)))
        .filter(|&count| count > 0)
}

/// An embedded object's bytes, aligned as an ELF reader expects:
/// `static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(...));`.
#[repr(C, align(8))]
pub(crate) struct Aligned<Bytes: ?Sized>(pub(crate) Bytes);

/// A BPF object opened from embedded bytes; closed (its programs and maps released, unless
/// a link or another fd holds them) on drop.
#[derive(Debug)]
pub(crate) struct Object {
    object: NonNull<sys::bpf_object>,
    label: &'static str,
}

// SAFETY: after `load` the bpf_object is touched only by `Drop` (bpf_object__close), which
// takes `self` by value; the owners use the program and map fds through `bpf(2)`, which the
// kernel serialises, so moving or sharing the handle between threads is sound.
unsafe impl Send for Object {}
// SAFETY: as above: `&self` methods only read libbpf's bookkeeping or issue `bpf(2)` calls.
unsafe impl Sync for Object {}

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: `object` came from bpf_object__open_mem and is closed only here; fds taken
        // from it are not used after their owner (which holds this Object) drops.
        unsafe { sys::bpf_object__close(self.object.as_ptr()) };
    }
}

impl Object {
    /// Opens `bytes` (an ELF object `build.rs` compiled; `label` names it in errors). Nothing
    /// is loaded into the kernel yet.
    pub(crate) fn open(
        bytes: &'static Aligned<[u8]>,
        label: &'static str,
    ) -> Result<Object, SteerError> {
        let bytes = &bytes.0;
        // SAFETY: `bytes` is a static buffer of the given length, aligned as an ELF reader
        // expects (`Aligned`); libbpf copies what it keeps and only reads the buffer; null
        // opts means defaults.
        let object =
            unsafe { sys::bpf_object__open_mem(bytes.as_ptr().cast(), bytes.len(), ptr::null()) };
        let Some(object) = NonNull::new(object) else {
            return Err(SteerError::Call {
                call: "bpf_object__open_mem",
                what: format!("the embedded {label}"),
                errno: last_errno(),
            });
        };
        Ok(Object { object, label })
    }

    /// Map `name` of the opened object, its layout checked (see [`Map::find`]).
    pub(crate) fn map<const K: usize, const V: usize>(
        &self,
        name: &'static CStr,
        entries: usize,
    ) -> Result<Map<K, V>, SteerError> {
        Map::find(self.object, name, entries)
    }

    /// Marks program `name` as handling multi-buffer frames (`BPF_F_XDP_HAS_FRAGS`, Linux
    /// 5.18+), before [`Object::load`]: the kernel then hands it frames longer than a page
    /// (its `data`..`data_end` covers the first buffer only) and lets a device with such an
    /// MTU run it natively. A kernel without the flag refuses the load.
    pub(crate) fn set_has_frags(&self, name: &'static CStr) -> Result<(), SteerError> {
        let label = name.to_str().unwrap_or("?");
        // SAFETY: `object` is live and not loaded yet; the name is NUL-terminated.
        let program =
            unsafe { sys::bpf_object__find_program_by_name(self.object.as_ptr(), name.as_ptr()) };
        if program.is_null() {
            return Err(SteerError::Object(format!("{}: no program named {label}", self.label)));
        }
        // SAFETY: `program` is non-null and belongs to the live, not yet loaded object.
        let flags = unsafe { sys::bpf_program__flags(program) } | sys::BPF_F_XDP_HAS_FRAGS;
        // SAFETY: as above; libbpf only records the flags for the load.
        let ret = unsafe { sys::bpf_program__set_flags(program, flags) };
        check(ret, "bpf_program__set_flags", || format!("{label}: BPF_F_XDP_HAS_FRAGS")).map(drop)
    }

    /// Loads the object into the kernel (the verifier runs here). Needs `CAP_BPF`.
    pub(crate) fn load(&self) -> Result<(), SteerError> {
        // SAFETY: `object` is live (owned by `self`).
        let ret = unsafe { sys::bpf_object__load(self.object.as_ptr()) };
        check(ret, "bpf_object__load", || {
            format!("{} (libbpf logs the verifier's reasons)", self.label)
        })
        .map(drop)
    }

    /// `map` with its fd, once the object is loaded.
    pub(crate) fn loaded<const K: usize, const V: usize>(
        &self,
        map: Map<K, V>,
    ) -> Result<Map<K, V>, SteerError> {
        map.loaded(self.object)
    }

    /// The fd of loaded program `name` (owned by the object).
    pub(crate) fn program_fd(&self, name: &'static CStr) -> Result<RawFd, SteerError> {
        let label = name.to_str().unwrap_or("?");
        // SAFETY: `object` is live and loaded; the name is NUL-terminated.
        let program =
            unsafe { sys::bpf_object__find_program_by_name(self.object.as_ptr(), name.as_ptr()) };
        if program.is_null() {
            return Err(SteerError::Object(format!("{}: no program named {label}", self.label)));
        }
        // SAFETY: `program` is non-null and belongs to the live object.
        let fd = unsafe { sys::bpf_program__fd(program) };
        check(fd, "bpf_program__fd", || label.to_string())
    }
}

/// What one [`test_run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TestRun {
    /// The program's return value (an XDP action).
    pub(crate) retval: u32,
    /// Bytes of the frame as the program left it, copied into the output buffer.
    pub(crate) out_len: usize,
}

/// The `xdp_md` context of a test run: `size` bytes arriving on `rx_queue` of `ifindex`.
fn xdp_context(size: u32, ifindex: u32, rx_queue: u32) -> sys::xdp_md {
    sys::xdp_md {
        data: 0,
        data_end: size,
        data_meta: 0,
        ingress_ifindex: ifindex,
        rx_queue_index: rx_queue,
        egress_ifindex: 0,
    }
}

/// The length of `frame` as the kernel's `u32`, or `E2BIG`.
fn frame_size(frame: &[u8], what: impl FnOnce() -> String) -> Result<u32, SteerError> {
    u32::try_from(frame.len()).map_err(|_| SteerError::Call {
        call: "bpf_prog_test_run_opts",
        what: what(),
        errno: libc::E2BIG,
    })
}

/// Runs XDP program `program_fd` once on `frame` with `BPF_PROG_TEST_RUN`, as if it arrived
/// on queue `rx_queue` of device `ifindex` (0: none) in the calling thread's network
/// namespace; the frame as the program left it is copied into `out` (empty: not wanted).
/// Maps are the live ones. The kernel refuses (`EINVAL`) frames shorter than an Ethernet
/// header, and a queue other than 0 without a device.
pub(crate) fn test_run(
    program_fd: RawFd,
    frame: &[u8],
    ifindex: u32,
    rx_queue: u32,
    out: &mut [u8],
) -> Result<TestRun, SteerError> {
    let what = || format!("{}-byte frame on ifindex {ifindex} queue {rx_queue}", frame.len());
    let size = frame_size(frame, what)?;
    let context = xdp_context(size, ifindex, rx_queue);
    // SAFETY: an all-zero bpf_test_run_opts is the "no options" value.
    let mut opts: sys::bpf_test_run_opts = unsafe { mem::zeroed() };
    opts.sz = opts_size!(opts, bpf_test_run_opts, repeat);
    opts.data_in = frame.as_ptr().cast();
    opts.data_size_in = size;
    if !out.is_empty() {
        opts.data_out = out.as_mut_ptr().cast();
        opts.data_size_out = u32::try_from(out.len()).unwrap_or(u32::MAX);
    }
    opts.ctx_in = ptr::from_ref(&context).cast();
    opts.ctx_size_in = mem::size_of::<sys::xdp_md>() as u32;
    opts.repeat = 1;
    // SAFETY: `frame`, `context` and `out` outlive the call and their sizes are given (the
    // kernel writes at most `data_size_out` bytes into `out`; none when it is null).
    let ret = unsafe { sys::bpf_prog_test_run_opts(program_fd, &mut opts) };
    check(ret, "bpf_prog_test_run_opts", what)?;
    Ok(TestRun { retval: opts.retval, out_len: (opts.data_size_out as usize).min(out.len()) })
}

/// The kernel's `BPF_F_TEST_XDP_LIVE_FRAMES` (5.18): frames a test run redirects or
/// transmits really leave.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = sys::BPF_F_TEST_XDP_LIVE_FRAMES;

/// The largest `batch_size` the kernel takes in live-frames mode (`TEST_XDP_MAX_BATCH`).
pub(super) const LIVE_MAX_BATCH: u32 = 256;

/// Runs XDP program `program_fd` `repeat` times in live-frames mode: each run starts from a
/// page-pool copy of `frame` as if received on queue 0 of `ifindex`, and what the program
/// returns happens for real (`XDP_TX` leaves by `ifindex`, `XDP_REDIRECT` by its target),
/// `batch_size` frames at a time. Changes a program makes to a frame persist in the pool
/// page and are seen by a later run that reuses the page (xdp-trafficgen relies on this).
/// The kernel returns early, with what it did so far, when a signal is pending.
pub(crate) fn test_run_live(
    program_fd: RawFd,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> Result<(), SteerError> {
    let what = || format!("live frames on ifindex {ifindex}, repeat {repeat}");
    let size = frame_size(frame, what)?;
    let context = xdp_context(size, ifindex, 0);
    // SAFETY: an all-zero bpf_test_run_opts is the "no options" value.
    let mut opts: sys::bpf_test_run_opts = unsafe { mem::zeroed() };
    opts.sz = opts_size!(opts, bpf_test_run_opts, batch_size);
    opts.data_in = frame.as_ptr().cast();
    opts.data_size_in = size;
    opts.ctx_in = ptr::from_ref(&context).cast();
    opts.ctx_size_in = mem::size_of::<sys::xdp_md>() as u32;
    opts.repeat = repeat.min(i32::MAX as u32) as c_int;
    opts.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
    opts.batch_size = batch_size.clamp(1, LIVE_MAX_BATCH);
    // SAFETY: `frame` and `context` outlive the call and their sizes are given; live mode
    // takes no output buffers (both null, as zeroed).
    let ret = unsafe { sys::bpf_prog_test_run_opts(program_fd, &mut opts) };
    check(ret, "bpf_prog_test_run_opts", what).map(drop)
}

/// Sums a per-CPU map's `u64` values (`bytes` holds one per possible CPU).
pub(crate) fn sum_per_cpu(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .map(|value| u64::from_ne_bytes(value.try_into().unwrap_or_default()))
        .sum()
}

/// Now on the clock `bpf_ktime_get_ns()` reads (`CLOCK_MONOTONIC`), in nanoseconds: what
/// a user-space sender stamps frames with where the programs that read stamps (the
/// benchmark's sink) compare them with their own clock. A vDSO call, no syscall.
pub(crate) fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a live timespec the call fills; CLOCK_MONOTONIC always exists, so
    // the call cannot fail (and a failure would leave `now` zero, not undefined).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(now.tv_nsec as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Whether the test runs as root (loading BPF needs it).
    pub(crate) fn root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0,2-5"), Some(6));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("0-x"), None);
    }

    #[test]
    fn per_cpu_values_sum() {
        let mut bytes = Vec::new();
        for value in [1u64, 0, 41] {
            bytes.extend_from_slice(&value.to_ne_bytes());
        }
        assert_eq!(sum_per_cpu(&bytes), 42);
        assert_eq!(sum_per_cpu(&[]), 0);
    }
}
