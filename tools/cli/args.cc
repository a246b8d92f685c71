#include "tools/cli/args.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <limits>

#include "engine/names.h"

namespace snapdisk::cli {

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

namespace {

// Reads exactly `n` digits at `*pos`.
bool Digits(std::string_view text, size_t* pos, size_t n, int* out) {
  if (*pos + n > text.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = text[*pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *pos += n;
  *out = v;
  return true;
}

bool Expect(std::string_view text, size_t* pos, std::string_view chars) {
  if (*pos >= text.size() || chars.find(text[*pos]) == std::string_view::npos) return false;
  ++*pos;
  return true;
}

}  // namespace

Result<int64_t> ParseTimestamp(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("'" + std::string(text) + "' is not a valid time (" +
                                   std::string(why) +
                                   "; use RFC 3339, e.g. 2026-12-01T00:00:00Z, or a date "
                                   "YYYY-MM-DD, which means 00:00 UTC)");
  };
  size_t pos = 0;
  int year, month, day, hour = 0, minute = 0, second = 0;
  if (!Digits(text, &pos, 4, &year) || !Expect(text, &pos, "-") || !Digits(text, &pos, 2, &month) ||
      !Expect(text, &pos, "-") || !Digits(text, &pos, 2, &day)) {
    return bad("expected YYYY-MM-DD first");
  }
  int64_t frac_ns = 0;
  int64_t offset_s = 0;
  if (pos < text.size()) {
    if (!Expect(text, &pos, "Tt ") || !Digits(text, &pos, 2, &hour) || !Expect(text, &pos, ":") ||
        !Digits(text, &pos, 2, &minute) || !Expect(text, &pos, ":") ||
        !Digits(text, &pos, 2, &second)) {
      return bad("expected THH:MM:SS after the date");
    }
    if (pos < text.size() && text[pos] == '.') {
      ++pos;
      size_t n = 0;
      int64_t scale = 100'000'000;
      while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
        if (n++ < 9) {
          frac_ns += (text[pos] - '0') * scale;
          scale /= 10;
        }
        ++pos;
      }
      if (n == 0) return bad("no digits after the decimal point");
    }
    if (pos >= text.size()) return bad("no time zone: end it with Z or +HH:MM");
    if (text[pos] == 'Z' || text[pos] == 'z') {
      ++pos;
    } else if (text[pos] == '+' || text[pos] == '-') {
      const int sign = text[pos] == '-' ? -1 : 1;
      ++pos;
      int oh, om;
      if (!Digits(text, &pos, 2, &oh) || !Expect(text, &pos, ":") || !Digits(text, &pos, 2, &om) ||
          oh > 23 || om > 59) {
        return bad("bad time zone offset");
      }
      offset_s = sign * (oh * 3600 + om * 60);
    } else {
      return bad("bad time zone: end it with Z or +HH:MM");
    }
    if (pos != text.size()) return bad("unexpected text after the time");
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return bad("a field is out of range");
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second == 60 ? 59 : second;  // a leap second: the second before
  const time_t t = ::timegm(&tm);
  if (tm.tm_mday != day || tm.tm_mon != month - 1) return bad("no such date");
  const int64_t seconds = static_cast<int64_t>(t) - offset_s;
  if (seconds < 0 || seconds > int64_t{9'000'000'000}) return bad("out of range");
  return seconds * 1'000'000'000 + frac_ns;
}

Result<double> ParseRate(std::string_view text) {
  const std::string copy(text);
  char* end = nullptr;
  const double v = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || !std::isfinite(v) || v <= 0 || v > 1e6) {
    return Status::InvalidArgument("rate must be a number of MB/s above 0 and up to 1000000 (got " +
                                   copy + ")");
  }
  return v;
}

Status CheckRate(const std::string& text) { return ParseRate(text).status(); }

Result<int64_t> ParseDuration(std::string_view text) {
  const auto bad = [&] {
    return Status::InvalidArgument("'" + std::string(text) +
                                   "' is not a duration: a whole number and s, m, h or d "
                                   "(30s, 90m, 12h, 60d), at most 3650d");
  };
  if (text.size() < 2 || text.size() > 12) return bad();
  int64_t unit_ns = 0;
  switch (text.back()) {
    case 's':
      unit_ns = 1'000'000'000;
      break;
    case 'm':
      unit_ns = int64_t{60} * 1'000'000'000;
      break;
    case 'h':
      unit_ns = int64_t{3600} * 1'000'000'000;
      break;
    case 'd':
      unit_ns = int64_t{86400} * 1'000'000'000;
      break;
    default:
      return bad();
  }
  int64_t count = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9') return bad();
    count = count * 10 + (c - '0');
    if (count > int64_t{3650} * 86400) return bad();
  }
  const int64_t max_ns = int64_t{3650} * 86400 * 1'000'000'000;
  if (count == 0 || count > max_ns / unit_ns) return bad();
  return count * unit_ns;
}

Result<uint32_t> ParseDays(std::string_view text) {
  uint64_t v = 0;
  if (text.empty() || text.size() > 6) {
    return Status::InvalidArgument("'" + std::string(text) + "' is not a whole number of days");
  }
  for (char c : text) {
    if (c < '0' || c > '9') {
      return Status::InvalidArgument("'" + std::string(text) + "' is not a whole number of days");
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > 100000) {
    return Status::InvalidArgument("'" + std::string(text) + "' days is too many");
  }
  return static_cast<uint32_t>(v);
}

CLI::Validator CheckValidator(std::function<Status(const std::string&)> check,
                              const std::string& what) {
  return CLI::Validator(
      [check](std::string& value) -> std::string {
        Status s = check(value);
        return s.ok() ? std::string() : s.message();
      },
      "", what);
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
