// Restore I/O (restore/restore_io.h): chunks read ahead on workers, writes
// kept in flight from staging buffers.
#include "restore/restore_io.h"

#include <algorithm>
#include <cstring>

namespace snapdisk {

// ---- ChunkFetcher -------------------------------------------------------------

ChunkFetcher::ChunkFetcher(WormStore& store, std::vector<ChunkInfo> chunks, std::string context,
                           uint32_t threads, uint32_t ahead)
    : store_(store),
      chunks_(std::move(chunks)),
      context_(std::move(context)),
      ahead_(std::max<uint32_t>(ahead, 1)) {
  const size_t n = std::min<size_t>(std::max<uint32_t>(threads, 1), chunks_.size());
  workers_.reserve(n);
  for (size_t i = 0; i < n; ++i) workers_.emplace_back([this] { Work(); });
}

ChunkFetcher::~ChunkFetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ChunkFetcher::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] {
      return stopping_ || next_fetch_ >= chunks_.size() || next_fetch_ < next_take_ + ahead_;
    });
    if (stopping_ || next_fetch_ >= chunks_.size()) return;
    const size_t i = next_fetch_++;
    lock.unlock();
    Result<std::vector<std::byte>> bytes = ReadChunk(store_, chunks_[i], context_);
    lock.lock();
    ready_.emplace(i, std::move(bytes));
    cv_.notify_all();
  }
}

Result<std::vector<std::byte>> ChunkFetcher::Next() {
  std::unique_lock<std::mutex> lock(mu_);
  SNAPDISK_CHECK(next_take_ < chunks_.size(), "ChunkFetcher::Next past the last chunk");
  cv_.wait(lock, [this] { return ready_.count(next_take_) > 0; });
  auto node = ready_.extract(next_take_);
  ++next_take_;
  lock.unlock();
  cv_.notify_all();
  return std::move(node.mapped());
}

// ---- VolumeWriter -------------------------------------------------------------

VolumeWriter::VolumeWriter(Pool& pool, Volume& volume, const Options& options)
    : pool_(pool), volume_(volume), options_(options) {
  SNAPDISK_CHECK(options.buffers >= 2 && options.max_requests >= 1, "bad VolumeWriter options");
  SNAPDISK_CHECK(options.buffer_bytes >= AlignedBuffer::kAlignment &&
                     options.buffer_bytes % AlignedBuffer::kAlignment == 0,
                 "bad VolumeWriter buffer size");
  buffers_.resize(options.buffers);
  for (Buffer& b : buffers_) b.bytes = AlignedBuffer(options.buffer_bytes);
  slots_.reserve(options.max_requests);
  for (uint32_t i = 0; i < options.max_requests; ++i) {
    slots_.push_back(std::make_unique<Slot>());
    free_slots_.push_back(slots_.back().get());
  }
}

VolumeWriter::~VolumeWriter() { (void)Drain(); }

Status VolumeWriter::WaitForOne() {
  SNAPDISK_CHECK(in_flight_ > 0 && pool_.in_flight() > 0, "VolumeWriter waits for nothing");
  pool_.Poll(1);
  return Status::OK();
}

Result<VolumeWriter::Slot*> VolumeWriter::TakeSlot() {
  while (free_slots_.empty()) SNAPDISK_RETURN_IF_ERROR(WaitForOne());
  Slot* slot = free_slots_.back();
  free_slots_.pop_back();
  slot->buffer = nullptr;
  return slot;
}

Result<std::pair<VolumeWriter::Buffer*, std::byte*>> VolumeWriter::Reserve(uint64_t bytes) {
  SNAPDISK_CHECK(bytes <= options_.buffer_bytes, "staging request larger than a buffer");
  Buffer* b = &buffers_[current_];
  if (b->used + bytes > options_.buffer_bytes) {
    // The next buffer in turn, once the requests reading it are done: buffers
    // are reused in the order they were filled.
    current_ = (current_ + 1) % buffers_.size();
    b = &buffers_[current_];
    while (b->pending > 0) SNAPDISK_RETURN_IF_ERROR(WaitForOne());
    b->used = 0;
  }
  std::byte* at = b->bytes.data() + b->used;
  // Each piece starts 4 KiB-aligned (O_DIRECT devices need aligned memory).
  b->used += (bytes + AlignedBuffer::kAlignment - 1) / AlignedBuffer::kAlignment *
             AlignedBuffer::kAlignment;
  return std::make_pair(b, at);
}

void VolumeWriter::Release(Slot* slot) {
  if (slot->buffer != nullptr) --slot->buffer->pending;
  slot->buffer = nullptr;
  free_slots_.push_back(slot);
}

void VolumeWriter::OnComplete(Slot* slot, const Status& status) {
  --in_flight_;
  if (!status.ok()) {
    if (error_.ok()) error_ = status;
  } else if (slot->request.op == VolumeOp::kWrite) {
    written_bytes_ += slot->request.length_bytes;
  } else {
    zeroed_bytes_ += slot->request.length_bytes;
  }
  Release(slot);
}

Status VolumeWriter::Submit(Slot* slot) {
  slot->request.on_complete = [this, slot](VolumeRequest&, const Status& status) {
    OnComplete(slot, status);
  };
  while (true) {
    Status s = volume_.Submit(slot->request);
    if (s.ok()) {
      ++in_flight_;
      return Status::OK();
    }
    if (s.IsBusy() && pool_.in_flight() > 0) {
      // The pool's request limit: let some finish (ours or anyone's).
      pool_.Poll(1);
      continue;
    }
    Release(slot);
    if (error_.ok()) error_ = s;
    return s;
  }
}

Status VolumeWriter::Write(uint64_t offset_bytes, std::span<const std::byte> data) {
  uint64_t done = 0;
  while (done < data.size()) {
    SNAPDISK_RETURN_IF_ERROR(error_);
    const uint64_t n = std::min<uint64_t>(data.size() - done, options_.buffer_bytes);
    SNAPDISK_ASSIGN_OR_RETURN(Slot * slot, TakeSlot());
    auto room = Reserve(n);
    if (!room.ok()) {
      Release(slot);
      return room.status();
    }
    auto [buffer, at] = *room;
    std::memcpy(at, data.data() + done, n);
    slot->buffer = buffer;
    ++buffer->pending;
    slot->request.op = VolumeOp::kWrite;
    slot->request.offset_bytes = offset_bytes + done;
    slot->request.length_bytes = n;
    slot->request.data = at;
    SNAPDISK_RETURN_IF_ERROR(Submit(slot));
    done += n;
  }
  return error_;
}

Status VolumeWriter::Zero(VolumeOp op, uint64_t offset_bytes, uint64_t length_bytes) {
  SNAPDISK_CHECK(op == VolumeOp::kTrim || op == VolumeOp::kWriteZeroes, "Zero takes trim or zeroes");
  SNAPDISK_RETURN_IF_ERROR(error_);
  if (length_bytes == 0) return Status::OK();
  SNAPDISK_ASSIGN_OR_RETURN(Slot * slot, TakeSlot());
  slot->request.op = op;
  slot->request.offset_bytes = offset_bytes;
  slot->request.length_bytes = length_bytes;
  slot->request.data = nullptr;
  return Submit(slot);
}

Status VolumeWriter::Drain() {
  while (in_flight_ > 0) pool_.Poll(1);
  return error_;
}

}  // namespace snapdisk
