#!/usr/bin/env bash
# Build the collection's tarball and install it into $1, as a user installs it on a controller
# (the multihost scenario runs this copy, not the working tree).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:?usage: $0 COLLECTIONS_DIR (relative to the repository)}
rm -f build/pilito-priority_queue-*.tar.gz
ansible-galaxy collection build --force --output-path build/ >/dev/null
ansible-galaxy collection install --force -p "$dest" build/pilito-priority_queue-*.tar.gz >/dev/null 2>&1
