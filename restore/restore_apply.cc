// Applying backup sets to volumes (restore/restore_apply.h).
//
// Atomicity of a step comes from the engine, not from reading everything
// first: an O(1) snapshot of the target before the step, a rollback to it on
// failure. That keeps memory bounded (chunks stream through) and lets reads
// from the store overlap writes to the volume.
#include "restore/restore_apply.h"

#include <algorithm>
#include <set>
#include <unordered_map>

#include "disk/bytes.h"
#include "restore/lazy_restore.h"
#include "restore/restore_io.h"
#include "snapshot/log_backup.h"

namespace snapdisk {

namespace {

constexpr uint64_t kLogProgressBytes = uint64_t{1} << 20;
constexpr char kUndoPrefix[] = "restore-undo-";

bool IsFullLike(BackupType t) { return t == BackupType::kFull || t == BackupType::kSnapshot; }

// Adds `a` to the state's list of applied sets, bounded: log segments that
// follow on merge into one entry ("L5..L9"), and past kMaxAppliedEntries the
// oldest entries after the first (the chain's full) are dropped and counted.
constexpr size_t kMaxAppliedEntries = 64;
void RecordApplied(RestoreState& state, AppliedSet a) {
  if (!state.applied.empty()) {
    AppliedSet& last = state.applied.back();
    if (a.type == BackupType::kLog && last.type == BackupType::kLog &&
        a.first_lsn == last.last_lsn + 1) {
      const std::string first = last.id.substr(0, last.id.find(".."));
      last.id = first + ".." + a.id;
      last.last_lsn = a.last_lsn;
      return;
    }
  }
  state.applied.push_back(std::move(a));
  if (state.applied.size() > kMaxAppliedEntries) {
    const size_t drop = state.applied.size() - kMaxAppliedEntries;
    state.applied.erase(state.applied.begin() + 1,
                        state.applied.begin() + 1 + static_cast<std::ptrdiff_t>(drop));
    state.applied_omitted += drop;
  }
}

Status ValidateOptions(const RestoreOptions& o) {
  if (o.fetch_threads < 1 || o.chunks_ahead < 1 || o.write_buffers < 2 ||
      o.max_writes_in_flight < 1 || o.write_buffer_bytes < 4096 ||
      o.write_buffer_bytes % 4096 != 0) {
    return Status::InvalidArgument(
        "restore options: fetch_threads and chunks_ahead must be >= 1, write_buffers >= 2, "
        "max_writes_in_flight >= 1, write_buffer_bytes a positive multiple of 4096");
  }
  return Status::OK();
}

constexpr char kRestoringFence[] =
    "the volume is being restored (apply the next backup with `snapdisk restore apply`, or make "
    "it live with `snapdisk restore open`)";

Status RemoveIfSet(Pool& pool, std::string_view volume, std::string_view key) {
  Status s = pool.RemoveAttribute(volume, key);
  return s.IsNotFound() ? Status::OK() : s;
}

// The state and the write fence that goes with it: a restoring volume takes
// no client writes (the restore's handle is exempt), an open one does. Both
// attributes change in the same commit.
Status WriteState(Pool& pool, std::string_view volume, const std::optional<RestoreState>& state) {
  if (state && state->phase == RestorePhase::kRestoring) {
    SNAPDISK_RETURN_IF_ERROR(pool.SetAttribute(volume, Pool::kWriteFenceAttribute, kRestoringFence));
  } else {
    SNAPDISK_RETURN_IF_ERROR(RemoveIfSet(pool, volume, Pool::kWriteFenceAttribute));
  }
  if (state) return pool.SetAttribute(volume, kRestoreStateAttribute, EncodeRestoreState(*state));
  return RemoveIfSet(pool, volume, kRestoreStateAttribute);
}

Status CheckIdle(Volume& v) {
  if (v.in_use()) {
    return Status::Busy("volume '" + v.name() + "' is in use (open by a client); restore refused");
  }
  if (v.in_flight() > 0) {
    return Status::Busy("volume '" + v.name() + "' has " + std::to_string(v.in_flight()) +
                        " requests in flight; restore refused");
  }
  return Status::OK();
}

// Marks a restored volume open (the state must be restoring, with no step
// pending) and turns a paused log back on; commits.
Status OpenVolume(Pool& pool, std::string_view volume, RestoreState* state) {
  if (state->log_paused) {
    SNAPDISK_RETURN_IF_ERROR(pool.SetLogEnabled(volume, true));
    state->log_paused = false;
  }
  state->phase = RestorePhase::kOpen;
  SNAPDISK_RETURN_IF_ERROR(WriteState(pool, volume, *state));
  return pool.Commit();
}

// One call's work on one target volume.
class Restorer {
 public:
  Restorer(Pool& pool, WormStore& store, std::string_view volume, const RestoreOptions& options)
      : pool_(pool),
        store_(store),
        volume_(volume),
        options_(options),
        clock_(options.clock ? *options.clock : SystemClock::Get()),
        started_ns_(clock_.NowNs()) {
    result_.volume = volume_;
  }
  ~Restorer() {
    if (handle_ == nullptr) return;
    // The volume may be gone (a first step that failed deletes a new one).
    Result<Volume*> v = pool_.OpenVolume(volume_);
    if (v.ok() && *v == handle_) handle_->SetWriteFenceExempt(false);
  }
  Restorer(const Restorer&) = delete;
  Restorer& operator=(const Restorer&) = delete;

  // The target's handle; with `require_idle`, Busy while it is in use.
  Status OpenTarget(bool require_idle) {
    SNAPDISK_ASSIGN_OR_RETURN(Volume * handle, pool_.OpenVolume(volume_));
    SNAPDISK_RETURN_IF_ERROR(require_idle ? CheckIdle(*handle) : Status::OK());
    handle_ = handle;
    handle_->SetWriteFenceExempt(true);  // the restore's own writes pass its fence
    return Status::OK();
  }

  void SetTotals(size_t steps, uint64_t total_bytes) {
    steps_ = steps;
    total_bytes_ = total_bytes;
  }
  void set_log_paused_initially(bool paused) { log_paused_initially_ = paused; }

  // Checks `step` against `state` (as on an empty volume with `replace`),
  // applies it atomically and returns the new state.
  Result<RestoreState> RunStep(const std::optional<RestoreState>& state, const RestoreStep& step,
                               const ApplyStop& stop, bool replace);

  // The figures, once everything is done.
  RestoreResult Finish(const RestoreState& state, bool opened) {
    result_.state = state;
    result_.complete_ns = clock_.NowNs() - started_ns_;
    result_.first_read_ns = opened ? result_.complete_ns : 0;
    return result_;
  }
  std::string Where(const std::optional<RestoreState>& state) const {
    if (!state || !state->has_chain()) return "volume '" + volume_ + "' holds no restored backup";
    return "volume '" + volume_ + "' is left restoring at LSN " + std::to_string(state->lsn) +
           " (after " + state->last_set + ")";
  }

 private:
  Status Check(const std::optional<RestoreState>& state, const BackupSet& set,
               const ApplyStop& stop);
  Result<std::string> FreeUndoName(const std::string& id);
  Status Abort(const std::string& undo, const std::optional<RestoreState>& prior);
  Status ApplyData(const BackupSet& set);
  // Sets *applied_lsn / *applied_unix_ns to the last record applied (left
  // alone when none was).
  Status ApplyLog(const RestoreStep& step, uint64_t from_lsn, uint64_t* applied_lsn,
                  int64_t* applied_unix_ns);
  bool Progress(const std::string& set_id) {
    if (!options_.progress) return true;
    RestoreProgress p;
    p.step = step_;
    p.steps = steps_;
    p.set_id = set_id;
    p.done_bytes = done_bytes_;
    p.total_bytes = total_bytes_;
    p.read_bytes = result_.read_bytes;
    p.written_bytes = result_.written_bytes + (writer_ ? writer_->written_bytes() : 0);
    return options_.progress(p);
  }
  Status Cancelled() const {
    return Status::Cancelled("restore of volume '" + volume_ + "' cancelled");
  }
  VolumeWriter::Options WriterOptions() const {
    return {options_.write_buffers, options_.write_buffer_bytes, options_.max_writes_in_flight};
  }
  void CountWriter(const VolumeWriter& w) {
    result_.written_bytes += w.written_bytes();
    result_.zeroed_bytes += w.zeroed_bytes();
  }

  Pool& pool_;
  WormStore& store_;
  const std::string volume_;
  const RestoreOptions& options_;
  Clock& clock_;
  const int64_t started_ns_;
  Volume* handle_ = nullptr;
  bool log_paused_initially_ = false;
  RestoreResult result_;
  size_t step_ = 0;
  size_t steps_ = 0;
  uint64_t done_bytes_ = 0;
  uint64_t total_bytes_ = 0;
  const VolumeWriter* writer_ = nullptr;  // the one in use, for progress
  std::optional<std::vector<BackupSet>> source_sets_;  // listed when a refusal needs them
};

Status Restorer::Check(const std::optional<RestoreState>& state, const BackupSet& set,
                       const ApplyStop& stop) {
  Status s = CheckApplicable(state, volume_, set, {}, stop);
  const bool too_recent = state && state->has_chain() && set.first_lsn > state->lsn + 1;
  if (s.ok() || !too_recent) return s;
  // The refusal names the sets that would fit instead: that needs the
  // source's sets (read only then: listing reads every manifest).
  if (!source_sets_) {
    Result<std::vector<BackupSet>> sets = ListBackupSets(store_, set.volume);
    if (!sets.ok()) return s;
    source_sets_ = std::move(sets).value();
  }
  return CheckApplicable(state, volume_, set, *source_sets_, stop);
}

Result<std::string> Restorer::FreeUndoName(const std::string& id) {
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<SnapshotInfo> snaps, pool_.ListSnapshots(volume_));
  std::set<std::string> taken;
  for (const SnapshotInfo& s : snaps) taken.insert(s.name);
  std::string name = kUndoPrefix + id;
  for (int n = 1; taken.count(name); ++n) name = kUndoPrefix + id + "." + std::to_string(n);
  return name;
}

Status Restorer::Abort(const std::string& undo, const std::optional<RestoreState>& prior) {
  // The undo snapshot goes last: until the state is back, a later
  // RecoverRestoreStep still finds both.
  Status s = pool_.Rollback(volume_, undo);
  if (s.ok()) s = WriteState(pool_, volume_, prior);
  if (s.ok()) s = pool_.DeleteSnapshot(volume_, undo);
  if (s.ok()) s = pool_.Commit();
  return s;
}

Result<RestoreState> Restorer::RunStep(const std::optional<RestoreState>& state,
                                       const RestoreStep& step, const ApplyStop& stop,
                                       bool replace) {
  const BackupSet& set = step.set;
  ++step_;
  const std::string context = "restoring volume '" + volume_ + "', step " +
                              std::to_string(step_) + " of " + std::to_string(steps_) + " (" +
                              set.id + ")";
  // Refusals first: nothing is written before the set is known to fit.
  SNAPDISK_RETURN_IF_ERROR(Check(replace ? std::nullopt : state, set, stop));
  if (set.block_bytes == 0 || set.volume_size_bytes == 0) {
    return Status::Corruption(DescribeBackupSet(set) + " has no volume size or block size");
  }

  // Begin: the undo snapshot and the pending step, committed together.
  SNAPDISK_ASSIGN_OR_RETURN(std::string undo, FreeUndoName(set.id));
  SNAPDISK_RETURN_IF_ERROR(pool_.CreateSnapshot(volume_, undo).status());
  RestoreState pending = state ? *state : RestoreState{};
  if (!state) pending.log_paused = log_paused_initially_;
  pending.pending_set = set.id;
  pending.undo_snapshot = undo;
  Status begun = WriteState(pool_, volume_, pending);
  // A chain starting over replaces the data an instant restore's fill may
  // have described (restore status would show it for the new data).
  if (begun.ok() && (!state || replace)) begun = RemoveIfSet(pool_, volume_, kHydrationResultAttribute);
  if (begun.ok()) begun = pool_.Commit();
  if (!begun.ok()) {
    if (pool_.health().ok()) {
      (void)pool_.DeleteSnapshot(volume_, undo);
      (void)WriteState(pool_, volume_, state);
    }
    return begun.WithContext(context);
  }

  // Apply.
  uint64_t applied_lsn = state && !replace ? state->lsn : 0;
  int64_t applied_unix_ns = state && !replace ? state->unix_ns : 0;
  const uint64_t step_done_base = done_bytes_;
  Status s;
  if (set.volume_size_bytes > handle_->size_bytes()) {
    s = pool_.GrowVolume(volume_, set.volume_size_bytes);
  }
  if (s.ok()) {
    if (set.type == BackupType::kLog) {
      s = ApplyLog(step, std::max(step.from_lsn, applied_lsn + 1), &applied_lsn, &applied_unix_ns);
    } else {
      s = ApplyData(set);
    }
  }
  done_bytes_ = step_done_base + step.data_bytes;

  // The new state.
  RestoreState next;
  if (IsFullLike(set.type)) {
    next.source_volume = set.volume;
    next.source_volume_id = set.volume_id;
    next.lineage = set.lineage;
    next.full = set.id;
    next.log_paused = pending.log_paused;
  } else {
    next = *state;
  }
  next.phase = RestorePhase::kRestoring;
  next.check.reset();  // a check of the data before this step says nothing of it now
  next.pending_set.clear();
  next.undo_snapshot.clear();
  next.last_set = set.id;
  if (set.type == BackupType::kLog) {
    RecordApplied(next, {set.id, set.type,
                         std::max(step.from_lsn, (state ? state->lsn : 0) + 1), applied_lsn});
    next.lsn = applied_lsn;
    next.unix_ns = applied_unix_ns;
  } else {
    RecordApplied(next, {set.id, set.type, set.first_lsn, set.last_lsn});
    next.lsn = set.last_lsn;  // CheckApplicable: never before the volume's LSN
    next.unix_ns = set.consistent_unix_ns;
    next.last_data_set = set.id;
  }
  if (s.ok()) {
    Result<VolumeInfo> info = pool_.GetVolume(volume_);
    if (info.ok()) {
      next.volume_lsn = info->lsn;
    } else {
      s = info.status();
    }
  }
  if (s.ok() && !Progress(set.id)) s = Cancelled();

  // Finish: the new state in, the undo snapshot gone, one commit.
  if (s.ok()) s = WriteState(pool_, volume_, next);
  if (s.ok()) s = pool_.DeleteSnapshot(volume_, undo);
  if (s.ok()) s = pool_.Commit();
  if (s.ok()) {
    result_.applied.push_back(set.id);
    return next;
  }
  if (!pool_.health().ok()) {
    return s.WithContext(context + " (the pool failed: reopen it; the step is rolled back by "
                                   "RecoverRestoreStep, which every restore call runs first)");
  }
  Status undone = Abort(undo, state);
  if (!undone.ok()) {
    return s.WithContext(context + " (rolling the step back failed too: " + undone.ToString() +
                         "; RecoverRestoreStep rolls it back once the pool works)");
  }
  return s.WithContext(context);
}

Status Restorer::ApplyData(const BackupSet& set) {
  // Each chunk is fetched once, in order of first use, and every extent it
  // backs is written when it arrives (mostly one run of sequential writes).
  std::unordered_map<std::string, const ChunkInfo*> listed;
  for (const ChunkInfo& c : set.chunks) listed[c.hash] = &c;
  std::unordered_map<std::string, size_t> index;
  std::vector<ChunkInfo> order;
  std::vector<std::vector<const ChunkExtent*>> uses;
  for (const ChunkExtent& x : set.extents) {
    auto [it, added] = index.emplace(x.chunk, order.size());
    if (added) {
      auto chunk = listed.find(x.chunk);
      if (chunk == listed.end()) {
        return Status::Corruption("set " + set.id + ": the extent at offset " +
                                  std::to_string(x.offset_bytes) + " uses chunk " + x.chunk +
                                  ", which the set does not list");
      }
      order.push_back(*chunk->second);
      uses.emplace_back();
    }
    uses[it->second].push_back(&x);
  }

  VolumeWriter writer(pool_, *handle_, WriterOptions());
  writer_ = &writer;
  struct Unset {
    const VolumeWriter** w;
    ~Unset() { *w = nullptr; }
  } unset{&writer_};
  if (IsFullLike(set.type)) {
    // A complete image: nothing the volume held before may survive.
    SNAPDISK_RETURN_IF_ERROR(writer.Zero(VolumeOp::kTrim, 0, handle_->size_bytes()));
  } else {
    for (const ZeroExtent& z : set.zero_extents) {
      SNAPDISK_RETURN_IF_ERROR(writer.Zero(VolumeOp::kTrim, z.offset_bytes, z.length_bytes));
    }
  }
  ChunkFetcher fetcher(store_, order, "set " + set.id, options_.fetch_threads,
                       options_.chunks_ahead);
  for (size_t i = 0; i < order.size(); ++i) {
    Result<std::vector<std::byte>> bytes = fetcher.Next();
    if (!bytes.ok()) return bytes.status();
    result_.read_bytes += order[i].stored_bytes;
    ++result_.chunks_read;
    for (const ChunkExtent* x : uses[i]) {
      if (x->chunk_offset_bytes + x->length_bytes > bytes->size()) {
        return Status::Corruption("set " + set.id + ": the extent at offset " +
                                  std::to_string(x->offset_bytes) + " lies outside chunk " +
                                  x->chunk);
      }
      SNAPDISK_RETURN_IF_ERROR(writer.Write(
          x->offset_bytes, std::span<const std::byte>(bytes->data() + x->chunk_offset_bytes,
                                                      x->length_bytes)));
      done_bytes_ += x->length_bytes;
    }
    if (!Progress(set.id)) return Cancelled();
  }
  Status drained = writer.Drain();
  CountWriter(writer);
  return drained;
}

Status Restorer::ApplyLog(const RestoreStep& step, uint64_t from_lsn, uint64_t* applied_lsn,
                          int64_t* applied_unix_ns) {
  const BackupSet& set = step.set;
  VolumeWriter writer(pool_, *handle_, WriterOptions());
  writer_ = &writer;
  struct Unset {
    const VolumeWriter** w;
    ~Unset() { *w = nullptr; }
  } unset{&writer_};
  bool stopped = false;
  bool any = false;
  uint64_t first_seen = 0;
  uint64_t last_seen = 0;
  uint64_t consumed = 0;       // stream bytes parsed
  uint64_t since_progress = 0;
  Status s = ForEachLogRecord(store_, set, [&](const LogStreamRecord& r) -> Status {
    const uint64_t bytes =
        kLogStreamHeaderBytes + (r.op == VolumeOp::kWrite ? r.length_bytes : 0);
    consumed += bytes;
    if (any && r.lsn != last_seen + 1) {
      return Status::Corruption("log backup " + set.id + ": record LSN " + std::to_string(r.lsn) +
                                " follows LSN " + std::to_string(last_seen));
    }
    if (!any) first_seen = r.lsn;
    any = true;
    last_seen = r.lsn;
    if (r.lsn < from_lsn) return Status::OK();  // applied already
    if (r.lsn > step.through_lsn ||
        (step.stop_after_unix_ns && r.time_unix_ns > *step.stop_after_unix_ns)) {
      stopped = true;
      return Status::Cancelled("stop");  // ends the walk; not an error
    }
    if (r.offset_bytes + r.length_bytes > handle_->size_bytes()) {
      return Status::Corruption("log backup " + set.id + ": record LSN " + std::to_string(r.lsn) +
                                " lies beyond the volume's " +
                                std::to_string(handle_->size_bytes()) + " bytes");
    }
    SNAPDISK_RETURN_IF_ERROR(r.op == VolumeOp::kWrite
                                 ? writer.Write(r.offset_bytes, r.data)
                                 : writer.Zero(r.op, r.offset_bytes, r.length_bytes));
    *applied_lsn = r.lsn;
    *applied_unix_ns = r.time_unix_ns;
    done_bytes_ += bytes;
    since_progress += bytes;
    if (since_progress >= kLogProgressBytes) {
      since_progress = 0;
      if (!Progress(set.id)) return Cancelled();
    }
    return Status::OK();
  });
  if (stopped) s = Status::OK();
  Status drained = writer.Drain();
  CountWriter(writer);
  if (s.ok()) s = drained;
  // The chunks the walk fetched: all of them, or those up to the stop.
  uint64_t raw = 0;
  for (const ChunkInfo& c : set.chunks) {
    if (stopped && raw >= consumed) break;
    raw += c.raw_bytes;
    result_.read_bytes += c.stored_bytes;
    ++result_.chunks_read;
  }
  SNAPDISK_RETURN_IF_ERROR(s);
  if (any && (first_seen != set.first_lsn || (!stopped && last_seen != set.last_lsn))) {
    return Status::Corruption("log backup " + set.id + " holds records from LSN " +
                              std::to_string(first_seen) + " to " + std::to_string(last_seen) +
                              ", its manifest says " + std::to_string(set.first_lsn) + " to " +
                              std::to_string(set.last_lsn));
  }
  if (!any && set.first_lsn <= set.last_lsn && set.data_bytes > 0) {
    return Status::Corruption("log backup " + set.id + " holds no records");
  }
  return Status::OK();
}

ApplyStop StopOf(const RestoreStep& step) {
  ApplyStop stop;
  if (step.set.type == BackupType::kLog) {
    if (step.through_lsn < step.set.last_lsn) stop.after_lsn = step.through_lsn;
    stop.after_unix_ns = step.stop_after_unix_ns;
  }
  return stop;
}

Result<std::optional<RestoreState>> LoadState(Pool& pool, std::string_view volume) {
  SNAPDISK_RETURN_IF_ERROR(RecoverRestoreStep(pool, volume));
  return GetRestoreState(pool, volume);
}

// RestoreOptions::replace: whether restoring a set of `source_volume`
// (`size_bytes`) onto `volume` replaces something else. The volume is the
// backup's source when it has its name, or when its restore state says it
// was restored from that volume; a restore that would grow it changes it. A
// blank volume (never written, not a clone) holds nothing to lose.
Status CheckReplace(Pool& pool, std::string_view volume, const std::optional<RestoreState>& state,
                    const std::string& set_id, const std::string& source_volume,
                    uint64_t size_bytes, bool replace) {
  if (replace) return Status::OK();
  SNAPDISK_ASSIGN_OR_RETURN(VolumeInfo target, pool.GetVolume(volume));
  SNAPDISK_ASSIGN_OR_RETURN(HydrationInfo hydration, pool.GetHydrationInfo(volume));
  // Blank: never written, not a clone, not restored (a fill leaves the LSN
  // alone, so an instant restore would look blank by its LSN).
  if (target.lsn == 0 && target.origin.empty() && !state && !hydration.hydrating) {
    return Status::OK();
  }
  const bool is_source =
      target.name == source_volume || (state && state->source_volume == source_volume);
  const bool grows = size_bytes > target.size_bytes;
  if (is_source && !grows) return Status::OK();
  std::string why;
  if (!is_source) why = "it is not the backup's source volume";
  if (grows) {
    why += std::string(why.empty() ? "" : ", and ") + "the restore would grow it from " +
           HumanBytes(target.size_bytes) + " to " + HumanBytes(size_bytes);
  }
  return Status::InvalidArgument(
      "restoring " + set_id + " (volume '" + source_volume + "', " + HumanBytes(size_bytes) +
      ") onto volume '" + target.name + "' (" + HumanBytes(target.size_bytes) +
      ") refused: " + why + "; replace it anyway with --replace (RestoreOptions::replace)");
}

Result<RestoreResult> RunPlan(Restorer& r, Pool& pool, const RestorePlan& plan,
                              std::optional<RestoreState> state, bool replace, bool open,
                              bool delete_on_first_failure, std::string_view volume) {
  r.SetTotals(plan.steps.size(), plan.data_bytes());
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const RestoreStep& step = plan.steps[i];
    Result<RestoreState> next = r.RunStep(state, step, StopOf(step), replace && i == 0);
    if (!next.ok()) {
      if (i == 0 && delete_on_first_failure && pool.health().ok()) {
        Status gone = pool.DeleteVolume(volume);
        if (gone.ok()) gone = pool.Commit();
        if (gone.ok()) return next.status().WithContext("volume '" + std::string(volume) +
                                                        "' was not created");
      }
      if (i == 0) return next.status();
      return next.status().WithContext(r.Where(state));
    }
    state = std::move(next).value();
  }
  if (open) SNAPDISK_RETURN_IF_ERROR(OpenVolume(pool, volume, &*state));
  return r.Finish(*state, open);
}

}  // namespace

Result<std::optional<RestoreState>> GetRestoreState(Pool& pool, std::string_view volume) {
  Result<std::string> value = pool.GetAttribute(volume, kRestoreStateAttribute);
  if (value.status().IsNotFound()) {
    SNAPDISK_RETURN_IF_ERROR(pool.GetVolume(volume).status());  // NotFound for the volume itself
    return std::optional<RestoreState>();
  }
  if (!value.ok()) return value.status();
  SNAPDISK_ASSIGN_OR_RETURN(RestoreState state, DecodeRestoreState(*value, volume));
  return std::optional<RestoreState>(std::move(state));
}

Status CheckNotRestoring(Pool& pool, std::string_view volume, std::string_view action) {
  SNAPDISK_ASSIGN_OR_RETURN(std::optional<RestoreState> state, GetRestoreState(pool, volume));
  if (!state || state->phase != RestorePhase::kRestoring) return Status::OK();
  return Status::PermissionDenied(
      "volume '" + std::string(volume) + "' is being restored: it cannot be " +
      std::string(action) +
      " until it is opened (`snapdisk restore open POOL " + std::string(volume) +
      "`, after the last `restore apply`)");
}

Status RecoverRestoreStep(Pool& pool, std::string_view volume) {
  SNAPDISK_ASSIGN_OR_RETURN(std::optional<RestoreState> state, GetRestoreState(pool, volume));
  if (!state || !state->pending()) return Status::OK();
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<SnapshotInfo> snaps, pool.ListSnapshots(volume));
  const bool has_undo = std::any_of(snaps.begin(), snaps.end(), [&](const SnapshotInfo& s) {
    return s.name == state->undo_snapshot;
  });
  if (has_undo) {
    SNAPDISK_RETURN_IF_ERROR(pool.Rollback(volume, state->undo_snapshot));
    SNAPDISK_RETURN_IF_ERROR(pool.DeleteSnapshot(volume, state->undo_snapshot));
  }
  RestoreState back = *state;
  back.pending_set.clear();
  back.undo_snapshot.clear();
  if (!back.has_chain()) {
    // The interrupted step was the first: the volume had no state before.
    if (back.log_paused) SNAPDISK_RETURN_IF_ERROR(pool.SetLogEnabled(volume, true));
    SNAPDISK_RETURN_IF_ERROR(WriteState(pool, volume, std::nullopt));
  } else {
    SNAPDISK_RETURN_IF_ERROR(WriteState(pool, volume, back));
  }
  return pool.Commit();
}

Result<RestoreResult> RestoreToNewVolume(Pool& pool, WormStore& store, const RestorePlan& plan,
                                         std::string_view new_volume,
                                         const RestoreOptions& options) {
  SNAPDISK_RETURN_IF_ERROR(ValidateOptions(options));
  if (plan.steps.empty()) return Status::InvalidArgument("restore plan has no steps");
  if (pool.GetVolume(new_volume).ok()) {
    return Status::AlreadyExists("volume '" + std::string(new_volume) + "' already exists");
  }
  Restorer r(pool, store, new_volume, options);
  SNAPDISK_RETURN_IF_ERROR(pool.CreateVolume(new_volume, plan.volume_size_bytes, options.profile)
                               .status());
  // Its own log would only pin the restore's blocks: off until it opens.
  Status off = pool.SetLogEnabled(new_volume, false);
  if (off.ok()) off = r.OpenTarget(/*require_idle=*/false);
  if (!off.ok()) {
    (void)pool.DeleteVolume(new_volume);
    return off;
  }
  r.set_log_paused_initially(true);
  return RunPlan(r, pool, plan, std::nullopt, /*replace=*/false, options.open,
                 /*delete_on_first_failure=*/true, new_volume);
}

Result<RestoreResult> RestoreToNewVolume(Pool& pool, WormStore& store, const RestoreTarget& target,
                                         std::string_view new_volume,
                                         const RestoreOptions& options) {
  SNAPDISK_ASSIGN_OR_RETURN(RestorePlan plan, PlanRestore(store, target));
  return RestoreToNewVolume(pool, store, plan, new_volume, options);
}

Result<RestoreResult> RestoreOnto(Pool& pool, WormStore& store, const RestorePlan& plan,
                                  std::string_view volume, const RestoreOptions& options) {
  SNAPDISK_RETURN_IF_ERROR(ValidateOptions(options));
  if (plan.steps.empty()) return Status::InvalidArgument("restore plan has no steps");
  Restorer r(pool, store, volume, options);
  SNAPDISK_RETURN_IF_ERROR(r.OpenTarget(/*require_idle=*/true));
  SNAPDISK_ASSIGN_OR_RETURN(std::optional<RestoreState> state, LoadState(pool, volume));
  SNAPDISK_RETURN_IF_ERROR(CheckReplace(pool, volume, state, plan.steps[0].set.id, plan.volume,
                                        plan.volume_size_bytes, options.replace));
  return RunPlan(r, pool, plan, std::move(state), /*replace=*/true, options.open,
                 /*delete_on_first_failure=*/false, volume);
}

Result<RestoreResult> RestoreOnto(Pool& pool, WormStore& store, const RestoreTarget& target,
                                  std::string_view volume, const RestoreOptions& options) {
  SNAPDISK_ASSIGN_OR_RETURN(RestorePlan plan, PlanRestore(store, target));
  return RestoreOnto(pool, store, plan, volume, options);
}

Result<RestoreResult> ApplySet(Pool& pool, WormStore& store, std::string_view id,
                               std::string_view volume, const RestoreOptions& options) {
  SNAPDISK_RETURN_IF_ERROR(ValidateOptions(options));
  Restorer r(pool, store, volume, options);
  SNAPDISK_RETURN_IF_ERROR(r.OpenTarget(/*require_idle=*/true));
  SNAPDISK_ASSIGN_OR_RETURN(std::optional<RestoreState> state, LoadState(pool, volume));
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet set, FindBackupSet(store, id));
  if ((!state || !state->has_chain()) && IsFullLike(set.type)) {
    // A first step replaces what the volume holds (a set that cannot start
    // a chain is refused by the apply rules, with their own message).
    SNAPDISK_RETURN_IF_ERROR(CheckReplace(pool, volume, state, set.id, set.volume,
                                          set.volume_size_bytes, options.replace));
  }
  if (state && state->has_chain() && state->phase == RestorePhase::kRestoring) {
    SNAPDISK_ASSIGN_OR_RETURN(VolumeInfo info, pool.GetVolume(volume));
    if (info.lsn != state->volume_lsn) {
      return Status::InvalidArgument(
          "volume '" + std::string(volume) + "' was written to since " + state->last_set +
          " was applied to it (its own LSN moved from " + std::to_string(state->volume_lsn) +
          " to " + std::to_string(info.lsn) +
          "): it no longer holds what the backups describe; restore onto it again to start over");
    }
  }
  RestoreStep step;
  step.set = set;
  step.from_lsn = set.first_lsn;
  step.through_lsn = set.last_lsn;
  for (const ChunkInfo& c : set.chunks) step.read_bytes += c.stored_bytes;
  if (set.type == BackupType::kLog) {
    step.data_bytes = set.data_bytes;
    if (options.stop.after_lsn) step.through_lsn = std::min(step.through_lsn, *options.stop.after_lsn);
    step.stop_after_unix_ns = options.stop.after_unix_ns;
  } else {
    for (const ChunkExtent& x : set.extents) step.data_bytes += x.length_bytes;
  }
  r.SetTotals(1, step.data_bytes);
  SNAPDISK_ASSIGN_OR_RETURN(RestoreState next,
                            r.RunStep(state, step, options.stop, /*replace=*/false));
  return r.Finish(next, /*opened=*/false);
}

Status OpenRestoredVolume(Pool& pool, std::string_view volume) {
  SNAPDISK_ASSIGN_OR_RETURN(std::optional<RestoreState> state, LoadState(pool, volume));
  if (!state) {
    return Status::InvalidArgument("volume '" + std::string(volume) + "' is not being restored");
  }
  if (state->phase == RestorePhase::kOpen) {
    return Status::InvalidArgument("volume '" + std::string(volume) + "' is already open");
  }
  return OpenVolume(pool, volume, &*state);
}

}  // namespace snapdisk
