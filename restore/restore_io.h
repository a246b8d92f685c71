// The I/O engines of a restore (internal to restore/): ChunkFetcher reads and
// verifies chunks ahead on worker threads; VolumeWriter keeps many writes in
// flight on a volume from a fixed set of aligned staging buffers.
//
// Memory is fixed by the options: the fetcher holds at most `ahead` decoded
// chunks; the writer `buffers` x `buffer_bytes` and `max_requests` requests.
//
// Thread safety: a ChunkFetcher's Next() and a VolumeWriter belong to the
// pool's thread; the fetcher's workers touch only the store (WormStore is
// thread-safe). The store, pool and volume must outlive them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "disk/status.h"
#include "engine/aligned_buffer.h"
#include "engine/pool.h"
#include "engine/volume.h"
#include "engine/worm_store.h"
#include "snapshot/backup_set.h"

namespace snapdisk {

// Fetches `chunks` in order with ReadChunk (each verified against its content
// hash), `threads` at a time, at most `ahead` past the one Next() is to give.
class ChunkFetcher {
 public:
  ChunkFetcher(WormStore& store, std::vector<ChunkInfo> chunks, std::string context,
               uint32_t threads, uint32_t ahead);
  // Stops the workers (a read in progress finishes) and joins them.
  ~ChunkFetcher();
  ChunkFetcher(const ChunkFetcher&) = delete;
  ChunkFetcher& operator=(const ChunkFetcher&) = delete;

  // The next chunk's bytes, in list order (waits for it); ReadChunk's error
  // for a chunk that is damaged or cannot be read. At most chunks.size() calls.
  Result<std::vector<std::byte>> Next();

 private:
  void Work();

  WormStore& store_;
  const std::vector<ChunkInfo> chunks_;
  const std::string context_;
  const size_t ahead_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t next_fetch_ = 0;  // guarded by mu_
  size_t next_take_ = 0;   // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::map<size_t, Result<std::vector<std::byte>>> ready_;  // guarded by mu_
  std::vector<std::thread> workers_;
};

// Writes, trims and write-zeroes onto a volume, asynchronously, in submission
// order (the volume applies overlapping requests in that order). Data is
// copied into 4 KiB-aligned staging buffers (so O_DIRECT devices take it),
// packed; a request waits only when no buffer or request slot is free. After
// the first failed request nothing more is submitted and every call returns
// that error.
class VolumeWriter {
 public:
  struct Options {
    uint32_t buffers = 8;                     // >= 2
    uint64_t buffer_bytes = uint64_t{1} << 20;  // >= 4096, a multiple of 4096
    uint32_t max_requests = 64;               // >= 1
  };
  VolumeWriter(Pool& pool, Volume& volume, const Options& options);
  // Waits for the requests in flight (their buffers are ours).
  ~VolumeWriter();
  VolumeWriter(const VolumeWriter&) = delete;
  VolumeWriter& operator=(const VolumeWriter&) = delete;

  Status Write(uint64_t offset_bytes, std::span<const std::byte> data);
  // op: VolumeOp::kTrim or VolumeOp::kWriteZeroes.
  Status Zero(VolumeOp op, uint64_t offset_bytes, uint64_t length_bytes);
  // Waits until every request has completed; the first error, if any.
  Status Drain();

  uint64_t written_bytes() const { return written_bytes_; }  // completed writes
  uint64_t zeroed_bytes() const { return zeroed_bytes_; }    // completed trims and zeroes

 private:
  struct Buffer {
    AlignedBuffer bytes;
    uint64_t used = 0;
    uint32_t pending = 0;  // requests reading from it
  };
  struct Slot {
    VolumeRequest request;
    Buffer* buffer = nullptr;
  };

  Result<Slot*> TakeSlot();
  // Room for `bytes` (<= buffer_bytes) in a staging buffer.
  Result<std::pair<Buffer*, std::byte*>> Reserve(uint64_t bytes);
  Status Submit(Slot* slot);
  void OnComplete(Slot* slot, const Status& status);
  void Release(Slot* slot);
  Status WaitForOne();

  Pool& pool_;
  Volume& volume_;
  const Options options_;
  std::vector<Buffer> buffers_;
  size_t current_ = 0;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_slots_;
  uint32_t in_flight_ = 0;
  Status error_;
  uint64_t written_bytes_ = 0;
  uint64_t zeroed_bytes_ = 0;
};

}  // namespace snapdisk
