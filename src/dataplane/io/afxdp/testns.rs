//! A network namespace for the root-only unit tests of this module's sockets and programs,
//! deleted on drop (panics included).

use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;

/// A network namespace this test run owns, deleted on drop (panics included).
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn create(name: String) -> Netns {
        // A namespace of the same name can only be a leftover of a killed run.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let netns = Netns { name };
        netns.run("ip", &["netns", "add", &netns.name]);
        netns
    }

    pub(crate) fn run(&self, program: &str, args: &[&str]) -> String {
        let output = Command::new(program).args(args).output().expect("run ip");
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `ip -n NAME ARGS...`.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        self.run("ip", &all)
    }

    /// Moves the calling thread into the namespace.
    pub(crate) fn enter(&self) {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).expect("namespace file");
        // SAFETY: `file` is an open namespace fd; setns changes only this thread.
        let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "setns {path}: {}", io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
