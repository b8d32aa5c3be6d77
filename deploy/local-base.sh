#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base image, python:3.11-slim, for machines that reach
# Debian's and PyPI's package mirrors but no container registry. Debian 12's Python is 3.11.
#
#   deploy/local-base.sh [IMAGE]      (default python:3.11-slim; needs root, debootstrap, podman)
#
# The image trusts this machine's locally added CA certificates (a TLS-intercepting proxy's)
# and carries this machine's pip settings, so it is for local testing only: never push it.
set -euo pipefail
image="${1:-python:3.11-slim}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="$(mktemp -d /var/tmp/pneumoscan-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "Building the local base image $image from Debian bookworm (debootstrap)..." >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "$mirror" >/dev/null
# pip may install into the system Python, as in the official image.
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf python3 "$root/usr/bin/python"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
# The host's pip settings (index mirrors, CA bundle path), without its local wheel folders.
if [ -f /etc/pip.conf ]; then
    grep -v -e '^find-links' -e '^constraint' /etc/pip.conf > "$root/etc/pip.conf" || true
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$image" >/dev/null
echo "Imported $image (local only)." >&2
