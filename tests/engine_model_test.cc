// Model-based randomized test of the engine: thousands of operations per seed
// (aligned and unaligned writes, trims, write-zeroes, flushes, snapshots,
// clones, rollbacks, deletes, reopens) against an in-memory oracle, with a
// tiny metadata cache so eviction and reloads are exercised. Every seed is
// printed; repeat one with --seed N, raise the sizes with --scale N.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/fsck.h"
#include "engine/pool.h"
#include "engine/volume.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using Image = std::vector<std::byte>;

class EngineModel {
 public:
  EngineModel(uint64_t seed, uint32_t block_bytes)
      : rng_(seed), block_bytes_(block_bytes), dev_(testing::NewMemoryDevice(96 << 20)) {
    options_.block_bytes = block_bytes;
    options_.cache_bytes = 16 * block_bytes;  // tiny: constant eviction
    pool_ = testing::MustCreatePool(*dev_, options_);
  }

  void Run(int ops) {
    for (int i = 0; i < ops && !::testing::Test::HasFatalFailure(); ++i) {
      Step(i);
    }
    CheckAll("end");
    auto report = Fsck::Check(*pool_);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(report->clean()) << report->ToString();
  }

 private:
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  std::string Pick(const std::map<std::string, Image>& m) {
    auto it = m.begin();
    std::advance(it, Rand(m.size()));
    return it->first;
  }

  Volume* Vol(const std::string& name) {
    auto v = pool_->OpenVolume(name);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return *v;
  }

  void Step(int i) {
    const uint64_t op = Rand(100);
    if (volumes_.empty() || (op < 3 && volumes_.size() < 4)) {
      std::string name = "v" + std::to_string(next_id_++);
      uint64_t size = (1 + Rand(4)) * (1 << 20) + Rand(8) * 512;
      ASSERT_TRUE(pool_->CreateVolume(name, size).ok());
      volumes_[name] = Image(size);
      return;
    }
    const std::string vol = Pick(volumes_);
    Image& image = volumes_[vol];
    const uint64_t size = image.size();
    if (op < 45) {  // write
      uint64_t len = Rand(3) == 0 ? 1 + Rand(3 * block_bytes_) : block_bytes_ * (1 + Rand(8));
      len = std::min(len, size);
      uint64_t off =
          Rand(2) ? Rand(size - len + 1) : Rand((size - len) / block_bytes_ + 1) * block_bytes_;
      auto data = testing::PatternBytes(rng_(), len);
      Status s = Vol(vol)->Write(off, data);
      ASSERT_TRUE(s.ok()) << "op " << i << ": " << s.ToString();
      std::copy(data.begin(), data.end(), image.begin() + off);
    } else if (op < 55) {  // trim / write zeroes
      uint64_t len = std::min<uint64_t>(size, 1 + Rand(16 * block_bytes_));
      uint64_t off = Rand(size - len + 1);
      Status s = Rand(2) ? Vol(vol)->Trim(off, len) : Vol(vol)->WriteZeroes(off, len);
      ASSERT_TRUE(s.ok()) << "op " << i << ": " << s.ToString();
      std::fill(image.begin() + off, image.begin() + off + len, std::byte{0});
    } else if (op < 70) {  // read and compare
      uint64_t len = std::min<uint64_t>(size, 1 + Rand(8 * block_bytes_));
      uint64_t off = Rand(size - len + 1);
      Image got(len);
      Status s = Vol(vol)->Read(off, got);
      ASSERT_TRUE(s.ok()) << "op " << i << ": " << s.ToString();
      ASSERT_TRUE(std::equal(got.begin(), got.end(), image.begin() + off))
          << "op " << i << ": volume " << vol << " differs at offset " << off;
    } else if (op < 76) {
      ASSERT_TRUE(Vol(vol)->Flush().ok());
    } else if (op < 83) {  // snapshot
      std::string snap = "s" + std::to_string(next_id_++);
      auto s = pool_->CreateSnapshot(vol, snap);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      snapshots_[vol + "@" + snap] = image;
    } else if (op < 87 && !snapshots_.empty()) {  // delete a snapshot
      std::string key = Pick(snapshots_);
      auto at = key.find('@');
      ASSERT_TRUE(pool_->DeleteSnapshot(key.substr(0, at), key.substr(at + 1)).ok());
      snapshots_.erase(key);
    } else if (op < 91) {  // clone or rollback from a snapshot of this volume
      std::vector<std::string> mine;
      for (auto& [key, img] : snapshots_) {
        if (key.compare(0, vol.size() + 1, vol + "@") == 0) mine.push_back(key);
      }
      if (mine.empty()) return;
      const std::string key = mine[Rand(mine.size())];
      const std::string snap = key.substr(vol.size() + 1);
      if (Rand(2) && volumes_.size() < 6) {
        std::string name = "c" + std::to_string(next_id_++);
        auto c = pool_->Clone(vol, snap, name);
        ASSERT_TRUE(c.ok()) << c.status().ToString();
        volumes_[name] = snapshots_[key];
      } else {
        Status s = pool_->Rollback(vol, snap);
        ASSERT_TRUE(s.ok()) << s.ToString();
        Image restored = snapshots_[key];
        restored.resize(size);  // a grown volume keeps its size
        image = restored;
      }
    } else if (op < 93) {  // delete a volume without snapshots
      bool has = false;
      for (auto& [key, img] : snapshots_) has |= key.compare(0, vol.size() + 1, vol + "@") == 0;
      if (has || volumes_.size() < 2) return;
      ASSERT_TRUE(pool_->DeleteVolume(vol).ok());
      volumes_.erase(vol);
    } else if (op < 95) {  // grow
      uint64_t grown = size + Rand(4) * block_bytes_ + 512 * Rand(4);
      ASSERT_TRUE(pool_->GrowVolume(vol, grown).ok());
      image.resize(grown);
    } else if (op < 97) {  // close and reopen
      ASSERT_TRUE(pool_->Close().ok());
      pool_.reset();
      pool_ = testing::MustOpenPool(*dev_, options_);
      CheckAll("after reopen at op " + std::to_string(i));
    } else {  // diff against a snapshot equals the model's difference
      CheckDiff(vol);
    }
  }

  void CheckDiff(const std::string& vol) {
    for (auto& [key, snap_image] : snapshots_) {
      if (key.compare(0, vol.size() + 1, vol + "@") != 0) continue;
      auto diff = pool_->Diff(vol, key.substr(vol.size() + 1), "");
      ASSERT_TRUE(diff.ok()) << diff.status().ToString();
      const Image& live = volumes_[vol];
      // Every block outside the diff must be equal in both images.
      std::vector<bool> changed((live.size() + block_bytes_ - 1) / block_bytes_, false);
      for (const Extent& e : *diff) {
        for (uint64_t b = e.offset_bytes / block_bytes_;
             b * block_bytes_ < e.offset_bytes + e.length_bytes; ++b) {
          changed[b] = true;
        }
      }
      for (uint64_t b = 0; b < changed.size(); ++b) {
        if (changed[b]) continue;
        for (uint64_t off = b * block_bytes_;
             off < std::min<uint64_t>(live.size(), (b + 1) * block_bytes_); ++off) {
          std::byte old = off < snap_image.size() ? snap_image[off] : std::byte{0};
          ASSERT_EQ(old, live[off]) << "diff of " << key << " missed block " << b;
        }
      }
      return;
    }
  }

  void CheckAll(const std::string& when) {
    for (auto& [name, image] : volumes_) {
      Image got(image.size());
      Status s = Vol(name)->Read(0, got);
      ASSERT_TRUE(s.ok()) << when << ": " << s.ToString();
      ASSERT_TRUE(got == image) << when << ": volume " << name << " differs";
    }
    for (auto& [key, image] : snapshots_) {
      auto at = key.find('@');
      // Read snapshots through a throwaway clone.
      auto c = pool_->Clone(key.substr(0, at), key.substr(at + 1), "check");
      ASSERT_TRUE(c.ok()) << when << ": " << c.status().ToString();
      Image got(image.size());
      ASSERT_TRUE(Vol("check")->Read(0, got).ok());
      ASSERT_TRUE(got == image) << when << ": snapshot " << key << " differs";
      ASSERT_TRUE(pool_->DeleteVolume("check").ok());
    }
  }

  std::mt19937_64 rng_;
  const uint32_t block_bytes_;
  std::unique_ptr<MemoryDevice> dev_;
  PoolOptions options_;
  std::unique_ptr<Pool> pool_;
  std::map<std::string, Image> volumes_;
  std::map<std::string, Image> snapshots_;
  int next_id_ = 0;
};

TEST(EngineModelTest, RandomOperationsMatchOracle) {
  const uint64_t base = testing::TestSeed(20261121);
  const uint64_t scale = testing::TestScale();
  const uint32_t block_sizes[] = {4096, 8192, 65536};
  // Sanitized builds (~15x slower) run one seed per block size, half as long.
  const uint64_t rounds = (testing::BuiltWithSanitizers() ? 3 : 6) * scale;
  for (uint64_t round = 0; round < rounds; ++round) {
    const uint64_t seed = base + round;
    const uint32_t block = block_sizes[round % 3];
    SCOPED_TRACE("seed " + std::to_string(seed) + " block " + std::to_string(block));
    EngineModel model(seed, block);
    const bool sanitized = testing::BuiltWithSanitizers();
    model.Run(block == 65536 ? (sanitized ? 400 : 800) : (sanitized ? 1000 : 2000));
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace snapdisk
