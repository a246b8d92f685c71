#include "disk/memory_device.h"

#include <algorithm>
#include <cstring>

#include "disk/clock.h"
#include "disk/thread_placement.h"

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
    : size_bytes_(size_bytes),
      sector_size_bytes_(sector_size_bytes),
      queue_depth_(queue_depth),
      leaves_((size_bytes + kPageBytes * kLeafPages - 1) / (kPageBytes * kLeafPages)) {
  completions_.reserve(queue_depth_);
  running_.reserve(queue_depth_);
}

MemoryDevice::~MemoryDevice() {
  KeepPagesReady(0);
  for (std::byte* page : taken_) delete[] page;
  for (std::atomic<Leaf*>& slot : leaves_) {
    Leaf* leaf = slot.load();
    if (leaf == nullptr) continue;
    for (std::atomic<std::byte*>& page : leaf->pages) delete[] page.load();
    delete leaf;
  }
}

std::byte* MemoryDevice::PageAt(uint64_t index) const {
  const Leaf* leaf = leaves_[index / kLeafPages].load(std::memory_order_acquire);
  return leaf == nullptr ? nullptr
                         : leaf->pages[index % kLeafPages].load(std::memory_order_acquire);
}

void MemoryDevice::ReadBytes(uint64_t offset, uint64_t length, std::byte* out) const {
  while (length > 0) {
    const uint64_t in_page = offset % kPageBytes;
    const uint64_t n = std::min(length, kPageBytes - in_page);
    const std::byte* page = PageAt(offset / kPageBytes);
    if (page == nullptr) {
      std::memset(out, 0, n);
    } else {
      std::memcpy(out, page + in_page, n);
    }
    out += n;
    offset += n;
    length -= n;
  }
}

void MemoryDevice::WriteBytes(uint64_t offset, uint64_t length, const std::byte* in) {
  while (length > 0) {
    const uint64_t index = offset / kPageBytes;
    const uint64_t in_page = offset % kPageBytes;
    const uint64_t n = std::min(length, kPageBytes - in_page);
    std::byte* page = PageAt(index);
    if (page == nullptr) {
      std::atomic<Leaf*>& slot = leaves_[index / kLeafPages];
      Leaf* leaf = slot.load(std::memory_order_relaxed);
      if (leaf == nullptr) {
        leaf = new Leaf;
        slot.store(leaf, std::memory_order_release);
      }
      page = TakeFreshPage(/*zero_needed=*/n < kPageBytes);
      leaf->pages[index % kLeafPages].store(page, std::memory_order_release);
      ++allocated_pages_;
    }
    std::memcpy(page + in_page, in, n);
    in += n;
    offset += n;
    length -= n;
  }
}

std::byte* MemoryDevice::TakeFreshPage(bool zero_needed) {
  if (!spare_pages_.empty()) {
    std::byte* page = spare_pages_.back().release();
    spare_pages_.pop_back();
    // What the write does not cover reads as zeros.
    if (zero_needed) std::memset(page, 0, kPageBytes);
    return page;
  }
  if (taken_.empty() && ready_thread_.joinable()) {
    std::lock_guard<std::mutex> lock(ready_mu_);
    const size_t n = std::min(kReadyBatch, ready_.size());
    taken_.assign(ready_.end() - n, ready_.end());
    ready_.resize(ready_.size() - n);
    ready_cv_.notify_one();
  }
  if (!taken_.empty()) {
    std::byte* page = taken_.back();
    taken_.pop_back();
    return page;
  }
  return new std::byte[kPageBytes]();  // zeros
}

void MemoryDevice::KeepPagesReady(size_t pages) {
  if (ready_thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(ready_mu_);
      ready_stop_ = true;
    }
    ready_cv_.notify_one();
    ready_thread_.join();
    for (std::byte* page : ready_) delete[] page;
    ready_.clear();
    ready_stop_ = false;
  }
  ready_target_ = pages;
  if (pages > 0) {
    ready_thread_ = std::thread([this, cpus = CpusBesideThisThread()] {
      MoveThisThreadTo(cpus);
      LowerThisThreadToLowest();
      FillReadyPages();
    });
  }
}

void MemoryDevice::FillReadyPages() {
  std::unique_lock<std::mutex> lock(ready_mu_);
  while (!ready_stop_) {
    if (ready_.size() >= ready_target_) {
      ready_cv_.wait(lock);
      continue;
    }
    const size_t n = std::min(kReadyBatch, ready_target_ - ready_.size());
    lock.unlock();
    std::vector<std::byte*> fresh(n);
    for (std::byte*& page : fresh) page = new std::byte[kPageBytes]();  // zeroed: faulted in
    lock.lock();
    ready_.insert(ready_.end(), fresh.begin(), fresh.end());
  }
}

void MemoryDevice::ZeroBytes(uint64_t offset, uint64_t length) {
  while (length > 0) {
    const uint64_t index = offset / kPageBytes;
    const uint64_t in_page = offset % kPageBytes;
    const uint64_t n = std::min(length, kPageBytes - in_page);
    if (std::byte* page = PageAt(index); page != nullptr) {
      if (n == kPageBytes) {
        // A whole page: unmapped, like a punched hole (its memory kept for reuse).
        leaves_[index / kLeafPages].load()->pages[index % kLeafPages].store(nullptr);
        if (spare_pages_.size() < kSparePagesMax) {
          spare_pages_.emplace_back(page);
        } else {
          delete[] page;
        }
        --allocated_pages_;
      } else {
        std::memset(page + in_page, 0, n);
      }
    }
    offset += n;
    length -= n;
  }
}

Status MemoryDevice::ReadConcurrent(uint64_t offset_bytes, std::span<std::byte> out) {
  const IoRequest check{.op = IoOp::kRead,
                        .offset_bytes = offset_bytes,
                        .length_bytes = out.size(),
                        .data = out.data()};
  SNAPDISK_RETURN_IF_ERROR(ValidateExtent(check));
  ReadBytes(offset_bytes, out.size(), out.data());
  return Status::OK();
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
  for (uint64_t index = 0; index < leaves_.size() * kLeafPages; ++index) {
    if (leaves_[index / kLeafPages].load() == nullptr) {
      index += kLeafPages - 1;
      continue;
    }
    if (const std::byte* page = PageAt(index); page != nullptr) {
      copy->WriteBytes(index * kPageBytes, kPageBytes, page);
    }
  }
  return copy;
}

}  // namespace snapdisk
