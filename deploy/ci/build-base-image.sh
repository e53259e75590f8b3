#!/usr/bin/env bash
# Builds a Debian base image without a registry: debootstrap + docker import.
# Used by the end-to-end test; users build from the official images instead.
#
#   build-base-image.sh [SUITE [IMAGE]]     SUITE: bookworm (default), trixie, forky, sid, ...
#                                           IMAGE: local/debian:SUITE by default
#
# Does nothing when IMAGE exists already. A suite this host's debootstrap has no script for
# (forky on a bookworm host) is bootstrapped with the sid script, which serves every newer suite.
set -euo pipefail
suite="${1:-bookworm}"
image="${2:-local/debian:$suite}"
if docker image inspect "$image" >/dev/null 2>&1; then exit 0; fi
script=""
if [ ! -e "/usr/share/debootstrap/scripts/$suite" ]; then script=/usr/share/debootstrap/scripts/sid; fi
root="$(mktemp -d /tmp/backupd-rootfs-XXXXXX)"
trap 'rm -rf "$root" "$root.log"' EXIT
mirror="$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)"
mirror="${mirror:-http://deb.debian.org/debian}"
if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" $script >"$root.log" 2>&1; then
  cat "$root.log" >&2; tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
  exit 1
fi
if [ "$suite" = sid ] || [ "$suite" = unstable ]; then
  echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
else
  cat > "$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SOURCES
fi
# Testing and unstable Release files are valid for a week only, and a mirror that lags behind
# serves expired ones (forky's and sid's here): apt then refuses them. A CI image keeps the
# signature checks but not that one.
echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99ci-no-valid-until"
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$image" >/dev/null
