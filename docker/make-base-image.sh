#!/usr/bin/env bash
# A local Python 3.11 base image made from Debian packages, for sites whose container engine cannot pull
# from a registry (docker/Dockerfile's default, python:3.11-slim, comes from Docker Hub):
#
#   sudo docker/make-base-image.sh [IMAGE]        # default IMAGE: localhost/babelsearch-base:bookworm
#   docker build --build-arg BASE_IMAGE=localhost/babelsearch-base:bookworm -f docker/Dockerfile -t babelsearch .
#
# Needs root, debootstrap and docker or podman (ENGINE=... to choose); about 1.5 minutes. The host's extra
# CA certificates (/usr/local/share/ca-certificates) are trusted inside too, so pip works behind the same
# TLS-intercepting proxy as the host. MIRROR: the Debian mirror (default: deb.debian.org).
set -euo pipefail
image=${1:-localhost/babelsearch-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
engine=${ENGINE:-$(command -v podman || command -v docker || true)}
[ "$(id -u)" = 0 ] || { echo "error: run as root (debootstrap needs it)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "error: debootstrap missing (apt-get install debootstrap)" >&2; exit 2; }
[ -n "$engine" ] || { echo "error: neither podman nor docker found" >&2; exit 2; }

rootfs=$(mktemp -d /var/tmp/babelsearch-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
# minbase + the interpreter and venv (ensurepip); pip itself comes into the image's venv.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
chroot "$rootfs" update-ca-certificates >/dev/null
# What an image does not need: package lists and caches, docs, man pages, translations.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*
# pip (vendored certifi) would not see the extra CA certificates without PIP_CERT.
tar -C "$rootfs" --numeric-owner -c . | "$engine" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' - "$image"
echo "base image: $image"
