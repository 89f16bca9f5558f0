#!/usr/bin/env bash
# Print the base image the demo's Dockerfiles build FROM, making it first where needed.
# A registry image (BASE_IMAGE, default debian:bookworm-slim) is used when it is present or can
# be pulled; where no registry answers, the same Debian release is made locally once with
# debootstrap and `docker import`, and reused from then on.
set -euo pipefail

log() { printf '[base-image] %s\n' "$*" >&2; }
die() { printf '[base-image] ERROR: %s\n' "$*" >&2; exit 1; }

registry_image="${BASE_IMAGE:-debian:bookworm-slim}"
suite="${BASE_SUITE:-bookworm}"
local_image="pilito/debian-base:$suite"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$registry_image" >/dev/null 2>&1; then echo "$registry_image"; exit 0; fi
if docker image inspect "$local_image" >/dev/null 2>&1; then echo "$local_image"; exit 0; fi
if [ "${BASE_IMAGE_PULL:-1}" = 1 ] && timeout 30 docker pull -q "$registry_image" >/dev/null 2>&1; then
  echo "$registry_image"; exit 0
fi

log "$registry_image cannot be pulled here; building $local_image with debootstrap (a few minutes, once)"
exec 9>/var/lock/pilito-priority-queue-base-image.lock
flock 9
if docker image inspect "$local_image" >/dev/null 2>&1; then echo "$local_image"; exit 0; fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
if ! command -v debootstrap >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || die "no registry image and no apt-get to install debootstrap; load $registry_image into Docker by hand"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi
root=$(mktemp -d /var/tmp/pilito-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log" >&2; die "debootstrap failed (full log: $root.log)"; }
rm -f "$root.log"
# Keep the image small and apt quiet, as the official slim images do.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90no-recommends"
tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' - "$local_image" >/dev/null
log "built $local_image"
echo "$local_image"
