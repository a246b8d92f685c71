// MemoryDevice: a sparse in-memory BlockDevice for fast tests.
//
// Storage is allocated a page (4 KiB) at a time on first write, so a 1 TiB
// device costs little until written (a table of 8 bytes per 2 MiB of device
// up front: 4 MiB for 1 TiB); never-written and discarded ranges read as
// zeros. A discarded page goes to a free list (up to kSparePagesMax, 64 MiB)
// that later writes take pages from before allocating: a commit punches what
// it freed, and delete[] plus a fresh page's fault and zeroing cost the
// pool's thread ~31% of a commit's time. Requests execute at Submit; their
// callbacks run at the next Poll.
// A disk writes a never-written sector as fast as any other; memory does not:
// a fresh page costs an allocation and a page fault (the kernel zeroes it),
// which made a commit's node writes 3-4x slower than a disk's. KeepPagesReady
// removes that artifact for the comparator: a background thread keeps zeroed,
// already-faulted pages ready for the driving thread to take.
// Flush is a no-op (memory is "durable" for as long as the object lives): use
// FaultDevice on top to model power loss.
//
// Thread safety: as BlockDevice (one driving thread at a time); ReadConcurrent
// from any thread, without a lock: pages are found through a two-level table
// of atomic pointers that only the driving thread changes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "disk/block_device.h"

namespace snapdisk {

class MemoryDevice final : public BlockDevice {
 public:
  static constexpr uint64_t kPageBytes = 4096;

  // `sector_size_bytes` must be 512 or 4096; `size_bytes` a multiple of it.
  static Result<std::unique_ptr<MemoryDevice>> Create(uint64_t size_bytes,
                                                      uint32_t sector_size_bytes = 4096,
                                                      uint32_t queue_depth = 256);

  uint64_t size_bytes() const override { return size_bytes_; }
  uint32_t sector_size_bytes() const override { return sector_size_bytes_; }
  uint32_t queue_depth() const override { return queue_depth_; }
  uint32_t in_flight() const override { return in_flight_; }
  std::string name() const override { return "memory device"; }
  Status Submit(IoRequest& request) override;
  uint32_t Poll(uint32_t min_completions) override;
  IoStats& stats() override { return stats_; }
  bool SupportsConcurrentReads() const override { return true; }
  Status ReadConcurrent(uint64_t offset_bytes, std::span<std::byte> out) override;

  // Starts a thread that keeps up to `pages` zeroed pages faulted in and
  // ready for first writes (0: stops it; the default). Memory: up to `pages`
  // pages beyond what the device holds. Call from the driving thread; the
  // supplier runs at the lowest priority, beside the caller's CPU when the
  // caller is pinned (disk/thread_placement.h). When it falls behind, writes
  // allocate their pages themselves, as without it.
  void KeepPagesReady(size_t pages);

  ~MemoryDevice() override;
  // Bytes of pages currently holding data (what a sparse file would occupy).
  uint64_t allocated_bytes() const { return allocated_pages_ * kPageBytes; }
  // An independent copy of the contents (same size, sector size, queue depth).
  std::unique_ptr<MemoryDevice> Clone() const;

 private:
  MemoryDevice(uint64_t size_bytes, uint32_t sector_size_bytes, uint32_t queue_depth);
  void ReadBytes(uint64_t offset, uint64_t length, std::byte* out) const;
  void WriteBytes(uint64_t offset, uint64_t length, const std::byte* in);
  void ZeroBytes(uint64_t offset, uint64_t length);

  struct Completion {
    IoRequest* request;
    int64_t submit_ns;
  };

  const uint64_t size_bytes_;
  const uint32_t sector_size_bytes_;
  const uint32_t queue_depth_;
  // Page index -> page: leaves_[index / kLeafPages]->pages[index % kLeafPages]
  // (null: zeros). Only the driving thread stores (release); readers load
  // (acquire). A page is freed or reused only when its whole range is
  // discarded, which a concurrent reader's range never is (ReadConcurrent's
  // contract).
  static constexpr uint64_t kLeafPages = 512;
  struct Leaf {
    std::atomic<std::byte*> pages[kLeafPages] = {};
  };
  std::byte* PageAt(uint64_t index) const;
  std::vector<std::atomic<Leaf*>> leaves_;
  uint64_t allocated_pages_ = 0;
  // Discarded pages kept for reuse (contents undefined until reused).
  static constexpr size_t kSparePagesMax = 16384;
  std::vector<std::unique_ptr<std::byte[]>> spare_pages_;
  // A zeroed page for a first write: a spare one, a ready one, or a new one.
  std::byte* TakeFreshPage(bool zero_needed);
  // KeepPagesReady's thread fills ready_ (zeroed, faulted pages); the
  // driving thread takes them in batches (one lock per kReadyBatch pages).
  static constexpr size_t kReadyBatch = 64;
  void FillReadyPages();
  std::mutex ready_mu_;
  std::condition_variable ready_cv_;
  std::vector<std::byte*> ready_;  // guarded by ready_mu_
  size_t ready_target_ = 0;        // guarded by ready_mu_
  bool ready_stop_ = false;        // guarded by ready_mu_
  std::vector<std::byte*> taken_;  // the driving thread's batch
  std::thread ready_thread_;
  std::vector<Completion> completions_;  // capacity queue_depth_, reserved at creation
  std::vector<Completion> running_;      // swapped with completions_ while callbacks run
  uint32_t in_flight_ = 0;
  bool polling_ = false;  // callbacks must not call Poll
  IoStats stats_;
};

}  // namespace snapdisk
