#!/usr/bin/env bash
# Make a Debian bookworm base image locally, for hosts that reach the Debian mirror but no
# container registry:  deploy/base-image.sh TAG WORK_DIR
# debootstrap (minbase + python3, venv, CA certificates) | docker import. About 150 MB.
# With registry access, debian:bookworm-slim is the equivalent base (the Dockerfile installs
# python3 itself when the base lacks it).
set -euo pipefail
tag=${1:?usage: base-image.sh TAG WORK_DIR}
work=${2:?usage: base-image.sh TAG WORK_DIR}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" != 0 ]; then
    echo "base-image: error: debootstrap needs root" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "base-image: error: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }

root="$work/rootfs"
rm -rf "$root"
mkdir -p "$work"
trap 'rm -rf "$root"' EXIT
echo "base-image: debootstrap bookworm from $mirror (a few minutes)"
nice -n "${MAP_NICE:-10}" debootstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    echo "base-image: error: debootstrap failed; see $work/debootstrap.log" >&2
    tail -5 "$work/debootstrap.log" >&2
    exit 1
}
# What a container image does not need.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/tmp/*
# The same apt sources as the debian:bookworm image.
cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
tar --numeric-owner -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    -m "debootstrap --variant=minbase bookworm (deploy/base-image.sh)" - "$tag" >/dev/null
echo "base-image: $tag made ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
