#!/usr/bin/env bash
# The collection as a user installs it on a controller, both ways the README gives: the built
# tarball, and a requirements.yml naming the git repository. Each install must hold what a user
# runs (its playbooks run as pilito.priority_queue.<name>, its modules have docs) and none of the
# test bed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
tarball=$(ls build/pilito-priority_queue-*.tar.gz)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "collection: FAIL: $*" >&2; exit 1; }

tar tzf "$tarball" | sed 's,^\./,,' >"$tmp/files"
unwanted=$(grep -E '^(\.pytest_cache|\.venv|\.ci|build|benchmarks|examples|molecule|scripts|tests|inventories/local)(/|$)|(^|/)__pycache__/|\.tar\.gz$' "$tmp/files" || true)
[ -z "$unwanted" ] || fail "the tarball carries the test bed: $(echo "$unwanted" | head -5 | tr '\n' ' ')"
for needed in playbooks/deploy.yml playbooks/rollback.yml playbooks/verify.yml playbooks/queue_check.yml \
              playbooks/troubleshoot.yml playbooks/support_bundle.yml \
              roles/priority_queue/meta/argument_specs.yml plugins/modules/celery_worker_info.py \
              inventories/production/hosts.yml; do
  grep -qx "$needed" "$tmp/files" || fail "the tarball lacks $needed"
done

check_installed() {  # $1: collections path, $2: how it was installed
  local path=$1 how=$2
  ANSIBLE_COLLECTIONS_PATH="$path" ansible-galaxy collection list pilito.priority_queue 2>/dev/null \
    | grep -q '^pilito\.priority_queue ' || fail "$how: ansible-galaxy does not list pilito.priority_queue"
  for playbook in deploy verify rollback queue_check troubleshoot support_bundle; do
    ANSIBLE_COLLECTIONS_PATH="$path" ansible-playbook -i inventories/production \
      "pilito.priority_queue.$playbook" --syntax-check >"$tmp/syntax.log" 2>&1 \
      || { cat "$tmp/syntax.log" >&2; fail "$how: ansible-playbook pilito.priority_queue.$playbook --syntax-check"; }
  done
  ANSIBLE_COLLECTIONS_PATH="$path" ansible-doc pilito.priority_queue.celery_worker_info >/dev/null \
    || fail "$how: ansible-doc pilito.priority_queue.celery_worker_info"
  echo "collection: $how installs; its playbooks and module docs load"
}

ansible-galaxy collection install --force -p "$tmp/from_tarball" "$tarball" >/dev/null 2>&1
check_installed "$tmp/from_tarball" "the tarball"

# A requirements.yml as the README gives it, pointing at this repository's committed HEAD.
cat >"$tmp/requirements.yml" <<YAML
collections:
  - name: git+file://$here
    type: git
    version: HEAD
YAML
ansible-galaxy collection install --force -p "$tmp/from_git" -r "$tmp/requirements.yml" >"$tmp/git.log" 2>&1 \
  || { cat "$tmp/git.log" >&2; fail "requirements.yml from git"; }
check_installed "$tmp/from_git" "requirements.yml from git"
