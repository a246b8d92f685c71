// FileDevice: a BlockDevice over a (sparse) file, driven by io_uring.
//
// Create() makes a new sparse file of the given size (ftruncate: nothing is
// allocated until written, so a 1 TiB device costs nothing); Open() opens an
// existing file and takes the device size from it. Never-written and discarded
// ranges read as zeros.
//
// Requests: Submit() only fills a submission queue entry; Poll() hands every
// queued entry to the kernel in one io_uring_enter call (waiting for
// completions in the same call when it has to block) and reaps completions in
// batches of options.completion_batch, so that requests a callback submits go
// out with the next round's single io_uring_enter rather than after every
// finished request has been processed. Per-request bookkeeping lives in a slot array sized to the queue
// depth at open, so the I/O path allocates nothing. A callback may Submit new
// requests; they go to the kernel at the next Poll (or the next round of the
// current Poll if that one still has to wait).
//
// Short transfers: when the kernel reads or writes less than asked, the rest
// is requeued (offset and buffer advanced) and the callback runs only once the
// whole request is done. -EAGAIN and -EINTR are retried. A read that hits the
// end of the file (the file was truncated behind the device's back) fails with
// IOError "unexpected end of file". ENOSPC/EDQUOT are NoSpace, every other
// errno is IOError; every message names the path, the op and the offset.
//
// Flush is fdatasync (IORING_OP_FSYNC with IORING_FSYNC_DATASYNC): the file's
// size never changes, so data plus the metadata needed to read it back is what
// durability needs. Discard punches a hole (fallocate PUNCH_HOLE|KEEP_SIZE):
// the range reads as zeros and its blocks are freed.
//
// O_DIRECT (options.direct_io): the page cache is bypassed, and the caller's
// read and write buffers must be aligned to kDirectIoAlignmentBytes (4096);
// Submit returns InvalidArgument for a misaligned buffer. With 512-byte
// sectors the file system must also accept 512-byte direct I/O (it does on
// ext4/xfs over a 512-byte-logical-block disk); otherwise requests fail with
// IOError (EINVAL) naming the offset. Open fails with Unsupported when the
// file system refuses O_DIRECT altogether (tmpfs, for example).
//
// Fallback: when io_uring cannot be set up at run time (old kernel, seccomp,
// io_uring_disabled sysctl), the device runs every request with
// pread/pwrite/fdatasync/fallocate inside Submit and delivers the completion
// at the next Poll; it prints one line per process to stderr saying so.
// options.force_sync_io selects this path on purpose (silently).
//
// Destruction: destroying a device with requests in flight waits for the
// kernel to finish them (their buffers are in use until then) and drops their
// callbacks without running them.
//
// Thread safety: as BlockDevice (one driving thread at a time; stats() from
// any thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "disk/block_device.h"

namespace snapdisk {

struct FileDeviceOptions {
  // 512 or 4096. Offsets and lengths of requests must be multiples of it.
  uint32_t sector_size_bytes = 4096;
  // Requests in flight at once (Submit beyond it is Busy); at least 32.
  uint32_t queue_depth = 128;
  // Open with O_DIRECT; buffers must then be aligned to 4096 bytes.
  bool direct_io = false;
  // Skip io_uring and use the pread/pwrite fallback (for tests).
  bool force_sync_io = false;
  // Completions Poll reaps (callbacks it runs) per round before handing the
  // requests queued meanwhile to the kernel; Poll(n) still runs at least n
  // callbacks, in as many rounds as it takes. Small batches get requests
  // resubmitted from callbacks to the device sooner: when a whole queue's
  // worth of requests completes at once (a virtio disk often does that),
  // running every callback before submitting leaves the device idle
  // meanwhile; at QD 32 on a 4 KiB random workload (virtio, O_DIRECT), 4
  // measured about 15-20% more IOPS than an unlimited batch. 0 = no limit.
  uint32_t completion_batch = 4;
  // Test knob: when non-zero, every read or write handed to the kernel (one
  // SQE, or one pread/pwrite on the fallback path) covers at most this many
  // bytes, so a larger request completes short and goes through the same
  // requeue path a kernel short transfer takes. A multiple of the sector size
  // (of 4096 with direct_io).
  uint64_t max_bytes_per_sqe_for_testing = 0;
};

class FileDevice final : public BlockDevice {
 public:
  static constexpr uint64_t kDirectIoAlignmentBytes = 4096;
  static constexpr uint32_t kMinQueueDepth = 32;

  // Creates a new file at `path` (it must not exist: AlreadyExists) of
  // `size_bytes` (> 0, a multiple of the sector size), sparse. Errors name the
  // path; on failure no file is left behind.
  static Result<std::unique_ptr<FileDevice>> Create(const std::string& path, uint64_t size_bytes,
                                                    const FileDeviceOptions& options = {});
  // Opens the existing regular file at `path` (NotFound if missing); its size,
  // which must be a positive multiple of the sector size, is the device size.
  static Result<std::unique_ptr<FileDevice>> Open(const std::string& path,
                                                  const FileDeviceOptions& options = {});

  ~FileDevice() override;

  uint64_t size_bytes() const override { return size_bytes_; }
  uint32_t sector_size_bytes() const override { return options_.sector_size_bytes; }
  uint32_t queue_depth() const override { return options_.queue_depth; }
  uint32_t in_flight() const override { return in_flight_; }
  std::string name() const override { return path_; }
  // Also InvalidArgument for a misaligned buffer with direct_io.
  Status Submit(IoRequest& request) override;
  uint32_t Poll(uint32_t min_completions) override;
  IoStats& stats() override { return stats_; }
  // pread on the file (thread-safe; not counted in stats()).
  bool SupportsConcurrentReads() const override { return true; }
  Status ReadConcurrent(uint64_t offset_bytes, std::span<std::byte> out) override;

  const std::string& path() const { return path_; }
  bool direct_io() const { return options_.direct_io; }

  // For event loops (the NBD server): a nonblocking eventfd that becomes
  // readable whenever Poll(0) has work to do — the kernel posted a completion
  // (registered with io_uring_register_eventfd), a request was queued by
  // Submit outside Poll and not yet handed to the kernel, or a Poll left
  // completions unreaped or queued requests unsubmitted. Use: wait for it
  // (epoll), read it to reset it, then call Poll(0) — the device writes it at
  // most once between two Polls, so reading it without polling can lose the
  // wakeup for requests queued since. Poll reads it back when the device
  // itself wrote it, so a loop that polls right after submitting is not
  // woken again for nothing. Made on the first call (readable at once); the
  // device owns and closes it. -1 when no eventfd can be made (then poll on
  // a timer). Costs nothing until called.
  int completion_event_fd();
  // False on the pread/pwrite fallback path.
  bool uses_io_uring() const { return ring_ != nullptr; }

 private:
  struct Ring;  // io_uring state; defined in the .cc so liburing stays private
  struct Slot {
    IoRequest* request = nullptr;  // null when free
    int64_t submit_ns = 0;
    uint64_t done_bytes = 0;  // transferred so far (short I/O progress)
    Status status;            // fallback path: the outcome, delivered by Poll
  };

  FileDevice(std::string path, int fd, uint64_t size_bytes, const FileDeviceOptions& options);
  // InvalidArgument for a misaligned buffer with direct_io.
  Status CheckBuffer(const IoRequest& request) const;
  static Result<std::unique_ptr<FileDevice>> Finish(std::string path, int fd,
                                                    uint64_t size_bytes,
                                                    const FileDeviceOptions& options);
  // Sets up ring_; on failure returns why (and ring_ stays null).
  Status InitRing();

  // io_uring path.
  void QueueSqe(uint32_t slot_index);  // (re)queues the remainder of the slot's request
  uint32_t PollRing(uint32_t target);
  // Handles one CQE; returns 1 when the request finished (callback ran).
  uint32_t HandleCompletion(uint32_t slot_index, int32_t result, int64_t now_ns);
  void DrainRing();  // destructor: wait out everything the kernel holds

  // Fallback path: runs the slot's request to completion with plain syscalls.
  Status ExecuteSync(Slot& slot);
  uint32_t PollSync(uint32_t target);

  // Records stats, frees the slot and runs the callback.
  void Complete(uint32_t slot_index, const Status& status, int64_t now_ns);
  // "<path>: <op> at offset <at> (request offset X length Y)".
  std::string Describe(const IoRequest& request, uint64_t at_offset_bytes) const;
  Status ErrorAt(const IoRequest& request, uint64_t at_offset_bytes, int errno_value) const;
  // A read or write that transferred 0 bytes: end of file, or a stuck write.
  Status NoProgressAt(const IoRequest& request, uint64_t at_offset_bytes) const;

  const std::string path_;
  const int fd_;
  const uint64_t size_bytes_;
  const FileDeviceOptions options_;
  std::unique_ptr<Ring> ring_;  // null: fallback path
  std::vector<Slot> slots_;     // queue_depth entries, allocated at open
  std::vector<uint32_t> free_slots_;
  std::vector<uint32_t> ready_;    // fallback: finished slots awaiting Poll
  std::vector<uint32_t> running_;  // fallback: swapped with ready_ while callbacks run
  uint32_t in_flight_ = 0;
  bool polling_ = false;  // callbacks must not call Poll
  // completion_event_fd(): -1 until asked for; `event_signalled_` avoids
  // writing it again before the next Poll.
  int event_fd_ = -1;
  bool event_signalled_ = false;
  void SignalWork();
  IoStats stats_;
};

}  // namespace snapdisk
