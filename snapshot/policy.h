// Backup policies and the scheduler that carries them out.
//
// A policy belongs to one volume and is kept in the pool with it (a volume
// attribute, "backup-policy"): method, incremental on/off, retention, the
// weekly cycle, the start window, the log backup frequency and the log
// retention. While a policy exists the volume's write log is required (it
// cannot be turned off, and nothing is dropped unshipped).
//
// What the scheduler does for a volume with a policy, at each Tick(now):
//  - Data backup: on a cycle day, once per day, at the first tick inside the
//    start window (or later if the window was missed, e.g. the process was
//    down: a backup is never skipped silently — it runs at the next tick and
//    its run says when it was due). Method snapshot: a snapshot backup.
//    Method physical: a full backup on the first cycle day of each week (or
//    when no full of this lineage exists), else an incremental when
//    `incremental` is on, else a full. See PlanSchedule.
//  - Log backup: every 5 or 30 minutes of wall time, or with each data
//    backup (kWithData), a segment of the writes since the last one.
//  - Expiry: the store's expiry pass.
// Times are UTC. The clock is the store's (WormStore::NowUnixNs), so a test
// runs 60 simulated days in seconds with a simulated store clock.
//
// Thread safety: as the Pool (one thread at a time).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"
#include "engine/pool.h"
#include "engine/worm_store.h"
#include "snapshot/backup.h"

namespace snapdisk {

enum class PolicyMethod : uint8_t { kSnapshot, kPhysical };
enum class LogFrequency : uint8_t { kEvery5Min, kEvery30Min, kWithData };
// "snapshot"/"physical"; "5m"/"30m"/"data".
const char* PolicyMethodName(PolicyMethod method);
const char* LogFrequencyName(LogFrequency frequency);
Result<PolicyMethod> ParsePolicyMethod(std::string_view name);
Result<LogFrequency> ParseLogFrequency(std::string_view name);

struct BackupPolicy {
  std::string store_dir;  // where the backups go
  PolicyMethod method = PolicyMethod::kPhysical;
  bool incremental = false;
  uint32_t retention_days = 7;  // 7-730
  // Days of the week, bit 0 = Monday ... bit 6 = Sunday; at least two.
  uint8_t cycle_days = 0b0001001;  // mon,thu
  // Start window, minutes after 00:00 UTC: [window_start_min, window_end_min),
  // 1 to 24 hours long; end may wrap past midnight (23:00-01:00).
  uint32_t window_start_min = 2 * 60;
  uint32_t window_end_min = 3 * 60;
  // kWithData only with method physical (as in the product: snapshot backups
  // take 5 or 30 minute log backups).
  LogFrequency log_frequency = LogFrequency::kWithData;
  uint32_t log_retention_days = 7;  // 7 - retention_days
};

// InvalidArgument naming the field and its allowed range, e.g. "retention
// must be 7-730 days (got 5)", "cycle needs at least two days (got mon)".
// Also refused: an empty store_dir, incremental with method snapshot, log
// frequency "data" with method snapshot.
Status ValidatePolicy(const BackupPolicy& policy);
// "mon,thu" <-> bits (day names or full names, any case, in any order;
// FormatCycle lists Monday first); "02:00-03:00" <-> minutes ("00:00-24:00"
// is the whole day). ParseWindow checks the window's length too.
Result<uint8_t> ParseCycle(std::string_view text);
std::string FormatCycle(uint8_t cycle_days);
Status ParseWindow(std::string_view text, uint32_t* start_min, uint32_t* end_min);
std::string FormatWindow(uint32_t start_min, uint32_t end_min);
// ParseWindow for what a user types: also refuses a window that starts and
// ends at the same time ("02:00-02:00" is empty as written; the whole day is
// "00:00-24:00"). Stored policies are read with ParseWindow, which takes
// such a window as 24 hours.
Status ParseNewWindow(std::string_view text, uint32_t* start_min, uint32_t* end_min);

// JSON: {"version":1,"store_dir":"...","method":"physical","incremental":false,
// "retention_days":7,"cycle":"mon,thu","window":"02:00-03:00",
// "log_frequency":"data","log_retention_days":7}. Decode wants every field,
// refuses unknown ones (InvalidArgument naming the field) and validates;
// Unsupported for a newer version.
std::string EncodePolicy(const BackupPolicy& policy);
Result<BackupPolicy> DecodePolicy(std::string_view json);

// The volume attribute that holds a policy.
inline constexpr std::string_view kPolicyAttribute = "backup-policy";

// Stores the policy with the volume (validated first) and makes its log
// required (turning it on if it was off). Durable at the pool's next commit.
// RemovePolicy: NotFound when the volume has none; lets the log go.
Status SetPolicy(Pool& pool, std::string_view volume, const BackupPolicy& policy);
// nullopt when the volume has no policy.
Result<std::optional<BackupPolicy>> GetPolicy(Pool& pool, std::string_view volume);
Status RemovePolicy(Pool& pool, std::string_view volume);

// What the scheduler decides, as a pure function (the Scheduler feeds it
// what it knows from the store; tests and the CLI call it directly).
//
// Occurrences: every cycle day has one, starting at window_start_min on that
// day (a window that wraps past midnight belongs to the day it starts on). An
// occurrence is served by a data set of the policy's method (snapshot; or
// full/diff/incr) started at or after its start. A data backup is due when an
// occurrence that started by `now` is unserved: "due" is the earliest such
// occurrence (several missed ones are caught up by one backup, reported late),
// and the method is chosen for the latest one.
struct ScheduleFacts {
  // Start of the volume's newest data set of the policy's method; none: no
  // set, and occurrences count from the day of `watch_from_unix_ns` on.
  std::optional<int64_t> last_data_unix_ns;
  // Start of the newest full set of the volume's current lineage.
  std::optional<int64_t> last_full_unix_ns;
  // Start of the newest log segment (or log cut attempt); none: a cut is due
  // at once (from the boundary `watch_from_unix_ns` falls in).
  std::optional<int64_t> last_log_unix_ns;
  // When the scheduler first saw this policy.
  int64_t watch_from_unix_ns = 0;
  // After a failed data backup: not before this time.
  int64_t retry_data_at_unix_ns = 0;
};

struct ScheduleDecision {
  // A data backup to run now (kSnapshot, kFull or kIncr) and when it was due.
  std::optional<BackupMethod> data_method;
  int64_t data_due_unix_ns = 0;
  // A log cut to run now, and when it was due (the first unserved 5/30 minute
  // boundary; kWithData: with the data backup).
  bool log_due = false;
  int64_t log_due_unix_ns = 0;
  // `now` when something is due, else the next time something will be.
  int64_t next_due_unix_ns = 0;
};

// Physical method: a full when no full of the lineage was started in the ISO
// week (Monday 00:00 UTC on) of the occurrence — so on the first cycle day of
// each week, or the first that ran — else an incremental when `incremental`
// is on, else a full. The policy must be valid.
ScheduleDecision PlanSchedule(const BackupPolicy& policy, const ScheduleFacts& facts,
                              int64_t now_unix_ns);

// Calendar helpers (UTC): days since the epoch, and the weekday bit of a day
// (bit 0 = Monday, as in BackupPolicy::cycle_days).
int64_t UnixDay(int64_t unix_ns);
int WeekdayOfDay(int64_t unix_day);  // 0 = Monday ... 6 = Sunday

// One thing the scheduler did (for logs, the CLI and the 60-day test).
struct ScheduledRun {
  std::string volume;
  // kSnapshot, kFull, kIncr or kLog; kAuto for a problem that is no backup (a
  // policy naming another store or unreadable, the store's sets unreadable).
  BackupMethod method = BackupMethod::kSnapshot;
  int64_t due_unix_ns = 0;  // when it was due
  int64_t ran_unix_ns = 0;  // when it ran
  std::string set_id;       // empty if it failed
  Status status;
  // Of the set, when one was made.
  BackupType type = BackupType::kFull;
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;
  int64_t retain_until_unix_ns = 0;
};

struct SchedulerOptions {
  // The store's directory; policies naming another one are skipped with an
  // error in their run. Empty: every policy's backups go to the store given.
  std::string store_dir;
  // How often the store's expiry pass runs (default an hour).
  int64_t expire_interval_ns = int64_t{3600} * 1'000'000'000;
  // After a failed data backup, when to try again (default 10 minutes).
  int64_t retry_interval_ns = int64_t{600} * 1'000'000'000;
  uint32_t worker_threads = 2;  // per backup job
};

class Scheduler {
 public:
  // `store` is the store of every policy the scheduler runs (a policy naming
  // another directory is skipped with an error in its run). Both must outlive
  // the scheduler.
  Scheduler(Pool& pool, WormStore& store, SchedulerOptions options = {});
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Runs everything due at store.NowUnixNs(): data backups, log cuts, expiry.
  // Runs jobs to completion (BackupJob::Run) and commits the pool after them.
  // Returns what it ran (a failed backup is a run with its status, retried
  // after `retry_interval_ns`); an error only when the pool or the store
  // could not be read at all.
  Result<std::vector<ScheduledRun>> Tick();
  // The next time something is due (for sleeping until then); <= now when
  // something is due already.
  Result<int64_t> NextDueUnixNs();

  // The last expiry pass's outcome, and objects removed by expiry so far.
  const Status& expire_status() const { return expire_status_; }
  uint64_t expired_objects() const { return expired_objects_; }

 private:
  // Per volume: its sets as last read from the store (rebuilt at the first
  // tick, then refreshed from the store's listing before acting), when the
  // policy was first seen, retry times.
  struct VolumeState;
  VolumeState& StateFor(const VolumeInfo& volume, const std::string& policy_json, int64_t now_ns);
  // Brings `state.sets` up to the store's listing (reads new manifests only).
  Status Refresh(VolumeState& state);
  ScheduleFacts FactsOf(const VolumeState& state, const BackupPolicy& policy,
                        uint64_t lineage) const;
  ScheduledRun RunJob(VolumeState& state, const BackupPolicy& policy, BackupMethod method,
                      int64_t due_unix_ns);
  // Tick's work for one volume with a policy; `ran_job` is set when a job ran.
  void RunVolume(const VolumeInfo& volume, const BackupPolicy& policy, int64_t now_ns,
                 std::vector<ScheduledRun>* runs, bool* ran_job);
  bool StoreMatches(const BackupPolicy& policy) const;

  Pool& pool_;
  WormStore& store_;
  const SchedulerOptions options_;
  std::string canonical_store_dir_;  // options_.store_dir, canonical
  std::vector<std::unique_ptr<VolumeState>> volumes_;
  int64_t next_expire_unix_ns_ = 0;
  Status expire_status_;
  uint64_t expired_objects_ = 0;
};

}  // namespace snapdisk
