#include "disk/memory_device.h"

#include <algorithm>
#include <cstring>

#include "disk/clock.h"

namespace snapdisk {

Result<std::unique_ptr<MemoryDevice>> MemoryDevice::Create(uint64_t size_bytes,
                                                           uint32_t sector_size_bytes,
                                                           uint32_t queue_depth) {
  if (sector_size_bytes != 512 && sector_size_bytes != 4096) {
    return Status::InvalidArgument("memory device: sector size must be 512 or 4096, not " +
                                   std::to_string(sector_size_bytes));
  }
  if (size_bytes == 0 || !IsAligned(size_bytes, sector_size_bytes)) {
    return Status::InvalidArgument("memory device: size " + std::to_string(size_bytes) +
                                   " is not a positive multiple of the sector size");
  }
  if (queue_depth == 0) return Status::InvalidArgument("memory device: queue depth is zero");
  return std::unique_ptr<MemoryDevice>(
      new MemoryDevice(size_bytes, sector_size_bytes, queue_depth));
}

MemoryDevice::MemoryDevice(uint64_t size_bytes, uint32_t sector_size_bytes, uint32_t queue_depth)
    : size_bytes_(size_bytes), sector_size_bytes_(sector_size_bytes), queue_depth_(queue_depth) {
  completions_.reserve(queue_depth_);
  running_.reserve(queue_depth_);
}

void MemoryDevice::ReadBytes(uint64_t offset, uint64_t length, std::byte* out) const {
  while (length > 0) {
    uint64_t page = offset / kPageBytes;
    uint64_t in_page = offset % kPageBytes;
    uint64_t n = std::min(length, kPageBytes - in_page);
    auto it = pages_.find(page);
    if (it == pages_.end()) {
      std::memset(out, 0, n);
    } else {
      std::memcpy(out, it->second.get() + in_page, n);
    }
    out += n;
    offset += n;
    length -= n;
  }
}

void MemoryDevice::WriteBytes(uint64_t offset, uint64_t length, const std::byte* in) {
  while (length > 0) {
    uint64_t page = offset / kPageBytes;
    uint64_t in_page = offset % kPageBytes;
    uint64_t n = std::min(length, kPageBytes - in_page);
    auto& slot = pages_[page];
    if (!slot) {
      slot = std::make_unique<std::byte[]>(kPageBytes);  // value-initialized: zeros
    }
    std::memcpy(slot.get() + in_page, in, n);
    in += n;
    offset += n;
    length -= n;
  }
}

void MemoryDevice::ZeroBytes(uint64_t offset, uint64_t length) {
  while (length > 0) {
    uint64_t page = offset / kPageBytes;
    uint64_t in_page = offset % kPageBytes;
    uint64_t n = std::min(length, kPageBytes - in_page);
    auto it = pages_.find(page);
    if (it != pages_.end()) {
      if (n == kPageBytes) {
        pages_.erase(it);  // a whole page: give the memory back, like a punched hole
      } else {
        std::memset(it->second.get() + in_page, 0, n);
      }
    }
    offset += n;
    length -= n;
  }
}

Status MemoryDevice::Submit(IoRequest& request) {
  SNAPDISK_RETURN_IF_ERROR(ValidateRequest(request));
  if (in_flight_ >= queue_depth_) {
    return Status::Busy(name() + ": queue full (" + std::to_string(queue_depth_) + " requests)");
  }
  switch (request.op) {
    case IoOp::kRead:
      ReadBytes(request.offset_bytes, request.length_bytes, request.data);
      break;
    case IoOp::kWrite:
      WriteBytes(request.offset_bytes, request.length_bytes, request.data);
      break;
    case IoOp::kDiscard:
      ZeroBytes(request.offset_bytes, request.length_bytes);
      break;
    case IoOp::kFlush:
      break;
  }
  completions_.push_back({&request, SystemClock::Get().NowNs()});
  ++in_flight_;
  return Status::OK();
}

uint32_t MemoryDevice::Poll(uint32_t /*min_completions*/) {
  // Every queued request is already complete, so one pass satisfies any minimum.
  SNAPDISK_CHECK(!polling_, "Poll called from inside a completion callback");
  polling_ = true;
  running_.swap(completions_);
  uint32_t ran = 0;
  const int64_t now = SystemClock::Get().NowNs();
  for (const Completion& c : running_) {
    IoRequest& request = *c.request;
    stats_.Record(request.op, request.op == IoOp::kFlush ? 0 : request.length_bytes,
                  static_cast<uint64_t>(now - c.submit_ns), true);
    --in_flight_;
    request.on_complete(request, Status::OK());
    ++ran;
  }
  running_.clear();
  polling_ = false;
  return ran;
}

std::unique_ptr<MemoryDevice> MemoryDevice::Clone() const {
  auto copy = std::unique_ptr<MemoryDevice>(
      new MemoryDevice(size_bytes_, sector_size_bytes_, queue_depth_));
  for (const auto& [index, page] : pages_) {
    auto p = std::make_unique<std::byte[]>(kPageBytes);
    std::memcpy(p.get(), page.get(), kPageBytes);
    copy->pages_.emplace(index, std::move(p));
  }
  return copy;
}

}  // namespace snapdisk
