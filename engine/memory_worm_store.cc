#include "engine/memory_worm_store.h"

#include <xxhash.h>

#include "engine/audit_log.h"

#include <algorithm>
#include <cstdio>

namespace snapdisk {

namespace {

// XXH3-128 of the bytes, 32 hex digits.
std::string Checksum(std::span<const std::byte> data) {
  const XXH128_hash_t hash = XXH3_128bits(data.data(), data.size());
  char text[33];
  std::snprintf(text, sizeof text, "%016llx%016llx", static_cast<unsigned long long>(hash.high64),
                static_cast<unsigned long long>(hash.low64));
  return text;
}

}  // namespace

MemoryWormStore::MemoryWormStore(const WormStoreConfig& config, int64_t start_unix_ns)
    : config_(config), now_unix_ns_(start_unix_ns) {}

Status MemoryWormStore::CheckKey(std::string_view key) const {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("bad key '" + std::string(key) + "': " + why);
  };
  if (key.empty() || key.size() > 512) return bad("must be 1-512 characters");
  if (key.front() == '/' || key.back() == '/') return bad("starts or ends with '/'");
  size_t start = 0;
  while (start <= key.size()) {
    size_t end = key.find('/', start);
    if (end == std::string_view::npos) end = key.size();
    std::string_view part = key.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return bad("empty, '.' or '..' component");
    for (char c : part) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
      if (!ok) return bad("has a character outside [A-Za-z0-9._-/]");
    }
    start = end + 1;
  }
  return Status::OK();
}

void MemoryWormStore::AuditLocked(std::string_view op, std::string_view key,
                                  std::string_view detail) {
  AuditEntry e;
  e.text = std::to_string(now_unix_ns_.load()) + " " + std::string(op) + " " + std::string(key) +
           " " + std::string(detail);
  const std::string prev = audit_.empty() ? std::string(64, '0') : audit_.back().sha256;
  e.sha256 = Sha256HexOfText(prev + e.text);
  audit_.push_back(std::move(e));
}

WormObjectInfo MemoryWormStore::InfoLocked(const std::string& key, const Object& o) const {
  return WormObjectInfo{key, o.data.size(), o.checksum, o.created_unix_ns, o.retain_until_unix_ns};
}

Status MemoryWormStore::Put(std::string_view key, std::span<const std::byte> data,
                            int64_t retain_until_unix_ns) {
  SNAPDISK_RETURN_IF_ERROR(CheckKey(key));
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = now_unix_ns_.load();
  if (ever_put_.count(key)) {
    AuditLocked("put-refused", key, "exists");
    return Status::AlreadyExists("object '" + std::string(key) +
                                 "' exists (or existed): keys are written once");
  }
  if (retain_until_unix_ns <= now) {
    AuditLocked("put-refused", key, "retention in the past");
    return Status::InvalidArgument("put '" + std::string(key) + "': retain-until " +
                                   std::to_string(retain_until_unix_ns) + " is not in the future");
  }
  if (!fail_prefix_.empty() || fail_after_ != UINT64_MAX) {
    if (key.substr(0, fail_prefix_.size()) == fail_prefix_) {
      if (fail_after_ == 0) {
        AuditLocked("put-failed", key, "injected");
        return Status::IOError("put '" + std::string(key) + "': injected fault");
      }
      --fail_after_;
    }
  }
  Object o;
  o.data.assign(data.begin(), data.end());
  o.checksum = Checksum(o.data);
  o.created_unix_ns = now;
  o.retain_until_unix_ns = retain_until_unix_ns;
  AuditLocked("put", key, o.checksum + " " + std::to_string(retain_until_unix_ns));
  expected_[std::string(key)] = o.checksum;
  ever_put_.insert(std::string(key));
  objects_.emplace(std::string(key), std::move(o));
  ++counters_.puts;
  return Status::OK();
}

Result<std::vector<std::byte>> MemoryWormStore::Get(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_.gets;
  auto it = objects_.find(key);
  if (it == objects_.end()) return Status::NotFound("no object '" + std::string(key) + "'");
  if (Checksum(it->second.data) != it->second.checksum) {
    return Status::Corruption("object '" + std::string(key) + "' fails its checksum");
  }
  return it->second.data;
}

Result<std::vector<std::byte>> MemoryWormStore::GetRange(std::string_view key,
                                                         uint64_t offset_bytes,
                                                         uint64_t length_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_.gets;
  auto it = objects_.find(key);
  if (it == objects_.end()) return Status::NotFound("no object '" + std::string(key) + "'");
  const std::vector<std::byte>& data = it->second.data;
  SNAPDISK_RETURN_IF_ERROR(CheckGetRange(key, data.size(), offset_bytes, length_bytes));
  return std::vector<std::byte>(data.begin() + static_cast<ptrdiff_t>(offset_bytes),
                                data.begin() + static_cast<ptrdiff_t>(offset_bytes + length_bytes));
}

Result<WormObjectInfo> MemoryWormStore::Head(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_.heads;
  auto it = objects_.find(key);
  if (it == objects_.end()) return Status::NotFound("no object '" + std::string(key) + "'");
  return InfoLocked(it->first, it->second);
}

Result<std::vector<WormObjectInfo>> MemoryWormStore::List(std::string_view prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_.lists;
  std::vector<WormObjectInfo> out;
  for (auto it = objects_.lower_bound(prefix);
       it != objects_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    out.push_back(InfoLocked(it->first, it->second));
  }
  return out;
}

Status MemoryWormStore::ExtendRetention(std::string_view key, int64_t retain_until_unix_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = objects_.find(key);
  if (it == objects_.end()) {
    AuditLocked("extend-refused", key, "not found");
    return Status::NotFound("no object '" + std::string(key) + "'");
  }
  if (retain_until_unix_ns <= now_unix_ns_.load()) {
    AuditLocked("extend-refused", key, "in the past");
    return Status::InvalidArgument("retain-until " + std::to_string(retain_until_unix_ns) +
                                   " for '" + std::string(key) + "' is not in the future");
  }
  if (retain_until_unix_ns < it->second.retain_until_unix_ns) {
    AuditLocked("extend-refused", key, "shorter");
    return Status::PermissionDenied("object '" + std::string(key) + "' is retained until " +
                                    std::to_string(it->second.retain_until_unix_ns) +
                                    "; retention is never shortened");
  }
  it->second.retain_until_unix_ns = retain_until_unix_ns;
  AuditLocked("extend", key, std::to_string(retain_until_unix_ns));
  ++counters_.extends;
  return Status::OK();
}

Status MemoryWormStore::Delete(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = objects_.find(key);
  AuditLocked("delete-refused", key, "");
  if (it == objects_.end()) {
    return Status::InvalidArgument("object '" + std::string(key) +
                                   "' is not here; objects are removed by the expiry pass only");
  }
  if (it->second.retain_until_unix_ns > now_unix_ns_.load()) {
    return Status::PermissionDenied("object '" + std::string(key) + "' is retained until " +
                                    std::to_string(it->second.retain_until_unix_ns));
  }
  return Status::InvalidArgument("object '" + std::string(key) +
                                 "' expired: removed by the expiry pass only");
}

Result<WormExpireReport> MemoryWormStore::Expire() {
  std::lock_guard<std::mutex> lock(mu_);
  WormExpireReport report;
  const int64_t now = now_unix_ns_.load();
  for (auto it = objects_.begin(); it != objects_.end();) {
    if (it->second.retain_until_unix_ns <= now) {
      ++report.objects;
      report.bytes += it->second.data.size();
      AuditLocked("expire", it->first, "");
      expected_.erase(it->first);
      it = objects_.erase(it);
    } else {
      ++it;
    }
  }
  return report;
}

Result<WormVerifyReport> MemoryWormStore::Verify(const WormProgress& progress) {
  std::lock_guard<std::mutex> lock(mu_);
  WormVerifyReport report;
  std::string prev(64, '0');
  for (const AuditEntry& e : audit_) {
    if (Sha256HexOfText(prev + e.text) != e.sha256) {
      report.problems.push_back({"audit.log", "hash chain broken at '" + e.text + "'"});
      break;
    }
    prev = e.sha256;
  }
  report.head_sha256 = audit_.empty() ? "" : audit_.back().sha256;
  uint64_t done = 0;
  for (const auto& [key, o] : objects_) {
    ++report.objects;
    report.bytes += o.data.size();
    const std::string actual = Checksum(o.data);
    auto exp = expected_.find(key);
    if (exp == expected_.end()) {
      report.problems.push_back({key, "added"});
    } else if (actual != exp->second) {
      report.problems.push_back(
          {key, "rewritten (checksum " + actual + " expected " + exp->second + ")"});
    }
    if (progress && !progress(++done, objects_.size())) {
      return Status::Cancelled("verify cancelled");
    }
  }
  for (const auto& [key, checksum] : expected_) {
    if (!objects_.count(key)) report.problems.push_back({key, "removed"});
  }
  return report;
}

void MemoryWormStore::FailPutsAfter(std::string_view prefix, uint64_t after) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_prefix_ = std::string(prefix);
  fail_after_ = after;
}

void MemoryWormStore::ClearFaults() {
  std::lock_guard<std::mutex> lock(mu_);
  fail_prefix_.clear();
  fail_after_ = UINT64_MAX;
}

Status MemoryWormStore::TamperForTest(std::string_view key,
                                      const std::function<void(std::vector<std::byte>&)>& change,
                                      bool consistent) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return Status::NotFound("no object '" + std::string(key) + "'");
  change(it->second.data);
  if (consistent) it->second.checksum = Checksum(it->second.data);
  return Status::OK();
}

Status MemoryWormStore::RemoveForTest(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return Status::NotFound("no object '" + std::string(key) + "'");
  objects_.erase(it);
  return Status::OK();
}

MemoryWormStore::Counters MemoryWormStore::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

uint64_t MemoryWormStore::object_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return objects_.size();
}

uint64_t MemoryWormStore::stored_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t total = 0;
  for (const auto& [key, o] : objects_) total += o.data.size();
  return total;
}

std::vector<std::string> MemoryWormStore::Keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> keys;
  for (const auto& [key, o] : objects_) keys.push_back(key);
  return keys;
}

}  // namespace snapdisk
