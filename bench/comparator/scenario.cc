#include "bench/comparator/scenario.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "disk/bytes.h"

namespace snapdisk {

namespace {

using Json = nlohmann::json;

constexpr CompareMethod kMethods[] = {
    CompareMethod::kSnapshot, CompareMethod::kSnapshotNext,  CompareMethod::kFull,
    CompareMethod::kDiff,     CompareMethod::kIncr,          CompareMethod::kLog,
    CompareMethod::kFullThrottled, CompareMethod::kFullAdaptive,
};

Status Bad(std::string_view key, const Json& value, std::string_view why) {
  return Status::InvalidArgument("scenario: " + std::string(key) + " = " + value.dump() + ": " +
                                 std::string(why));
}

// A number in [lo, hi].
Result<double> Number(std::string_view key, const Json& v, double lo, double hi) {
  if (!v.is_number()) return Bad(key, v, "must be a number");
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    return Bad(key, v, "must be " + Json(lo).dump() + " to " + Json(hi).dump());
  }
  return d;
}

// A size: "256M", "1G", or a whole number of bytes.
Result<uint64_t> Size(std::string_view key, const Json& v) {
  if (v.is_number_unsigned() && v.get<uint64_t>() > 0) return v.get<uint64_t>();
  if (v.is_string()) {
    auto s = ParseSize(v.get<std::string>());
    if (s.ok()) return *s;
    return Bad(key, v, s.status().message());
  }
  return Bad(key, v, "must be a size such as \"256M\" or a positive number of bytes");
}

// Refuses keys of `object` not in `known`.
Status OnlyKnownKeys(std::string_view where, const Json& object,
                     std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : object.items()) {
    bool found = false;
    for (std::string_view k : known) found = found || k == key;
    if (!found) {
      std::string names;
      for (std::string_view k : known) names += (names.empty() ? "" : ", ") + std::string(k);
      return Status::InvalidArgument("scenario: unknown key '" + std::string(where) + key +
                                     "' (known: " + names + ")");
    }
  }
  return Status::OK();
}

Status ParseForeground(const Json& f, ForegroundSpec& out) {
  if (!f.is_object()) return Bad("foreground", f, "must be an object");
  SNAPDISK_RETURN_IF_ERROR(OnlyKnownKeys(
      "foreground.", f, {"iops", "read_pct", "block_size", "seconds_before", "seconds_after"}));
  if (f.contains("iops")) {
    SNAPDISK_ASSIGN_OR_RETURN(out.iops, Number("foreground.iops", f["iops"], 1, 1e6));
  }
  if (f.contains("read_pct")) {
    SNAPDISK_ASSIGN_OR_RETURN(out.read_pct, Number("foreground.read_pct", f["read_pct"], 0, 100));
  }
  if (f.contains("block_size")) {
    SNAPDISK_ASSIGN_OR_RETURN(uint64_t b, Size("foreground.block_size", f["block_size"]));
    if (b % 512 != 0 || b > (uint64_t{16} << 20)) {
      return Bad("foreground.block_size", f["block_size"], "must be a multiple of 512 up to 16M");
    }
    out.block_bytes = static_cast<uint32_t>(b);
  }
  if (f.contains("seconds_before")) {
    SNAPDISK_ASSIGN_OR_RETURN(out.seconds_before,
                              Number("foreground.seconds_before", f["seconds_before"], 1, 3600));
  }
  if (f.contains("seconds_after")) {
    SNAPDISK_ASSIGN_OR_RETURN(out.seconds_after,
                              Number("foreground.seconds_after", f["seconds_after"], 1, 3600));
  }
  return Status::OK();
}

}  // namespace

const char* CompareMethodName(CompareMethod method) {
  switch (method) {
    case CompareMethod::kSnapshot: return "snapshot";
    case CompareMethod::kSnapshotNext: return "snapshot-next";
    case CompareMethod::kFull: return "full";
    case CompareMethod::kDiff: return "diff";
    case CompareMethod::kIncr: return "incr";
    case CompareMethod::kLog: return "log";
    case CompareMethod::kFullThrottled: return "full-throttled";
    case CompareMethod::kFullAdaptive: return "full-adaptive";
  }
  return "?";
}

Result<CompareMethod> ParseCompareMethod(std::string_view name) {
  std::string names;
  for (CompareMethod m : kMethods) {
    if (name == CompareMethodName(m)) return m;
    names += (names.empty() ? "" : ", ") + std::string(CompareMethodName(m));
  }
  return Status::InvalidArgument("unknown method '" + std::string(name) + "' (known: " + names + ")");
}

std::vector<CompareMethod> AllCompareMethods() { return {std::begin(kMethods), std::end(kMethods)}; }

const char* BackupStoreChoiceName(BackupStoreChoice c) {
  return c == BackupStoreChoice::kMemory ? "memory" : "directory";
}

const char* LogFrequencyChoiceName(LogFrequencyChoice f) {
  switch (f) {
    case LogFrequencyChoice::k5m: return "5m";
    case LogFrequencyChoice::k30m: return "30m";
    case LogFrequencyChoice::kData: return "data";
  }
  return "?";
}

Scenario Scenario::Quick() {
  Scenario s;
  s.written = {uint64_t{64} << 20, uint64_t{256} << 20};
  s.foreground.seconds_before = 2;
  s.foreground.seconds_after = 2;
  s.rpo_hours = 24;
  s.rpo_failures = 3;
  return s;
}

Result<Scenario> ParseScenario(std::string_view json_text, const Scenario& base) {
  Json doc;
  try {
    doc = Json::parse(json_text);
  } catch (const Json::parse_error& e) {
    return Status::InvalidArgument(std::string("scenario: not valid JSON: ") + e.what());
  }
  if (!doc.is_object()) return Status::InvalidArgument("scenario: must be a JSON object");
  SNAPDISK_RETURN_IF_ERROR(OnlyKnownKeys(
      "", doc,
      {"profile", "volume_size", "written", "foreground", "workload", "methods", "rate",
       "p99_target", "log_frequencies", "rpo_hours", "rpo_failures", "seed", "store"}));
  Scenario s = base;
  if (doc.contains("profile")) {
    const Json& v = doc["profile"];
    if (!v.is_string()) return Bad("profile", v, "must be PL0, PL1, PL2, PL3 or unlimited");
    auto level = ParseEssdLevel(v.get<std::string>());
    if (!level.ok()) return Bad("profile", v, level.status().message());
    s.profile = *level;
  }
  if (doc.contains("volume_size")) {
    SNAPDISK_ASSIGN_OR_RETURN(s.volume_size_bytes, Size("volume_size", doc["volume_size"]));
  }
  if (s.profile != EssdLevel::kUnlimited) {
    auto p = EssdProfile::For(s.profile, s.volume_size_bytes);
    if (!p.ok()) {
      return Status::InvalidArgument("scenario: volume_size " + FormatCapacityGib(s.volume_size_bytes) +
                                     " does not fit profile " + EssdLevelName(s.profile) + ": " +
                                     p.status().message());
    }
  }
  if (doc.contains("written")) {
    const Json& v = doc["written"];
    if (!v.is_array() || v.empty() || v.size() > 8) {
      return Bad("written", v, "must be a list of 1 to 8 sizes, e.g. [\"256M\", \"1G\"]");
    }
    s.written.clear();
    for (const Json& item : v) {
      SNAPDISK_ASSIGN_OR_RETURN(uint64_t w, Size("written", item));
      if (w % 4096 != 0 || w < (uint64_t{4} << 20)) {
        return Bad("written", item, "must be a multiple of 4K and at least 4M");
      }
      if (!s.written.empty() && w <= s.written.back()) return Bad("written", v, "sizes must ascend");
      s.written.push_back(w);
    }
  }
  if (s.written.back() > s.volume_size_bytes) {
    return Status::InvalidArgument("scenario: written " + HumanBytes(s.written.back()) +
                                   " is more than volume_size " + HumanBytes(s.volume_size_bytes));
  }
  if (doc.contains("foreground")) SNAPDISK_RETURN_IF_ERROR(ParseForeground(doc["foreground"], s.foreground));
  if (s.foreground.block_bytes > s.written.front()) {
    return Status::InvalidArgument("scenario: foreground.block_size is larger than the data written");
  }
  if (doc.contains("workload")) {
    const Json& v = doc["workload"];
    if (!v.is_object()) return Bad("workload", v, "must be an object");
    SNAPDISK_RETURN_IF_ERROR(OnlyKnownKeys("workload.", v, {"fio"}));
    if (v.contains("fio")) {
      if (!v["fio"].is_string() || v["fio"].get<std::string>().empty()) {
        return Bad("workload.fio", v["fio"], "must be the path of a fio job file");
      }
      s.fio_job = v["fio"].get<std::string>();
    }
  }
  if (doc.contains("methods")) {
    const Json& v = doc["methods"];
    if (!v.is_array() || v.empty()) return Bad("methods", v, "must be a non-empty list of methods");
    s.methods.clear();
    for (const Json& item : v) {
      if (!item.is_string()) return Bad("methods", item, "must be a method name");
      auto m = ParseCompareMethod(item.get<std::string>());
      if (!m.ok()) return Bad("methods", item, m.status().message());
      for (CompareMethod have : s.methods) {
        if (have == *m) return Bad("methods", item, "is listed twice");
      }
      s.methods.push_back(*m);
    }
  }
  if (doc.contains("store")) {
    const Json& v = doc["store"];
    if (v == "memory") {
      s.backup_store = BackupStoreChoice::kMemory;
    } else if (v == "directory") {
      s.backup_store = BackupStoreChoice::kDirectory;
    } else {
      return Bad("store", v, "must be \"memory\" or \"directory\"");
    }
  }
  if (!s.fio_job.empty()) {
    // The server the fio job talks to puts the sets into a directory.
    if (doc.contains("store") && s.backup_store != BackupStoreChoice::kDirectory) {
      return Bad("store", doc["store"],
                 "cannot run with workload.fio: the server the job talks to puts its backups "
                 "into a directory store (\"directory\")");
    }
    s.backup_store = BackupStoreChoice::kDirectory;
    // full-adaptive paces by the foreground's p99 every 250 ms; fio's
    // latencies are known only when fio ends.
    auto adaptive = std::find(s.methods.begin(), s.methods.end(), CompareMethod::kFullAdaptive);
    if (adaptive != s.methods.end() && doc.contains("methods")) {
      return Bad("methods", Json("full-adaptive"),
                 "cannot run with workload.fio: it paces the backup by the foreground's latencies "
                 "as they happen, and fio reports them only when it ends (full-throttled runs)");
    }
    if (adaptive != s.methods.end()) s.methods.erase(adaptive);
  }
  if (doc.contains("rate")) {
    SNAPDISK_ASSIGN_OR_RETURN(s.rate_mb_per_s, Number("rate", doc["rate"], 0.1, 1e5));
  }
  if (doc.contains("p99_target")) {
    SNAPDISK_ASSIGN_OR_RETURN(s.p99_target_us, Number("p99_target", doc["p99_target"], 0, 1e7));
  }
  if (doc.contains("log_frequencies")) {
    const Json& v = doc["log_frequencies"];
    if (!v.is_array()) return Bad("log_frequencies", v, "must be a list of \"5m\", \"30m\", \"data\"");
    s.log_frequencies.clear();
    for (const Json& item : v) {
      bool found = false;
      for (LogFrequencyChoice f : {LogFrequencyChoice::k5m, LogFrequencyChoice::k30m, LogFrequencyChoice::kData}) {
        if (item.is_string() && item.get<std::string>() == LogFrequencyChoiceName(f)) {
          for (LogFrequencyChoice have : s.log_frequencies) {
            if (have == f) return Bad("log_frequencies", item, "is listed twice");
          }
          s.log_frequencies.push_back(f);
          found = true;
        }
      }
      if (!found) return Bad("log_frequencies", item, "must be \"5m\", \"30m\" or \"data\"");
    }
  }
  if (doc.contains("rpo_hours")) {
    SNAPDISK_ASSIGN_OR_RETURN(s.rpo_hours, Number("rpo_hours", doc["rpo_hours"], 1, 24 * 365));
  }
  if (doc.contains("rpo_failures")) {
    const Json& v = doc["rpo_failures"];
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 100) {
      return Bad("rpo_failures", v, "must be a whole number 1 to 100");
    }
    s.rpo_failures = static_cast<uint32_t>(v.get<int64_t>());
  }
  if (doc.contains("seed")) {
    const Json& v = doc["seed"];
    if (!v.is_number_unsigned()) return Bad("seed", v, "must be a whole number >= 0");
    s.seed = v.get<uint64_t>();
  }
  return s;
}

}  // namespace snapdisk
