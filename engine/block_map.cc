#include "engine/block_map.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

namespace snapdisk {

using format::MapEntry;

static_assert(sizeof(MapEntry) == format::kMapEntryBytes, "MapEntry is the on-disk entry");

BlockMap::BlockMap(BlockDevice& device, BlockCache& cache, SpaceMap& space, uint32_t block_bytes)
    : device_(device),
      cache_(cache),
      space_(space),
      block_bytes_(block_bytes),
      fanout_(block_bytes / format::kMapEntryBytes),
      fanout_bits_(std::countr_zero(block_bytes / format::kMapEntryBytes)),
      zero_node_(block_bytes) {}

uint8_t BlockMap::HeightFor(uint64_t blocks) const {
  uint8_t height = 1;
  while (height < format::kMaxTreeHeight && fanout_bits_ * height < 64 && SpanAt(height) < blocks) {
    ++height;
  }
  return height;
}

Result<CachedBlock*> BlockMap::LoadNode(const MapEntry& ref) {
  if (CachedBlock* node = cache_.Find(ref.pbn)) return node;
  if (ref.pbn < space_.first_data_block() || ref.pbn >= space_.pool_blocks()) {
    return Status::Corruption("map entry points at block " + std::to_string(ref.pbn) +
                              ", outside the pool's data area");
  }
  CachedBlock* node = cache_.Insert(ref.pbn, /*dirty=*/false);
  Status s = device_.Read(ref.pbn * block_bytes_, node->data.span());
  if (s.ok() && format::Checksum(node->data.span()) != ref.checksum) {
    s = Status::Corruption("map node at block " + std::to_string(ref.pbn) + ": checksum mismatch");
  }
  if (!s.ok()) {
    cache_.Erase(ref.pbn);
    return s;
  }
  return node;
}

Result<CachedBlock*> BlockMap::NewNode(MapEntry* ref) {
  SNAPDISK_ASSIGN_OR_RETURN(uint64_t pbn, space_.AllocateMetadata());
  *ref = MapEntry{pbn, 0};  // the checksum is filled in at commit
  return cache_.Insert(pbn, /*dirty=*/true);
}

Result<CachedBlock*> BlockMap::MakeWritable(MapEntry* ref) {
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, LoadNode(*ref));
  SNAPDISK_ASSIGN_OR_RETURN(uint32_t refs, space_.Get(ref->pbn));
  if (refs == 0) {
    return Status::Corruption("map node at block " + std::to_string(ref->pbn) +
                              " is referenced but its reference count is 0");
  }
  if (node->dirty && refs == 1) return node;  // ours alone, not yet committed: change in place
  const uint64_t old_pbn = ref->pbn;
  MapEntry fresh;
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * copy, NewNode(&fresh));
  std::memcpy(copy->data.data(), node->data.data(), block_bytes_);
  if (refs > 1) {
    // The copy is one more parent of every child (lazy reference counting).
    const MapEntry* entries = Entries(copy);
    for (uint32_t i = 0; i < fanout_; ++i) {
      if (entries[i].pbn != 0) SNAPDISK_RETURN_IF_ERROR(space_.Increment(entries[i].pbn));
    }
  }
  *ref = fresh;
  SNAPDISK_ASSIGN_OR_RETURN(uint32_t left, space_.Decrement(old_pbn));
  if (left == 0) cache_.Erase(old_pbn);  // its children now belong to the copy
  return copy;
}

bool BlockMap::Covers(uint8_t height, uint64_t vbn) const {
  return fanout_bits_ * height >= 64 || vbn < SpanAt(height);
}

Result<MapEntry> BlockMap::Lookup(const TreeRoot& root, uint64_t vbn) {
  if (!Covers(root.height, vbn)) return MapEntry{};
  MapEntry ref = root.entry;
  for (int level = root.height - 1; level >= 0; --level) {
    if (ref.pbn == 0) return MapEntry{};
    SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, LoadNode(ref));
    ref = Entries(node)[IndexAt(vbn, level)];
  }
  return ref;
}

Status BlockMap::Grow(TreeRoot& root, uint8_t height) {
  if (height > format::kMaxTreeHeight) return Status::InvalidArgument("tree too tall");
  while (root.height < height) {
    if (root.entry.pbn != 0) {
      MapEntry fresh;
      SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, NewNode(&fresh));
      Entries(node)[0] = root.entry;  // the old root's reference moves to the new root
      root.entry = fresh;
    }
    ++root.height;
  }
  return Status::OK();
}

Result<MapEntry> BlockMap::Set(TreeRoot& root, uint64_t vbn, const MapEntry& data) {
  if (!Covers(root.height, vbn)) {
    return Status::InvalidArgument("block " + std::to_string(vbn) + " is beyond the tree");
  }
  if (root.entry.pbn == 0) {
    if (data.pbn == 0) return MapEntry{};  // a hole in an empty tree
    SNAPDISK_RETURN_IF_ERROR(NewNode(&root.entry).status());
  }
  // path[l] is the entry pointing at the node of level l.
  MapEntry* path[format::kMaxTreeHeight] = {};
  MapEntry* ref = &root.entry;
  for (int level = root.height - 1;; --level) {
    path[level] = ref;
    SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, MakeWritable(ref));
    MapEntry* slot = &Entries(node)[IndexAt(vbn, level)];
    if (level == 0) {
      const MapEntry old = *slot;
      *slot = data;
      if (data.pbn != 0) return old;
      // Prune nodes left empty, bottom up (they are writable: we just shadowed them).
      for (int l = 0; l < root.height; ++l) {
        CachedBlock* n = cache_.Find(path[l]->pbn);
        SNAPDISK_CHECK(n != nullptr && n->dirty, "node on a written path left the cache");
        const MapEntry* entries = Entries(n);
        for (uint32_t i = 0; i < fanout_; ++i) {
          if (entries[i].pbn != 0) return old;
        }
        const uint64_t empty_pbn = path[l]->pbn;
        *path[l] = MapEntry{};
        SNAPDISK_ASSIGN_OR_RETURN(uint32_t left, space_.Decrement(empty_pbn));
        SNAPDISK_CHECK(left == 0, "a just-shadowed node is shared");
        cache_.Erase(empty_pbn);
      }
      return old;
    }
    if (slot->pbn == 0) {
      if (data.pbn == 0) return MapEntry{};  // already a hole
      SNAPDISK_RETURN_IF_ERROR(NewNode(slot).status());
    }
    ref = slot;
  }
}

Status BlockMap::UnmapRef(MapEntry* ref, int level, uint64_t base_vbn, uint64_t first,
                          uint64_t end, SpaceMap::FreeKind data_kind) {
  if (ref->pbn == 0) return Status::OK();
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, MakeWritable(ref));
  MapEntry* entries = Entries(node);
  const uint64_t span = SpanAt(level);
  const uint64_t i_first = first > base_vbn ? (first - base_vbn) / span : 0;
  for (uint64_t i = i_first; i < fanout_; ++i) {
    const uint64_t child_base = base_vbn + i * span;
    if (child_base >= end) break;
    MapEntry* child = &entries[i];
    if (child->pbn == 0) continue;
    if (first <= child_base && child_base + span <= end) {
      SNAPDISK_RETURN_IF_ERROR(ReleaseRef(*child, level - 1, data_kind));
      *child = MapEntry{};
    } else {
      SNAPDISK_RETURN_IF_ERROR(UnmapRef(child, level - 1, child_base, first, end, data_kind));
    }
  }
  for (uint32_t i = 0; i < fanout_; ++i) {
    if (entries[i].pbn != 0) return Status::OK();
  }
  const uint64_t empty_pbn = ref->pbn;
  *ref = MapEntry{};
  SNAPDISK_ASSIGN_OR_RETURN(uint32_t left, space_.Decrement(empty_pbn));
  SNAPDISK_CHECK(left == 0, "a just-shadowed node is shared");
  cache_.Erase(empty_pbn);
  return Status::OK();
}

Status BlockMap::Unmap(TreeRoot& root, uint64_t first_vbn, uint64_t count,
                       SpaceMap::FreeKind data_kind) {
  if (count == 0) return Status::OK();
  return UnmapRef(&root.entry, root.height - 1, 0, first_vbn, first_vbn + count, data_kind);
}

Status BlockMap::Share(const TreeRoot& root) {
  if (root.entry.pbn == 0) return Status::OK();
  return space_.Increment(root.entry.pbn);
}

Status BlockMap::ReleaseData(uint64_t pbn, SpaceMap::FreeKind kind) {
  return space_.Decrement(pbn, kind).status();
}

Status BlockMap::ReleaseRef(const MapEntry& ref, int level, SpaceMap::FreeKind data_kind) {
  if (ref.pbn == 0) return Status::OK();
  if (level < 0) return ReleaseData(ref.pbn, data_kind);
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, LoadNode(ref));
  SNAPDISK_ASSIGN_OR_RETURN(uint32_t left, space_.Decrement(ref.pbn));
  if (left > 0) return Status::OK();
  // Copy the children out: releasing them may evict nothing, but erasing
  // this node first keeps the cache free of dead blocks either way.
  std::vector<MapEntry> children(Entries(node), Entries(node) + fanout_);
  cache_.Erase(ref.pbn);
  for (const MapEntry& child : children) {
    SNAPDISK_RETURN_IF_ERROR(ReleaseRef(child, level - 1, data_kind));
  }
  return Status::OK();
}

void BlockMap::ReleaseLater(TreeRoot& root) {
  if (root.entry.pbn != 0) deferred_.push_back({root.entry, root.height - 1});
  root.entry = MapEntry{};
}

Status BlockMap::ReleaseSome(size_t max_refs) {
  for (size_t done = 0; done < max_refs && !deferred_.empty(); ++done) {
    const DeferredRef d = deferred_.back();
    deferred_.pop_back();
    if (d.level < 0) {
      SNAPDISK_RETURN_IF_ERROR(ReleaseData(d.ref.pbn));
      continue;
    }
    SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, LoadNode(d.ref));
    SNAPDISK_ASSIGN_OR_RETURN(uint32_t left, space_.Decrement(d.ref.pbn));
    if (left > 0) continue;
    const MapEntry* children = Entries(node);
    for (uint32_t i = 0; i < fanout_; ++i) {
      if (children[i].pbn != 0) deferred_.push_back({children[i], d.level - 1});
    }
    cache_.Erase(d.ref.pbn);  // its children are on the stack
  }
  return Status::OK();
}

Status BlockMap::Release(TreeRoot& root) {
  Status s = ReleaseRef(root.entry, root.height - 1);
  root.entry = MapEntry{};
  return s;
}

Result<const MapEntry*> BlockMap::EntriesAt(const MapEntry& ref, int natural, int level,
                                            MapEntry* lifted) {
  if (ref.pbn == 0) return reinterpret_cast<const MapEntry*>(zero_node_.data());
  if (level > natural) {
    // A shorter tree seen at a taller tree's level: a virtual node whose
    // first entry is the real root.
    std::fill(lifted, lifted + fanout_, MapEntry{});
    lifted[0] = ref;
    return lifted;
  }
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, LoadNode(ref));
  return Entries(node);
}

Status BlockMap::DiffRefs(const MapEntry& a, int natural_a, const MapEntry& b, int natural_b,
                          int level, uint64_t base_vbn, const DiffEmit& emit) {
  if (a.pbn == b.pbn && (a.pbn == 0 || natural_a == natural_b)) return Status::OK();
  if (level < 0) return emit(base_vbn, b);
  std::vector<MapEntry> lifted_a, lifted_b;
  if (level > natural_a && a.pbn != 0) lifted_a.resize(fanout_);
  if (level > natural_b && b.pbn != 0) lifted_b.resize(fanout_);
  // Copy both sides' entries: descending may load nodes, never evict, but
  // the copies keep this frame independent of the cache.
  SNAPDISK_ASSIGN_OR_RETURN(const MapEntry* ea, EntriesAt(a, natural_a, level, lifted_a.data()));
  std::vector<MapEntry> entries_a(ea, ea + fanout_);
  SNAPDISK_ASSIGN_OR_RETURN(const MapEntry* eb, EntriesAt(b, natural_b, level, lifted_b.data()));
  std::vector<MapEntry> entries_b(eb, eb + fanout_);
  // A real node's children sit one level down; a virtual node's only child is
  // the shorter tree's root, which keeps its own level.
  const int na = level > natural_a ? natural_a : level - 1;
  const int nb = level > natural_b ? natural_b : level - 1;
  for (uint32_t i = 0; i < fanout_; ++i) {
    const MapEntry& ca = entries_a[i];
    const MapEntry& cb = entries_b[i];
    if (ca.pbn == 0 && cb.pbn == 0) continue;
    SNAPDISK_RETURN_IF_ERROR(
        DiffRefs(ca, na, cb, nb, level - 1, base_vbn + i * SpanAt(level), emit));
  }
  return Status::OK();
}

Status BlockMap::Diff(const TreeRoot& a, const TreeRoot& b, const DiffEmit& emit) {
  const int height = std::max(a.height, b.height);
  return DiffRefs(a.entry, a.height - 1, b.entry, b.height - 1, height - 1, 0, emit);
}

Status BlockMap::ForEachDataRef(const MapEntry& ref, int level, uint64_t base_vbn,
                                uint64_t first_vbn, uint64_t end_vbn, const DataVisit& visit) {
  if (ref.pbn == 0) return Status::OK();
  if (level < 0) return visit(base_vbn, ref);
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, LoadNode(ref));
  std::vector<MapEntry> entries(Entries(node), Entries(node) + fanout_);
  const uint64_t span = SpanAt(level);
  for (uint32_t i = 0; i < fanout_; ++i) {
    const uint64_t child_base = base_vbn + i * span;
    if (child_base >= end_vbn) break;
    if (child_base + span <= first_vbn) continue;
    SNAPDISK_RETURN_IF_ERROR(
        ForEachDataRef(entries[i], level - 1, child_base, first_vbn, end_vbn, visit));
  }
  return Status::OK();
}

Status BlockMap::ForEachData(const TreeRoot& root, const DataVisit& visit) {
  return ForEachDataRef(root.entry, root.height - 1, 0, 0, UINT64_MAX, visit);
}

Status BlockMap::ForEachDataIn(const TreeRoot& root, uint64_t first_vbn, uint64_t end_vbn,
                               const DataVisit& visit) {
  return ForEachDataRef(root.entry, root.height - 1, 0, first_vbn, end_vbn, visit);
}

Status BlockMap::ForEachDataSharingRef(const MapEntry& ref, int level, uint64_t base_vbn,
                                       bool exclusive, const SharingVisit& visit) {
  if (ref.pbn == 0) return Status::OK();
  SNAPDISK_ASSIGN_OR_RETURN(uint32_t refs, space_.Get(ref.pbn));
  exclusive = exclusive && refs == 1;
  if (level < 0) return visit(base_vbn, ref, exclusive);
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, LoadNode(ref));
  std::vector<MapEntry> entries(Entries(node), Entries(node) + fanout_);
  for (uint32_t i = 0; i < fanout_; ++i) {
    SNAPDISK_RETURN_IF_ERROR(ForEachDataSharingRef(entries[i], level - 1,
                                                   base_vbn + i * SpanAt(level), exclusive, visit));
  }
  return Status::OK();
}

Status BlockMap::ForEachDataSharing(const TreeRoot& root, const SharingVisit& visit) {
  return ForEachDataSharingRef(root.entry, root.height - 1, 0, true, visit);
}

Status BlockMap::VisitRef(const MapEntry& ref, int level, const RefVisit& visit) {
  if (ref.pbn == 0) return Status::OK();
  if (!visit(level, ref) || level < 0) return Status::OK();
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * node, LoadNode(ref));
  std::vector<MapEntry> entries(Entries(node), Entries(node) + fanout_);
  for (const MapEntry& child : entries) {
    SNAPDISK_RETURN_IF_ERROR(VisitRef(child, level - 1, visit));
  }
  return Status::OK();
}

Status BlockMap::VisitRefs(const TreeRoot& root, const RefVisit& visit) {
  return VisitRef(root.entry, root.height - 1, visit);
}

Status BlockMap::WriteNode(MapEntry* ref, int level) {
  if (ref->pbn == 0) return Status::OK();
  if (auto it = written_this_commit_.find(ref->pbn); it != written_this_commit_.end()) {
    ref->checksum = it->second;  // shared with a tree written earlier in this commit
    return Status::OK();
  }
  CachedBlock* node = cache_.Find(ref->pbn);
  if (node == nullptr || !node->dirty) return Status::OK();  // committed: entry is current
  if (level > 0) {
    MapEntry* entries = Entries(node);
    for (uint32_t i = 0; i < fanout_; ++i) {
      SNAPDISK_RETURN_IF_ERROR(WriteNode(&entries[i], level - 1));
    }
  }
  const uint64_t checksum = format::Checksum(node->data.span());
  SNAPDISK_RETURN_IF_ERROR(device_.Write(ref->pbn * block_bytes_, node->data.span()));
  cache_.MarkClean(node);
  written_this_commit_[ref->pbn] = checksum;
  ref->checksum = checksum;
  return Status::OK();
}

Status BlockMap::WriteDirty(TreeRoot& root) { return WriteNode(&root.entry, root.height - 1); }

}  // namespace snapdisk
