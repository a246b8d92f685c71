#include "snapshot/backup_history.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace snapdisk {

namespace {

using Json = nlohmann::json;

Json Encode(const BackupTask& t) {
  return Json{{"trigger", t.trigger},
              {"method", t.method},
              {"set", t.set_id},
              {"started_unix_ns", t.started_unix_ns},
              {"finished_unix_ns", t.finished_unix_ns},
              {"data_bytes", t.data_bytes},
              {"stored_bytes", t.stored_bytes},
              {"result", t.result},
              {"error", t.error}};
}

Result<std::vector<BackupTask>> Decode(const std::string& text, std::string_view volume) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("backup history of volume '" + std::string(volume) + "': " + why);
  };
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return bad("not a JSON array");
  std::vector<BackupTask> tasks;
  for (const Json& e : j) {
    if (!e.is_object()) return bad("an entry is not an object");
    BackupTask t;
    t.volume = std::string(volume);
    auto str = [&](const char* f, std::string* out) {
      auto it = e.find(f);
      if (it == e.end() || !it->is_string()) return false;
      *out = it->get<std::string>();
      return true;
    };
    auto i64 = [&](const char* f, int64_t* out) {
      auto it = e.find(f);
      if (it == e.end() || !it->is_number_integer()) return false;
      *out = it->get<int64_t>();
      return true;
    };
    auto u64 = [&](const char* f, uint64_t* out) {
      auto it = e.find(f);
      if (it == e.end() || !it->is_number_unsigned()) return false;
      *out = it->get<uint64_t>();
      return true;
    };
    if (!str("trigger", &t.trigger) || !str("method", &t.method) || !str("set", &t.set_id) ||
        !i64("started_unix_ns", &t.started_unix_ns) ||
        !i64("finished_unix_ns", &t.finished_unix_ns) || !u64("data_bytes", &t.data_bytes) ||
        !u64("stored_bytes", &t.stored_bytes) || !str("result", &t.result) ||
        !str("error", &t.error)) {
      return bad("an entry lacks a field or has one of the wrong type");
    }
    tasks.push_back(std::move(t));
  }
  return tasks;
}

Result<std::vector<BackupTask>> VolumeHistory(Pool& pool, std::string_view volume) {
  Result<std::string> text = pool.GetAttribute(volume, kBackupHistoryAttribute);
  if (text.status().IsNotFound()) {
    SNAPDISK_RETURN_IF_ERROR(pool.GetVolume(volume).status());
    return std::vector<BackupTask>();
  }
  if (!text.ok()) return text.status();
  return Decode(*text, volume);
}

}  // namespace

Status RecordBackupTask(Pool& pool, const BackupTask& task) {
  if (task.volume.empty()) return Status::InvalidArgument("a backup task names no volume");
  Result<std::vector<BackupTask>> tasks = VolumeHistory(pool, task.volume);
  // A damaged history is replaced rather than blocking every later backup.
  std::vector<BackupTask> kept = tasks.ok() ? *std::move(tasks) : std::vector<BackupTask>();
  if (!tasks.ok() && !tasks.status().IsCorruption()) return tasks.status();
  kept.push_back(task);
  // The newest entries that fit: at most kBackupHistoryLimit, and the
  // attribute's 64 KiB.
  constexpr size_t kMaxBytes = 60 * 1024;
  std::vector<std::string> entries;
  size_t bytes = 2;
  for (auto it = kept.rbegin(); it != kept.rend() && entries.size() < kBackupHistoryLimit; ++it) {
    BackupTask t = *it;
    if (t.error.size() > 512) t.error.resize(512);
    std::string e = Encode(t).dump(-1, ' ', false, Json::error_handler_t::replace);
    if (bytes + e.size() + 1 > kMaxBytes) break;
    bytes += e.size() + 1;
    entries.push_back(std::move(e));
  }
  std::string text = "[";
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    text += (text.size() > 1 ? "," : "") + *it;
  }
  text += "]";
  return pool.SetAttribute(task.volume, kBackupHistoryAttribute, text);
}

Result<std::vector<BackupTask>> BackupHistory(Pool& pool, std::string_view volume) {
  std::vector<BackupTask> all;
  if (!volume.empty()) return VolumeHistory(pool, volume);
  for (const VolumeInfo& v : pool.ListVolumes()) {
    SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupTask> tasks, VolumeHistory(pool, v.name));
    all.insert(all.end(), tasks.begin(), tasks.end());
  }
  std::stable_sort(all.begin(), all.end(), [](const BackupTask& a, const BackupTask& b) {
    return a.finished_unix_ns < b.finished_unix_ns;
  });
  return all;
}

}  // namespace snapdisk
