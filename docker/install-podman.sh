#!/usr/bin/env bash
# Podman and podman-compose from Debian, set up for a root machine without a Docker daemon or a reachable
# registry, then the local base image the build needs there (docker/make-base-image.sh). .ci/run runs this
# when no container engine works, so the deploy test (tests/test_deploy.py) always runs in CI.
#
#   sudo docker/install-podman.sh
#
# Measured here: the packages 14 s (apt-get update included), the base image 1 min 13 s - 1 min 41 s; a
# second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root" >&2; exit 2; }
if ! command -v podman >/dev/null || ! command -v podman-compose >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  # runc, not crun (Debian's first choice): crun fails to start containers on this kind of machine's cgroups.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman podman-compose runc debootstrap >/dev/null
fi
mkdir -p /etc/containers/containers.conf.d
# Podman's default ulimits (nofile 1048576) are refused here ("error setting rlimits ... operation not
# permitted"); 20000 is accepted.
cat > /etc/containers/containers.conf.d/50-babelsearch.conf <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]
[engine]
runtime = "runc"
CONF
base=${BASE_IMAGE:-localhost/babelsearch-base:bookworm}
podman image exists "$base" || docker/make-base-image.sh "$base"
echo "podman $(podman --version | awk '{print $3}'), $(podman-compose --version 2>/dev/null | grep -i 'podman-compose' | head -1), base image $base"
