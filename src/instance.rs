//! One `xlb run` per interface and per control socket: exclusive `flock(2)` locks taken
//! before a second instance touches anything.
//!
//! A second `xlb run` on the same interfaces used to get far enough to flush the running
//! instance's probe routes and rules (and replace its XDP program) before failing. Now `run`
//! takes, right after reading its config and before any change to the system:
//!
//! - one lock per interface, `/run/xlb/netns-<inode>-<ifname>.lock`: the network
//!   namespace's inode is part of the name because the same interface name in two
//!   namespaces is two interfaces (and everything xlb changes, routes, rules, XDP, is per
//!   namespace);
//! - one lock for the control socket, `<socket>.lock` beside it.
//!
//! # Invariants
//!
//! - While an [`InstanceLock`] lives, no other [`InstanceLock::acquire`] of the same path
//!   succeeds, in any process: the lock is `flock(LOCK_EX | LOCK_NB)` on the open file, which
//!   the kernel releases when the process ends however it ends (a `kill -9` leaves no stale
//!   lock, only a file the next instance locks again).
//! - A refusal is [`LockError::Held`] and names the path, what it guards and the holder's
//!   PID, which the holder writes into the file once it holds the lock.
//! - Dropping the lock removes the file while still holding it. To stay correct with that
//!   removal, `acquire` checks after locking that the path still names the file it locked
//!   (same device and inode) and starts again otherwise, so two processes can never each
//!   hold a lock on a different file of the same name.
//!
//! These files are separate from any other state xlb keeps: they only say who runs. A module
//! of its own because the daemon takes the locks and the dataplane's device tuning keeps its
//! record beside them (`busypoll::record_path`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where interface locks live.
pub const LOCK_DIR: &str = "/run/xlb";

/// How often `acquire` starts again when the file it locked was removed meanwhile.
const ATTEMPTS: usize = 8;

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another xlb{} already runs on {what} (it holds {path}); stop it first, or use other \
         interfaces and --socket",
        pid.map(|pid| format!(" (PID {pid})")).unwrap_or_default()
    )]
    Held {
        /// What the lock guards, e.g. `interface eth0`.
        what: String,
        /// The lock file.
        path: PathBuf,
        /// The holder's PID, as it wrote it (None if unreadable).
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("{what}: lock file {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An exclusive lock held on a file until dropped.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock at `path` (created, with its directory, if needed) and writes this
    /// process's PID into it; `what` names what it guards, for the error.
    pub fn acquire(path: &Path, what: &str) -> Result<InstanceLock, LockError> {
        let io_error = |source| LockError::Io { what: what.to_string(), path: path.into(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error)?;
        }
        for _ in 0..ATTEMPTS {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_error)?;
            // std's flock (1.89, the crate's rust-version).
            let locked = file.try_lock();
            match locked {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let pid =
                        file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                    return Err(LockError::Held { what: what.to_string(), path: path.into(), pid });
                }
                Err(fs::TryLockError::Error(error)) => return Err(io_error(error)),
            }
            // The previous holder may have removed the file between our open and our lock.
            let ours = file.metadata().map_err(io_error)?;
            let same = fs::metadata(path)
                .is_ok_and(|now| (now.dev(), now.ino()) == (ours.dev(), ours.ino()));
            if !same {
                continue;
            }
            file.set_len(0).map_err(io_error)?;
            file.rewind().map_err(io_error)?;
            writeln!(file, "{}", std::process::id()).map_err(io_error)?;
            return Ok(InstanceLock { file, path: path.to_path_buf() });
        }
        Err(io_error(io::Error::other("the lock file keeps being replaced")))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Still holding the lock: whoever opens the path next gets a new file, and checks.
        let ours = self.file.metadata().ok().map(|m| (m.dev(), m.ino()));
        let current = fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == current {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The lock file, in `dir` (xlb uses [`LOCK_DIR`]), of interface `name` in the current
/// network namespace.
pub fn interface_lock_path(dir: &Path, name: &str) -> PathBuf {
    // Without /proc the namespace cannot be told apart: one name for all, the safe side.
    let netns = fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0);
    dir.join(format!("netns-{netns}-{name}.lock"))
}

/// The lock file of the control socket at `socket`.
pub fn socket_lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The locks of one `xlb run`: its control socket, then each interface (lock files in
/// `dir`), in order. The first one held elsewhere is the error, and the locks taken so far
/// are released.
pub fn lock_instance<'a>(
    dir: &Path,
    socket: &Path,
    interfaces: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<InstanceLock>, LockError> {
    let what = format!("control socket {}", socket.display());
    let mut locks = vec![InstanceLock::acquire(&socket_lock_path(socket), &what)?];
    for name in interfaces {
        let what = format!("interface {name}");
        locks.push(InstanceLock::acquire(&interface_lock_path(dir, name), &what)?);
    }
    Ok(locks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xlb-lock-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_goes() {
        let dir = scratch("second");
        let path = dir.join("sub").join("x.lock");
        let first = InstanceLock::acquire(&path, "interface eth9").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        // Another open file description, as another process would have: flock refuses it.
        let error = InstanceLock::acquire(&path, "interface eth9").unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(&error, LockError::Held { pid: Some(pid), .. } if *pid == std::process::id()),
            "{error:?}"
        );
        assert!(text.contains("interface eth9"), "{text}");
        assert!(text.contains(&format!("PID {}", std::process::id())), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        drop(first);
        assert!(!path.exists(), "the holder removes its file");
        let again = InstanceLock::acquire(&path, "interface eth9").unwrap();
        drop(again);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stale_file_without_a_holder_is_taken() {
        let dir = scratch("stale");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.lock");
        fs::write(&path, "999999\n").unwrap();
        let lock = InstanceLock::acquire(&path, "interface eth9").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        drop(lock);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn instance_locks_cover_the_socket_and_every_interface() {
        let dir = scratch("instance");
        let socket = dir.join("ctl.sock");
        let locks = lock_instance(&dir, &socket, ["eth0"]).unwrap();
        assert_eq!(locks.len(), 2);
        assert_eq!(locks[0].path(), socket_lock_path(&socket));
        assert_eq!(locks[1].path(), interface_lock_path(&dir, "eth0"));
        // Same socket, other interfaces: refused on the socket.
        let error = lock_instance(&dir, &socket, ["eth1"]).unwrap_err();
        assert!(error.to_string().contains("control socket"), "{error}");
        // Other socket, same interface: refused on the interface.
        let error = lock_instance(&dir, &dir.join("other.sock"), ["eth0"]).unwrap_err();
        assert!(error.to_string().contains("interface eth0"), "{error}");
        assert!(!socket_lock_path(&dir.join("other.sock")).exists(), "released on refusal");
        drop(locks);
        assert!(!interface_lock_path(&dir, "eth0").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
