//! What xlb reads off a network device before it binds to it: index, MAC, queue count and
//! MTU.
//!
//! Everything comes from sysfs (`/sys/class/net/IF/…`), which reflects the network namespace
//! the process runs in. No `unsafe` here.

use std::fs;
use std::path::PathBuf;

use crate::wire::MacAddr;
use crate::wire::ethernet::parse_mac;

/// Why a device could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("interface {name}: no such device in this network namespace")]
    NoDevice { name: String },
    #[error("interface {name}: reading {what}: {detail}")]
    Read { name: String, what: &'static str, detail: String },
}

/// A network device as xlb binds to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netdev {
    pub name: String,
    pub ifindex: u32,
    pub mac: MacAddr,
    /// Receive queues (`/sys/class/net/IF/queues/rx-*`); at least 1.
    pub rx_queues: u32,
    /// The device's MTU (`/sys/class/net/IF/mtu`; 1500 if unreadable).
    pub mtu: u32,
}

impl Netdev {
    /// Whether the device is still there as xlb bound it: a device of this name with this
    /// index (a deleted one is gone; a re-created one has a new index, and none of xlb's
    /// program and sockets).
    pub fn is_present(&self) -> bool {
        let path = PathBuf::from("/sys/class/net").join(&self.name).join("ifindex");
        fs::read_to_string(path).is_ok_and(|text| text.trim().parse() == Ok(self.ifindex))
    }

    /// The longest Ethernet frame the MTU lets in: the MTU plus a header and a VLAN tag.
    pub fn max_frame(&self) -> u32 {
        self.mtu.saturating_add(18)
    }
}

impl Netdev {
    /// Reads the device `name` of the current network namespace.
    pub fn open(name: &str) -> Result<Netdev, NetdevError> {
        let base = PathBuf::from("/sys/class/net").join(name);
        if name.is_empty() || name.contains('/') || !base.exists() {
            return Err(NetdevError::NoDevice { name: name.to_string() });
        }
        let read = |what: &'static str| {
            fs::read_to_string(base.join(what)).map(|s| s.trim().to_string()).map_err(|e| {
                NetdevError::Read { name: name.to_string(), what, detail: e.to_string() }
            })
        };
        let bad = |what: &'static str, text: &str| NetdevError::Read {
            name: name.to_string(),
            what,
            detail: format!("unexpected value {text:?}"),
        };
        let ifindex_text = read("ifindex")?;
        let ifindex = ifindex_text.parse().map_err(|_| bad("ifindex", &ifindex_text))?;
        let address = read("address")?;
        let mac = MacAddr(parse_mac(&address).map_err(|_| bad("address", &address))?);
        let rx_queues = fs::read_dir(base.join("queues"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count() as u32
            })
            .unwrap_or(1)
            .max(1);
        let mtu = read("mtu").ok().and_then(|text| text.parse().ok()).unwrap_or(1500);
        Ok(Netdev { name: name.to_string(), ifindex, mac, rx_queues, mtu })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loopback_and_refuses_unknown_devices() {
        let lo = Netdev::open("lo").expect("every namespace has lo");
        assert!(lo.ifindex >= 1);
        assert_eq!(lo.mac, MacAddr([0; 6]));
        assert!(lo.rx_queues >= 1);
        assert!(lo.mtu >= 1500, "lo's MTU is 64 KiB by default: {}", lo.mtu);
        assert!(lo.is_present());
        assert!(!Netdev { ifindex: lo.ifindex + 100_000, ..lo.clone() }.is_present());
        assert!(!Netdev { name: "xlb-no-such-dev".into(), ..lo }.is_present());
        assert!(matches!(Netdev::open("xlb-no-such-dev"), Err(NetdevError::NoDevice { .. })));
        assert!(matches!(Netdev::open("../lo"), Err(NetdevError::NoDevice { .. })));
    }
}
