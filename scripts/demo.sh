#!/usr/bin/env bash
# The demo host: the example app as a git checkout (origin: a local bare repository) running
# under Docker Compose in its "before" state.
#   demo.sh prepare remove any earlier demo, then make the checkout, its .env and the images
#   demo.sh up      prepare, then start the stack and wait until every service is healthy
#   demo.sh show    queue the runbook's backlog, send one chat message, print how long it waited
#   demo.sh down    remove the stack, its volumes and the demo folder
# DEMO_VARIANT=renamed makes the same app with other names (services, Celery app module, task
# names, compose file name), to prove the collection needs nothing but inventory variables.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../examples/demo_app" && pwd)

DEMO_DIR="${DEMO_DIR:-/srv/pilito-demo}"
DEMO_TIME_SCALE="${DEMO_TIME_SCALE:-0.5}"
WEB_PORT="${WEB_PORT:-8000}"
BACKLOG_CRAWLS="${BACKLOG_CRAWLS:-15}"
BACKLOG_PAGES="${BACKLOG_PAGES:-10}"
DEMO_VARIANT="${DEMO_VARIANT:-}"
app_dir="$DEMO_DIR/app"
if [ "$DEMO_VARIANT" = renamed ]; then compose_file=compose.production.yml; else compose_file=docker-compose.yml; fi
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-pilito-demo}"

log() { printf '[demo] %s\n' "$*" >&2; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }
compose() { docker compose --project-directory "$app_dir" -f "$app_dir/$compose_file" "$@"; }

down() {
  if [ -f "$app_dir/$compose_file" ] && [ -f "$app_dir/.env" ]; then
    log "removing the stack and its volumes"
    compose down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || true
  fi
  # Also when the folder is gone but containers of the project are left.
  docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r docker rm -f >/dev/null
  docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r docker volume rm >/dev/null
  rm -rf "$DEMO_DIR"
}

make_checkout() {
  log "creating $app_dir (git checkout of $DEMO_DIR/origin.git)"
  mkdir -p "$DEMO_DIR"
  git init -q --bare --initial-branch=main "$DEMO_DIR/origin.git"
  git clone -q "$DEMO_DIR/origin.git" "$app_dir" 2>/dev/null
  cp -a "$source_dir/." "$app_dir/"
  rm -rf "$app_dir/docker"   # the images are the platform, built from the collection
  if [ "$DEMO_VARIANT" = renamed ]; then rename_app; fi
  git -C "$app_dir" add -A
  git -C "$app_dir" -c user.name=demo -c user.email=demo@localhost commit -q -m "Demo app before priority queues"
  git -C "$app_dir" push -q origin main
}

rename_app() {
  # Python package core -> saas, Django app chat -> assistant, every service renamed.
  cd "$app_dir"
  mv core saas
  mv chat assistant
  mv docker-compose.yml "$compose_file"
  # shellcheck disable=SC2016  # $1 is perl's, not the shell's
  find . -name '*.py' -print0 | xargs -0 perl -pi -e '
    s/(?<!django\.)\bcore\b/saas/g;
    s/\bchat\.(tasks|views)\b/assistant.$1/g;
    s/"chat",/"assistant",/;
    s/"POSTGRES_HOST", "db"/"POSTGRES_HOST", "postgres"/;
    s{redis://redis:}{redis://broker:}g;'
  perl -pi -e '
    s/\bcelery -A core\b/celery -A saas/g;
    s/^  web:/  frontend:/; s/^  celery_worker:/  worker:/; s/^  celery_beat:/  scheduler:/;
    s/^  db:/  postgres:/; s/^  redis:/  broker:/;
    s/^    db:$/    postgres:/; s/^    redis:$/    broker:/;
    s/celery_worker@/worker@/g;
    s/^name: pilito-demo/name: pilito-renamed/;' "$compose_file"
  cd - >/dev/null
}

write_env() {
  local images
  images=$("$here/demo_images.sh")
  umask 077
  {
    echo "# Written by scripts/demo.sh. Secrets are random per demo stack."
    echo "$images"
    echo "POSTGRES_USER=pilito"
    echo "POSTGRES_DB=pilito"
    echo "POSTGRES_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    echo "DJANGO_SECRET_KEY=$(head -c 33 /dev/urandom | base64 | tr -d '/+=')"
    echo "FLOWER_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    echo "DEMO_TIME_SCALE=$DEMO_TIME_SCALE"
    echo "WEB_PORT=$WEB_PORT"
  } >"$app_dir/.env"
}

prepare() {
  "$here/install_docker.sh"
  down
  make_checkout
  write_env
}

up() {
  prepare
  log "starting the stack ($compose_file)"
  if ! compose up --detach --wait --wait-timeout 180 >"$DEMO_DIR/up.log" 2>&1; then
    cat "$DEMO_DIR/up.log" >&2
    compose ps -a >&2 || true
    compose logs --tail 30 >&2 || true
    die "the demo stack did not become healthy"
  fi
  log "up: $(compose ps --format '{{.Service}}' | sort | tr '\n' ' ')"
}

post() { curl -fsS --max-time "${3:-900}" -H 'Content-Type: application/json' -d "$2" "http://127.0.0.1:$WEB_PORT$1"; }

show() {
  [ -f "$app_dir/.env" ] || die "no demo stack in $DEMO_DIR; run '$0 up' first"
  log "queueing the runbook's backlog: $BACKLOG_CRAWLS crawl_website_task + $BACKLOG_PAGES process_page_content"
  post /api/backlog/ "{\"crawls\": $BACKLOG_CRAWLS, \"pages\": $BACKLOG_PAGES}" >/dev/null
  log "sending one AI chat message and waiting for its reply"
  reply=$(post /api/chat/ '{"message": "When does my order arrive?"}')
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
wait, total, queue, scale = r["queue_wait_seconds"], r["total_seconds"], r["queue"], sys.argv[2]
print(f"AI chat reply waited {wait:.3f} s in queue {queue!r} behind the backlog ({total:.1f} s in all; task durations x{scale})")
' "$reply" "$DEMO_TIME_SCALE"
}

case "${1:-}" in
  prepare) prepare ;;
  up) up ;;
  show) show ;;
  down) down ;;
  *) echo "usage: $0 prepare|up|show|down" >&2; exit 2 ;;
esac
