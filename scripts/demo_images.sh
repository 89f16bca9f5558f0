#!/usr/bin/env bash
# Build the demo's images (app, db, redis, flower) where missing and print their names as KEY=value
# lines for the compose .env. Each tag is a hash of the image's inputs (its build folder and
# the base image id), so an image is rebuilt only when one of those changes. A folder with a
# wheels.txt gets those wheels downloaded from PyPI on the host (pip in containers cannot reach it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
images_dir="${DEMO_IMAGES_DIR:-$here/../examples/demo_app/docker}"

log() { printf '[images] %s\n' "$*" >&2; }

base_image=$("$here/build_base_image.sh")
base_id=$(docker image inspect --format '{{.Id}}' "$base_image")

for name in app db redis flower; do
  context="$images_dir/$name"
  hash=$( { echo "$base_id"; cd "$context" && find . -type f -print0 | sort -z | xargs -0 sha256sum; } \
          | sha256sum | cut -c1-12)
  tag="pilito-demo-$name:$hash"
  if ! docker image inspect "$tag" >/dev/null 2>&1; then
    log "building $tag from $base_image"
    log_file=$(mktemp)
    build_dir=$(mktemp -d)
    cp -a "$context/." "$build_dir/"
    if [ -f "$context/wheels.txt" ] && ! python3 -m pip download --quiet --no-deps --only-binary=:all: \
        -r "$context/wheels.txt" -d "$build_dir/wheels" >"$log_file" 2>&1; then
      tail -n 10 "$log_file" >&2
      rm -rf "$log_file" "$build_dir"
      log "ERROR: downloading the wheels of $context/wheels.txt failed (python3 -m pip download)"
      exit 1
    fi
    if ! docker build --build-arg "BASE_IMAGE=$base_image" -t "$tag" "$build_dir" >"$log_file" 2>&1; then
      tail -n 30 "$log_file" >&2
      rm -rf "$log_file" "$build_dir"
      log "ERROR: building $tag failed"
      exit 1
    fi
    rm -rf "$log_file" "$build_dir"
  fi
  printf '%s_IMAGE=%s\n' "$(echo "$name" | tr '[:lower:]' '[:upper:]')" "$tag"
done
