#include "disk/file_device.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "disk/clock.h"

namespace snapdisk {
namespace {

// One SQE never asks for more than this (the kernel caps a transfer at about
// 2 GiB anyway; the rest of a larger request is requeued as a short transfer).
constexpr uint64_t kMaxBytesPerSqe = uint64_t{1} << 30;

std::string Num(uint64_t value) { return std::to_string(value); }

// Prints the fallback notice once per process.
void WarnFallbackOnce(const Status& reason) {
  static std::atomic<bool> warned{false};
  if (warned.exchange(true)) return;
  std::fprintf(stderr, "snapdisk: io_uring unavailable (%s), using pread/pwrite\n",
               reason.message().c_str());
  std::fflush(stderr);
}

Status ValidateOptions(const std::string& path, const FileDeviceOptions& options) {
  const uint32_t sector = options.sector_size_bytes;
  if (sector != 512 && sector != 4096) {
    return Status::InvalidArgument(path + ": sector size must be 512 or 4096, not " +
                                   Num(sector));
  }
  if (options.queue_depth < FileDevice::kMinQueueDepth || options.queue_depth > 32768) {
    return Status::InvalidArgument(path + ": queue depth must be in [" +
                                   Num(FileDevice::kMinQueueDepth) + ", 32768], not " +
                                   Num(options.queue_depth));
  }
  const uint64_t cap = options.max_bytes_per_sqe_for_testing;
  const uint64_t cap_unit = options.direct_io ? FileDevice::kDirectIoAlignmentBytes : sector;
  if (cap != 0 && !IsAligned(cap, cap_unit)) {
    return Status::InvalidArgument(path + ": max_bytes_per_sqe_for_testing " + Num(cap) +
                                   " is not a multiple of " + Num(cap_unit));
  }
  return Status::OK();
}

// Retries a syscall returning -1/errno while it fails with EINTR or EAGAIN.
template <typename F>
auto RetryEintr(F call) {
  for (;;) {
    auto rc = call();
    if (rc >= 0 || (errno != EINTR && errno != EAGAIN)) return rc;
  }
}

}  // namespace

struct FileDevice::Ring {
  io_uring ring{};
  bool initialized = false;
  bool fixed_file = false;  // the fd is registered as fixed file 0
  std::vector<io_uring_cqe*> cqes;  // peek buffer, cq_entries long
  struct Reaped {
    uint64_t user_data;
    int32_t result;
  };
  std::vector<Reaped> reaped;  // CQEs copied out so the CQ is advanced before callbacks run

  ~Ring() {
    if (initialized) io_uring_queue_exit(&ring);
  }
};

// ---- Opening ----------------------------------------------------------------

Result<std::unique_ptr<FileDevice>> FileDevice::Create(const std::string& path,
                                                       uint64_t size_bytes,
                                                       const FileDeviceOptions& options) {
  SNAPDISK_RETURN_IF_ERROR(ValidateOptions(path, options));
  if (size_bytes == 0 || !IsAligned(size_bytes, options.sector_size_bytes)) {
    return Status::InvalidArgument(path + ": size " + Num(size_bytes) +
                                   " is not a positive multiple of the " +
                                   Num(options.sector_size_bytes) + "-byte sector");
  }
  if (size_bytes > static_cast<uint64_t>(INT64_MAX)) {
    return Status::InvalidArgument(path + ": size " + Num(size_bytes) + " is too large");
  }
  // Created without O_DIRECT (tmpfs would create the file and then refuse the
  // flag); Open() below reopens it with the requested flags.
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) return Status::AlreadyExists(path + ": cannot create device: file exists");
    if (err == ENOENT) {
      return Status::NotFound(path + ": cannot create device: directory does not exist");
    }
    return Status::FromErrno(err, path + ": cannot create device");
  }
  if (RetryEintr([&] { return ftruncate(fd, static_cast<off_t>(size_bytes)); }) != 0) {
    const int err = errno;
    close(fd);
    unlink(path.c_str());
    return Status::FromErrno(err, path + ": cannot set size to " + Num(size_bytes));
  }
  close(fd);
  auto device = Open(path, options);
  if (!device.ok()) unlink(path.c_str());
  return device;
}

Result<std::unique_ptr<FileDevice>> FileDevice::Open(const std::string& path,
                                                     const FileDeviceOptions& options) {
  SNAPDISK_RETURN_IF_ERROR(ValidateOptions(path, options));
  int flags = O_RDWR | O_CLOEXEC | (options.direct_io ? O_DIRECT : 0);
  int fd = open(path.c_str(), flags);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": cannot open device: no such file");
    if (err == EINVAL && options.direct_io) {
      return Status::Unsupported(path + ": cannot open device: the file system refuses O_DIRECT");
    }
    return Status::FromErrno(err, path + ": cannot open device");
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return Status::FromErrno(err, path + ": cannot stat device file");
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return Status::InvalidArgument(path + ": not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0 || !IsAligned(size, options.sector_size_bytes)) {
    close(fd);
    return Status::InvalidArgument(path + ": file size " + Num(size) +
                                   " is not a positive multiple of the " +
                                   Num(options.sector_size_bytes) + "-byte sector");
  }
  return Finish(path, fd, size, options);
}

Result<std::unique_ptr<FileDevice>> FileDevice::Finish(std::string path, int fd,
                                                       uint64_t size_bytes,
                                                       const FileDeviceOptions& options) {
  auto device =
      std::unique_ptr<FileDevice>(new FileDevice(std::move(path), fd, size_bytes, options));
  if (!options.force_sync_io) {
    Status ring = device->InitRing();
    if (!ring.ok()) WarnFallbackOnce(ring);
  }
  return device;
}

FileDevice::FileDevice(std::string path, int fd, uint64_t size_bytes,
                       const FileDeviceOptions& options)
    : path_(std::move(path)), fd_(fd), size_bytes_(size_bytes), options_(options) {
  slots_.resize(options_.queue_depth);
  free_slots_.reserve(options_.queue_depth);
  for (uint32_t i = options_.queue_depth; i > 0; --i) free_slots_.push_back(i - 1);
  ready_.reserve(options_.queue_depth);
  running_.reserve(options_.queue_depth);
}

Status FileDevice::InitRing() {
  auto ring = std::make_unique<Ring>();
  io_uring_params params{};
  // SUBMIT_ALL: one bad SQE does not stop the rest of the batch (5.18+).
  params.flags = IORING_SETUP_SUBMIT_ALL;
  int rc = io_uring_queue_init_params(options_.queue_depth, &ring->ring, &params);
  if (rc == -EINVAL) {  // an older kernel without SUBMIT_ALL
    params = io_uring_params{};
    rc = io_uring_queue_init_params(options_.queue_depth, &ring->ring, &params);
  }
  if (rc < 0) return Status::FromErrno(-rc, "io_uring_queue_init");
  ring->initialized = true;

  io_uring_probe* probe = io_uring_get_probe_ring(&ring->ring);
  if (probe == nullptr) return Status::Unsupported("io_uring probe failed");
  const std::pair<int, const char*> needed[] = {{IORING_OP_READ, "IORING_OP_READ"},
                                                {IORING_OP_WRITE, "IORING_OP_WRITE"},
                                                {IORING_OP_FSYNC, "IORING_OP_FSYNC"},
                                                {IORING_OP_FALLOCATE, "IORING_OP_FALLOCATE"}};
  for (const auto& [op, op_name] : needed) {
    if (!io_uring_opcode_supported(probe, op)) {
      io_uring_free_probe(probe);
      return Status::Unsupported(std::string("kernel lacks ") + op_name);
    }
  }
  io_uring_free_probe(probe);

  // A registered file saves the kernel an fd lookup and refcount per request.
  ring->fixed_file = io_uring_register_files(&ring->ring, &fd_, 1) == 0;
  ring->cqes.resize(params.cq_entries);
  ring->reaped.resize(params.cq_entries);
  ring_ = std::move(ring);
  return Status::OK();
}

FileDevice::~FileDevice() {
  if (ring_ != nullptr) DrainRing();
  ring_.reset();
  if (event_fd_ >= 0) close(event_fd_);
  close(fd_);
}

int FileDevice::completion_event_fd() {
  if (event_fd_ >= 0) return event_fd_;
  const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) return -1;
  if (ring_ != nullptr && io_uring_register_eventfd(&ring_->ring, efd) != 0) {
    close(efd);
    return -1;
  }
  event_fd_ = efd;
  SignalWork();  // whatever is already queued or finished needs a Poll
  return event_fd_;
}

void FileDevice::SignalWork() {
  if (event_fd_ < 0 || event_signalled_) return;
  event_signalled_ = true;
  (void)eventfd_write(event_fd_, 1);
}

void FileDevice::DrainRing() {
  io_uring* ring = &ring_->ring;
  while (in_flight_ > 0) {
    int rc = io_uring_submit_and_wait(ring, 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) break;  // the kernel cleans up
    unsigned n = io_uring_peek_batch_cqe(ring, ring_->cqes.data(),
                                         static_cast<unsigned>(ring_->cqes.size()));
    for (unsigned i = 0; i < n; ++i) {
      Slot& slot = slots_[io_uring_cqe_get_data64(ring_->cqes[i])];
      slot.request = nullptr;  // callbacks of a dying device are dropped
      --in_flight_;
    }
    io_uring_cq_advance(ring, n);
  }
}

// ---- Submission -------------------------------------------------------------

Status FileDevice::CheckBuffer(const IoRequest& request) const {
  if (options_.direct_io && (request.op == IoOp::kRead || request.op == IoOp::kWrite) &&
      !IsAligned(reinterpret_cast<uintptr_t>(request.data), kDirectIoAlignmentBytes)) {
    return Status::InvalidArgument(path_ + ": " + IoOpName(request.op) + " at offset " +
                                   Num(request.offset_bytes) + " length " +
                                   Num(request.length_bytes) + ": buffer is not aligned to " +
                                   Num(kDirectIoAlignmentBytes) + " bytes (O_DIRECT)");
  }
  return Status::OK();
}

Status FileDevice::ReadConcurrent(uint64_t offset_bytes, std::span<std::byte> out) {
  IoRequest request{.op = IoOp::kRead,
                    .offset_bytes = offset_bytes,
                    .length_bytes = out.size(),
                    .data = out.data()};
  SNAPDISK_RETURN_IF_ERROR(ValidateExtent(request));
  SNAPDISK_RETURN_IF_ERROR(CheckBuffer(request));
  // The fallback path's pread loop: it touches only fd_ and the options.
  Slot slot;
  slot.request = &request;
  return ExecuteSync(slot);
}

Status FileDevice::Submit(IoRequest& request) {
  SNAPDISK_RETURN_IF_ERROR(ValidateRequest(request));
  SNAPDISK_RETURN_IF_ERROR(CheckBuffer(request));
  if (in_flight_ >= options_.queue_depth) {
    return Status::Busy(path_ + ": queue full (" + Num(options_.queue_depth) + " requests)");
  }
  const uint32_t index = free_slots_.back();
  free_slots_.pop_back();
  Slot& slot = slots_[index];
  slot.request = &request;
  slot.submit_ns = SystemClock::Get().NowNs();
  slot.done_bytes = 0;
  ++in_flight_;
  if (ring_ != nullptr) {
    QueueSqe(index);
  } else {
    slot.status = ExecuteSync(slot);
    ready_.push_back(index);
  }
  if (!polling_) SignalWork();  // queued outside Poll: the next Poll must hand it over
  return Status::OK();
}

void FileDevice::QueueSqe(uint32_t slot_index) {
  io_uring* ring = &ring_->ring;
  // Every busy slot owns at most one SQE and the SQ has >= queue_depth entries,
  // so there is always room.
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  SNAPDISK_CHECK(sqe != nullptr, "io_uring submission queue unexpectedly full");
  const Slot& slot = slots_[slot_index];
  const IoRequest& request = *slot.request;
  const int fd = ring_->fixed_file ? 0 : fd_;
  const uint64_t offset = request.offset_bytes + slot.done_bytes;
  uint64_t length = request.length_bytes - slot.done_bytes;
  switch (request.op) {
    case IoOp::kRead:
    case IoOp::kWrite: {
      length = std::min(length, kMaxBytesPerSqe);
      if (options_.max_bytes_per_sqe_for_testing != 0) {
        length = std::min(length, options_.max_bytes_per_sqe_for_testing);
      }
      std::byte* buffer = request.data + slot.done_bytes;
      if (request.op == IoOp::kRead) {
        io_uring_prep_read(sqe, fd, buffer, static_cast<unsigned>(length), offset);
      } else {
        io_uring_prep_write(sqe, fd, buffer, static_cast<unsigned>(length), offset);
      }
      break;
    }
    case IoOp::kFlush:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      break;
    case IoOp::kDiscard:
      io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              static_cast<off_t>(offset), static_cast<off_t>(length));
      break;
  }
  if (ring_->fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, slot_index);
}

// ---- Completion -------------------------------------------------------------

uint32_t FileDevice::Poll(uint32_t min_completions) {
  SNAPDISK_CHECK(!polling_, "Poll called from inside a completion callback");
  polling_ = true;
  if (event_signalled_) {
    // This Poll does the work the signal announced: take the signal back so
    // the caller's loop does not wake up again just to read it. (A completion
    // the kernel posts after this read signals anew.)
    eventfd_t value;
    (void)eventfd_read(event_fd_, &value);
    event_signalled_ = false;
  }
  const uint32_t target = std::min(min_completions, in_flight_);
  const uint32_t ran = ring_ != nullptr ? PollRing(target) : PollSync(target);
  polling_ = false;
  if (event_fd_ >= 0) {
    // Completions left in the CQ (completion_batch) or requests that callbacks
    // queued in the last round would otherwise wait for an unrelated wakeup.
    const bool left = ring_ != nullptr ? (io_uring_cq_ready(&ring_->ring) > 0 ||
                                          io_uring_sq_ready(&ring_->ring) > 0)
                                       : !ready_.empty();
    if (left) SignalWork();
  }
  return ran;
}

uint32_t FileDevice::PollRing(uint32_t target) {
  io_uring* ring = &ring_->ring;
  if (in_flight_ == 0) return 0;  // nothing queued, nothing in the kernel
  uint32_t ran = 0;
  for (;;) {
    const bool queued = io_uring_sq_ready(ring) > 0;
    const bool have_cqes = io_uring_cq_ready(ring) > 0;
    // Block only when nothing is waiting to be reaped; then wait for as many
    // CQEs as callbacks are still owed (every request in flight, queued ones
    // included once this call submits them, yields one CQE, so this never
    // waits for more than will come).
    const uint32_t wait_nr = (!have_cqes && ran < target) ? std::min(target - ran, in_flight_) : 0;
    int rc = 0;
    if (wait_nr > 0) {
      rc = io_uring_submit_and_wait(ring, wait_nr);  // one syscall: submit + wait
    } else if (queued) {
      rc = io_uring_submit_and_get_events(ring);
    } else if (!have_cqes) {
      rc = io_uring_get_events(ring);  // lets the kernel post finished work
    }
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME) {
      std::string message = path_ + ": io_uring_enter failed: " + std::strerror(-rc);
      SNAPDISK_CHECK(false, message.c_str());
    }

    // Reap one batch; what it leaves in the CQ is taken by the next round or
    // the next Poll, after the callbacks' new requests went to the kernel.
    unsigned batch = static_cast<unsigned>(ring_->cqes.size());
    if (options_.completion_batch != 0) {
      batch = std::min(batch, std::max(options_.completion_batch, target - ran));
    }
    const unsigned n = io_uring_peek_batch_cqe(ring, ring_->cqes.data(), batch);
    for (unsigned i = 0; i < n; ++i) {
      ring_->reaped[i] = {io_uring_cqe_get_data64(ring_->cqes[i]), ring_->cqes[i]->res};
    }
    io_uring_cq_advance(ring, n);
    if (n > 0) {
      const int64_t now_ns = SystemClock::Get().NowNs();
      for (unsigned i = 0; i < n; ++i) {
        ran += HandleCompletion(static_cast<uint32_t>(ring_->reaped[i].user_data),
                                ring_->reaped[i].result, now_ns);
      }
    }
    if (ran >= target) return ran;
  }
}

uint32_t FileDevice::HandleCompletion(uint32_t slot_index, int32_t result, int64_t now_ns) {
  Slot& slot = slots_[slot_index];
  SNAPDISK_CHECK(slot.request != nullptr, "completion for a free slot");
  const IoRequest& request = *slot.request;
  const uint64_t at = request.offset_bytes + slot.done_bytes;
  if (result == -EAGAIN || result == -EINTR) {
    QueueSqe(slot_index);
    return 0;
  }
  if (result < 0) {
    Complete(slot_index, ErrorAt(request, at, -result), now_ns);
    return 1;
  }
  if (request.op == IoOp::kRead || request.op == IoOp::kWrite) {
    const uint64_t remaining = request.length_bytes - slot.done_bytes;
    SNAPDISK_CHECK(static_cast<uint64_t>(result) <= remaining, "kernel transferred too much");
    if (result == 0) {
      Complete(slot_index, NoProgressAt(request, at), now_ns);
      return 1;
    }
    slot.done_bytes += static_cast<uint64_t>(result);
    if (slot.done_bytes < request.length_bytes) {
      QueueSqe(slot_index);  // short transfer: the rest goes back to the kernel
      return 0;
    }
  }
  Complete(slot_index, Status::OK(), now_ns);
  return 1;
}

void FileDevice::Complete(uint32_t slot_index, const Status& status, int64_t now_ns) {
  Slot& slot = slots_[slot_index];
  IoRequest& request = *slot.request;
  stats_.Record(request.op, request.op == IoOp::kFlush ? 0 : request.length_bytes,
                static_cast<uint64_t>(std::max<int64_t>(0, now_ns - slot.submit_ns)),
                status.ok());
  slot.request = nullptr;
  free_slots_.push_back(slot_index);
  --in_flight_;
  // Last: the callback may resubmit or destroy the request.
  request.on_complete(request, status);
}

std::string FileDevice::Describe(const IoRequest& request, uint64_t at_offset_bytes) const {
  std::string context = path_ + ": " + IoOpName(request.op);
  if (request.op != IoOp::kFlush) {
    context += " at offset " + Num(at_offset_bytes) + " (request offset " +
               Num(request.offset_bytes) + " length " + Num(request.length_bytes) + ")";
  }
  return context;
}

Status FileDevice::ErrorAt(const IoRequest& request, uint64_t at_offset_bytes,
                           int errno_value) const {
  return Status::FromErrno(errno_value, Describe(request, at_offset_bytes));
}

Status FileDevice::NoProgressAt(const IoRequest& request, uint64_t at_offset_bytes) const {
  if (request.op == IoOp::kRead) {
    return Status::IOError(Describe(request, at_offset_bytes) +
                           ": unexpected end of file (was the file truncated?)");
  }
  return Status::IOError(Describe(request, at_offset_bytes) + ": the kernel wrote nothing");
}

// ---- Fallback path ------------------------------------------------------------

Status FileDevice::ExecuteSync(Slot& slot) {
  const IoRequest& request = *slot.request;
  switch (request.op) {
    case IoOp::kRead:
    case IoOp::kWrite:
      while (slot.done_bytes < request.length_bytes) {
        const uint64_t at = request.offset_bytes + slot.done_bytes;
        uint64_t length = std::min(request.length_bytes - slot.done_bytes, kMaxBytesPerSqe);
        if (options_.max_bytes_per_sqe_for_testing != 0) {
          length = std::min(length, options_.max_bytes_per_sqe_for_testing);
        }
        std::byte* buffer = request.data + slot.done_bytes;
        ssize_t n = RetryEintr([&] {
          return request.op == IoOp::kRead ? pread(fd_, buffer, length, static_cast<off_t>(at))
                                           : pwrite(fd_, buffer, length, static_cast<off_t>(at));
        });
        if (n < 0) return ErrorAt(request, at, errno);
        if (n == 0) return NoProgressAt(request, at);
        slot.done_bytes += static_cast<uint64_t>(n);
      }
      return Status::OK();
    case IoOp::kFlush:
      if (RetryEintr([&] { return fdatasync(fd_); }) != 0) return ErrorAt(request, 0, errno);
      return Status::OK();
    case IoOp::kDiscard:
      if (RetryEintr([&] {
            return fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             static_cast<off_t>(request.offset_bytes),
                             static_cast<off_t>(request.length_bytes));
          }) != 0) {
        return ErrorAt(request, request.offset_bytes, errno);
      }
      return Status::OK();
  }
  return Status::InvalidArgument(path_ + ": unknown operation");
}

uint32_t FileDevice::PollSync(uint32_t /*target*/) {
  // Every request completed inside Submit, so one pass over the finished ones
  // satisfies any minimum. Requests submitted by callbacks wait for the next Poll.
  running_.swap(ready_);
  uint32_t ran = 0;
  const int64_t now_ns = SystemClock::Get().NowNs();
  for (uint32_t index : running_) {
    Status status = std::move(slots_[index].status);
    slots_[index].status = Status::OK();
    Complete(index, status, now_ns);
    ++ran;
  }
  running_.clear();
  return ran;
}

}  // namespace snapdisk
