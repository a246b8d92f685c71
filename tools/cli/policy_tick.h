// One tick of the backup policies of a pool, as steps (`snapdisk policy
// run`, and `snapdisk serve`, which ticks by itself).
//
// Plan reads every volume's policy and its store's sets (through a read-only
// view: planning locks nothing), and decides with
// PlanSchedule (snapshot/policy.h: what the Scheduler would do) which data
// and log backups are due; Step runs them one at a time, each a BackupJob
// stepped like `snapdisk backup` (so inside `snapdisk serve` NBD clients keep
// being served meanwhile), then the expiry pass of each store it used.
// (Scheduler::Tick itself runs its jobs to completion, which would hold the
// server's loop for the whole backup.) Backups it runs are recorded in the
// task history with trigger "policy".
//
// Thread safety: the pool's thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/pool.h"
#include "engine/worm_store.h"
#include "snapshot/backup.h"
#include "snapshot/policy.h"
#include "tools/cli/command_context.h"
#include "tools/cli/store_util.h"

namespace snapdisk::cli {

// What is due for `volume` now (the store's clock), from the store's sets as
// the Scheduler's facts for a scheduler that starts watching now.
Result<ScheduleDecision> PlanVolume(const VolumeInfo& volume, const BackupPolicy& policy,
                                    WormStore& store);

// A backup the tick will run.
struct PlannedJob {
  std::string volume;
  BackupMethod method = BackupMethod::kFull;
  int64_t due_unix_ns = 0;
  uint32_t retain_days = 7;
  std::string store_dir;  // canonical; opened for writing when the job starts
};

// What the tick did for one job (or one problem).
struct TickRun {
  std::string volume;
  BackupMethod method = BackupMethod::kAuto;  // kAuto: a problem, no backup
  int64_t due_unix_ns = 0;
  int64_t ran_unix_ns = 0;
  std::optional<BackupSet> set;
  Status status;
};

// The tick's state, shared by the stepped job's functions.
class PolicyTick {
 public:
  explicit PolicyTick(Pool& pool) : pool_(pool) {}

  // Plans every volume with a policy (whose store is `only_store_dir`, when
  // given); problems become runs.
  void Plan(const std::string& only_store_dir);

  bool Step();
  void Cancel() {
    cancelled_ = true;
    if (job_) job_->Cancel();
  }
  StepProgress Progress() const {
    if (!job_) return {"policy run", done_jobs_, queue_.size(), ProgressUnit::kBlocks};
    const BackupProgress p = job_->progress();
    return {"backup " + p.id + " of " + p.volume, p.done_bytes, p.total_bytes,
            ProgressUnit::kBytes};
  }
  // Reports what ran through `ctx` (a table, or --json) and returns the
  // exit code: the first failed run's, 130 when cancelled.
  int Finish(CommandContext& ctx) const;
  // Nothing to run (after Plan): no backup due and no problem to report.
  bool idle() const { return queue_.empty() && runs_.empty(); }
  // When something is due next (after Plan), if anything is.
  std::optional<int64_t> next_due_unix_ns() const { return next_due_unix_ns_; }
  // One line per run, for a server's log: "volume 'db': policy snapshot
  // backup S7 (due ...): done" or the error.
  std::vector<std::string> Lines() const;
  // A run failed (or a policy could not be planned).
  bool any_failed() const {
    for (const TickRun& r : runs_) {
      if (!r.status.ok()) return true;
    }
    return false;
  }

 private:
  void Problem(const std::string& volume, BackupMethod method, int64_t due, Status status) {
    TickRun run;
    run.volume = volume;
    run.method = method;
    run.due_unix_ns = due;
    run.ran_unix_ns = due;
    run.status = std::move(status);
    runs_.push_back(std::move(run));
  }
  // The store to back up into (locked for writing while the tick holds it).
  Result<std::shared_ptr<WormStore>> Store(const std::string& dir) {
    if (auto it = stores_.find(dir); it != stores_.end()) return it->second;
    SNAPDISK_ASSIGN_OR_RETURN(std::shared_ptr<WormStore> store, OpenStore(dir));
    stores_[dir] = store;
    return store;
  }
  // A read-only view to plan from: planning takes no lock, so a check that
  // finds nothing due leaves the store free for everyone.
  Result<std::shared_ptr<WormStore>> View(const std::string& dir);
  // An incremental that could not run for want of a base (its snapshot is
  // gone): a full keeps the volume protected, as the Scheduler does.
  void FallBackToFull(const PlannedJob& planned, const Status& why);

  Pool& pool_;
  std::map<std::string, std::shared_ptr<WormStore>> stores_;  // by canonical dir
  std::map<std::string, std::shared_ptr<WormStore>> views_;   // by canonical dir
  std::set<std::string> policy_dirs_;  // every policy's store: expired after a run
  std::vector<PlannedJob> queue_;
  size_t next_ = 0;
  uint64_t done_jobs_ = 0;
  std::unique_ptr<BackupJob> job_;  // the running one (queue_[next_ - 1])
  std::vector<TickRun> runs_;
  std::optional<int64_t> next_due_unix_ns_;
  uint64_t expired_objects_ = 0;
  uint64_t expired_bytes_ = 0;
  bool cancelled_ = false;
  bool finished_ = false;
};


// The policies of a served pool, carried out by the server itself (`snapdisk
// serve`): every `check_interval_ns` a PolicyTick is planned; when something
// is due it runs as a server job between NBD requests (listed by `backup
// jobs` as "policy (server)", cancelled by `backup cancel`), and each run is
// logged as a line. Nothing due: the tick is dropped at once (the stores it
// opened to plan are let go).
class ServerPolicies {
 public:
  // `pool` must outlive this object. `log` gets one line per run.
  ServerPolicies(Pool& pool, int64_t check_interval_ns,
                 std::function<void(const std::string&)> log);
  // Cancels a running tick and steps it to its end.
  ~ServerPolicies();
  ServerPolicies(const ServerPolicies&) = delete;
  ServerPolicies& operator=(const ServerPolicies&) = delete;

  // Plans when the interval has passed, or steps the running tick. Between
  // checks: a clock read. A check reads the policies (in memory) and plans
  // only when the time the last plan gave has come or a policy, volume or
  // lineage changed: planning opens each policy's store read-only (no lock;
  // its audit log replayed) and reads its manifests of the volume, on the
  // calling (the server's) thread; only a tick with something due opens its
  // stores for writing. After a tick with a failure the next
  // check waits kRetryAfterFailureNs at least, as the Scheduler retries.
  void Step();
  bool running() const { return tick_ != nullptr; }
  // Monotonic ns of the next planning (for the server's sleep).
  int64_t next_check_ns() const { return next_check_ns_; }

 private:
  void End();
  // The volumes with a policy, their ids, lineages and policies (in memory:
  // attributes), to notice what could change what is due.
  std::string PoliciesFingerprint() const;

  static constexpr int64_t kRetryAfterFailureNs = int64_t{600} * 1'000'000'000;
  Pool& pool_;
  const int64_t check_interval_ns_;
  const std::function<void(const std::string&)> log_;
  std::unique_ptr<PolicyTick> tick_;
  uint64_t job_number_ = 0;  // in JobRegistry while a tick runs
  bool cancel_asked_ = false;
  int64_t next_check_ns_ = 0;
  // What the last plan with nothing due saw, and when it said something
  // would be (0: plan at the next check).
  std::string planned_fingerprint_;
  int64_t next_due_unix_ns_ = 0;
};

}  // namespace snapdisk::cli
