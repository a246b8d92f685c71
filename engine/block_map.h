// BlockMap: copy-on-write radix trees from virtual block numbers (VBN) to
// physical blocks, shared between volumes, snapshots and clones by reference
// counting (FORMAT.md, "Block-map trees").
//
// A tree is a TreeRoot: the root node's entry and the height. Operations take
// the root by reference and may change it (a shadowed root moves). Nodes are
// read through the BlockCache and verified against the checksum in their
// parent's entry; nodes changed since the last commit are *dirty*: pinned in
// the cache, given their new PBN when shadowed, and written by WriteDirty().
//
// Reference rules: a node or data block's count (in the SpaceMap) is the
// number of entries pointing at it, roots included. Share() adds a root
// reference; Release() drops one and frees what only that reference held.
// Set() shadows every shared node on its path first, so no other tree ever
// sees the change.
//
// Errors: Corruption (checksum mismatch, bad PBN: names the block), IOError,
// NoSpace. After an error mid-operation the in-memory transaction may be
// inconsistent: the pool stops accepting writes and must be reopened (the last
// commit is intact on disk).
// Thread safety: none; the pool serializes access. All borrowed objects must
// outlive the BlockMap.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

#include "disk/block_device.h"
#include "engine/block_cache.h"
#include "engine/format.h"
#include "engine/space_map.h"

namespace snapdisk {

struct TreeRoot {
  format::MapEntry entry;  // pbn 0: empty tree (everything reads as zeros)
  uint8_t height = 1;
  bool operator==(const TreeRoot&) const = default;
};

class BlockMap {
 public:
  BlockMap(BlockDevice& device, BlockCache& cache, SpaceMap& space, uint32_t block_bytes);

  uint32_t fanout() const { return fanout_; }
  // The smallest height whose tree covers `blocks` VBNs.
  uint8_t HeightFor(uint64_t blocks) const;

  // The data entry of `vbn` ({0, 0} for a hole).
  Result<format::MapEntry> Lookup(const TreeRoot& root, uint64_t vbn);
  // Points `vbn` at `data` ({0,0} makes it a hole) and returns the previous
  // entry. The reference of `data` is the caller's (already counted); the
  // returned entry's reference is handed back to the caller to drop.
  Result<format::MapEntry> Set(TreeRoot& root, uint64_t vbn, const format::MapEntry& data);
  // Makes [first_vbn, first_vbn + count) holes, dropping the references of
  // what was there; subtrees wholly inside the range are released without
  // being walked. Cost: O(mapped blocks in the range). Data blocks freed go
  // as `data_kind` says (a trim punches; the write log hands its blocks back
  // for reuse).
  Status Unmap(TreeRoot& root, uint64_t first_vbn, uint64_t count,
               SpaceMap::FreeKind data_kind = SpaceMap::FreeKind::kPunch);
  // Raises the tree to `height` (never lowers it).
  Status Grow(TreeRoot& root, uint8_t height);

  // One more reference to the tree's root node.
  Status Share(const TreeRoot& root);
  // Drops the root's reference; frees every node and data block it alone held.
  // `root` becomes empty.
  Status Release(TreeRoot& root);
  // Release in slices: drops the root's reference now and frees what it
  // alone held later, in ReleaseSome() (each node or data reference it held
  // counts one). Until then those blocks stay allocated; nothing else changes
  // them (a node shared with another tree is shadowed before any change).
  // Finish before a commit: the committed counts must match the trees.
  void ReleaseLater(TreeRoot& root);
  // Drops up to `max_refs` of the references ReleaseLater left. Errors as
  // Release (the pool must then fail). Cost: O(max_refs).
  Status ReleaseSome(size_t max_refs);
  // References ReleaseLater left to drop (0: none).
  size_t deferred_releases() const { return deferred_.size(); }

  // Drops one reference to a data block (freed at 0, then punched or kept
  // for reuse as `kind` says).
  Status ReleaseData(uint64_t pbn, SpaceMap::FreeKind kind = SpaceMap::FreeKind::kPunch);

  // Calls emit(vbn, entry in b) for every VBN whose data entry differs between
  // a and b, in increasing VBN order, skipping subtrees the two share. Cost:
  // O(nodes that differ).
  using DiffEmit = std::function<Status(uint64_t vbn, const format::MapEntry& in_b)>;
  Status Diff(const TreeRoot& a, const TreeRoot& b, const DiffEmit& emit);

  // Calls visit(vbn, entry) for every mapped VBN of the tree, in order.
  using DataVisit = std::function<Status(uint64_t vbn, const format::MapEntry& data)>;
  Status ForEachData(const TreeRoot& root, const DataVisit& visit);
  // The same for the mapped VBNs in [first_vbn, end_vbn) only, skipping empty
  // subtrees: O(mapped blocks in the range).
  Status ForEachDataIn(const TreeRoot& root, uint64_t first_vbn, uint64_t end_vbn,
                       const DataVisit& visit);

  // Like ForEachData, also saying whether the data block is reachable from
  // this tree alone: every node on its path and the block itself hold one
  // reference. For exclusive/shared usage figures.
  using SharingVisit =
      std::function<Status(uint64_t vbn, const format::MapEntry& data, bool exclusive)>;
  Status ForEachDataSharing(const TreeRoot& root, const SharingVisit& visit);

  // Calls visit(level, entry) for every pointer in the tree (level of the
  // block pointed at; -1 for data), descending into a node only the first
  // time `first_visit(pbn)` says so. For fsck.
  using RefVisit = std::function<bool(int level, const format::MapEntry& ref)>;
  Status VisitRefs(const TreeRoot& root, const RefVisit& visit);

  // Commit, step 2: writes the tree's dirty nodes (children first) and fills
  // in the checksums of their parents' entries and of `root`. Nodes shared by
  // several trees are written once per commit: call BeginCommit() first.
  void BeginCommit() { written_this_commit_.clear(); }
  Status WriteDirty(TreeRoot& root);

 private:
  Result<CachedBlock*> LoadNode(const format::MapEntry& ref);
  Result<CachedBlock*> NewNode(format::MapEntry* ref);
  Result<CachedBlock*> MakeWritable(format::MapEntry* ref);
  Status ReleaseRef(const format::MapEntry& ref, int level,
                    SpaceMap::FreeKind data_kind = SpaceMap::FreeKind::kPunch);
  Status UnmapRef(format::MapEntry* ref, int level, uint64_t base_vbn, uint64_t first,
                  uint64_t end, SpaceMap::FreeKind data_kind);
  bool Covers(uint8_t height, uint64_t vbn) const;
  Status WriteNode(format::MapEntry* ref, int level);
  Status DiffRefs(const format::MapEntry& a, int natural_a, const format::MapEntry& b,
                  int natural_b, int level, uint64_t base_vbn, const DiffEmit& emit);
  Result<const format::MapEntry*> EntriesAt(const format::MapEntry& ref, int natural, int level,
                                            format::MapEntry* lifted);
  Status ForEachDataRef(const format::MapEntry& ref, int level, uint64_t base_vbn,
                        uint64_t first_vbn, uint64_t end_vbn, const DataVisit& visit);
  Status VisitRef(const format::MapEntry& ref, int level, const RefVisit& visit);
  Status ForEachDataSharingRef(const format::MapEntry& ref, int level, uint64_t base_vbn,
                               bool exclusive, const SharingVisit& visit);
  uint64_t SpanAt(int level) const { return uint64_t{1} << (fanout_bits_ * level); }
  uint32_t IndexAt(uint64_t vbn, int level) const {
    return static_cast<uint32_t>((vbn >> (fanout_bits_ * level)) & (fanout_ - 1));
  }
  static format::MapEntry* Entries(CachedBlock* node) {
    return reinterpret_cast<format::MapEntry*>(node->data.data());
  }

  BlockDevice& device_;
  BlockCache& cache_;
  SpaceMap& space_;
  const uint32_t block_bytes_;
  const uint32_t fanout_;
  const int fanout_bits_;
  AlignedBuffer zero_node_;
  std::unordered_map<uint64_t, uint64_t> written_this_commit_;  // pbn -> checksum
  // ReleaseLater's work: references to drop, with the level they point at
  // (-1: data). A stack: a node's children are dropped before its siblings.
  struct DeferredRef {
    format::MapEntry ref;
    int level;
  };
  std::vector<DeferredRef> deferred_;
};

}  // namespace snapdisk
