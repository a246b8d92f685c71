// Fault tolerance of the engine beyond power loss:
//  - bit rot: one flipped bit in every block the pool has ever allocated, one
//    block at a time, must be detected wherever it matters (reads of what the
//    block holds fail with Corruption, never return wrong bytes; Scrub reports
//    data blocks, Fsck::Check metadata blocks, Open refuses a bad catalog) and
//    be harmless where it does not (free blocks, stale copies); a flip on the
//    read path (FaultAction::kReadBitFlip) is caught too;
//  - EIO and ENOSPC countdowns: the N-th device op fails (from then on, or
//    just once), for every N of fixed and seeded workloads; every call returns
//    a Status, a failed pool refuses everything with IOError, a pool that
//    carries on serves exactly the model with no leak, and the surviving image
//    reopens clean with everything committed intact; a read error on a
//    superblock never rolls the pool back;
//  - pool full: NoSpace is clean and only when the pool is really full, the
//    pool stays usable, and freeing space (delete a snapshot, trim, flush)
//    makes room again, also after reopening a pool full on disk.
//
// Repeat with --seed N; raise the sizes with --scale N.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "disk/fault_device.h"
#include "disk/memory_device.h"
#include "engine/fsck.h"
#include "engine/pool.h"
#include "support/crash_oracle.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::CheckRecovered;
using testing::CrashOracle;
using testing::Image;
using testing::ImagePtr;
using testing::MakeDevice;
using testing::ModelState;
using testing::OpKind;
using testing::WorkloadOp;
using testing::WorkloadSpec;

constexpr uint64_t kMiB = uint64_t{1} << 20;

PoolOptions Options(uint32_t block_bytes, uint64_t cache_bytes = uint64_t{256} << 20) {
  PoolOptions o;
  o.block_bytes = block_bytes;
  o.cache_bytes = cache_bytes;
  o.wall_clock_ns = &testing::FixedWallClockNs;
  return o;
}

WorkloadOp Op(OpKind kind, std::string volume, uint64_t offset = 0, uint64_t length = 0,
              std::string snapshot = "", std::string target = "") {
  WorkloadOp op;
  op.kind = kind;
  op.volume = std::move(volume);
  op.offset = offset;
  op.length = length;
  op.snapshot = std::move(snapshot);
  op.target = std::move(target);
  op.data_seed = offset * 131 + length * 7 + op.volume.size();
  return op;
}

// ============================================================================
// Bit rot
// ============================================================================

// A pool with a two-level volume, a small volume with a partial last block,
// snapshots, a written clone, and an untouched clone ("view") of every
// snapshot so that snapshot contents can be read without changing the pool.
std::vector<WorkloadOp> BitRotSetup(uint32_t bs) {
  const uint64_t fanout = bs / 16;
  const uint64_t big = fanout * bs + 2 * bs;  // needs two map levels
  std::vector<WorkloadOp> ops = {
      Op(OpKind::kCreateVolume, "big", 0, big),
      Op(OpKind::kCreateVolume, "small", 0, 24 * bs + 512),
      Op(OpKind::kWrite, "big", 0, 4 * bs),
      Op(OpKind::kWrite, "big", 100 * bs, 2 * bs),
      Op(OpKind::kWrite, "big", (fanout - 1) * bs, 3 * bs),  // across the first leaf's end
      Op(OpKind::kWrite, "big", big - bs, bs),
      Op(OpKind::kWrite, "big", 5000, 3000),
      Op(OpKind::kWrite, "small", 0, 3 * bs),
      Op(OpKind::kWrite, "small", 24 * bs, 512),  // the partial last block
      Op(OpKind::kFlush, "big"),
      Op(OpKind::kCreateSnapshot, "big", 0, 0, "s1"),
      Op(OpKind::kCreateSnapshot, "small", 0, 0, "s1"),
      Op(OpKind::kWrite, "big", 0, 2 * bs),
      Op(OpKind::kWrite, "big", fanout * bs, bs),
      Op(OpKind::kTrim, "big", 100 * bs, 2 * bs),
      Op(OpKind::kWrite, "small", 2 * bs, 100),
      Op(OpKind::kCreateSnapshot, "big", 0, 0, "s2"),
      Op(OpKind::kClone, "big", 0, 0, "s1", "c1"),
      Op(OpKind::kWrite, "c1", 3 * bs, bs),
      Op(OpKind::kWrite, "c1", (fanout + 1) * bs, bs),
      Op(OpKind::kClone, "big", 0, 0, "s1", "view-big-s1"),
      Op(OpKind::kClone, "big", 0, 0, "s2", "view-big-s2"),
      Op(OpKind::kClone, "small", 0, 0, "s1", "view-small-s1"),
      Op(OpKind::kWrite, "big", 3 * bs, bs),
      Op(OpKind::kFlush, "big"),
  };
  return ops;
}

struct RotOutcome {
  Status open;  // Pool::Open
  uint64_t generation = 0;
  std::map<std::string, std::set<uint64_t>> corrupt;  // volume -> VBNs reading Corruption
  std::vector<std::string> wrong;  // reads that returned wrong bytes, other errors
  std::optional<FsckReport> fsck;
  std::optional<ScrubReport> scrub;
  std::vector<std::string> catalog_diff;
  std::vector<std::string> warnings;  // PoolInfo::warnings after Open
};

// Opens the pool and reads everything through the public API, without
// changing it (no clones, no writes: the destructor's commit has nothing to do).
RotOutcome ReadEverything(BlockDevice& dev, const PoolOptions& options, const ModelState& model) {
  RotOutcome out;
  auto opened = Pool::Open(dev, options);
  if (!opened.ok()) {
    out.open = opened.status();
    return out;
  }
  std::unique_ptr<Pool> pool = std::move(opened).value();
  out.generation = pool->Info().generation;
  out.warnings = pool->Info().warnings;
  const uint32_t bs = pool->block_bytes();
  std::set<std::string> seen;
  // Reads `name` in chunks; a chunk failing with Corruption is read again
  // block by block to find exactly which blocks fail.
  auto read_range = [&](const std::string& name, Volume& v, const Image& want) {
    const uint64_t chunk = 16 * uint64_t{bs};
    for (uint64_t off = 0; off < want.size(); off += chunk) {
      const uint64_t len = std::min<uint64_t>(chunk, want.size() - off);
      Image got(len);
      Status s = v.Read(off, got);
      if (s.ok()) {
        if (!std::equal(got.begin(), got.end(), want.begin() + off)) {
          out.wrong.push_back(name + " [" + std::to_string(off) + ", +" + std::to_string(len) +
                              ") read OK with WRONG BYTES");
        }
        continue;
      }
      if (!s.IsCorruption()) {
        out.wrong.push_back(name + " read at " + std::to_string(off) + ": " + s.ToString() +
                            " (expected Corruption)");
        continue;
      }
      for (uint64_t b = off; b < off + len; b += bs) {
        const uint64_t blen = std::min<uint64_t>(bs, want.size() - b);
        Image one(blen);
        Status sb = v.Read(b, one);
        if (sb.IsCorruption()) {
          out.corrupt[name].insert(b / bs);
        } else if (!sb.ok()) {
          out.wrong.push_back(name + " read at " + std::to_string(b) + ": " + sb.ToString());
        } else if (!std::equal(one.begin(), one.end(), want.begin() + b)) {
          out.wrong.push_back(name + " block at " + std::to_string(b) +
                              " read OK with WRONG BYTES");
        }
      }
    }
  };
  for (const VolumeInfo& info : pool->ListVolumes()) {
    seen.insert(info.name);
    auto it = model.volumes.find(info.name);
    if (it == model.volumes.end() || it->second->size() != info.size_bytes) {
      out.catalog_diff.push_back("unexpected volume " + info.name);
      continue;
    }
    read_range(info.name, **pool->OpenVolume(info.name), *it->second);
  }
  // Snapshots, directly through read-only handles (Pool::OpenSnapshot).
  for (const auto& [key, img] : model.snapshots) {
    const size_t at = key.find('@');
    auto snap = pool->OpenSnapshot(key.substr(0, at), key.substr(at + 1));
    if (!snap.ok()) {
      out.catalog_diff.push_back("snapshot " + key + ": " + snap.status().ToString());
      continue;
    }
    read_range(key, **snap, *img);
  }
  for (const auto& [name, img] : model.volumes) {
    if (!seen.count(name)) out.catalog_diff.push_back("volume " + name + " missing");
  }
  auto fsck = Fsck::Check(*pool);
  if (fsck.ok()) {
    out.fsck = *fsck;
  } else {
    out.wrong.push_back("Fsck::Check could not run: " + fsck.status().ToString());
  }
  auto scrub = Fsck::Scrub(*pool);
  if (scrub.ok()) {
    out.scrub = *scrub;
  } else {
    out.wrong.push_back("Fsck::Scrub could not run: " + scrub.status().ToString());
  }
  return out;
}

// The VBNs a flipped block must make unreadable: every range of every volume
// and snapshot whose tree points through it (snapshots are read directly
// through read-only handles, and through their views: clones sharing their
// trees).
std::map<std::string, std::set<uint64_t>> ExpectedCorrupt(const testing::PoolLayout& layout,
                                                          uint64_t pbn, const ModelState& model,
                                                          uint32_t bs) {
  std::map<std::string, std::set<uint64_t>> out;
  auto it = layout.owners.find(pbn);
  if (it == layout.owners.end()) return out;
  for (const testing::LayoutOwner& o : it->second) {
    // A volume's write log shares its data blocks, but no read goes through it.
    if (o.kind != 1 && o.kind != 2) continue;
    const ImagePtr& img = o.is_volume ? model.volumes.at(o.record) : model.snapshots.at(o.record);
    const uint64_t blocks = (img->size() + bs - 1) / bs;
    for (uint64_t v = o.first_vbn; v < std::min(blocks, o.first_vbn + o.vbn_count); ++v) {
      out[o.record].insert(v);
    }
  }
  return out;
}

std::string SetToString(const std::map<std::string, std::set<uint64_t>>& m) {
  std::string out;
  for (const auto& [name, vbns] : m) {
    out += name + ":{";
    int n = 0;
    for (uint64_t v : vbns) {
      if (n++ == 12) {
        out += "...(" + std::to_string(vbns.size()) + ")";
        break;
      }
      out += std::to_string(v) + " ";
    }
    out += "} ";
  }
  return out.empty() ? "{}" : out;
}

void RunBitRot(uint32_t bs, uint32_t sector, uint64_t device_bytes, uint64_t seed) {
  SCOPED_TRACE("block " + std::to_string(bs) + ", sector " + std::to_string(sector));
  auto dev = MakeDevice(device_bytes, sector);
  FaultDeviceOptions fo;
  fo.seed = seed;
  fo.model_power_loss = false;
  FaultDevice fault(*dev, fo);
  const PoolOptions options = Options(bs);
  CrashOracle oracle;
  {
    auto pool = testing::MustCreatePool(fault, options);
    std::vector<Status> statuses;
    testing::RunWorkload(*pool, BitRotSetup(bs), &oracle, &statuses);
    for (const Status& s : statuses) ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(pool->Close().ok());
  }
  const ModelState& model = oracle.live();

  // The format walker must agree with the engine before any flip.
  auto scanned = testing::ScanLayout(*dev, /*verify_data=*/true);
  ASSERT_TRUE(scanned.ok()) << scanned.status().ToString();
  const testing::PoolLayout layout = *scanned;
  for (const std::string& p : layout.problems) ADD_FAILURE() << "format walk: " << p;
  {
    RotOutcome clean = ReadEverything(fault, options, model);
    ASSERT_TRUE(clean.open.ok()) << clean.open.ToString();
    ASSERT_TRUE(clean.wrong.empty()) << clean.wrong.front();
    ASSERT_TRUE(clean.corrupt.empty()) << SetToString(clean.corrupt);
    ASSERT_TRUE(clean.fsck && clean.fsck->clean()) << (clean.fsck ? clean.fsck->ToString() : "");
    ASSERT_TRUE(clean.scrub && clean.scrub->clean())
        << (clean.scrub ? clean.scrub->ToString() : "");
    ASSERT_EQ(clean.generation, layout.generation);
  }
  const uint64_t image_bytes = layout.high_water * bs;
  Image pristine(image_bytes);
  ASSERT_TRUE(dev->Read(0, pristine).ok());

  std::mt19937_64 rng(seed);
  std::map<std::string, uint64_t> checked, detected;
  uint64_t harmless = 0, superblock_fallbacks = 0, failures = 0;
  std::string superblock_note;
  auto fail = [&](const std::string& msg) {
    if (++failures <= 12) ADD_FAILURE() << msg;
  };
  // Sanitized builds (~15x slower) flip every metadata block but only one
  // data or unused block in 8 (which ones moves with the seed); the release
  // run flips every block.
  const uint64_t bulk_stride = testing::BuiltWithSanitizers() ? 8 : 1;
  for (uint64_t pbn = 0; pbn < layout.high_water; ++pbn) {
    auto live = layout.live.find(pbn);
    const std::string role =
        live == layout.live.end() ? "unused" : testing::BlockRoleName(live->second);
    const bool is_superblock =
        live != layout.live.end() && live->second == testing::BlockRole::kSuperblock;
    const uint64_t in_block = is_superblock ? rng() % format::kSuperblockBytes : rng() % bs;
    const uint32_t bit = static_cast<uint32_t>(rng() % 8);
    const bool bulk = live == layout.live.end() || live->second == testing::BlockRole::kData;
    if (bulk && pbn % bulk_stride != seed % bulk_stride) continue;
    const uint64_t offset = pbn * bs + in_block;
    const std::string where = role + " block " + std::to_string(pbn) + " (byte " +
                              std::to_string(in_block) + " bit " + std::to_string(bit) + ")";
    ASSERT_TRUE(fault.FlipBitAtRest(offset, bit).ok());
    RotOutcome got = ReadEverything(fault, options, model);
    ASSERT_TRUE(fault.FlipBitAtRest(offset, bit).ok());  // flip back
    ++checked[role];

    for (const std::string& w : got.wrong) fail(where + ": " + w);
    const bool fsck_found = got.fsck && !got.fsck->clean();
    const bool scrub_found = got.scrub && !got.scrub->clean();
    bool found = !got.open.ok() || !got.corrupt.empty() || fsck_found || scrub_found;
    if (!got.open.ok() && !got.open.IsCorruption()) {
      fail(where + ": Open failed with " + got.open.ToString() + " (expected Corruption)");
    }
    if (live == layout.live.end()) {
      // Unused (free, or a stale copy): harmless, and nothing to report.
      if (found || !got.catalog_diff.empty() || got.generation != layout.generation) {
        fail(where + ": a flip in an unused block changed something: open " + got.open.ToString() +
             ", corrupt " + SetToString(got.corrupt) +
             (got.fsck ? ", fsck " + got.fsck->ToString() : "") +
             (got.scrub ? ", scrub " + got.scrub->ToString() : ""));
      }
      ++harmless;
      continue;
    }
    switch (live->second) {
      case testing::BlockRole::kData:
      case testing::BlockRole::kMapNode: {
        if (!got.open.ok()) {
          fail(where + ": Open refused the pool for a " + role + " flip: " + got.open.ToString());
          break;
        }
        const auto want = ExpectedCorrupt(layout, pbn, model, bs);
        if (got.corrupt != want) {
          fail(where + ": reads failing with Corruption " + SetToString(got.corrupt) +
               ", expected exactly " + SetToString(want));
        }
        if (live->second == testing::BlockRole::kData) {
          // Scrub names the block once for every volume/snapshot holding it.
          size_t owners = layout.owners.at(pbn).size(), named = 0;
          for (const ScrubProblem& p :
               got.scrub ? got.scrub->problems : std::vector<ScrubProblem>{}) {
            named += p.block == pbn;
          }
          if (named != owners) {
            fail(where + ": Scrub named the block " + std::to_string(named) + " times, " +
                 std::to_string(owners) +
                 " trees hold it: " + (got.scrub ? got.scrub->ToString() : ""));
          }
        } else if (!fsck_found) {
          fail(where + ": Fsck::Check did not report the bad map node");
        }
        break;
      }
      case testing::BlockRole::kSpaceMap:
        if (!got.open.ok() || !got.corrupt.empty()) {
          fail(where + ": a space-map flip must not stop Open or reads: open " +
               got.open.ToString() + ", corrupt " + SetToString(got.corrupt));
        }
        if (!fsck_found) fail(where + ": Fsck::Check did not report the bad space-map block");
        break;
      case testing::BlockRole::kCatalogNode:
      case testing::BlockRole::kCatalogData:
        if (got.open.ok()) fail(where + ": Open accepted a catalog with a flipped bit");
        break;
      case testing::BlockRole::kSuperblock:
        superblock_note = got.open.ok() ? "opened at generation " + std::to_string(got.generation)
                                        : got.open.ToString();
        // FORMAT.md: Open takes the valid slot with the higher generation,
        // so a bad current superblock falls back to the previous commit.
        if (got.open.ok()) {
          ++superblock_fallbacks;
          if (got.generation + 1 != layout.generation) {
            fail(where + ": opened at generation " + std::to_string(got.generation) +
                 ", expected the fallback to " + std::to_string(layout.generation - 1));
          }
          if (!found && got.catalog_diff.empty() && got.warnings.empty()) {
            fail(where + ": the current superblock was damaged and nothing noticed");
          }
          found = true;  // detected as far as the format allows (see the report)
        }
        break;
    }
    if (found) ++detected[role];
    Image now(image_bytes);
    ASSERT_TRUE(dev->Read(0, now).ok());
    ASSERT_TRUE(now == pristine) << where << ": reading the pool changed the image";
  }
  uint64_t total = 0, live_total = 0, live_found = 0;
  std::string by_role;
  for (const auto& [role, n] : checked) {
    total += n;
    if (role != "unused") {
      live_total += n;
      live_found += detected[role];
    }
    by_role += " " + role + " " + std::to_string(detected[role]) + "/" + std::to_string(n);
  }
  std::printf(
      "[bitrot] block %u sector %u: %llu blocks flipped (every allocated block), %llu holding "
      "data or metadata, %llu of them detected; %llu unused blocks harmless; superblock "
      "fallbacks %llu; detected/checked by role:%s; current superblock flipped: %s\n",
      bs, sector, static_cast<unsigned long long>(total),
      static_cast<unsigned long long>(live_total), static_cast<unsigned long long>(live_found),
      static_cast<unsigned long long>(harmless),
      static_cast<unsigned long long>(superblock_fallbacks), by_role.c_str(),
      superblock_note.c_str());
  std::fflush(stdout);
  EXPECT_EQ(live_found, live_total);
  EXPECT_EQ(failures, 0u);
}

TEST(EngineFaultTest, BitRotInEveryBlockIsDetectedNeverReturned) {
  const uint64_t seed = testing::TestSeed(4242);
  RunBitRot(4096, 4096, 128 * kMiB, seed);  // 32 space-map leaves: a directory level too
  RunBitRot(8192, 512, 32 * kMiB, seed + 1);
}

// A bit flipped on the read path (the stored data is good) is caught on data
// reads, map-node reads and the read half of a read-modify-write, and a retry
// reads the good data.
TEST(EngineFaultTest, ReadPathBitFlipIsCaught) {
  const uint64_t seed = testing::TestSeed(99);
  const uint32_t bs = 4096;
  auto dev = MakeDevice(32 * kMiB, 4096);
  FaultDeviceOptions fo;
  fo.seed = seed;
  fo.model_power_loss = false;
  FaultDevice fault(*dev, fo);
  const PoolOptions options = Options(bs);
  CrashOracle oracle;
  {
    auto pool = testing::MustCreatePool(fault, options);
    std::vector<Status> statuses;
    testing::RunWorkload(*pool, BitRotSetup(bs), &oracle, &statuses);
    for (const Status& s : statuses) ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(pool->Close().ok());
  }
  const ModelState& model = oracle.live();
  auto scanned = testing::ScanLayout(*dev);
  ASSERT_TRUE(scanned.ok());
  const testing::PoolLayout& layout = *scanned;

  uint64_t caught = 0, tried = 0;
  for (const auto& [pbn, owners] : layout.owners) {
    const testing::LayoutOwner* vol_owner = nullptr;
    for (const auto& o : owners) {
      if (o.is_volume) vol_owner = &o;
    }
    if (vol_owner == nullptr) continue;
    const Image& want = *model.volumes.at(vol_owner->record);
    const uint64_t off = vol_owner->first_vbn * bs;
    const uint64_t len = std::min<uint64_t>(bs, want.size() - off);
    // A fresh pool each time: the map nodes are not cached yet.
    auto pool = testing::MustOpenPool(fault, options);
    Volume* v = *pool->OpenVolume(vol_owner->record);
    FaultRule rule;
    rule.action = FaultAction::kReadBitFlip;
    rule.op = IoOp::kRead;
    rule.range = ByteRange{pbn * bs, bs};
    auto id = fault.AddRule(rule);
    ASSERT_TRUE(id.ok());
    Image got(len);
    Status s = v->Read(off, got);
    ++tried;
    EXPECT_TRUE(s.IsCorruption()) << "block " << pbn << " ("
                                  << (vol_owner->level < 0 ? "data" : "map node") << " of "
                                  << vol_owner->record << " at VBN " << vol_owner->first_vbn
                                  << "): a flipped read returned " << s.ToString();
    caught += s.IsCorruption();
    // The rule is spent: the retry reads the good copy.
    s = v->Read(off, got);
    EXPECT_TRUE(s.ok()) << s.ToString();
    EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin() + off));
    (void)fault.RemoveRule(*id);  // spent already
    EXPECT_TRUE(pool->health().ok());
  }
  std::printf("[bitrot] read-path flips: %llu of %llu caught\n",
              static_cast<unsigned long long>(caught), static_cast<unsigned long long>(tried));
  EXPECT_GT(tried, 10u);

  // Read-modify-write: the edge block's read is flipped; the write must fail
  // with Corruption and leave the old data.
  {
    auto pool = testing::MustOpenPool(fault, options);
    Volume* v = *pool->OpenVolume("big");
    const uint64_t vbn = 1;
    uint64_t pbn = 0;
    for (const auto& [p, owners] : layout.owners) {
      for (const auto& o : owners) {
        if (o.record == "big" && o.level < 0 && o.first_vbn == vbn) pbn = p;
      }
    }
    ASSERT_NE(pbn, 0u);
    FaultRule rule;
    rule.action = FaultAction::kReadBitFlip;
    rule.op = IoOp::kRead;
    rule.range = ByteRange{pbn * bs, bs};
    ASSERT_TRUE(fault.AddRule(rule).ok());
    Image data = testing::PatternBytes(5, 100);
    Status s = v->Write(vbn * bs + 10, data);
    EXPECT_TRUE(s.IsCorruption()) << "read-modify-write over a flipped read: " << s.ToString();
    Image got(bs);
    ASSERT_TRUE(v->Read(vbn * bs, got).ok());
    const Image& want = *model.volumes.at("big");
    EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin() + vbn * bs))
        << "a failed read-modify-write changed the block";
    // Scrub over a flipped read names the block.
    ASSERT_TRUE(fault.AddRule(rule).ok());
    auto scrub = Fsck::Scrub(*pool);
    ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
    bool named = false;
    for (const ScrubProblem& p : scrub->problems) named = named || p.block == pbn;
    EXPECT_TRUE(named) << scrub->ToString();
    fault.ClearRules();
  }
}

// ============================================================================
// EIO / ENOSPC countdown
// ============================================================================

std::vector<WorkloadOp> CountdownWorkload(uint32_t bs) {
  return {
      Op(OpKind::kCreateVolume, "a", 0, 32 * bs + 512),
      Op(OpKind::kCreateVolume, "b", 0, 16 * bs),
      Op(OpKind::kWrite, "a", 0, 4 * bs),
      Op(OpKind::kWrite, "a", 10 * bs + 100, 2 * bs),
      Op(OpKind::kWrite, "b", 0, 2 * bs),
      Op(OpKind::kFlush, "a"),
      Op(OpKind::kCreateSnapshot, "a", 0, 0, "s1"),
      Op(OpKind::kWrite, "a", bs, 2 * bs),
      Op(OpKind::kTrim, "a", 10 * bs, bs),
      Op(OpKind::kCommit, ""),
      Op(OpKind::kClone, "a", 0, 0, "s1", "c"),
      Op(OpKind::kWrite, "c", 0, bs),
      Op(OpKind::kWrite, "a", 32 * bs, 512),
      Op(OpKind::kFlush, "c"),
      Op(OpKind::kCreateSnapshot, "b", 0, 0, "s2"),
      Op(OpKind::kWrite, "b", bs, 3 * bs),
      Op(OpKind::kDeleteSnapshot, "a", 0, 0, "s1"),
      Op(OpKind::kDeleteVolume, "c"),
      Op(OpKind::kGrow, "b", 0, 40 * bs),
      Op(OpKind::kWrite, "b", 39 * bs, bs),
      Op(OpKind::kFlush, "b"),
      Op(OpKind::kRollback, "b", 0, 0, "s2"),
      Op(OpKind::kWrite, "a", 5 * bs, 3000),
      Op(OpKind::kFlush, "a"),
  };
}

// kIOError: op N and every later op fail (a dead disk). kTransient: only op
// N fails, the pool carries on. kNoSpace: writes fail once N bytes are written.
enum class Countdown { kIOError, kTransient, kNoSpace };

const char* CountdownName(Countdown mode) {
  switch (mode) {
    case Countdown::kIOError:
      return "EIO from device op ";
    case Countdown::kTransient:
      return "one EIO at device op ";
    case Countdown::kNoSpace:
      return "ENOSPC after bytes ";
  }
  return "?";
}

struct CountdownStats {
  uint64_t runs = 0, failures = 0, pool_failed = 0, first_error_code_ok = 0;
  std::map<std::string, uint64_t> kinds;  // violation kinds (message prefixes) -> runs
  std::string Kinds() const {
    std::string out;
    for (const auto& [k, n] : kinds) out += "\n    " + std::to_string(n) + " x " + k;
    return out;
  }
};

// One run with the fault armed at device op `n` (IOError: that op and every
// later one fail; NoSpace: writes fail once the bytes written reach `n`).
// The workloads the countdowns run: a fixed one per block size, and seeded
// ones (with concurrent requests, reopens, small caches).
struct CountdownCase {
  WorkloadSpec spec;
  std::vector<WorkloadOp> ops;
};

std::vector<CountdownCase> CountdownCases() {
  std::vector<CountdownCase> out;
  for (uint32_t bs : {4096u, 8192u}) {
    CountdownCase c;
    c.spec.block_bytes = bs;
    c.ops = CountdownWorkload(bs);
    out.push_back(std::move(c));
  }
  const uint64_t seed = testing::TestSeed(515);
  for (uint64_t i = 0; i < 3 * testing::TestScale(); ++i) {
    CountdownCase c;
    c.spec.seed = seed + i;
    c.spec.block_bytes = i % 3 == 2 ? 65536 : 4096;
    c.spec.cache_bytes = i % 3 == 1 ? 16 * uint64_t{c.spec.block_bytes} : uint64_t{256} << 20;
    c.spec.ops = 30;
    c.ops = testing::GenerateWorkload(c.spec);
    out.push_back(std::move(c));
  }
  return out;
}

void CountdownRun(const WorkloadSpec& spec, const std::vector<WorkloadOp>& ops, Countdown mode,
                  uint64_t n, CountdownStats* stats) {
  const PoolOptions options = spec.pool_options();
  auto dev = MakeDevice(spec.device_bytes, spec.sector_bytes);
  CrashOracle oracle;
  std::vector<Status> statuses;
  {
    FaultDeviceOptions fo;
    fo.model_power_loss = false;
    FaultDevice fault(*dev, fo);
    auto pool = testing::MustCreatePool(fault, options);
    if (mode != Countdown::kNoSpace) {
      FaultRule rule;
      rule.action = FaultAction::kIOError;
      rule.from_op_index = n;
      rule.persistent = mode == Countdown::kIOError;
      ASSERT_TRUE(fault.AddRule(rule).ok());
    } else {
      fault.set_write_budget_bytes(n);
    }
    testing::RunWorkload(pool, fault, options, ops, &oracle, &statuses);
    // The first failure must say what happened.
    for (const Status& s : statuses) {
      if (s.ok()) continue;
      const bool right = mode == Countdown::kNoSpace ? s.IsNoSpace() : s.IsIOError();
      stats->first_error_code_ok += right;
      if (!right) ++stats->kinds["first error has the wrong code: " + s.ToString().substr(0, 60)];
      if (!right && ++stats->failures <= 6) {
        ADD_FAILURE() << CountdownName(mode) << n << ": the first error is " << s.ToString();
      }
      break;
    }
    if (!pool) {  // a reopen failed: the workload stopped there
      stats->pool_failed += 1;
    } else {
      stats->pool_failed += !pool->health().ok();
      if (mode == Countdown::kTransient)
        fault.ClearRules();  // fired, or never will in the workload
      if (pool->health().ok() && mode == Countdown::kTransient) {
        // The pool carried on after the error: what it serves now must be
        // exactly the model (a failed request changed nothing), and the error
        // paths must not have leaked a block or a count.
        const ModelState& want = oracle.live();
        for (const auto& [name, img] : want.volumes) {
          auto v = pool->OpenVolume(name);
          Image got(img->size());
          Status s = v.ok() ? (*v)->Read(0, got) : v.status();
          if (!s.ok() || got != *img) {
            oracle.Violation("after the error, volume " + name + " reads " +
                             (s.ok() ? std::string("different bytes") : s.ToString()));
          }
        }
        for (const auto& [key, img] : want.snapshots) {
          const size_t at = key.find('@');
          auto v = pool->OpenSnapshot(key.substr(0, at), key.substr(at + 1));
          Image got(img->size());
          Status s = v.ok() ? (*v)->Read(0, got) : v.status();
          if (!s.ok() || got != *img) {
            oracle.Violation("after the error, snapshot " + key + " reads " +
                             (s.ok() ? std::string("different bytes") : s.ToString()));
          }
        }
        auto fsck = Fsck::Check(*pool);
        if (!fsck.ok() || !fsck->clean()) {
          oracle.Violation("after the error, Fsck::Check on the live pool: " +
                           (fsck.ok() ? fsck->ToString() : fsck.status().ToString()));
        }
      }
    }
    pool.reset();  // Close: commits if still healthy (the fault stays armed)
  }
  ++stats->runs;
  std::vector<std::string> errors = oracle.violations();
  for (std::string& e : CheckRecovered(*dev, options, oracle)) errors.push_back(std::move(e));
  if (errors.empty()) return;
  std::set<std::string> kinds;
  for (const std::string& e : errors) kinds.insert(e.substr(0, std::min<size_t>(e.size(), 72)));
  for (const std::string& k : kinds) ++stats->kinds[k];
  if (++stats->failures <= 2) {
    std::string msg, trace;
    for (const std::string& e : errors) msg += "  - " + e + "\n";
    for (size_t i = 0; i < ops.size(); ++i) {
      trace += "    " + testing::Describe(ops[i]) + " -> " +
               (i < statuses.size() ? statuses[i].ToString() : "(not run)") + "\n";
    }
    ADD_FAILURE() << spec.ToString() << ": " << CountdownName(mode) << n << ":\n"
                  << msg << "  workload:\n"
                  << trace;
  }
}

TEST(EngineFaultTest, EioCountdownEveryDeviceOp) {
  CountdownStats stats, transient;
  uint64_t points = 0;
  for (const CountdownCase& c : CountdownCases()) {
    SCOPED_TRACE(c.spec.ToString());
    uint64_t base, total;
    {
      auto dev = MakeDevice(c.spec.device_bytes, c.spec.sector_bytes);
      FaultDevice fault(*dev);
      auto pool = testing::MustCreatePool(fault, c.spec.pool_options());
      base = fault.ops_submitted();
      CrashOracle oracle;
      std::vector<Status> statuses;
      testing::RunWorkload(pool, fault, c.spec.pool_options(), c.ops, &oracle, &statuses);
      for (const Status& s : statuses) ASSERT_TRUE(s.ok()) << s.ToString();
      ASSERT_EQ(statuses.size(), c.ops.size());
      ASSERT_TRUE(pool->Close().ok());
      total = fault.ops_submitted();
    }
    for (uint64_t n = base; n <= total; ++n) {
      ++points;
      CountdownRun(c.spec, c.ops, Countdown::kIOError, n, &stats);
      CountdownRun(c.spec, c.ops, Countdown::kTransient, n, &transient);
    }
  }
  std::printf(
      "[eio] %llu runs (IOError from every device op on), %llu left the pool failed; %llu "
      "failing runs%s\n",
      static_cast<unsigned long long>(stats.runs),
      static_cast<unsigned long long>(stats.pool_failed),
      static_cast<unsigned long long>(stats.failures), stats.Kinds().c_str());
  std::printf(
      "[eio] %llu runs (one IOError at every device op), %llu left the pool failed; %llu "
      "failing runs%s\n",
      static_cast<unsigned long long>(transient.runs),
      static_cast<unsigned long long>(transient.pool_failed),
      static_cast<unsigned long long>(transient.failures), transient.Kinds().c_str());
  EXPECT_EQ(stats.failures, 0u);
  EXPECT_EQ(transient.failures, 0u);
  EXPECT_GT(points, 50u);
}

TEST(EngineFaultTest, EnospcCountdownEveryWrite) {
  CountdownStats stats;
  for (const CountdownCase& c : CountdownCases()) {
    SCOPED_TRACE(c.spec.ToString());
    const uint32_t bs = c.spec.block_bytes;
    // The reference run: how many bytes the workload writes. Device writes
    // are whole blocks, so a budget at every block multiple from the end of
    // Pool::Create to the end is "the disk is full before write N" for every N.
    std::vector<uint64_t> budgets;
    {
      auto dev = MakeDevice(c.spec.device_bytes, c.spec.sector_bytes);
      FaultDevice fault(*dev);
      auto pool = testing::MustCreatePool(fault, c.spec.pool_options());
      const uint64_t base = fault.bytes_written();
      CrashOracle oracle;
      std::vector<Status> statuses;
      testing::RunWorkload(pool, fault, c.spec.pool_options(), c.ops, &oracle, &statuses);
      for (const Status& s : statuses) ASSERT_TRUE(s.ok()) << s.ToString();
      ASSERT_TRUE(pool->Close().ok());
      for (uint64_t b = base; b <= fault.bytes_written(); b += bs) budgets.push_back(b);
    }
    for (uint64_t budget : budgets)
      CountdownRun(c.spec, c.ops, Countdown::kNoSpace, budget, &stats);
  }
  std::printf(
      "[enospc] %llu runs (write budget at every block written), %llu left the pool failed; "
      "%llu failing runs%s\n",
      static_cast<unsigned long long>(stats.runs),
      static_cast<unsigned long long>(stats.pool_failed),
      static_cast<unsigned long long>(stats.failures), stats.Kinds().c_str());
  EXPECT_EQ(stats.failures, 0u);
}

// A read error is not a torn write: Open must not take an I/O error on the
// newest superblock slot for "that slot is invalid" and fall back to the older
// slot (silently rolling the pool back a commit, or to the empty pool Create
// made, which the next commit then makes permanent). It must fail with
// IOError, or open the newest generation.
TEST(EngineFaultTest, ReadErrorOnASuperblockDoesNotRollThePoolBack) {
  const uint32_t bs = 4096;
  for (int newest_slot = 0; newest_slot < 2; ++newest_slot) {
    SCOPED_TRACE("newest superblock in slot " + std::string(newest_slot == 0 ? "A" : "B"));
    auto dev = MakeDevice(32 * kMiB, 4096);
    uint64_t generation = 0;
    {
      auto pool = testing::MustCreatePool(*dev, Options(bs));  // generation 1, slot B
      ASSERT_TRUE(pool->CreateVolume("keep", 16 * bs).ok());
      ASSERT_TRUE((*pool->OpenVolume("keep"))->Write(0, testing::PatternBytes(1, bs)).ok());
      ASSERT_TRUE(pool->Commit().ok());  // generation 2, slot A
      if (newest_slot == 1) {
        ASSERT_TRUE((*pool->OpenVolume("keep"))->Write(bs, testing::PatternBytes(2, bs)).ok());
        ASSERT_TRUE(pool->Commit().ok());  // generation 3, slot B
      }
      generation = pool->Info().generation;
    }
    // Open reads slot A first, then slot B: fail that read of the newest one.
    FaultDeviceOptions fo;
    fo.model_power_loss = false;
    FaultDevice fault(*dev, fo);
    FaultRule rule;
    rule.action = FaultAction::kIOError;
    rule.op = IoOp::kRead;
    rule.range = ByteRange{static_cast<uint64_t>(newest_slot) * bs, bs};
    ASSERT_TRUE(fault.AddRule(rule).ok());
    auto opened = Pool::Open(fault, Options(bs));
    if (!opened.ok()) {
      EXPECT_TRUE(opened.status().IsIOError()) << opened.status().ToString();
      continue;
    }
    EXPECT_EQ((*opened)->Info().generation, generation)
        << "a read error on the newest superblock rolled the pool back to generation "
        << (*opened)->Info().generation << " (volumes now: " << (*opened)->ListVolumes().size()
        << ")";
    EXPECT_TRUE((*opened)->GetVolume("keep").ok()) << "volume 'keep' is gone";
    (void)(*opened)->Close();
  }
}

// ============================================================================
// Pool full
// ============================================================================

// Fills the pool through one volume until NoSpace; returns the bytes written.
uint64_t FillUntilNoSpace(Pool& pool, const std::string& vol, uint64_t chunk, uint64_t seed,
                          Image* model, Status* last) {
  Volume* v = *pool.OpenVolume(vol);
  uint64_t written = 0;
  for (uint64_t off = 0;; off += chunk) {
    if (off + chunk > model->size()) off = 0;  // wrap: overwrite (a snapshot keeps the old)
    Image data = testing::PatternBytes(seed + off + written, chunk);
    Status s = v->Write(off, data);
    if (!s.ok()) {
      *last = s;
      return written;
    }
    std::copy(data.begin(), data.end(), model->begin() + off);
    written += chunk;
    if (written > 64 * model->size()) {
      *last = Status::InvalidArgument("never filled up");
      return written;
    }
  }
}

void ExpectReadsMatch(Pool& pool, const std::string& vol, const Image& model, const char* when) {
  auto v = pool.OpenVolume(vol);
  ASSERT_TRUE(v.ok()) << when << ": " << v.status().ToString();
  Image got(model.size());
  Status s = (*v)->Read(0, got);
  ASSERT_TRUE(s.ok()) << when << ": reading " << vol << ": " << s.ToString();
  EXPECT_TRUE(got == model) << when << ": " << vol << " differs from the model";
}

// Fill, then free by trimming + flushing.
TEST(EngineFaultTest, PoolFullTrimAndFlushMakeRoom) {
  const uint32_t bs = 4096;
  auto dev = MakeDevice(4 * kMiB, 4096);
  auto pool = testing::MustCreatePool(*dev, Options(bs));
  const PoolInfo info = pool->Info();
  const uint64_t size = info.free_bytes / bs * bs;  // thin: as big as the pool
  ASSERT_TRUE(pool->CreateVolume("v", size).ok());
  Image model(size);
  Status last;
  const uint64_t chunk = 16 * bs;
  FillUntilNoSpace(*pool, "v", chunk, 1, &model, &last);
  ASSERT_TRUE(last.IsNoSpace()) << "filling the pool ended with " << last.ToString();
  EXPECT_NE(last.message().find("full"), std::string::npos)
      << "unclear message: " << last.ToString();
  EXPECT_TRUE(pool->health().ok())
      << "NoSpace on a write failed the pool: " << pool->health().ToString();
  ExpectReadsMatch(*pool, "v", model, "after NoSpace");
  // Everything written so far can be made durable.
  Volume* v = *pool->OpenVolume("v");
  Status s = v->Flush();
  EXPECT_TRUE(s.ok()) << "flush of a full pool: " << s.ToString();
  // Free half, commit, and write again.
  s = v->Trim(0, size / 2 / bs * bs);
  EXPECT_TRUE(s.ok()) << "trim on a full pool: " << s.ToString();
  std::fill(model.begin(), model.begin() + size / 2 / bs * bs, std::byte{0});
  s = v->Flush();
  EXPECT_TRUE(s.ok()) << "flush after trim: " << s.ToString();
  Image data = testing::PatternBytes(77, chunk);
  s = v->Write(0, data);
  EXPECT_TRUE(s.ok()) << "write after freeing space: " << s.ToString();
  if (s.ok()) std::copy(data.begin(), data.end(), model.begin());
  if (pool->health().ok()) {
    ExpectReadsMatch(*pool, "v", model, "after freeing");
    auto fsck = Fsck::Check(*pool);
    ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
    EXPECT_TRUE(fsck->clean()) << fsck->ToString();
  }
  pool.reset();
  // Whatever happened, the image reopens clean.
  auto reopened = Pool::Open(*dev, Options(bs));
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  auto fsck = Fsck::Check(**reopened);
  ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
}

// Fill while a snapshot holds the old data, then delete the snapshot.
TEST(EngineFaultTest, PoolFullDeleteSnapshotMakesRoom) {
  const uint32_t bs = 4096;
  auto dev = MakeDevice(4 * kMiB, 4096);
  auto pool = testing::MustCreatePool(*dev, Options(bs));
  const uint64_t size = pool->Info().free_bytes / bs * bs;  // thin: as big as the pool
  ASSERT_TRUE(pool->CreateVolume("v", size).ok());
  Image model(size);
  Volume* v = *pool->OpenVolume("v");
  // The snapshot holds 40% of the pool; overwriting the whole volume cannot fit.
  const uint64_t held = size * 2 / 5 / bs * bs;
  Image first(size);
  {
    Image data = testing::PatternBytes(3, held);
    ASSERT_TRUE(v->Write(0, data).ok());
    std::copy(data.begin(), data.end(), first.begin());
  }
  model = first;
  ASSERT_TRUE(pool->CreateSnapshot("v", "old").ok());
  ASSERT_TRUE(pool->Clone("v", "old", "view").ok());  // reads the snapshot without a commit
  ASSERT_TRUE(v->Flush().ok());
  Status last;
  FillUntilNoSpace(*pool, "v", 16 * bs, 9, &model, &last);
  ASSERT_TRUE(last.IsNoSpace()) << "filling the pool ended with " << last.ToString();
  EXPECT_TRUE(pool->health().ok())
      << "NoSpace on a write failed the pool: " << pool->health().ToString();
  if (!pool->health().ok()) return;
  ExpectReadsMatch(*pool, "v", model, "after NoSpace");
  ExpectReadsMatch(*pool, "view", first, "snapshot after NoSpace");
  // Free the snapshot (and its view), commit, and write again.
  Status s = pool->DeleteVolume("view");
  EXPECT_TRUE(s.ok()) << "delete view on a full pool: " << s.ToString();
  s = pool->DeleteSnapshot("v", "old");
  EXPECT_TRUE(s.ok()) << "delete snapshot on a full pool: " << s.ToString();
  // Freed blocks are reusable two commits later (SpaceMap: they cool for one
  // commit so the previous state stays whole): flush twice.
  s = v->Flush();
  if (s.ok()) s = v->Flush();
  EXPECT_TRUE(s.ok()) << "flush after deleting the snapshot: " << s.ToString();
  const PoolInfo info = pool->Info();
  // Most of what the snapshot alone held comes back (less what the two commits
  // themselves rewrote and is still cooling).
  EXPECT_GT(info.free_bytes, size / 3) << "deleting the snapshot freed nothing";
  Image data = testing::PatternBytes(78, 32 * bs);
  s = v->Write(0, data);
  EXPECT_TRUE(s.ok()) << "write after freeing space: " << s.ToString();
  if (s.ok()) std::copy(data.begin(), data.end(), model.begin());
  if (pool->health().ok()) {
    ExpectReadsMatch(*pool, "v", model, "after freeing");
    ASSERT_TRUE(v->Flush().ok());
    auto fsck = Fsck::Check(*pool);
    ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
    EXPECT_TRUE(fsck->clean()) << fsck->ToString();
  }
}

// One block at a time, flushing after each: every write's map path is clean
// (committed), so a write needs a data block and a shadow of each map node on
// its path. When the pool runs out, the write must fail with NoSpace *before
// anything changed*, leaving the pool healthy and everything flushed intact.
TEST(EngineFaultTest, PoolFullSmallFlushedWritesFailCleanly) {
  const uint32_t bs = 4096;
  auto dev = MakeDevice(4 * kMiB, 4096);
  auto pool = testing::MustCreatePool(*dev, Options(bs));
  const uint64_t size = pool->Info().free_bytes / bs * bs;
  ASSERT_TRUE(pool->CreateVolume("v", size).ok());
  Volume* v = *pool->OpenVolume("v");
  Image model(size);
  Status s;
  uint64_t off = 0;
  const char* failed_in = "";
  for (; off + bs <= size; off += bs) {
    Image data = testing::PatternBytes(off, bs);
    s = v->Write(off, data);
    if (!s.ok()) {
      failed_in = "write";
      break;
    }
    std::copy(data.begin(), data.end(), model.begin() + off);
    s = v->Flush();
    if (!s.ok()) {
      failed_in = "flush";
      break;
    }
  }
  ASSERT_FALSE(s.ok()) << "never ran out of space";
  EXPECT_TRUE(s.IsNoSpace()) << failed_in << " at block " << off / bs << ": " << s.ToString();
  EXPECT_TRUE(pool->health().ok())
      << "running out of space (" << failed_in << " of block " << off / bs << ", "
      << pool->Info().free_bytes / bs
      << " blocks free) failed the pool: " << pool->health().ToString();
  if (pool->health().ok()) ExpectReadsMatch(*pool, "v", model, "after NoSpace");
  pool.reset();
  // Everything flushed survives whatever happened.
  auto reopened = Pool::Open(*dev, Options(bs));
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  Image durable = model;
  if (std::string(failed_in) == "flush") {
    // The last write was not flushed: it may be there or not.
    auto got = testing::ReadAll(**(*reopened)->OpenVolume("v"), off, bs);
    if (got == Image(bs))
      std::fill(durable.begin() + off, durable.begin() + off + bs, std::byte{0});
  }
  ExpectReadsMatch(**reopened, "v", durable, "reopened");
  auto fsck = Fsck::Check(**reopened);
  ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
}

// A write into an empty volume needs a data block and new map nodes. With
// one block left, the data fits and the map does not: the write must fail
// with NoSpace and leave the pool healthy (pool.h: "NoSpace before anything
// changed" does not fail the pool; nothing the caller can see has changed).
TEST(EngineFaultTest, PoolFullWriteNeedingMapNodesFailsCleanly) {
  const uint32_t bs = 4096;
  auto dev = MakeDevice(4 * kMiB, 4096);
  auto pool = testing::MustCreatePool(*dev, Options(bs));
  const uint64_t capacity = pool->Info().free_bytes / bs * bs;
  ASSERT_TRUE(pool->CreateVolume("filler", capacity).ok());
  ASSERT_TRUE(pool->CreateVolume("empty", 16 * bs).ok());
  Volume* filler = *pool->OpenVolume("filler");
  // Fill until one block is left, or until the engine says NoSpace earlier
  // (an engine that keeps a reserve for metadata).
  uint64_t off = 0;
  Status s;
  while (pool->Info().free_bytes > bs && off + bs <= capacity) {
    s = filler->Write(off, testing::PatternBytes(off, bs));
    if (!s.ok()) break;
    off += bs;
  }
  EXPECT_TRUE(s.ok() || s.IsNoSpace()) << s.ToString();
  ASSERT_TRUE(pool->health().ok()) << "filling failed the pool: " << pool->health().ToString();
  const uint64_t free_blocks = pool->Info().free_bytes / bs;
  Volume* empty = *pool->OpenVolume("empty");
  // The metadata reserve depends on the tree's height, so a write to the small
  // volume may still fit where the filler's did not; either way it must be
  // all or nothing.
  s = empty->Write(0, testing::PatternBytes(1, bs));
  EXPECT_TRUE(s.ok() || s.IsNoSpace()) << s.ToString();
  if (s.ok()) {
    Image back(bs);
    ASSERT_TRUE(empty->Read(0, back).ok());
    EXPECT_EQ(back, testing::PatternBytes(1, bs));
  }
  EXPECT_TRUE(pool->health().ok())
      << "with " << free_blocks << " free block(s), a write that ran "
      << "out of space for its map nodes failed the pool: " << pool->health().ToString();
}

// NoSpace only when the pool is really full: many small writes to distinct
// blocks, without a flush, on a pool that has room for all of them.
TEST(EngineFaultTest, UnflushedSmallWritesDoNotRunOutOfSpaceEarly) {
  const uint32_t bs = 4096;
  auto dev = MakeDevice(32 * kMiB, 4096);  // 8192 blocks
  auto pool = testing::MustCreatePool(*dev, Options(bs));
  ASSERT_TRUE(pool->CreateVolume("v", 24 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  const uint64_t writes = 4096;  // 16 MiB of data: half the pool
  for (uint64_t i = 0; i < writes; ++i) {
    Status s = v->Write(i * bs, testing::PatternBytes(i, bs));
    if (!s.ok()) {
      ADD_FAILURE() << "write " << i << " of " << writes << " (" << i * bs / kMiB
                    << " MiB written, pool has " << pool->Info().free_bytes / kMiB
                    << " MiB free): " << s.ToString();
      break;
    }
  }
  EXPECT_TRUE(v->Flush().ok());
}

// A pool that is full *on disk* (filled and flushed until the engine refused
// more) must still be recoverable after reopening: trimming must be able to
// commit and give space back, and so must deleting a snapshot.
TEST(EngineFaultTest, DurablyFullPoolCanBeFreedAfterReopen) {
  const uint32_t bs = 4096;
  auto dev = MakeDevice(4 * kMiB, 4096);
  uint64_t size = 0;
  {
    auto pool = testing::MustCreatePool(*dev, Options(bs));
    size = pool->Info().free_bytes / bs * bs;
    ASSERT_TRUE(pool->CreateVolume("v", size).ok());
    Volume* v = *pool->OpenVolume("v");
    ASSERT_TRUE(v->Write(0, testing::PatternBytes(9, size / 4 / bs * bs)).ok());
    ASSERT_TRUE(pool->CreateSnapshot("v", "quarter").ok());
    ASSERT_TRUE(v->Flush().ok());
    for (uint64_t off = 0; off + 8 * bs <= size; off += 8 * bs) {
      Image data = testing::PatternBytes(off, 8 * bs);
      if (!v->Write(off, data).ok() || !v->Flush().ok()) break;
    }
    // Top up block by block until even that fails.
    for (uint64_t off = 0; off + bs <= size && pool->health().ok(); off += bs) {
      Image data = testing::PatternBytes(off + 1, bs);
      if (!v->Write(off, data).ok() || !v->Flush().ok()) break;
    }
  }
  auto free_space = [&](bool by_trim) {
    SCOPED_TRACE(by_trim ? "freeing by trim" : "freeing by deleting the snapshot");
    std::unique_ptr<MemoryDevice> copy = dev->Clone();
    auto opened = Pool::Open(*copy, Options(bs));
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    std::unique_ptr<Pool> pool = std::move(opened).value();
    const uint64_t free_before = pool->Info().free_bytes / bs;
    std::printf("[full] reopened a pool filled to %llu free blocks (of %llu)\n",
                static_cast<unsigned long long>(free_before),
                static_cast<unsigned long long>(size / bs));
    Volume* v = *pool->OpenVolume("v");
    Status s = by_trim ? v->Trim(0, size) : pool->DeleteSnapshot("v", "quarter");
    EXPECT_TRUE(s.ok()) << (by_trim ? "trim" : "delete snapshot") << " on a full pool ("
                        << free_before << " free blocks): " << s.ToString();
    if (s.ok()) s = v->Flush();
    if (s.ok()) s = v->Flush();  // freed blocks cool for one commit
    EXPECT_TRUE(s.ok()) << "commit of the freeing (" << free_before
                        << " free blocks): " << s.ToString();
    if (!s.ok()) return;
    EXPECT_GT(pool->Info().free_bytes / bs, free_before + size / bs / 8) << "nothing was freed";
    Image data = testing::PatternBytes(5, 8 * bs);
    EXPECT_TRUE(v->Write(size - 8 * bs, data).ok());
    EXPECT_TRUE(v->Flush().ok());
    auto fsck = Fsck::Check(*pool);
    ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
    EXPECT_TRUE(fsck->clean()) << fsck->ToString();
  };
  free_space(/*by_trim=*/true);
  free_space(/*by_trim=*/false);
}

}  // namespace
}  // namespace snapdisk
