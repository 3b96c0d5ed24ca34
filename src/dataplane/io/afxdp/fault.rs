//! Test-only fault injection: the kernel's refusals of multi-buffer XDP, on demand.
//!
//! `xlb run` refuses to start, naming the interface, its MTU, the step the kernel refused and
//! the MTU that works without multi-buffer, when an interface's MTU lets in frames longer
//! than one AF_XDP buffer and the kernel refuses `BPF_F_XDP_HAS_FRAGS` (Linux before 5.18
//! refuses the load) or `XDP_USE_SG` (Linux before 6.6; a driver without multi-buffer
//! zero-copy). No device this project's test machines can make refuses either on a kernel
//! that has them: veth, tap, bridge and ifb accept a frags program natively or in generic
//! mode at any MTU up to 65535 (a veth refuses only a program *without* frags above a
//! page), and an AF_XDP socket binds with `XDP_USE_SG` in copy mode on every device (the
//! kernel refuses it only in zero-copy mode on a driver with `xdp_zc_max_segs == 1`, or
//! with `XDP_SHARED_UMEM`, and xlb falls back to copy mode and shares no UMEM). So the
//! root test of that refusal injects it:
//!
//! - `XLB_TEST_REFUSE_MULTI_BUFFER=load`: loading the steering program with
//!   `BPF_F_XDP_HAS_FRAGS` fails with `EINVAL`, as a kernel without the flag answers;
//! - `XLB_TEST_REFUSE_MULTI_BUFFER=bind`: binding an AF_XDP socket with `XDP_USE_SG` fails
//!   with `EOPNOTSUPP` in every mode, as a driver without multi-buffer AF_XDP answers.
//!
//! Honoured only in debug builds (`cfg(debug_assertions)`, what `cargo test` builds): a
//! release build, the one packaged and installed, never reads the variable. Any other
//! value injects nothing. Only the multi-buffer paths ask, so the variable cannot break a
//! box whose MTU needs no multi-buffer.

use std::io;

/// The variable that names the step to refuse.
pub const VARIABLE: &str = "XLB_TEST_REFUSE_MULTI_BUFFER";

/// A multi-buffer step the kernel may refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Loading the steering program with `BPF_F_XDP_HAS_FRAGS`.
    Load,
    /// Binding an AF_XDP socket with `XDP_USE_SG`.
    Bind,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Load => "load",
            Step::Bind => "bind",
        }
    }

    /// The errno the kernel answers this step's refusal with.
    fn errno(self) -> i32 {
        match self {
            Step::Load => libc::EINVAL,
            Step::Bind => libc::EOPNOTSUPP,
        }
    }
}

/// The refusal to inject for `step`, if a debug build was asked for one.
pub(crate) fn refused(step: Step) -> Option<i32> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let asked = std::env::var(VARIABLE).ok()?;
    (asked == step.name()).then(|| step.errno())
}

/// [`refused`] as an I/O error.
pub(crate) fn refused_io(step: Step) -> Option<io::Error> {
    refused(step).map(io::Error::from_raw_os_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_answers_its_own_name_only() {
        // The one test that sets the variable (tests run in parallel threads: no other
        // test reads it).
        let cases = [
            ("load", Some(libc::EINVAL), None),
            ("bind", None, Some(libc::EOPNOTSUPP)),
            ("Load", None, None),
            ("", None, None),
        ];
        for (value, load, bind) in cases {
            // SAFETY: no other thread of the test binary reads or writes this variable.
            unsafe { std::env::set_var(VARIABLE, value) };
            assert_eq!((refused(Step::Load), refused(Step::Bind)), (load, bind), "{value:?}");
        }
        // SAFETY: as above.
        unsafe { std::env::remove_var(VARIABLE) };
        assert_eq!((refused(Step::Load), refused(Step::Bind)), (None, None));
        assert_eq!(refused_io(Step::Bind).and_then(|e| e.raw_os_error()), None);
    }
}
