# Sourced by tools/test.sh and tools/demo.sh: install the Debian packages
# snapdisk needs (only those missing), then configure and build a preset.
# Requires root on a fresh machine (apt-get); a machine that already has every
# package needs neither root nor the network.

SNAPDISK_PACKAGES=(
  cmake g++ make pkg-config
  liburing-dev libxxhash-dev libzstd-dev libboost-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev
  fio nbdkit libnbd-bin qemu-utils zstd util-linux
  chromium python3
)

snapdisk_install_packages() {
  local missing=()
  for p in "${SNAPDISK_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages and not root: run as root or install: ${missing[*]}" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# snapdisk_build PRESET: configure (once) and build with 2 jobs.
snapdisk_build() {
  local preset=$1
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j 2
}
