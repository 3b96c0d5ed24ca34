#!/usr/bin/env bash
# Tests the Debian package (scripts/test runs it): builds it with build-deb.sh from the binary
# given (XLB_BINARY, default: cargo's debug build, which scripts/test has just built, so CI
# pays no release build; the package is the same but for the optimisation), then checks
# - its metadata (dpkg-deb -I): name, version, Depends on what the binary links, the
#   conffile, and its contents (dpkg-deb -c): every file, owned by root;
# - the unit: `systemd-analyze verify` (where installed; the check says when it is not) with
#   no complaint at all, run on a copy whose ExecStart points at the extracted binary;
# - the man pages: groff -ww and `man --warnings` render them without a warning;
# - an install into a throw-away dpkg root (dpkg --root, never this machine's own): dpkg
#   takes it and registers the conffile, the installed binary runs (--version) and accepts
#   the installed /etc/xlb/xlb.toml (xlb check); then a purge removes it.
# Prints `deb: N passed, 0 failed` or fails naming the check.
set -euo pipefail
tree=$(cd "$(dirname "$0")/.." && pwd)
export XLB_BINARY=${XLB_BINARY:-${CARGO_TARGET_DIR:-$tree/target}/debug/xlb}
work=$(mktemp -d /tmp/xlb-deb-$$.XXXX)
trap 'rm -rf "$work"' EXIT
passed=0
fail() { echo "deb: FAILED: $*" >&2; exit 1; }
ok() { passed=$((passed + 1)); echo "deb: ok: $*"; }

deb=$(cd "$work" && bash "$tree/packaging/build-deb.sh" | tail -1)
[ -f "$deb" ] || fail "build-deb.sh made no package"
version=$("$XLB_BINARY" --version | awk '{ print $2 }')
[ "$(basename "$deb")" = "xlb_${version}_$(dpkg --print-architecture).deb" ] || fail "named $(basename "$deb")"
ok "built $(basename "$deb")"

info=$(dpkg-deb -I "$deb")
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = xlb ] && [ "$(field Version)" = "$version" ] || fail "control: $info"
depends=$(field Depends)
for lib in $(ldd "$XLB_BINARY" | awk '$3 ~ /^\// { print $3 }'); do
    package=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib") || fail "no package owns $lib"
    package=${package%%:*}
    grep -qE "(^|, )$package( |,|$)" <<<"$depends" || fail "Depends ($depends) lacks $package (for $lib)"
done
ok "Depends: $depends"
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
[ "$conffiles" = /etc/xlb/xlb.toml ] || fail "conffiles: $conffiles"
ok "conffile /etc/xlb/xlb.toml"

contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/xlb ./lib/systemd/system/xlb.service ./etc/xlb/xlb.toml \
    ./usr/share/man/man8/xlb.8.gz ./usr/share/man/man8/xlb-ctl.8.gz \
    ./usr/share/man/man5/xlb.toml.5.gz ./usr/share/doc/xlb/copyright; do
    grep -q " $path\$" <<<"$contents" || fail "$path missing from: $contents"
done
if awk '$2 != "root/root"' <<<"$contents" | grep . >/dev/null; then fail "not all root-owned: $contents"; fi
ok "contents: every file, owned by root"

extracted=$work/extracted
dpkg-deb -x "$deb" "$extracted"
if command -v systemd-analyze >/dev/null; then
    sed "s#^ExecStart=/usr/bin/xlb #ExecStart=$extracted/usr/bin/xlb #" \
        "$extracted/lib/systemd/system/xlb.service" >"$work/xlb.service"
    grep -q "^ExecStart=$extracted/usr/bin/xlb run --config /etc/xlb/xlb.toml$" "$work/xlb.service" ||
        fail "the unit's ExecStart is not /usr/bin/xlb run --config /etc/xlb/xlb.toml"
    complaints=$(systemd-analyze verify --man=no "$work/xlb.service" 2>&1) ||
        fail "systemd-analyze verify: $complaints"
    [ -z "$complaints" ] || fail "systemd-analyze verify complains: $complaints"
    ok "systemd-analyze verify xlb.service: no complaint"
else
    echo "deb: SKIPPED: systemd-analyze verify (no systemd-analyze on this machine)"
fi

if command -v groff >/dev/null && command -v man >/dev/null; then
    for page in "$extracted"/usr/share/man/man*/*.gz; do
        zcat "$page" >"$work/page"
        complaints=$(groff -ww -z -man "$work/page" 2>&1)
        [ -z "$complaints" ] || fail "groff -ww $(basename "$page"): $complaints"
        complaints=$(MANWIDTH=80 man --warnings -l "$work/page" 2>&1 >/dev/null)
        [ -z "$complaints" ] || fail "man --warnings $(basename "$page"): $complaints"
    done
    ok "man pages render without warnings"
else
    echo "deb: SKIPPED: rendering the man pages (groff or man missing; scripts/setup installs them as root)"
fi

# A throw-away dpkg root: an empty database; the maintainer scripts run outside a chroot
# (the root has no shell) and, seeing DPKG_ROOT, touch nothing of this machine.
root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
dpkgr() { dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null "$@"; }
dpkgr -i "$deb" >"$work/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$work/dpkg.log")"
status=$(dpkgr -s xlb)
grep -q '^Status: install ok installed$' <<<"$status" || fail "not installed: $status"
grep -q '^ /etc/xlb/xlb.toml [0-9a-f]\{32\}$' <<<"$status" || fail "conffile not registered: $status"
[ "$("$root/usr/bin/xlb" --version)" = "xlb $version" ] || fail "the installed xlb --version"
"$root/usr/bin/xlb" check --config "$root/etc/xlb/xlb.toml" >"$work/check.log" 2>&1 ||
    fail "xlb check of the installed config: $(cat "$work/check.log")"
dpkgr --purge xlb >"$work/dpkg.log" 2>&1 || fail "dpkg --purge: $(cat "$work/dpkg.log")"
[ ! -e "$root/usr/bin/xlb" ] && [ ! -e "$root/etc/xlb/xlb.toml" ] || fail "purge left files"
ok "dpkg --root install: installed, conffile registered, xlb --version and check run, purged"
echo "deb: $passed passed, 0 failed"
