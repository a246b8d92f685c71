#!/usr/bin/env bash
# Installs what is missing, builds, and runs snapdisk's main job on its
# built-in default: the comparator (`snapdisk compare`), which measures what
# each backup method costs a workload, how fast each restore brings the disk
# back, and the RPO of each log frequency (about 5 minutes on 2 cores), then
# prints where the report is. Extra arguments go to `snapdisk compare` (see
# its --help), e.g. tools/demo.sh --quick, or --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh

snapdisk_install_packages
snapdisk_build release >/dev/null
exec build/release/tools/snapdisk compare "$@"
