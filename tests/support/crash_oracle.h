// Helpers for the engine's fault-tolerance tests (engine_crash_test,
// engine_fault_test): a seeded workload generator (sequential and concurrent
// requests, catalog operations, reopens), an in-memory model of what a pool
// must hold (volumes and snapshots as byte images), an oracle that tracks what
// may survive a crash (the state at the last successful flush/commit, every
// state a later commit could have made durable, and per block every image it
// may hold), a checker that reopens a crashed or failed image and verifies
// every invariant against that oracle, and an independent walker of the
// on-disk format (engine/FORMAT.md) that names every block the pool uses.
//
// Header-only on purpose: nothing here changes the shared test-support
// library other test binaries link.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "disk/block_device.h"
#include "disk/memory_device.h"
#include "engine/format.h"
#include "engine/fsck.h"
#include "engine/pool.h"
#include "engine/volume.h"
#include "support/test_env.h"

namespace snapdisk::testing {

using Image = std::vector<std::byte>;

// Creation times go into catalog records: a fixed clock keeps reruns of a
// workload byte-identical (and so their device op sequences identical).
inline int64_t FixedWallClockNs() { return 1'700'000'000'000'000'000; }

inline std::unique_ptr<MemoryDevice> MakeDevice(uint64_t bytes, uint32_t sector_bytes) {
  auto dev = MemoryDevice::Create(bytes, sector_bytes, 256);
  SNAPDISK_CHECK(dev.ok(), dev.status().ToString().c_str());
  return std::move(dev).value();
}

// ---- The model -------------------------------------------------------------

// Images are shared between states (copy on write): the oracle keeps a state
// per operation, and most operations change one volume.
using ImagePtr = std::shared_ptr<const Image>;

inline bool SameBytes(const Image& a, const Image& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}
inline bool SameImage(const ImagePtr& a, const ImagePtr& b) { return a == b || SameBytes(*a, *b); }

// Deterministic data for a write: the same (seed, length) gives the same
// bytes. (Cheaper than PatternBytes' Mersenne Twister: the oracle makes every
// write's data twice per run, and there are thousands of runs.)
inline Image WriteData(uint64_t seed, uint64_t length) {
  Image out(length);
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
  size_t i = 0;
  for (; i + 8 <= length; i += 8) {
    x += 0x9E3779B97F4A7C15ULL;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, 8);
  }
  for (; i < length; ++i) out[i] = static_cast<std::byte>(x >> (8 * (i % 8)));
  return out;
}

struct ModelState {
  std::map<std::string, ImagePtr> volumes;    // name -> contents (size = image size)
  std::map<std::string, ImagePtr> snapshots;  // "volume@snapshot" -> contents

  static bool SameMap(const std::map<std::string, ImagePtr>& a,
                      const std::map<std::string, ImagePtr>& b) {
    if (a.size() != b.size()) return false;
    for (auto i = a.begin(), j = b.begin(); i != a.end(); ++i, ++j) {
      if (i->first != j->first || !SameImage(i->second, j->second)) return false;
    }
    return true;
  }
  bool operator==(const ModelState& o) const {
    return SameMap(volumes, o.volumes) && SameMap(snapshots, o.snapshots);
  }
};

inline std::string SnapKey(const std::string& volume, const std::string& snapshot) {
  return volume + "@" + snapshot;
}

// Volume and snapshot names with their sizes: what the catalog says.
inline std::string CatalogOf(const ModelState& m) {
  std::string out;
  for (const auto& [name, image] : m.volumes)
    out += name + ":" + std::to_string(image->size()) + " ";
  for (const auto& [key, image] : m.snapshots)
    out += key + ":" + std::to_string(image->size()) + " ";
  return out.empty() ? "(empty)" : out;
}

enum class OpKind : uint8_t {
  kCreateVolume,
  kDeleteVolume,
  kGrow,
  kWrite,
  kTrim,
  kWriteZeroes,
  kFlush,   // Volume::Flush
  kCommit,  // Pool::Commit
  kReopen,  // Pool::Close, then Pool::Open on the same device
  kCreateSnapshot,
  kDeleteSnapshot,
  kClone,
  kRollback,
};

inline const char* OpKindName(OpKind k) {
  switch (k) {
    case OpKind::kCreateVolume:
      return "create-volume";
    case OpKind::kDeleteVolume:
      return "delete-volume";
    case OpKind::kGrow:
      return "grow";
    case OpKind::kWrite:
      return "write";
    case OpKind::kTrim:
      return "trim";
    case OpKind::kWriteZeroes:
      return "write-zeroes";
    case OpKind::kFlush:
      return "flush";
    case OpKind::kCommit:
      return "commit";
    case OpKind::kReopen:
      return "reopen";
    case OpKind::kCreateSnapshot:
      return "snapshot";
    case OpKind::kDeleteSnapshot:
      return "delete-snapshot";
    case OpKind::kClone:
      return "clone";
    case OpKind::kRollback:
      return "rollback";
  }
  return "?";
}

struct WorkloadOp {
  OpKind kind = OpKind::kWrite;
  std::string volume;
  std::string snapshot;  // snapshot ops, clone, rollback
  std::string target;    // clone: the new volume
  uint64_t offset = 0;
  uint64_t length = 0;  // write/trim: bytes; create/grow: the volume size
  uint64_t data_seed = 0;
  // Data ops only: submitted together with the next op, all in flight at
  // once (Volume::Submit), then polled to completion.
  bool join_next = false;
};

inline bool IsDataOp(OpKind k) {
  return k == OpKind::kWrite || k == OpKind::kTrim || k == OpKind::kWriteZeroes;
}

inline std::string Describe(const WorkloadOp& op) {
  std::string out = std::string(OpKindName(op.kind)) + " " + op.volume;
  switch (op.kind) {
    case OpKind::kCreateVolume:
    case OpKind::kGrow:
      out += " size " + std::to_string(op.length);
      break;
    case OpKind::kWrite:
    case OpKind::kTrim:
    case OpKind::kWriteZeroes:
      out += " [" + std::to_string(op.offset) + ", +" + std::to_string(op.length) + ")";
      break;
    case OpKind::kCreateSnapshot:
    case OpKind::kDeleteSnapshot:
    case OpKind::kRollback:
      out += "@" + op.snapshot;
      break;
    case OpKind::kClone:
      out += "@" + op.snapshot + " -> " + op.target;
      break;
    default:
      break;
  }
  if (op.join_next) out += " (concurrent with the next)";
  return out;
}

// The durability barriers. Catalog operations are atomic and visible at once
// but durable only at the next commit, like writes (pool.h, "Durability").
inline bool IsCommitOp(OpKind k) {
  return k == OpKind::kFlush || k == OpKind::kCommit || k == OpKind::kReopen;
}

// The effect of a successful `op` on the model. False (and no change) when
// the op cannot apply to this state (after earlier ops failed).
inline bool ApplyOp(const WorkloadOp& op, ModelState* m) {
  auto vol = m->volumes.find(op.volume);
  const bool has_volume = vol != m->volumes.end();
  auto snap = m->snapshots.find(SnapKey(op.volume, op.snapshot));
  const bool has_snapshot = snap != m->snapshots.end();
  switch (op.kind) {
    case OpKind::kCreateVolume:
      if (has_volume) return false;
      m->volumes[op.volume] = std::make_shared<const Image>(op.length);
      return true;
    case OpKind::kDeleteVolume:
      if (!has_volume) return false;
      m->volumes.erase(vol);
      return true;
    case OpKind::kGrow: {
      if (!has_volume) return false;
      auto img = std::make_shared<Image>(*vol->second);
      img->resize(op.length);
      vol->second = std::move(img);
      return true;
    }
    case OpKind::kWrite:
    case OpKind::kTrim:
    case OpKind::kWriteZeroes: {
      if (!has_volume || op.offset + op.length > vol->second->size()) return false;
      auto img = std::make_shared<Image>(*vol->second);
      if (op.kind == OpKind::kWrite) {
        Image data = WriteData(op.data_seed, op.length);
        std::copy(data.begin(), data.end(), img->begin() + op.offset);
      } else {
        std::fill(img->begin() + op.offset, img->begin() + op.offset + op.length, std::byte{0});
      }
      vol->second = std::move(img);
      return true;
    }
    case OpKind::kFlush:
      return has_volume;
    case OpKind::kCommit:
    case OpKind::kReopen:
      return true;
    case OpKind::kCreateSnapshot:
      if (!has_volume || has_snapshot) return false;
      m->snapshots[SnapKey(op.volume, op.snapshot)] = vol->second;
      return true;
    case OpKind::kDeleteSnapshot:
      if (!has_volume || !has_snapshot) return false;
      m->snapshots.erase(snap);
      return true;
    case OpKind::kClone:
      if (!has_volume || !has_snapshot || m->volumes.count(op.target)) return false;
      m->volumes[op.target] = snap->second;
      return true;
    case OpKind::kRollback: {
      if (!has_volume || !has_snapshot) return false;
      if (snap->second->size() == vol->second->size()) {
        vol->second = snap->second;
      } else {
        auto img = std::make_shared<Image>(*snap->second);
        img->resize(vol->second->size());  // a grown volume keeps its size
        vol->second = std::move(img);
      }
      return true;
    }
  }
  return false;
}

// Runs `op` on the pool through the public API.
inline Status ExecuteOp(Pool& pool, const WorkloadOp& op) {
  auto volume = [&]() -> Result<Volume*> { return pool.OpenVolume(op.volume); };
  switch (op.kind) {
    case OpKind::kCreateVolume:
      return pool.CreateVolume(op.volume, op.length).status();
    case OpKind::kDeleteVolume:
      return pool.DeleteVolume(op.volume);
    case OpKind::kGrow:
      return pool.GrowVolume(op.volume, op.length);
    case OpKind::kWrite: {
      auto v = volume();
      if (!v.ok()) return v.status();
      Image data = WriteData(op.data_seed, op.length);
      return (*v)->Write(op.offset, data);
    }
    case OpKind::kTrim:
    case OpKind::kWriteZeroes: {
      auto v = volume();
      if (!v.ok()) return v.status();
      return op.kind == OpKind::kTrim ? (*v)->Trim(op.offset, op.length)
                                      : (*v)->WriteZeroes(op.offset, op.length);
    }
    case OpKind::kFlush: {
      auto v = volume();
      if (!v.ok()) return v.status();
      return (*v)->Flush();
    }
    case OpKind::kCommit:
      return pool.Commit();
    case OpKind::kReopen:
      return Status::InvalidArgument("reopen needs RunWorkload's device");
    case OpKind::kCreateSnapshot:
      return pool.CreateSnapshot(op.volume, op.snapshot).status();
    case OpKind::kDeleteSnapshot:
      return pool.DeleteSnapshot(op.volume, op.snapshot);
    case OpKind::kClone:
      return pool.Clone(op.volume, op.snapshot, op.target).status();
    case OpKind::kRollback:
      return pool.Rollback(op.volume, op.snapshot);
  }
  return Status::InvalidArgument("unknown op");
}

// ---- Workloads ---------------------------------------------------------------

struct WorkloadSpec {
  uint64_t seed = 1;
  uint32_t block_bytes = 4096;
  uint32_t sector_bytes = 4096;  // of the MemoryDevice: 512 lets a crash tear inside a block
  uint64_t device_bytes = uint64_t{32} << 20;
  uint64_t cache_bytes = uint64_t{256} << 20;
  int ops = 20;
  // Nonzero: volumes of at most this many blocks (and no tall ones), for
  // pools so small that the allocator runs past the high-water mark and
  // reuses freed blocks.
  uint64_t max_volume_blocks = 0;
  // The device holds back some completions (FaultDevice latency rules on a
  // ManualClock), so requests complete out of submission order.
  bool reorder = false;

  PoolOptions pool_options() const {
    PoolOptions o;
    o.block_bytes = block_bytes;
    o.cache_bytes = cache_bytes;
    o.wall_clock_ns = &FixedWallClockNs;
    return o;
  }
  std::string ToString() const {
    return "workload seed " + std::to_string(seed) + " (block " + std::to_string(block_bytes) +
           ", sector " + std::to_string(sector_bytes) + ", cache " +
           std::to_string(cache_bytes / block_bytes) + " blocks, device " +
           std::to_string(device_bytes / block_bytes) + " blocks, " + std::to_string(ops) + " ops" +
           (reorder ? ", out-of-order completions" : "") + ")";
  }
};

// A valid sequence of `spec.ops` operations from an empty pool: every op
// succeeds on a healthy pool. Small volumes (some with a partial last block,
// some tall enough for a two-level map), aligned and unaligned writes, trims,
// write-zeroes, flushes, commits, snapshots, clones, rollbacks, grows and
// deletes.
inline std::vector<WorkloadOp> GenerateWorkload(const WorkloadSpec& spec) {
  std::mt19937_64 rng(spec.seed * 0x9E3779B97F4A7C15ULL + 17);
  auto rand = [&](uint64_t n) -> uint64_t { return n == 0 ? 0 : rng() % n; };
  const uint64_t bs = spec.block_bytes;
  const uint64_t fanout = bs / format::kMapEntryBytes;
  // Volumes of bs * fanout bytes need a second map level; only affordable
  // (sparse) for small blocks.
  const bool tall_ok = bs * fanout <= (uint64_t{1} << 20);
  ModelState m;
  std::vector<WorkloadOp> ops;
  int next = 0;
  auto pick = [&](const auto& map) {
    auto it = map.begin();
    std::advance(it, rand(map.size()));
    return it->first;
  };
  auto new_size = [&]() -> uint64_t {
    if (spec.max_volume_blocks > 0) {
      return bs * (1 + rand(spec.max_volume_blocks)) - (rand(3) == 0 ? 512 * rand(bs / 512) : 0);
    }
    switch (rand(5)) {
      case 0:
        return bs * (1 + rand(6)) + 512 * rand(bs / 512);  // maybe a partial last block
      case 1:
        return bs * (4 + rand(24));
      case 2:
        if (tall_ok) return bs * fanout + bs * (1 + rand(3));  // two map levels
        return bs * 32;
      default:
        return bs * (8 + rand(8));
    }
  };
  auto snaps_of = [&](const std::string& vol) {
    std::vector<std::string> out;
    for (const auto& [key, img] : m.snapshots) {
      if (key.compare(0, vol.size() + 1, vol + "@") == 0) out.push_back(key.substr(vol.size() + 1));
    }
    return out;
  };
  auto data_op = [&](OpKind kind, const std::string& vol, uint64_t max_blocks) {
    WorkloadOp op;
    op.kind = kind;
    op.volume = vol;
    const uint64_t size = m.volumes[vol]->size();
    const uint64_t full_blocks = size / bs;
    if (rand(5) < 3 && full_blocks > 0) {  // block aligned
      const uint64_t n = 1 + rand(std::min<uint64_t>(max_blocks, full_blocks));
      op.offset = rand(full_blocks - n + 1) * bs;
      op.length = n * bs;
    } else {  // anywhere, any length (read-modify-write of the edges)
      op.length = 1 + rand(std::min<uint64_t>(size, max_blocks * bs));
      op.offset = rand(size - op.length + 1);
      if (rand(4) == 0) op.offset = size - op.length;  // the volume's (maybe partial) end
    }
    op.data_seed = rng();
    return op;
  };
  while (static_cast<int>(ops.size()) < spec.ops) {
    WorkloadOp op;
    const uint64_t r = rand(100);
    if (m.volumes.empty() || (r < 5 && m.volumes.size() < 3)) {
      op.kind = OpKind::kCreateVolume;
      op.volume = "v" + std::to_string(next++);
      op.length = new_size();
    } else {
      const std::string vol = pick(m.volumes);
      const uint64_t size = m.volumes[vol]->size();
      const std::vector<std::string> mine = snaps_of(vol);
      if (r < 38 || r >= 92) {
        op = data_op(OpKind::kWrite, vol, 4);
      } else if (r < 46) {
        op = data_op(rand(2) ? OpKind::kTrim : OpKind::kWriteZeroes, vol, 8);
      } else if (r < 58) {
        op.kind = rand(4) == 0 ? OpKind::kCommit : OpKind::kFlush;
        if (rand(5) == 0) op.kind = OpKind::kReopen;
        op.volume = vol;
      } else if (r < 67) {
        if (m.snapshots.size() >= 6) continue;
        op.kind = OpKind::kCreateSnapshot;
        op.volume = vol;
        op.snapshot = "s" + std::to_string(next++);
      } else if (r < 72) {
        if (m.snapshots.empty()) continue;
        const std::string key = pick(m.snapshots);
        const size_t at = key.find('@');
        op.kind = OpKind::kDeleteSnapshot;
        op.volume = key.substr(0, at);
        op.snapshot = key.substr(at + 1);
      } else if (r < 78) {
        if (mine.empty() || m.volumes.size() >= 5) continue;
        op.kind = OpKind::kClone;
        op.volume = vol;
        op.snapshot = mine[rand(mine.size())];
        op.target = "c" + std::to_string(next++);
      } else if (r < 84) {
        if (mine.empty()) continue;
        op.kind = OpKind::kRollback;
        op.volume = vol;
        op.snapshot = mine[rand(mine.size())];
      } else if (r < 89) {
        op.kind = OpKind::kGrow;
        op.volume = vol;
        op.length = size + bs * rand(4) + 512 * (1 + rand(4));
        if (tall_ok && rand(4) == 0 && size < bs * fanout)
          op.length = bs * fanout + bs * (1 + rand(2));
        if (spec.max_volume_blocks > 0) {
          if (size + 512 > spec.max_volume_blocks * bs) continue;
          op.length = std::min(op.length, spec.max_volume_blocks * bs);
        }
      } else {
        if (!mine.empty() || m.volumes.size() < 2) continue;
        op.kind = OpKind::kDeleteVolume;
        op.volume = vol;
      }
    }
    SNAPDISK_CHECK(ApplyOp(op, &m), "generated an op that does not apply");
    const bool data = IsDataOp(op.kind);
    ops.push_back(std::move(op));
    // Sometimes several data ops in flight at once (maybe overlapping).
    if (data && rand(4) == 0 && static_cast<int>(ops.size()) + 1 < spec.ops) {
      const uint64_t extra = 1 + rand(3);
      for (uint64_t j = 0; j < extra && static_cast<int>(ops.size()) < spec.ops; ++j) {
        const std::string vol = rand(2) ? ops.back().volume : pick(m.volumes);
        WorkloadOp more =
            data_op(rand(3) ? OpKind::kWrite : (rand(2) ? OpKind::kTrim : OpKind::kWriteZeroes),
                    vol, rand(2) ? 2 : 6);
        SNAPDISK_CHECK(ApplyOp(more, &m), "generated an op that does not apply");
        ops.back().join_next = true;
        ops.push_back(std::move(more));
      }
    }
  }
  return ops;
}

// ---- The crash oracle ----------------------------------------------------------

// Follows a workload's outcomes and keeps what a crash may leave. Commits are
// atomic and happen between operations (at a flush or commit, and also early
// when dirty metadata passes half the cache, or to make freed space
// reusable), so after a crash the pool must be *exactly* the state after some
// prefix of the operations, and that prefix must include every operation
// before the last successful flush/commit:
//  - states(): states()[0] is the state at the last successful flush/commit,
//    then the state after each later operation that succeeded (a failed flush
//    may have landed too, but it changes nothing);
//  - history(): per volume, every image it had in those states and also the
//    images failed writes would have made. Whatever else happens, every block
//    must be all-old or all-new: equal to that block in one of them (the
//    documented per-block contract; a failed write may be all-old or all-new).
class CrashOracle {
 public:
  CrashOracle() { Reset(ModelState{}); }

  // Records that `op` returned `status`; `healthy_before`/`healthy_after` are
  // the pool's health around the call.
  void Record(const WorkloadOp& op, const Status& status, bool healthy_before,
              bool /*healthy_after*/) {
    if (!status.ok()) ++failed_ops_;
    const bool says_failed =
        !status.ok() && status.message().find("pool failed") != std::string::npos;
    if (!status.ok() && !healthy_before) {
      // Documented: once failed, every call returns IOError "pool failed ...",
      // except that when a commit the pool ran by itself failed it, the next
      // call reports that failure with its own code.
      const bool first_report = says_failed && !failure_reported_;
      failure_reported_ = failure_reported_ || says_failed;
      if ((!status.IsIOError() || !says_failed) && !first_report && !reported_failed_code_) {
        reported_failed_code_ = true;  // once per run: every later call says the same
        Violation(std::string("after the pool failed, a call returned ") +
                  StatusCodeName(status.code()) +
                  ", not IOError \"pool failed ...\" as pool.h documents: '" + Describe(op) +
                  "' -> " + status.ToString());
      }
      return;
    }
    failure_reported_ = failure_reported_ || says_failed;
    if (status.ok() && !healthy_before) {
      Violation("'" + Describe(op) + "' returned OK on a failed pool");
    }
    ModelState next = live_;
    if (!ApplyOp(op, &next)) {
      // Cannot apply here: an earlier op it depends on failed.
      if (status.ok())
        Violation("'" + Describe(op) + "' returned OK but its target does not exist");
      return;
    }
    if (!status.ok()) {
      AddHistory(next);  // a failed write: all-old or all-new per block
      return;
    }
    live_ = std::move(next);
    if (IsCommitOp(op.kind)) {
      Reset(live_);
    } else if (!(live_ == states_.back())) {
      states_.push_back(live_);
      AddHistory(live_);
    }
  }

  // Records a batch of data ops that were in flight together. Requests that
  // do not overlap (in blocks of `block_bytes`, on one volume) may be applied
  // in any order, so a commit during the batch may hold any subset of the
  // successful ones that is closed under "an earlier overlapping request
  // comes first".
  void RecordBatch(const std::vector<WorkloadOp>& ops, const std::vector<Status>& statuses,
                   bool healthy_before, bool healthy_after, uint64_t block_bytes) {
    std::vector<const WorkloadOp*> done;
    for (size_t i = 0; i < ops.size(); ++i) {
      if (!statuses[i].ok()) {
        ++failed_ops_;
        if (!healthy_before) {
          Record(ops[i], statuses[i], healthy_before, healthy_after);  // the failed-pool check
          --failed_ops_;
          continue;
        }
        ModelState alone = live_;
        if (ApplyOp(ops[i], &alone)) AddHistory(alone);  // all-old or all-new per block
        continue;
      }
      if (!healthy_before) Violation("'" + Describe(ops[i]) + "' returned OK on a failed pool");
      done.push_back(&ops[i]);
    }
    auto overlaps = [&](const WorkloadOp& a, const WorkloadOp& b) {
      if (a.volume != b.volume) return false;
      const uint64_t a0 = a.offset / block_bytes,
                     a1 = (a.offset + a.length + block_bytes - 1) / block_bytes;
      const uint64_t b0 = b.offset / block_bytes,
                     b1 = (b.offset + b.length + block_bytes - 1) / block_bytes;
      return a0 < b1 && b0 < a1;
    };
    const ModelState start = live_;
    const size_t n = done.size();
    for (uint64_t mask = 1; mask < (uint64_t{1} << n); ++mask) {
      bool closed = true;
      for (size_t j = 0; j < n && closed; ++j) {
        if (!(mask >> j & 1)) continue;
        for (size_t i = 0; i < j && closed; ++i) {
          if (!(mask >> i & 1) && overlaps(*done[i], *done[j])) closed = false;
        }
      }
      if (!closed) continue;
      ModelState st = start;
      for (size_t j = 0; j < n; ++j) {
        if (mask >> j & 1) ApplyOp(*done[j], &st);
      }
      if (mask + 1 == (uint64_t{1} << n)) live_ = st;
      bool known = false;
      for (const ModelState& k : states_) known = known || k == st;
      if (!known) {
        states_.push_back(st);
        AddHistory(st);
      }
    }
  }

  void Violation(std::string what) {
    if (violations_.size() < 8) violations_.push_back(std::move(what));
    ++violation_count_;
  }

  const ModelState& live() const { return live_; }
  const ModelState& durable() const { return states_.front(); }
  const std::vector<ModelState>& states() const { return states_; }
  const std::map<std::string, std::vector<ImagePtr>>& history() const { return history_; }
  const std::vector<std::string>& violations() const { return violations_; }
  uint64_t violation_count() const { return violation_count_; }
  uint64_t failed_ops() const { return failed_ops_; }

 private:
  void Reset(const ModelState& durable) {
    live_ = durable;
    states_.assign(1, durable);
    history_.clear();
    AddHistory(durable);
  }
  void AddHistory(const ModelState& s) {
    for (const auto& [name, image] : s.volumes) {
      auto& h = history_[name];
      if (h.empty() || !SameImage(h.back(), image)) h.push_back(image);
    }
  }

  ModelState live_;
  std::vector<ModelState> states_;
  std::map<std::string, std::vector<ImagePtr>> history_;
  std::vector<std::string> violations_;
  uint64_t violation_count_ = 0;
  uint64_t failed_ops_ = 0;
  bool reported_failed_code_ = false;
  bool failure_reported_ = false;  // a call returned a "pool failed" error
};

// Submits ops[begin, end) (data ops) all at once and polls until every one
// completed; their statuses are appended to `out`.
inline void ExecuteBatch(Pool& pool, const std::vector<WorkloadOp>& ops, size_t begin, size_t end,
                         std::vector<Status>* out) {
  const size_t n = end - begin;
  std::vector<VolumeRequest> requests(n);
  std::vector<Image> buffers(n);
  std::vector<Status> statuses(n);
  std::vector<bool> pending(n, false);
  size_t in_flight = 0;
  for (size_t i = 0; i < n; ++i) {
    const WorkloadOp& op = ops[begin + i];
    auto v = pool.OpenVolume(op.volume);
    if (!v.ok()) {
      statuses[i] = v.status();
      continue;
    }
    VolumeRequest& r = requests[i];
    r.op = op.kind == OpKind::kWrite  ? VolumeOp::kWrite
           : op.kind == OpKind::kTrim ? VolumeOp::kTrim
                                      : VolumeOp::kWriteZeroes;
    r.offset_bytes = op.offset;
    r.length_bytes = op.length;
    if (op.kind == OpKind::kWrite) {
      buffers[i] = WriteData(op.data_seed, op.length);
      r.data = buffers[i].data();
    }
    r.on_complete = [&statuses, &pending, &in_flight, i](VolumeRequest&, const Status& s) {
      statuses[i] = s;
      pending[i] = false;
      --in_flight;
    };
    Status s = (*v)->Submit(r);
    if (!s.ok()) {
      statuses[i] = s;
      continue;
    }
    pending[i] = true;
    ++in_flight;
  }
  while (in_flight > 0) pool.Poll(1);
  for (Status& s : statuses) out->push_back(std::move(s));
}

// Runs every op of the workload, whatever fails, feeding the oracle. A
// reopen closes the pool (a commit) and opens it again on `device`; if either
// fails, the workload stops there (`pool` may then be null).
inline void RunWorkload(std::unique_ptr<Pool>& pool, BlockDevice& device,
                        const PoolOptions& options, const std::vector<WorkloadOp>& ops,
                        CrashOracle* oracle, std::vector<Status>* statuses = nullptr) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const WorkloadOp& op = ops[i];
    const bool before = pool->health().ok();
    Status s;
    bool stop = false;
    if (op.kind == OpKind::kReopen) {
      s = pool->Close();
      const bool closed_ok = s.ok();
      pool.reset();
      if (closed_ok) {
        auto reopened = Pool::Open(device, options);
        if (reopened.ok()) {
          pool = std::move(reopened).value();
        } else {
          s = reopened.status();
        }
      }
      // The oracle sees Close's outcome (the commit); a failed reopen ends
      // the workload on a durable state.
      oracle->Record(op, closed_ok ? Status::OK() : s, before, closed_ok);
      stop = !pool;
    } else if (op.join_next || (i > 0 && ops[i - 1].join_next)) {
      size_t end = i + 1;
      while (end < ops.size() && ops[end - 1].join_next) ++end;
      std::vector<Status> batch;
      ExecuteBatch(*pool, ops, i, end, &batch);
      oracle->RecordBatch(std::vector<WorkloadOp>(ops.begin() + i, ops.begin() + end), batch,
                          before, pool->health().ok(), pool->block_bytes());
      if (statuses) statuses->insert(statuses->end(), batch.begin(), batch.end());
      i = end - 1;
      continue;
    } else {
      s = ExecuteOp(*pool, op);
      oracle->Record(op, s, before, pool->health().ok());
    }
    if (statuses) statuses->push_back(std::move(s));
    if (stop) break;
  }
}

inline void RunWorkload(Pool& pool, const std::vector<WorkloadOp>& ops, CrashOracle* oracle,
                        std::vector<Status>* statuses = nullptr) {
  for (const WorkloadOp& op : ops) {
    const bool before = pool.health().ok();
    Status s = ExecuteOp(pool, op);
    oracle->Record(op, s, before, pool.health().ok());
    if (statuses) statuses->push_back(std::move(s));
  }
}

// ---- A pass-through device that records every request ---------------------

class RecordingDevice final : public BlockDevice {
 public:
  struct Op {
    IoOp op;
    uint64_t offset_bytes;
    uint64_t length_bytes;
  };
  explicit RecordingDevice(BlockDevice& inner) : inner_(inner) {}
  uint64_t size_bytes() const override { return inner_.size_bytes(); }
  uint32_t sector_size_bytes() const override { return inner_.sector_size_bytes(); }
  uint32_t queue_depth() const override { return inner_.queue_depth(); }
  uint32_t in_flight() const override { return inner_.in_flight(); }
  std::string name() const override { return "recording(" + inner_.name() + ")"; }
  Status Submit(IoRequest& request) override {
    if (recording_) ops_.push_back({request.op, request.offset_bytes, request.length_bytes});
    return inner_.Submit(request);
  }
  uint32_t Poll(uint32_t min_completions) override { return inner_.Poll(min_completions); }
  IoStats& stats() override { return inner_.stats(); }

  void set_recording(bool on) { recording_ = on; }
  const std::vector<Op>& ops() const { return ops_; }
  void clear() { ops_.clear(); }

 private:
  BlockDevice& inner_;
  bool recording_ = true;
  std::vector<Op> ops_;
};

// ---- An independent walker of the on-disk format ------------------------------

enum class BlockRole : uint8_t {
  kSuperblock,   // the current superblock slot
  kSpaceMap,     // the current copy of a space-map block
  kCatalogNode,  // a node of the catalog tree
  kCatalogData,  // a catalog block (records)
  kMapNode,      // a node of a volume's or snapshot's map
  kData,         // a data block of a volume or snapshot
};

inline const char* BlockRoleName(BlockRole r) {
  switch (r) {
    case BlockRole::kSuperblock:
      return "superblock";
    case BlockRole::kSpaceMap:
      return "space-map";
    case BlockRole::kCatalogNode:
      return "catalog-node";
    case BlockRole::kCatalogData:
      return "catalog-block";
    case BlockRole::kMapNode:
      return "map-node";
    case BlockRole::kData:
      return "data";
  }
  return "?";
}

struct LayoutRecord {
  uint64_t id = 0;
  uint64_t parent_id = 0;
  uint8_t kind = 0;  // 1 volume, 2 snapshot, 3 attribute, 4 write log
  std::string name;
  std::string display;  // "vol", "vol@snap", "vol(log)", "vol(attribute)"
  uint64_t size_bytes = 0;
  format::MapEntry root;
  uint8_t height = 0;
};

// A tree that points at a map node or data block, and the VBNs it covers.
struct LayoutOwner {
  std::string record;  // LayoutRecord::display
  bool is_volume = false;
  uint8_t kind = 0;  // LayoutRecord::kind
  int level = -1;  // -1 data
  uint64_t first_vbn = 0;
  uint64_t vbn_count = 0;
};

struct PoolLayout {
  uint32_t block_bytes = 0;
  uint64_t pool_blocks = 0;
  uint64_t first_data_block = 0;
  uint64_t high_water = 0;
  uint64_t generation = 0;
  uint64_t superblock_pbn = 0;
  std::map<uint64_t, BlockRole> live;
  std::map<uint64_t, std::vector<LayoutOwner>> owners;  // map nodes and data blocks
  std::vector<LayoutRecord> records;
  std::vector<std::string> problems;  // checksum mismatches met on the way
};

namespace layout_internal {

inline Status ReadBlock(BlockDevice& dev, uint64_t pbn, uint32_t bs, Image* out) {
  out->assign(bs, std::byte{0});
  return dev.Read(pbn * bs, *out);
}

inline void WalkTree(BlockDevice& dev, PoolLayout* L, const format::MapEntry& ref, int level,
                     uint64_t base_vbn, BlockRole node_role, BlockRole data_role,
                     const LayoutRecord* record, const std::string& what,
                     std::vector<std::pair<uint64_t, format::MapEntry>>* leaves) {
  if (ref.pbn == 0) return;
  const uint32_t bs = L->block_bytes;
  const uint64_t fanout = bs / format::kMapEntryBytes;
  uint64_t span = 1;
  for (int i = 0; i <= level; ++i) span *= fanout;  // VBNs under this ref (level -1: 1)
  if (ref.pbn < L->first_data_block || ref.pbn >= L->high_water) {
    L->problems.push_back(what + ": pointer to block " + std::to_string(ref.pbn) +
                          " outside [first_data_block, high_water)");
    return;
  }
  L->live[ref.pbn] = level < 0 ? data_role : node_role;
  if (record) {
    L->owners[ref.pbn].push_back(
        {record->display, record->kind == 1, record->kind, level, base_vbn, span});
  }
  Image block;
  if (level < 0) {
    if (leaves) leaves->push_back({base_vbn, ref});
    return;  // data blocks are not read here (see ScanLayout's verify_data)
  }
  if (!ReadBlock(dev, ref.pbn, bs, &block).ok()) {
    L->problems.push_back(what + ": cannot read node " + std::to_string(ref.pbn));
    return;
  }
  if (format::Checksum(block) != ref.checksum) {
    L->problems.push_back(what + ": node " + std::to_string(ref.pbn) + " checksum mismatch");
    return;
  }
  const uint64_t child_span = span / fanout;
  for (uint64_t i = 0; i < fanout; ++i) {
    const format::MapEntry child = format::LoadMapEntry(block.data() + i * format::kMapEntryBytes);
    WalkTree(dev, L, child, level - 1, base_vbn + i * child_span, node_role, data_role, record,
             what, leaves);
  }
}

}  // namespace layout_internal

// Reads the pool on `dev` the way FORMAT.md describes it, without the
// engine's code: superblocks, space map, catalog, every tree. With
// `verify_data`, data blocks are read and checked against their entries too.
inline Result<PoolLayout> ScanLayout(BlockDevice& dev, bool verify_data = false) {
  using namespace layout_internal;
  PoolLayout L;
  std::optional<format::Superblock> best;
  uint64_t best_pbn = 0;
  Image buf(4096);
  auto try_at = [&](uint64_t offset, uint32_t expect_bs, uint64_t pbn) {
    if (offset + 4096 > dev.size_bytes()) return;
    if (!dev.Read(offset, buf).ok()) return;
    auto sb = format::DecodeSuperblock(buf);
    if (!sb.ok()) return;
    if (expect_bs != 0 && sb->block_bytes != expect_bs) return;
    if (!best || sb->generation > best->generation) {
      best = *sb;
      best_pbn = pbn;
    }
  };
  try_at(0, 0, 0);
  if (best) {
    try_at(best->block_bytes, best->block_bytes, 1);
  } else {
    for (uint32_t bs = format::kMinBlockBytes; bs <= format::kMaxBlockBytes; bs *= 2)
      try_at(bs, bs, 1);
  }
  if (!best) return Status::Corruption("no valid superblock");
  const format::Superblock& sb = *best;
  L.block_bytes = sb.block_bytes;
  L.pool_blocks = sb.pool_blocks;
  L.first_data_block = sb.first_data_block;
  L.high_water = sb.high_water;
  L.generation = sb.generation;
  L.superblock_pbn = best_pbn;
  L.live[best_pbn] = BlockRole::kSuperblock;
  const uint32_t bs = sb.block_bytes;

  // Space map: the top entries sit in the superblock; each directory block
  // holds the entries of the level below.
  auto geometry = format::ComputeSpaceMapGeometry(sb.pool_blocks, bs);
  if (!geometry.ok()) return geometry.status();
  const format::SpaceMapGeometry& g = *geometry;
  std::vector<format::SpaceMapEntry> entries(
      sb.space_map_top.begin(), sb.space_map_top.begin() + g.blocks_at_level[g.height - 1]);
  Image block;
  for (int level = g.height - 1; level >= 0; --level) {
    std::vector<format::SpaceMapEntry> below(level > 0 ? g.blocks_at_level[level - 1] : 0);
    for (uint64_t i = 0; i < entries.size(); ++i) {
      const format::SpaceMapEntry& e = entries[i];
      if (e.checksum == 0) continue;  // never written: zeros
      const uint64_t pbn = g.SlotPbn(level, i, e.slot);
      L.live[pbn] = BlockRole::kSpaceMap;
      if (!ReadBlock(dev, pbn, bs, &block).ok()) {
        L.problems.push_back("space map: cannot read block " + std::to_string(pbn));
        continue;
      }
      if (format::Checksum(block) != e.checksum) {
        L.problems.push_back("space map block (level " + std::to_string(level) + ", index " +
                             std::to_string(i) + ") at " + std::to_string(pbn) +
                             ": checksum mismatch");
        continue;
      }
      for (uint64_t j = 0; level > 0 && j < g.entries_per_dir; ++j) {
        const uint64_t child = i * g.entries_per_dir + j;
        if (child >= below.size()) break;
        below[child] = format::LoadSpaceMapEntry(block.data() + j * format::kSpaceMapEntryBytes);
      }
    }
    entries = std::move(below);
  }

  // The catalog tree and its records.
  std::vector<std::pair<uint64_t, format::MapEntry>> catalog_blocks;
  WalkTree(dev, &L, sb.catalog_root, sb.catalog_height - 1, 0, BlockRole::kCatalogNode,
           BlockRole::kCatalogData, nullptr, "catalog", &catalog_blocks);
  const uint32_t per_block = bs / format::kCatalogRecordBytes;
  for (const auto& [vbn, e] : catalog_blocks) {
    if (!ReadBlock(dev, e.pbn, bs, &block).ok() || format::Checksum(block) != e.checksum) {
      L.problems.push_back("catalog block " + std::to_string(vbn) + " at " + std::to_string(e.pbn) +
                           ": unreadable or checksum mismatch");
      continue;
    }
    for (uint32_t i = 0; i < per_block; ++i) {
      const std::byte* p = block.data() + i * format::kCatalogRecordBytes;
      LayoutRecord r;
      r.id = format::Load64(p);
      if (r.id == 0) continue;
      r.parent_id = format::Load64(p + 8);
      r.kind = static_cast<uint8_t>(p[16]);
      const uint8_t name_len = static_cast<uint8_t>(p[18]);
      r.height = static_cast<uint8_t>(p[19]);
      r.size_bytes = format::Load64(p + 24);
      r.root = {format::Load64(p + 32), format::Load64(p + 40)};
      r.name.assign(reinterpret_cast<const char*>(p + 72), std::min<uint8_t>(name_len, 128));
      L.records.push_back(r);
    }
  }
  for (LayoutRecord& r : L.records) {
    r.display = r.name;
    if (r.kind >= 2) {
      for (const LayoutRecord& v : L.records) {
        if (v.id == r.parent_id) r.display = v.name + (r.kind == 2 ? "@" + r.name : "(" + r.name + ")");
      }
    }
  }
  for (const LayoutRecord& r : L.records) {
    std::vector<std::pair<uint64_t, format::MapEntry>> data;
    WalkTree(dev, &L, r.root, r.height - 1, 0, BlockRole::kMapNode, BlockRole::kData, &r, r.display,
             verify_data ? &data : nullptr);
    for (const auto& [vbn, e] : data) {
      if (!ReadBlock(dev, e.pbn, bs, &block).ok() || format::Checksum(block) != e.checksum) {
        L.problems.push_back(r.display + " block " + std::to_string(vbn) + " at " +
                             std::to_string(e.pbn) + ": data checksum mismatch");
      }
    }
  }
  return L;
}

// ---- Reading a pool back ----------------------------------------------------------

// Reads every volume of the pool, and every snapshot through a throwaway clone
// (so the pool is changed: clones are made and deleted). Errors go to `error`.
inline std::optional<ModelState> ReadPoolState(Pool& pool, std::string* error,
                                               bool with_snapshots = true) {
  ModelState out;
  const std::vector<VolumeInfo> volumes = pool.ListVolumes();
  for (const VolumeInfo& info : volumes) {
    auto v = pool.OpenVolume(info.name);
    if (!v.ok()) {
      *error = "open volume " + info.name + ": " + v.status().ToString();
      return std::nullopt;
    }
    auto img = std::make_shared<Image>(info.size_bytes);
    Status s = (*v)->Read(0, *img);
    if (!s.ok()) {
      *error = "read volume " + info.name + ": " + s.ToString();
      return std::nullopt;
    }
    out.volumes[info.name] = std::move(img);
  }
  if (!with_snapshots) return out;
  int n = 0;
  for (const VolumeInfo& info : volumes) {
    auto snaps = pool.ListSnapshots(info.name);
    if (!snaps.ok()) {
      *error = "list snapshots of " + info.name + ": " + snaps.status().ToString();
      return std::nullopt;
    }
    for (const SnapshotInfo& snap : *snaps) {
      const std::string view = "zz-view-" + std::to_string(n++);
      auto c = pool.Clone(info.name, snap.name, view);
      if (!c.ok()) {
        *error = "clone " + SnapKey(info.name, snap.name) + ": " + c.status().ToString();
        return std::nullopt;
      }
      auto img = std::make_shared<Image>(snap.size_bytes);
      auto v = pool.OpenVolume(view);
      Status s = v.ok() ? (*v)->Read(0, *img) : v.status();
      if (!s.ok()) {
        *error = "read snapshot " + SnapKey(info.name, snap.name) + ": " + s.ToString();
        return std::nullopt;
      }
      s = pool.DeleteVolume(view);
      if (!s.ok()) {
        *error = "delete " + view + ": " + s.ToString();
        return std::nullopt;
      }
      out.snapshots[SnapKey(info.name, snap.name)] = std::move(img);
    }
  }
  return out;
}

// ---- Checking a recovered image against the oracle --------------------------------

struct RecoveryCheck {
  bool check_open_reads = true;  // Open reads only superblocks and catalog blocks
  bool scrub = true;
  bool reuse = true;  // after the checks, write + flush + fsck again
};

namespace recovery_internal {

inline bool BlockMatches(const Image& actual, const Image& candidate, uint64_t begin,
                         uint64_t end) {
  const uint64_t common = std::min<uint64_t>(end, std::max<uint64_t>(begin, candidate.size()));
  if (common > begin &&
      std::memcmp(actual.data() + begin, candidate.data() + begin, common - begin) != 0) {
    return false;
  }
  for (uint64_t i = common; i < end; ++i) {  // beyond the candidate's size: zeros
    if (actual[i] != std::byte{0}) return false;
  }
  return true;
}

}  // namespace recovery_internal

// Opens the pool on `dev` (after a crash or a failure) and checks it against
// the oracle, returning the violations (empty: all good):
//  - Open succeeds and reads nothing but superblocks and catalog blocks/nodes;
//  - Fsck::Check is clean (no leak, no bad count, no bad checksum), Scrub too;
//  - the catalog (volumes, snapshots, sizes) is that of one of the oracle's
//    states: every operation is all there or not at all;
//  - every block of every volume is all-old or all-new (oracle history);
//  - every snapshot of the last commit that no later operation deleted is
//    unchanged, and no snapshot has contents it never had;
//  - the whole pool is exactly one of the oracle's states (commit atomicity);
//    `landed` receives its index (0: the last successful flush/commit), or -1;
//  - the pool is usable: a write, a flush and fsck again.
inline std::vector<std::string> CheckRecovered(MemoryDevice& dev, const PoolOptions& options,
                                               const CrashOracle& oracle,
                                               const RecoveryCheck& what = {},
                                               int* landed = nullptr) {
  using recovery_internal::BlockMatches;
  std::vector<std::string> errors;
  if (landed) *landed = -1;
  std::optional<PoolLayout> layout;
  if (what.check_open_reads) {
    auto l = ScanLayout(dev);
    if (l.ok()) layout = std::move(l).value();
  }
  RecordingDevice rec(dev);
  auto opened = Pool::Open(rec, options);
  if (!opened.ok()) {
    errors.push_back("Pool::Open failed: " + opened.status().ToString());
    return errors;
  }
  std::unique_ptr<Pool> pool = std::move(opened).value();
  if (layout) {
    const uint32_t bs = layout->block_bytes;
    for (const RecordingDevice::Op& op : rec.ops()) {
      bool ok = op.op == IoOp::kRead;
      if (ok) {
        bool superblock = op.offset_bytes == 0;
        for (uint32_t b = format::kMinBlockBytes; b <= format::kMaxBlockBytes; b *= 2) {
          superblock = superblock || op.offset_bytes == b;
        }
        superblock = superblock && op.length_bytes <= format::kMaxBlockBytes;
        auto it = layout->live.find(op.offset_bytes / bs);
        const bool catalog =
            op.offset_bytes % bs == 0 && op.length_bytes == bs && it != layout->live.end() &&
            (it->second == BlockRole::kCatalogNode || it->second == BlockRole::kCatalogData);
        ok = superblock || catalog;
      }
      if (!ok) {
        errors.push_back(std::string("Pool::Open did ") + IoOpName(op.op) + " at byte " +
                         std::to_string(op.offset_bytes) + " (+" + std::to_string(op.length_bytes) +
                         "): not a superblock or catalog block (Open must not scan data)");
        break;
      }
    }
  }
  rec.set_recording(false);

  auto fsck = Fsck::Check(*pool);
  if (!fsck.ok()) {
    errors.push_back("Fsck::Check failed to run: " + fsck.status().ToString());
    return errors;
  }
  if (!fsck->clean()) errors.push_back("Fsck::Check not clean: " + fsck->ToString());
  if (what.scrub) {
    auto scrub = Fsck::Scrub(*pool);
    if (!scrub.ok()) {
      errors.push_back("Fsck::Scrub failed to run: " + scrub.status().ToString());
    } else if (!scrub->clean()) {
      errors.push_back("Fsck::Scrub not clean: " + scrub->ToString());
    }
  }

  const std::vector<ModelState>& states = oracle.states();

  // The catalog: that of one of the states.
  ModelState catalog;
  for (const VolumeInfo& v : pool->ListVolumes()) {
    catalog.volumes[v.name] = std::make_shared<const Image>(v.size_bytes);
    auto snaps = pool->ListSnapshots(v.name);
    if (!snaps.ok()) {
      errors.push_back("ListSnapshots(" + v.name + "): " + snaps.status().ToString());
      continue;
    }
    for (const SnapshotInfo& s : *snaps) {
      catalog.snapshots[SnapKey(v.name, s.name)] = std::make_shared<const Image>(s.size_bytes);
    }
  }
  const std::string actual_catalog = CatalogOf(catalog);
  bool catalog_ok = false;
  for (const ModelState& st : states) catalog_ok = catalog_ok || actual_catalog == CatalogOf(st);
  if (!catalog_ok) {
    std::string expected;
    for (const ModelState& st : states) expected += "\n      " + CatalogOf(st);
    errors.push_back("catalog is " + actual_catalog +
                     "; expected the last commit's or a later one:" + expected);
  }

  // Volumes: per block, all-old or all-new.
  std::string read_error;
  std::optional<ModelState> actual = ReadPoolState(*pool, &read_error, /*with_snapshots=*/false);
  if (!actual) {
    errors.push_back(read_error);
    return errors;
  }
  const uint64_t bs = pool->block_bytes();
  for (const auto& [name, image] : actual->volumes) {
    auto h = oracle.history().find(name);
    if (h == oracle.history().end()) {
      errors.push_back("volume " + name + " exists but was never created");
      continue;
    }
    int bad_blocks = 0;
    for (uint64_t begin = 0; begin < image->size(); begin += bs) {
      const uint64_t end = std::min<uint64_t>(image->size(), begin + bs);
      bool any = false;
      for (const ImagePtr& candidate : h->second)
        any = any || BlockMatches(*image, *candidate, begin, end);
      if (!any && bad_blocks++ < 3) {
        errors.push_back("volume " + name + " block " + std::to_string(begin / bs) + " (offset " +
                         std::to_string(begin) + ") matches none of its " +
                         std::to_string(h->second.size()) +
                         " candidate images (last commit, then after each later write/trim/"
                         "rollback): torn or lost");
      }
    }
  }

  // Snapshots (through clones: this changes the pool).
  std::optional<ModelState> full = ReadPoolState(*pool, &read_error, /*with_snapshots=*/true);
  if (!full) {
    errors.push_back(read_error);
    return errors;
  }
  for (const auto& [key, image] : full->snapshots) {
    bool known = false;
    for (const ModelState& st : states) {
      auto it = st.snapshots.find(key);
      known = known || (it != st.snapshots.end() && SameImage(it->second, image));
    }
    if (!known) errors.push_back("snapshot " + key + " has contents it never had");
  }
  for (const auto& [key, image] : oracle.durable().snapshots) {
    bool may_be_gone = false;
    for (const ModelState& st : states) may_be_gone = may_be_gone || !st.snapshots.count(key);
    if (!may_be_gone && !full->snapshots.count(key)) {
      errors.push_back("snapshot " + key + " of the last commit is gone");
    }
  }

  // Atomicity of the whole state.
  int match = -1;
  for (size_t i = 0; i < states.size() && match < 0; ++i) {
    if (*full == states[i]) match = static_cast<int>(i);
  }
  if (landed) *landed = match;
  if (match < 0 && errors.empty()) {
    std::string diff;
    for (const auto& [name, image] : full->volumes) {
      auto it = oracle.durable().volumes.find(name);
      if (it == oracle.durable().volumes.end() || !SameImage(it->second, image)) diff += " " + name;
    }
    errors.push_back(
        "pool is not the state after any prefix of the operations (mixed state; "
        "volumes differing from the last commit:" +
        diff + ")");
  }

  if (what.reuse && errors.empty()) {
    // The recovered pool must be fully usable: allocate, write, commit.
    Status s;
    std::string vol;
    if (!full->volumes.empty()) {
      vol = full->volumes.begin()->first;
    } else {
      vol = "zz-after";
      s = pool->CreateVolume(vol, 16 * bs).status();
    }
    if (s.ok()) {
      auto v = pool->OpenVolume(vol);
      s = v.status();
      if (s.ok()) {
        Image data = PatternBytes(4242, std::min<uint64_t>(2 * bs, (*v)->size_bytes()));
        s = (*v)->Write(0, data);
        if (s.ok()) s = (*v)->Flush();
        Image back(data.size());
        if (s.ok()) s = (*v)->Read(0, back);
        if (s.ok() && back != data) s = Status::Corruption("read back differs");
      }
    }
    if (!s.ok()) errors.push_back("recovered pool is not usable: " + s.ToString());
    auto again = Fsck::Check(*pool);
    if (!again.ok() || !again->clean()) {
      errors.push_back("Fsck::Check after using the recovered pool: " +
                       (again.ok() ? again->ToString() : again.status().ToString()));
    }
  }
  return errors;
}

}  // namespace snapdisk::testing
