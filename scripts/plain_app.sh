#!/usr/bin/env bash
# The plain app (examples/plain_app): a Celery app with none of the demo's assumptions, deployed
# from images, its folder holding only docker-compose.yml and .env (no git checkout).
#   plain_app.sh prepare   remove any earlier one, build the images, write the folder and its .env
#   plain_app.sh up        prepare, then start the stack and wait until every service is healthy
#   plain_app.sh release   build the next release of the app image under the tag the app uses (no restart)
#   plain_app.sh down      remove the stack, its volumes and the folder
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../examples/plain_app" && pwd)

PLAIN_DIR="${PLAIN_DIR:-/srv/pilito-plain}"
app_dir="$PLAIN_DIR/app"
export COMPOSE_PROJECT_NAME=pilito-plain

log() { printf '[plain] %s\n' "$*" >&2; }
compose() { docker compose --project-directory "$app_dir" -f "$app_dir/docker-compose.yml" "$@"; }

down() {
  if [ -f "$app_dir/docker-compose.yml" ] && [ -f "$app_dir/.env" ]; then
    log "removing the stack and its volumes"
    compose down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || true
  fi
  docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r docker rm -f >/dev/null
  docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r docker volume rm >/dev/null
  rm -rf "$PLAIN_DIR"
}

app_image_tag() {
  local base_id hash
  base_id=$(docker image inspect --format '{{.Id}}' "$("$here/build_base_image.sh")")
  hash=$( { echo "$base_id"; cd "$source_dir" && find Dockerfile src -type f -print0 | sort -z | xargs -0 sha256sum; } \
          | sha256sum | cut -c1-12)
  echo "pilito-plain-app:$hash"
}

build_app_image() {  # tag release
  local log_file
  log_file=$(mktemp)
  log "building $1 (release $2)"
  if ! docker build --build-arg "BASE_IMAGE=$("$here/build_base_image.sh")" --build-arg "APP_RELEASE=$2" \
       -t "$1" "$source_dir" >"$log_file" 2>&1; then
    tail -n 30 "$log_file" >&2
    rm -f "$log_file"
    log "ERROR: building $1 failed"
    exit 1
  fi
  rm -f "$log_file"
}

prepare() {
  down
  local images tag
  images=$("$here/demo_images.sh")
  tag=$(app_image_tag)
  if ! docker image inspect "$tag" >/dev/null 2>&1 \
     || [ "$(docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$tag" | grep -c '^APP_RELEASE=1$')" != 1 ]; then
    build_app_image "$tag" 1
  fi
  log "creating $app_dir (compose file and .env only)"
  mkdir -p "$app_dir"
  cp "$source_dir/docker-compose.yml" "$app_dir/"
  local store_password queue_password
  store_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  queue_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  umask 077
  {
    echo "$images" | grep -E '^(DB|REDIS)_IMAGE='
    echo "PLAIN_APP_IMAGE=$tag"
    echo "STORE_PASSWORD=$store_password"
    echo "QUEUE_PASSWORD=$queue_password"
    echo "JOBS_BROKER_URL=redis://:$queue_password@queue:6379/0"
    echo "STORE_HOST=store"
    echo "API_PORT=${API_PORT:-8100}"
    echo "STORE_PORT=${STORE_PORT:-5442}"
    echo "QUEUE_PORT=${QUEUE_PORT:-6390}"
  } >"$app_dir/.env"
}

up() {
  prepare
  log "starting the stack"
  if ! compose up --detach --wait --wait-timeout 180 >"$PLAIN_DIR/up.log" 2>&1; then
    compose ps -a >&2 || true
    compose logs --tail 30 >&2 || true
    log "ERROR: the stack did not become healthy"
    exit 1
  fi
  log "up: $(compose ps --format '{{.Service}}' | sort | tr '\n' ' ')"
}

case "${1:-}" in
  prepare) prepare ;;
  up) up ;;
  release) build_app_image "$(sed -n 's/^PLAIN_APP_IMAGE=//p' "$app_dir/.env")" "${2:-2}" ;;
  down) down ;;
  *) echo "usage: $0 prepare|up|release [n]|down" >&2; exit 2 ;;
esac
