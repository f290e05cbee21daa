#!/usr/bin/env bash
# The whole test suite: build, unit tests (no root needed), then integration
# tests in network namespaces (root needed: they fail, not skip, without it).
# Prints one closing line "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

npm run build --silent || { echo "tests: 0 passed, 1 failed (build failed)"; exit 1; }

passed=0
failed=0
run_group() {
  local name=$1 dir=$2 pattern=$3
  echo "== $name"
  local out
  out=$(mktemp)
  # uvu runs every matching file in one process and prints a Total/Passed summary;
  # the wrapper adds each file's wall time, slowest first, after that summary.
  node scripts/uvu-timed.mjs "$dir" "$pattern" 2>&1 | tee "$out"
  local status=${PIPESTATUS[0]}
  local total p
  total=$(sed -n 's/\x1b\[[0-9;]*m//g; s/^ *Total: *\([0-9]*\).*/\1/p' "$out" | tail -1)
  p=$(sed -n 's/\x1b\[[0-9;]*m//g; s/^ *Passed: *\([0-9]*\).*/\1/p' "$out" | tail -1)
  rm -f "$out"
  total=${total:-0}; p=${p:-0}
  if [[ $status -ne 0 && $p -eq $total ]]; then total=$((total + 1)); fi # crashed outside a test
  passed=$((passed + p))
  failed=$((failed + total - p))
  return $status
}

rc=0
run_group "unit tests" dist/test/unit '\.test\.js$' || rc=1
if [[ ${1:-} != --unit ]]; then
  run_group "integration tests (root, network namespaces)" dist/test/integration '\.test\.js$' || rc=1
fi
echo "tests: $passed passed, $failed failed"
# uvu exits 0 when a suite's before hook throws (its tests are only counted as not passed): the count decides.
if [[ $failed -gt 0 ]]; then rc=1; fi
exit $rc
