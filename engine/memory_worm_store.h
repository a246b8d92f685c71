// MemoryWormStore: an in-memory WormStore, for fast tests and for
// simulations that run days of backups on a simulated clock (the policy
// simulation, the comparator's RPO experiment).
//
// Holds the whole WormStore contract (engine/worm_store.h): a key is put once
// (AlreadyExists again, even after it expired), nothing is deleted or
// shortened before its retention ends, Expire() alone removes expired
// objects, Get verifies the XXH3-128 checksum and returns Corruption naming
// the key, and every operation (refusals included) goes to an audit log
// chained by SHA-256 that Verify() checks together with every object.
//
// Memory: every object and every audit entry is held until Expire() removes
// the object (the audit log is never trimmed), so a caller bounds a run by
// its length.
//
// For tests it adds a settable clock (the store's "now"), counters of the
// calls made, fault injection (puts that fail), and tampering that bypasses
// the contract the way a disk or an attacker would.
//
// Thread safety: every method may be called from any thread (one mutex).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine/worm_store.h"

namespace snapdisk {

class MemoryWormStore final : public WormStore {
 public:
  // 2023-11-14, a fixed start so runs are repeatable.
  static constexpr int64_t kDefaultStartUnixNs = 1'700'000'000'000'000'000;

  explicit MemoryWormStore(const WormStoreConfig& config = {},
                           int64_t start_unix_ns = kDefaultStartUnixNs);

  const WormStoreConfig& config() const override { return config_; }
  int64_t NowUnixNs() const override { return now_unix_ns_.load(); }

  Status Put(std::string_view key, std::span<const std::byte> data,
             int64_t retain_until_unix_ns) override;
  Result<std::vector<std::byte>> Get(std::string_view key) override;
  Result<std::vector<std::byte>> GetRange(std::string_view key, uint64_t offset_bytes,
                                          uint64_t length_bytes) override;
  Result<WormObjectInfo> Head(std::string_view key) override;
  Result<std::vector<WormObjectInfo>> List(std::string_view prefix) override;
  Status ExtendRetention(std::string_view key, int64_t retain_until_unix_ns) override;
  Status Delete(std::string_view key) override;
  Result<WormExpireReport> Expire() override;
  Result<WormVerifyReport> Verify(const WormProgress& progress = {}) override;

  // ---- Test hooks ----
  void AdvanceNs(int64_t delta_ns) { now_unix_ns_.fetch_add(delta_ns); }
  void SetNowUnixNs(int64_t now_unix_ns) { now_unix_ns_.store(now_unix_ns); }

  // Puts whose key starts with `prefix` fail with IOError once `after` more
  // such puts have succeeded (nothing is stored; the attempt is logged).
  // ClearFaults() stops it.
  void FailPutsAfter(std::string_view prefix, uint64_t after);
  void ClearFaults();

  // Changes an object's stored bytes behind the store's back. With
  // `consistent` the object's own checksum is updated too (so Get returns the
  // changed bytes, as after a careful rewrite; Verify still sees it against
  // the audit log); without, Get reports Corruption (bit rot).
  Status TamperForTest(std::string_view key,
                       const std::function<void(std::vector<std::byte>&)>& change, bool consistent);
  // Removes an object behind the store's back.
  Status RemoveForTest(std::string_view key);

  struct Counters {
    uint64_t puts = 0;  // successful
    uint64_t gets = 0;
    uint64_t heads = 0;
    uint64_t lists = 0;
    uint64_t extends = 0;  // successful
  };
  Counters counters() const;
  uint64_t object_count() const;
  uint64_t stored_bytes() const;  // sum of object sizes
  // Keys of every object now held, sorted.
  std::vector<std::string> Keys() const;

 private:
  struct Object {
    std::vector<std::byte> data;
    std::string checksum;  // what Get checks against
    int64_t created_unix_ns = 0;
    int64_t retain_until_unix_ns = 0;
  };
  Status CheckKey(std::string_view key) const;
  // Appends an audit entry: "<now> <op> <key> <detail>" chained by SHA-256.
  void AuditLocked(std::string_view op, std::string_view key, std::string_view detail);
  WormObjectInfo InfoLocked(const std::string& key, const Object& o) const;

  const WormStoreConfig config_;
  std::atomic<int64_t> now_unix_ns_;
  mutable std::mutex mu_;
  std::map<std::string, Object, std::less<>> objects_;
  std::set<std::string, std::less<>> ever_put_;  // keys never to be written again
  // What the audit log says each live object holds (its checksum at put).
  std::map<std::string, std::string, std::less<>> expected_;
  struct AuditEntry {
    std::string text;
    std::string sha256;  // SHA-256(previous sha256 + text)
  };
  std::vector<AuditEntry> audit_;
  std::string fail_prefix_;
  uint64_t fail_after_ = UINT64_MAX;
  bool failing_ = false;
  mutable Counters counters_;
};

}  // namespace snapdisk
