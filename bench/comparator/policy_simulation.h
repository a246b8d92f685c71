// Policy simulation: a backup policy carried out for days of simulated time
// in seconds of real time, against a workload of writes, with whole-disk
// failures whose data loss is measured by restoring and comparing with an
// oracle. `snapdisk policy simulate` prints it; the comparator's RPO
// experiment is built on it.
//
// The world: one volume in a pool on a sparse MemoryDevice behind a
// FaultDevice, a MemoryWormStore, and a Scheduler (snapshot/policy.h) — the
// same code `snapdisk serve` runs — all on one simulated wall clock that
// starts at `start_unix_ns`. Nothing of the caller's pools or stores is read
// or changed.
//
// Events run in time order: the workload's writes (Poisson arrivals, random
// 4 KiB-aligned offsets in the working set, content from the seed), the
// scheduler's ticks at the moments it says something is due (a scheduler
// that wakes on time: serve checks every 30 s of real time, so its runs may
// be later by that), and the failures. A failure at T: the FaultDevice fails
// whole (the pool, its write log and every unshipped record are gone); a
// replacement disk gets the newest point the store holds (LatestTarget, a
// copy restore), which is compared with the oracle of acknowledged writes:
//   loss_ns    = T - the time of the first acknowledged write missing from
//                the restore (0 when nothing is missing),
//   loss_bytes = the bytes of the missing writes.
// A restore that matches no prefix of the acknowledged writes is an error of
// the run (Corruption naming the offset), never a figure. The volume then
// lives on the replacement: the policy is set on it and a data backup of the
// policy's method is taken at once (what a database service does after a
// restore: the restored volume starts a new lineage, which needs a base
// before its log backups can restore anything), and the run goes on.
// Failures are drawn uniformly from the time after the first data backup.
//
// Determinism: the same options (seed included) give the same runs, writes,
// failure times and losses; only real_seconds differs.
//
// Cost: memory holds the working set twice (the oracle) plus what the pool
// and the store hold (every stored object and its audit entry, until expiry
// removes the object). Time: about one backup job per log interval.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "disk/status.h"
#include "snapshot/policy.h"

namespace snapdisk {

struct PolicySimulationOptions {
  // The policy to carry out (store_dir is ignored: the simulation's store is
  // in memory). Must be valid (ValidatePolicy).
  BackupPolicy policy;
  std::string volume = "db";
  uint64_t volume_size_bytes = uint64_t{64} << 20;
  // Simulated start (ns since the Unix epoch). Default: Monday 2026-01-05
  // 00:00 UTC.
  int64_t start_unix_ns = 1'767'571'200'000'000'000;
  int64_t duration_ns = int64_t{60} * 24 * 3600 * 1'000'000'000;
  // The workload: writes per simulated hour (Poisson), each 4 KiB to
  // max_write_bytes (multiples of 4 KiB), at offsets in the first
  // working_set_bytes of the volume (<= volume_size_bytes). 0 writes: idle.
  double writes_per_hour = 120;
  uint64_t max_write_bytes = uint64_t{64} << 10;
  uint64_t working_set_bytes = uint64_t{16} << 20;
  // Memory the simulated disk and store may hold together (both live in
  // this process's memory); beyond it the run stops with NoSpace saying so.
  uint64_t memory_limit_bytes = uint64_t{4} << 30;
  // Whole-disk failures to inject (each a restore and a comparison).
  uint32_t failures = 0;
  uint64_t seed = 1;
  // Keep every scheduler run in the report (runs); else only the counts.
  bool keep_runs = false;
  // Called about every simulated hour with the simulated time done and the
  // total; false cancels (Cancelled).
  std::function<bool(int64_t done_ns, int64_t total_ns)> progress;
};

struct SimulatedFailure {
  int64_t at_unix_ns = 0;
  // The restore: the newest LSN the store allowed (0 and empty when the store
  // held no backup of the volume yet), and the sets applied.
  uint64_t restored_lsn = 0;
  std::vector<std::string> applied;
  int64_t loss_ns = 0;
  uint64_t loss_bytes = 0;
  uint64_t lost_writes = 0;
  // The newest shipped point before the failure, as the store saw it: the
  // end of the last log segment or data backup (0 when none).
  int64_t last_shipped_unix_ns = 0;
  double restore_real_seconds = 0;  // wall time of the copy restore
};

struct PolicySimulationReport {
  int64_t start_unix_ns = 0;
  int64_t end_unix_ns = 0;
  // Scheduler runs by kind (a run that failed counts in failed_runs only).
  uint64_t snapshot_backups = 0;
  uint64_t full_backups = 0;
  uint64_t incr_backups = 0;
  uint64_t log_backups = 0;
  uint64_t failed_runs = 0;
  // Runs that started later than due by more than a minute (a missed window
  // caught up), and the latest of them.
  uint64_t late_runs = 0;
  int64_t max_late_ns = 0;
  // The longest an acknowledged write waited until a backup (log or data)
  // held it: the RPO bound the schedule gives, measured. (A log cut with
  // nothing new to ship is no run, so gaps between log runs say less.)
  int64_t max_unshipped_ns = 0;
  // The longest time between two data backups.
  int64_t max_data_gap_ns = 0;
  uint64_t expired_objects = 0;
  // The store at the end: objects and bytes held.
  uint64_t store_objects = 0;
  uint64_t store_bytes = 0;
  uint64_t writes = 0;
  uint64_t written_bytes = 0;
  std::vector<SimulatedFailure> failures;
  std::vector<ScheduledRun> runs;  // with keep_runs
  // The first error of a run (runs go on after a failed backup; this keeps
  // what went wrong). OK when every run succeeded.
  Status first_run_error;
  double real_seconds = 0;
};

// Runs the simulation. InvalidArgument naming the option for bad options (an
// invalid policy, a working set larger than the volume, a duration <= 0);
// Cancelled when `progress` said so; Corruption when a restore after a
// failure matched no prefix of the acknowledged writes; NoSpace when the
// simulated disk and store outgrow memory_limit_bytes; other errors of the
// pool or store when the simulation itself could not go on.
Result<PolicySimulationReport> SimulatePolicy(const PolicySimulationOptions& options);

}  // namespace snapdisk
