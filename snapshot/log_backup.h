// Log backup: ships a volume's write log (Pool, "The write log") to a
// WormStore as log segments — sets of type kLog — and reads segments back.
//
// A log backup job cuts the log at the records that exist when it starts
// (after a commit, so everything it ships is durable in the pool too) and
// ships them as one segment per run of records of one lineage, oldest first.
// Once a segment's manifest is in the store, its records are dropped from the
// pool's log, which lets their blocks go.
//
// Segment stream: the records, back to back, each a 33-byte header — op (u8:
// 1 write, 2 trim, 3 write-zeroes), LSN (u64), time in ns since the Unix
// epoch (i64), byte offset (u64), byte length (u64), little endian — then, for
// writes, `length` bytes of data. The stream is cut into chunks of the store's
// chunk size at any byte (a record may straddle chunks); the manifest lists
// them in stream order with their uncompressed sizes (`chunks`), and its
// `data_bytes` is the stream's length. first_lsn/last_lsn are the first and
// last record's LSN, first/last_record_unix_ns their times; `base` is the
// previous segment of the lineage.
//
// Chain rules (a gap is an error reported at once):
//  - Records already in a segment of the store (a crash between the manifest
//    put and the drop) are skipped, then dropped.
//  - Segments of one lineage are contiguous in LSN: the first record shipped
//    must be the previous segment's last_lsn + 1; with no earlier segment in
//    the lineage, it must be at most the newest data backup's last_lsn + 1.
//    Otherwise the job fails with Corruption "log gap: ..." naming the LSNs
//    missing and ships nothing.
//  - A gap inside the cut (the log was turned off for a while, or the pool
//    dropped records unshipped): the segment ends before it, is shipped, and
//    the job then fails with the same kind of error naming the gap.
//  - Nothing to ship: NotFound ("no writes of volume 'V' since the last log
//    backup (LSN N): nothing to ship") from Start, or as the result when
//    every record was shipped already; IsNothingToShip tells it from a
//    missing volume. Callers may count it a success (the CLI does).
//
// Thread safety: as BackupJob (the pool's thread drives Step).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "disk/status.h"
#include "engine/pool.h"
#include "engine/worm_store.h"
#include "snapshot/backup.h"
#include "snapshot/backup_set.h"

namespace snapdisk {

inline constexpr size_t kLogStreamHeaderBytes = 33;

// One record of a segment's stream. `data` is valid during the callback only.
struct LogStreamRecord {
  uint64_t lsn = 0;
  int64_t time_unix_ns = 0;
  VolumeOp op = VolumeOp::kWrite;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  std::span<const std::byte> data;  // writes only
};

// True for the NotFound that means there was nothing to ship.
bool IsNothingToShip(const Status& status);

// Reads a segment's chunks in order (each verified) and calls `visit` for
// every record, oldest first. Corruption naming the segment for a bad chunk or
// a malformed stream; the visitor's error stops the walk.
Status ForEachLogRecord(WormStore& store, const BackupSet& segment,
                        const std::function<Status(const LogStreamRecord&)>& visit);

// The log backup job behind BackupJob for BackupMethod::kLog.
class LogBackupJob {
 public:
  // Commits the pool, cuts the log and checks the chain's start. Errors here
  // change nothing: NotFound (volume; nothing to ship), Corruption (a gap),
  // Busy (another job of the volume holds the store's sequence).
  static Result<std::unique_ptr<LogBackupJob>> Start(Pool& pool, WormStore& store,
                                                     std::string_view volume,
                                                     const BackupOptions& options);
  ~LogBackupJob();

  // A bounded slice of work; true once finished (then result()).
  bool Step();
  // The last segment shipped once done; else the error.
  const Result<BackupSet>& result() const;
  // Every segment shipped so far (several when the cut spans lineages).
  const std::vector<BackupSet>& segments() const;
  BackupProgress progress() const;
  void Cancel();

 private:
  struct Impl;
  explicit LogBackupJob(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snapdisk
