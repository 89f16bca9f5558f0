#!/usr/bin/env bash
# Build the multihost scenario's host image where missing and print its name. The tag is a hash of
# its inputs (molecule/multihost/host, the base image, the Compose plugin put inside).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
context_src="$here/../molecule/multihost/host"
compose_plugin=$(docker info --format '{{range .ClientInfo.Plugins}}{{if eq .Name "compose"}}{{.Path}}{{end}}{{end}}')
[ -x "$compose_plugin" ] || { echo "[host-image] ERROR: no Compose v2 plugin on this machine to put in the image" >&2; exit 1; }
base_image=$("$here/build_base_image.sh")
base_id=$(docker image inspect --format '{{.Id}}' "$base_image")
hash=$( { echo "$base_id"; sha256sum "$compose_plugin" | cut -d' ' -f1;
          cd "$context_src" && find . -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-12)
tag="pilito-host:$hash"
if ! docker image inspect "$tag" >/dev/null 2>&1; then
  echo "[host-image] building $tag from $base_image" >&2
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  cp -a "$context_src/." "$context/"
  cp "$compose_plugin" "$context/docker-compose"
  docker build --build-arg "BASE_IMAGE=$base_image" -t "$tag" "$context" >"$context/build.log" 2>&1 \
    || { tail -n 30 "$context/build.log" >&2; echo "[host-image] ERROR: building $tag failed" >&2; exit 1; }
fi
echo "$tag"
