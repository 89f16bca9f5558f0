#!/usr/bin/env bash
# Make a Docker engine with the Compose v2 plugin available on this host.
# Where `docker info` and `docker compose version` already work, change nothing.
# On Debian: docker.io from the host's suites, the Compose v2 plugin from the next
# release's docker-compose 2.x package (it only needs libc), dockerd started and waited for.
# Safe to run twice at once (one flock around everything that changes the host).
set -euo pipefail

log() { printf '[docker] %s\n' "$*" >&2; }
die() { printf '[docker] ERROR: %s\n' "$*" >&2; exit 1; }

COMPOSE_SUITE="${PRIORITY_QUEUE_COMPOSE_SUITE:-trixie}"
DOCKERD_LOG="${PRIORITY_QUEUE_DOCKERD_LOG:-/var/log/dockerd.log}"
LOCK_FILE=/var/lock/pilito-priority-queue-docker.lock

docker_ready() { docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; }

if docker_ready; then
  exit 0
fi

[ "$(id -u)" = 0 ] || die "Docker is not usable and installing it needs root. Install Docker Engine with the Compose v2 plugin (https://docs.docker.com/engine/install/), or run this script as root on Debian."
. /etc/os-release 2>/dev/null || true
case " ${ID:-} ${ID_LIKE:-} " in
  *" debian "*) ;;
  *) die "this script installs Docker only on Debian (found '${PRETTY_NAME:-unknown OS}'). Install Docker Engine and the Compose v2 plugin yourself, start the daemon, and check that 'docker compose version' works." ;;
esac

exec 9>"$LOCK_FILE"
flock 9
# Another run may have finished while we waited for the lock.
if docker_ready; then
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt_updated=
apt_update_once() { [ -n "$apt_updated" ] || { log "apt-get update"; apt-get update -qq; apt_updated=1; }; }

if ! command -v dockerd >/dev/null 2>&1; then
  apt_update_once
  log "installing docker.io from Debian"
  apt-get install -y -qq --no-install-recommends docker.io iptables ca-certificates >/dev/null
fi

if ! docker compose version >/dev/null 2>&1; then
  # Download one .deb from the next suite without adding that suite to the host's sources.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  echo "deb http://deb.debian.org/debian $COMPOSE_SUITE main" >"$work/sources.list"
  apt_opts=(-o "APT::Sandbox::User=root" -o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
            -o "APT::Get::List-Cleanup=0")
  log "fetching the Compose v2 plugin (docker-compose from Debian $COMPOSE_SUITE)"
  apt-get "${apt_opts[@]}" update -qq
  (cd "$work" && apt-get "${apt_opts[@]}" download -qq docker-compose)
  deb=$(ls "$work"/docker-compose_*.deb)
  version=$(dpkg-deb -f "$deb" Version)
  case "$version" in 2.*) ;; *) die "docker-compose in $COMPOSE_SUITE is $version, not Compose v2" ;; esac
  # Only the plugin binary is taken: the package's declared dependencies name the
  # next suite's docker-cli, which this host does not need.
  dpkg-deb -x "$deb" "$work/root"
  plugin=$(find "$work/root" -type f -path '*cli-plugins/docker-compose' | head -n 1)
  [ -n "$plugin" ] || die "no cli-plugins/docker-compose inside $deb"
  install -D -m 0755 "$plugin" /usr/libexec/docker/cli-plugins/docker-compose
  log "installed Compose $version"
fi

if ! docker info >/dev/null 2>&1; then
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd (log: $DOCKERD_LOG)"
    # No init system here: dockerd runs detached and outlives this script.
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
fi

docker_ready || die "docker compose version still fails after install"
log "ready: $(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short 2>/dev/null || true)"
