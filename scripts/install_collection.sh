#!/usr/bin/env bash
# Build the collection's tarball and install it into $1, as a user installs it on a controller
# (the multihost scenario runs this copy, not the working tree). The tarball goes beside $1, not
# into build/, where `make collection` may build its own at the same time.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:?usage: $0 COLLECTIONS_DIR (relative to the repository)}
out="$(dirname "$dest")/tarball"
rm -rf "$out"
mkdir -p "$out"
ansible-galaxy collection build --force --output-path "$out" >/dev/null
ansible-galaxy collection install --force -p "$dest" "$out"/pilito-priority_queue-*.tar.gz >/dev/null 2>&1
