#include "bench/comparator/compare.h"

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "bench/comparator/adaptive_rate.h"
#include "bench/comparator/child_process.h"
#include "bench/comparator/fio_workload.h"
#include "bench/comparator/open_loop_workload.h"
#include "bench/comparator/policy_simulation.h"
#include "disk/bytes.h"
#include "disk/clock.h"
#include "disk/memory_device.h"
#include "engine/aligned_buffer.h"
#include "engine/memory_worm_store.h"
#include "engine/pool.h"
#include "engine/pool_file.h"
#include "engine/worm_store.h"
#include "restore/lazy_restore.h"
#include "restore/restore_apply.h"
#include "snapshot/backup.h"
#include "snapshot/log_backup.h"

namespace snapdisk {

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr int64_t kControlIntervalNs = 250'000'000;  // full-adaptive
constexpr const char* kVolume = "db";
// full-adaptive's slowest: the rate that reads written[0] in this long.
constexpr double kAdaptiveMaxSeconds = 60;
// Zeroed pages the in-memory pool keeps ready for first writes (64 MiB):
// seconds of the default workload's new blocks, refilled as it takes them.
constexpr size_t kReadyPages = 16384;
// Pins the calling thread — the pool's and the workload's — to the CPU it
// is on for the guard's life, so that the backup's workers (lowest
// priority) run on the other CPUs (ChunkPipeline, "CPUs"): the copy runs
// beside the disk, as ESSD's backend copies on its own hardware, and not in
// the scheduler slices SCHED_IDLE threads still get on the workload's CPU.
// Nothing on a one-CPU machine.
class PinToThisCpu {
 public:
  PinToThisCpu() {
    if (::sysconf(_SC_NPROCESSORS_ONLN) < 2 || ::sched_getaffinity(0, sizeof(saved_), &saved_) != 0) return;
    const int cpu = ::sched_getcpu();
    if (cpu < 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pinned_ = ::sched_setaffinity(0, sizeof(one), &one) == 0;
  }
  ~PinToThisCpu() {
    if (pinned_) (void)::sched_setaffinity(0, sizeof(saved_), &saved_);
  }
  PinToThisCpu(const PinToThisCpu&) = delete;
  PinToThisCpu& operator=(const PinToThisCpu&) = delete;

 private:
  cpu_set_t saved_;
  bool pinned_ = false;
};

// The workload's phases in a backup experiment.
constexpr int kBefore = 0;
constexpr int kDuring = 1;
constexpr int kAfter = 2;

double Seconds(int64_t ns) { return static_cast<double>(ns) / 1e9; }
double Us(int64_t ns) { return static_cast<double>(ns) / 1e3; }

// Where the run is and how far, for CompareOptions::progress. Each stage has
// a planned weight (seconds it should take); the fraction is by weight.
class ProgressTracker {
 public:
  ProgressTracker(const CompareOptions& options, double total_weight)
      : callback_(options.progress), total_(std::max(total_weight, 1.0)),
        started_ns_(SystemClock::Get().NowNs()) {}
  void Begin(std::string stage, double weight) {
    done_ += weight_;
    stage_ = std::move(stage);
    weight_ = weight;
  }
  // `inner`: the fraction of the current stage done (0-1).
  bool Report(double inner) {
    if (!callback_) return true;
    const double fraction = std::min(1.0, (done_ + weight_ * std::clamp(inner, 0.0, 1.0)) / total_);
    const double elapsed = Seconds(SystemClock::Get().NowNs() - started_ns_);
    const double eta = fraction > 0.01 ? elapsed / fraction - elapsed : 0;
    return callback_(stage_, fraction, eta);
  }

 private:
  std::function<bool(const std::string&, double, double)> callback_;
  double total_;
  double done_ = 0;
  double weight_ = 0;
  std::string stage_;
  int64_t started_ns_;
};

// A pool and a store in a directory of their own, removed on destruction
// (the store is the comparator's scratch: it holds nobody's backups, so it is
// removed whole rather than expired). The pool is a sparse file, or a sparse
// MemoryDevice (`in_memory`).
struct Scratch {
  std::string dir;
  std::unique_ptr<WormStore> store;  // outlives the pool: instant restores read it
  std::unique_ptr<PoolFile> pool_file;
  std::unique_ptr<MemoryDevice> memory;
  std::unique_ptr<Pool> memory_pool;
  ~Scratch() {
    memory_pool.reset();
    pool_file.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  Pool& pool() { return pool_file ? pool_file->pool() : *memory_pool; }
  // The device's completion eventfd, or -1 (the memory device has none).
  int event_fd() { return pool_file ? pool_file->device().completion_event_fd() : -1; }
};

// `pool_bytes`: the pool's size (sparse: only what is written takes space);
// at least the volumes' nominal size, which a thin volume may not exceed.
// `store`: where its sets go (a directory store in `dir`, or in memory).
Result<std::unique_ptr<Scratch>> MakeScratch(const std::string& dir, uint64_t pool_bytes, bool in_memory,
                                             BackupStoreChoice store = BackupStoreChoice::kDirectory) {
  auto s = std::make_unique<Scratch>();
  s->dir = dir;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot make " + dir + ": " + ec.message());
  if (store == BackupStoreChoice::kMemory) {
    s->store = std::make_unique<MemoryWormStore>();
  } else {
    SNAPDISK_RETURN_IF_ERROR(CreateDirStore(dir + "/store"));
    SNAPDISK_ASSIGN_OR_RETURN(s->store, OpenDirStore(dir + "/store"));
  }
  PoolOptions po;
  po.max_requests = 16384;
  if (in_memory) {
    SNAPDISK_ASSIGN_OR_RETURN(s->memory, MemoryDevice::Create(pool_bytes / 4096 * 4096));
    // A disk's never-written sectors cost nothing extra; fresh memory does
    // (an allocation and a page fault): keep pages ready, off the pool's thread.
    s->memory->KeepPagesReady(kReadyPages);
    SNAPDISK_ASSIGN_OR_RETURN(s->memory_pool, Pool::Create(*s->memory, po));
    return s;
  }
  FileDeviceOptions fo;
  fo.queue_depth = 256;
  fo.completion_batch = 0;  // Poll(0) reaps everything finished (an event loop)
  // O_DIRECT, as a database opens its files: a commit's flush then waits for
  // the device, not for the page cache's backlog of the workload's writes.
  fo.direct_io = true;
  SNAPDISK_ASSIGN_OR_RETURN(s->pool_file, PoolFile::Create(dir + "/pool", pool_bytes, po, fo));
  return s;
}

// Fills buf with the data of 4 KiB block `block`: half pseudo-random, half a
// pattern (about 2:1 under zstd, like a database's pages); never zeros,
// different for every block and seed.
void BlockData(uint64_t seed, uint64_t block, std::byte* buf) {
  uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (block + 1) * 0xBF58476D1CE4E5B9ull;
  auto* words = reinterpret_cast<uint64_t*>(buf);
  for (size_t i = 0; i < 256; ++i) {  // 2 KiB random
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    words[i] = x;
  }
  for (size_t i = 256; i < 512; ++i) words[i] = block * 0x0101010101010101ull + i;
}

// Writes [0, bytes) of `volume`: 1 MiB writes, 16 in flight.
Status FillVolume(Pool& pool, Volume& volume, uint64_t bytes, uint64_t seed) {
  constexpr int kDepth = 16;
  struct Slot {
    VolumeRequest request;
    AlignedBuffer buffer{kMiB};  // O_DIRECT pools take aligned buffers only
    bool busy = false;
  };
  std::vector<Slot> slots(kDepth);
  Status error;
  uint64_t next = 0;
  int busy = 0;
  while (next < bytes || busy > 0) {
    for (Slot& s : slots) {
      if (s.busy || next >= bytes || !error.ok()) continue;
      const uint64_t len = std::min(kMiB, bytes - next);
      for (uint64_t off = 0; off < len; off += 4096) BlockData(seed, (next + off) / 4096, s.buffer.data() + off);
      s.request = VolumeRequest{};
      s.request.op = VolumeOp::kWrite;
      s.request.offset_bytes = next;
      s.request.length_bytes = len;
      s.request.data = s.buffer.data();
      s.request.on_complete = [&s, &busy, &error](VolumeRequest&, const Status& st) {
        s.busy = false;
        --busy;
        if (!st.ok() && error.ok()) error = st;
      };
      Status st = volume.Submit(s.request);
      if (st.IsBusy()) break;
      if (!st.ok()) return st;
      s.busy = true;
      ++busy;
      next += len;
    }
    if (!error.ok() && busy == 0) break;
    pool.Poll(1);
  }
  SNAPDISK_RETURN_IF_ERROR(error);
  return pool.Commit();
}

// `count` writes of `block` bytes at random aligned offsets in [0, span),
// 32 in flight: the changes a workload leaves between two backups.
Status WriteRandomBlocks(Pool& pool, Volume& volume, uint64_t span, uint32_t block, uint64_t count,
                         uint64_t seed) {
  ForegroundOptions o;
  o.iops = 1e6;  // as fast as the volume takes them
  o.read_pct = 0;
  o.block_bytes = block;
  o.span_bytes = span;
  o.seed = seed;
  o.max_outstanding = 32;
  OpenLoopWorkload w(pool, volume, o, SystemClock::Get());
  w.Start(SystemClock::Get().NowNs());
  while (w.arrivals() < count) {
    w.Issue(SystemClock::Get().NowNs());
    pool.Poll(w.in_flight() > 0 ? 1 : 0);
  }
  DrainWorkload(pool, w, SystemClock::Get());
  SNAPDISK_RETURN_IF_ERROR(w.first_error());
  return pool.Commit();
}

Result<BackupSet> RunBackup(Pool& pool, WormStore& store, BackupMethod method) {
  BackupOptions bo;
  bo.method = method;
  SNAPDISK_ASSIGN_OR_RETURN(auto job, BackupJob::Start(pool, store, kVolume, bo));
  return job->Run();
}

PhaseFigures Figures(const OpenLoopWorkload& w, int phase, int64_t duration_ns) {
  PhaseFigures f;
  const LatencyHistogram& h = w.PhaseLatency(phase);
  f.seconds = Seconds(duration_ns);
  f.requests = w.PhaseCompleted(phase);
  f.iops = f.seconds > 0 ? static_cast<double>(f.requests) / f.seconds : 0;
  f.p50_us = Us(h.Percentile(50));
  f.p99_us = Us(h.Percentile(99));
  f.p999_us = Us(h.Percentile(99.9));
  f.max_us = Us(h.max_ns());
  return f;
}

double ImpactPct(double during, double baseline) {
  return baseline > 0 ? (during - baseline) / baseline * 100 : 0;
}

// The unmeasured preparation a method needs before its phases; the changes
// written are those a workload of the scenario's rate writes in
// seconds_before.
Status Prepare(CompareMethod m, const Scenario& sc, Pool& pool, WormStore& store, Volume& v) {
  const uint64_t span = sc.written.front();
  const uint64_t churn = static_cast<uint64_t>(sc.foreground.iops * sc.foreground.seconds_before *
                                               (100 - sc.foreground.read_pct) / 100) + 1;
  switch (m) {
    case CompareMethod::kSnapshot:
    case CompareMethod::kFull:
    case CompareMethod::kFullThrottled:
    case CompareMethod::kFullAdaptive:
      return Status::OK();
    case CompareMethod::kSnapshotNext:
      return RunBackup(pool, store, BackupMethod::kSnapshot).status();
    case CompareMethod::kDiff:
    case CompareMethod::kIncr:
      // full, changes, incr: the measured diff copies every change since the
      // full, the measured incr only those since the incr.
      SNAPDISK_RETURN_IF_ERROR(RunBackup(pool, store, BackupMethod::kFull).status());
      SNAPDISK_RETURN_IF_ERROR(
          WriteRandomBlocks(pool, v, span, sc.foreground.block_bytes, churn, sc.seed + 7));
      return RunBackup(pool, store, BackupMethod::kIncr).status();
    case CompareMethod::kLog:
      // full, then a log backup that ships the fill: the measured one ships
      // the workload's writes since.
      SNAPDISK_RETURN_IF_ERROR(RunBackup(pool, store, BackupMethod::kFull).status());
      return RunBackup(pool, store, BackupMethod::kLog).status();
  }
  return Status::OK();
}

BackupMethod BackupMethodOf(CompareMethod m) {
  switch (m) {
    case CompareMethod::kSnapshot:
    case CompareMethod::kSnapshotNext: return BackupMethod::kSnapshot;
    case CompareMethod::kDiff: return BackupMethod::kDiff;
    case CompareMethod::kIncr: return BackupMethod::kIncr;
    case CompareMethod::kLog: return BackupMethod::kLog;
    default: return BackupMethod::kFull;
  }
}

ForegroundOptions ForegroundFor(const Scenario& sc, uint64_t span, uint64_t seed) {
  ForegroundOptions o;
  o.iops = sc.foreground.iops;
  o.read_pct = sc.foreground.read_pct;
  o.block_bytes = sc.foreground.block_bytes;
  o.span_bytes = span;
  o.seed = seed;
  return o;
}

// The throughput the profile leaves beside the foreground, MB/s (10^6 B/s).
double HeadroomMbPerS(const Scenario& sc, const EssdProfile& profile) {
  if (profile.throughput_bytes_per_s == 0) return 0;
  const double fg = sc.foreground.iops * sc.foreground.block_bytes;
  return std::max(0.0, (static_cast<double>(profile.throughput_bytes_per_s) - fg) / 1e6);
}

Result<BackupRun> RunBackupExperiment(const Scenario& sc, const EssdProfile& profile,
                                      CompareMethod m, const std::string& dir,
                                      ProgressTracker& progress) {
  Clock& clock = SystemClock::Get();
  const uint64_t written = sc.written.front();
  const PinToThisCpu pin;
  // In memory: the latency the workload sees is the ESSD profile's, not the
  // host file system's. (Every commit holds the pool's thread for its two
  // flushes: a backup's commit took ~30 ms on an O_DIRECT sparse file here,
  // 3-25 ms in memory.)
  SNAPDISK_ASSIGN_OR_RETURN(auto scratch, MakeScratch(dir, sc.volume_size_bytes + written * 6 + (uint64_t{1} << 30),
                                                      /*in_memory=*/true, sc.backup_store));
  Pool& pool = scratch->pool();
  WormStore& store = *scratch->store;
  SNAPDISK_RETURN_IF_ERROR(pool.CreateVolume(kVolume, sc.volume_size_bytes, sc.profile).status());
  SNAPDISK_ASSIGN_OR_RETURN(Volume * v, pool.OpenVolume(kVolume));
  if (!progress.Report(0)) return Status::Cancelled("cancelled");
  SNAPDISK_RETURN_IF_ERROR(FillVolume(pool, *v, written, sc.seed));
  SNAPDISK_RETURN_IF_ERROR(Prepare(m, sc, pool, store, *v));

  BackupRun run;
  run.method = m;
  run.through_qos = BackupMethodOf(m) != BackupMethod::kSnapshot && BackupMethodOf(m) != BackupMethod::kLog;
  run.headroom_mb_per_s = HeadroomMbPerS(sc, profile);
  // The same schedule for every method: the seed, not the method.
  OpenLoopWorkload w(pool, *v, ForegroundFor(sc, written, sc.seed + 1), clock);
  const int event_fd = scratch->event_fd();
  const int64_t before_ns = static_cast<int64_t>(sc.foreground.seconds_before * 1e9);
  const int64_t after_ns = static_cast<int64_t>(sc.foreground.seconds_after * 1e9);
  const double planned_s = Seconds(before_ns + after_ns) + 5;
  auto report = [&](int64_t now) { return progress.Report(Seconds(now - w.start_ns()) / planned_s); };

  w.Start(clock.NowNs());
  DriveOptions d;
  d.event_fd = event_fd;
  d.tick = report;
  d.until_ns = w.start_ns() + before_ns;
  SNAPDISK_RETURN_IF_ERROR(DriveUntil(pool, w, clock, d));
  const LatencyHistogram before = w.PhaseLatency(kBefore);

  BackupOptions bo;
  bo.method = BackupMethodOf(m);
  bo.lowest_priority = true;  // every method: the disk's latency is measured, not the host's CPU
  std::optional<AdaptiveRateController> controller;
  if (m == CompareMethod::kFullThrottled) {
    bo.rate_mb_per_s = sc.rate_mb_per_s;
    run.rate_cap_mb_per_s = sc.rate_mb_per_s;
  }
  if (m == CompareMethod::kFullAdaptive) {
    AdaptiveRateOptions ao;
    run.p99_target_us = sc.p99_target_us > 0 ? sc.p99_target_us : 1.15 * Us(before.Percentile(99));
    ao.target_p99_us = std::max(run.p99_target_us, 1.0);
    ao.max_mb_per_s = run.headroom_mb_per_s > 0 ? run.headroom_mb_per_s : 2000;
    // The floor reads the data in kAdaptiveMaxSeconds: a controller backing
    // off for good (a noisy machine: stalls of 30-90 ms took one run to 3.8
    // MB/s and 70 s) must not push the default run past its 5 minutes. Below
    // the floor the target was missed anyway, and the report shows it.
    ao.min_mb_per_s = std::min(ao.max_mb_per_s,
                               std::max({1.0, ao.max_mb_per_s / 100,
                                         static_cast<double>(written) / 1e6 / kAdaptiveMaxSeconds}));
    // Samples per window: a p99 needs ~100 of them to mean anything.
    ao.min_samples = static_cast<uint64_t>(std::min(100.0, sc.foreground.iops * 0.25 / 2));
    SNAPDISK_ASSIGN_OR_RETURN(AdaptiveRateController c, AdaptiveRateController::Make(ao));
    controller = c;
    bo.rate_mb_per_s = c.rate_mb_per_s();
  }
  const int64_t backup_start = clock.NowNs();
  w.Issue(backup_start);
  w.SetPhase(kDuring);
  auto job_or = BackupJob::Start(pool, store, kVolume, bo);
  std::unique_ptr<BackupJob> job;
  if (job_or.ok()) {
    job = std::move(job_or).value();
  } else if (IsNothingToShip(job_or.status())) {
    // A log backup after a workload that wrote nothing: it ships nothing,
    // and what finding that out cost is its figure.
    run.nothing_to_ship = true;
  } else {
    DrainWorkload(pool, w, clock);
    return job_or.status().WithContext(std::string(CompareMethodName(m)) + " backup");
  }
  int64_t run_gap_ns = 0;
  run.start_seconds = Seconds(clock.NowNs() - backup_start);
  (void)w.TakeRecent();
  int64_t next_control = backup_start + kControlIntervalNs;
  d.until_ns = backup_start;
  d.max_busy_gap_ns = &run_gap_ns;
  d.background = [&] {
    if (job == nullptr) return true;
    const int64_t t = clock.NowNs();
    const bool done = job->Step();
    run.max_step_seconds = std::max(run.max_step_seconds, Seconds(clock.NowNs() - t));
    return done;
  };
  // The first control interval holds the job's start (its snapshot, plan
  // and workers starting), which no read rate causes: the controller skips it.
  bool first_interval = true;
  d.tick = [&](int64_t now) {
    if (controller && job != nullptr && now >= next_control) {
      next_control = now + kControlIntervalNs;
      const LatencyHistogram recent = w.TakeRecent();
      if (!first_interval) job->SetRate(controller->Update(recent));
      first_interval = false;
    }
    return report(now);
  };
  Status driven = DriveUntil(pool, w, clock, d);
  const int64_t backup_end = clock.NowNs();
  run.max_loop_gap_seconds = Seconds(run_gap_ns);
  w.Issue(backup_end);
  w.SetPhase(kAfter);
  if (!driven.ok()) {
    job.reset();  // cancels and waits
    DrainWorkload(pool, w, clock);
    return driven;
  }
  run.seconds = Seconds(backup_end - backup_start);
  if (job != nullptr && IsNothingToShip(job->result().status())) {
    run.nothing_to_ship = true;
  } else if (job != nullptr) {
    if (!job->result().ok()) {
      DrainWorkload(pool, w, clock);
      return job->result().status().WithContext(std::string(CompareMethodName(m)) + " backup");
    }
    const BackupProgress bp = job->progress();
    run.set_id = job->result()->id;
    run.bytes_to_copy = bp.total_bytes;
    run.bytes_read = bp.read_bytes;
    run.bytes_stored = bp.stored_bytes;
    run.read_mb_per_s = run.seconds > 0 ? static_cast<double>(bp.read_bytes) / 1e6 / run.seconds : 0;
  }
  job.reset();

  d.background = nullptr;
  d.tick = report;
  d.until_ns = backup_end + after_ns;
  SNAPDISK_RETURN_IF_ERROR(DriveUntil(pool, w, clock, d));
  DrainWorkload(pool, w, clock);

  const int64_t t0 = w.start_ns();
  run.backup_start_s = Seconds(backup_start - t0);
  run.backup_end_s = Seconds(backup_end - t0);
  run.baseline = Figures(w, kBefore, backup_start - t0);
  run.during = Figures(w, kDuring, backup_end - backup_start);
  run.after = Figures(w, kAfter, clock.NowNs() - backup_end);
  // A backup over before a request was due has no impact to measure (0).
  if (run.during.requests > 0) {
    run.p99_impact_pct = ImpactPct(run.during.p99_us, run.baseline.p99_us);
    run.iops_impact_pct = ImpactPct(run.during.iops, run.baseline.iops);
  }
  for (size_t i = 0; i < w.seconds().size(); ++i) {
    const SecondStats& s = w.seconds()[i];
    TimelinePoint p;
    p.second = static_cast<int>(i);
    const double mid = static_cast<double>(i) + 0.5;
    p.phase = mid < run.backup_start_s ? "before" : mid < run.backup_end_s ? "during" : "after";
    p.completed = s.completed;
    p.p50_us = Us(s.latency.Percentile(50));
    p.p99_us = Us(s.latency.Percentile(99));
    p.p999_us = Us(s.latency.Percentile(99.9));
    run.timeline.push_back(p);
  }
  for (const SecondStats& s : w.seconds()) run.errors += s.errors;
  if (!w.first_error().ok()) {
    return w.first_error().WithContext(std::string("foreground during the ") + CompareMethodName(m) +
                                       " experiment");
  }
  return run;
}

// The text of the scenario's fio job, checked before anything runs:
// InvalidArgument naming workload.fio for a file that cannot be read or a
// job MakeFioJob refuses; NotFound when fio is not installed.
Result<std::string> ReadFioJob(const std::string& path, const CompareOptions& options) {
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument("scenario: workload.fio: cannot read the fio job file " + path);
  std::stringstream text;
  text << in.rdbuf();
  FioTarget probe;
  probe.uri = "nbd+unix:///probe?socket=/probe";
  probe.size_bytes = 1;
  probe.log_prefix = "probe";
  SNAPDISK_RETURN_IF_ERROR(MakeFioJob(text.str(), probe).status().WithContext(path));
  SNAPDISK_ASSIGN_OR_RETURN(ChildProcess version, ChildProcess::Start({options.fio_binary, "--version"}, "", ""));
  SNAPDISK_ASSIGN_OR_RETURN(int status, version.Wait(30'000));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::NotFound("'" + options.fio_binary + " --version' " + DescribeWaitStatus(status) +
                            ": a fio workload needs a working fio (apt-get install fio)");
  }
  return text.str();
}

// The backup experiment with the user's fio job as the foreground
// (fio_workload.h): the same data and preparation as RunBackupExperiment on
// a pool file, then `snapdisk serve` and fio for seconds_before, the backup
// forwarded to the server, seconds_after more. Phases come from the
// backup's manifest times against fio's per-interval histograms: an
// interval overlapping the backup is `during`.
Result<BackupRun> RunFioBackupExperiment(const Scenario& sc, const EssdProfile& profile, CompareMethod m,
                                         const std::string& dir, const std::string& fio_job,
                                         const CompareOptions& options, ProgressTracker& progress) {
  constexpr uint32_t kIntervalMs = 100;
  const uint64_t written = sc.written.front();
  SNAPDISK_ASSIGN_OR_RETURN(auto scratch, MakeScratch(dir, sc.volume_size_bytes + written * 6 + (uint64_t{1} << 30),
                                                      /*in_memory=*/false));
  {
    Pool& pool = scratch->pool();
    SNAPDISK_RETURN_IF_ERROR(pool.CreateVolume(kVolume, sc.volume_size_bytes, sc.profile).status());
    SNAPDISK_ASSIGN_OR_RETURN(Volume * v, pool.OpenVolume(kVolume));
    if (!progress.Report(0)) return Status::Cancelled("cancelled");
    SNAPDISK_RETURN_IF_ERROR(FillVolume(pool, *v, written, sc.seed));
    SNAPDISK_RETURN_IF_ERROR(Prepare(m, sc, pool, *scratch->store, *v));
    SNAPDISK_RETURN_IF_ERROR(scratch->pool_file->Close());
  }
  // The server opens both.
  scratch->pool_file.reset();
  scratch->store.reset();

  BackupRun run;
  run.method = m;
  run.through_qos = BackupMethodOf(m) != BackupMethod::kSnapshot && BackupMethodOf(m) != BackupMethod::kLog;
  run.headroom_mb_per_s = HeadroomMbPerS(sc, profile);
  if (m == CompareMethod::kFullThrottled) run.rate_cap_mb_per_s = sc.rate_mb_per_s;

  FioForegroundOptions fo;
  fo.snapdisk_binary = options.snapdisk_binary;
  fo.fio_binary = options.fio_binary;
  fo.pool_path = dir + "/pool";
  fo.volume = kVolume;
  fo.job_text = fio_job;
  fo.size_bytes = written;
  fo.work_dir = dir;
  fo.interval_ms = kIntervalMs;
  SNAPDISK_ASSIGN_OR_RETURN(std::unique_ptr<FioForeground> fio, FioForeground::Start(fo));
  const double planned_s = sc.foreground.seconds_before + sc.foreground.seconds_after + 5;
  const int64_t fio_start = SystemClock::Get().NowNs();
  // Sleeps until `until_ns` (steady clock), watching fio and the server.
  auto wait_until = [&](int64_t until_ns) -> Status {
    for (;;) {
      const int64_t now = SystemClock::Get().NowNs();
      if (now >= until_ns) return Status::OK();
      // First: a Ctrl-C on the terminal stops fio and the server as well.
      if (!progress.Report(Seconds(now - fio_start) / planned_s)) return Status::Cancelled("cancelled");
      SNAPDISK_RETURN_IF_ERROR(fio->Check());
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(50, (until_ns - now) / 1'000'000 + 1)));
    }
  };
  // fio takes ~0.3 s to connect and start its jobs: the `before` phase is
  // what fio logged before the backup started, whatever that took.
  SNAPDISK_RETURN_IF_ERROR(wait_until(fio_start + static_cast<int64_t>((sc.foreground.seconds_before + 0.5) * 1e9)));
  const double rate = m == CompareMethod::kFullThrottled ? sc.rate_mb_per_s : 0;
  Result<ServedBackup> backup =
      RunServedBackup(*fio, dir + "/store", BackupMethodName(BackupMethodOf(m)), rate, [&] {
        return progress.Report(Seconds(SystemClock::Get().NowNs() - fio_start) / planned_s);
      });
  int64_t backup_start_ms = 0;
  int64_t backup_end_ms = 0;
  if (backup.ok()) {
    backup_start_ms = backup->started_unix_ns / 1'000'000;
    backup_end_ms = backup->finished_unix_ns / 1'000'000;
    run.set_id = backup->id;
    run.seconds = static_cast<double>(backup->finished_unix_ns - backup->started_unix_ns) / 1e9;
    run.bytes_to_copy = backup->data_bytes;
    run.bytes_read = backup->data_bytes;  // each byte copied is read once
    run.bytes_stored = backup->stored_bytes;
    run.read_mb_per_s = run.seconds > 0 ? static_cast<double>(run.bytes_read) / 1e6 / run.seconds : 0;
  } else if (IsNothingToShip(backup.status())) {
    run.nothing_to_ship = true;
    backup_start_ms = backup_end_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count();
  } else {
    return backup.status().WithContext(std::string(CompareMethodName(m)) + " backup");
  }
  const int64_t backup_done = SystemClock::Get().NowNs();
  SNAPDISK_RETURN_IF_ERROR(wait_until(backup_done + static_cast<int64_t>(sc.foreground.seconds_after * 1e9)));
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<FioInterval> intervals, fio->Stop());
  run.fio_output = fio->FioOutput();

  // Phases, per-phase figures and the timeline, from the intervals.
  const int64_t first_ms = intervals.front().end_unix_ms - kIntervalMs;
  LatencyHistogram phase_latency[3];
  uint64_t phase_requests[3] = {0, 0, 0};
  int64_t phase_from[3] = {INT64_MAX, INT64_MAX, INT64_MAX};
  int64_t phase_to[3] = {0, 0, 0};
  std::vector<LatencyHistogram> second_latency;
  std::vector<int> second_phase;
  for (const FioInterval& x : intervals) {
    const int64_t from = x.end_unix_ms - kIntervalMs;
    const int phase = x.end_unix_ms <= backup_start_ms ? kBefore : from < backup_end_ms ? kDuring : kAfter;
    phase_latency[phase].Merge(x.latency);
    phase_requests[phase] += x.latency.count();
    phase_from[phase] = std::min(phase_from[phase], from);
    phase_to[phase] = std::max(phase_to[phase], x.end_unix_ms);
    const size_t second = static_cast<size_t>((from - first_ms) / 1000);
    if (second >= second_latency.size()) {
      second_latency.resize(second + 1);
      second_phase.resize(second + 1, kBefore);
    }
    second_latency[second].Merge(x.latency);
    second_phase[second] = std::max(second_phase[second], phase);
  }
  auto figures = [&](int phase) {
    PhaseFigures f;
    f.seconds = phase_to[phase] > phase_from[phase] ? static_cast<double>(phase_to[phase] - phase_from[phase]) / 1e3 : 0;
    f.requests = phase_requests[phase];
    f.iops = f.seconds > 0 ? static_cast<double>(f.requests) / f.seconds : 0;
    const LatencyHistogram& h = phase_latency[phase];
    f.p50_us = Us(h.Percentile(50));
    f.p99_us = Us(h.Percentile(99));
    f.p999_us = Us(h.Percentile(99.9));
    f.max_us = Us(h.max_ns());
    return f;
  };
  run.baseline = figures(kBefore);
  run.during = figures(kDuring);
  run.after = figures(kAfter);
  if (run.baseline.requests == 0) {
    return Status::IOError("fio logged no latencies before the " + std::string(CompareMethodName(m)) +
                           " backup started: raise foreground.seconds_before");
  }
  if (run.during.requests > 0) {
    run.p99_impact_pct = ImpactPct(run.during.p99_us, run.baseline.p99_us);
    run.iops_impact_pct = ImpactPct(run.during.iops, run.baseline.iops);
  }
  run.backup_start_s = static_cast<double>(backup_start_ms - first_ms) / 1e3;
  run.backup_end_s = static_cast<double>(backup_end_ms - first_ms) / 1e3;
  static const char* const kPhaseNames[] = {"before", "during", "after"};
  for (size_t i = 0; i < second_latency.size(); ++i) {
    TimelinePoint p;
    p.second = static_cast<int>(i);
    p.phase = kPhaseNames[second_phase[i]];
    p.completed = second_latency[i].count();
    p.p50_us = Us(second_latency[i].Percentile(50));
    p.p99_us = Us(second_latency[i].Percentile(99));
    p.p999_us = Us(second_latency[i].Percentile(99.9));
    run.timeline.push_back(p);
  }
  return run;
}

// Runs the restores of one size; appends them to `out`.
Status RunRestoreExperiment(const Scenario& sc, uint64_t written, const std::string& dir,
                            ProgressTracker& progress, std::vector<RestoreRun>& out) {
  Clock& clock = SystemClock::Get();
  // On a file: the sizes may be large; restore times include the host's writes.
  SNAPDISK_ASSIGN_OR_RETURN(auto scratch, MakeScratch(dir, sc.volume_size_bytes + written * 5 + (uint64_t{1} << 30),
                                                      /*in_memory=*/false));
  Pool& pool = scratch->pool();
  WormStore& store = *scratch->store;
  const int event_fd = scratch->event_fd();
  // The source is unlimited: its QoS is not what is measured here.
  SNAPDISK_RETURN_IF_ERROR(pool.CreateVolume(kVolume, sc.volume_size_bytes).status());
  SNAPDISK_ASSIGN_OR_RETURN(Volume * src, pool.OpenVolume(kVolume));
  SNAPDISK_RETURN_IF_ERROR(FillVolume(pool, *src, written, sc.seed));
  if (!progress.Report(0.2)) return Status::Cancelled("cancelled");
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet snap, RunBackup(pool, store, BackupMethod::kSnapshot));
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet full, RunBackup(pool, store, BackupMethod::kFull));
  if (!progress.Report(0.4)) return Status::Cancelled("cancelled");

  // snapshot -> new: instant, with reads while it hydrates.
  {
    RestoreRun r{"snapshot", "new", "instant", written};
    LazyRestoreOptions lo;
    lo.profile = sc.profile;
    SNAPDISK_ASSIGN_OR_RETURN(auto job, StartLazyRestore(pool, store, snap.id, "snap-new", lo));
    r.usable_seconds = job->progress().usable_after_s;
    SNAPDISK_ASSIGN_OR_RETURN(Volume * nv, pool.OpenVolume("snap-new"));
    ForegroundOptions fo = ForegroundFor(sc, written, sc.seed + 2);
    fo.read_pct = 100;
    OpenLoopWorkload w(pool, *nv, fo, clock);
    w.Start(clock.NowNs());
    DriveOptions d;
    d.event_fd = event_fd;
    d.until_ns = w.start_ns();
    d.background = [&] { return job->Step(); };
    d.tick = [&](int64_t) { return progress.Report(0.4 + 0.3 * Seconds(clock.NowNs() - w.start_ns()) / 10); };
    SNAPDISK_RETURN_IF_ERROR(DriveUntil(pool, w, clock, d));
    SNAPDISK_RETURN_IF_ERROR(job->result());
    const int64_t hydrated = clock.NowNs();
    w.Issue(hydrated);
    w.SetPhase(1);
    d.background = nullptr;
    d.until_ns = hydrated + static_cast<int64_t>(sc.foreground.seconds_after * 1e9);
    SNAPDISK_RETURN_IF_ERROR(DriveUntil(pool, w, clock, d));
    DrainWorkload(pool, w, clock);
    SNAPDISK_RETURN_IF_ERROR(w.first_error());
    const HydrationProgress hp = job->progress();
    r.complete_seconds = hp.hydrated_after_s;
    r.read_bytes = hp.store_bytes_read;
    r.hydrating_read_p99_us = Us(w.PhaseLatency(0).Percentile(99));
    r.after_read_p99_us = Us(w.PhaseLatency(1).Percentile(99));
    out.push_back(r);
  }
  if (!progress.Report(0.7)) return Status::Cancelled("cancelled");
  RestoreOptions ro;
  ro.profile = sc.profile;
  ro.replace = true;
  // physical -> new: a copy; usable once complete.
  {
    SNAPDISK_ASSIGN_OR_RETURN(RestoreResult rr,
                              RestoreToNewVolume(pool, store, RestoreTarget::Backup(full.id), "phys-new", ro));
    RestoreRun r{"physical", "new", "copy", written};
    r.complete_seconds = Seconds(rr.complete_ns);
    r.usable_seconds = r.complete_seconds;
    r.read_bytes = rr.read_bytes;
    out.push_back(r);
  }
  if (!progress.Report(0.85)) return Status::Cancelled("cancelled");
  // snapshot -> existing: the source, changed since, rolled back to the
  // snapshot the set was made from.
  SNAPDISK_RETURN_IF_ERROR(WriteRandomBlocks(pool, *src, written, sc.foreground.block_bytes, 1000, sc.seed + 3));
  {
    const int64_t t = clock.NowNs();
    SNAPDISK_RETURN_IF_ERROR(pool.Rollback(kVolume, "backup-" + snap.id));
    SNAPDISK_RETURN_IF_ERROR(pool.Commit());
    RestoreRun r{"snapshot", "existing", "rollback", written};
    r.complete_seconds = r.usable_seconds = Seconds(clock.NowNs() - t);
    out.push_back(r);
  }
  // physical -> existing: a copy onto the source.
  {
    SNAPDISK_ASSIGN_OR_RETURN(src, pool.OpenVolume(kVolume));
    SNAPDISK_RETURN_IF_ERROR(WriteRandomBlocks(pool, *src, written, sc.foreground.block_bytes, 1000, sc.seed + 4));
    SNAPDISK_ASSIGN_OR_RETURN(RestoreResult rr, RestoreOnto(pool, store, RestoreTarget::Backup(full.id), kVolume, ro));
    RestoreRun r{"physical", "existing", "copy", written};
    r.complete_seconds = Seconds(rr.complete_ns);
    r.usable_seconds = r.complete_seconds;
    r.read_bytes = rr.read_bytes;
    out.push_back(r);
  }
  return Status::OK();
}

LinearFit Fit(const std::vector<std::pair<double, double>>& xy) {
  LinearFit f;
  const double n = static_cast<double>(xy.size());
  if (xy.size() < 2) return f;
  double sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
  for (auto [x, y] : xy) {
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
    syy += y * y;
  }
  const double den = n * sxx - sx * sx;
  if (den == 0) return f;
  f.slope = (n * sxy - sx * sy) / den;
  f.intercept = (sy - f.slope * sx) / n;
  const double ss_tot = syy - sy * sy / n;
  double ss_res = 0;
  for (auto [x, y] : xy) ss_res += std::pow(y - (f.intercept + f.slope * x), 2);
  f.r2 = ss_tot > 0 ? 1 - ss_res / ss_tot : 1;
  return f;
}

Result<RpoRun> RunRpoExperiment(const Scenario& sc, LogFrequencyChoice f, ProgressTracker& progress) {
  PolicySimulationOptions o;
  o.policy.store_dir = "simulated";
  o.policy.method = f == LogFrequencyChoice::kData ? PolicyMethod::kPhysical : PolicyMethod::kSnapshot;
  o.policy.log_frequency = f == LogFrequencyChoice::k5m    ? LogFrequency::kEvery5Min
                           : f == LogFrequencyChoice::k30m ? LogFrequency::kEvery30Min
                                                           : LogFrequency::kWithData;
  o.duration_ns = static_cast<int64_t>(sc.rpo_hours * 3600 * 1e9);
  o.failures = sc.rpo_failures;
  o.seed = sc.seed;
  o.writes_per_hour = 360;
  o.progress = [&](int64_t done, int64_t total) {
    return progress.Report(static_cast<double>(done) / static_cast<double>(std::max<int64_t>(total, 1)));
  };
  SNAPDISK_ASSIGN_OR_RETURN(PolicySimulationReport r, SimulatePolicy(o));
  RpoRun run;
  run.log_frequency = f;
  run.policy = std::string(o.policy.method == PolicyMethod::kSnapshot ? "snapshot" : "physical") +
               " backups " + FormatCycle(o.policy.cycle_days) + " " +
               FormatWindow(o.policy.window_start_min, o.policy.window_end_min) + ", logs " +
               (f == LogFrequencyChoice::k5m    ? "every 5 minutes"
                : f == LogFrequencyChoice::k30m ? "every 30 minutes"
                                                : "with each data backup");
  run.interval_seconds = f == LogFrequencyChoice::k5m    ? 300
                         : f == LogFrequencyChoice::k30m ? 1800
                                                         : Seconds(r.max_data_gap_ns);
  run.failures = static_cast<uint32_t>(r.failures.size());
  run.simulated_hours = sc.rpo_hours;
  run.real_seconds = r.real_seconds;
  double sum = 0;
  for (const SimulatedFailure& fail : r.failures) {
    const double loss = Seconds(fail.loss_ns);
    run.loss_seconds.push_back(loss);
    run.max_loss_seconds = std::max(run.max_loss_seconds, loss);
    run.max_loss_bytes = std::max(run.max_loss_bytes, fail.loss_bytes);
    sum += loss;
  }
  run.mean_loss_seconds = r.failures.empty() ? 0 : sum / static_cast<double>(r.failures.size());
  return run;
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

const BackupRun* FindBackup(const ComparisonReport& r, CompareMethod m) {
  for (const BackupRun& b : r.backups) {
    if (b.method == m) return &b;
  }
  return nullptr;
}

std::vector<Claim> MakeClaims(const ComparisonReport& r) {
  std::vector<Claim> claims;
  const BackupRun* snap = FindBackup(r, CompareMethod::kSnapshot);
  const BackupRun* next = FindBackup(r, CompareMethod::kSnapshotNext);
  const BackupRun* full = FindBackup(r, CompareMethod::kFull);
  const BackupRun* adaptive = FindBackup(r, CompareMethod::kFullAdaptive);
  auto p99 = [](const BackupRun& b) {
    return "p99 " + Fixed(b.baseline.p99_us, 0) + " us before, " + Fixed(b.during.p99_us, 0) +
           " us during (" + (b.p99_impact_pct >= 0 ? "+" : "") + Fixed(b.p99_impact_pct, 1) + "%, " +
           std::to_string(b.during.requests) + " requests)";
  };
  for (const BackupRun* b : {snap, next}) {
    if (b == nullptr) continue;
    claims.push_back({std::string("Snapshot backup") + (b == next ? " (a following one)" : "") +
                          ": minimal I/O impact (ESSD: I/O drops < 10% while a snapshot is created)",
                      b->during.requests >= 100 && b->p99_impact_pct < 10 && b->iops_impact_pct > -10,
                      p99(*b) + "; IOPS " + Fixed(b->baseline.iops, 0) + " -> " + Fixed(b->during.iops, 0)});
  }
  if (full != nullptr) {
    const BackupRun* lowest = snap != nullptr ? snap : next;
    claims.push_back({"Physical backup: heavy I/O that hurts the workload",
                      full->p99_impact_pct > 50 &&
                          (lowest == nullptr || full->p99_impact_pct > lowest->p99_impact_pct),
                      "full: " + p99(*full) +
                          (lowest != nullptr ? "; snapshot: " + Fixed(lowest->p99_impact_pct, 1) + "%" : "")});
  }
  if (full != nullptr && (snap != nullptr || next != nullptr)) {
    const BackupRun& s = snap != nullptr ? *snap : *next;
    claims.push_back({"A physical backup shares the disk's QoS budget with the workload; a snapshot "
                      "backup's copy does not (median latency during the backup)",
                      full->during.p50_us > 2 * s.during.p50_us,
                      "p50 during the full " + Fixed(full->during.p50_us, 0) + " us vs the " +
                          CompareMethodName(s.method) + " backup " + Fixed(s.during.p50_us, 0) +
                          " us (before: " + Fixed(full->baseline.p50_us, 0) + " / " +
                          Fixed(s.baseline.p50_us, 0) + " us)"});
  }
  if (full != nullptr && next != nullptr) {
    claims.push_back({"Snapshot backup: fast (a following snapshot backup copies only the changes)",
                      next->seconds < full->seconds,
                      "following snapshot backup " + Fixed(next->seconds, 2) + " s (" +
                          HumanBytes(next->bytes_read) + " read) vs full " + Fixed(full->seconds, 2) +
                          " s (" + HumanBytes(full->bytes_read) + ")"});
  }
  if (adaptive != nullptr && adaptive->headroom_mb_per_s > 0) {
    const bool p99_ok = adaptive->during.p99_us <= 1.2 * adaptive->baseline.p99_us;
    const bool used = adaptive->read_mb_per_s >= 0.7 * adaptive->headroom_mb_per_s;
    claims.push_back({"full-adaptive: foreground p99 within 20% of baseline while reading at >= 0.7x the "
                      "throughput the profile leaves beside the workload",
                      p99_ok && used,
                      p99(*adaptive) + "; read " + Fixed(adaptive->read_mb_per_s, 1) + " MB/s of " +
                          Fixed(adaptive->headroom_mb_per_s, 1) + " MB/s headroom (" +
                          Fixed(adaptive->read_mb_per_s / adaptive->headroom_mb_per_s, 2) + "x)"});
  }
  // Restores.
  const RestoreRun* small = nullptr;
  const RestoreRun* large = nullptr;
  for (const RestoreRun& x : r.restores) {
    if (x.method != "snapshot" || x.target != "new") continue;
    if (small == nullptr || x.written_bytes < small->written_bytes) small = &x;
    if (large == nullptr || x.written_bytes > large->written_bytes) large = &x;
  }
  if (small != nullptr && large != small) {
    const double ratio = small->usable_seconds > 0 ? large->usable_seconds / small->usable_seconds : 0;
    claims.push_back({"Snapshot restore: speed independent of data volume (usable time)",
                      ratio <= 1.5,
                      "usable after " + Fixed(small->usable_seconds * 1e3, 1) + " ms with " +
                          HumanBytes(small->written_bytes) + ", " + Fixed(large->usable_seconds * 1e3, 1) +
                          " ms with " + HumanBytes(large->written_bytes) + " (" + Fixed(ratio, 2) + "x)"});
  }
  if (r.physical_restore_fit.slope > 0) {
    const LinearFit& f = r.physical_restore_fit;
    claims.push_back({"Physical restore: time grows with the data (linear)", f.r2 >= 0.9,
                      "copy restore to a new volume: " + Fixed(f.intercept, 2) + " s + " + Fixed(f.slope, 2) +
                          " s/GiB, r^2 = " + Fixed(f.r2, 3)});
  }
  for (const RpoRun& x : r.rpo) {
    // No failure, no evidence: failures fall after the first data backup,
    // which a short rpo_hours may not reach.
    if (x.log_frequency == LogFrequencyChoice::kData || x.failures == 0) continue;
    const std::string minutes = x.log_frequency == LogFrequencyChoice::k5m ? "5" : "30";
    claims.push_back({"Log backup every " + minutes + " minutes: RPO " + minutes + " minutes",
                      x.max_loss_seconds <= x.interval_seconds,
                      "max loss " + Fixed(x.max_loss_seconds, 0) + " s over " + std::to_string(x.failures) +
                          " failures in " + Fixed(x.simulated_hours, 0) + " simulated hours (mean " +
                          Fixed(x.mean_loss_seconds, 0) + " s)"});
  }
  return claims;
}

}  // namespace

Result<ComparisonReport> RunComparison(const Scenario& sc, const CompareOptions& options) {
  const int64_t started = SystemClock::Get().NowNs();
  ComparisonReport report;
  report.scenario = sc;
  report.started_unix_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  if (sc.profile == EssdLevel::kUnlimited) {
    report.profile = EssdProfile::Unlimited(sc.volume_size_bytes);
  } else {
    SNAPDISK_ASSIGN_OR_RETURN(report.profile, EssdProfile::For(sc.profile, sc.volume_size_bytes));
  }
  if (sc.written.empty()) return Status::InvalidArgument("scenario: written is empty");
  SNAPDISK_RETURN_IF_ERROR(ValidateForeground(ForegroundFor(sc, sc.written.front(), sc.seed)));
  if (options.scratch_dir.empty()) return Status::InvalidArgument("compare: no scratch directory");
  std::string fio_job;
  if (!sc.fio_job.empty()) {
    SNAPDISK_ASSIGN_OR_RETURN(fio_job, ReadFioJob(sc.fio_job, options));
  }

  // Planned seconds per stage, for the progress fraction and ETA.
  const double phase_s = sc.foreground.seconds_before + sc.foreground.seconds_after + 4;
  double total = static_cast<double>(sc.methods.size()) * phase_s;
  for (uint64_t w : sc.written) total += 3 + static_cast<double>(w) / (100.0 * kMiB);
  total += static_cast<double>(sc.log_frequencies.size()) * 3;
  ProgressTracker progress(options, total);

  for (CompareMethod m : sc.methods) {
    progress.Begin(std::string("backup: ") + CompareMethodName(m), phase_s);
    const std::string dir = options.scratch_dir + "/backup-" + CompareMethodName(m);
    SNAPDISK_ASSIGN_OR_RETURN(BackupRun run,
                              fio_job.empty()
                                  ? RunBackupExperiment(sc, report.profile, m, dir, progress)
                                  : RunFioBackupExperiment(sc, report.profile, m, dir, fio_job, options, progress));
    report.backups.push_back(std::move(run));
  }
  std::vector<std::pair<double, double>> physical_points;
  for (uint64_t w : sc.written) {
    progress.Begin("restore: " + HumanBytes(w), 3 + static_cast<double>(w) / (100.0 * kMiB));
    SNAPDISK_RETURN_IF_ERROR(RunRestoreExperiment(sc, w, options.scratch_dir + "/restore-" + std::to_string(w >> 20) + "M",
                                                  progress, report.restores));
  }
  for (const RestoreRun& x : report.restores) {
    if (x.method == "physical" && x.target == "new") {
      physical_points.emplace_back(static_cast<double>(x.written_bytes) / kBytesPerGiB, x.complete_seconds);
    }
  }
  report.physical_restore_fit = Fit(physical_points);
  for (LogFrequencyChoice f : sc.log_frequencies) {
    progress.Begin(std::string("rpo: logs ") + LogFrequencyChoiceName(f), 3);
    SNAPDISK_ASSIGN_OR_RETURN(RpoRun run, RunRpoExperiment(sc, f, progress));
    report.rpo.push_back(std::move(run));
  }
  progress.Begin("report", 0);
  report.claims = MakeClaims(report);
  report.assumptions = {
      "One machine plays the disk and its backend: ESSD QoS (IOPS, throughput, latency floor) is "
      "enforced per volume by a token-bucket limiter. The backup experiments' pools live in memory, "
      "so the latency is the profile's and the engine's, not the host file system's; the restore "
      "sweep's pools are sparse files opened with O_DIRECT.",
      "Physical backups take their reads' tokens from the volume's QoS budget, sharing it with the "
      "workload; snapshot backups read the pool outside it (ESSD's backend copies on other hardware). "
      "Either way the pool's thread only looks up where the blocks lie and the backup's workers copy "
      "them (the device's DMA), and the workers' copying, hashing, compression and store writes run at "
      "the lowest CPU and I/O priority for every method: the experiment measures the disk's latency, "
      "and a backup's CPU is another machine's (the host's, the backend's) everywhere but here.",
      sc.backup_store == BackupStoreChoice::kMemory
          ? "The backup experiments' sets go to a WORM store in memory (scenario \"store\": "
            "\"directory\" puts them on this file system, fsync per object: the kernel's journal "
            "commits and writeback then share the cores with the disk's engine and show in the "
            "foreground's p99); the restore sweep's store is a directory. Not OSS/S3."
          : "Backups go to a directory store on the same file system (fsync per object), not to OSS/S3.",
      "RPO runs on a simulated clock (policy_simulation.h): writes, schedules and failures are "
      "simulated; every loss is measured by restoring and comparing with an oracle.",
      "Snapshot -> existing is a rollback to the backup's local snapshot, kept in the pool.",
      "A data backup takes its snapshot without a commit; the commit of its last step makes it "
      "durable. A log backup starts by committing the log it cuts. A commit holds the pool's only "
      "I/O thread for its two device flushes: requests due meanwhile wait. A snapshot backup's "
      "reads run on its workers beside that thread, which only looks up where the blocks lie "
      "(start_seconds and max_step_seconds in report.json). On ESSD the snapshot is taken and "
      "copied in the storage backend without such stalls.",
  };
  if (!sc.fio_job.empty()) {
    report.assumptions.push_back(
        "The backups' foreground is the fio job " + sc.fio_job + ", over NBD to a `snapdisk serve` of a pool "
        "file opened with O_DIRECT, the backup forwarded to that server. Its figures are fio's completion "
        "latency (clat, from submission): fio sends at its own pace and waits for what it has in flight, "
        "so a stalled disk shows partly as fewer IOPS and the time a request waited to be sent is not in "
        "the figures (the built-in workload measures from the intended start). Phases are 100 ms "
        "intervals of fio's histogram log; an interval overlapping the backup counts as during. The "
        "restore sweep's reads are the built-in workload's.");
  }
  report.real_seconds = Seconds(SystemClock::Get().NowNs() - started);
  return report;
}

}  // namespace snapdisk
