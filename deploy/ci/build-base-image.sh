#!/usr/bin/env bash
# Builds a Debian bookworm base image without a registry: debootstrap + docker import.
# Used by the end-to-end test; users build from the official images instead.
set -euo pipefail
image="${1:-local/debian:bookworm}"
if docker image inspect "$image" >/dev/null 2>&1; then exit 0; fi
root="$(mktemp -d /tmp/backupd-rootfs-XXXXXX)"
trap 'rm -rf "$root"' EXIT
mirror="$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)"
debootstrap --variant=minbase bookworm "$root" "${mirror:-http://deb.debian.org/debian}" >/dev/null
cat > "$root/etc/apt/sources.list" <<SOURCES
deb ${mirror:-http://deb.debian.org/debian} bookworm main
deb ${mirror:-http://deb.debian.org/debian} bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$image" >/dev/null
