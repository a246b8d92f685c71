// The in-memory side of a volume's hydration map (engine-internal; the
// public contract is in engine/pool.h, "Hydration", the on-disk form in
// FORMAT.md, "hydration map").
//
// PendingRanges is the set of VBNs still to come from the source, as sorted,
// disjoint, non-adjacent [first, end) runs. HydrationState adds what the pool
// keeps per hydrating volume: the runs, the bits of the on-disk "done" bitmap
// set since the last commit, and the attached source.
//
// Memory: O(runs): one per range BeginHydration got, plus at most one per
// write or trim that split a run; filling removes runs from the front.
// Thread safety: none; the pool's thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "engine/aligned_buffer.h"
#include "engine/hydration.h"

namespace snapdisk {

class PendingRanges {
 public:
  // Adds [first, end) (may touch or overlap what is there: runs merge).
  void Add(uint64_t first, uint64_t end);
  bool Contains(uint64_t vbn) const;
  // The pending runs that overlap [first, end), clipped to it, in order.
  std::vector<std::pair<uint64_t, uint64_t>> Overlapping(uint64_t first, uint64_t end) const;
  // Takes [first, end) out of the set; calls removed(a, b) for every run
  // [a, b) that was pending, in order. Returns the blocks taken out.
  uint64_t Remove(uint64_t first, uint64_t end,
                  const std::function<void(uint64_t, uint64_t)>& removed);
  // The lowest run; {0, 0} when empty.
  std::pair<uint64_t, uint64_t> First() const;

  bool empty() const { return runs_.empty(); }
  uint64_t blocks() const { return blocks_; }
  uint64_t runs() const { return runs_.size(); }

 private:
  std::map<uint64_t, uint64_t> runs_;  // first -> end
  uint64_t blocks_ = 0;
};

struct HydrationState {
  explicit HydrationState(size_t record_slot) : slot(record_slot) {}

  size_t slot;          // the volume's hydration record (kind 5)
  bool loaded = false;  // `pending` was read from the record's tree
  PendingRanges pending;
  // Done-bitmap bits set since the last commit: bitmap block index -> the
  // block's words (bit set: no longer pending). Commit ORs them into the tree.
  std::map<uint64_t, std::vector<uint64_t>> done_bits;
  // Attached by AttachHydrationSource, or on demand by the pool's
  // hydration_source_resolver (mutable: a read attaches what it resolved).
  mutable std::shared_ptr<HydrationSource> source;
  // The resolver's last failure, given again without asking it until
  // `resolve_retry_ns` (the pool's clock): a store that is gone is not
  // looked for at every read.
  mutable std::string resolve_error;
  mutable int64_t resolve_retry_ns = 0;
  AlignedBuffer fill_buffer;  // HydrateStep's, allocated at its first call
};

}  // namespace snapdisk
