//! The network-namespace labs end to end: `lab/dr`, `lab/nat` and `lab/fullnat` each build
//! their topology, start this build's `xlb run` in it, drive real clients (curl and a UDP
//! client) through it with `--requests 20`; `lab/operate` runs an operator's session (a
//! backend failing and returning, `xlb ctl` changes, `-S`/`-C`/`-R`) under steady curl load;
//! the robustness labs of issue 6 run their short versions: `lab/malformed --requests 20`
//! (the malformed corpus on the wire under good traffic), `lab/failover` (a real server
//! killed, another's link down), `lab/checks` (issue 15: the icmp, https, script and dns health
//! checks, each seeing its own fault), `lab/restart` (xlb SIGTERMed and SIGKILLed under Maglev DR
//! load; also with one real server down or drained, `--out`), `lab/synflood --seconds 3` in
//! DR, NAT and FullNAT (`--forward`) and `lab/soak --seconds 20`; the IPv6 labs of issue 12,
//! `lab/dr6` and `lab/dualstack` (NAT and FullNAT, `--forward`), with `--requests 20`; `lab/vrrp` (issue
//! 13: an xlb pair under keepalived, the active one SIGKILLed; also `--forward fullnat`),
//! `lab/routes` (BGP mode's VIP routes) and `lab/ecmp` (three boxes behind a bird2 router
//! doing ECMP and BFD); `lab/tunnel` (issue 14: IPIP and GUE to real servers behind a
//! router, running `xlb decap`; issue 12: the same in IPv6, `--family 6`; issue 15: UDP datagrams of 4000 and 9000 bytes, in fragments) and `lab/decap` (`xlb decap` alone, fed by lab/encap.py);
//! `lab/fragments` (issue 15: UDP datagrams of 4000 and 9000 bytes over MTU 1500, fragmented
//! both ways, in DR, NAT and FullNAT, `--mode`, IPv4 and IPv6, `--family`).
//! Each must print its PASS line, exit 0, and leave none of its namespaces behind.
//!
//! Root only (network namespaces, XDP): skipped with a message otherwise, unless
//! `XLB_REQUIRE_ROOT_TESTS=1`, when not being root is a failure. The labs run one at a time
//! (they share the machine's two cores with xlb's poll loop), each bounded by `timeout`.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// One lab at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A lab that takes longer than this is stopped (SIGTERM: its trap still cleans up).
const LAB_TIMEOUT_SECONDS: &str = "300";

/// Whether the test may run; panics when it must run but cannot.
fn may_run(lab: &str) -> bool {
    xlb::testkit::root_or_skip(&format!("lab {lab}"))
}

/// The `xlb-<pid>` prefix a lab prints on its first line (`lab dr: prefix xlb-1234 (...)`).
fn prefix_of(stdout: &str) -> Option<&str> {
    let rest = stdout.split("prefix ").nth(1)?;
    let prefix = rest.split_whitespace().next()?;
    let pid = prefix.strip_prefix("xlb-")?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some(prefix)
}

/// The namespaces whose names start with `prefix-`.
fn namespaces_left(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let mine = format!("{prefix}-");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&mine))
        .map(str::to_string)
        .collect()
}

/// Runs `lab/LAB ARGS`; its last line must start with `lab LAB: PASS (PASS_STARTS`.
fn run_lab(lab: &str, args: &[&str], pass_starts: &str) -> String {
    if !may_run(lab) {
        return String::new();
    }
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab").join(lab);
    let out = Command::new("timeout")
        .args([LAB_TIMEOUT_SECONDS, "bash"])
        .arg(&script)
        .args(args)
        .env("XLB", env!("CARGO_BIN_EXE_xlb"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let transcript = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    let prefix = prefix_of(&stdout)
        .unwrap_or_else(|| panic!("lab {lab} did not print its prefix\n{transcript}"));
    let left = namespaces_left(prefix);
    assert!(left.is_empty(), "lab {lab} left namespaces behind: {left:?}\n{transcript}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success() && last.starts_with(&format!("lab {lab}: PASS ({pass_starts}")),
        "lab {lab}: {}\n{transcript}",
        out.status
    );
    last.to_string()
}

#[test]
fn prefix_is_read_from_the_first_line() {
    let line = "lab dr: prefix xlb-4242 (namespaces xlb-4242-*, scratch /tmp/x), 20 requests\n";
    assert_eq!(prefix_of(line), Some("xlb-4242"));
    assert_eq!(prefix_of("lab dr: prefix xlb- (namespaces"), None);
    assert_eq!(prefix_of("lab dr: prefix xlb-12a4 (namespaces"), None);
    assert_eq!(prefix_of("lab dr: needs root"), None);
}

#[test]
fn lab_dr() {
    run_lab("dr", &["--requests", "20"], "20/20 http");
}

#[test]
fn lab_nat() {
    run_lab("nat", &["--requests", "20"], "20/20 http");
}

#[test]
fn lab_fullnat() {
    run_lab("fullnat", &["--requests", "20"], "20/20 http");
}

#[test]
fn lab_operate() {
    run_lab("operate", &[], "rs1 down detected in ");
}

#[test]
fn lab_failover() {
    run_lab("failover", &[], "rs1 killed: down in ");
}

/// Issue 15: the icmp, https, script and dns checks, each seeing its own fault on rs2.
#[test]
fn lab_checks() {
    run_lab("checks", &[], "20/20 before, :80: ");
}

#[test]
fn lab_restart() {
    run_lab("restart", &[], "SIGTERM: gap ");
}

/// Issue 10: with rs2 down by health check, or drained by `xlb ctl`, every long-lived
/// connection is on rs1, and a restart must not move any onto rs2 (10–12 of 20 broke).
#[test]
fn lab_restart_with_a_server_down() {
    run_lab("restart", &["--out", "down"], "rs2 down; SIGTERM: gap ");
}

#[test]
fn lab_restart_with_a_server_drained() {
    run_lab("restart", &["--out", "drained"], "rs2 drained; SIGTERM: gap ");
}

#[test]
fn lab_synflood() {
    run_lab("synflood", &["--seconds", "3"], "no flood: client ");
}

#[test]
fn lab_synflood_nat() {
    run_lab("synflood", &["--seconds", "3", "--forward", "nat"], "no flood: client ");
}

#[test]
fn lab_synflood_fullnat() {
    run_lab("synflood", &["--seconds", "3", "--forward", "fullnat"], "no flood: client ");
}

#[test]
fn lab_soak() {
    run_lab("soak", &["--seconds", "20"], "");
}

/// Issue 13: two xlb boxes with keepalived (VRRP); the active one's xlb SIGKILLed under
/// DR load: the standby takes over, no long-lived connection breaks.
#[test]
fn lab_vrrp() {
    run_lab("vrrp", &[], "takeover ");
}

/// Issue 13: BGP mode's VIP route follows the backends' health and vanishes on SIGKILL.
#[test]
fn lab_routes() {
    run_lab("routes", &[], "60/60 http");
}

#[test]
fn lab_malformed() {
    run_lab("malformed", &["--requests", "20"], "675 corpus frames: ");
}

/// Issue 12: the DR lab in IPv6 (VIP on the real servers' `lo`, curl -6 through xlb).
#[test]
fn lab_dr6() {
    run_lab("dr6", &["--requests", "20"], "20/20 http");
}

/// Issue 12: an IPv4 and an IPv6 service on one box, NAT, real clients of both families.
#[test]
fn lab_dualstack_nat() {
    run_lab("dualstack", &["--requests", "20", "--forward", "nat"], "20/20 http4");
}

#[test]
fn lab_dualstack_fullnat() {
    run_lab("dualstack", &["--requests", "20", "--forward", "fullnat"], "20/20 http4");
}

/// Issue 13: three xlb boxes in BGP mode behind a bird2 router (ECMP, BFD), Maglev DR: new
/// connections spread over the boxes; one xlb SIGKILLed and restarted, one box's link down
/// and up: no long-lived connection breaks, no short request fails, the boxes rejoin.
#[test]
fn lab_ecmp() {
    run_lab("ecmp", &[], "60/60 http over boxes: ");
}

/// Issue 13: the ECMP fleet with FullNAT (`--forward fullnat`, each box its own local
/// address): one xlb SIGKILLed under load; every long-lived connection it held breaks (its
/// state was that box's), every surviving one stays in its own box's table, and no short
/// request that started after the withdrawal fails.
#[test]
fn lab_ecmp_fullnat() {
    run_lab("ecmp", &["--forward", "fullnat"], "60/60 http over boxes: ");
}

/// Issue 13: the VRRP pair with FullNAT (`--forward fullnat`): the standby takes over, and
/// every long-lived connection through the killed box breaks (its state was that box's).
#[test]
fn lab_vrrp_fullnat() {
    run_lab("vrrp", &["--forward", "fullnat"], "takeover ");
}

/// Issue 14: tunnel mode (IPIP) to three real servers behind a router, each running
/// `xlb decap`.
#[test]
fn lab_tunnel_ipip() {
    run_lab("tunnel", &["--requests", "20"], "20/20 http");
}

/// Issue 14: the same with GUE.
#[test]
fn lab_tunnel_gue() {
    run_lab("tunnel", &["--requests", "20", "--encap", "gue"], "20/20 http");
}

/// Issue 12: IPv6 tunnel mode (`--family 6`): IPv6-in-IPv6 to the three real servers behind
/// an IPv6 router, VIP on their `lo`, `xlb decap` stripping it; 100 curl -6 requests and as
/// many UDP ones shared by weight, 1 MB each way.
#[test]
fn lab_tunnel6_ipip() {
    run_lab("tunnel", &["--family", "6", "--requests", "100"], "100/100 http");
}

/// Issue 12: the same with GUE over IPv6 (its UDP checksum computed by xlb).
#[test]
fn lab_tunnel6_gue() {
    run_lab("tunnel", &["--family", "6", "--requests", "100", "--encap", "gue"], "100/100 http");
}

/// Issue 14: health checks through the tunnel (`via_vip = true`): rs3, its VIP taken off
/// `lo`, is taken out while its own address still answers, and comes back with it.
#[test]
fn lab_tunnel_check() {
    let check =
        "check = \"tcp\"\nvia_vip = true\ninterval = 0.5\ntimeout = 0.4\nfall = 3\nrise = 2";
    let pass = run_lab("tunnel", &["--requests", "20", "--tunnel-check", check], "20/20 http");
    if !pass.is_empty() {
        for step in ["rs3 without its VIP taken out", "rs3 back with its VIP"] {
            assert!(pass.contains(step), "lab tunnel passed without '{step}': {pass}");
        }
    }
}

/// Issue 14: `xlb decap` on a real server, fed IPIP and GUE by a stand-in for the balancer;
/// its SIGTERM and detached modes.
#[test]
fn lab_decap() {
    run_lab("decap", &["--requests", "20"], "60/60 udp");
}

/// Issue 13: the VRRP pair with NAT (`--forward nat`): the real servers' gateway is
/// keepalived's virtual address on the active box; the standby takes over, every long-lived
/// connection through the killed box breaks, and new ones are answered through the new box.
#[test]
fn lab_vrrp_nat() {
    run_lab("vrrp", &["--forward", "nat"], "takeover ");
}

/// Issue 15: UDP datagrams above the MTU (4000 and 9000 bytes over MTU 1500 veths) through
/// `xlb run`, fragmented by the client's kernel and, echoed whole, by the real server's;
/// every byte checked. In NAT the replies' later fragments must be steered to xlb (they
/// carry no ports): before that, none of the large datagrams came back.
#[test]
fn lab_fragments_dr() {
    run_lab("fragments", &["--requests", "20", "--mode", "dr"], "20/20 udp-100: ");
}

#[test]
fn lab_fragments_nat() {
    run_lab("fragments", &["--requests", "20", "--mode", "nat"], "20/20 udp-100: ");
}

#[test]
fn lab_fragments_fullnat() {
    run_lab("fragments", &["--requests", "20", "--mode", "fullnat"], "20/20 udp-100: ");
}

/// The same in IPv6: the fragment header behind the fixed header, a NAT reply's later
/// fragments steered by their first one as in IPv4.
#[test]
fn lab_fragments6_dr() {
    run_lab(
        "fragments",
        &["--requests", "20", "--mode", "dr", "--family", "6"],
        "20/20 udp6-100: ",
    );
}

#[test]
fn lab_fragments6_nat() {
    run_lab(
        "fragments",
        &["--requests", "20", "--mode", "nat", "--family", "6"],
        "20/20 udp6-100: ",
    );
}

#[test]
fn lab_fragments6_fullnat() {
    let args = ["--requests", "20", "--mode", "fullnat", "--family", "6"];
    run_lab("fragments", &args, "20/20 udp6-100: ");
}
