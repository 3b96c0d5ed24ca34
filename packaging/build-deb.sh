#!/usr/bin/env bash
# Builds xlb_VERSION_ARCH.deb in the current directory from this tree, with dpkg-deb alone
# (no cargo-deb): the release binary, the systemd unit, /etc/xlb/xlb.toml (a conffile), the
# man pages xlb(8) and xlb-ctl(8) generated from the CLI and xlb.toml(5).
#
#   bash packaging/build-deb.sh                   # cargo build --release, then package it
#   XLB_BINARY=path bash packaging/build-deb.sh   # package a binary already built
#
# Depends: is what the binary links, by dpkg-shlibdeps where dpkg-dev is installed, else
# by ldd and `dpkg -S` (packages without versions). Prints the .deb's path last.
set -euo pipefail
tree=$(cd "$(dirname "$0")/.." && pwd)
out=$PWD
binary=${XLB_BINARY:-}
if [ -z "$binary" ]; then
    (cd "$tree" && cargo build --release --locked --bin xlb)
    binary=${CARGO_TARGET_DIR:-$tree/target}/release/xlb
fi
[ -x "$binary" ] || { echo "build-deb: no executable at $binary" >&2; exit 1; }
for tool in dpkg-deb dpkg gzip; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing (a Debian system has it)" >&2; exit 1; }
done

version=$("$binary" --version | awk '{ print $2 }')
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root

install -D -m 0755 "$binary" "$root/usr/bin/xlb"
# Debug information out (symbols stay, for backtraces), as Debian packages ship binaries.
if command -v strip >/dev/null; then
    strip --strip-debug "$root/usr/bin/xlb"
fi
install -D -m 0644 "$tree/packaging/xlb.service" "$root/lib/systemd/system/xlb.service"
install -D -m 0644 "$tree/packaging/xlb.toml" "$root/etc/xlb/xlb.toml"
"$root/usr/bin/xlb" man --out "$work/man"
install -D -m 0644 "$work/man/xlb.8" "$root/usr/share/man/man8/xlb.8"
install -D -m 0644 "$work/man/xlb-ctl.8" "$root/usr/share/man/man8/xlb-ctl.8"
install -D -m 0644 "$tree/packaging/xlb.toml.5" "$root/usr/share/man/man5/xlb.toml.5"
gzip -9n "$root"/usr/share/man/man*/*
install -D -m 0644 "$tree/packaging/copyright" "$root/usr/share/doc/xlb/copyright"

# What the binary links, as package dependencies.
depends=
if command -v dpkg-shlibdeps >/dev/null; then
    mkdir -p "$work/src/debian"
    printf 'Source: xlb\n\nPackage: xlb\nArchitecture: any\n' >"$work/src/debian/control"
    depends=$(cd "$work/src" && dpkg-shlibdeps -O -e"$root/usr/bin/xlb" 2>/dev/null |
        sed -n 's/^shlibs:Depends=//p')
fi
if [ -z "$depends" ]; then
    depends=$(ldd "$root/usr/bin/xlb" | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do
        dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true
    done | cut -d: -f1 | sort -u | paste -sd, - | sed 's/,/, /g')
fi
[ -n "$depends" ] || { echo "build-deb: could not work out what xlb links" >&2; exit 1; }

mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: xlb
Version: $version
Architecture: $arch
Maintainer: xlb developers <root@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Section: net
Priority: optional
Description: kernel-bypass layer-4 load balancer (LVS/IPVS in user space on AF_XDP)
 A virtual IP in front of real servers with DR, NAT, FullNAT and tunnel forwarding
 (IPv4 and IPv6), the classic IPVS schedulers, connection tracking, health checks and an ipvsadm-like
 control command (xlb ctl), on AF_XDP sockets with its own XDP program.
 .
 The service is installed, not enabled or started: edit /etc/xlb/xlb.toml, check it
 with "xlb check --config /etc/xlb/xlb.toml", then "systemctl start xlb".
CONTROL
echo /etc/xlb/xlb.toml >"$root/DEBIAN/conffiles"
# Not started on install: the example config names eth0, which xlb would take over. In a
# root other than / (dpkg --root, DPKG_ROOT set) the scripts leave this machine alone.
cat >"$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
SCRIPT
cat >"$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
    systemctl stop xlb.service || true
fi
SCRIPT
cat >"$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
[ -z "${DPKG_ROOT:-}" ] || exit 0
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
    rm -rf /run/xlb
fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

deb=$out/xlb_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
