#!/usr/bin/env bash
# Run independent test suites at once: side_by_side.sh NAME='COMMAND' ...
# Each suite's output goes to build/logs/NAME.log. At the end: each suite's result and minutes,
# then the last lines of each failed one (CI keeps only the tail of the output). Exits 1 if any
# suite failed. The suites must not share a published port, a project name or a folder.
set -uo pipefail
logs=build/logs
mkdir -p "$logs"
names=()
for suite in "$@"; do
  name=${suite%%=*}
  command=${suite#*=}
  names+=("$name")
  rm -f "$logs/$name.result"
  (
    start=$(date +%s)
    bash -c "$command" >"$logs/$name.log" 2>&1
    echo "$? $(( $(date +%s) - start ))" >"$logs/$name.result"
  ) &
  echo "[side by side] $name: $command (log: $logs/$name.log)"
done
wait

failed=()
echo "== side by side: each suite's result and time"
for name in "${names[@]}"; do
  read -r rc seconds <"$logs/$name.result" || { rc=1; seconds=0; }
  printf '%-12s %s  %d min %02d s\n' "$name" "$([ "$rc" = 0 ] && echo passed || echo "FAILED (exit $rc)")" \
    $(( seconds / 60 )) $(( seconds % 60 ))
  [ "$rc" = 0 ] || failed+=("$name")
done
for name in "${failed[@]}"; do
  echo "== $name failed; the end of $logs/$name.log:"
  tail -n 40 "$logs/$name.log" | cut -c1-400
done
[ "${#failed[@]}" = 0 ]
