#include "tools/cli/report.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <ctime>

namespace snapdisk::cli {


std::string Rfc3339(int64_t unix_ns) {
  if (unix_ns == kForeverUnixNs) return "forever";
  int64_t secs = unix_ns / 1'000'000'000;
  int64_t ns = unix_ns % 1'000'000'000;
  if (ns < 0) {
    ns += 1'000'000'000;
    --secs;
  }
  const time_t t = static_cast<time_t>(secs);
  struct tm tm_utc;
  gmtime_r(&t, &tm_utc);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm_utc);
  std::snprintf(buf + n, sizeof buf - n, ".%09" PRId64 "Z", ns);
  return buf;
}

std::string HumanTime(int64_t unix_ns) {
  if (unix_ns == kForeverUnixNs) return "forever";
  int64_t secs = unix_ns / 1'000'000'000;
  if (unix_ns < 0 && unix_ns % 1'000'000'000 != 0) --secs;
  const time_t t = static_cast<time_t>(secs);
  struct tm tm_utc;
  gmtime_r(&t, &tm_utc);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm_utc);
  return buf;
}

std::string HumanSeconds(double seconds) {
  char buf[64];
  if (seconds < 1) {
    std::snprintf(buf, sizeof buf, "%.0f ms", seconds * 1000);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  }
  return buf;
}

std::string Table::Render() const {
  std::vector<size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      const bool right = c < right_.size() && right_[c];
      const size_t pad = width[c] - row[c].size();
      if (c > 0) line += "  ";
      if (right) line.append(pad, ' ');
      line += row[c];
      if (!right && c + 1 < row.size()) line.append(pad, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

std::string KeyValues(const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& [k, v] : rows) width = std::max(width, k.size());
  std::string out;
  for (const auto& [k, v] : rows) {
    out += k;
    out.append(width - k.size() + 2, ' ');
    out += v;
    out += '\n';
  }
  return out;
}

nlohmann::ordered_json PoolInfoJson(const PoolInfo& info, const std::string& path) {
  return {{"path", path},
          {"block_bytes", info.block_bytes},
          {"pool_bytes", info.pool_bytes},
          {"used_bytes", info.used_bytes},
          {"free_bytes", info.free_bytes},
          {"metadata_bytes", info.metadata_bytes},
          {"generation", info.generation},
          {"volumes", info.volumes},
          {"snapshots", info.snapshots}};
}

nlohmann::ordered_json VolumeJson(const VolumeInfo& info) {
  return {{"name", info.name},
          {"id", info.id},
          {"size_bytes", info.size_bytes},
          {"profile", EssdLevelName(info.profile)},
          {"created", Rfc3339(info.created_unix_ns)},
          {"created_unix_ns", info.created_unix_ns},
          {"snapshots", info.snapshots},
          {"lsn", info.lsn},
          {"lineage", info.lineage},
          {"origin", info.origin.empty() ? nlohmann::ordered_json(nullptr)
                                         : nlohmann::ordered_json(info.origin)}};
}

nlohmann::ordered_json SnapshotJson(const SnapshotInfo& info) {
  return {{"volume", info.volume},
          {"name", info.name},
          {"id", info.id},
          {"size_bytes", info.size_bytes},
          {"created", Rfc3339(info.created_unix_ns)},
          {"created_unix_ns", info.created_unix_ns},
          {"lsn", info.lsn},
          {"exclusive_bytes", info.exclusive_bytes},
          {"shared_bytes", info.shared_bytes}};
}

nlohmann::ordered_json FsckJson(const FsckReport& report) {
  nlohmann::ordered_json problems = nlohmann::ordered_json::array();
  for (const FsckProblem& p : report.problems) {
    problems.push_back({{"kind", p.kind}, {"block", p.block}, {"detail", p.detail}});
  }
  return {{"clean", report.clean()},
          {"generation", report.generation},
          {"map_nodes", report.map_nodes},
          {"data_blocks", report.data_blocks},
          {"catalog_blocks", report.catalog_blocks},
          {"blocks_in_use", report.blocks_in_use},
          {"problems", problems}};
}

nlohmann::ordered_json ScrubJson(const ScrubReport& report) {
  nlohmann::ordered_json problems = nlohmann::ordered_json::array();
  for (const ScrubProblem& p : report.problems) {
    problems.push_back({{"volume", p.volume},
                        {"snapshot", p.snapshot.empty() ? nlohmann::ordered_json(nullptr)
                                                        : nlohmann::ordered_json(p.snapshot)},
                        {"offset_bytes", p.offset_bytes},
                        {"block", p.block},
                        {"detail", p.detail}});
  }
  return {{"clean", report.clean()},
          {"blocks_read", report.blocks_read},
          {"bytes_read", report.bytes_read},
          {"problems", problems}};
}

nlohmann::ordered_json ExtentJson(const Extent& extent) {
  return {{"offset_bytes", extent.offset_bytes},
          {"length_bytes", extent.length_bytes},
          {"zero", extent.zero}};
}

void AddTime(nlohmann::ordered_json& doc, const std::string& name, int64_t unix_ns,
             bool zero_is_null) {
  if (zero_is_null && unix_ns == 0) {
    doc[name] = nullptr;
    doc[name + "_unix_ns"] = nullptr;
    return;
  }
  doc[name] = Rfc3339(unix_ns);
  doc[name + "_unix_ns"] = unix_ns;
}

std::string LsnRangeText(const BackupSet& set) {
  if (set.last_lsn < set.first_lsn) return "none (at " + std::to_string(set.last_lsn) + ")";
  if (set.last_lsn == set.first_lsn) return std::to_string(set.first_lsn);
  return std::to_string(set.first_lsn) + "-" + std::to_string(set.last_lsn);
}

nlohmann::ordered_json BackupSetJson(const BackupSet& set) {
  nlohmann::ordered_json doc = {
      {"id", set.id},
      {"sequence", set.sequence},
      {"volume", set.volume},
      {"volume_id", set.volume_id},
      {"lineage", set.lineage},
      {"type", BackupTypeName(set.type)},
      {"first_lsn", set.first_lsn},
      {"last_lsn", set.last_lsn},
      {"base", set.base.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(set.base)}};
  AddTime(doc, "started", set.started_unix_ns);
  AddTime(doc, "finished", set.finished_unix_ns);
  AddTime(doc, "consistent", set.consistent_unix_ns, /*zero_is_null=*/true);
  if (set.type == BackupType::kLog) {
    AddTime(doc, "first_record", set.first_record_unix_ns, true);
    AddTime(doc, "last_record", set.last_record_unix_ns, true);
  }
  // Long-term retention has no date: retain_until is null (its _unix_ns
  // stays the number kForeverUnixNs), retain_forever true.
  AddTime(doc, "retain_until", set.retain_until_unix_ns);
  const bool forever = set.retain_until_unix_ns == kForeverUnixNs;
  if (forever) doc["retain_until"] = nullptr;
  doc["retain_forever"] = forever;
  doc["volume_size_bytes"] = set.volume_size_bytes;
  doc["data_bytes"] = set.data_bytes;
  doc["stored_bytes"] = set.stored_bytes;
  doc["chunk_count"] = set.chunks.size();
  doc["key"] = set.key;
  doc["sha256"] = set.sha256;
  return doc;
}

nlohmann::ordered_json StorageReportJson(const StorageReport& r) {
  return {{"volume", r.volume},
          {"volume_size_bytes", r.volume_size_bytes},
          {"sets", r.sets},
          {"snapshot_bytes", r.snapshot_bytes},
          {"physical_bytes", r.physical_bytes},
          {"log_bytes", r.log_bytes},
          {"free_quota_bytes", r.free_quota_bytes},
          {"billable_bytes", r.billable_bytes}};
}

nlohmann::ordered_json WormVerifyJson(const WormVerifyReport& r) {
  nlohmann::ordered_json problems = nlohmann::ordered_json::array();
  for (const WormProblem& p : r.problems) problems.push_back({{"key", p.key}, {"what", p.what}});
  return {{"ok", r.ok()},
          {"objects", r.objects},
          {"bytes", r.bytes},
          {"head_sha256", r.head_sha256},
          {"problems", problems}};
}

nlohmann::ordered_json ExportReportJson(const ExportReport& r) {
  nlohmann::ordered_json sets = nlohmann::ordered_json::array();
  for (const ExportedSet& s : r.sets) {
    nlohmann::ordered_json set = {
        {"id", s.id},
        {"type", BackupTypeName(s.type)},
        {"volume", s.volume},
        {"base", s.base.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(s.base)},
        {"first_lsn", s.first_lsn},
        {"last_lsn", s.last_lsn}};
    AddTime(set, "consistent", s.consistent_unix_ns, true);
    set["data_bytes"] = s.data_bytes;
    set["chunk_count"] = s.chunk_count;
    AddTime(set, "retain_until", s.retain_until_unix_ns);
    set["sha256"] = s.sha256;
    sets.push_back(std::move(set));
  }
  nlohmann::ordered_json doc = {{"path", r.path},
                                {"target_id", r.target_id},
                                {"version", r.version},
                                {"file_bytes", r.file_bytes}};
  AddTime(doc, "exported", r.exported_unix_ns);
  doc["manifest_count"] = r.manifest_count;
  doc["chunk_count"] = r.chunk_count;
  doc["chunk_stored_bytes"] = r.chunk_stored_bytes;
  doc["sha256"] = r.sha256;
  doc["sets"] = sets;
  return doc;
}

nlohmann::ordered_json PolicyJson(const BackupPolicy& p) {
  return {{"store_dir", p.store_dir},
          {"method", PolicyMethodName(p.method)},
          {"incremental", p.incremental},
          {"retention_days", p.retention_days},
          {"cycle", FormatCycle(p.cycle_days)},
          {"window", FormatWindow(p.window_start_min, p.window_end_min)},
          {"log_frequency", LogFrequencyName(p.log_frequency)},
          {"log_retention_days", p.log_retention_days}};
}

}  // namespace snapdisk::cli
