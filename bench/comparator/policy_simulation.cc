#include "bench/comparator/policy_simulation.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>

#include "disk/bytes.h"
#include "disk/check.h"
#include "disk/fault_device.h"
#include "disk/memory_device.h"
#include "engine/memory_worm_store.h"
#include "engine/pool.h"
#include "restore/restore_apply.h"
#include "restore/restore_plan.h"
#include "snapshot/backup.h"
#include "snapshot/backup_set.h"

namespace snapdisk {

namespace {

constexpr uint64_t kAlignBytes = 4096;
constexpr int64_t kNsPerSecond = 1'000'000'000;
constexpr int64_t kNsPerHour = 3600 * kNsPerSecond;
// Both the policy and the scheduler name the simulation's store so.
constexpr const char* kStoreName = "simulated-store";

// Content of write number `index`: a splitmix64 stream (cheap, and no two
// writes alike, so a restore that applied the wrong write is caught).
void FillWrite(uint64_t seed, uint64_t index, std::span<std::byte> out) {
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + index;
  for (size_t i = 0; i < out.size(); i += 8) {
    state += 0x9E3779B97F4A7C15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, std::min<size_t>(8, out.size() - i));
  }
}

std::string Joined(const std::vector<std::string>& ids) {
  std::string text;
  for (const std::string& id : ids) text += (text.empty() ? "" : "+") + id;
  return text.empty() ? "none" : text;
}

// One acknowledged write, as the oracle keeps it.
struct AckedWrite {
  int64_t unix_ns = 0;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  uint64_t index = 0;  // content (FillWrite)
  uint64_t lsn = 0;    // the volume's LSN once it was written
};

// The volume's disk: a pool on a sparse memory device behind a FaultDevice.
// Members go in reverse order (the pool uses the devices).
struct Disk {
  std::unique_ptr<MemoryDevice> memory;
  std::unique_ptr<FaultDevice> fault;
  std::unique_ptr<Pool> pool;

  Disk() = default;
  Disk(Disk&&) = default;
  Disk& operator=(Disk&& other) noexcept {
    Drop();
    memory = std::move(other.memory);
    fault = std::move(other.fault);
    pool = std::move(other.pool);
    return *this;
  }
  ~Disk() { Drop(); }
  void Drop() {
    pool.reset();
    fault.reset();
    memory.reset();
  }
};

class Simulation {
 public:
  explicit Simulation(const PolicySimulationOptions& options)
      : options_(options), rng_(options.seed), now_ns_(options.start_unix_ns) {
    policy_ = options.policy;
    policy_.store_dir = kStoreName;
    WormStoreConfig config;
    config.chunk_bytes = uint64_t{256} << 10;
    store_ = std::make_unique<MemoryWormStore>(config, options.start_unix_ns);
    oracle_base_.assign(options.working_set_bytes, std::byte{0});
  }

  Result<PolicySimulationReport> Run();

 private:
  void SetNow(int64_t unix_ns) {
    now_ns_.store(unix_ns);
    store_->SetNowUnixNs(unix_ns);
  }
  int64_t now() const { return now_ns_.load(); }
  Result<Disk> NewDisk();
  Status StartScheduler();
  Status Write();
  Status Tick();
  Status Fail();
  // A data backup of the policy's method, now (after a replacement).
  Status BackUpNow();
  void Record(const ScheduledRun& run);
  int64_t NextWriteGapNs();
  void DrawFailures(int64_t after_ns);
  // The working set as it should read after every write with lsn <= `lsn`.
  std::vector<std::byte> Expected(uint64_t lsn) const;
  // Folds the writes with lsn <= `lsn` into the base: the store holds them,
  // and a restore of the lineage never goes back before its newest point.
  // (A restore that did would not match, and fail the run.) `shipped_ns`:
  // when they were shipped, for max_unshipped_ns.
  void AdvanceOracle(uint64_t lsn, int64_t shipped_ns);
  // What a restore to `lsn` holds in the 4 KiB block at `offset` (which
  // acknowledged write's data, if any) and what it should: for the error.
  std::string Explain(uint64_t offset, const std::vector<std::byte>& restored, uint64_t lsn) const;

  const PolicySimulationOptions& options_;
  BackupPolicy policy_;
  std::mt19937_64 rng_;
  std::atomic<int64_t> now_ns_;
  std::unique_ptr<MemoryWormStore> store_;
  Disk disk_;
  std::unique_ptr<Scheduler> scheduler_;
  // The oracle: the working set as of the newest point the store holds of the
  // volume's current lineage (zeros, or what the last restore returned, at
  // first) and the acknowledged writes after it.
  std::vector<std::byte> oracle_base_;
  std::vector<AckedWrite> writes_;
  uint64_t write_count_ = 0;
  std::vector<int64_t> failure_times_;  // drawn at the first data backup, sorted
  size_t next_failure_ = 0;
  bool failures_drawn_ = false;
  std::optional<int64_t> last_data_ns_;
  int64_t last_shipped_ns_ = 0;
  PolicySimulationReport report_;
};

Result<Disk> Simulation::NewDisk() {
  Disk disk;
  // Sparse: costs only what is written. Room for the volume, its snapshots
  // and the write log several times over.
  const uint64_t device_bytes = 4 * options_.volume_size_bytes + (uint64_t{1} << 30);
  auto memory = MemoryDevice::Create(device_bytes);
  if (!memory.ok()) return memory.status();
  disk.memory = std::move(memory).value();
  // Whole-disk failure only: no power-loss model (it would hold the old
  // contents of every write until a flush).
  FaultDeviceOptions fault_options;
  fault_options.model_power_loss = false;
  disk.fault = std::make_unique<FaultDevice>(*disk.memory, fault_options);
  PoolOptions pool_options;
  pool_options.wall_clock_ns = [this] { return now_ns_.load(); };
  pool_options.cache_bytes = uint64_t{32} << 20;
  // Unshipped writes are kept until a log backup ships them; the policy's
  // interval bounds them, not this.
  pool_options.log_unshipped_limit_bytes = uint64_t{1} << 30;
  auto pool = Pool::Create(*disk.fault, pool_options);
  if (!pool.ok()) return pool.status();
  disk.pool = std::move(pool).value();
  return disk;
}

Status Simulation::StartScheduler() {
  SNAPDISK_RETURN_IF_ERROR(SetPolicy(*disk_.pool, options_.volume, policy_));
  SNAPDISK_RETURN_IF_ERROR(disk_.pool->Commit());
  SchedulerOptions scheduler_options;
  scheduler_options.store_dir = kStoreName;
  scheduler_ = std::make_unique<Scheduler>(*disk_.pool, *store_, scheduler_options);
  return Status::OK();
}

int64_t Simulation::NextWriteGapNs() {
  std::exponential_distribution<double> gap_hours(options_.writes_per_hour);
  return std::max<int64_t>(1, static_cast<int64_t>(gap_hours(rng_) * kNsPerHour));
}

Status Simulation::Write() {
  const uint64_t max_units = std::max<uint64_t>(1, options_.max_write_bytes / kAlignBytes);
  const uint64_t length = kAlignBytes * (1 + rng_() % max_units);
  const uint64_t slots = (options_.working_set_bytes - length) / kAlignBytes + 1;
  const uint64_t offset = (rng_() % slots) * kAlignBytes;
  std::vector<std::byte> data(length);
  const uint64_t index = write_count_++;
  FillWrite(options_.seed, index, data);
  SNAPDISK_ASSIGN_OR_RETURN(Volume * volume, disk_.pool->OpenVolume(options_.volume));
  SNAPDISK_RETURN_IF_ERROR(volume->Write(offset, data));
  SNAPDISK_ASSIGN_OR_RETURN(VolumeInfo info, disk_.pool->GetVolume(options_.volume));
  writes_.push_back({now(), offset, length, index, info.lsn});
  ++report_.writes;
  report_.written_bytes += length;
  return Status::OK();
}

void Simulation::Record(const ScheduledRun& run) {
  if (options_.keep_runs) report_.runs.push_back(run);
  if (!run.status.ok()) {
    ++report_.failed_runs;
    if (report_.first_run_error.ok()) {
      report_.first_run_error = run.status.WithContext(std::string(BackupMethodName(run.method)) +
                                                       " backup of '" + run.volume + "'");
    }
    return;
  }
  const int64_t late_ns = run.ran_unix_ns - run.due_unix_ns;
  if (late_ns > 60 * kNsPerSecond) {
    ++report_.late_runs;
    report_.max_late_ns = std::max(report_.max_late_ns, late_ns);
  }
  if (run.method != BackupMethod::kLog) {
    if (last_data_ns_) {
      report_.max_data_gap_ns = std::max(report_.max_data_gap_ns, run.ran_unix_ns - *last_data_ns_);
    }
    last_data_ns_ = run.ran_unix_ns;
  }
  last_shipped_ns_ = run.ran_unix_ns;
  AdvanceOracle(run.last_lsn, run.ran_unix_ns);
  switch (run.method) {
    case BackupMethod::kSnapshot:
      ++report_.snapshot_backups;
      break;
    case BackupMethod::kFull:
      ++report_.full_backups;
      break;
    case BackupMethod::kIncr:
      ++report_.incr_backups;
      break;
    case BackupMethod::kLog:
      ++report_.log_backups;
      break;
    default:
      break;
  }
  if (run.method != BackupMethod::kLog && !failures_drawn_) DrawFailures(run.ran_unix_ns);
}

void Simulation::DrawFailures(int64_t after_ns) {
  failures_drawn_ = true;
  const int64_t end_ns = options_.start_unix_ns + options_.duration_ns;
  if (after_ns + 1 >= end_ns) return;
  std::uniform_int_distribution<int64_t> at(after_ns + 1, end_ns - 1);
  for (uint32_t i = 0; i < options_.failures; ++i) failure_times_.push_back(at(rng_));
  std::sort(failure_times_.begin(), failure_times_.end());
}

Status Simulation::Tick() {
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<ScheduledRun> runs, scheduler_->Tick());
  for (const ScheduledRun& run : runs) Record(run);
  return Status::OK();
}

Status Simulation::BackUpNow() {
  BackupOptions backup;
  backup.method =
      policy_.method == PolicyMethod::kSnapshot ? BackupMethod::kSnapshot : BackupMethod::kFull;
  backup.retain_days = policy_.retention_days;
  backup.worker_threads = 2;
  backup.trigger = "policy";
  SNAPDISK_ASSIGN_OR_RETURN(std::unique_ptr<BackupJob> job,
                            BackupJob::Start(*disk_.pool, *store_, options_.volume, backup));
  Result<BackupSet> set = job->Run();
  ScheduledRun run;
  run.volume = options_.volume;
  run.method = backup.method;
  run.due_unix_ns = run.ran_unix_ns = now();
  run.status = set.status();
  if (set.ok()) {
    run.set_id = set->id;
    run.type = set->type;
    run.first_lsn = set->first_lsn;
    run.last_lsn = set->last_lsn;
    run.retain_until_unix_ns = set->retain_until_unix_ns;
  }
  Record(run);
  return disk_.pool->Commit();
}

std::vector<std::byte> Simulation::Expected(uint64_t lsn) const {
  std::vector<std::byte> image = oracle_base_;
  for (const AckedWrite& w : writes_) {
    if (w.lsn > lsn) break;  // LSNs grow with the writes
    FillWrite(options_.seed, w.index,
              std::span<std::byte>(image).subspan(w.offset_bytes, w.length_bytes));
  }
  return image;
}

void Simulation::AdvanceOracle(uint64_t lsn, int64_t shipped_ns) {
  if (!writes_.empty() && writes_.front().lsn <= lsn) {
    report_.max_unshipped_ns =
        std::max(report_.max_unshipped_ns, shipped_ns - writes_.front().unix_ns);
  }
  size_t n = 0;
  for (; n < writes_.size() && writes_[n].lsn <= lsn; ++n) {
    const AckedWrite& w = writes_[n];
    FillWrite(options_.seed, w.index,
              std::span<std::byte>(oracle_base_).subspan(w.offset_bytes, w.length_bytes));
  }
  writes_.erase(writes_.begin(), writes_.begin() + static_cast<ptrdiff_t>(n));
}

std::string Simulation::Explain(uint64_t offset, const std::vector<std::byte>& restored,
                                uint64_t lsn) const {
  offset -= offset % kAlignBytes;
  const std::span<const std::byte> block(restored.data() + offset, kAlignBytes);
  std::string holds = "data of no acknowledged write", should = "the newest shipped state";
  if (std::equal(block.begin(), block.end(), oracle_base_.begin() + offset)) {
    holds = "the newest shipped state";
  }
  std::vector<std::byte> data;
  for (const AckedWrite& w : writes_) {
    if (offset < w.offset_bytes || offset >= w.offset_bytes + w.length_bytes) continue;
    const std::string name = "write " + std::to_string(w.index) + " (LSN " + std::to_string(w.lsn) +
                             ", at " + FormatRfc3339(w.unix_ns) + ")";
    data.resize(w.length_bytes);
    FillWrite(options_.seed, w.index, data);
    if (std::equal(block.begin(), block.end(), data.begin() + (offset - w.offset_bytes))) {
      holds = name;
    }
    if (w.lsn <= lsn) should = name;
  }
  return "the block at offset " + std::to_string(offset) + " holds " + holds + ", not " + should;
}

Status Simulation::Fail() {
  SimulatedFailure failure;
  failure.at_unix_ns = now();
  failure.last_shipped_unix_ns = last_shipped_ns_;
  // The disk is gone, and with it every record its log had not shipped.
  disk_.fault->FailNow();
  scheduler_.reset();
  disk_.Drop();

  SNAPDISK_ASSIGN_OR_RETURN(disk_, NewDisk());
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupSet> sets, ListBackupSets(*store_, options_.volume));
  const auto restore_started = std::chrono::steady_clock::now();
  std::vector<std::byte> restored(options_.working_set_bytes, std::byte{0});
  Result<RestoreTarget> latest = LatestTarget(sets, options_.volume);
  if (latest.ok()) {
    SNAPDISK_ASSIGN_OR_RETURN(RestorePlan plan, PlanRestoreFromSets(sets, *latest));
    SNAPDISK_ASSIGN_OR_RETURN(RestoreResult result,
                              RestoreToNewVolume(*disk_.pool, *store_, plan, options_.volume));
    failure.restored_lsn = plan.end_lsn;
    failure.applied = result.applied;
    SNAPDISK_ASSIGN_OR_RETURN(Volume * volume, disk_.pool->OpenVolume(options_.volume));
    SNAPDISK_RETURN_IF_ERROR(volume->Read(0, restored));
  } else if (latest.status().IsNotFound()) {
    // Nothing shipped yet: a new, blank volume.
    SNAPDISK_RETURN_IF_ERROR(
        disk_.pool->CreateVolume(options_.volume, options_.volume_size_bytes).status());
  } else {
    return latest.status();
  }
  failure.restore_real_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - restore_started).count();

  const std::vector<std::byte> expected = Expected(failure.restored_lsn);
  if (restored != expected) {
    const auto diff = std::mismatch(restored.begin(), restored.end(), expected.begin());
    return Status::Corruption("the restore after the failure at simulated " +
                              FormatRfc3339(failure.at_unix_ns) + " (to LSN " +
                              std::to_string(failure.restored_lsn) + ", sets " +
                              Joined(failure.applied) + ") matches no acknowledged state: " +
                              Explain(static_cast<uint64_t>(diff.first - restored.begin()),
                                      restored, failure.restored_lsn));
  }
  for (const AckedWrite& w : writes_) {
    if (w.lsn <= failure.restored_lsn) continue;
    if (failure.lost_writes++ == 0) failure.loss_ns = failure.at_unix_ns - w.unix_ns;
    failure.loss_bytes += w.length_bytes;
  }
  report_.failures.push_back(std::move(failure));

  // The volume lives on the replacement, from what was restored.
  oracle_base_ = restored;
  writes_.clear();
  SNAPDISK_RETURN_IF_ERROR(StartScheduler());
  return BackUpNow();
}

Result<PolicySimulationReport> Simulation::Run() {
  const auto started = std::chrono::steady_clock::now();
  const int64_t end_ns = options_.start_unix_ns + options_.duration_ns;
  report_.start_unix_ns = options_.start_unix_ns;
  report_.end_unix_ns = end_ns;

  SNAPDISK_ASSIGN_OR_RETURN(disk_, NewDisk());
  SNAPDISK_RETURN_IF_ERROR(
      disk_.pool->CreateVolume(options_.volume, options_.volume_size_bytes).status());
  SNAPDISK_RETURN_IF_ERROR(StartScheduler());

  const bool writing = options_.writes_per_hour > 0;
  int64_t next_write_ns = writing ? now() + NextWriteGapNs() : INT64_MAX;
  SNAPDISK_ASSIGN_OR_RETURN(int64_t next_due_ns, scheduler_->NextDueUnixNs());
  int64_t next_progress_ns = now() + kNsPerHour;
  while (true) {
    const int64_t next_failure_ns =
        next_failure_ < failure_times_.size() ? failure_times_[next_failure_] : INT64_MAX;
    const int64_t t = std::min({next_write_ns, next_due_ns, next_failure_ns, end_ns});
    if (t >= end_ns) break;
    SetNow(std::max(t, now()));
    if (t == next_failure_ns) {
      ++next_failure_;
      SNAPDISK_RETURN_IF_ERROR(Fail());
    } else if (t == next_due_ns) {
      SNAPDISK_RETURN_IF_ERROR(Tick());
    } else {
      SNAPDISK_RETURN_IF_ERROR(Write());
      next_write_ns = now() + NextWriteGapNs();
      continue;
    }
    const uint64_t held = store_->stored_bytes() + disk_.memory->allocated_bytes();
    if (held > options_.memory_limit_bytes) {
      return Status::NoSpace(
          "the simulated store and disk hold " + HumanBytes(held) + " at simulated " +
          FormatRfc3339(now()) + ", over the memory limit of " +
          HumanBytes(options_.memory_limit_bytes) +
          " (they live in memory): write less, keep backups fewer days, or raise the limit");
    }
    SNAPDISK_ASSIGN_OR_RETURN(next_due_ns, scheduler_->NextDueUnixNs());
    // A run that failed is retried later; never spin on one moment.
    next_due_ns = std::max(next_due_ns, now() + 1);
    if (options_.progress && now() >= next_progress_ns) {
      next_progress_ns = now() + kNsPerHour;
      if (!options_.progress(now() - options_.start_unix_ns, options_.duration_ns)) {
        return Status::Cancelled("policy simulation cancelled at simulated " +
                                 FormatRfc3339(now()));
      }
    }
  }
  SetNow(end_ns);
  report_.expired_objects = scheduler_->expired_objects();
  report_.store_objects = store_->object_count();
  report_.store_bytes = store_->stored_bytes();
  report_.real_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return std::move(report_);
}

}  // namespace

Result<PolicySimulationReport> SimulatePolicy(const PolicySimulationOptions& options) {
  if (Status s = ValidatePolicy([&] {
        BackupPolicy p = options.policy;
        p.store_dir = kStoreName;
        return p;
      }());
      !s.ok()) {
    return s;
  }
  if (options.duration_ns <= 0) return Status::InvalidArgument("duration must be positive");
  if (options.volume_size_bytes == 0 || options.volume_size_bytes % kAlignBytes != 0) {
    return Status::InvalidArgument("volume size must be a positive multiple of 4 KiB");
  }
  if (options.working_set_bytes < kAlignBytes ||
      options.working_set_bytes > options.volume_size_bytes ||
      options.working_set_bytes % kAlignBytes != 0) {
    return Status::InvalidArgument(
        "working set must be a multiple of 4 KiB from 4 KiB to the volume's size");
  }
  if (options.max_write_bytes < kAlignBytes ||
      options.max_write_bytes > options.working_set_bytes) {
    return Status::InvalidArgument("write size must be 4 KiB to the working set");
  }
  if (!(options.writes_per_hour >= 0) || options.writes_per_hour > 1e6) {
    return Status::InvalidArgument("writes per hour must be 0 to 1000000");
  }
  return Simulation(options).Run();
}

}  // namespace snapdisk
