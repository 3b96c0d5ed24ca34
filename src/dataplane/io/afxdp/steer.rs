//! (being written: a stub of the contract so the daemon compiles)
#![allow(dead_code, missing_docs)]
use crate::control::Snapshot;
use crate::flow::Proto;
use crate::wire::MacAddr;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SteerRules {
    pub dst: Vec<Ipv4Addr>,
    pub nat_src: Vec<(Ipv4Addr, u16, Proto)>,
}
impl SteerRules {
    pub fn from_snapshot(_: &Snapshot) -> SteerRules {
        SteerRules::default()
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Generic,
}
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct SteerError;
pub struct SteerProgram;
pub struct Attachment;
impl SteerProgram {
    pub fn load() -> Result<SteerProgram, SteerError> {
        Err(SteerError)
    }
    pub fn set_rules(&self, _: &SteerRules) -> Result<(), SteerError> {
        Err(SteerError)
    }
    pub fn attach(&self, _: u32, _: XdpMode) -> Result<Attachment, SteerError> {
        Err(SteerError)
    }
    pub fn attach_best(&self, _: u32) -> Result<(Attachment, XdpMode), SteerError> {
        Err(SteerError)
    }
    pub fn set_socket(&self, _: u32, _: RawFd) -> Result<(), SteerError> {
        Err(SteerError)
    }
    pub fn arp_seen(&self) -> Result<Vec<(Ipv4Addr, MacAddr, u64)>, SteerError> {
        Err(SteerError)
    }
}
pub fn remove_stale(_: u32) -> Result<bool, SteerError> {
    Err(SteerError)
}
