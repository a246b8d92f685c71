#include "tools/cli/args.h"

#include <cctype>
#include <limits>

#include "engine/names.h"

namespace snapdisk::cli {

namespace {

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

Result<VolumeRef> ParseVolumeRef(std::string_view text, bool snapshot_required) {
  VolumeRef ref;
  const size_t at = text.find('@');
  if (at == std::string_view::npos) {
    if (snapshot_required) {
      return Status::InvalidArgument("'" + std::string(text) +
                                     "' names no snapshot: expected VOL@SNAP");
    }
    ref.volume = std::string(text);
  } else {
    ref.volume = std::string(text.substr(0, at));
    ref.snapshot = std::string(text.substr(at + 1));
    if (ref.snapshot.empty()) {
      return Status::InvalidArgument("'" + std::string(text) +
                                     "' has an empty snapshot name after '@'");
    }
  }
  SNAPDISK_RETURN_IF_ERROR(ValidateName(ref.volume, "volume name"));
  if (at != std::string_view::npos) {
    SNAPDISK_RETURN_IF_ERROR(ValidateName(ref.snapshot, "snapshot name"));
  }
  return ref;
}

CLI::Validator SizeValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        auto size = ParseSize(value);
        return size.ok() ? std::string() : size.status().message();
      },
      "", "size");
}

CLI::Validator NameValidator(const std::string& what) {
  return CLI::Validator(
      [what](std::string& value) -> std::string {
        Status s = ValidateName(value, what);
        return s.ok() ? std::string() : s.message();
      },
      "", what);
}

CLI::Validator VolumeRefValidator(bool snapshot_required) {
  return CLI::Validator(
      [snapshot_required](std::string& value) -> std::string {
        auto ref = ParseVolumeRef(value, snapshot_required);
        return ref.ok() ? std::string() : ref.status().message();
      },
      "", "volume reference");
}

}  // namespace snapdisk::cli
