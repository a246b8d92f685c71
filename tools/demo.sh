#!/usr/bin/env bash
# Installs what is missing, builds, and runs snapdisk's main job on a built-in
# default: for now, the disk experiment (`snapdisk experiment`), which drives a
# sparse FileDevice through each ESSD profile and prints what it measured.
# Extra arguments go to `snapdisk experiment` (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh

snapdisk_install_packages
snapdisk_build release >/dev/null
exec build/release/tools/snapdisk experiment "$@"
