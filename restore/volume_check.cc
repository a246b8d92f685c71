// Checking a volume in steps (restore/volume_check.h).
//
// Why the live volume and not a snapshot of it: a verified read can only
// fail on data that is bad, whatever clients do meanwhile (the engine gives
// each block all-old or all-new, each verified), and a block a client
// rewrites no longer holds the old data, so there is nothing to report for
// it. A snapshot would pin the opened image for nothing, make every client
// write after it copy map nodes, and leave a snapshot behind after a crash.
// What a failed read needs is a second look (the retries below), so a block
// is reported only when it is still bad.
#include "restore/volume_check.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <utility>

#include "restore/restore_apply.h"

namespace snapdisk {

namespace {

constexpr uint32_t kMaxWindowsPerStep = 64;  // map calls one step may make

int64_t WallNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The restore checks running in this process: (pool, volume id).
std::set<std::pair<const Pool*, uint64_t>>& RunningChecks() {
  static std::set<std::pair<const Pool*, uint64_t>> running;
  return running;
}

Status ValidateOptions(const VolumeCheckOptions& o, uint32_t block_bytes) {
  if (o.slice_bytes < block_bytes || o.read_bytes < block_bytes || o.max_reads_in_flight < 1 ||
      o.map_window_bytes < block_bytes || !(o.rate_mb_per_s >= 0)) {
    return Status::InvalidArgument(
        "volume check options: slice_bytes, read_bytes and map_window_bytes must be at least a "
        "block (" +
        std::to_string(block_bytes) +
        " bytes), max_reads_in_flight at least 1, rate_mb_per_s not negative");
  }
  return Status::OK();
}

}  // namespace

struct VolumeCheck::Read {
  VolumeRequest request;
  std::vector<std::byte> buffer;
  Piece piece;
};

Result<std::unique_ptr<VolumeCheck>> VolumeCheck::Start(Pool& pool, std::string_view volume,
                                                        const VolumeCheckOptions& options) {
  SNAPDISK_RETURN_IF_ERROR(ValidateOptions(options, pool.block_bytes()));
  SNAPDISK_ASSIGN_OR_RETURN(VolumeInfo info, pool.GetVolume(volume));
  SNAPDISK_ASSIGN_OR_RETURN(Volume * handle, pool.OpenVolume(volume));
  SNAPDISK_ASSIGN_OR_RETURN(HydrationInfo hydration, pool.GetHydrationInfo(volume));
  if (hydration.hydrating) {
    return Status::Busy("volume '" + std::string(volume) + "' is hydrating (" +
                        std::to_string(hydration.pending_bytes) +
                        " bytes still to come from its backup): check it once it is hydrated");
  }
  handle->SetInUse(true);  // nobody deletes or rolls it back under the check
  return std::unique_ptr<VolumeCheck>(
      new VolumeCheck(pool, std::string(volume), info.id, handle, options));
}

VolumeCheck::VolumeCheck(Pool& pool, std::string volume, uint64_t volume_id, Volume* handle,
                         const VolumeCheckOptions& options)
    : pool_(pool),
      volume_(std::move(volume)),
      volume_id_(volume_id),
      handle_(handle),
      options_(options),
      clock_(options.clock ? *options.clock : SystemClock::Get()),
      block_bytes_(pool.block_bytes()),
      started_ns_(clock_.NowNs()) {
  const uint64_t read_bytes = options_.read_bytes / block_bytes_ * block_bytes_;
  for (uint32_t i = 0; i < options_.max_reads_in_flight; ++i) {
    auto read = std::make_unique<Read>();
    read->buffer.resize(read_bytes);
    Read* r = read.get();
    read->request.on_complete = [this, r](VolumeRequest&, const Status& s) { OnRead(*r, s); };
    free_reads_.push_back(r);
    reads_.push_back(std::move(read));
  }
  state_.store(VolumeCheckState::kRunning);
}

VolumeCheck::~VolumeCheck() {
  // The callbacks point at this job: let every read complete first.
  while (in_flight_ > 0) pool_.Poll(1);
  if (!finished_) {
    Result<Volume*> v = Handle();
    if (v.ok()) (*v)->SetInUse(false);
  }
}

Result<Volume*> VolumeCheck::Handle() {
  Result<Volume*> v = pool_.OpenVolume(volume_);
  if (!v.ok()) {
    return v.status().WithContext("checking volume '" + volume_ + "'");
  }
  if ((*v)->id() != volume_id_ || *v != handle_) {
    return Status::NotFound("volume '" + volume_ + "' was replaced while it was checked");
  }
  return v;
}

Status VolumeCheck::MapNextWindow(bool counting) {
  const uint64_t size = handle_->size_bytes();
  const uint64_t window = options_.map_window_bytes / block_bytes_ * block_bytes_;
  const uint64_t length = std::min(window, size - cursor_bytes_);
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<Extent> extents,
                            handle_->MapExtents(cursor_bytes_, length));
  cursor_bytes_ += length;
  for (const Extent& e : extents) {
    if (e.zero) continue;
    if (counting) {
      total_bytes_.fetch_add(e.length_bytes);
    } else {
      queue_.push_back(Piece{e.offset_bytes, e.length_bytes, 0});
    }
  }
  return Status::OK();
}

Status VolumeCheck::SubmitReads() {
  const uint64_t read_bytes = options_.read_bytes / block_bytes_ * block_bytes_;
  uint64_t budget = options_.slice_bytes;
  uint32_t windows = 0;
  while (budget > 0 && !free_reads_.empty()) {
    const int64_t now = clock_.NowNs();
    if (options_.rate_mb_per_s > 0 && now < next_read_ns_) break;
    const bool retry = !retries_.empty();
    if (!retry && queue_.empty()) {
      if (cursor_bytes_ >= handle_->size_bytes() || windows == kMaxWindowsPerStep) break;
      ++windows;
      SNAPDISK_RETURN_IF_ERROR(MapNextWindow(/*counting=*/false));
      continue;
    }
    Piece piece = retry ? retries_.front() : queue_.front();
    piece.length_bytes = std::min(piece.length_bytes, read_bytes);
    Read* read = free_reads_.back();
    read->piece = piece;
    read->request.op = VolumeOp::kRead;
    read->request.offset_bytes = piece.offset_bytes;
    read->request.length_bytes = piece.length_bytes;
    read->request.data = read->buffer.data();
    Status s = handle_->Submit(read->request);
    if (s.IsBusy()) break;  // the pool's request limit: the next step goes on
    SNAPDISK_RETURN_IF_ERROR(s);
    free_reads_.pop_back();
    ++in_flight_;
    if (retry) {
      retries_.pop_front();
    } else if (queue_.front().length_bytes == piece.length_bytes) {
      queue_.pop_front();
    } else {
      queue_.front().offset_bytes += piece.length_bytes;
      queue_.front().length_bytes -= piece.length_bytes;
    }
    budget -= std::min(budget, piece.length_bytes);
    if (options_.rate_mb_per_s > 0) {
      next_read_ns_ = std::max(next_read_ns_, now) +
                      static_cast<int64_t>(static_cast<double>(piece.length_bytes) * 1e3 /
                                           options_.rate_mb_per_s);
    }
  }
  return Status::OK();
}

void VolumeCheck::OnRead(Read& read, const Status& status) {
  --in_flight_;
  free_reads_.push_back(&read);
  const Piece piece = read.piece;
  if (piece.attempt == 0) checked_bytes_.fetch_add(piece.length_bytes);
  if (status.ok()) return;
  const bool data_problem = status.IsCorruption() || status.IsIOError();
  if (!data_problem || !pool_.health().ok()) {
    if (error_.ok()) error_ = status;  // the check itself cannot go on
    return;
  }
  if (piece.attempt == 2) {
    // Bad twice, the second time after the reads and writes queued before it.
    problem_count_.fetch_add(1);
    if (problems_.size() < options_.max_problems_kept) {
      problems_.push_back(VolumeCheckProblem{piece.offset_bytes, status.message()});
    }
    return;
  }
  const uint64_t end = piece.offset_bytes + piece.length_bytes;
  if (piece.attempt == 1 || end - piece.offset_bytes <= block_bytes_) {
    retries_.push_back(Piece{piece.offset_bytes, piece.length_bytes, 2});
    return;
  }
  // Which blocks of the range are bad: each one on its own.
  for (uint64_t at = piece.offset_bytes; at < end;) {
    const uint64_t next = std::min(end, (at / block_bytes_ + 1) * block_bytes_);
    retries_.push_back(Piece{at, next - at, 1});
    at = next;
  }
}

bool VolumeCheck::Step() {
  if (finished_) return true;
  if (!cancelling_ && cancel_requested_.load()) cancelling_ = true;
  if (error_.ok() && !cancelling_) {
    Result<Volume*> v = Handle();
    Status s = v.status();
    if (s.ok() && counting_) {
      for (uint32_t i = 0; i < kMaxWindowsPerStep && s.ok(); ++i) {
        if (cursor_bytes_ >= handle_->size_bytes()) {
          counting_ = false;
          mapping_.store(false);
          cursor_bytes_ = 0;
          break;
        }
        s = MapNextWindow(/*counting=*/true);
      }
    } else if (s.ok()) {
      s = SubmitReads();
    }
    if (!s.ok()) error_ = s;
  }
  if (in_flight_ > 0) return false;
  if (!error_.ok()) {
    Finish(VolumeCheckState::kFailed, error_);
    return true;
  }
  if (cancelling_) {
    Finish(VolumeCheckState::kCancelled,
           Status::Cancelled("check of volume '" + volume_ + "' cancelled"));
    return true;
  }
  if (!counting_ && cursor_bytes_ >= handle_->size_bytes() && queue_.empty() && retries_.empty()) {
    Finish(problem_count_.load() > 0 ? VolumeCheckState::kProblems : VolumeCheckState::kClean,
           Status::OK());
    return true;
  }
  return false;
}

void VolumeCheck::Finish(VolumeCheckState state, Status status) {
  finished_ = true;
  result_ = std::move(status);
  finished_ns_.store(clock_.NowNs());
  state_.store(state);
  Result<Volume*> v = Handle();
  if (v.ok()) (*v)->SetInUse(false);
}

Status VolumeCheck::Run(const std::function<bool(const VolumeCheckProgress&)>& progress) {
  int64_t last_ns = 0;
  bool cancelled = false;
  while (!Step()) {
    if (progress && !cancelled) {
      const int64_t now = clock_.NowNs();
      if (now - last_ns >= 100'000'000) {
        last_ns = now;
        if (!progress(this->progress())) {
          cancelled = true;
          Cancel();
        }
      }
    }
    WaitForWork();
  }
  if (progress) progress(this->progress());
  return result_;
}

void VolumeCheck::WaitForWork() {
  if (pool_.in_flight() > 0) {
    pool_.Poll(1);
  } else if (options_.rate_mb_per_s > 0 && next_read_ns_ > clock_.NowNs()) {
    clock_.SleepUntilNs(next_read_ns_);
  }
}

VolumeCheckProgress VolumeCheck::progress() const {
  VolumeCheckProgress p;
  p.volume = volume_;
  p.state = state_.load();
  p.mapping = mapping_.load();
  p.checked_bytes = checked_bytes_.load();
  // Clients may add data after the map pass: the total never trails what is done.
  p.total_bytes = p.mapping ? 0 : std::max(total_bytes_.load(), p.checked_bytes);
  p.problems = problem_count_.load();
  const int64_t end = finished_ns_.load();
  p.elapsed_s = static_cast<double>((end > 0 ? end : clock_.NowNs()) - started_ns_) / 1e9;
  p.rate_bytes_per_s = p.elapsed_s > 0 ? static_cast<double>(p.checked_bytes) / p.elapsed_s : 0;
  return p;
}

// ---- RestoreCheckJob ------------------------------------------------------------

Result<std::unique_ptr<RestoreCheckJob>> RestoreCheckJob::Start(Pool& pool,
                                                                std::string_view volume,
                                                                RestoreCheckMode mode,
                                                                const VolumeCheckOptions& options) {
  SNAPDISK_RETURN_IF_ERROR(RecoverRestoreStep(pool, volume));
  SNAPDISK_ASSIGN_OR_RETURN(std::optional<RestoreState> state, GetRestoreState(pool, volume));
  if (!state) {
    return Status::InvalidArgument("volume '" + std::string(volume) +
                                   "' has no restore state (it was not restored from a backup); "
                                   "`snapdisk pool scrub` checks every volume of a pool");
  }
  SNAPDISK_ASSIGN_OR_RETURN(VolumeInfo info, pool.GetVolume(volume));
  if (RunningChecks().count({&pool, info.id})) {
    return Status::Busy("a check of volume '" + std::string(volume) +
                        "' is running already (see `snapdisk backup jobs`)");
  }
  SNAPDISK_ASSIGN_OR_RETURN(std::unique_ptr<VolumeCheck> check,
                            VolumeCheck::Start(pool, volume, options));
  RestoreCheck record;
  record.mode = mode;
  record.state = RestoreCheckState::kRunning;
  record.started_unix_ns = WallNowNs();
  state->check = record;
  Status s = pool.SetAttribute(volume, kRestoreStateAttribute, EncodeRestoreState(*state));
  if (s.ok()) s = pool.Commit();
  if (!s.ok()) return s.WithContext("recording the check of volume '" + std::string(volume) + "'");
  RunningChecks().insert({&pool, info.id});
  return std::unique_ptr<RestoreCheckJob>(
      new RestoreCheckJob(pool, std::move(check), info.id, std::move(record)));
}

RestoreCheckJob::RestoreCheckJob(Pool& pool, std::unique_ptr<VolumeCheck> check,
                                 uint64_t volume_id, RestoreCheck record)
    : pool_(pool), check_(std::move(check)), volume_id_(volume_id), record_(std::move(record)) {}

RestoreCheckJob::~RestoreCheckJob() { RunningChecks().erase({&pool_, volume_id_}); }

bool RestoreCheckJob::Step() {
  if (finished_) return true;
  if (!check_->Step()) return false;
  finished_ = true;
  const VolumeCheckProgress p = check_->progress();
  record_.checked_bytes = p.checked_bytes;
  record_.problems = p.problems;
  if (!check_->problems().empty()) {
    const VolumeCheckProblem& first = check_->problems().front();
    record_.first_problem = "offset " + std::to_string(first.offset_bytes) + ": " + first.detail;
  }
  switch (p.state) {
    case VolumeCheckState::kClean:
      record_.state = RestoreCheckState::kClean;
      break;
    case VolumeCheckState::kProblems:
      record_.state = RestoreCheckState::kProblems;
      break;
    case VolumeCheckState::kCancelled:
      record_.state = RestoreCheckState::kCancelled;
      break;
    case VolumeCheckState::kFailed:
    case VolumeCheckState::kRunning:
      record_.state = RestoreCheckState::kFailed;
      record_.error = check_->result().ToString();
      break;
  }
  record_.finished_unix_ns = WallNowNs();
  result_ = check_->result();
  Status recorded = Record();
  if (result_.ok()) result_ = recorded;
  RunningChecks().erase({&pool_, volume_id_});
  return true;
}

Status RestoreCheckJob::Record() {
  const std::string& volume = check_->volume();
  if (!pool_.health().ok()) return Status::OK();  // the check's own error says why
  Result<VolumeInfo> info = pool_.GetVolume(volume);
  if (!info.ok() || info->id != volume_id_) return Status::OK();  // gone: nothing to record on
  Result<std::optional<RestoreState>> state = GetRestoreState(pool_, volume);
  if (!state.ok()) return state.status().WithContext("recording the check");
  // Only onto the state the check began on.
  if (!*state || !(*state)->check || (*state)->check->state != RestoreCheckState::kRunning ||
      (*state)->check->started_unix_ns != record_.started_unix_ns) {
    return Status::OK();
  }
  (*state)->check = record_;
  Status s = pool_.SetAttribute(volume, kRestoreStateAttribute, EncodeRestoreState(**state));
  if (s.ok()) s = pool_.Commit();
  return s.ok() ? s : s.WithContext("recording the check of volume '" + volume + "'");
}

Status RestoreCheckJob::Run(const std::function<bool(const VolumeCheckProgress&)>& progress) {
  int64_t last_ns = 0;
  bool cancelled = false;
  while (!Step()) {
    if (progress && !cancelled) {
      const int64_t now = SystemClock::Get().NowNs();
      if (now - last_ns >= 100'000'000) {
        last_ns = now;
        if (!progress(check_->progress())) {
          cancelled = true;
          Cancel();
        }
      }
    }
    check_->WaitForWork();
  }
  if (progress) progress(check_->progress());
  return result_;
}

bool RestoreCheckRunning(const Pool& pool, std::string_view volume) {
  Result<VolumeInfo> info = pool.GetVolume(volume);
  return info.ok() && RunningChecks().count({&pool, info->id}) > 0;
}

RestoreCheck ShownRestoreCheck(const Pool& pool, std::string_view volume,
                               const RestoreCheck& recorded) {
  RestoreCheck shown = recorded;
  if (shown.state == RestoreCheckState::kRunning && !RestoreCheckRunning(pool, volume)) {
    shown.state = RestoreCheckState::kInterrupted;
  }
  return shown;
}

}  // namespace snapdisk
