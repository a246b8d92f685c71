// Hydration: a volume whose data comes, block by block, from somewhere else
// (a backup in a WormStore) while it is already in use — the engine side of
// instant ("lazy") restore. The Pool methods are declared in engine/pool.h
// ("Hydration"); this header holds what they exchange.
//
// The model: a hydrating volume carries a persistent *hydration map*, the set
// of its blocks whose contents must still come from the source. A read of a
// pending block returns the source's bytes; a write, trim or write-zeroes
// takes what it covers out of the map (the client's data wins); HydrateStep
// copies pending blocks from the source into the volume. When nothing is
// pending the map is gone and the volume is an ordinary volume.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "disk/status.h"

namespace snapdisk {

// Where a hydrating volume's pending data comes from. Attached at run time
// (Pool::AttachHydrationSource), never persisted: after a reopen the caller
// attaches it again.
//
// Contract for implementations:
//  - Read fills all of `out` with the bytes of the volume's source image at
//    [offset_bytes, offset_bytes + out.size()) and returns OK, or returns an
//    error (which the engine hands, with context, to the request that needed
//    the bytes: a read, a partial write into a pending block, HydrateStep).
//  - The engine asks only for ranges inside the volume's hydration ranges:
//    block aligned at the start, whole blocks long, except that the last
//    block of a volume whose size is not a multiple of the block size is
//    asked for up to the volume's end only.
//  - Read is called synchronously on the pool's thread, which waits for it
//    (no other request of the pool advances meanwhile): a source that blocks
//    for milliseconds per call is acceptable, one that blocks for seconds
//    stalls every volume of the pool. It must not call back into the pool.
//  - Unless background_fetch() says true: then a read of a volume request
//    that needs pending blocks calls Read and FetchedWith on a thread of the
//    pool's own (HydrationFetcher), while the pool's thread serves other
//    requests; the request waits for that fetch, and what it brought fills
//    the volume as below. Calls may then come from two threads at once (the
//    fetch thread, and the pool's thread filling): such a source is
//    thread-safe.
//
// Fetch units (optional): a source that fetches more than it is asked for (a
// backup set decodes a whole chunk to serve one block of it) says so through
// FetchedWith. When the engine needs a pending block for a read, or for a
// write that covers part of one, it fills every pending block of those
// ranges into the volume at once (as HydrateStep fills: durable at the next
// commit), so each fetch is used whole and nothing is asked for twice,
// whatever the order of the reads.
class HydrationSource {
 public:
  virtual ~HydrationSource() = default;
  virtual Status Read(uint64_t offset_bytes, std::span<std::byte> out) = 0;
  // The image's byte ranges, as (offset, length), whose bytes come with those
  // at `offset_bytes` when the source fetches them; they include
  // `offset_bytes`. Empty (the default): no more than what Read is asked.
  // An error makes the engine read just what it needs.
  virtual Result<std::vector<std::pair<uint64_t, uint64_t>>> FetchedWith(uint64_t offset_bytes) {
    (void)offset_bytes;
    return std::vector<std::pair<uint64_t, uint64_t>>();
  }
  // Bytes fetched from where the source reads (a store's chunk objects), and
  // what fetching the whole image once costs (0: not known), for
  // HydrationInfo. Any thread.
  virtual uint64_t fetched_bytes() const { return 0; }
  // See the contract above. A source whose reads are slow (a store's chunk
  // fetched and decoded) says true.
  virtual bool background_fetch() const { return false; }
  virtual uint64_t image_fetch_bytes() const { return 0; }
};

// A hydrating volume's state (Pool::GetHydrationInfo). Byte figures count
// whole blocks (a partial last block counts as a whole one).
struct HydrationInfo {
  bool hydrating = false;        // false: nothing pending (never was, or finished)
  bool source_attached = false;  // reads of pending blocks can be served
  uint64_t total_bytes = 0;      // pending when BeginHydration ran
  uint64_t pending_bytes = 0;    // still to come from the source
  uint64_t pending_ranges = 0;   // runs of pending blocks (memory use is O(this))
  // HydrationSource::fetched_bytes (since the source was attached) and
  // image_fetch_bytes of the attached source; 0 without one.
  uint64_t source_fetched_bytes = 0;
  uint64_t source_image_bytes = 0;
};

}  // namespace snapdisk
