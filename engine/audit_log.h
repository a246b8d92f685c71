// AuditLog: an append-only file of JSON lines chained by SHA-256, with group
// commit. The WORM store (engine/dir_store.cc) keeps its history in one; the
// format is generic.
//
// Format: one JSON object per line, each ended by '\n':
//   {"seq":N,<fields>,"prev_sha256":"<64 lowercase hex digits>"}
// seq counts from 1; prev_sha256 is the SHA-256 of the previous line's bytes
// (without its '\n'), and for line 1 the `genesis_sha256` its owner chose (the
// WORM store uses the SHA-256 of its store.json). The SHA-256 of the last line
// is the log's head: kept elsewhere, it detects even a consistent rewrite of
// the whole file.
//
// Internal to the engine: not part of the public API.
//
// Thread safety: AuditLog and GroupSync may be used from any thread; Append
// calls from several threads share fdatasyncs. ScanAuditLog is a pure reader.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"

namespace snapdisk {

// SHA-256 of `bytes`: 64 lowercase hex digits.
std::string Sha256HexOfText(std::string_view bytes);

// Shares one fsync among threads that each need a file (or directory) synced
// after a change of their own: group commit.
class GroupSync {
 public:
  // `fd` is borrowed and must outlive this; `what` names it in errors.
  GroupSync(int fd, bool data_only, std::string what)
      : fd_(fd), data_only_(data_only), what_(std::move(what)) {}

  // Call once a change to the file is complete; returns the change's ticket.
  uint64_t Note() { return noted_.fetch_add(1, std::memory_order_acq_rel) + 1; }
  // Returns once an fsync (fdatasync when data_only) that began after change
  // `ticket` was noted has finished: one thread syncs, the others wait for it.
  // After a failed sync every call returns that error: what reached the disk
  // is unknown, and retrying fsync cannot tell.
  Status SyncThrough(uint64_t ticket);
  // fsync calls made so far (tests and statistics).
  uint64_t syncs() const { return syncs_.load(std::memory_order_relaxed); }

 private:
  const int fd_;
  const bool data_only_;
  const std::string what_;
  std::atomic<uint64_t> noted_{0};
  std::atomic<uint64_t> syncs_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t synced_ = 0;   // every ticket up to this one is durable
  bool syncing_ = false;  // a thread is inside fsync
  Status failure_;
};

// A fault the chain check found; line numbers count from 1.
struct AuditLogProblem {
  uint64_t line_number = 0;
  std::string what;  // starts with "line N: "
};

// What ScanAuditLog read.
struct AuditLogScan {
  uint64_t lines = 0;       // complete ('\n'-ended) lines
  uint64_t size_bytes = 0;  // bytes of the complete lines
  uint64_t torn_bytes = 0;  // bytes after the last '\n': an append cut short
  uint64_t last_seq = 0;    // seq of the last line that had one
  std::string head_sha256;  // SHA-256 of the last complete line, else the genesis
  std::vector<AuditLogProblem> problems;
};

// Called with every complete line, in order, whether or not it passed the
// chain check (the caller decides what a bad line means to it).
using AuditLineFn = std::function<void(uint64_t line_number, std::string_view line)>;

// Reads `path` up to `limit_bytes` (UINT64_MAX: to its end), checks that every
// line has the format above, that seq runs 1, 2, ... and that each
// prev_sha256 matches the line before (line 1: `genesis_sha256`, which
// `genesis_name` names in messages). One problem per bad line; the check
// resumes from each line's own hash, so one edited line is one problem.
// Memory is bounded by the longest line kept (64 KiB; longer lines are
// problems), not by the file. NotFound when `path` does not exist.
Result<AuditLogScan> ScanAuditLog(const std::string& path, std::string_view genesis_sha256,
                                  std::string_view genesis_name, uint64_t limit_bytes,
                                  const AuditLineFn& on_line = {});

class AuditLog {
 public:
  // Creates `path` (which must not exist) empty, synced, chained from
  // `genesis_sha256`. The caller syncs the directory.
  static Result<std::unique_ptr<AuditLog>> Create(const std::string& path,
                                                  std::string genesis_sha256);
  // Opens `path` for appending after `scan` read it whole: cuts off the torn
  // tail the scan found (a crash's partial append) and continues the chain
  // from scan.head_sha256 and scan.last_seq.
  static Result<std::unique_ptr<AuditLog>> Open(const std::string& path, const AuditLogScan& scan);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends one line per element of `fields` (each the members of a JSON
  // object without its braces, non-empty, no '\n'), in one write, and returns
  // once they are durable. Threads appending at once share one fdatasync.
  // A failed write is cut back off the file; if that fails too, or a sync
  // fails, the log is broken and every later Append returns the error.
  Status Append(std::span<const std::string> fields);
  Status Append(const std::string& fields) {
    return Append(std::span<const std::string>(&fields, 1));
  }

  struct Head {
    uint64_t lines = 0;            // lines this log holds by its own count
    uint64_t seq = 0;              // seq of the newest line
    uint64_t file_size_bytes = 0;  // the file's size now (fstat)
    std::string sha256;            // the head hash
  };
  // A consistent view: no append is half done.
  Result<Head> Snapshot() const;
  // True once a failed sync (or a failed write that could not be cut back)
  // left the file in an unknown state: only reopening clears it.
  bool broken() const {
    std::lock_guard<std::mutex> lock(mu_);
    return !broken_.ok();
  }
  const std::string& path() const { return path_; }
  uint64_t syncs() const { return sync_.syncs(); }

 private:
  AuditLog(std::string path, int fd, uint64_t size_bytes, uint64_t lines, uint64_t seq,
           std::string head_sha256);

  const std::string path_;
  const int fd_;
  mutable std::mutex mu_;  // orders appends; guards everything below
  uint64_t size_bytes_;    // where the next line starts, by our own count
  uint64_t lines_;
  uint64_t seq_;
  std::string head_sha256_;
  Status broken_;
  GroupSync sync_;
};

}  // namespace snapdisk
