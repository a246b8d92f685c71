#include "engine/space_map.h"

#include <algorithm>
#include <functional>
#include <string>

namespace snapdisk {

using format::SpaceMapEntry;

SpaceMap::SpaceMap(BlockDevice& device, BlockCache& cache, const format::SpaceMapGeometry& geometry,
                   uint32_t block_bytes, uint64_t pool_blocks)
    : device_(device),
      cache_(cache),
      geometry_(geometry),
      block_bytes_(block_bytes),
      pool_blocks_(pool_blocks),
      dirty_(geometry.height) {
  high_water_ = geometry_.first_data_block;
  scan_cursor_ = geometry_.first_data_block;
}

void SpaceMap::Load(const format::Superblock& sb) {
  for (int i = 0; i < format::kSpaceMapTopEntries; ++i) {
    format::StoreSpaceMapEntry(top_.data() + i * format::kSpaceMapEntryBytes, sb.space_map_top[i]);
  }
  high_water_ = sb.high_water;
  blocks_in_use_ = sb.blocks_in_use;
  scan_cursor_ = geometry_.first_data_block;
}

void SpaceMap::Store(format::Superblock* sb) const {
  for (int i = 0; i < format::kSpaceMapTopEntries; ++i) {
    sb->space_map_top[i] = format::LoadSpaceMapEntry(top_.data() + i * format::kSpaceMapEntryBytes);
  }
  sb->space_map_height = static_cast<uint8_t>(geometry_.height);
  sb->space_map_top_count = static_cast<uint16_t>(geometry_.blocks_at_level[geometry_.height - 1]);
  sb->high_water = high_water_;
  sb->blocks_in_use = blocks_in_use_;
  sb->first_data_block = geometry_.first_data_block;
}

size_t SpaceMap::dirty_blocks() const {
  size_t n = 0;
  for (const auto& level : dirty_) n += level.size();
  return n;
}

Result<std::byte*> SpaceMap::EntryLocation(int level, uint64_t index) {
  if (level == geometry_.height - 1) {
    return top_.data() + index * format::kSpaceMapEntryBytes;
  }
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * parent,
                            LoadBlock(level + 1, index / geometry_.entries_per_dir));
  return parent->data.data() + (index % geometry_.entries_per_dir) * format::kSpaceMapEntryBytes;
}

Result<CachedBlock*> SpaceMap::LoadBlock(int level, uint64_t index) {
  const uint64_t key = Key(level, index);
  if (CachedBlock* b = cache_.Find(key)) return b;
  SNAPDISK_ASSIGN_OR_RETURN(std::byte * entry_at, EntryLocation(level, index));
  SpaceMapEntry entry = format::LoadSpaceMapEntry(entry_at);
  CachedBlock* block = cache_.Insert(key, /*dirty=*/false);
  if (entry.checksum == 0) return block;  // never written: all zeros
  const uint64_t pbn = geometry_.SlotPbn(level, index, entry.slot);
  Status s = device_.Read(pbn * block_bytes_, block->data.span());
  if (s.ok() && format::Checksum(block->data.span()) != entry.checksum) {
    s = Status::Corruption("space map block (level " + std::to_string(level) + ", index " +
                           std::to_string(index) + ") at block " + std::to_string(pbn) +
                           ": checksum mismatch");
  }
  if (!s.ok()) {
    cache_.Erase(key);
    return s;
  }
  return block;
}

Status SpaceMap::CheckPbn(uint64_t pbn) const {
  if (pbn < geometry_.first_data_block || pbn >= pool_blocks_) {
    return Status::Corruption(
        "block " + std::to_string(pbn) + " is outside the pool's data area [" +
        std::to_string(geometry_.first_data_block) + ", " + std::to_string(pool_blocks_) + ")");
  }
  return Status::OK();
}

Result<uint32_t*> SpaceMap::CountSlot(uint64_t pbn, bool for_write) {
  SNAPDISK_RETURN_IF_ERROR(CheckPbn(pbn));
  const uint64_t leaf = pbn / geometry_.counts_per_leaf;
  SNAPDISK_ASSIGN_OR_RETURN(CachedBlock * block, LoadBlock(0, leaf));
  if (for_write && !block->dirty) {
    cache_.MarkDirty(block);
    dirty_[0].insert(leaf);
  }
  return reinterpret_cast<uint32_t*>(block->data.data()) + pbn % geometry_.counts_per_leaf;
}

Result<uint32_t> SpaceMap::Get(uint64_t pbn) {
  SNAPDISK_ASSIGN_OR_RETURN(uint32_t * count, CountSlot(pbn, false));
  return *count;
}

Status SpaceMap::Increment(uint64_t pbn) {
  SNAPDISK_ASSIGN_OR_RETURN(uint32_t * count, CountSlot(pbn, true));
  if (*count == UINT32_MAX)
    return Status::Corruption("reference count overflow at block " + std::to_string(pbn));
  if (*count == 0) {
    // Only a block freed in this transaction can come back to life (for
    // example a node released and then shared again by a later step).
    pending_free_.erase(pbn);
    pending_reuse_.erase(pbn);
    ++blocks_in_use_;
  }
  ++*count;
  return Status::OK();
}

Result<uint32_t> SpaceMap::Decrement(uint64_t pbn, FreeKind kind) {
  SNAPDISK_ASSIGN_OR_RETURN(uint32_t * count, CountSlot(pbn, true));
  if (*count == 0) {
    return Status::Corruption("reference count underflow at block " + std::to_string(pbn));
  }
  if (--*count == 0) {
    --blocks_in_use_;
    pending_free_.insert(pbn);
    if (kind == FreeKind::kReuse) pending_reuse_.insert(pbn);
  }
  return *count;
}

Result<uint64_t> SpaceMap::Allocate() {
  uint64_t count = 0;
  return AllocateRun(1, &count);
}

Result<uint64_t> SpaceMap::AllocateMetadata() {
  while (metadata_next_ < metadata_end_) {
    const uint64_t pbn = metadata_next_++;
    SNAPDISK_ASSIGN_OR_RETURN(uint32_t * slot, CountSlot(pbn, false));
    if (*slot != 0 || pending_free_.count(pbn) || cooling_.count(pbn)) continue;
    SNAPDISK_ASSIGN_OR_RETURN(slot, CountSlot(pbn, true));
    *slot = 1;
    ++blocks_in_use_;
    return pbn;
  }
  // A new chunk from never-used space, aligned to a leaf of counts.
  const uint64_t chunk = geometry_.counts_per_leaf;
  const uint64_t start = (high_water_ + chunk - 1) / chunk * chunk;
  // Only while the pool has plenty of never-used space left: near the end,
  // data needs it more than metadata needs locality.
  if (start + chunk <= pool_blocks_ && pool_blocks_ - start >= 8 * chunk) {
    high_water_ = start + chunk;  // blocks skipped below `start` stay free for the scan
    metadata_next_ = start;
    metadata_end_ = start + chunk;
    return AllocateMetadata();
  }
  return Allocate();
}

Result<uint64_t> SpaceMap::AllocateRun(uint64_t max_count, uint64_t* count) {
  SNAPDISK_CHECK(max_count > 0, "empty allocation");
  // Blocks freed by overwrites first: still allocated in the file, so writing
  // them costs the file system nothing; take a run of consecutive ones.
  if (!reuse_.empty()) {
    const uint64_t first = reuse_.back();
    uint64_t n = 0;
    while (n < max_count && !reuse_.empty() && reuse_.back() == first + n) {
      reuse_.pop_back();
      SNAPDISK_ASSIGN_OR_RETURN(uint32_t * slot, CountSlot(first + n, true));
      SNAPDISK_CHECK(*slot == 0, "a block on the reuse list is in use");
      *slot = 1;
      ++n;
    }
    blocks_in_use_ += n;
    *count = n;
    return first;
  }
  // Then never-used space: consecutive, and no count to read.
  if (high_water_ < pool_blocks_) {
    uint64_t n = std::min(max_count, pool_blocks_ - high_water_);
    const uint64_t first = high_water_;
    for (uint64_t i = 0; i < n; ++i) {
      SNAPDISK_ASSIGN_OR_RETURN(uint32_t * slot, CountSlot(first + i, true));
      SNAPDISK_CHECK(*slot == 0, "block above the high-water mark is in use");
      *slot = 1;
    }
    high_water_ += n;
    blocks_in_use_ += n;
    *count = n;
    return first;
  }
  if (free_blocks() == 0) {
    return Status::NoSpace("pool is full (" + std::to_string(pool_blocks_) + " blocks of " +
                           std::to_string(block_bytes_) + " bytes, " +
                           std::to_string(freed_not_reusable_blocks()) +
                           " freed blocks wait for a commit)");
  }
  // Then any free block, scanning from where the last scan stopped.
  const uint64_t data_blocks = pool_blocks_ - geometry_.first_data_block;
  for (uint64_t scanned = 0; scanned < data_blocks; ++scanned) {
    uint64_t pbn = scan_cursor_;
    if (++scan_cursor_ >= pool_blocks_) scan_cursor_ = geometry_.first_data_block;
    SNAPDISK_ASSIGN_OR_RETURN(uint32_t * slot, CountSlot(pbn, false));
    if (*slot != 0 || pending_free_.count(pbn) || cooling_.count(pbn)) continue;
    SNAPDISK_ASSIGN_OR_RETURN(slot, CountSlot(pbn, true));
    *slot = 1;
    ++blocks_in_use_;
    *count = 1;
    return pbn;
  }
  return Status::NoSpace("pool is full");
}

Status SpaceMap::WriteDirty() {
  for (int level = 0; level < geometry_.height; ++level) {
    // Entries of this level live in level + 1, which gains dirty blocks here.
    std::set<uint64_t> indexes;
    indexes.swap(dirty_[level]);
    for (uint64_t index : indexes) {
      CachedBlock* block = cache_.Find(Key(level, index));
      SNAPDISK_CHECK(block != nullptr && block->dirty, "dirty space-map block left the cache");
      SNAPDISK_ASSIGN_OR_RETURN(std::byte * entry_at, EntryLocation(level, index));
      SpaceMapEntry entry = format::LoadSpaceMapEntry(entry_at);
      entry.slot = entry.checksum == 0 ? 0 : static_cast<uint8_t>(1 - entry.slot);
      entry.checksum = format::Checksum(block->data.span());
      if (entry.checksum == 0) entry.checksum = 1;  // 0 means "never written"
      SNAPDISK_RETURN_IF_ERROR(device_.Write(
          geometry_.SlotPbn(level, index, entry.slot) * block_bytes_, block->data.span()));
      if (level + 1 < geometry_.height) {
        CachedBlock* parent = cache_.Find(Key(level + 1, index / geometry_.entries_per_dir));
        SNAPDISK_CHECK(parent != nullptr, "space-map parent left the cache");
        if (!parent->dirty) {
          cache_.MarkDirty(parent);
          dirty_[level + 1].insert(index / geometry_.entries_per_dir);
        }
      }
      format::StoreSpaceMapEntry(entry_at, entry);
      cache_.MarkClean(block);
    }
  }
  return Status::OK();
}

std::vector<uint64_t> SpaceMap::CommitDone() {
  std::vector<uint64_t> punch;
  punch.reserve(cooling_.size() - cooling_reuse_.size());
  const size_t reuse_before = reuse_.size();
  for (uint64_t pbn : cooling_) {
    if (cooling_reuse_.count(pbn) && reuse_.size() < kMaxReuseBlocks) {
      reuse_.push_back(pbn);
    } else {
      punch.push_back(pbn);
    }
  }
  if (reuse_.size() != reuse_before)
    std::sort(reuse_.begin(), reuse_.end(), std::greater<uint64_t>());
  cooling_ = std::move(pending_free_);
  cooling_reuse_ = std::move(pending_reuse_);
  pending_free_.clear();
  pending_reuse_.clear();
  std::sort(punch.begin(), punch.end());
  return punch;
}

}  // namespace snapdisk
