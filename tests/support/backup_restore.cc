#include "support/backup_restore.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "engine/aligned_buffer.h"
#include "engine/volume.h"

namespace snapdisk::testing {

Result<std::vector<BackupSet>> ResolveRestoreChain(WormStore& store, std::string_view id) {
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet target, FindBackupSet(store, id));
  if (target.type == BackupType::kLog) {
    return Status::Unsupported("set " + target.id + " is a log segment");
  }
  std::vector<BackupSet> chain = {target};
  while (chain.back().type == BackupType::kDiff || chain.back().type == BackupType::kIncr) {
    const BackupSet& at = chain.back();
    SNAPDISK_ASSIGN_OR_RETURN(BackupSet base, FindBackupSet(store, at.base));
    auto broken = [&](const std::string& why) {
      return Status::Corruption("chain of " + target.id + ": " + at.id + " on " + base.id + ": " +
                                why);
    };
    if (base.volume_id != at.volume_id || base.lineage != at.lineage) {
      return broken("another volume or lineage");
    }
    if (at.type == BackupType::kDiff && base.type != BackupType::kFull) {
      return broken("a diff's base is not a full");
    }
    if (base.type != BackupType::kFull && base.type != BackupType::kDiff &&
        base.type != BackupType::kIncr) {
      return broken("base is not a physical backup");
    }
    if (at.first_lsn != base.last_lsn + 1) return broken("LSNs do not follow on");
    chain.push_back(std::move(base));
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

Result<RestoreReport> RestoreBackupSet(WormStore& store, std::string_view id, Pool& pool,
                                       std::string_view new_volume) {
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupSet> chain, ResolveRestoreChain(store, id));
  SNAPDISK_RETURN_IF_ERROR(pool.CreateVolume(new_volume, chain.back().volume_size_bytes).status());
  SNAPDISK_ASSIGN_OR_RETURN(Volume * volume, pool.OpenVolume(new_volume));
  RestoreReport report;
  for (const BackupSet& set : chain) {
    report.sets.push_back(set.id);
    std::unordered_map<std::string, const ChunkInfo*> chunks;
    for (const ChunkInfo& c : set.chunks) chunks[c.hash] = &c;
    for (const ZeroExtent& z : set.zero_extents) {
      SNAPDISK_RETURN_IF_ERROR(volume->WriteZeroes(z.offset_bytes, z.length_bytes));
    }
    std::string cached_hash;
    std::vector<std::byte> cached;
    for (const ChunkExtent& x : set.extents) {
      if (x.chunk != cached_hash) {
        auto it = chunks.find(x.chunk);
        if (it == chunks.end()) {
          return Status::Corruption("set " + set.id + " uses chunk " + x.chunk +
                                    " it does not list");
        }
        SNAPDISK_ASSIGN_OR_RETURN(cached, ReadChunk(store, *it->second, "set " + set.id));
        cached_hash = x.chunk;
        ++report.chunks_read;
      }
      SNAPDISK_RETURN_IF_ERROR(volume->Write(
          x.offset_bytes,
          std::span<const std::byte>(cached.data() + x.chunk_offset_bytes, x.length_bytes)));
      report.bytes_written += x.length_bytes;
    }
  }
  SNAPDISK_RETURN_IF_ERROR(volume->Flush());
  return report;
}

std::string CompareVolumes(Volume& a, Volume& b) {
  if (a.size_bytes() != b.size_bytes()) {
    return "sizes differ: " + std::to_string(a.size_bytes()) + " vs " +
           std::to_string(b.size_bytes());
  }
  // Only ranges where either side holds data need reading: holes read as
  // zeros on both sides (and a 20 GiB thin volume compares in milliseconds).
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end)
  for (Volume* v : {&a, &b}) {
    Result<std::vector<Extent>> map = v->MapExtents(0, v->size_bytes());
    if (!map.ok()) return "mapping " + v->name() + " failed: " + map.status().ToString();
    for (const Extent& e : *map) {
      if (!e.zero) ranges.emplace_back(e.offset_bytes, e.offset_bytes + e.length_bytes);
    }
  }
  std::sort(ranges.begin(), ranges.end());
  constexpr uint64_t kStep = uint64_t{1} << 20;
  AlignedBuffer x(kStep), y(kStep);  // pools on O_DIRECT devices take aligned buffers only
  uint64_t done_through = 0;
  for (auto [begin, end] : ranges) {
    begin = std::max(begin, done_through);
    for (uint64_t off = begin; off < end; off += kStep) {
      const uint64_t n = std::min(kStep, end - off);
      Status sa = a.Read(off, std::span<std::byte>(x.data(), n));
      if (!sa.ok()) return "read of " + a.name() + " failed: " + sa.ToString();
      Status sb = b.Read(off, std::span<std::byte>(y.data(), n));
      if (!sb.ok()) return "read of " + b.name() + " failed: " + sb.ToString();
      if (std::memcmp(x.data(), y.data(), n) != 0) {
        uint64_t i = 0;
        while (x.data()[i] == y.data()[i]) ++i;
        return a.name() + " and " + b.name() + " differ at byte " + std::to_string(off + i);
      }
    }
    done_through = std::max(done_through, end);
  }
  return "";
}

}  // namespace snapdisk::testing
