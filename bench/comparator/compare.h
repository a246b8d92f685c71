// The comparator: what each backup method costs a workload, how fast each
// restore brings the disk back, and how much data each log frequency can
// lose — measured on this machine, side by side, in one run. `snapdisk
// compare` is a thin shell over RunComparison; a harness can call it too.
//
// Backups (for each scenario method, on a fresh pool and store each, with the
// same data, profile and seed): a volume of the scenario's profile and
// nominal size gets written[0] bytes of data (compressible about 2:1, never
// zeros), the method's preparation (unmeasured: the base backups a diff,
// incr, log or following snapshot backup needs, see compare.cc), then three
// phases of the open-loop foreground workload (open_loop_workload.h):
//   before  seconds_before alone;
//   during  from BackupJob::Start (which takes the backup's snapshot) until
//           the job is done;
//   after   seconds_after more.
// Per phase: IOPS (completions per second) and p50/p99/p99.9 latency from
// the intended start, from merged per-second histograms. Impact = during
// against before. Physical backups read through the volume's QoS (they
// share its IOPS and throughput with the workload, as on ESSD); snapshot
// backups read the pool directly, outside it, with their workers at the
// lowest CPU priority (ESSD's backend copies on other hardware): the report says
// so, and the figures show what it costs.
// full-adaptive paces a physical full with AdaptiveRateController, every
// 250 ms, on the foreground's p99 of the last interval, between the rate
// that reads the data in 60 s and the throughput the profile leaves beside
// the workload.
// With workload.fio the foreground is the user's fio job instead
// (fio_workload.h): the same data and preparation on a pool file served by
// a child `snapdisk serve`, fio against the volume over NBD, the backup
// forwarded to the server; phases by the backup's manifest times against
// fio's per-interval histograms (100 ms). The restore sweep keeps the
// built-in workload's reads.
//
// Restores (for each size in `written`, on one fresh pool and store per
// size): the data is written to a source volume and backed up twice, a
// snapshot set and a physical full; then
//   snapshot -> new:      instant restore (restore/lazy_restore.h): usable
//                         when the volume served its first read; complete
//                         when hydrated; reads of the foreground's rate run
//                         against it while it hydrates and for seconds_after
//                         after (p99 of each);
//   physical -> new:      copy restore (restore_apply.h): usable = complete;
//   snapshot -> existing: the source volume rolled back to the backup's
//                         local snapshot (O(1), what a cloud disk does);
//   physical -> existing: copy restore onto the source volume.
//
// RPO (for each log frequency): SimulatePolicy (policy_simulation.h) for
// rpo_hours of simulated time with rpo_failures disk failures; snapshot
// backups with 5m/30m logs, physical backups with logs taken with the data
// backups ("data"); losses measured against an oracle of acknowledged
// writes. Deterministic for a seed.
//
// Claims: the seed's statements, each marked holds / does not hold with the
// measured evidence (see MakeClaims in compare.cc).
//
// Where: the backup experiments' pools are sparse MemoryDevices (so the
// workload's latency is the profile's and the engine's, not the host file
// system's fsync): memory about 3x written[0]. The restore sweep's pools are
// sparse files opened with O_DIRECT in `scratch_dir`, about 4x the size
// being restored at once. Stores are directories there. Each experiment
// removes what it made when it ends.
// Time: roughly methods x (seconds_before + backup + seconds_after), plus
// the restores of sum(written) a few times over, plus the RPO simulations.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench/comparator/scenario.h"
#include "disk/essd_profile.h"
#include "disk/status.h"

namespace snapdisk {

// Latency and rate of the foreground over one phase.
struct PhaseFigures {
  double seconds = 0;
  uint64_t requests = 0;  // completed in the phase
  double iops = 0;        // requests / seconds
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  double max_us = 0;
};

// One second of the foreground in a backup experiment.
struct TimelinePoint {
  int second = 0;      // since the workload started
  const char* phase = "before";  // "before", "during", "after"
  uint64_t completed = 0;        // requests completed in this second
  double p50_us = 0;             // of requests due in this second
  double p99_us = 0;
  double p999_us = 0;
};

struct BackupRun {
  CompareMethod method = CompareMethod::kSnapshot;
  std::string set_id;  // empty when nothing was shipped
  bool nothing_to_ship = false;  // a log backup after a workload that wrote nothing
  bool through_qos = false;  // read through the volume's QoS budget
  double seconds = 0;        // BackupJob::Start until done
  double start_seconds = 0;  // BackupJob::Start alone (its snapshot and commit hold the pool's thread)
  double max_step_seconds = 0;  // the longest BackupJob::Step (it holds the pool's thread too)
  double max_loop_gap_seconds = 0;  // the workload driver's longest busy gap during the backup
  uint64_t bytes_to_copy = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_stored = 0;
  double read_mb_per_s = 0;  // bytes_read / seconds, 10^6 bytes/s
  PhaseFigures baseline, during, after;
  double p99_impact_pct = 0;   // during.p99 against baseline.p99
  double iops_impact_pct = 0;  // during.iops against baseline.iops (drop: negative)
  double backup_start_s = 0;   // on the timeline
  double backup_end_s = 0;
  std::vector<TimelinePoint> timeline;
  uint64_t errors = 0;  // foreground requests that failed
  // Throttled and adaptive fulls: the cap; adaptive: the p99 target and the
  // throughput the profile leaves beside the workload.
  double rate_cap_mb_per_s = 0;
  double p99_target_us = 0;
  double headroom_mb_per_s = 0;
  // workload.fio: fio's own output of the experiment (its summary over the
  // whole run, all phases together); WriteReport keeps it as fio-METHOD.txt.
  std::string fio_output;
};

struct RestoreRun {
  std::string method;  // "snapshot" | "physical"
  std::string target;  // "new" | "existing"
  std::string how;     // "instant", "copy", "rollback"
  uint64_t written_bytes = 0;
  double usable_seconds = 0;
  double complete_seconds = 0;
  uint64_t read_bytes = 0;  // from the store
  // Instant restores: p99 of foreground reads while hydrating, and after.
  double hydrating_read_p99_us = 0;
  double after_read_p99_us = 0;
};

// A least-squares line y = intercept + slope * x over the restore sweep.
struct LinearFit {
  double slope = 0;  // seconds per GiB
  double intercept = 0;
  double r2 = 0;
};

struct RpoRun {
  LogFrequencyChoice log_frequency = LogFrequencyChoice::k5m;
  std::string policy;  // e.g. "snapshot backups mon,thu 02:00-03:00, logs every 5 minutes"
  double interval_seconds = 0;  // the log interval (data: the longest gap between data backups)
  uint32_t failures = 0;
  double max_loss_seconds = 0;
  double mean_loss_seconds = 0;
  uint64_t max_loss_bytes = 0;
  std::vector<double> loss_seconds;
  double simulated_hours = 0;
  double real_seconds = 0;
};

struct Claim {
  std::string claim;
  bool holds = false;
  std::string evidence;
};

struct ComparisonReport {
  Scenario scenario;
  EssdProfile profile;
  std::vector<BackupRun> backups;
  std::vector<RestoreRun> restores;
  LinearFit physical_restore_fit;  // physical -> new, complete seconds against GiB
  std::vector<RpoRun> rpo;
  std::vector<Claim> claims;
  std::vector<std::string> assumptions;  // what the simulation assumes rather than measures
  double real_seconds = 0;
  int64_t started_unix_ns = 0;
};

struct CompareOptions {
  // Scratch pools and stores go here (made if missing; what the run made is
  // removed at the end).
  std::string scratch_dir;
  // Called often (about every 10 ms while a phase runs): what runs now, the
  // fraction of the run done (by planned time) and the seconds left at the
  // rate so far. Return false to cancel (Cancelled).
  std::function<bool(const std::string& stage, double fraction, double eta_s)> progress;
  // A scenario with workload.fio: the `snapdisk` binary that serves the
  // experiment's pool (the CLI passes itself), and fio (searched in PATH).
  std::string snapdisk_binary;
  std::string fio_binary = "fio";
};

// Runs the scenario. InvalidArgument for a scenario ParseScenario would
// refuse; Cancelled; the pool's and the store's errors in context (a failed
// backup or restore stops the run: a comparison with a hole is no comparison).
Result<ComparisonReport> RunComparison(const Scenario& scenario, const CompareOptions& options);

}  // namespace snapdisk
