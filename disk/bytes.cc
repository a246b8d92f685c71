#include "disk/bytes.h"

#include <cinttypes>
#include <cstdio>

namespace snapdisk {

namespace {
constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
}

std::string HumanBytes(uint64_t bytes) {
  int unit = 0;
  while (unit < 6 && bytes >= (uint64_t{1} << (10 * (unit + 1)))) ++unit;
  if (unit == 0) return std::to_string(bytes) + " B";
  const uint64_t scale = uint64_t{1} << (10 * unit);
  char buf[64];
  if (bytes % scale == 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " %s", bytes / scale, kUnits[unit]);
  } else {
    const double v = static_cast<double>(bytes) / static_cast<double>(scale);
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  }
  return buf;
}

std::string ExactBytes(uint64_t bytes) {
  int unit = 0;
  while (unit < 6 && bytes != 0 && bytes % (uint64_t{1} << (10 * (unit + 1))) == 0) ++unit;
  return std::to_string(bytes >> (10 * unit)) + " " + kUnits[unit];
}

}  // namespace snapdisk
