// Log backup (snapshot/log_backup.h): the pool's write log, shipped as
// segments through the backup chunk pipeline.
#include "snapshot/log_backup.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>

#include "disk/clock.h"
#include "disk/thread_placement.h"
#include "engine/format.h"
#include "snapshot/chunk_pipeline.h"

namespace snapdisk {

namespace {

// Records read from the pool per ReadLog call, and stream bytes per Step (which
// also stops at kBackupStepBudgetNs).
constexpr size_t kRecordsPerRead = 1024;
constexpr uint64_t kBytesPerStep = uint64_t{8} << 20;

uint8_t OpCode(VolumeOp op) {
  return op == VolumeOp::kWrite ? 1 : op == VolumeOp::kTrim ? 2 : 3;
}

void EncodeHeader(const Pool::LogRecord& r, std::byte* p) {
  p[0] = static_cast<std::byte>(OpCode(r.op));
  format::Store64(p + 1, r.lsn);
  format::Store64(p + 9, static_cast<uint64_t>(r.time_unix_ns));
  format::Store64(p + 17, r.offset_bytes);
  format::Store64(p + 25, r.length_bytes);
}

std::string GapMessage(const std::string& volume, uint64_t lineage, uint64_t expected,
                       uint64_t found, const std::string& after) {
  return "log gap: volume '" + volume + "' lineage " + std::to_string(lineage) + ": LSN " +
         std::to_string(expected) + (found > expected + 1 ? "-" + std::to_string(found - 1) : "") +
         " missing (" + after + "; the write log continues at LSN " + std::to_string(found) +
         "); take a full or snapshot backup to start the chain again";
}

}  // namespace

// ---- Reading segments ------------------------------------------------------

bool IsNothingToShip(const Status& status) {
  return status.IsNotFound() && status.message().find(": nothing to ship") != std::string::npos;
}

Status ForEachLogRecord(WormStore& store, const BackupSet& segment,
                        const std::function<Status(const LogStreamRecord&)>& visit) {
  if (segment.type != BackupType::kLog) {
    return Status::InvalidArgument("backup " + segment.id + " is not a log backup");
  }
  auto bad = [&](const std::string& what) {
    return Status::Corruption("log backup " + segment.id + ": " + what);
  };
  std::vector<std::byte> carry;  // stream bytes not yet parsed
  size_t parsed = 0;             // of carry
  uint64_t stream_bytes = 0;
  for (const ChunkInfo& chunk : segment.chunks) {
    SNAPDISK_ASSIGN_OR_RETURN(std::vector<std::byte> raw,
                              ReadChunk(store, chunk, "log backup " + segment.id));
    stream_bytes += raw.size();
    carry.erase(carry.begin(), carry.begin() + static_cast<std::ptrdiff_t>(parsed));
    parsed = 0;
    carry.insert(carry.end(), raw.begin(), raw.end());
    while (carry.size() - parsed >= kLogStreamHeaderBytes) {
      const std::byte* p = carry.data() + parsed;
      const uint8_t op = static_cast<uint8_t>(p[0]);
      if (op < 1 || op > 3) return bad("bad record at stream byte " + std::to_string(parsed));
      LogStreamRecord r;
      r.op = op == 1 ? VolumeOp::kWrite : op == 2 ? VolumeOp::kTrim : VolumeOp::kWriteZeroes;
      r.lsn = format::Load64(p + 1);
      r.time_unix_ns = static_cast<int64_t>(format::Load64(p + 9));
      r.offset_bytes = format::Load64(p + 17);
      r.length_bytes = format::Load64(p + 25);
      if (r.length_bytes == 0 || r.offset_bytes + r.length_bytes < r.offset_bytes ||
          r.offset_bytes + r.length_bytes > segment.volume_size_bytes) {
        return bad("record LSN " + std::to_string(r.lsn) + " has a bad range");
      }
      const uint64_t data_bytes = r.op == VolumeOp::kWrite ? r.length_bytes : 0;
      if (carry.size() - parsed - kLogStreamHeaderBytes < data_bytes) break;  // in the next chunk
      r.data = {p + kLogStreamHeaderBytes, data_bytes};
      SNAPDISK_RETURN_IF_ERROR(visit(r));
      parsed += kLogStreamHeaderBytes + data_bytes;
    }
  }
  if (parsed != carry.size()) return bad("the stream ends inside a record");
  if (stream_bytes != segment.data_bytes) {
    return bad("the stream has " + std::to_string(stream_bytes) + " bytes, the manifest says " +
               std::to_string(segment.data_bytes));
  }
  return Status::OK();
}

// ---- The job ---------------------------------------------------------------

struct LogBackupJob::Impl {
  Impl(Pool& p, WormStore& s, const BackupOptions& o)
      : pool(p), store(s), options(o), clock(o.clock ? *o.clock : SystemClock::Get()) {}

  // kSeal: the segment's last chunks are stored, then its manifest is put
  // by a worker (kManifest: the pool's thread does not wait for the store's
  // fsyncs), then the pool drops the records and commits.
  enum class Phase { kRead, kSeal, kManifest, kDone };

  Pool& pool;
  WormStore& store;
  const BackupOptions options;
  Clock& clock;
  VolumeInfo volume;
  std::unique_ptr<ChunkPipeline> pipeline;
  std::vector<BackupSet> volume_sets;  // the store's sets of the volume at Start
  uint64_t cut_index = 0;              // the last record this job ships
  uint64_t next_index = 0;             // the next record to look at
  std::vector<Pool::LogRecord> batch;  // read ahead, from next_index
  size_t batch_pos = 0;

  // The segment being built.
  Phase phase = Phase::kRead;
  bool segment_open = false;
  BackupSet set;
  bool reserved = false;
  uint64_t last_index_in_segment = 0;
  uint64_t skip_through_index = 0;  // records already shipped earlier (dropped with this one)
  std::byte* buffer = nullptr;      // the chunk being filled
  uint64_t buffer_used = 0;
  uint64_t chunks_submitted = 0;
  uint64_t chunks_done = 0;
  std::vector<std::optional<ChunkInfo>> chunks;  // by stream position
  std::vector<std::byte> record_bytes;           // header + data of the record being copied
  uint64_t record_copied = 0;
  Status pending_gap;  // a gap found inside the cut: reported after the segment ships
  bool manifest_pending = false;  // its put is queued or running

  Status error;
  bool finished = false;
  Result<BackupSet> result = Status::Busy("log backup is still running");
  std::vector<BackupSet> shipped;
  std::atomic<bool> cancel_requested{false};
  std::atomic<uint64_t> done_bytes{0};
  std::atomic<uint64_t> stored_bytes{0};
  std::atomic<uint64_t> read_bytes{0};
  uint64_t total_bytes = 0;
  int64_t started_unix_ns = 0;
  int64_t started_steady_ns = 0;
  std::atomic<int64_t> finished_steady_ns{0};

  bool Step();
  // The next record to ship, or null at the cut (reads ahead as needed).
  Result<const Pool::LogRecord*> Peek();
  Status OpenSegment(const Pool::LogRecord& first);
  // Copies record_bytes into chunk buffers; false when no buffer is free.
  bool CopyRecordBytes();
  void TakeOutputs();
  // Fills in the segment's figures and queues its manifest's put; false
  // when the pipeline has no room yet.
  bool SubmitManifest();
  // After the put: the segment is shipped, the pool drops its records.
  Status FinishSeal();
  bool Fail();
  // The last LSN already in the store for `lineage` (0 if none) and the
  // segment that holds it.
  std::pair<uint64_t, const BackupSet*> LastShipped(uint64_t lineage) const;
};

std::pair<uint64_t, const BackupSet*> LogBackupJob::Impl::LastShipped(uint64_t lineage) const {
  uint64_t last = 0;
  const BackupSet* at = nullptr;
  for (const BackupSet& s : volume_sets) {
    if (s.type == BackupType::kLog && s.lineage == lineage && s.last_lsn >= last) {
      last = s.last_lsn;
      at = &s;
    }
  }
  for (const BackupSet& s : shipped) {
    if (s.lineage == lineage && s.last_lsn >= last) {
      last = s.last_lsn;
      at = &s;
    }
  }
  return {last, at};
}

Result<const Pool::LogRecord*> LogBackupJob::Impl::Peek() {
  if (next_index > cut_index) return nullptr;
  if (batch_pos == batch.size()) {
    SNAPDISK_ASSIGN_OR_RETURN(batch, pool.ReadLog(volume.name, next_index, kRecordsPerRead));
    batch_pos = 0;
    if (batch.empty()) return nullptr;
    // Records dropped meanwhile (the pool under space pressure) are simply
    // not there: the chain check below reports the gap.
    next_index = batch.front().index;
    if (next_index > cut_index) return nullptr;
  }
  return &batch[batch_pos];
}

Status LogBackupJob::Impl::OpenSegment(const Pool::LogRecord& first) {
  SNAPDISK_ASSIGN_OR_RETURN(uint64_t sequence, ReserveBackupSequence(store, volume.name));
  reserved = true;
  set = BackupSet{};
  set.sequence = sequence;
  set.type = BackupType::kLog;
  set.id = std::string(1, BackupTypeLetter(BackupType::kLog)) + std::to_string(sequence);
  set.volume = volume.name;
  set.volume_id = volume.id;
  set.lineage = first.lineage;
  set.first_lsn = first.lsn;
  set.last_lsn = first.lsn;
  set.first_record_unix_ns = first.time_unix_ns;
  set.last_record_unix_ns = first.time_unix_ns;
  set.started_unix_ns = store.NowUnixNs();
  set.block_bytes = pool.block_bytes();
  set.volume_size_bytes = volume.size_bytes;
  set.retain_until_unix_ns = RetainUntilUnixNs(options, set.started_unix_ns);
  if (auto [last, at] = LastShipped(first.lineage); at != nullptr) set.base = at->id;
  segment_open = true;
  chunks.clear();
  chunks_submitted = chunks_done = 0;
  buffer_used = 0;
  return Status::OK();
}

bool LogBackupJob::Impl::CopyRecordBytes() {
  while (record_copied < record_bytes.size()) {
    if (buffer == nullptr) {
      buffer = pipeline->AcquireBuffer();
      if (buffer == nullptr) return false;
      buffer_used = 0;
    }
    const uint64_t room = store.config().chunk_bytes - buffer_used;
    const uint64_t n = std::min<uint64_t>(room, record_bytes.size() - record_copied);
    std::memcpy(buffer + buffer_used, record_bytes.data() + record_copied, n);
    buffer_used += n;
    record_copied += n;
    done_bytes.fetch_add(n, std::memory_order_relaxed);
    if (buffer_used == store.config().chunk_bytes) {
      chunks.emplace_back();
      pipeline->SubmitChunk(buffer, buffer_used, chunks_submitted++);
      buffer = nullptr;
    }
  }
  return true;
}

void LogBackupJob::Impl::TakeOutputs() {
  std::vector<ChunkPipeline::Output> outputs;
  pipeline->TakeOutputs(outputs);
  for (ChunkPipeline::Output& o : outputs) {
    if (!o.is_chunk) manifest_pending = false;
    if (!o.status.ok()) {
      if (error.ok()) error = o.status.WithContext("log backup " + set.id);
      continue;
    }
    if (!o.is_chunk) continue;  // the manifest's put (the only other task)
    chunks[o.tag] = o.chunk;
    ++chunks_done;
  }
}

bool LogBackupJob::Impl::SubmitManifest() {
  set.finished_unix_ns = store.NowUnixNs();
  set.consistent_unix_ns = set.last_record_unix_ns;
  set.data_bytes = 0;
  set.stored_bytes = 0;
  set.chunks.clear();
  for (auto& c : chunks) {
    set.data_bytes += c->raw_bytes;
    if (c->new_in_set) set.stored_bytes += c->stored_bytes;
    set.chunks.push_back(*c);
  }
  // Manifest last: the segment exists once it is in. `set` is not touched
  // until the put's output is taken.
  if (!pipeline->TrySubmitTask([this] { return PutManifest(store, set); }, 0)) return false;
  manifest_pending = true;
  return true;
}

Status LogBackupJob::Impl::FinishSeal() {
  ReleaseBackupSequence(store, volume.name, set.sequence);
  reserved = false;
  shipped.push_back(set);
  segment_open = false;
  // The store has the records now: the pool may let them go. A failure here
  // only keeps them longer (the next job skips what the store has).
  const uint64_t through = std::max(last_index_in_segment, skip_through_index);
  if (Status s = pool.DropLog(volume.name, through); !s.ok()) return s;
  return pool.Commit();
}

bool LogBackupJob::Impl::Fail() {
  pipeline->Cancel();
  if (pipeline->pending() > 0) {
    TakeOutputs();
    if (pipeline->pending() > 0) return false;
  }
  if (buffer != nullptr) pipeline->ReleaseBuffer(buffer);
  buffer = nullptr;
  if (reserved) ReleaseBackupSequence(store, volume.name, set.sequence);
  reserved = false;
  result = error;
  finished = true;
  phase = Phase::kDone;
  finished_steady_ns.store(clock.NowNs());
  return true;
}

bool LogBackupJob::Impl::Step() {
  if (finished) return true;
  // Once the manifest is being put, the segment ships: a cancel then ends
  // the job after it (at the next record).
  if (cancel_requested.load() && error.ok() && phase != Phase::kManifest) {
    error = Status::Cancelled("log backup of '" + volume.name + "' was cancelled");
  }
  TakeOutputs();
  if (!error.ok()) return Fail();
  uint64_t budget = kBytesPerStep;
  const int64_t step_end = clock.NowNs() + kBackupStepBudgetNs;
  while (budget > 0) {
    if (phase == Phase::kSeal) {
      if (buffer != nullptr) {
        chunks.emplace_back();
        pipeline->SubmitChunk(buffer, buffer_used, chunks_submitted++);
        buffer = nullptr;
      }
      if (chunks_done < chunks_submitted) return false;  // workers still at it
      if (!SubmitManifest()) return false;
      phase = Phase::kManifest;
      return false;
    }
    if (phase == Phase::kManifest) {
      if (manifest_pending) return false;  // a worker is putting it
      if (error = FinishSeal(); !error.ok()) return Fail();
      if (!pending_gap.ok()) {
        error = pending_gap;
        return Fail();
      }
      phase = Phase::kRead;
      continue;
    }
    // kRead: finish copying the current record first.
    if (record_copied < record_bytes.size()) {
      if (!CopyRecordBytes()) return false;
      continue;
    }
    auto next = Peek();
    if (!next.ok()) {
      error = next.status();
      return Fail();
    }
    const Pool::LogRecord* r = *next;
    if (r == nullptr) {
      if (segment_open) {
        phase = Phase::kSeal;
        continue;
      }
      // The cut is shipped. Records skipped as already shipped go too.
      if (skip_through_index > 0) (void)pool.DropLog(volume.name, skip_through_index);
      finished = true;
      phase = Phase::kDone;
      if (shipped.empty()) {
        result = Status::NotFound("no writes of volume '" + volume.name +
                                  "' left to ship: nothing to ship");
      } else {
        result = shipped.back();
      }
      finished_steady_ns.store(clock.NowNs());
      return true;
    }
    auto [last, at] = LastShipped(r->lineage);
    if (segment_open && r->lineage == set.lineage && r->lsn != set.last_lsn + 1) {
      // A gap inside the cut: ship what is contiguous, then report it.
      pending_gap = Status::Corruption(GapMessage(volume.name, r->lineage, set.last_lsn + 1,
                                                  r->lsn, "after log backup " + set.id));
      phase = Phase::kSeal;
      continue;
    }
    if (segment_open && r->lineage != set.lineage) {
      phase = Phase::kSeal;  // a rollback: the next lineage gets its own segment
      continue;
    }
    if (!segment_open) {
      if (at != nullptr && r->lsn <= last) {  // shipped before a crash: skip
        skip_through_index = r->index;
        ++batch_pos;
        ++next_index;
        continue;
      }
      if (at != nullptr && r->lsn != last + 1) {
        error = Status::Corruption(
            GapMessage(volume.name, r->lineage, last + 1, r->lsn, "log backup " + at->id +
                                                                      " ends at LSN " +
                                                                      std::to_string(last)));
        return Fail();
      }
      if (at == nullptr) {
        // The lineage's first segment must reach back to its newest data backup.
        const BackupSet* data = nullptr;
        for (const BackupSet& s : volume_sets) {
          if (s.type != BackupType::kLog && s.lineage == r->lineage &&
              (data == nullptr || s.last_lsn > data->last_lsn)) {
            data = &s;
          }
        }
        if (data != nullptr && r->lsn > data->last_lsn + 1) {
          error = Status::Corruption(GapMessage(volume.name, r->lineage, data->last_lsn + 1,
                                                r->lsn,
                                                "data backup " + data->id + " is at LSN " +
                                                    std::to_string(data->last_lsn)));
          return Fail();
        }
      }
      if (error = OpenSegment(*r); !error.ok()) return Fail();
    }
    // Encode the record: header, then its data.
    const uint64_t data_bytes = r->op == VolumeOp::kWrite ? r->length_bytes : 0;
    record_bytes.resize(kLogStreamHeaderBytes + data_bytes);
    EncodeHeader(*r, record_bytes.data());
    if (data_bytes > 0) {
      Status s = pool.ReadLogData(volume.name, *r,
                                  {record_bytes.data() + kLogStreamHeaderBytes, data_bytes});
      if (!s.ok()) {
        error = s;
        return Fail();
      }
      read_bytes.fetch_add(data_bytes, std::memory_order_relaxed);
    }
    record_copied = 0;
    set.last_lsn = r->lsn;
    set.last_record_unix_ns = r->time_unix_ns;
    last_index_in_segment = r->index;
    ++batch_pos;
    ++next_index;
    budget -= std::min<uint64_t>(budget, record_bytes.size());
    if (!CopyRecordBytes()) return false;
    if (clock.NowNs() >= step_end) break;  // the rest at the next step
  }
  return false;
}

Result<std::unique_ptr<LogBackupJob>> LogBackupJob::Start(Pool& pool, WormStore& store,
                                                          std::string_view volume,
                                                          const BackupOptions& options) {
  if (!options.retain_forever) SNAPDISK_RETURN_IF_ERROR(ValidateRetentionDays(options.retain_days));
  if (options.worker_threads < 1 || options.worker_threads > 64) {
    return Status::InvalidArgument("worker threads must be 1-64");
  }
  SNAPDISK_ASSIGN_OR_RETURN(VolumeInfo info, pool.GetVolume(volume));
  // Everything shipped must be durable in the pool too.
  SNAPDISK_RETURN_IF_ERROR(pool.Commit());
  SNAPDISK_ASSIGN_OR_RETURN(Pool::LogInfo log, pool.GetLogInfo(volume));
  if (!log.enabled) {
    return Status::InvalidArgument("the write log of volume '" + info.name +
                                   "' is off: there is nothing to ship");
  }
  if (log.records == 0) {
    return Status::NotFound("no writes of volume '" + info.name + "' since the last log " +
                            "backup (LSN " + std::to_string(info.lsn) + "): nothing to ship");
  }
  auto impl = std::make_unique<Impl>(pool, store, options);
  impl->volume = info;
  SNAPDISK_ASSIGN_OR_RETURN(impl->volume_sets, ListBackupSets(store, info.name));
  impl->cut_index = log.next_index - 1;
  impl->next_index = log.first_index;
  impl->total_bytes = log.referenced_bytes;
  impl->started_unix_ns = store.NowUnixNs();
  impl->started_steady_ns = impl->clock.NowNs();
  ChunkPipeline::Options po;
  po.worker_threads = options.worker_threads;
  po.buffers = options.max_reads_in_flight + 2 * options.worker_threads;
  po.chunk_bytes = store.config().chunk_bytes;
  po.zstd_level = store.config().zstd_level;
  po.retain_until_unix_ns = RetainUntilUnixNs(options, impl->started_unix_ns);
  po.stored_bytes = &impl->stored_bytes;
  // As BackupJob's: unset means normal priority here (the log is the
  // customer's data path); the comparator asks for the lowest, and then the
  // workers also keep off a pinned pool thread's CPU.
  po.lowest_priority = options.lowest_priority.value_or(false);
  if (po.lowest_priority) po.worker_cpus = CpusBesideThisThread();
  impl->pipeline = std::make_unique<ChunkPipeline>(store, po);
  // Check the chain's start now, so a gap is reported at once: run until the
  // first segment is open (or the job ends).
  auto job = std::unique_ptr<LogBackupJob>(new LogBackupJob(std::move(impl)));
  Impl& i = *job->impl_;
  while (!i.finished && !i.segment_open) i.Step();
  if (i.finished && !i.result.ok()) return i.result.status();
  return job;
}

LogBackupJob::LogBackupJob(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LogBackupJob::~LogBackupJob() {
  if (!impl_->finished) {
    impl_->cancel_requested.store(true);
    while (!impl_->Step()) impl_->pipeline->WaitForOutput(1'000'000);
  }
}

bool LogBackupJob::Step() { return impl_->Step(); }
const Result<BackupSet>& LogBackupJob::result() const { return impl_->result; }
const std::vector<BackupSet>& LogBackupJob::segments() const { return impl_->shipped; }
void LogBackupJob::Cancel() { impl_->cancel_requested.store(true); }

BackupProgress LogBackupJob::progress() const {
  const Impl& i = *impl_;
  BackupProgress p;
  p.id = i.set.id;
  p.volume = i.volume.name;
  p.type = BackupType::kLog;
  p.state = !i.finished              ? BackupState::kRunning
            : i.result.ok()          ? BackupState::kDone
            : i.error.IsCancelled()  ? BackupState::kCancelled
                                     : BackupState::kFailed;
  p.total_bytes = std::max<uint64_t>(i.total_bytes, i.done_bytes.load());
  p.done_bytes = i.done_bytes.load();
  p.read_bytes = i.read_bytes.load();
  p.stored_bytes = i.stored_bytes.load();
  p.started_unix_ns = i.started_unix_ns;
  const int64_t end = i.finished ? i.finished_steady_ns.load() : i.clock.NowNs();
  const double seconds = static_cast<double>(end - i.started_steady_ns) / 1e9;
  if (seconds > 0) p.rate_bytes_per_s = static_cast<double>(p.done_bytes) / seconds;
  if (!i.finished && p.rate_bytes_per_s > 0 && p.total_bytes > p.done_bytes) {
    p.eta_s = static_cast<double>(p.total_bytes - p.done_bytes) / p.rate_bytes_per_s;
  }
  return p;
}

}  // namespace snapdisk
