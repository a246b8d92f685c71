#include "engine/fsck.h"

#include <string>

#include "engine/hydration_map.h"

namespace snapdisk {

using format::MapEntry;

std::string FsckReport::ToString() const {
  std::string out = "generation " + std::to_string(generation) + ": " + std::to_string(map_nodes) +
                    " map nodes, " + std::to_string(data_blocks) + " data blocks, " +
                    std::to_string(catalog_blocks) + " catalog blocks, " +
                    std::to_string(blocks_in_use) + " blocks in use; " +
                    (problems.empty() ? "clean" : std::to_string(problems.size()) + " problems");
  for (const FsckProblem& p : problems) {
    out += "\n  " + p.kind + " at block " + std::to_string(p.block) + ": " + p.detail;
  }
  return out;
}

std::string ScrubReport::ToString() const {
  std::string out = std::to_string(blocks_read) + " blocks read; " +
                    (problems.empty() ? "no bad blocks" : std::to_string(problems.size()) + " bad");
  for (const ScrubProblem& p : problems) {
    out += "\n  " + p.volume + (p.snapshot.empty() ? "" : "@" + p.snapshot) + " offset " +
           std::to_string(p.offset_bytes) + " (block " + std::to_string(p.block) + "): " + p.detail;
  }
  return out;
}

Result<FsckReport> Fsck::Check(Pool& pool, const CheckProgress& progress) {
  SNAPDISK_RETURN_IF_ERROR(pool.Commit());
  pool.cache_->Clear();  // re-read (and so re-verify) everything from the device
  SpaceMap& space = *pool.space_;
  BlockMap& map = *pool.map_;
  const uint32_t block_bytes = pool.block_bytes_;
  const uint64_t first = space.first_data_block();
  const uint64_t end = space.high_water();
  FsckReport report;
  report.generation = pool.sb_.generation;
  for (const std::string& w : pool.open_warnings_) report.problems.push_back({"superblock", 0, w});
  std::vector<uint32_t> expected(end - first, 0);
  std::vector<uint8_t> is_node(end - first, 0);
  uint64_t visited = 0;
  const uint64_t total = space.blocks_in_use();

  auto count_ref = [&](int level, const MapEntry& ref) -> bool {
    if (ref.pbn < first || ref.pbn >= end) {
      report.problems.push_back({"range", ref.pbn, "pointer outside the allocated area"});
      return false;
    }
    const uint64_t i = ref.pbn - first;
    const bool first_visit = expected[i]++ == 0;
    if (first_visit) {
      ++visited;
      if (progress && visited % 65536 == 0) progress(visited, total);
      if (level >= 0) {
        is_node[i] = 1;
        ++report.map_nodes;
      } else {
        ++report.data_blocks;
      }
    }
    return first_visit;
  };
  auto walk = [&](const TreeRoot& root, const std::string& what) -> Status {
    Status s = map.VisitRefs(root, count_ref);
    if (s.IsCorruption()) {
      report.problems.push_back({"checksum", 0, what + ": " + s.message()});
      return Status::OK();
    }
    return s;
  };

  // The catalog tree, and its data blocks' checksums.
  SNAPDISK_RETURN_IF_ERROR(walk(pool.catalog_root_, "catalog"));
  AlignedBuffer block(block_bytes);
  Status cat = map.ForEachData(pool.catalog_root_, [&](uint64_t vbn, const MapEntry& e) {
    ++report.catalog_blocks;
    SNAPDISK_RETURN_IF_ERROR(pool.device_.Read(e.pbn * block_bytes, block.span()));
    if (format::Checksum(block.span()) != e.checksum) {
      report.problems.push_back({"checksum", e.pbn, "catalog block " + std::to_string(vbn)});
    }
    return Status::OK();
  });
  if (!cat.ok() && !cat.IsCorruption()) return cat;
  report.data_blocks -= report.catalog_blocks;  // counted as data by the walk

  for (const Pool::Record& r : pool.records_) {
    if (r.id == 0) continue;
    static constexpr const char* kLabels[] = {"",           "volume ",    "snapshot ",
                                              "attribute ", "write log ", "hydration map "};
    SNAPDISK_RETURN_IF_ERROR(walk(r.root, kLabels[static_cast<int>(r.kind)] + r.name));
  }

  // Hydration maps: ranges inside their volume, bitmap bits only inside the
  // ranges, and the pending count the record holds.
  for (size_t slot = 0; slot < pool.records_.size(); ++slot) {
    const Pool::Record& r = pool.records_[slot];
    if (r.id == 0 || r.kind != Pool::Kind::kHydration) continue;
    PendingRanges pending;
    Status s = pool.ReadHydrationMap(slot, &pending);
    if (s.IsCorruption()) {
      report.problems.push_back({"hydration", r.root.entry.pbn, s.message()});
    } else if (!s.ok()) {
      return s;
    }
  }

  uint64_t in_use = 0;
  for (uint64_t pbn = first; pbn < space.pool_blocks(); ++pbn) {
    auto count = space.Get(pbn);
    if (!count.ok()) {
      if (!count.status().IsCorruption()) return count.status();
      report.problems.push_back({"checksum", pbn, count.status().message()});
      pbn = (pbn / (block_bytes / 4) + 1) * (block_bytes / 4) - 1;  // skip the bad leaf
      continue;
    }
    const uint32_t want = pbn < end ? expected[pbn - first] : 0;
    in_use += *count > 0;
    if (*count == want) continue;
    if (want == 0) {
      report.problems.push_back(
          {"leak", pbn, "reference count " + std::to_string(*count) + " but nothing points at it"});
    } else {
      report.problems.push_back({"refcount", pbn,
                                 "reference count " + std::to_string(*count) + ", pointers " +
                                     std::to_string(want) +
                                     (is_node[pbn - first] ? " (map node)" : "")});
    }
    if (report.problems.size() > 1000) break;
  }
  report.blocks_in_use = in_use;
  if (in_use != pool.sb_.blocks_in_use) {
    report.problems.push_back({"superblock", 0,
                               "superblock says " + std::to_string(pool.sb_.blocks_in_use) +
                                   " blocks in use, counts say " + std::to_string(in_use)});
  }
  pool.cache_->Trim();
  if (progress) progress(total, total);
  return report;
}

Result<ScrubReport> Fsck::Scrub(Pool& pool, const CheckProgress& progress) {
  SNAPDISK_RETURN_IF_ERROR(pool.CheckHealthy());
  BlockMap& map = *pool.map_;
  SpaceMap& space = *pool.space_;
  const uint32_t block_bytes = pool.block_bytes_;
  const uint64_t first = space.first_data_block();
  // 0 unknown, 1 good, 2 bad (checksum), 3 unreadable.
  std::vector<uint8_t> state(space.high_water() - first, 0);
  ScrubReport report;
  AlignedBuffer block(block_bytes);
  const uint64_t total = space.blocks_in_use();
  for (const Pool::Record& r : pool.records_) {
    if (r.id == 0) continue;
    std::string volume = r.name, snapshot;
    if (r.kind != Pool::Kind::kVolume) {  // a snapshot, attribute or write log of a volume
      auto vol = pool.slot_by_id_.find(r.parent_id);
      volume = vol == pool.slot_by_id_.end() ? "?" : pool.records_[vol->second].name;
      snapshot = r.kind == Pool::Kind::kSnapshot ? r.name : "(" + r.name + ")";
    }
    Status s = map.ForEachData(r.root, [&](uint64_t vbn, const MapEntry& e) -> Status {
      if (e.pbn < first || e.pbn - first >= state.size()) {
        report.problems.push_back(
            {volume, snapshot, vbn * block_bytes, e.pbn, "pointer outside the pool"});
        return Status::OK();
      }
      uint8_t& st = state[e.pbn - first];
      if (st == 0) {
        Status read = pool.device_.Read(e.pbn * block_bytes, block.span());
        ++report.blocks_read;
        report.bytes_read += block_bytes;
        if (progress && report.blocks_read % 16384 == 0) progress(report.blocks_read, total);
        st = !read.ok() ? 3 : format::Checksum(block.span()) == e.checksum ? 1 : 2;
      }
      if (st >= 2) {
        report.problems.push_back({volume, snapshot, vbn * block_bytes, e.pbn,
                                   st == 2 ? "checksum mismatch" : "read error"});
      }
      return Status::OK();
    });
    if (s.IsCorruption()) {
      report.problems.push_back({volume, snapshot, 0, 0, "map: " + s.message()});
    } else if (!s.ok()) {
      return s;
    }
    pool.cache_->Trim();
  }
  if (progress) progress(report.blocks_read, total);
  return report;
}

}  // namespace snapdisk
