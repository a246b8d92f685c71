// How the CLI shows things: sizes and times for humans, aligned tables, and
// the JSON objects of --json output (stable field names: sizes in bytes,
// times as RFC 3339 UTC plus integer ns since the Unix epoch).
//
// Thread safety: pure functions; a Table is a value.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "disk/bytes.h"
#include "engine/fsck.h"
#include "engine/pool.h"
#include "engine/worm_store.h"
#include "snapshot/backup.h"
#include "snapshot/backup_export.h"
#include "snapshot/backup_set.h"
#include "snapshot/policy.h"

namespace snapdisk::cli {

// HumanBytes and ExactBytes: disk/bytes.h.
// "2024-05-01T10:00:00.123456789Z" (RFC 3339, UTC, nanoseconds).
std::string Rfc3339(int64_t unix_ns);
// "2024-05-01 10:00:00 UTC" (seconds; for tables).
std::string HumanTime(int64_t unix_ns);
// "1.2 s", "350 ms".
std::string HumanSeconds(double seconds);

// A table with a header row; columns are left-aligned unless marked right.
// Render() separates columns with two spaces, with no trailing spaces.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void RightAlign(size_t column) {
    if (right_.size() <= column) right_.resize(column + 1, false);
    right_[column] = true;
  }
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_;
};

// "key   value" lines with the keys padded to one width.
std::string KeyValues(const std::vector<std::pair<std::string, std::string>>& rows);

nlohmann::ordered_json PoolInfoJson(const PoolInfo& info, const std::string& path);
nlohmann::ordered_json VolumeJson(const VolumeInfo& info);
nlohmann::ordered_json SnapshotJson(const SnapshotInfo& info);
nlohmann::ordered_json FsckJson(const FsckReport& report);
nlohmann::ordered_json ScrubJson(const ScrubReport& report);
nlohmann::ordered_json ExtentJson(const Extent& extent);

// A time as two fields: "<name>": RFC 3339 and "<name>_unix_ns" (both null
// when `unix_ns` is 0 and `zero_is_null`).
void AddTime(nlohmann::ordered_json& doc, const std::string& name, int64_t unix_ns,
             bool zero_is_null = false);
// A backup set: id, sequence, volume, type, first_lsn, last_lsn, base (null
// when none), started/finished/consistent, retain_until, sizes, chunk_count,
// key, sha256; log segments also first_record/last_record.
nlohmann::ordered_json BackupSetJson(const BackupSet& set);
// The LSNs a set covers, for people: "12-40", "12" (one), or "none (at 11)"
// for a differential or incremental with no write since its base.
std::string LsnRangeText(const BackupSet& set);
nlohmann::ordered_json StorageReportJson(const StorageReport& report);
nlohmann::ordered_json WormVerifyJson(const WormVerifyReport& report);
nlohmann::ordered_json ExportReportJson(const ExportReport& report);
// The policy's fields (store_dir, method, incremental, retention_days, cycle,
// window, log_frequency, log_retention_days).
nlohmann::ordered_json PolicyJson(const BackupPolicy& policy);

}  // namespace snapdisk::cli
