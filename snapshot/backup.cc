// Backup jobs: snapshot and physical backups of a volume into a WormStore
// (the contract is in snapshot/backup.h).
//
// A job's shape: Start() picks the type and base, takes the snapshot
// "backup-<id>" and asks the pool which ranges to copy (Diff: cost
// O(changed)). Step() then runs on the pool's thread: it submits chunk-sized
// reads of the snapshot (at most max_reads_in_flight, and only into free
// pipeline buffers, so memory stays fixed), and each read's completion hands
// its buffer to the ChunkPipeline's workers, which hash, dedup, compress and
// put. On a device readable beside the pool's thread, the pool's thread only
// resolves a chunk's blocks (and for a physical backup takes its QoS grant)
// and the worker reads them before hashing. When every chunk is in, the
// manifest is built (for snapshot sets: the previous image overlaid with the
// new chunks), the retention of everything
// the set depends on is extended, and the manifest is put — last, so a failed
// job leaves no set. Finally the backup snapshots the set makes unnecessary
// are deleted and the pool committed.
#include "snapshot/backup.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <map>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "disk/thread_placement.h"
#include "engine/aligned_buffer.h"
#include "snapshot/backup_history.h"
#include "snapshot/chunk_pipeline.h"
#include "snapshot/log_backup.h"
#include "snapshot/restore_index.h"

namespace snapdisk {

namespace {

constexpr int64_t kNsPerDay = int64_t{86'400} * 1'000'000'000;
constexpr int64_t kAutoFullWindowNs = 3 * kNsPerDay;
constexpr uint32_t kMaxWorkerThreads = 64;
constexpr uint32_t kMaxReadsInFlight = 256;
// Retention extensions are batched: one worker task (one RetainAtLeast, one
// audit-log sync in the directory store) per this many keys.
constexpr size_t kKeysPerExtendTask = 512;
// The rate cap tolerates this much work ahead of schedule.
constexpr int64_t kPaceBurstNs = 10'000'000;

std::string SnapshotNameFor(std::string_view id) { return "backup-" + std::string(id); }

bool IsPhysical(BackupType type) {
  return type == BackupType::kFull || type == BackupType::kDiff || type == BackupType::kIncr;
}

// Sets of `volume` (this volume object and lineage) of the given types,
// newest last.
std::vector<const BackupSet*> SetsOf(const std::vector<BackupSet>& sets, const VolumeInfo& volume,
                                     std::initializer_list<BackupType> types) {
  std::vector<const BackupSet*> out;
  for (const BackupSet& s : sets) {
    if (s.volume_id != volume.id || s.lineage != volume.lineage) continue;
    if (std::find(types.begin(), types.end(), s.type) != types.end()) out.push_back(&s);
  }
  return out;
}

// The chain a diff or incr `set` restores on: its bases down to the full,
// nearest first. NotFound naming the missing member.
Result<std::vector<BackupSet>> BaseChain(const BackupSet& set,
                                         const std::vector<BackupSet>& volume_sets) {
  std::unordered_map<std::string, const BackupSet*> by_id;
  for (const BackupSet& s : volume_sets) by_id[s.id] = &s;
  std::vector<BackupSet> chain;
  const BackupSet* at = &set;
  while (at->type == BackupType::kDiff || at->type == BackupType::kIncr) {
    auto it = by_id.find(at->base);
    if (it == by_id.end()) {
      return Status::NotFound("backup chain of " + set.id + " is broken: " + at->id +
                              " depends on " + at->base + ", which is not in the store");
    }
    const BackupSet& base = *it->second;
    if (!IsPhysical(base.type) || base.sequence >= at->sequence || base.lineage != at->lineage ||
        base.volume_id != at->volume_id ||
        (at->type == BackupType::kDiff && base.type != BackupType::kFull)) {
      return Status::Corruption("backup chain of " + set.id + " is broken: " + at->id +
                                " cannot depend on " + base.id);
    }
    chain.push_back(base);
    at = it->second;
  }
  return chain;
}

uint64_t SumLengths(const std::vector<ChunkExtent>& extents) {
  uint64_t total = 0;
  for (const ChunkExtent& e : extents) total += e.length_bytes;
  return total;
}

}  // namespace

const char* BackupMethodName(BackupMethod method) {
  switch (method) {
    case BackupMethod::kSnapshot:
      return "snapshot";
    case BackupMethod::kFull:
      return "full";
    case BackupMethod::kDiff:
      return "diff";
    case BackupMethod::kIncr:
      return "incr";
    case BackupMethod::kAuto:
      return "auto";
    case BackupMethod::kLog:
      return "log";
  }
  return "unknown";
}

Result<BackupMethod> ParseBackupMethod(std::string_view name) {
  for (BackupMethod m : {BackupMethod::kSnapshot, BackupMethod::kFull, BackupMethod::kDiff,
                         BackupMethod::kIncr, BackupMethod::kAuto, BackupMethod::kLog}) {
    if (name == BackupMethodName(m)) return m;
  }
  return Status::InvalidArgument("unknown backup method '" + std::string(name) +
                                 "' (use snapshot, full, diff, incr, auto or log)");
}

Status ValidateRetentionDays(uint32_t days) {
  if (days < kMinRetentionDays || days > kMaxRetentionDays) {
    return Status::InvalidArgument("retention must be " + std::to_string(kMinRetentionDays) + "-" +
                                   std::to_string(kMaxRetentionDays) + " days (got " +
                                   std::to_string(days) + ")");
  }
  return Status::OK();
}

int64_t RetainUntilUnixNs(const BackupOptions& options, int64_t started_unix_ns) {
  if (options.retain_forever) return kForeverUnixNs;
  return started_unix_ns + int64_t{options.retain_days} * kNsPerDay;
}

const char* BackupStateName(BackupState state) {
  switch (state) {
    case BackupState::kRunning:
      return "running";
    case BackupState::kDone:
      return "done";
    case BackupState::kFailed:
      return "failed";
    case BackupState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

// ---- The job ------------------------------------------------------------------

struct BackupJob::Impl {
  Impl(Pool& pool_in, WormStore& store_in, const BackupOptions& options_in)
      : pool(pool_in),
        store(store_in),
        options(options_in),
        clock(options_in.clock ? *options_in.clock : SystemClock::Get()) {}

  enum class Phase { kCopy, kBuild, kExtend, kManifest, kDone };

  // One read slot: the request must stay put while the pool holds it.
  struct ReadSlot {
    VolumeRequest request;
    uint64_t chunk = 0;  // its key in `chunks`
    bool busy = false;
  };

  // A range of the volume read into a chunk buffer at `buffer_offset`.
  struct Piece {
    uint64_t offset_bytes = 0;
    uint64_t length_bytes = 0;
    uint64_t buffer_offset = 0;
  };
  // A chunk being filled: one whole aligned chunk of the volume, or pieces
  // shorter than a chunk gathered into one buffer (so that scattered small
  // changes make one chunk object per chunk_bytes, not one each). Handed to
  // the pipeline (tag: its index) once sealed and all its reads are in.
  struct ChunkFill {
    std::byte* buffer = nullptr;
    uint64_t used_bytes = 0;
    std::vector<Piece> pieces;
    // Reads off the pool's thread: the pieces' blocks, in piece order, for
    // the worker that reads them (Pool::ReadResolvedBlocks).
    std::vector<format::MapEntry> blocks;
    uint32_t reads_pending = 0;
    bool sealed = false;
    bool failed = false;  // a read failed: the buffer goes back unsubmitted
  };

  Pool& pool;
  WormStore& store;
  const BackupOptions options;
  Clock& clock;

  // Fixed at Start.
  VolumeInfo volume;
  BackupSet set;  // being built; owned by the worker running the manifest task meanwhile
  std::string snapshot_name;
  Volume* snapshot = nullptr;
  Volume* live = nullptr;  // physical backups: the volume whose QoS is charged
  // On a device that can be read beside the pool's thread, the pool's thread
  // only resolves where a chunk's blocks lie and a worker reads them: for a
  // snapshot set, the ESSD backend copying outside the disk's I/O path; for a
  // physical one, the device's DMA, with the volume's QoS still charged on
  // the pool's thread (ReadQos). Else reads go through the pool.
  bool read_off_thread = false;
  // Physical backups read off the pool's thread: the volume's limiter (null:
  // snapshot sets, reads through the pool, unlimited profile; asked at each
  // read, as Volume::Submit does), and when each read it granted completes —
  // such a read counts against max_reads_in_flight until then, as one waiting
  // in the pool's admission queue would, and the copy ends only once all have.
  QosLimiter* ReadQos() const { return read_off_thread && live != nullptr ? live->qos() : nullptr; }
  std::vector<int64_t> qos_completions;
  bool reserved = false;
  bool snapshot_created = false;
  std::vector<BackupSet> volume_sets;     // the volume's sets at Start, by sequence
  std::optional<BackupSet> overlay_base;  // snapshot sets: the previous image
  std::vector<BackupSet> base_chain;      // diff/incr: base, ..., full
  std::vector<Extent> changed;            // Diff output (data and zero ranges)
  std::vector<Extent> to_copy;            // its data ranges
  int64_t started_steady_ns = 0;

  // Copy state (pool thread).
  Phase phase = Phase::kCopy;
  size_t copy_index = 0;        // into to_copy
  uint64_t copy_offset = 0;     // next byte to read of to_copy[copy_index]
  std::vector<ReadSlot> slots;  // max_reads_in_flight, never resized
  uint32_t reads_in_flight = 0;
  uint64_t chunks_outstanding = 0;  // submitted reads whose pipeline output is not in yet
  int64_t next_read_ns = 0;         // rate cap: earliest next submission
  double rate_mb_per_s = 0;         // the cap (options', or SetRate's)
  bool pool_busy = false;           // the pool refused a read (its request limit)
  // Chunks read or being compressed, by tag (erased when their output is in).
  std::unordered_map<uint64_t, ChunkFill> chunks;
  uint64_t next_chunk = 0;
  std::optional<uint64_t> gathering;  // the open gather chunk, if any
  std::vector<ChunkExtent> new_extents;
  std::unordered_map<std::string, ChunkInfo> new_chunks;  // by hash
  std::vector<ChunkPipeline::Output> outputs;             // scratch

  // Extend state.
  std::vector<std::string> extend_keys;
  size_t extend_next = 0;
  uint64_t tasks_outstanding = 0;
  bool manifest_put = false;

  Status error;
  bool finished = false;
  Result<BackupSet> result = Status::Busy("backup job is still running");

  // Progress, readable from any thread.
  std::atomic<bool> cancel_requested{false};
  std::atomic<BackupState> state{BackupState::kRunning};
  std::atomic<uint64_t> total_bytes{0};
  std::atomic<uint64_t> done_bytes{0};
  std::atomic<uint64_t> read_bytes{0};
  std::atomic<uint64_t> stored_bytes{0};
  std::atomic<int64_t> finished_steady_ns{0};

  // Last members: destroyed first, so workers stop before what they use goes.
  // The pipeline, once its helper made it (PipelineReady).
  std::future<std::unique_ptr<ChunkPipeline>> pipeline_ready;
  std::unique_ptr<ChunkPipeline> pipeline;
  // Takes the pipeline from its helper when made; false while it is not.
  bool PipelineReady() {
    if (pipeline) return true;
    if (pipeline_ready.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
    pipeline = pipeline_ready.get();
    return true;
  }

  Status ChooseTypeAndBase();
  Status TakeSnapshotAndPlan();
  void AbortStart();
  bool Step();
  void SubmitReads();
  // Drops the granted reads (ReadQos) that are complete; true when at most
  // `n` are still pending.
  bool QosReadsPendingAtMost(size_t n);
  // One piece of a chunk: a read submitted to the pool, or (read_off_thread)
  // its blocks resolved for the worker.
  Status SubmitRead(uint64_t chunk_index, ChunkFill& chunk, uint64_t offset, uint64_t length);
  Status ResolvePiece(ChunkFill& chunk, uint64_t offset, uint64_t length);
  // A worker's fill: reads the pieces' resolved blocks (in piece order) into
  // the chunk buffer `into`.
  Status ReadResolvedPieces(const std::vector<Piece>& pieces,
                            const std::vector<format::MapEntry>& blocks, std::byte* into);
  void SealGather();
  void MaybeSubmitChunk(uint64_t index);
  void OnReadDone(VolumeRequest& request, const Status& status);
  void TakeOutputs();
  void BuildManifest();
  void SubmitExtends();
  bool StepFailing();
  void Finish();
  void DeleteSupersededSnapshots();
  void Wait();
  BackupProgress Progress() const;
};

Status BackupJob::Impl::ChooseTypeAndBase() {
  Result<std::vector<BackupSet>> listed = ListBackupSets(store, volume.name);
  if (!listed.ok()) return listed.status();
  volume_sets = std::move(listed).value();
  Result<std::vector<SnapshotInfo>> snaps = pool.ListSnapshots(volume.name);
  if (!snaps.ok()) return snaps.status();
  std::set<std::string> snapshot_names;
  for (const SnapshotInfo& s : *snaps) snapshot_names.insert(s.name);
  auto has_snapshot = [&](const BackupSet& s) {
    return snapshot_names.count(SnapshotNameFor(s.id)) > 0;
  };
  const std::string lineage = std::to_string(volume.lineage);
  const BackupSet* base = nullptr;

  switch (options.method) {
    case BackupMethod::kSnapshot: {
      set.type = BackupType::kSnapshot;
      auto mine = SetsOf(volume_sets, volume, {BackupType::kSnapshot});
      for (auto it = mine.rbegin(); it != mine.rend(); ++it) {
        if (has_snapshot(**it)) {
          overlay_base = **it;
          break;
        }
      }
      return Status::OK();
    }
    case BackupMethod::kFull:
      set.type = BackupType::kFull;
      return Status::OK();
    case BackupMethod::kAuto: {
      set.type = BackupType::kFull;
      auto fulls = SetsOf(volume_sets, volume, {BackupType::kFull});
      const int64_t now = store.NowUnixNs();
      if (!fulls.empty() && now - fulls.back()->finished_unix_ns < kAutoFullWindowNs &&
          has_snapshot(*fulls.back())) {
        set.type = BackupType::kDiff;
        base = fulls.back();
      }
      break;
    }
    case BackupMethod::kDiff: {
      set.type = BackupType::kDiff;
      auto fulls = SetsOf(volume_sets, volume, {BackupType::kFull});
      if (fulls.empty()) {
        return Status::NotFound("no full backup of '" + volume.name + "' in lineage " + lineage +
                                " to differentiate from; take a full backup first");
      }
      base = fulls.back();
      break;
    }
    case BackupMethod::kIncr: {
      set.type = BackupType::kIncr;
      auto any =
          SetsOf(volume_sets, volume, {BackupType::kFull, BackupType::kDiff, BackupType::kIncr});
      if (any.empty()) {
        return Status::NotFound("no backup of '" + volume.name + "' in lineage " + lineage +
                                " to increment from; take a full backup first");
      }
      base = any.back();
      break;
    }
    case BackupMethod::kLog:
      SNAPDISK_CHECK(false, "Start hands log backups to LogBackupJob");
  }
  if (base == nullptr) return Status::OK();
  if (!has_snapshot(*base)) {
    return Status::NotFound(std::string(BackupTypeName(base->type)) + " backup " + base->id +
                            " of '" + volume.name + "' has no snapshot '" +
                            SnapshotNameFor(base->id) + "' in the pool any more, and a " +
                            BackupTypeName(set.type) +
                            " backup needs it to find the changes; take a full backup first");
  }
  base_chain.push_back(*base);
  if (base->type != BackupType::kFull) {
    SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupSet> rest, BaseChain(*base, volume_sets));
    for (BackupSet& b : rest) base_chain.push_back(std::move(b));
  }
  return Status::OK();
}

Status BackupJob::Impl::TakeSnapshotAndPlan() {
  Result<SnapshotInfo> snap = pool.CreateSnapshot(volume.name, snapshot_name);
  if (!snap.ok()) return snap.status().WithContext("backup " + set.id);
  // No commit: the snapshot is usable at once, and until the set is in the
  // store nothing needs it to survive a crash (the commit of the job's last
  // step makes it durable). A commit here wrote the workload's pending
  // metadata on the pool's thread: 3-7 ms of stalled requests in the
  // comparator at every backup start.
  snapshot_created = true;
  SNAPDISK_ASSIGN_OR_RETURN(snapshot, pool.OpenSnapshot(volume.name, snapshot_name));
  snapshot->SetInUse(true);  // nobody deletes it under the job
  read_off_thread = pool.device().SupportsConcurrentReads();
  if (IsPhysical(set.type)) {
    SNAPDISK_ASSIGN_OR_RETURN(live, pool.OpenVolume(volume.name));
    if (!read_off_thread) snapshot->ChargeQosTo(live);
  }

  std::string from;
  if (overlay_base) from = SnapshotNameFor(overlay_base->id);
  if (!base_chain.empty()) from = SnapshotNameFor(base_chain.front().id);
  SNAPDISK_ASSIGN_OR_RETURN(changed, pool.Diff(volume.name, from, snapshot_name));
  uint64_t total = 0;
  for (const Extent& e : changed) {
    if (e.zero) {
      // Only diff and incr list what became zero; a snapshot set drops those
      // ranges from its image, and a full has none.
      if (set.type == BackupType::kDiff || set.type == BackupType::kIncr) {
        set.zero_extents.push_back(ZeroExtent{e.offset_bytes, e.length_bytes});
      }
    } else {
      to_copy.push_back(e);
      total += e.length_bytes;
    }
  }
  total_bytes.store(total);

  set.last_lsn = snap->lsn;
  set.first_lsn = base_chain.empty() ? 0 : base_chain.front().last_lsn + 1;
  set.base = base_chain.empty() ? "" : base_chain.front().id;
  set.consistent_unix_ns = snap->created_unix_ns;
  set.volume_size_bytes = snap->size_bytes;
  set.block_bytes = pool.block_bytes();
  return Status::OK();
}

void BackupJob::Impl::AbortStart() {
  if (snapshot != nullptr) {
    snapshot->SetInUse(false);
    snapshot->ChargeQosTo(nullptr);
  }
  if (snapshot_created) {
    (void)pool.DeleteSnapshot(volume.name, snapshot_name);
    (void)pool.Commit();
  }
  if (reserved) ReleaseBackupSequence(store, volume.name, set.sequence);
  reserved = false;
}

Result<std::unique_ptr<BackupJob>> BackupJob::Start(Pool& pool, WormStore& store,
                                                    std::string_view volume,
                                                    const BackupOptions& options) {
  if (!options.retain_forever) SNAPDISK_RETURN_IF_ERROR(ValidateRetentionDays(options.retain_days));
  if (!(options.rate_mb_per_s >= 0) || !std::isfinite(options.rate_mb_per_s)) {
    return Status::InvalidArgument("rate must be a non-negative number of MB/s (got " +
                                   std::to_string(options.rate_mb_per_s) + ")");
  }
  if (options.worker_threads < 1 || options.worker_threads > kMaxWorkerThreads) {
    return Status::InvalidArgument("worker threads must be 1-" + std::to_string(kMaxWorkerThreads) +
                                   " (got " + std::to_string(options.worker_threads) + ")");
  }
  if (options.max_reads_in_flight < 1 || options.max_reads_in_flight > kMaxReadsInFlight) {
    return Status::InvalidArgument("reads in flight must be 1-" +
                                   std::to_string(kMaxReadsInFlight) + " (got " +
                                   std::to_string(options.max_reads_in_flight) + ")");
  }
  SNAPDISK_ASSIGN_OR_RETURN(VolumeInfo info, pool.GetVolume(volume));
  // A fenced volume (being restored) holds no state of its own worth keeping
  // yet: it is not for use until its restore opens it.
  if (Result<std::string> fence = pool.GetAttribute(volume, Pool::kWriteFenceAttribute);
      fence.ok()) {
    return Status::PermissionDenied("volume '" + info.name + "' cannot be backed up: " + *fence);
  } else if (!fence.status().IsNotFound()) {
    return fence.status();
  }
  if (options.method == BackupMethod::kLog) {
    SNAPDISK_ASSIGN_OR_RETURN(auto log, LogBackupJob::Start(pool, store, volume, options));
    std::unique_ptr<BackupJob> job(new BackupJob(std::move(log)));
    job->Remember(pool, store, info.name, options);
    return job;
  }
  const WormStoreConfig& config = store.config();
  if (config.chunk_bytes == 0 || config.chunk_bytes % pool.block_bytes() != 0 ||
      config.chunk_bytes > (uint64_t{64} << 20)) {
    return Status::InvalidArgument("store chunk size " + std::to_string(config.chunk_bytes) +
                                   " is not a multiple of the pool's block size " +
                                   std::to_string(pool.block_bytes()) + " up to 64 MiB");
  }

  auto impl = std::make_unique<Impl>(pool, store, options);
  impl->volume = info;
  impl->started_steady_ns = impl->clock.NowNs();
  SNAPDISK_RETURN_IF_ERROR(impl->ChooseTypeAndBase());

  BackupSet& set = impl->set;
  SNAPDISK_ASSIGN_OR_RETURN(set.sequence, ReserveBackupSequence(store, info.name));
  impl->reserved = true;
  {
    // A snapshot "backup-<id>" left by a job that crashed (or made for
    // another store) holds the name: step over it rather than touch it.
    Result<std::vector<SnapshotInfo>> snaps = pool.ListSnapshots(info.name);
    if (!snaps.ok()) {
      impl->AbortStart();
      return snaps.status();
    }
    std::set<std::string> names;
    for (const SnapshotInfo& s : *snaps) names.insert(s.name);
    const char letter = BackupTypeLetter(set.type);
    while (names.count(SnapshotNameFor(letter + std::to_string(set.sequence)))) {
      ReleaseBackupSequence(store, info.name, set.sequence);
      impl->reserved = false;
      SNAPDISK_ASSIGN_OR_RETURN(set.sequence,
                                ReserveBackupSequence(store, info.name, set.sequence + 1));
      impl->reserved = true;
    }
  }
  set.id = std::string(1, BackupTypeLetter(set.type)) + std::to_string(set.sequence);
  set.volume = info.name;
  set.volume_id = info.id;
  set.lineage = info.lineage;
  set.started_unix_ns = store.NowUnixNs();
  set.retain_until_unix_ns = RetainUntilUnixNs(options, set.started_unix_ns);
  impl->snapshot_name = SnapshotNameFor(set.id);
  if (Status s = impl->TakeSnapshotAndPlan(); !s.ok()) {
    impl->AbortStart();
    return s;
  }

  ChunkPipeline::Options po;
  po.worker_threads = options.worker_threads;
  po.lowest_priority = options.lowest_priority.value_or(impl->set.type == BackupType::kSnapshot);
  if (po.lowest_priority) po.worker_cpus = CpusBesideThisThread();
  po.buffers = options.max_reads_in_flight + 2 * options.worker_threads;
  po.chunk_bytes = config.chunk_bytes;
  po.zstd_level = config.zstd_level;
  po.retain_until_unix_ns = set.retain_until_unix_ns;
  po.max_other_tasks = 4 * options.worker_threads;
  po.done_bytes = &impl->done_bytes;
  po.stored_bytes = &impl->stored_bytes;
  // Made on a helper thread: starting 8 threads and mapping 20 buffers took
  // the pool's thread 2-4 ms of CPU at every backup start (the comparator's
  // trace). Step waits for it without blocking.
  impl->pipeline_ready = std::async(std::launch::async, [&store, po] {
    MoveThisThreadTo(po.worker_cpus);
    if (po.lowest_priority) LowerThisThreadToLowest();
    return std::make_unique<ChunkPipeline>(store, po);
  });
  impl->slots.resize(options.max_reads_in_flight);
  impl->next_read_ns = impl->clock.NowNs();
  impl->rate_mb_per_s = options.rate_mb_per_s;
  std::unique_ptr<BackupJob> job(new BackupJob(std::move(impl)));
  job->Remember(pool, store, info.name, options);
  return job;
}

BackupJob::BackupJob(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BackupJob::BackupJob(std::unique_ptr<LogBackupJob> log) : log_(std::move(log)) {}

BackupJob::~BackupJob() {
  if (impl_ && !impl_->finished) {
    impl_->cancel_requested.store(true);
    while (!impl_->Step()) impl_->Wait();
  }
}

void BackupJob::Remember(Pool& pool, WormStore& store, const std::string& volume,
                         const BackupOptions& options) {
  pool_ = &pool;
  store_ = &store;
  volume_ = volume;
  trigger_ = options.trigger;
  method_ = BackupMethodName(options.method);
  started_unix_ns_ = progress().started_unix_ns;
}

bool BackupJob::Step() {
  const bool done = log_ ? log_->Step() : impl_->Step();
  if (done && !recorded_) {
    recorded_ = true;
    // The task history (snapshot/backup_history.h); best effort: a backup
    // is not failed by its log entry.
    const Result<BackupSet>& set = result();
    const BackupProgress p = progress();
    BackupTask task;
    task.volume = volume_;
    task.trigger = trigger_;
    task.method = method_;
    task.started_unix_ns = started_unix_ns_;
    task.finished_unix_ns = store_->NowUnixNs();
    if (set.ok()) {
      task.set_id = set->id;
      task.method = BackupTypeName(set->type);
      task.started_unix_ns = set->started_unix_ns;
      task.finished_unix_ns = set->finished_unix_ns;
      task.data_bytes = set->data_bytes;
      task.stored_bytes = set->stored_bytes;
      task.result = "done";
    } else {
      task.stored_bytes = p.stored_bytes;
      task.result = set.status().IsCancelled()   ? "cancelled"
                    : IsNothingToShip(set.status()) ? "nothing to ship"
                                                    : "failed";
      if (task.result == "failed") task.error = set.status().ToString();
    }
    // One commit for the record and what the job's end changed (snapshots
    // deleted), recorded or not.
    if (pool_->health().ok()) {
      (void)RecordBackupTask(*pool_, task);
      (void)pool_->Commit();
    }
    // After the commit that made this set's snapshot durable: the ones it
    // supersedes go, their blocks freed by Poll in slices (a deletion holds
    // the pool's thread ~1.5 ms for a 256 MiB volume's changes) and at the
    // latest by the next commit. A crash before that commit brings them back;
    // the next job deletes them again.
    if (impl_ && set.ok() && pool_->health().ok()) impl_->DeleteSupersededSnapshots();
  }
  return done;
}

const Result<BackupSet>& BackupJob::result() const {
  return log_ ? log_->result() : impl_->result;
}

BackupProgress BackupJob::progress() const {
  return log_ ? log_->progress() : impl_->Progress();
}

void BackupJob::SetRate(double mb_per_s) {
  if (impl_ == nullptr || impl_->live == nullptr) return;  // not a physical backup
  if (!(mb_per_s >= 0) || !std::isfinite(mb_per_s)) return;
  impl_->rate_mb_per_s = mb_per_s;
}

void BackupJob::Cancel() {
  if (log_) {
    log_->Cancel();
  } else {
    impl_->cancel_requested.store(true);
  }
}

Result<BackupSet> BackupJob::Run(const std::function<bool(const BackupProgress&)>& progress) {
  auto last = std::chrono::steady_clock::now();
  while (!Step()) {
    if (progress) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last >= std::chrono::milliseconds(100)) {
        last = now;
        if (!progress(this->progress())) Cancel();
      }
    }
    // A log job waits on nothing but its workers; a data job also on reads.
    if (log_) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    } else {
      impl_->Wait();
    }
  }
  if (progress) (void)progress(this->progress());
  return result();
}

bool BackupJob::Impl::Step() {
  if (finished) return true;
  if (!PipelineReady()) return false;
  if (cancel_requested.load() && error.ok() && phase != Phase::kManifest) {
    error = Status::Cancelled("backup " + set.id + " of '" + volume.name + "' was cancelled");
  }
  TakeOutputs();
  if (!error.ok() && phase != Phase::kManifest) return StepFailing();
  switch (phase) {
    case Phase::kCopy:
      SubmitReads();
      if (error.ok() && copy_index == to_copy.size() && reads_in_flight == 0 &&
          chunks_outstanding == 0 && QosReadsPendingAtMost(0)) {
        // On a worker: a snapshot set's overlay of thousands of extents took
        // the pool's thread ~4 ms. The job's state is the task's until its
        // output is in (nothing else is outstanding).
        if (pipeline->TrySubmitTask(
                [this] {
                  BuildManifest();
                  return Status::OK();
                },
                0)) {
          ++tasks_outstanding;
          phase = Phase::kBuild;
        }
      }
      if (!error.ok()) return StepFailing();
      break;
    case Phase::kBuild:
      if (tasks_outstanding == 0) phase = Phase::kExtend;
      break;
    case Phase::kExtend:
      SubmitExtends();
      if (extend_next == extend_keys.size() && tasks_outstanding == 0) {
        // Put last: the set becomes visible only when everything it needs is
        // stored and retained.
        const bool queued = pipeline->TrySubmitTask(
            [this] {
              set.finished_unix_ns = store.NowUnixNs();
              return PutManifest(store, set);
            },
            0);
        if (queued) {
          ++tasks_outstanding;
          phase = Phase::kManifest;
        }
      }
      break;
    case Phase::kManifest:
      if (tasks_outstanding == 0) {
        if (!error.ok()) {
          phase = Phase::kCopy;  // nothing was put: fail like any other step
          return StepFailing();
        }
        Finish();
      }
      break;
    case Phase::kDone:
      break;
  }
  return finished;
}

void BackupJob::Impl::SubmitReads() {
  const uint64_t chunk_bytes = store.config().chunk_bytes;
  const double rate_bytes_per_ns = rate_mb_per_s * 1e6 / 1e9;
  pool_busy = false;
  const int64_t step_end = clock.NowNs() + kBackupStepBudgetNs;
  bool submitted = false;
  while (reads_in_flight < slots.size() && copy_index < to_copy.size()) {
    int64_t now = clock.NowNs();
    if (submitted && now >= step_end) break;  // the rest at the next step
    if (rate_bytes_per_ns > 0 && now < next_read_ns) break;
    if (!QosReadsPendingAtMost(slots.size() - 1)) break;
    const Extent& e = to_copy[copy_index];
    const uint64_t offset = e.offset_bytes + copy_offset;
    // Cut at multiples of the chunk size (so unchanged data cuts the same way
    // in every backup and dedups) and at the extent's end (never across a hole).
    const uint64_t boundary = (offset / chunk_bytes + 1) * chunk_bytes;
    const uint64_t end = std::min(boundary, e.offset_bytes + e.length_bytes);
    const uint64_t length = end - offset;
    // A whole chunk is a chunk of its own; shorter pieces are gathered.
    const bool whole = length == chunk_bytes;
    if (!whole && gathering && chunks[*gathering].used_bytes + length > chunk_bytes) SealGather();
    uint64_t chunk_index;
    if (!whole && gathering) {
      chunk_index = *gathering;
    } else {
      std::byte* buffer = pipeline->AcquireBuffer();
      if (buffer == nullptr) break;
      chunk_index = next_chunk++;
      chunks.emplace(chunk_index, ChunkFill{buffer, 0, {}, {}, 0, whole, false});
      ++chunks_outstanding;
      if (!whole) gathering = chunk_index;
    }
    ChunkFill& chunk = chunks[chunk_index];
    Status s = read_off_thread ? ResolvePiece(chunk, offset, length)
                               : SubmitRead(chunk_index, chunk, offset, length);
    if (!s.ok()) {
      if (chunk.pieces.empty()) {  // nothing read into it yet: give it back
        pipeline->ReleaseBuffer(chunk.buffer);
        chunks.erase(chunk_index);
        --chunks_outstanding;
        if (gathering == chunk_index) gathering.reset();
      }
      if (s.IsBusy()) {
        pool_busy = true;  // the pool's request limit: retry after a Poll
      } else {
        error = s.WithContext("backup " + set.id + ": reading '" + volume.name + "@" +
                              snapshot_name + "'");
      }
      break;
    }
    if (QosLimiter* qos = ReadQos()) {
      qos_completions.push_back(qos->Reserve(IoOp::kRead, length, pool.clock().NowNs()).complete_ns);
    }
    chunk.pieces.push_back(Piece{offset, length, chunk.used_bytes});
    chunk.used_bytes += length;
    submitted = true;
    if (read_off_thread) MaybeSubmitChunk(chunk_index);  // a whole chunk goes at once
    copy_offset += length;
    if (copy_offset == e.length_bytes) {
      ++copy_index;
      copy_offset = 0;
    }
    if (rate_bytes_per_ns > 0) {
      next_read_ns =
          std::max(next_read_ns, now - kPaceBurstNs) +
          static_cast<int64_t>(std::ceil(static_cast<double>(length) / rate_bytes_per_ns));
    }
  }
  // Everything is read or reading: the open gather chunk is complete.
  if (copy_index == to_copy.size() && gathering) SealGather();
}

bool BackupJob::Impl::QosReadsPendingAtMost(size_t at_most) {
  if (qos_completions.empty()) return true;
  const int64_t now = pool.clock().NowNs();
  std::erase_if(qos_completions, [now](int64_t complete_ns) { return complete_ns <= now; });
  return qos_completions.size() <= at_most;
}

Status BackupJob::Impl::SubmitRead(uint64_t chunk_index, ChunkFill& chunk, uint64_t offset,
                                   uint64_t length) {
  size_t slot_index = 0;
  while (slots[slot_index].busy) ++slot_index;
  ReadSlot& slot = slots[slot_index];
  slot.request = VolumeRequest{};
  slot.request.op = VolumeOp::kRead;
  slot.request.offset_bytes = offset;
  slot.request.length_bytes = length;
  slot.request.data = chunk.buffer + chunk.used_bytes;
  slot.request.user_tag = slot_index;
  slot.request.on_complete = [this](VolumeRequest& r, const Status& s) { OnReadDone(r, s); };
  slot.chunk = chunk_index;
  SNAPDISK_RETURN_IF_ERROR(snapshot->Submit(slot.request));
  ++chunk.reads_pending;
  slot.busy = true;
  ++reads_in_flight;
  return Status::OK();
}

Status BackupJob::Impl::ResolvePiece(ChunkFill& chunk, uint64_t offset, uint64_t length) {
  const uint32_t block = pool.block_bytes();
  SNAPDISK_CHECK(offset % block == 0, "a piece that starts inside a block");
  // A piece ends on a block boundary or at the volume's end, which may be
  // inside its last block: that block whole.
  SNAPDISK_ASSIGN_OR_RETURN(
      std::vector<format::MapEntry> blocks,
      pool.ResolveSnapshotBlocks(*snapshot, offset / block, (length + block - 1) / block));
  chunk.blocks.insert(chunk.blocks.end(), blocks.begin(), blocks.end());
  return Status::OK();
}

void BackupJob::Impl::SealGather() {
  const uint64_t index = *gathering;
  gathering.reset();
  chunks.at(index).sealed = true;
  MaybeSubmitChunk(index);
}

// Hands a sealed chunk whose reads are all in to the pipeline (or, after a
// failed read or once the job is failing, its buffer back).
void BackupJob::Impl::MaybeSubmitChunk(uint64_t index) {
  ChunkFill& chunk = chunks.at(index);
  if (!chunk.sealed || chunk.reads_pending > 0 || chunk.buffer == nullptr) return;
  std::byte* buffer = std::exchange(chunk.buffer, nullptr);
  if (chunk.failed || !error.ok() || cancel_requested.load()) {
    pipeline->ReleaseBuffer(buffer);
    --chunks_outstanding;
    chunks.erase(index);
    return;
  }
  ChunkPipeline::Fill fill;
  if (read_off_thread) {
    fill = [this, pieces = chunk.pieces, blocks = std::move(chunk.blocks)](std::byte* into) {
      Status s = ReadResolvedPieces(pieces, blocks, into);
      return s.WithContext("reading '" + volume.name + "@" + snapshot_name + "'");
    };
  }
  pipeline->SubmitChunk(buffer, chunk.used_bytes, index, std::move(fill));
}

Status BackupJob::Impl::ReadResolvedPieces(const std::vector<Piece>& pieces,
                                           const std::vector<format::MapEntry>& blocks,
                                           std::byte* into) {
  const uint32_t block = pool.block_bytes();
  const format::MapEntry* next = blocks.data();
  for (const Piece& p : pieces) {
    const uint64_t whole = p.length_bytes / block;
    const uint64_t tail = p.length_bytes % block;  // of the volume's last, partial block
    std::byte* at = into + p.buffer_offset;
    const uint64_t first_vbn = p.offset_bytes / block;
    SNAPDISK_RETURN_IF_ERROR(pool.ReadResolvedBlocks({next, whole}, first_vbn, at));
    if (tail > 0) {
      AlignedBuffer last(block);  // the block is read and checked whole
      SNAPDISK_RETURN_IF_ERROR(
          pool.ReadResolvedBlocks({next + whole, 1}, first_vbn + whole, last.data()));
      std::memcpy(at + whole * block, last.data(), tail);
    }
    next += whole + (tail > 0 ? 1 : 0);
    read_bytes.fetch_add(p.length_bytes);
  }
  return Status::OK();
}

void BackupJob::Impl::OnReadDone(VolumeRequest& request, const Status& status) {
  ReadSlot& slot = slots[request.user_tag];
  slot.busy = false;
  --reads_in_flight;
  ChunkFill& chunk = chunks.at(slot.chunk);
  --chunk.reads_pending;
  if (!status.ok()) {
    chunk.failed = true;
    if (error.ok()) {
      error = status.WithContext("backup " + set.id + ": reading '" + volume.name + "@" +
                                 snapshot_name + "'");
    }
  } else {
    read_bytes.fetch_add(request.length_bytes);
  }
  // A failing job seals the open gather chunk so that its buffer comes back.
  if ((!error.ok() || cancel_requested.load()) && gathering == slot.chunk) {
    SealGather();
    return;
  }
  MaybeSubmitChunk(slot.chunk);
}

void BackupJob::Impl::TakeOutputs() {
  outputs.clear();
  pipeline->TakeOutputs(outputs);
  for (ChunkPipeline::Output& o : outputs) {
    if (o.is_chunk) {
      --chunks_outstanding;
    } else {
      --tasks_outstanding;
    }
    std::vector<Piece> pieces;
    if (o.is_chunk) {
      auto filled = chunks.find(o.tag);
      SNAPDISK_CHECK(filled != chunks.end(), "pipeline output for an unknown chunk");
      pieces = std::move(filled->second.pieces);
      chunks.erase(filled);
    }
    if (!o.status.ok()) {
      if (error.ok()) error = o.status.WithContext("backup " + set.id);
      continue;
    }
    if (!o.is_chunk) continue;
    for (const Piece& p : pieces) {
      new_extents.push_back(ChunkExtent{p.offset_bytes, p.length_bytes, o.chunk.hash,
                                        p.buffer_offset});
    }
    auto [it, inserted] = new_chunks.try_emplace(o.chunk.hash, o.chunk);
    if (!inserted) {
      // The same bytes twice in one job: one object, stored by us if either
      // instance stored it.
      if (o.chunk.new_in_set && !it->second.new_in_set) it->second = o.chunk;
    }
  }
}

void BackupJob::Impl::BuildManifest() {
  std::sort(new_extents.begin(), new_extents.end(), [](const ChunkExtent& a, const ChunkExtent& b) {
    return a.offset_bytes < b.offset_bytes;
  });
  std::unordered_set<std::string> extend_set;
  if (set.type == BackupType::kSnapshot && overlay_base) {
    // The previous image minus every changed range (data or zero), plus the
    // new chunks. Both lists are sorted.
    std::vector<ChunkExtent> image;
    size_t ci = 0;
    for (const ChunkExtent& old : overlay_base->extents) {
      uint64_t pos = old.offset_bytes;
      const uint64_t end = old.offset_bytes + old.length_bytes;
      while (ci < changed.size() && changed[ci].offset_bytes + changed[ci].length_bytes <= pos)
        ++ci;
      size_t cj = ci;
      while (pos < end) {
        if (cj < changed.size() && changed[cj].offset_bytes < end) {
          const Extent& c = changed[cj];
          if (c.offset_bytes > pos) {
            image.push_back(ChunkExtent{pos, c.offset_bytes - pos, old.chunk,
                                        old.chunk_offset_bytes + (pos - old.offset_bytes)});
          }
          pos = std::max(pos, c.offset_bytes + c.length_bytes);
          ++cj;
        } else {
          image.push_back(ChunkExtent{pos, end - pos, old.chunk,
                                      old.chunk_offset_bytes + (pos - old.offset_bytes)});
          pos = end;
        }
      }
    }
    std::unordered_map<std::string, const ChunkInfo*> old_chunks;
    for (const ChunkInfo& c : overlay_base->chunks) old_chunks[c.hash] = &c;
    for (const ChunkExtent& x : image) {
      if (new_chunks.count(x.chunk)) continue;
      auto it = old_chunks.find(x.chunk);
      SNAPDISK_CHECK(it != old_chunks.end(), "base manifest extent without its chunk");
      if (extend_set.insert(it->second->key).second) {
        ChunkInfo shared = *it->second;
        shared.new_in_set = false;
        new_chunks.emplace(shared.hash, shared);
      }
    }
    image.insert(image.end(), new_extents.begin(), new_extents.end());
    std::sort(image.begin(), image.end(), [](const ChunkExtent& a, const ChunkExtent& b) {
      return a.offset_bytes < b.offset_bytes;
    });
    set.extents = std::move(image);
  } else {
    set.extents = std::move(new_extents);
  }
  new_extents.clear();
  // The chunk list in order of first use.
  std::unordered_set<std::string_view> listed;
  set.chunks.clear();
  for (const ChunkExtent& x : set.extents) {
    if (!listed.insert(x.chunk).second) continue;
    set.chunks.push_back(new_chunks.at(x.chunk));
  }
  set.data_bytes = SumLengths(set.extents);
  set.stored_bytes = 0;
  for (const ChunkInfo& c : set.chunks) {
    if (c.new_in_set) set.stored_bytes += c.stored_bytes;
  }
  // A diff or incr needs its chain to live as long as it does.
  for (const BackupSet& b : base_chain) {
    if (extend_set.insert(b.key).second) extend_keys.push_back(b.key);
    for (const ChunkInfo& c : b.chunks) {
      if (new_chunks.count(c.hash) == 0 && extend_set.insert(c.key).second) {
        extend_keys.push_back(c.key);
      }
    }
  }
  if (set.type == BackupType::kSnapshot) {
    for (const ChunkInfo& c : set.chunks) {
      if (!c.new_in_set && extend_set.count(c.key)) extend_keys.push_back(c.key);
    }
  }
}

void BackupJob::Impl::SubmitExtends() {
  const int64_t until = set.retain_until_unix_ns;
  while (extend_next < extend_keys.size()) {
    const size_t n = std::min(kKeysPerExtendTask, extend_keys.size() - extend_next);
    std::vector<std::string> keys(extend_keys.begin() + extend_next,
                                  extend_keys.begin() + extend_next + n);
    const bool queued = pipeline->TrySubmitTask(
        [this, keys = std::move(keys), until]() -> Status {
          Status s = store.RetainAtLeast(keys, until);
          if (s.IsNotFound()) {
            return Status::NotFound(s.message() + ", which the set depends on: it is gone");
          }
          return s.WithContext("extending the retention of what the set depends on");
        },
        0);
    if (!queued) break;
    ++tasks_outstanding;
    extend_next += n;
  }
}

bool BackupJob::Impl::StepFailing() {
  pipeline->Cancel();
  if (gathering) SealGather();  // its buffer comes back once its reads are in
  if (reads_in_flight > 0) return false;
  if (pipeline->pending() > 0) {
    TakeOutputs();  // running tasks finish; their outputs no longer matter
    if (pipeline->pending() > 0) return false;
  }
  AbortStart();
  state.store(error.IsCancelled() ? BackupState::kCancelled : BackupState::kFailed);
  result = error;
  finished = true;
  phase = Phase::kDone;
  finished_steady_ns.store(clock.NowNs());
  return true;
}

void BackupJob::Impl::Finish() {
  snapshot->SetInUse(false);
  snapshot->ChargeQosTo(nullptr);
  // No commit here: BackupJob::Step commits once the task is recorded, in the
  // same step (a commit holds the pool's thread, so one, not two), then
  // deletes the snapshots the set supersedes. The set is durable whatever
  // that commit says; a failed commit fails the pool, which its next user
  // hears about.
  ReleaseBackupSequence(store, volume.name, set.sequence);
  reserved = false;
  result = set;
  state.store(BackupState::kDone);
  finished = true;
  phase = Phase::kDone;
  finished_steady_ns.store(clock.NowNs());
}

void BackupJob::Impl::DeleteSupersededSnapshots() {
  // Kept: this set's snapshot, and for physical backups the last full's (a
  // later diff needs it). Other backup snapshots of the same method chain go.
  std::set<std::string> keep = {set.id};
  if (IsPhysical(set.type) && !base_chain.empty()) keep.insert(base_chain.back().id);
  const bool physical = IsPhysical(set.type);
  for (const BackupSet& s : volume_sets) {
    if (s.volume_id != volume.id || keep.count(s.id)) continue;
    const bool same_chain = physical ? IsPhysical(s.type) : s.type == BackupType::kSnapshot;
    if (!same_chain) continue;
    // Best effort: a snapshot in use (say, exported over NBD) stays.
    Status st = pool.DeleteSnapshot(volume.name, SnapshotNameFor(s.id), Pool::Release::kInBackground);
    (void)st;
  }
}

void BackupJob::Impl::Wait() {
  if (!pipeline) {
    (void)pipeline_ready.wait_for(std::chrono::milliseconds(1));
    return;
  }
  if (reads_in_flight > 0 || pool_busy) {
    pool.Poll(1);
    return;
  }
  // The next granted read to complete (past ones dropped first: a stale one
  // made the wait below 0 and the driving loop spin).
  int64_t timeout_ns = 5'000'000;
  int64_t qos_next_ns = 0;
  if (!QosReadsPendingAtMost(0)) {
    qos_next_ns = *std::min_element(qos_completions.begin(), qos_completions.end());
    timeout_ns = std::min(timeout_ns, qos_next_ns - pool.clock().NowNs());
  }
  if (pipeline->pending() > 0) {
    pipeline->WaitForOutput(timeout_ns);
    return;
  }
  if (qos_next_ns > 0) {
    pool.clock().SleepUntilNs(qos_next_ns);  // a granted read completes
    return;
  }
  if (rate_mb_per_s > 0 && phase == Phase::kCopy && copy_index < to_copy.size()) {
    const int64_t now = clock.NowNs();
    if (now < next_read_ns) clock.SleepUntilNs(next_read_ns);
  }
}

BackupProgress BackupJob::Impl::Progress() const {
  BackupProgress p;
  p.id = set.id;
  p.volume = volume.name;
  p.type = set.type;
  p.state = state.load();
  p.total_bytes = total_bytes.load();
  p.done_bytes = done_bytes.load();
  p.read_bytes = read_bytes.load();
  p.stored_bytes = stored_bytes.load();
  p.started_unix_ns = set.started_unix_ns;
  const int64_t end_ns = finished_steady_ns.load();
  const int64_t elapsed_ns = (end_ns != 0 ? end_ns : clock.NowNs()) - started_steady_ns;
  if (elapsed_ns > 0) p.rate_bytes_per_s = p.done_bytes * 1e9 / static_cast<double>(elapsed_ns);
  if (p.state == BackupState::kRunning && p.rate_bytes_per_s > 0 && p.total_bytes > p.done_bytes) {
    p.eta_s = (p.total_bytes - p.done_bytes) / p.rate_bytes_per_s;
  }
  return p;
}

// ---- Reports and retention ------------------------------------------------------

Result<std::vector<StorageReport>> ReportStorage(WormStore& store, std::string_view volume) {
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupSet> sets, ListBackupSets(store, volume));
  std::map<std::string, StorageReport> reports;
  std::map<std::string, std::unordered_set<std::string>> counted;  // volume -> chunk keys
  for (const BackupSet& s : sets) {
    StorageReport& r = reports[s.volume];
    r.volume = s.volume;
    if (s.volume_size_bytes != 0) r.volume_size_bytes = s.volume_size_bytes;
    ++r.sets;
    uint64_t bytes = 0;
    if (s.chunks.empty()) {
      bytes = s.stored_bytes;
    } else {
      for (const ChunkInfo& c : s.chunks) {
        if (c.new_in_set && counted[s.volume].insert(c.key).second) bytes += c.stored_bytes;
      }
    }
    if (s.type == BackupType::kSnapshot) {
      r.snapshot_bytes += bytes;
    } else if (s.type == BackupType::kLog) {
      r.log_bytes += bytes;
    } else {
      r.physical_bytes += bytes;
    }
  }
  std::vector<StorageReport> out;
  for (auto& [name, r] : reports) {
    r.free_quota_bytes = r.volume_size_bytes / 2;
    const uint64_t charged = r.physical_bytes + r.log_bytes;
    r.billable_bytes = charged > r.free_quota_bytes ? charged - r.free_quota_bytes : 0;
    out.push_back(std::move(r));
  }
  return out;
}

Status ExtendBackupSet(WormStore& store, std::string_view id, int64_t until_unix_ns) {
  const int64_t now = store.NowUnixNs();
  if (until_unix_ns <= now) {
    return Status::PermissionDenied("retention of backup set " + std::string(id) +
                                    " cannot end in the past (" + FormatRfc3339(until_unix_ns) +
                                    " is before now, " + FormatRfc3339(now) + ")");
  }
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet set, FindBackupSet(store, id));
  if (until_unix_ns < set.retain_until_unix_ns) {
    return Status::PermissionDenied("backup set " + set.id + " is retained until " +
                                    FormatRfc3339(set.retain_until_unix_ns) +
                                    "; retention can only be extended, not shortened to " +
                                    FormatRfc3339(until_unix_ns));
  }
  std::vector<BackupSet> chain;
  if (set.type == BackupType::kDiff || set.type == BackupType::kIncr) {
    SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupSet> volume_sets,
                              ListBackupSets(store, set.volume));
    SNAPDISK_ASSIGN_OR_RETURN(chain, BaseChain(set, volume_sets));
  }
  chain.insert(chain.begin(), set);
  std::unordered_set<std::string> done;
  std::vector<std::string> keys;
  for (const BackupSet& s : chain) {
    if (done.insert(s.key).second) keys.push_back(s.key);
    for (std::string& k : RestoreIndexKeys(s)) keys.push_back(std::move(k));
    for (const ChunkInfo& c : s.chunks) {
      if (done.insert(c.key).second) keys.push_back(c.key);
    }
  }
  return store.RetainAtLeast(keys, until_unix_ns).WithContext("extending backup set " + set.id);
}

}  // namespace snapdisk
