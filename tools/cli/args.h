// Parsing of the CLI's arguments: sizes ("64G"), names of volumes and
// snapshots, "VOL@SNAP" references; and CLI11 validators built on them, so
// that a bad argument is a usage error (exit 2) reported before any pool is
// opened.
//
// Thread safety: pure functions.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "disk/bytes.h"
#include "disk/status.h"

namespace snapdisk::cli {

// A size in bytes (disk/bytes.h): "64G", "512m", "4KiB", "4096".
using snapdisk::ParseSize;

// A snapshot reference "VOL@SNAP" (or just "VOL" when `snapshot_required` is
// false, giving an empty snapshot). Both names are checked with ValidateName.
struct VolumeRef {
  std::string volume;
  std::string snapshot;  // empty: the live volume
};
Result<VolumeRef> ParseVolumeRef(std::string_view text, bool snapshot_required);

// A point in time, as ns since the Unix epoch: RFC 3339
// ("2026-12-01T00:00:00Z", "2026-12-01T09:30:00.5+02:00"; 't'/'z' in any
// case) or a date "2026-12-01" (00:00 UTC). InvalidArgument naming the text
// and the accepted forms otherwise (including impossible dates: 2026-02-30).
Result<int64_t> ParseTimestamp(std::string_view text);
// A whole number of days, 0-100000 (the caller checks its own range).
Result<uint32_t> ParseDays(std::string_view text);
// A length of time in ns: a whole number and a unit s, m, h or d ("30s",
// "90m", "12h", "60d"), above 0 and at most 3650 days. InvalidArgument
// naming the text otherwise.
Result<int64_t> ParseDuration(std::string_view text);
// A rate cap in MB/s (10^6 bytes/s): a number above 0 and up to 1000000
// (`backup --rate`, `restore --rate`, `serve --hydrate-rate`, ...).
Result<double> ParseRate(std::string_view text);
Status CheckRate(const std::string& text);

// CLI11 validators: an empty string when the value is good, else a message
// (CLI11 prefixes it with the option's name).
CLI::Validator SizeValidator();
// `what`: "volume name" or "snapshot name".
CLI::Validator NameValidator(const std::string& what);
CLI::Validator VolumeRefValidator(bool snapshot_required);
// A validator from a check: the Status's message when it fails. `what`
// names the value in --help ("days", "cycle").
CLI::Validator CheckValidator(std::function<Status(const std::string&)> check,
                              const std::string& what);

}  // namespace snapdisk::cli
