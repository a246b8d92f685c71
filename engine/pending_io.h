// PendingIo: the pool's internal state for one volume request on its way
// through the device (engine-internal; not part of the public API).
#pragma once

#include <cstdint>
#include <vector>

#include "disk/status.h"
#include "engine/aligned_buffer.h"
#include "engine/format.h"
#include "engine/volume.h"

namespace snapdisk {

struct PendingIo {
  enum class Stage : uint8_t {
    kReadBlocks,   // read: device reads of mapped blocks in flight
    kReadEdges,    // sub-block write: reading the partial first/last block
    kWriteBlocks,  // write: device writes of fresh blocks in flight
    kDone,
  };

  Volume* volume = nullptr;
  VolumeRequest* user = nullptr;
  Stage stage = Stage::kDone;
  uint64_t first_vbn = 0;
  uint64_t end_vbn = 0;         // one past the last block touched
  std::byte* blocks = nullptr;  // block-aligned data: the user's buffer or `bounce`
  AlignedBuffer bounce;         // for requests not aligned to blocks
  // Per block of [first_vbn, end_vbn): what the map said (reads) or the new
  // block (writes).
  std::vector<format::MapEntry> entries;
  uint32_t device_pending = 0;
  uint64_t metadata_reserved = 0;  // blocks held for the map update (see Pool::CheckRoom)
  bool waited_for_space = false;   // already waited once for a commit to free space
  Status status;
  int64_t submit_ns = 0;
  // QoS: the earliest time the completion may be reported (0: at once).
  int64_t complete_after_ns = 0;

  uint64_t block_count() const { return end_vbn - first_vbn; }
};

}  // namespace snapdisk
