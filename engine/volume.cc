// Volume I/O: the request state machine of the pool.
//
// A read looks up each block in the volume's map, reads mapped runs from the
// device (coalescing consecutive physical blocks) and verifies every block's
// checksum before the caller sees it. A write allocates fresh blocks (runs
// where it can), checksums and writes them, and only when the device has them
// points the map at them and drops the old blocks: a crash or an error before
// that leaves the map as it was. Requests smaller than a block first read the
// partial edge blocks (read-modify-write).
//
// Device callbacks only count completions; the map work happens in
// ProcessFinished(), outside the device's Poll, because it may read metadata
// through the device's synchronous helpers.
#include "engine/volume.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "disk/clock.h"
#include "engine/hydration_fetcher.h"
#include "engine/hydration_map.h"
#include "engine/pending_io.h"
#include "engine/pool.h"

namespace snapdisk {

using format::MapEntry;

const char* VolumeOpName(VolumeOp op) {
  switch (op) {
    case VolumeOp::kRead:
      return "read";
    case VolumeOp::kWrite:
      return "write";
    case VolumeOp::kTrim:
      return "trim";
    case VolumeOp::kWriteZeroes:
      return "write-zeroes";
    case VolumeOp::kFlush:
      return "flush";
  }
  return "unknown";
}

namespace {

IoOp StatsOp(VolumeOp op) {
  switch (op) {
    case VolumeOp::kRead:
      return IoOp::kRead;
    case VolumeOp::kWrite:
      return IoOp::kWrite;
    case VolumeOp::kTrim:
    case VolumeOp::kWriteZeroes:
      return IoOp::kDiscard;
    case VolumeOp::kFlush:
      return IoOp::kFlush;
  }
  return IoOp::kRead;
}

bool IsBlockAligned(const VolumeRequest& r, uint32_t block_bytes) {
  return r.offset_bytes % block_bytes == 0 && r.length_bytes % block_bytes == 0;
}

}  // namespace

// ---- Volume ------------------------------------------------------------------

Volume::~Volume() = default;

const std::string& Volume::name() const { return pool_.records_[slot_].name; }
uint64_t Volume::size_bytes() const { return pool_.records_[slot_].size_bytes; }
bool Volume::read_only() const { return pool_.records_[slot_].kind == Pool::Kind::kSnapshot; }

Status Volume::Submit(VolumeRequest& request) {
  SNAPDISK_RETURN_IF_ERROR(pool_.CheckHealthy());
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument((read_only() ? "snapshot '" : "volume '") + name() +
                                   "': " + VolumeOpName(request.op) + " at offset " +
                                   std::to_string(request.offset_bytes) + " length " +
                                   std::to_string(request.length_bytes) + ": " + why);
  };
  if (!request.on_complete) return bad("request has no completion callback");
  if (read_only() && request.op != VolumeOp::kRead && request.op != VolumeOp::kFlush) {
    return bad("a snapshot is read-only");
  }
  if (request.op != VolumeOp::kFlush) {
    if (request.length_bytes == 0) return bad("length is zero");
    const uint64_t size = size_bytes();
    if (request.offset_bytes > size || request.length_bytes > size - request.offset_bytes) {
      return bad("beyond the end of the volume (" + std::to_string(size) + " bytes)");
    }
    if ((request.op == VolumeOp::kRead || request.op == VolumeOp::kWrite) &&
        request.data == nullptr) {
      return bad("no data buffer");
    }
  }
  if (request.op != VolumeOp::kRead && request.op != VolumeOp::kFlush) {
    SNAPDISK_RETURN_IF_ERROR(CheckWriteFence(request));
  }
  if (pool_.requests_in_flight_ >= pool_.options_.max_requests) {
    return Status::Busy("pool has " + std::to_string(pool_.requests_in_flight_) +
                        " requests in flight (the limit)");
  }
  PendingIo* io = pool_.GetIo();
  io->volume = this;
  io->user = &request;
  io->status = Status::OK();
  io->device_pending = 0;
  io->submit_ns = SystemClock::Get().NowNs();
  io->complete_after_ns = 0;
  ++in_flight_;
  ++pool_.requests_in_flight_;
  const uint32_t block = pool_.block_bytes_;
  io->first_vbn = request.offset_bytes / block;
  io->end_vbn = (request.offset_bytes + request.length_bytes + block - 1) / block;
  QosLimiter* limiter = charge_qos_to_ != nullptr ? charge_qos_to_->qos_.get() : qos_.get();
  if (limiter != nullptr) {
    const int64_t now = pool_.clock().NowNs();
    const QosGrant grant = limiter->Reserve(StatsOp(request.op), request.length_bytes, now);
    io->complete_after_ns = grant.complete_ns;
    if (grant.start_ns > now) {
      pool_.admissions_.emplace(grant.start_ns, io);
      return Status::OK();
    }
  }
  Dispatch(io);
  return Status::OK();
}

void Volume::Dispatch(PendingIo* io) {
  const VolumeRequest& request = *io->user;
  if (request.op == VolumeOp::kFlush) {
    pool_.CompleteIo(io, pool_.Commit());
  } else if (request.op == VolumeOp::kRead) {
    pool_.StartRead(io);
  } else if (!deferred_.empty() || Overlaps(io->first_vbn, io->end_vbn)) {
    deferred_.push_back(io);  // applied in submission order after what it overlaps
  } else {
    pool_.StartMutation(io);
  }
}

void Volume::ConfigureQos() {
  const auto& record = pool_.records_[slot_];
  if (record.profile == EssdLevel::kUnlimited) {
    qos_.reset();
    return;
  }
  auto profile = EssdProfile::For(record.profile, record.size_bytes);
  SNAPDISK_CHECK(profile.ok(), "a volume's profile was validated at creation");
  if (qos_) {
    qos_->SetProfile(*profile);
  } else {
    qos_ = std::make_unique<QosLimiter>(*profile);
  }
}

bool Volume::Overlaps(uint64_t first_vbn, uint64_t end_vbn) const {
  // Busy ranges never overlap each other, so only the last one starting
  // before end_vbn can reach into [first_vbn, end_vbn).
  auto it = busy_ranges_.lower_bound(end_vbn);
  if (it == busy_ranges_.begin()) return false;
  --it;
  return it->second > first_vbn;
}

void Volume::StartDeferred() {
  while (!deferred_.empty()) {
    PendingIo* io = deferred_.front();
    if (Overlaps(io->first_vbn, io->end_vbn)) return;
    deferred_.pop_front();
    pool_.StartMutation(io);
  }
}

Result<std::vector<Extent>> Volume::MapExtents(uint64_t offset_bytes, uint64_t length_bytes) {
  SNAPDISK_RETURN_IF_ERROR(pool_.CheckHealthy());
  const uint64_t size = size_bytes();
  if (offset_bytes > size || length_bytes > size - offset_bytes) {
    return Status::InvalidArgument(
        "volume '" + name() + "': range at " + std::to_string(offset_bytes) + " length " +
        std::to_string(length_bytes) + " is beyond the end (" + std::to_string(size) + " bytes)");
  }
  std::vector<Extent> out;
  const uint64_t end = offset_bytes + length_bytes;
  uint64_t at = offset_bytes;  // everything before `at` is described
  auto add = [&](uint64_t until, bool zero) {
    if (until <= at) return;
    if (!out.empty() && out.back().zero == zero) {
      out.back().length_bytes += until - at;
    } else {
      out.push_back(Extent{at, until - at, zero});
    }
    at = until;
  };
  const uint32_t block = pool_.block_bytes_;
  const uint64_t first_vbn = offset_bytes / block;
  const uint64_t end_vbn = (end + block - 1) / block;
  auto add_data = [&](uint64_t data_first_vbn, uint64_t data_end_vbn) {
    add(std::max(data_first_vbn * block, offset_bytes), true);
    add(std::min(data_end_vbn * block, end), false);
  };
  // Blocks still to come from a hydration source are data too (in VBN order
  // with the mapped ones; the two may overlap).
  std::vector<std::pair<uint64_t, uint64_t>> pending;
  if (const HydrationState* h = pool_.FindHydration(id_)) {
    pending = h->pending.Overlapping(first_vbn, end_vbn);
  }
  size_t next_pending = 0;
  auto add_pending_through = [&](uint64_t vbn) {
    for (; next_pending < pending.size() && pending[next_pending].first <= vbn; ++next_pending) {
      add_data(pending[next_pending].first, pending[next_pending].second);
    }
  };
  Status s = pool_.map_->ForEachDataIn(pool_.records_[slot_].root, first_vbn, end_vbn,
                                       [&](uint64_t vbn, const format::MapEntry&) {
                                         add_pending_through(vbn);
                                         add_data(vbn, vbn + 1);
                                         return Status::OK();
                                       });
  add_pending_through(UINT64_MAX);
  if (!s.ok()) return s.WithContext("volume '" + name() + "'");
  add(end, true);
  return out;
}

Status Volume::CheckWriteFence(const VolumeRequest& request) {
  if (fence_exempt_count_ > 0 || read_only()) return Status::OK();
  if (fence_key_.empty()) {
    fence_key_ = Pool::AuxKey(Pool::Kind::kAttribute, id_, Pool::kWriteFenceAttribute);
  }
  if (!pool_.aux_by_key_.count(fence_key_)) return Status::OK();
  // Fenced: the refusal carries the fence's reason.
  Result<std::string> why = pool_.GetAttribute(name(), Pool::kWriteFenceAttribute);
  return Status::PermissionDenied("volume '" + name() + "': " + VolumeOpName(request.op) +
                                  " at offset " + std::to_string(request.offset_bytes) +
                                  " length " + std::to_string(request.length_bytes) + " refused: " +
                                  (why.ok()
                                       ? *why
                                       : "it is write-fenced (the fence's reason cannot be read: " +
                                             why.status().ToString() + ")"));
}

Status Volume::SubmitAndWait(VolumeRequest& request) {
  bool done = false;
  Status result;
  request.on_complete = [&](VolumeRequest&, const Status& status) {
    result = status;
    done = true;
  };
  SNAPDISK_RETURN_IF_ERROR(Submit(request));
  while (!done) pool_.Poll(1);
  return result;
}

Status Volume::Read(uint64_t offset_bytes, std::span<std::byte> out) {
  VolumeRequest r{.op = VolumeOp::kRead,
                  .offset_bytes = offset_bytes,
                  .length_bytes = out.size(),
                  .data = out.data()};
  return SubmitAndWait(r);
}

Status Volume::Write(uint64_t offset_bytes, std::span<const std::byte> data) {
  VolumeRequest r{.op = VolumeOp::kWrite,
                  .offset_bytes = offset_bytes,
                  .length_bytes = data.size(),
                  .data = const_cast<std::byte*>(data.data())};
  return SubmitAndWait(r);
}

Status Volume::Trim(uint64_t offset_bytes, uint64_t length_bytes) {
  VolumeRequest r{
      .op = VolumeOp::kTrim, .offset_bytes = offset_bytes, .length_bytes = length_bytes};
  return SubmitAndWait(r);
}

Status Volume::WriteZeroes(uint64_t offset_bytes, uint64_t length_bytes) {
  VolumeRequest r{
      .op = VolumeOp::kWriteZeroes, .offset_bytes = offset_bytes, .length_bytes = length_bytes};
  return SubmitAndWait(r);
}

Status Volume::Flush() {
  VolumeRequest r{.op = VolumeOp::kFlush};
  return SubmitAndWait(r);
}

// ---- Pool: request machinery -------------------------------------------------

PendingIo* Pool::GetIo() {
  if (free_ios_.empty()) {
    io_pool_.push_back(std::make_unique<PendingIo>());
    return io_pool_.back().get();
  }
  PendingIo* io = free_ios_.back();
  free_ios_.pop_back();
  return io;
}

IoRequest* Pool::GetDeviceRequest() {
  if (free_device_requests_.empty()) {
    device_request_pool_.push_back(std::make_unique<IoRequest>());
    return device_request_pool_.back().get();
  }
  IoRequest* r = free_device_requests_.back();
  free_device_requests_.pop_back();
  return r;
}

uint32_t Pool::AsyncDeviceLimit() const {
  // Leave room in the device queue for synchronous metadata reads.
  const uint32_t depth = device_.queue_depth();
  return depth > 16 ? depth - 8 : std::max<uint32_t>(1, depth / 2);
}

void Pool::SubmitToDevice(IoRequest* request) {
  if (device_in_flight_ >= AsyncDeviceLimit()) {
    device_backlog_.push_back(request);
    return;
  }
  ++device_in_flight_;
  Status s = device_.Submit(*request);
  if (s.IsBusy()) {
    --device_in_flight_;
    device_backlog_.push_front(request);
  } else if (!s.ok()) {
    request->on_complete(*request, s);  // counts it back down
  }
}

void Pool::PumpBacklog() {
  while (!device_backlog_.empty() && device_in_flight_ < AsyncDeviceLimit()) {
    IoRequest* r = device_backlog_.front();
    device_backlog_.pop_front();
    const size_t before = device_backlog_.size();
    SubmitToDevice(r);
    if (device_backlog_.size() > before) return;  // the device is full after all
  }
}

void Pool::SubmitDeviceIo(PendingIo* io, IoOp op, uint64_t pbn, uint64_t blocks, std::byte* data) {
  IoRequest* r = GetDeviceRequest();
  r->op = op;
  r->offset_bytes = pbn * block_bytes_;
  r->length_bytes = blocks * block_bytes_;
  r->data = data;
  r->on_complete = [this, io](IoRequest& done, const Status& s) {
    if (!s.ok() && io->status.ok()) {
      io->status = s.WithContext("volume '" + records_[io->volume->slot_].name + "'");
    }
    --device_in_flight_;
    free_device_requests_.push_back(&done);
    if (--io->device_pending == 0) finished_.push_back(io);
  };
  ++io->device_pending;
  if (device_backlog_.empty()) {
    SubmitToDevice(r);
  } else {
    device_backlog_.push_back(r);  // keep the order: writes of one request stay behind earlier ones
  }
}

// While a request is being set up, synchronous metadata reads poll the device
// and may finish the request's own device I/O already submitted: a held count
// keeps it from advancing before the setup is over.
void Pool::HoldSetup(PendingIo* io) { ++io->device_pending; }

void Pool::ReleaseSetup(PendingIo* io) {
  if (--io->device_pending == 0) Advance(io);
}

void Pool::CompleteIo(PendingIo* io, Status status) {
  io->status = std::move(status);
  io->stage = PendingIo::Stage::kDone;
  if (io->complete_after_ns != 0 && io->complete_after_ns > clock().NowNs()) {
    held_completions_.emplace(io->complete_after_ns, io);  // the profile's latency
    return;
  }
  completed_.push_back(io);
}

int Pool::background_event_fd() const { return fetcher_->event_fd(); }

int64_t Pool::NextTimerNs() const {
  if ((map_->deferred_releases() > 0 || !logs_over_limit_.empty()) && failure_.ok()) {
    return clock().NowNs();  // background work to do
  }
  return NextQosTimerNs();
}

int64_t Pool::NextQosTimerNs() const {
  int64_t next = INT64_MAX;
  if (!admissions_.empty()) next = admissions_.begin()->first;
  if (!held_completions_.empty()) next = std::min(next, held_completions_.begin()->first);
  return next;
}

int64_t Pool::RunTimers() {
  if (admissions_.empty() && held_completions_.empty()) return INT64_MAX;
  const int64_t now = clock().NowNs();
  while (!admissions_.empty() && admissions_.begin()->first <= now) {
    PendingIo* io = admissions_.begin()->second;
    admissions_.erase(admissions_.begin());
    io->volume->Dispatch(io);
  }
  while (!held_completions_.empty() && held_completions_.begin()->first <= now) {
    completed_.push_back(held_completions_.begin()->second);
    held_completions_.erase(held_completions_.begin());
  }
  return NextQosTimerNs();
}

Status Pool::ReadMapped(PendingIo* io, uint64_t first_vbn, uint64_t count, std::byte* dest) {
  // Blocks still to come from a hydration source: first fill what the source
  // fetches with them into the volume; then they read as mapped blocks.
  if (FindHydration(io->volume->id()) != nullptr) {
    SNAPDISK_RETURN_IF_ERROR(FillFetched(io->volume->slot_, first_vbn, count));
  }
  Record& record = RecordOf(*io->volume);
  uint64_t run_start = 0, run_pbn = 0, run_len = 0;
  auto flush_run = [&] {
    if (run_len > 0)
      SubmitDeviceIo(io, IoOp::kRead, run_pbn, run_len, dest + run_start * block_bytes_);
    run_len = 0;
  };
  // What is still pending after FillFetched (at the top) is read from the
  // source, now.
  const HydrationState* hydration = FindHydration(record.id);
  std::vector<std::pair<uint64_t, uint64_t>> pending;
  if (hydration != nullptr) pending = hydration->pending.Overlapping(first_vbn, first_vbn + count);
  size_t next_pending = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (next_pending < pending.size() && pending[next_pending].first == first_vbn + i) {
      flush_run();
      const uint64_t n = pending[next_pending].second - pending[next_pending].first;
      Status s = ReadFromSource(*hydration, record, first_vbn + i, n, dest + i * block_bytes_);
      if (!s.ok()) return s;
      for (uint64_t k = 0; k < n; ++k) io->entries[first_vbn + i + k - io->first_vbn] = MapEntry{};
      i += n - 1;
      ++next_pending;
      continue;
    }
    auto entry = map_->Lookup(record.root, first_vbn + i);
    if (!entry.ok()) {
      flush_run();
      return entry.status().WithContext("volume '" + record.name + "' offset " +
                                        std::to_string((first_vbn + i) * block_bytes_));
    }
    io->entries[first_vbn + i - io->first_vbn] = *entry;
    if (entry->pbn == 0) {
      flush_run();
      std::memset(dest + i * block_bytes_, 0, block_bytes_);
      continue;
    }
    if (run_len > 0 && entry->pbn == run_pbn + run_len) {
      ++run_len;
      continue;
    }
    flush_run();
    run_start = i;
    run_pbn = entry->pbn;
    run_len = 1;
  }
  flush_run();
  return Status::OK();
}

namespace {

Status ChecksumMismatch(uint64_t vbn, uint32_t block_bytes, uint64_t pbn) {
  return Status::Corruption("checksum mismatch at offset " + std::to_string(vbn * block_bytes) +
                            " (block " + std::to_string(pbn) + ")");
}

}  // namespace

Status Pool::VerifyRead(PendingIo* io, uint64_t first_vbn, uint64_t count, const std::byte* data) {
  for (uint64_t i = 0; i < count; ++i) {
    const MapEntry& e = io->entries[first_vbn + i - io->first_vbn];
    if (e.pbn == 0) continue;
    if (format::Checksum({data + i * block_bytes_, block_bytes_}) != e.checksum) {
      return ChecksumMismatch(first_vbn + i, block_bytes_, e.pbn)
          .WithContext("volume '" + records_[io->volume->slot_].name + "'");
    }
  }
  return Status::OK();
}

Result<std::vector<MapEntry>> Pool::ResolveSnapshotBlocks(const Volume& snapshot,
                                                          uint64_t first_vbn, uint64_t count) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  const Record& record = records_[snapshot.slot_];
  if (record.kind != Kind::kSnapshot || !snapshot.in_use()) {
    return Status::InvalidArgument(
        "'" + record.name + "': only a snapshot marked in use can be read off the pool's thread");
  }
  const uint64_t blocks =
      (record.size_bytes + block_bytes_ - 1) / block_bytes_;  // a partial last one too
  if (first_vbn > blocks || count > blocks - first_vbn) {
    return Status::InvalidArgument("'" + record.name + "': blocks " + std::to_string(first_vbn) +
                                   "+" + std::to_string(count) + " are beyond its end");
  }
  if (!device_.SupportsConcurrentReads()) {
    return Status::Unsupported(device_.name() + " cannot be read off the pool's thread");
  }
  std::vector<MapEntry> entries(count);
  SNAPDISK_RETURN_IF_ERROR(map_->ForEachDataIn(record.root, first_vbn, first_vbn + count,
                                               [&](uint64_t vbn, const MapEntry& e) {
                                                 entries[vbn - first_vbn] = e;
                                                 return Status::OK();
                                               }));
  return entries;
}

Status Pool::ReadResolvedBlocks(std::span<const MapEntry> entries, uint64_t first_vbn,
                                std::byte* dest) {
  // Runs of consecutive blocks are one read each.
  for (size_t i = 0; i < entries.size();) {
    std::byte* at = dest + i * block_bytes_;
    if (entries[i].pbn == 0) {
      std::memset(at, 0, block_bytes_);
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < entries.size() && entries[j].pbn == entries[j - 1].pbn + 1) ++j;
    SNAPDISK_RETURN_IF_ERROR(
        device_.ReadConcurrent(entries[i].pbn * block_bytes_, {at, (j - i) * block_bytes_}));
    for (size_t k = i; k < j; ++k) {
      if (format::Checksum({dest + k * block_bytes_, block_bytes_}) != entries[k].checksum) {
        return ChecksumMismatch(first_vbn + k, block_bytes_, entries[k].pbn);
      }
    }
    i = j;
  }
  return Status::OK();
}

void Pool::StartRead(PendingIo* io, bool may_park) {
  if (may_park && ParkForFetch(io)) return;
  const VolumeRequest& user = *io->user;
  const uint64_t n = io->block_count();
  io->entries.assign(n, MapEntry{});
  if (IsBlockAligned(user, block_bytes_)) {
    io->blocks = user.data;
  } else {
    if (io->bounce.size() < n * block_bytes_) io->bounce = AlignedBuffer(n * block_bytes_);
    io->blocks = io->bounce.data();
  }
  io->stage = PendingIo::Stage::kReadBlocks;
  HoldSetup(io);
  Status s = ReadMapped(io, io->first_vbn, n, io->blocks);
  if (!s.ok()) io->status = s;
  ReleaseSetup(io);
}

void Pool::StartMutation(PendingIo* io) {
  Volume& volume = *io->volume;
  const VolumeRequest& user = *io->user;
  volume.busy_ranges_.emplace(io->first_vbn, io->end_vbn);
  const uint64_t n = io->block_count();
  const bool aligned = IsBlockAligned(user, block_bytes_);
  if (user.op != VolumeOp::kWrite && aligned) {
    Record& record = RecordOf(volume);
    // Unmapping shadows at most the two edge paths of the range.
    Status s = CheckRoom(2 * MetadataNeed(record.root, 1) + HydrationMetadataNeed(volume, n),
                         /*freeing=*/true);
    if (s.ok()) {
      s = map_->Unmap(record.root, io->first_vbn, n);
      ++record.lsn;
      if (s.ok()) s = HydrationWritten(volume, io->first_vbn, n);
      if (s.ok()) s = AppendLog(volume, user.op, user.offset_bytes, user.length_bytes, nullptr);
      if (!s.ok()) s = Fail(s);
      MarkRootDirty(volume.slot_);
    }
    io->status = s;
    io->stage = PendingIo::Stage::kDone;
    FinishMutation(io);
    return;
  }
  if (aligned) {
    io->blocks = user.data;
    StartBlockWrites(io);
    return;
  }
  // Read-modify-write of the partial first and last blocks.
  if (io->bounce.size() < n * block_bytes_) io->bounce = AlignedBuffer(n * block_bytes_);
  io->blocks = io->bounce.data();
  io->entries.assign(n, MapEntry{});
  io->stage = PendingIo::Stage::kReadEdges;
  HoldSetup(io);
  const bool head_partial = user.offset_bytes % block_bytes_ != 0;
  const bool tail_partial = (user.offset_bytes + user.length_bytes) % block_bytes_ != 0;
  Status s;
  if (head_partial) s = ReadMapped(io, io->first_vbn, 1, io->blocks);
  if (s.ok() && tail_partial && (n > 1 || !head_partial)) {
    s = ReadMapped(io, io->end_vbn - 1, 1, io->blocks + (n - 1) * block_bytes_);
  }
  if (!s.ok()) io->status = s;
  ReleaseSetup(io);
}

void Pool::StartBlockWrites(PendingIo* io) {
  const uint64_t n = io->block_count();
  io->entries.assign(n, MapEntry{});
  io->stage = PendingIo::Stage::kWriteBlocks;
  const uint64_t metadata = MetadataNeed(RecordOf(*io->volume).root, n) +
                            LogMetadataNeed(*io->volume, n) + HydrationMetadataNeed(*io->volume, n);
  if (Status room = CheckRoom(n + metadata); !room.ok()) {
    const bool log_can_give = UnrequiredLogBlocks() > 0;
    if ((space_->freed_not_reusable_blocks() > 0 || log_can_give) && !io->waited_for_space) {
      // Only blocks freed since the last commit are left, or blocks that
      // write logs without a policy keep: Poll commits (dropping those logs),
      // which makes the blocks reusable, and starts this write again.
      log_pressure_ = log_pressure_ || log_can_give;
      io->waited_for_space = true;
      space_waiters_.push_back(io);
      return;
    }
    io->status = room.WithContext("volume '" + RecordOf(*io->volume).name + "'");
    FinishMutation(io);
    return;
  }
  io->metadata_reserved = metadata;
  metadata_reserved_ += metadata;
  HoldSetup(io);
  uint64_t done = 0;
  while (done < n) {
    uint64_t got = 0;
    auto first = space_->AllocateRun(n - done, &got);
    if (!first.ok()) {  // cannot happen after CheckRoom, unless the space map is unreadable
      io->status = first.status().WithContext("volume '" + RecordOf(*io->volume).name + "'");
      break;
    }
    for (uint64_t i = 0; i < got; ++i) {
      const std::byte* block = io->blocks + (done + i) * block_bytes_;
      io->entries[done + i] = MapEntry{*first + i, format::Checksum({block, block_bytes_})};
    }
    SubmitDeviceIo(io, IoOp::kWrite, *first, got, io->blocks + done * block_bytes_);
    done += got;
  }
  ReleaseSetup(io);
}

void Pool::FinishMutation(PendingIo* io) {
  Volume& volume = *io->volume;
  if (io->stage == PendingIo::Stage::kWriteBlocks) {
    Record& record = RecordOf(volume);
    Status s = io->status;
    if (s.ok()) {
      for (uint64_t i = 0; i < io->entries.size() && s.ok(); ++i) {
        auto old = map_->Set(record.root, io->first_vbn + i, io->entries[i]);
        if (!old.ok()) {
          s = old.status();
        } else if (old->pbn != 0) {
          s = map_->ReleaseData(old->pbn, SpaceMap::FreeKind::kReuse);
        }
      }
      if (s.ok()) s = HydrationWritten(volume, io->first_vbn, io->entries.size());
      ++record.lsn;
      if (s.ok()) {
        // Unaligned trims and write-zeroes wrote zeros into their edge
        // blocks; their record needs no data.
        const VolumeRequest& user = *io->user;
        const bool data = user.op == VolumeOp::kWrite;
        s = AppendLog(volume, user.op, user.offset_bytes, user.length_bytes,
                      data ? &io->entries : nullptr);
      }
      MarkRootDirty(volume.slot_);
      if (!s.ok()) s = Fail(s);
    } else {
      // The blocks never made it into the map: give them back.
      for (const MapEntry& e : io->entries) {
        if (e.pbn == 0) continue;
        Status r = map_->ReleaseData(e.pbn, SpaceMap::FreeKind::kReuse);
        if (!r.ok()) {
          s = Fail(r);
          break;
        }
      }
    }
    io->status = s;
  }
  metadata_reserved_ -= io->metadata_reserved;
  io->metadata_reserved = 0;
  io->waited_for_space = false;
  volume.busy_ranges_.erase(io->first_vbn);
  CompleteIo(io, io->status);
  volume.StartDeferred();
}

void Pool::Advance(PendingIo* io) {
  switch (io->stage) {
    case PendingIo::Stage::kReadBlocks: {
      const VolumeRequest& user = *io->user;
      Status s = io->status;
      if (s.ok()) s = VerifyRead(io, io->first_vbn, io->block_count(), io->blocks);
      if (s.ok() && io->blocks != user.data) {
        std::memcpy(user.data, io->blocks + user.offset_bytes % block_bytes_, user.length_bytes);
      }
      CompleteIo(io, s);
      return;
    }
    case PendingIo::Stage::kReadEdges: {
      const VolumeRequest& user = *io->user;
      Status s = io->status;
      if (s.ok()) s = VerifyRead(io, io->first_vbn, 1, io->blocks);
      if (s.ok() && io->block_count() > 1) {
        s = VerifyRead(io, io->end_vbn - 1, 1, io->blocks + (io->block_count() - 1) * block_bytes_);
      }
      if (!s.ok()) {
        io->status = s;
        io->stage = PendingIo::Stage::kDone;
        FinishMutation(io);
        return;
      }
      std::byte* at = io->blocks + user.offset_bytes % block_bytes_;
      if (user.op == VolumeOp::kWrite) {
        std::memcpy(at, user.data, user.length_bytes);
      } else {
        std::memset(at, 0, user.length_bytes);
      }
      StartBlockWrites(io);
      return;
    }
    case PendingIo::Stage::kWriteBlocks:
      FinishMutation(io);
      return;
    case PendingIo::Stage::kDone:
      SNAPDISK_CHECK(false, "advancing a finished request");
  }
}

void Pool::RetrySpaceWaiters() {
  if (space_waiters_.empty()) return;
  // Blocks freed in the open transaction become reusable two commits later
  // (see SpaceMap::CommitDone): commit twice if that is what it takes.
  CommitInBackground();
  if (failure_.ok() && space_->cooling_blocks() > 0) {
    Status s = CommitLocked(/*force=*/true);
    if (!s.ok()) unreported_failure_ = Fail(s);
  }
  std::vector<PendingIo*> waiting;
  waiting.swap(space_waiters_);
  for (PendingIo* io : waiting) {
    if (!failure_.ok()) {
      io->status = CheckHealthy();  // nothing was allocated: entries are empty
      FinishMutation(io);
    } else {
      StartBlockWrites(io);
    }
  }
}

uint64_t Pool::MetadataNeed(const TreeRoot& root, uint64_t blocks) const {
  // Every node on the path of every leaf the blocks touch may be shadowed.
  return (blocks / map_->fanout() + 2) * root.height;
}

Status Pool::CheckRoom(uint64_t blocks, bool freeing) const {
  // What the next commit itself allocates: rewritten catalog blocks and the
  // catalog tree nodes above them (plus a fixed margin, except for
  // operations that free space).
  uint64_t commit_need = (dirty_record_blocks_.size() + 1) * (catalog_root_.height + 1) +
                         (freeing ? 0 : kCommitReserveBlocks);
  // Log records waiting for their record blocks (64 bytes each).
  for (const auto& [slot, pending] : log_pending_) {
    if (pending.empty()) continue;
    commit_need += (pending.size() * 64 / block_bytes_ + 2) * (records_[slot].root.height + 1);
  }
  commit_need += HydrationCommitNeed();  // done bits waiting for their bitmap blocks
  const uint64_t free = space_->free_blocks();
  if (free >= blocks + metadata_reserved_ + commit_need) return Status::OK();
  return Status::NoSpace("pool is full: " + std::to_string(free) + " free blocks of " +
                         std::to_string(block_bytes_) + " bytes, " + std::to_string(blocks) +
                         " needed, " + std::to_string(metadata_reserved_ + commit_need) +
                         " held for metadata" +
                         (space_->freed_not_reusable_blocks() > 0
                              ? ", " + std::to_string(space_->freed_not_reusable_blocks()) +
                                    " freed blocks wait for a commit"
                              : std::string()));
}

void Pool::ProcessFinished() {
  while (!finished_.empty()) {
    std::vector<PendingIo*> batch;
    batch.swap(finished_);
    for (PendingIo* io : batch) Advance(io);
  }
}

void Pool::DrainDevice() {
  while (device_in_flight_ > 0 || !device_backlog_.empty() || !finished_.empty()) {
    PumpBacklog();
    if (device_in_flight_ > 0) device_.Poll(1);
    ProcessFinished();
  }
}

uint32_t Pool::Poll(uint32_t min_completions) {
  SNAPDISK_CHECK(!polling_, "Pool::Poll called from inside a completion callback");
  uint32_t delivered = 0;
  while (true) {
    // Dirty metadata is pinned in the cache until a commit: commit early when
    // it passes half the budget, so memory stays bounded whatever is written.
    // So do log records waiting for their record blocks (64 bytes each; a
    // quarter of the budget: committing more often costs writes dearly).
    if ((cache_->dirty_bytes() > options_.cache_bytes / 2 ||
         log_pending_records_ * 64 > options_.cache_bytes / 4 ||
         hydration_dirty_blocks_ * block_bytes_ > options_.cache_bytes / 4) &&
        failure_.ok()) {
      CommitInBackground();
    }
    RetrySpaceWaiters();
    const int64_t next_timer = RunTimers();
    PumpBacklog();
    device_.Poll(0);
    ProcessFinished();
    ProcessFetchResults();
    if (!completed_.empty()) {
      polling_ = true;
      delivering_.swap(completed_);
      for (PendingIo* io : delivering_) {
        VolumeRequest& user = *io->user;
        Volume& volume = *io->volume;
        const Status status = io->status;
        volume.stats_.Record(StatsOp(user.op), user.op == VolumeOp::kFlush ? 0 : user.length_bytes,
                             static_cast<uint64_t>(SystemClock::Get().NowNs() - io->submit_ns),
                             status.ok());
        --volume.in_flight_;
        --requests_in_flight_;
        free_ios_.push_back(io);
        user.on_complete(user, status);
        ++delivered;
      }
      delivering_.clear();
      polling_ = false;
    }
    if (delivered >= min_completions || requests_in_flight_ == 0) break;
    if (!completed_.empty() || !finished_.empty() || !device_backlog_.empty()) continue;
    if (device_in_flight_ > 0) {
      device_.Poll(1);
    } else if (fetcher_->in_flight() > 0) {
      fetcher_->WaitDone();  // reads parked on a source fetch
    } else if (next_timer != INT64_MAX) {
      clock().SleepUntilNs(next_timer);  // only QoS timers are left
    } else {
      break;  // nothing can make progress (cannot happen while requests are consistent)
    }
  }
  // Slices of background work: a log past its limit, a snapshot deletion
  // (DeleteSnapshot kInBackground).
  if (!logs_over_limit_.empty() && failure_.ok()) {
    if (Status s = DropLogsOverLimit(kLogDropBlocksPerPoll); !s.ok()) {
      logs_over_limit_.clear();  // the next commit drops what is over the limit
      if (!failure_.ok()) unreported_failure_ = s;
    }
  }
  if (map_->deferred_releases() > 0 && failure_.ok()) {
    if (Status s = map_->ReleaseSome(kReleaseRefsPerPoll); !s.ok()) unreported_failure_ = Fail(s);
  }
  cache_->Trim();
  return delivered;
}

}  // namespace snapdisk
