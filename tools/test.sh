#!/usr/bin/env bash
# Installs what is missing, builds and runs every test.
#
#   tools/test.sh                 # presets "release asan" (SNAPDISK_PRESETS to change)
#   SNAPDISK_PRESETS=debug tools/test.sh
#   SNAPDISK_TEST_SCALE=10 tools/test.sh    # longer randomized / crash runs
#
# Exits non-zero if any build or test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh

start=$(date +%s)
snapdisk_install_packages
for preset in ${SNAPDISK_PRESETS:-release asan}; do
  echo "=== build: $preset"
  snapdisk_build "$preset"
  echo "=== test: $preset"
  ctest --preset "$preset" --timeout 900
done
echo "=== tools/test.sh: all passed in $(( $(date +%s) - start ))s"
