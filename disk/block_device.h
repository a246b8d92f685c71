// BlockDevice: the interface every layer above the disk uses.
//
// A device is a fixed-size array of bytes addressed by byte offset. Requests
// are asynchronous: Submit() queues one, Poll() pushes queued requests to the
// device and runs the completion callbacks of finished ones. A caller keeps as
// many requests in flight as queue_depth() allows (at least 32 on every device
// here). Synchronous helpers (Read, Write, Flush, Discard) submit one request
// and poll until it completes.
//
// Alignment: offset and length of read, write and discard must be multiples of
// sector_size_bytes() (512 or 4096, chosen when the device is opened), length
// must be > 0, and [offset, offset + length) must lie inside the device.
// Anything else is rejected by Submit with InvalidArgument, synchronously, and
// the callback is never called.
//
// Durability: a write is durable once a flush *submitted after the write
// completed* has completed. After a discard the range reads as zeros.
//
// Thread safety: a device is driven by one thread at a time (callers serialize
// Submit and Poll, as with an io_uring). stats() may be read from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "disk/io_stats.h"
#include "disk/status.h"

namespace snapdisk {

struct IoRequest;
// Called exactly once per accepted request, from inside Poll() on the thread
// that polls, with the request's outcome. The request may be resubmitted (or
// destroyed) from inside the callback; the callback must not call Poll() or a
// synchronous helper of the same device.
using IoCallback = std::function<void(IoRequest& request, const Status& status)>;

// One asynchronous request. The caller owns the request and its buffer; both
// must stay valid and untouched from Submit until the callback has run.
// Reusing a request object for the next I/O allocates nothing.
struct IoRequest {
  IoOp op = IoOp::kRead;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;  // 0 for flush
  // kRead: filled with the data. kWrite: the data to write. Unused otherwise.
  std::byte* data = nullptr;
  IoCallback on_complete = {};
  // Free for the caller's bookkeeping; devices never touch it.
  uint64_t user_tag = 0;
};

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  BlockDevice() = default;
  BlockDevice(const BlockDevice&) = delete;
  BlockDevice& operator=(const BlockDevice&) = delete;

  virtual uint64_t size_bytes() const = 0;
  virtual uint32_t sector_size_bytes() const = 0;
  // Requests that may be queued or in flight at once; Submit beyond it is Busy.
  virtual uint32_t queue_depth() const = 0;
  // Requests accepted by Submit whose callback has not run yet.
  virtual uint32_t in_flight() const = 0;
  // For messages: the file path, or a description of the device.
  virtual std::string name() const = 0;

  // Queues `request`. OK means the callback will run from a later Poll().
  // InvalidArgument (bad alignment or range), Busy (queue full) and IOError
  // (the device is dead) are returned synchronously with no callback.
  virtual Status Submit(IoRequest& request) = 0;

  // Sends queued requests to the device and runs callbacks of finished ones.
  // Blocks until at least min(min_completions, in_flight()) callbacks have run;
  // Poll(0) never blocks. Returns the number of callbacks run.
  virtual uint32_t Poll(uint32_t min_completions) = 0;

  // Figures of the requests this device has completed.
  virtual IoStats& stats() = 0;

  // Synchronous helpers: one request, polled to completion. Other requests'
  // callbacks may run meanwhile.
  Status Read(uint64_t offset_bytes, std::span<std::byte> out);
  Status Write(uint64_t offset_bytes, std::span<const std::byte> data);
  Status Flush();
  Status Discard(uint64_t offset_bytes, uint64_t length_bytes);

  // Submits `request` and polls until its callback ran; returns its status.
  // `request.on_complete` is replaced.
  Status SubmitAndWait(IoRequest& request);

  // Reads beside the driving thread: a synchronous read that any thread may
  // call at any time, concurrently with Submit and Poll on the driving
  // thread, for a range that no request in flight writes or discards (the
  // caller guarantees it, e.g. blocks a snapshot holds). It neither waits
  // for nor counts in the device's queue. Same alignment rules as Submit.
  // Devices that cannot (the default) return Unsupported: read through
  // Submit. Cost: one copy (memory) or pread (file) per call.
  virtual bool SupportsConcurrentReads() const { return false; }
  virtual Status ReadConcurrent(uint64_t offset_bytes, std::span<std::byte> out);

 protected:
  // The alignment and range checks described above, with a message naming
  // the device, op, offset and length. For implementations' Submit().
  Status ValidateRequest(const IoRequest& request) const;
  // The same without the callback check (ReadConcurrent has none).
  Status ValidateExtent(const IoRequest& request) const;
};

// True when `value` is a multiple of `alignment` (a power of two).
inline bool IsAligned(uint64_t value, uint64_t alignment) { return (value & (alignment - 1)) == 0; }

}  // namespace snapdisk
