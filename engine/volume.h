// Volume: I/O on one volume of a Pool — read, write, trim, write-zeroes and
// flush at any byte offset and length, asynchronously (many requests in
// flight) or through synchronous wrappers.
//
// Semantics:
//  - Reads verify every block's checksum; a mismatch fails the request with
//    Corruption naming the volume and byte offset, and never returns the data.
//  - Writes go to fresh blocks (redirect on write); a write smaller than a
//    block is a read-modify-write of that block. Overlapping writes, trims and
//    write-zeroes to one volume are applied in submission order.
//  - A read concurrent with a write to the same range sees all-old or all-new
//    per block.
//  - Trim and write-zeroes make the range read as zeros and give whole blocks
//    back to the pool (punched out of the file once no snapshot holds them).
//  - Flush commits the pool: every request completed before it is durable.
//  - A hydrating volume (Pool, "Hydration") reads blocks not yet hydrated
//    from its source, and MapExtents counts them as data.
//
// A volume handle is owned by its Pool; see Pool::OpenVolume. Thread safety:
// as the Pool (one thread at a time).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "disk/io_stats.h"
#include "disk/qos_limiter.h"
#include "disk/status.h"

namespace snapdisk {

class Pool;
struct PendingIo;

// A byte range of a volume.
struct Extent {
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  bool zero = false;  // the range is a hole (trimmed) in the newer image
};

enum class VolumeOp : uint8_t { kRead, kWrite, kTrim, kWriteZeroes, kFlush };
const char* VolumeOpName(VolumeOp op);

struct VolumeRequest;
// Runs once per accepted request, from Pool::Poll on the polling thread. It
// may submit new requests; it must not call Pool::Poll or a synchronous
// helper.
using VolumeCallback = std::function<void(VolumeRequest& request, const Status& status)>;

// The caller owns the request and its buffer until the callback has run.
struct VolumeRequest {
  VolumeOp op = VolumeOp::kRead;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;  // > 0, except for flush
  std::byte* data = nullptr;  // read: filled; write: source
  VolumeCallback on_complete = {};
  uint64_t user_tag = 0;  // for the caller; never touched
};

class Volume {
 public:
  ~Volume();
  Volume(const Volume&) = delete;
  Volume& operator=(const Volume&) = delete;

  const std::string& name() const;
  // True for a snapshot's handle (Pool::OpenSnapshot).
  bool read_only() const;
  uint64_t size_bytes() const;
  uint64_t id() const { return id_; }
  // Requests accepted and not yet completed.
  uint32_t in_flight() const { return in_flight_; }
  // Marks the volume in use by a client (e.g. an NBD connection): rollback
  // and delete are refused with Busy while any user holds it.
  void SetInUse(bool in_use) { in_use_count_ += in_use ? 1 : -1; }
  bool in_use() const { return in_use_count_ > 0; }
  // Lets this handle's writes, trims and write-zeroes through the volume's
  // write fence (Pool::kWriteFenceAttribute) while any holder keeps it set
  // (a count, like SetInUse). For the fence's owner only (a restore writing
  // the backup's data); not persisted.
  void SetWriteFenceExempt(bool exempt) { fence_exempt_count_ += exempt ? 1 : -1; }

  // Queues a request. InvalidArgument (range beyond the volume, zero length,
  // missing buffer or callback), PermissionDenied (a write, trim or
  // write-zeroes held back by the volume's write fence: Pool::
  // kWriteFenceAttribute), Busy (the pool's request limit) and the pool's
  // failure are returned synchronously, with no callback.
  Status Submit(VolumeRequest& request);

  // Synchronous wrappers: submit and poll the pool until done.
  Status Read(uint64_t offset_bytes, std::span<std::byte> out);
  Status Write(uint64_t offset_bytes, std::span<const std::byte> data);
  Status Trim(uint64_t offset_bytes, uint64_t length_bytes);
  Status WriteZeroes(uint64_t offset_bytes, uint64_t length_bytes);
  Status Flush();

  // The allocation map of [offset, offset + length): extents in order that
  // cover the range exactly, each either data (zero = false) or a hole that
  // reads as zeros (zero = true), at block granularity and clipped to the
  // range. Cost: O(mapped blocks in the range). For sparse copies (NBD
  // BLOCK_STATUS, export). Reflects completed writes.
  Result<std::vector<Extent>> MapExtents(uint64_t offset_bytes, uint64_t length_bytes);

  // Figures of the requests completed on this volume.
  IoStats& stats() { return stats_; }
  // The QoS limiter of the volume's ESSD profile; null when unlimited.
  QosLimiter* qos() { return qos_.get(); }
  // Admits this handle's requests through `other`'s QoS limiter (null: back
  // to its own). A physical backup reads a snapshot this way, competing with
  // the volume's workload for the volume's IOPS and throughput. `other` must
  // stay open while set (a volume outlives its snapshots).
  void ChargeQosTo(Volume* other) { charge_qos_to_ = other; }

 private:
  friend class Pool;
  friend struct PendingIo;
  Volume(Pool& pool, uint64_t id, size_t slot) : pool_(pool), id_(id), slot_(slot) {}

  Status SubmitAndWait(VolumeRequest& request);
  // PermissionDenied when a write fence holds `request` (a mutation) back.
  Status CheckWriteFence(const VolumeRequest& request);
  // Starts an admitted request.
  void Dispatch(PendingIo* io);
  // (Re)builds the QoS limiter from the volume's profile and size.
  void ConfigureQos();
  // Starts `io` unless it overlaps a write in progress; then it waits its turn.
  void Start(PendingIo* io);
  void StartDeferred();
  bool Overlaps(uint64_t first_vbn, uint64_t end_vbn) const;

  Pool& pool_;
  const uint64_t id_;
  const size_t slot_;  // the volume's catalog record
  uint32_t in_flight_ = 0;
  int in_use_count_ = 0;
  int fence_exempt_count_ = 0;
  std::string fence_key_;  // the fence attribute's catalog key (made at the first mutation)
  // [first, end) block ranges with a mutation in progress; never overlapping.
  std::map<uint64_t, uint64_t> busy_ranges_;
  std::deque<PendingIo*> deferred_;  // mutations waiting for busy blocks
  IoStats stats_;
  std::unique_ptr<QosLimiter> qos_;  // null for the unlimited profile
  Volume* charge_qos_to_ = nullptr;
};

}  // namespace snapdisk
