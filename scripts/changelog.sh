#!/usr/bin/env bash
# Writes CHANGELOG.md from changelogs/ with antsibull-changelog: the releases recorded in
# changelogs/changelog.yaml and, while changelogs/fragments/ holds entries, those as a preview of
# the release notes of galaxy.yml's version. antsibull-changelog renders released versions only
# (`generate` with none: "Cannot create changelog when not at least one release has been added"),
# so the preview is a `release` made in a scratch copy, with a release summary saying it is a
# preview; the repository's changelog.yaml and fragments stay as they are. The release itself is
# `antsibull-changelog release` in the repository (README, "Changelog").
# Usage: scripts/changelog.sh [--check]   --check: fail when CHANGELOG.md is not what it would write.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
check=false
case ${1:-} in
  --check) check=true ;;
  '') ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
fail() { echo "changelog: FAIL: $*" >&2; exit 1; }
acl=${ANTSIBULL_CHANGELOG:-antsibull-changelog}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# What a release reads: galaxy.yml (name, version), changelogs/, and the modules, roles and
# playbooks it lists as new (through ansible-doc). No plugin cache: it is rebuilt from these.
cp -r galaxy.yml meta plugins roles playbooks changelogs "$tmp/"
rm -f "$tmp/changelogs/.plugin-cache.yaml"
find "$tmp/plugins" -name __pycache__ -prune -exec rm -rf {} +

version=$(sed -n 's/^version: *//p' galaxy.yml)
mapfile -t fragments < <(find changelogs/fragments -maxdepth 1 -type f \( -name '*.yml' -o -name '*.yaml' \) | sort)
if [ ${#fragments[@]} -gt 0 ]; then
  if grep -Eq "^  ['\"]?${version//./\\.}['\"]?:" changelogs/changelog.yaml; then
    fail "galaxy.yml's version $version is released already (changelogs/changelog.yaml): raise it for the fragments"
  fi
  if ! grep -q '^release_summary:' "${fragments[@]}"; then
    cat >"$tmp/changelogs/fragments/zz-unreleased-preview.yml" <<EOF
---
release_summary: >-
  Not released yet: these notes are a preview of version $version, made by \`\`make changelog\`\`
  from the fragments in \`\`changelogs/fragments/\`\`. \`\`antsibull-changelog release\`\` writes the
  notes of the release itself.
EOF
  fi
  (cd "$tmp" && "$acl" release --version "$version") >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; fail "antsibull-changelog release (in a scratch copy)"; }
else
  (cd "$tmp" && "$acl" generate) >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; fail "antsibull-changelog generate (in a scratch copy)"; }
fi

if $check; then
  if ! cmp -s "$tmp/CHANGELOG.md" CHANGELOG.md; then
    diff -u CHANGELOG.md "$tmp/CHANGELOG.md" | head -40 >&2 || true
    fail "CHANGELOG.md is not what changelogs/ gives: run make changelog"
  fi
  echo "changelog: CHANGELOG.md is what changelogs/ gives"
else
  cp "$tmp/CHANGELOG.md" CHANGELOG.md
  preview=${fragments[0]:+ (a preview of $version: the fragments are unreleased)}
  echo "changelog: wrote CHANGELOG.md$preview"
fi
