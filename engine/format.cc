#include "engine/format.h"

#include <xxhash.h>

#include <string>

namespace snapdisk::format {

uint64_t Checksum(std::span<const std::byte> bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

bool IsValidBlockSize(uint64_t block_bytes) {
  return block_bytes >= kMinBlockBytes && block_bytes <= kMaxBlockBytes &&
         (block_bytes & (block_bytes - 1)) == 0;
}

void EncodeSuperblock(const Superblock& sb, std::span<std::byte> out) {
  SNAPDISK_CHECK(out.size() >= kSuperblockBytes, "superblock buffer too small");
  std::byte* p = out.data();
  std::memset(p, 0, kSuperblockBytes);
  std::memcpy(p, kMagic, 8);
  Store32(p + 8, kVersion);
  Store32(p + 12, sb.block_bytes);
  Store64(p + 16, sb.generation);
  Store64(p + 24, sb.pool_blocks);
  Store64(p + 32, sb.first_data_block);
  Store64(p + 40, sb.high_water);
  StoreMapEntry(p + 48, sb.catalog_root);
  p[64] = static_cast<std::byte>(sb.catalog_height);
  p[65] = static_cast<std::byte>(sb.space_map_height);
  std::memcpy(p + 66, &sb.space_map_top_count, 2);
  Store64(p + 72, sb.next_object_id);
  Store64(p + 80, sb.created_unix_ns);
  Store64(p + 88, sb.blocks_in_use);
  for (int i = 0; i < kSpaceMapTopEntries; ++i) {
    StoreSpaceMapEntry(p + 96 + i * kSpaceMapEntryBytes, sb.space_map_top[i]);
  }
  Store64(p + 504, Checksum(std::span(p, 504)));
}

Result<Superblock> DecodeSuperblock(std::span<const std::byte> in) {
  if (in.size() < kSuperblockBytes) return Status::Corruption("superblock truncated");
  const std::byte* p = in.data();
  if (std::memcmp(p, kMagic, 8) != 0) return Status::Corruption("not a snapdisk pool (bad magic)");
  uint32_t version = Load32(p + 8);
  if (Load64(p + 504) != Checksum(std::span(p, 504))) {
    return Status::Corruption("superblock checksum mismatch");
  }
  if (version != kVersion) {
    return Status::Unsupported("pool format version " + std::to_string(version) +
                               " (this snapdisk reads version " + std::to_string(kVersion) + ")");
  }
  Superblock sb;
  sb.block_bytes = Load32(p + 12);
  sb.generation = Load64(p + 16);
  sb.pool_blocks = Load64(p + 24);
  sb.first_data_block = Load64(p + 32);
  sb.high_water = Load64(p + 40);
  sb.catalog_root = LoadMapEntry(p + 48);
  sb.catalog_height = static_cast<uint8_t>(p[64]);
  sb.space_map_height = static_cast<uint8_t>(p[65]);
  std::memcpy(&sb.space_map_top_count, p + 66, 2);
  sb.next_object_id = Load64(p + 72);
  sb.created_unix_ns = Load64(p + 80);
  sb.blocks_in_use = Load64(p + 88);
  for (int i = 0; i < kSpaceMapTopEntries; ++i) {
    sb.space_map_top[i] = LoadSpaceMapEntry(p + 96 + i * kSpaceMapEntryBytes);
  }
  if (!IsValidBlockSize(sb.block_bytes)) return Status::Corruption("superblock: bad block size");
  if (sb.space_map_top_count > kSpaceMapTopEntries || sb.space_map_height == 0 ||
      sb.space_map_height > kMaxTreeHeight || sb.catalog_height > kMaxTreeHeight ||
      sb.first_data_block >= sb.pool_blocks || sb.high_water < sb.first_data_block ||
      sb.high_water > sb.pool_blocks) {
    return Status::Corruption("superblock: fields out of range");
  }
  return sb;
}

Result<SpaceMapGeometry> ComputeSpaceMapGeometry(uint64_t pool_blocks, uint32_t block_bytes) {
  SpaceMapGeometry g;
  g.counts_per_leaf = block_bytes / 4;
  g.entries_per_dir = block_bytes / kSpaceMapEntryBytes;
  uint64_t count = (pool_blocks + g.counts_per_leaf - 1) / g.counts_per_leaf;
  int level = 0;
  uint64_t next_start = 2;  // after the two superblocks
  while (true) {
    if (level >= kMaxTreeHeight) return Status::InvalidArgument("pool too large");
    g.blocks_at_level[level] = count;
    g.region_start[level] = next_start;
    next_start += 2 * count;
    ++level;
    if (count <= static_cast<uint64_t>(kSpaceMapTopEntries)) break;
    count = (count + g.entries_per_dir - 1) / g.entries_per_dir;
  }
  g.height = level;
  g.first_data_block = next_start;
  // Room for the catalog and at least a handful of data blocks.
  if (pool_blocks < g.first_data_block + 16) {
    return Status::InvalidArgument("pool of " + std::to_string(pool_blocks) +
                                   " blocks is too small: its metadata needs " +
                                   std::to_string(g.first_data_block + 16));
  }
  return g;
}

}  // namespace snapdisk::format
