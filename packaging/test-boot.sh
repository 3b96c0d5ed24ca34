#!/usr/bin/env bash
# The package on a booted systemd, as an operator meets it (scripts/test runs it as root):
# a minimal Debian 12 root made by debootstrap from Debian's mirror, booted with
# systemd-nspawn in a network namespace of its own (--private-network: nothing of this
# machine's network is touched), then inside it
#   apt-get install ./xlb_*.deb; systemctl start xlb      -> active, "ready: ..." status
#   xlb ctl -L -n                                         -> the configured service
#   edit /etc/xlb/xlb.toml; systemctl reload xlb          -> the new scheduler listed
#   journalctl -p warning                                 -> warnings only (priorities read)
#   systemctl stop xlb                                    -> inactive, control socket gone
# The container gets what a host's systemd has and a container's lacks by default:
# CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_IPC_LOCK in its bounding set and the bpf(2)
# system call. Found this way, and fixed: /bin/kill (procps) is missing from a minimal
# Debian, so ExecReload used it in vain; a container's systemd cannot raise
# RLIMIT_MEMLOCK, so the UMEM needs CAP_IPC_LOCK.
#
# The machine (xlb-PID), the veth inside it (xlb-PID-a/b) and the root directory are this
# run's, removed on exit even on failure. Needs root, debootstrap, systemd-nspawn (packages
# debootstrap, systemd-container) and Debian's mirror: where one is missing, or the mirror
# cannot be reached, it prints SKIPPED loudly and exits 0; once the container is up, every
# failure is a failure. Prints `boot: N passed, 0 failed`.
set -euo pipefail
tree=$(cd "$(dirname "$0")/.." && pwd)
export XLB_BINARY=${XLB_BINARY:-${CARGO_TARGET_DIR:-$tree/target}/debug/xlb}
suite=${XLB_BOOT_SUITE:-bookworm}
mirror=${XLB_BOOT_MIRROR:-http://deb.debian.org/debian}
skip() { printf '\n!!! boot: SKIPPED: %s\n\n' "$*" >&2; exit 0; }
fail() { echo "boot: FAILED: $*" >&2; exit 1; }
passed=0
ok() { passed=$((passed + 1)); echo "boot: ok: $*"; }

[ "$(id -u)" -eq 0 ] || skip "needs root"
for tool in debootstrap systemd-nspawn nsenter; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
done

name=xlb-$$
work=$(mktemp -d /tmp/xlb-$$-boot.XXXX)
nspawn_pid=
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        inner=$(pgrep -P "$nspawn_pid" | head -1 || true)
        [ -n "$inner" ] && nsenter -t "$inner" -a systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
        kill "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

deb=$(cd "$work" && bash "$tree/packaging/build-deb.sh" | tail -1)
[ -f "$deb" ] || fail "build-deb.sh made no package"

echo "boot: debootstrap $suite (minbase + systemd) from $mirror"
if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2 \
    "$suite" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -5 "$work/debootstrap.log" >&2
    skip "debootstrap of $suite from $mirror failed (no mirror?)"
fi
cp "$deb" "$work/root/root/"
cat >"$work/root/root/check.sh" <<EOF
#!/bin/bash
# Runs inside the booted container. Each check prints "ok: ..." or "FAILED: ..." and stops.
set -u
fail() { echo "FAILED: \$*"; journalctl -u xlb --no-pager -o cat -n 40; exit 1; }
systemctl is-system-running --wait >/dev/null 2>&1
ip link add $name-a type veth peer name $name-b || fail "veth"
ip addr add 192.0.2.2/24 dev $name-a && ip link set $name-a up && ip link set $name-b up || fail "veth up"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /root/$(basename "$deb") >/dev/null 2>&1 \\
    || fail "apt-get install ./$(basename "$deb")"
echo "ok: apt-get install ./$(basename "$deb")"
# The operator's one edit: the interface the box really has.
sed -i 's/^name = "eth0"/name = "$name-a"/' /etc/xlb/xlb.toml
systemctl start xlb || fail "systemctl start xlb"
[ "\$(systemctl is-active xlb)" = active ] || fail "not active after start"
systemctl show -p StatusText --value xlb | grep '^ready: ' >/dev/null || fail "no ready status: \$(systemctl show -p StatusText --value xlb)"
echo "ok: systemctl start xlb: active, status \$(systemctl show -p StatusText --value xlb)"
xlb ctl -L -n | grep '^TCP  192.0.2.10:80 maglev' >/dev/null || fail "xlb ctl -L -n: \$(xlb ctl -L -n)"
echo "ok: xlb ctl -L -n lists the configured service"
sed -i 's/^scheduler = "maglev"/scheduler = "wrr"/' /etc/xlb/xlb.toml
systemctl reload xlb || fail "systemctl reload xlb"
[ "\$(systemctl is-active xlb)" = active ] || fail "not active after reload"
xlb ctl -L -n | grep '^TCP  192.0.2.10:80 wrr' >/dev/null || fail "reload not applied: \$(xlb ctl -L -n)"
echo "ok: systemctl reload xlb: the edited config applied"
journalctl -u xlb -t xlb --no-pager -o cat | grep 'info: ready' >/dev/null || fail "no ready line in the journal"
warnings=\$(journalctl -u xlb -t xlb -p warning --no-pager -o cat)
echo "\$warnings" | grep 'info:' >/dev/null && fail "info lines logged at warning priority or above: \$warnings"
echo "\$warnings" | grep '^warn: ' >/dev/null || fail "no warning in the journal at warning priority: \$warnings"
echo "ok: journald reads the priorities (info lines below warning, warn lines at it)"
systemctl stop xlb || fail "systemctl stop xlb"
[ "\$(systemctl is-active xlb)" = inactive ] || fail "still \$(systemctl is-active xlb) after stop"
[ ! -e /run/xlb/xlb.sock ] || fail "control socket left after stop"
echo "ok: systemctl stop xlb: inactive, control socket removed"
ip link del $name-a
EOF
chmod +x "$work/root/root/check.sh"

echo "boot: booting $name (systemd-nspawn, private network)"
systemd-nspawn --quiet -D "$work/root" -M "$name" --register=no --keep-unit \
    --private-network --capability=CAP_BPF,CAP_NET_ADMIN,CAP_SYS_ADMIN,CAP_IPC_LOCK \
    --system-call-filter='bpf perf_event_open' -b >"$work/boot.log" 2>&1 </dev/null &
nspawn_pid=$!
init=
for _ in $(seq 150); do
    # nspawn's child is the container's systemd (PID 1 inside).
    init=$(pgrep -P "$nspawn_pid" -x systemd || true)
    [ -n "$init" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || { tail -20 "$work/boot.log" >&2; fail "systemd-nspawn exited"; }
    sleep 0.2
done
[ -n "$init" ] || { tail -20 "$work/boot.log" >&2; fail "the container's systemd did not start"; }
out=$(timeout 300 nsenter -t "$init" -a /root/check.sh 2>&1) || true
while IFS= read -r line; do
    case $line in
        ok:*) ok "${line#ok: }" ;;
        *) echo "boot: $line" ;;
    esac
done <<<"$out"
grep -q '^FAILED' <<<"$out" && fail "see above"
[ "$passed" -eq 6 ] || fail "$passed of 6 checks ran"
echo "boot: $passed passed, 0 failed"
