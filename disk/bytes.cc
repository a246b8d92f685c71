#include "disk/bytes.h"

#include <cctype>
#include <cinttypes>
#include <limits>
#include <cstdio>

namespace snapdisk {

namespace {

constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};

Status BadSize(std::string_view text, std::string_view why) {
  return Status::InvalidArgument("'" + std::string(text) + "' is not a valid size (" +
                                 std::string(why) +
                                 "; use bytes or a number with K, M, G, T, P or E, e.g. 64G)");
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

}  // namespace

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

Result<uint64_t> ParseSize(std::string_view text) {
  if (text.empty()) return BadSize(text, "it is empty");
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) {
    if (text[0] == '-') return BadSize(text, "it is negative");
    return BadSize(text, "it does not start with a number");
  }
  uint64_t value = 0;
  for (size_t i = 0; i < digits; ++i) {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - d) / 10) {
      return BadSize(text, "it is too large");
    }
    value = value * 10 + d;
  }
  std::string_view unit = text.substr(digits);
  unsigned shift = 0;
  if (!unit.empty() && !EqualsIgnoreCase(unit, "B")) {
    static constexpr std::string_view kUnits = "KMGTPE";
    const size_t pos =
        kUnits.find(static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0]))));
    std::string_view rest = unit.substr(1);
    if (pos == std::string_view::npos ||
        !(rest.empty() || EqualsIgnoreCase(rest, "B") || EqualsIgnoreCase(rest, "iB"))) {
      if (unit[0] == '.' || unit[0] == ',') return BadSize(text, "fractions are not accepted");
      return BadSize(text, "unknown unit '" + std::string(unit) + "'");
    }
    shift = 10 * static_cast<unsigned>(pos + 1);
  }
  if (value == 0) return BadSize(text, "it is zero");
  if (shift > 0 && value > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return BadSize(text, "it is too large");
  }
  return value << shift;
}

}  // namespace snapdisk
