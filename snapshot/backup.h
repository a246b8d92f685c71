// Backup jobs: snapshot, physical (full / differential / incremental / auto)
// and log backups of one volume into a WormStore.
//
// How each method reads the volume — the difference the comparator measures:
//  - Snapshot backup: takes an O(1) snapshot ("backup-<id>", usable at once
//    for local restore: instant access), then copies the blocks changed since
//    the previous snapshot backup's snapshot (all mapped blocks the first
//    time) straight from the pool, NOT through the volume's QoS limiter. The
//    previous backup snapshot is deleted once the new set is durable.
//  - Physical backup: takes a snapshot for a consistent image, then reads it
//    through the volume's own QoS limiter, competing with the workload like a
//    real physical backup; `rate_mb_per_s` caps it further. On a device that
//    workers can read beside the pool's thread (BlockDevice::ReadConcurrent)
//    the pool's thread takes each read's grant from the limiter and a worker
//    copies the blocks (as the device's DMA would); else the reads go through
//    the pool charged to the volume (Volume::ChargeQosTo).
//    full: every allocated block; diff: blocks changed since the last full;
//    incr: changed since the last backup of any kind; auto: diff when a full
//    of this lineage finished within the last 3 days, else full. The snapshot
//    of the last full and of the last backup are kept to compute those
//    changes ("backup-<id>"); older ones are deleted.
//  - Log backup: cuts the volume's write log (engine, Pool::ReadLog) at the
//    current LSN and ships the records as a segment (snapshot/log_backup.h).
//
// Driving: a job runs on the pool's thread. Step() does a bounded slice of
// work and never blocks (reads are submitted to the pool and finish in
// Pool::Poll; compression and store puts run on the job's worker threads), so
// the NBD server can run backups inside its event loop while clients write.
// Run() is the blocking form for the CLI and tests.
//
// Failure: the manifest is put last, so a failed or cancelled job leaves no
// set visible (chunks it stored are ordinary, retained objects that a later
// set can reuse). Its snapshot is deleted.
//
// Retention: every object of the set is retained until the set's retain-until;
// chunks shared with earlier sets and the sets a diff/incr depends on are
// extended to it, so a chain never expires before its last member.
//
// Thread safety: a job is driven by the pool's thread; progress() and Cancel()
// may be called from any thread. The pool and the store must outlive the job.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "disk/clock.h"
#include "disk/status.h"
#include "engine/pool.h"
#include "engine/worm_store.h"
#include "snapshot/backup_set.h"

namespace snapdisk {

enum class BackupMethod : uint8_t { kSnapshot, kFull, kDiff, kIncr, kAuto, kLog };
// "snapshot", "full", "diff", "incr", "auto", "log".
const char* BackupMethodName(BackupMethod method);
Result<BackupMethod> ParseBackupMethod(std::string_view name);

inline constexpr uint32_t kMinRetentionDays = 7;
inline constexpr uint32_t kMaxRetentionDays = 730;
// InvalidArgument "retention must be 7-730 days (got N)".
Status ValidateRetentionDays(uint32_t days);


struct BackupOptions {
  BackupMethod method = BackupMethod::kSnapshot;
  // Physical backups: a further cap on the read rate (10^6 bytes/s); 0: as
  // fast as the volume's QoS allows.
  double rate_mb_per_s = 0;
  uint32_t retain_days = 7;  // 7-730
  // Long-term retention (the seed's -1, for manual backups): the set never
  // expires (retained until kForeverUnixNs); it is still write-once and can
  // never be deleted. retain_days is then not used.
  bool retain_forever = false;
  // Threads that compress and put chunks (>= 1). More than the cores: a put
  // waits ~1-4 ms for its fsyncs, and other workers compress meanwhile
  // (bench/backup_vs_zstd.sh: 8 workers ran 2-2.6x faster than 2 on 2 cores).
  uint32_t worker_threads = 8;
  // Reads in flight (each one chunk long), 1-256. Memory: the job holds
  // max_reads_in_flight + 2 * worker_threads chunk buffers.
  uint32_t max_reads_in_flight = 4;
  // Paces the rate cap and times progress; null: the system's monotonic
  // clock. Must outlive the job. (Store times come from WormStore::NowUnixNs.)
  Clock* clock = nullptr;
  // Who asked, for the task history (snapshot/backup_history.h): "manual"
  // or "policy".
  std::string trigger = "manual";
  // Whether the worker threads (reading, hashing, compression, puts) run at
  // the lowest CPU and I/O priority (SCHED_IDLE, best-effort I/O level 7), so
  // that they use mostly what the workload leaves — and still progress,
  // slowly, under full load. Best effort: where the system refuses, they run
  // at normal priority. Unset: snapshot backups yes — ESSD's backend copies a
  // snapshot on other hardware, and on one machine the copy would otherwise
  // take CPU from the workload it is meant not to disturb; physical and log
  // backups no — they run in the customer's own process (log backups took
  // no notice of this option before 2026-12-07). The comparator sets it for
  // every method: it measures the disk's latency, and the backups' CPU is
  // another machine's (the host's, the backend's) everywhere but here. With
  // it, when the thread that starts the job is pinned to some CPUs, the
  // workers run on the others (disk/thread_placement.h; the comparator pins
  // its pool's thread).
  std::optional<bool> lowest_priority;
};

// When a set started at `started_unix_ns` with `options` expires.
int64_t RetainUntilUnixNs(const BackupOptions& options, int64_t started_unix_ns);

enum class BackupState : uint8_t { kRunning, kDone, kFailed, kCancelled };
const char* BackupStateName(BackupState state);

struct BackupProgress {
  std::string id;  // known from the start
  std::string volume;
  BackupType type = BackupType::kFull;
  BackupState state = BackupState::kRunning;
  uint64_t total_bytes = 0;   // volume bytes to copy (or log record bytes)
  uint64_t done_bytes = 0;    // of those, stored
  uint64_t read_bytes = 0;    // bytes read from the pool
  uint64_t stored_bytes = 0;  // bytes of new chunk objects
  int64_t started_unix_ns = 0;
  double rate_bytes_per_s = 0;  // done_bytes over the time so far
  double eta_s = 0;             // at that rate; 0 when unknown or done
};

class LogBackupJob;

// A Step (BackupJob's, LogBackupJob's) takes no new work once it has held
// the caller's thread — the pool's, which serves every request — this long
// (by BackupOptions::clock), and always takes at least one piece. On a
// device that copies inside Submit (the in-memory one: ~0.3-0.7 ms per MiB)
// four 1 MiB reads per step held the comparator's workload for 2.7 ms each
// time, and a log backup's step (8 MiB of records read synchronously) for
// 13-15 ms. A budget of 500 us was itself the longest wait of the
// comparator's workload during a snapshot backup (its p99 is ~220 us): 100
// us. On an io_uring device a step's submissions take microseconds and never
// reach it.
inline constexpr int64_t kBackupStepBudgetNs = 100'000;

class BackupJob {
 public:
  // Validates, picks the type (auto), takes the snapshot or cuts the log, and
  // returns the running job. Errors here change nothing: NotFound (volume),
  // InvalidArgument (retention, rate, threads, reads), NotFound naming what is
  // missing for diff/incr ("no full backup of 'vol' in lineage 5 to
  // differentiate from; take a full backup first"; or the base's snapshot is
  // gone from the pool), Busy while another job of this process backs up the
  // volume (one at a time, see ReserveBackupSequence). kLog runs a
  // LogBackupJob (snapshot/log_backup.h: its own errors — NotFound when there
  // is nothing to ship, Corruption for a gap). PermissionDenied, with the
  // fence's reason, for a volume under a write fence (being restored:
  // restore/restore_apply.h). auto falls back to full when the
  // recent full's snapshot is gone. The snapshot is usable at once; it is
  // committed by the job's last step (a crash before that loses it with the
  // job, which has put no set yet). Start commits nothing: a commit holds
  // the pool's thread.
  static Result<std::unique_ptr<BackupJob>> Start(Pool& pool, WormStore& store,
                                                  std::string_view volume,
                                                  const BackupOptions& options);
  // Destroying a running job cancels it and waits (driving Pool::Poll) until
  // its reads are done and its snapshot deleted: call on the pool's thread.
  ~BackupJob();

  // A bounded slice of work (kBackupStepBudgetNs); true once the job has
  // finished (then result()).
  // The step that finishes it records the task in the volume's history
  // (snapshot/backup_history.h: done, failed or cancelled; committed).
  // Never waits for I/O or the workers; the caller also drives Pool::Poll.
  // The step that finishes the job commits the pool (the set's snapshot is
  // durable from then on), which waits for the device, then deletes the
  // backup snapshots the set supersedes with Pool::Release::kInBackground:
  // gone at once, their blocks freed by Poll in slices, the deletion durable
  // with the next commit (a crash before it brings them back; the next job
  // deletes them again).
  bool Step();
  // Step and Poll until finished; calls `progress` about every 100 ms (return
  // false to cancel).
  Result<BackupSet> Run(const std::function<bool(const BackupProgress&)>& progress = {});
  // The set once kDone, else the error (Cancelled after Cancel()).
  const Result<BackupSet>& result() const;

  BackupProgress progress() const;
  // Physical backups: changes the read-rate cap (10^6 bytes/s; 0: none) from
  // the next read on, for a controller that paces a backup by the workload's
  // latency (the comparator's full-adaptive). Pool's thread. No effect on
  // snapshot and log backups.
  void SetRate(double mb_per_s);
  // Asks the job to stop (any thread). It then fails with Cancelled at a later
  // Step, unless its manifest is already being put (then it finishes).
  void Cancel();

 private:
  struct Impl;
  explicit BackupJob(std::unique_ptr<Impl> impl);
  explicit BackupJob(std::unique_ptr<LogBackupJob> log);
  // For the task history the job records when it ends (Step).
  void Remember(Pool& pool, WormStore& store, const std::string& volume,
                const BackupOptions& options);

  std::unique_ptr<Impl> impl_;        // data backups
  std::unique_ptr<LogBackupJob> log_;  // log backups
  Pool* pool_ = nullptr;
  WormStore* store_ = nullptr;
  std::string volume_;
  std::string trigger_;
  std::string method_;
  int64_t started_unix_ns_ = 0;
  bool recorded_ = false;
};

// Storage used in the store by one volume's sets, per method, against the free
// quota (the seed's billing rule: 50% of the volume size for physical
// backups).
struct StorageReport {
  std::string volume;
  uint64_t volume_size_bytes = 0;
  uint64_t snapshot_bytes = 0;  // stored bytes of chunks first stored by snapshot sets
  uint64_t physical_bytes = 0;  // ... by full/diff/incr sets
  uint64_t log_bytes = 0;       // ... by log segments
  uint64_t sets = 0;
  uint64_t free_quota_bytes = 0;  // volume_size / 2
  uint64_t billable_bytes = 0;    // physical + log beyond the free quota
};
// One report per volume with sets, by volume name; empty when there are none.
// A chunk counts once, for the set that stored it first.
Result<std::vector<StorageReport>> ReportStorage(WormStore& store, std::string_view volume = {});

// Extends a set's retain-until, that of its chunks, and — for a diff or incr —
// that of the sets it depends on (down to its full) and their chunks, so the
// set stays restorable until then; sets that depend on it are left alone.
// Never shortens: PermissionDenied when `until` is earlier than now or than
// the set's retain-until. Objects retained longer already are left as they are.
Status ExtendBackupSet(WormStore& store, std::string_view id, int64_t until_unix_ns);

}  // namespace snapdisk
