// WormStore: write-once object storage with compliance-mode retention locks,
// where backup sets live (an OSS/S3 bucket with Object Lock, in miniature).
//
// The interface holds to what S3 Object Lock can do and nothing more: flat
// keys, whole-object put and get, list by prefix, a retain-until time per
// object that can be extended and never shortened, and no deletion of a locked
// object by anyone. Its first backend is a directory (OpenDirStore); an S3
// backend (Ceph RGW, OSS, S3) can follow behind the same interface.
//
// Contract (every backend):
//  - Put stores an object once. A key that exists (or existed and expired) is
//    never written again: AlreadyExists. The object is durable and visible
//    when Put returns.
//  - Every object carries retain_until_unix_ns. Until then nothing removes
//    it: Delete is refused (PermissionDenied) and so is removing the store.
//    ExtendRetention moves the time later; an earlier time is refused
//    (PermissionDenied, naming the current time). Retention must lie in the
//    future when given (InvalidArgument otherwise).
//  - Objects whose retention has passed are removed by Expire() — the store's
//    own expiry pass — only. Delete of an expired object is refused too
//    (InvalidArgument: "removed by the expiry pass only").
//  - Every object is checksummed (XXH3-128 of its bytes); Get verifies it and
//    returns Corruption naming the key on a mismatch, never the bad bytes.
//  - Every operation, refused attempts included, goes to an append-only audit
//    log whose entries are chained by SHA-256; Verify() checks the chain and
//    every object against it and names each bad object.
//
// Keys: 1-512 characters of [A-Za-z0-9._-] and '/', not starting or ending
// with '/', no empty, "." or ".." component.
//
// Thread safety: every method may be called from any thread; Put, Get and Head
// run concurrently (the backup engine puts chunks from worker threads).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"

namespace snapdisk {

struct WormObjectInfo {
  std::string key;
  uint64_t size_bytes = 0;
  std::string checksum;  // XXH3-128 of the stored bytes: 32 lowercase hex digits
  int64_t created_unix_ns = 0;
  int64_t retain_until_unix_ns = 0;
};

// One thing Verify found wrong.
struct WormProblem {
  std::string key;   // the object, or "audit.log" for the log itself
  std::string what;  // e.g. "rewritten (checksum ... expected ...)", "removed", "added"
};

struct WormVerifyReport {
  uint64_t objects = 0;  // objects checked
  uint64_t bytes = 0;    // bytes read and checksummed
  std::vector<WormProblem> problems;
  // The audit log's newest hash. Kept somewhere else, it also detects a
  // consistent rewrite of the whole history (which nothing inside one
  // directory can).
  std::string head_sha256;
  bool ok() const { return problems.empty(); }
};

struct WormExpireReport {
  uint64_t objects = 0;  // removed by this pass
  uint64_t bytes = 0;
};

// Settings fixed when a store is created (the directory backend keeps them in
// its store.json); backups read them to cut and compress data.
struct WormStoreConfig {
  uint64_t chunk_bytes = uint64_t{1} << 20;  // data chunk size: 64 KiB to 64 MiB, power of two
  int zstd_level = 1;                        // 1-19
};

// Reports (done, total) units of work; returns false to cancel.
using WormProgress = std::function<bool(uint64_t done, uint64_t total)>;

class WormStore {
 public:
  virtual ~WormStore() = default;

  virtual const WormStoreConfig& config() const = 0;
  // The store's notion of now (ns since the Unix epoch): retention is judged
  // against it. Tests give the store a simulated wall clock.
  virtual int64_t NowUnixNs() const = 0;

  virtual Status Put(std::string_view key, std::span<const std::byte> data,
                     int64_t retain_until_unix_ns) = 0;
  virtual Result<std::vector<std::byte>> Get(std::string_view key) = 0;
  // Bytes [offset_bytes, offset_bytes + length_bytes) of an object (an S3
  // ranged GET). The object's own checksum covers the whole object and is not
  // checked here: the caller checks what it reads (backup chunks carry their
  // content hash). InvalidArgument for a range outside the object.
  virtual Result<std::vector<std::byte>> GetRange(std::string_view key, uint64_t offset_bytes,
                                                  uint64_t length_bytes) = 0;
  // NotFound when there is no such object (or it expired).
  virtual Result<WormObjectInfo> Head(std::string_view key) = 0;
  // Objects whose key starts with `prefix`, sorted by key.
  virtual Result<std::vector<WormObjectInfo>> List(std::string_view prefix) = 0;
  virtual Status ExtendRetention(std::string_view key, int64_t retain_until_unix_ns) = 0;
  // Makes every object of `keys` retained until at least `retain_until_unix_ns`:
  // objects already retained that long are left alone, the others extended
  // (an audit entry each). Backups retain the thousands of chunks a new set
  // shares with this. NotFound naming the first missing key, or
  // InvalidArgument for a time not in the future: then nothing was extended.
  // The default asks Head and ExtendRetention per key (S3: HEAD and
  // PutObjectRetention); the directory store logs a whole batch with one sync.
  virtual Status RetainAtLeast(std::span<const std::string> keys, int64_t retain_until_unix_ns);
  // Always refused (see the contract); logged.
  virtual Status Delete(std::string_view key) = 0;
  // The expiry pass: removes every object whose retention has passed.
  virtual Result<WormExpireReport> Expire() = 0;
  // Reads every object and the audit log; names each bad object. A non-OK
  // Status only when the check itself could not run (or was cancelled).
  virtual Result<WormVerifyReport> Verify(const WormProgress& progress = {}) = 0;
};

inline Status WormStore::RetainAtLeast(std::span<const std::string> keys,
                                       int64_t retain_until_unix_ns) {
  for (const std::string& key : keys) {
    Result<WormObjectInfo> head = Head(key);
    if (!head.ok()) return head.status();
  }
  for (const std::string& key : keys) {
    Result<WormObjectInfo> head = Head(key);
    if (!head.ok()) return head.status();
    if (head->retain_until_unix_ns >= retain_until_unix_ns) continue;
    Status s = ExtendRetention(key, retain_until_unix_ns);
    if (s.ok()) continue;
    // Extended further meanwhile (an earlier time is then refused): fine.
    head = Head(key);
    if (!head.ok() || head->retain_until_unix_ns < retain_until_unix_ns) return s;
  }
  return Status::OK();
}

// GetRange's bounds check, shared by the backends: InvalidArgument naming the
// key unless 0 < length and offset + length <= object_bytes.
inline Status CheckGetRange(std::string_view key, uint64_t object_bytes, uint64_t offset_bytes,
                            uint64_t length_bytes) {
  if (length_bytes == 0 || offset_bytes > object_bytes ||
      length_bytes > object_bytes - offset_bytes) {
    return Status::InvalidArgument("range of " + std::to_string(length_bytes) +
                                   " bytes at offset " + std::to_string(offset_bytes) +
                                   " lies outside object " + std::string(key) + " of " +
                                   std::to_string(object_bytes) + " bytes");
  }
  return Status::OK();
}

struct DirStoreOptions {
  // ns since the Unix epoch; empty: the real wall clock. Called from any thread.
  std::function<int64_t()> now_unix_ns;
  // A read-only view, for reading beside a process that has the store open
  // (a backup running in `snapdisk serve`): takes no lock, sees the objects
  // the audit log held when it was opened (up to its last whole line), and
  // changes nothing on disk — no recovery, no log entries. Put,
  // ExtendRetention, Delete, Expire and Verify are refused (PermissionDenied).
  bool read_only = false;
  // Written into DIR/.lock while this process holds the store (not with
  // read_only): who holds it, for the message a second opener gets (e.g.
  // "snapdisk serve of pool /p/db.pool (pid 42)"). One line.
  std::string holder;
};

// Who holds the store at `dir` (DirStoreOptions::holder of the process that
// has it open), "" when nobody does or nothing was said.
std::string DirStoreHolder(const std::string& dir);

// Makes `dir` (which must not exist, or be an empty directory) a store.
// InvalidArgument for a bad config; AlreadyExists when it holds a store.
Status CreateDirStore(const std::string& dir, const WormStoreConfig& config = {});
// Opens a store made by CreateDirStore; finishes puts a crash interrupted.
// NotFound when `dir` is not a store; Busy when another process has it open
// for writing (the store is locked with flock; the message names the holder
// when it said who it is), unless options.read_only.
Result<std::unique_ptr<WormStore>> OpenDirStore(const std::string& dir,
                                                const DirStoreOptions& options = {});
// Removes the store's directory: refused (PermissionDenied, with the count and
// the latest retain-until) while it holds any object still locked.
Status RemoveDirStore(const std::string& dir, const DirStoreOptions& options = {});

}  // namespace snapdisk
