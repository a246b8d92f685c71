// Backups into a WormStore: the manifest and chunk codecs, every method's
// round trip (backed up, restored into a new volume, compared byte for byte
// with an oracle snapshot taken at the backup point), dedup, what each method
// reads (changed blocks only; through the volume's QoS or not; the rate cap),
// and failure: cancel, device read errors and store put errors leave no set
// and no extra snapshot.
#include "snapshot/backup.h"

#include <gtest/gtest.h>

#include <chrono>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "disk/clock.h"
#include "disk/fault_device.h"
#include "disk/file_device.h"
#include "engine/aligned_buffer.h"
#include "engine/pool.h"
#include "engine/volume.h"
#include "engine/worm_store.h"
#include "restore/restore_apply.h"
#include "snapshot/backup_history.h"
#include "snapshot/backup_set.h"
#include "snapshot/chunk_pipeline.h"
#include "support/backup_restore.h"
#include "engine/memory_worm_store.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"
#include "support/ticking_clock.h"

namespace snapdisk {
namespace {


constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * kKiB;
constexpr uint64_t kGiB = kMiB * kKiB;
constexpr int64_t kDayNs = int64_t{86'400} * 1'000'000'000;
constexpr uint32_t kBlock = 4096;

WormStoreConfig SmallChunks() {
  WormStoreConfig c;
  c.chunk_bytes = 64 * kKiB;
  c.zstd_level = 1;
  return c;
}

std::span<const std::byte> AsBytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// ---- Codecs -------------------------------------------------------------------

TEST(BackupSetCodecTest, ChunkRoundTrip) {
  for (size_t len : {size_t{1}, size_t{4096}, size_t{65536}, size_t{1} << 20}) {
    std::vector<std::byte> raw = testing::PatternBytes(len, len);
    if (len > 4096) std::fill(raw.begin(), raw.begin() + len / 2, std::byte{0});  // compressible
    const std::string hash = ChunkHash(raw);
    ASSERT_EQ(hash.size(), 32u);
    std::vector<std::byte> object = EncodeChunk(raw, 3);
    ASSERT_GE(object.size(), 12u);
    EXPECT_EQ(std::memcmp(object.data(), "SDCK", 4), 0);
    Result<std::vector<std::byte>> back = DecodeChunk(object, hash, "test");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, raw);
  }
  EXPECT_EQ(ChunkKey("0123456789abcdef0123456789abcdef"),
            "chunks/01/0123456789abcdef0123456789abcdef");
  EXPECT_EQ(Sha256Hex(AsBytes("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(BackupSetCodecTest, ChunkCorruptionIsDetectedAndNamesTheChunk) {
  std::vector<std::byte> raw = testing::PatternBytes(11, 64 * kKiB);
  std::fill(raw.begin(), raw.begin() + 20000, std::byte{7});
  const std::string hash = ChunkHash(raw);
  const std::vector<std::byte> good = EncodeChunk(raw, 1);
  struct Damage {
    const char* what;
    std::function<void(std::vector<std::byte>&)> apply;
  };
  std::vector<Damage> damages = {
      {"empty", [](auto& o) { o.clear(); }},
      {"short header", [](auto& o) { o.resize(7); }},
      {"magic", [](auto& o) { o[0] = std::byte{'X'}; }},
      {"version", [](auto& o) { o[4] = std::byte{2}; }},
      {"codec", [](auto& o) { o[5] = std::byte{9}; }},
      {"reserved", [](auto& o) { o[6] = std::byte{1}; }},
      {"length", [](auto& o) { o[8] ^= std::byte{1}; }},
      {"huge length", [](auto& o) { o[11] = std::byte{0x7f}; }},
      {"truncated frame", [](auto& o) { o.erase(o.end() - 5, o.end()); }},
      {"trailing bytes", [](auto& o) { o.push_back(std::byte{0}); }},
      {"frame body", [](auto& o) { o[o.size() / 2] ^= std::byte{0x10}; }},
      {"frame end", [](auto& o) { o[o.size() - 1] ^= std::byte{0x01}; }},
  };
  for (const Damage& d : damages) {
    std::vector<std::byte> bad = good;
    d.apply(bad);
    Result<std::vector<std::byte>> r = DecodeChunk(bad, hash, "set F9");
    ASSERT_FALSE(r.ok()) << d.what;
    EXPECT_TRUE(r.status().IsCorruption()) << d.what << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find(hash), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().message().find("set F9"), std::string::npos) << r.status().ToString();
  }
  // Good bytes under another chunk's name: the content hash does not match.
  std::vector<std::byte> other = testing::PatternBytes(12, 4096);
  Result<std::vector<std::byte>> r = DecodeChunk(EncodeChunk(other, 1), hash, "");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("content hash"), std::string::npos);
}

BackupSet SampleSet() {
  BackupSet s;
  s.id = "I7";
  s.sequence = 7;
  s.volume = "db-1";
  s.volume_id = 12;
  s.lineage = 12;
  s.type = BackupType::kIncr;
  s.first_lsn = 100;
  s.last_lsn = 250;
  s.base = "F3";
  s.started_unix_ns = 1'700'000'000'000'000'000;
  s.finished_unix_ns = s.started_unix_ns + 5;
  s.consistent_unix_ns = s.started_unix_ns - 1;
  s.block_bytes = 4096;
  s.volume_size_bytes = 64 * kMiB;
  const std::string h1(32, 'a'), h2 = "0123456789abcdef0123456789abcdef";
  s.chunks = {{h1, 65536, 1000, true, ChunkKey(h1)}, {h2, 8192, 300, false, ChunkKey(h2) + ".2"}};
  s.extents = {{0, 8192, h2, 0}, {65536, 4096, h1, 4096}, {131072, 65536, h1, 0}};
  s.zero_extents = {{8192, 4096}, {1 * kMiB, 2 * kMiB}};
  s.data_bytes = 8192 + 4096 + 65536;
  s.stored_bytes = 1000;
  s.prev_sha256 = std::string(64, 'f');
  return s;
}

TEST(BackupSetCodecTest, ManifestRoundTrip) {
  const BackupSet s = SampleSet();
  EXPECT_EQ(ManifestKey(s), "sets/db-1/0000000007-I7.json");
  const std::string json = EncodeManifest(s);
  Result<BackupSet> back = DecodeManifest(json, "k");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, s.id);
  EXPECT_EQ(back->sequence, s.sequence);
  EXPECT_EQ(back->volume, s.volume);
  EXPECT_EQ(back->volume_id, s.volume_id);
  EXPECT_EQ(back->lineage, s.lineage);
  EXPECT_EQ(back->type, s.type);
  EXPECT_EQ(back->first_lsn, s.first_lsn);
  EXPECT_EQ(back->last_lsn, s.last_lsn);
  EXPECT_EQ(back->base, s.base);
  EXPECT_EQ(back->started_unix_ns, s.started_unix_ns);
  EXPECT_EQ(back->finished_unix_ns, s.finished_unix_ns);
  EXPECT_EQ(back->consistent_unix_ns, s.consistent_unix_ns);
  EXPECT_EQ(back->block_bytes, s.block_bytes);
  EXPECT_EQ(back->volume_size_bytes, s.volume_size_bytes);
  EXPECT_EQ(back->data_bytes, s.data_bytes);
  EXPECT_EQ(back->stored_bytes, s.stored_bytes);
  EXPECT_EQ(back->prev_sha256, s.prev_sha256);
  ASSERT_EQ(back->chunks.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back->chunks[i].hash, s.chunks[i].hash);
    EXPECT_EQ(back->chunks[i].raw_bytes, s.chunks[i].raw_bytes);
    EXPECT_EQ(back->chunks[i].stored_bytes, s.chunks[i].stored_bytes);
    EXPECT_EQ(back->chunks[i].new_in_set, s.chunks[i].new_in_set);
    EXPECT_EQ(back->chunks[i].key, s.chunks[i].key);
  }
  ASSERT_EQ(back->extents.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back->extents[i].offset_bytes, s.extents[i].offset_bytes);
    EXPECT_EQ(back->extents[i].length_bytes, s.extents[i].length_bytes);
    EXPECT_EQ(back->extents[i].chunk, s.extents[i].chunk);
    EXPECT_EQ(back->extents[i].chunk_offset_bytes, s.extents[i].chunk_offset_bytes);
  }
  ASSERT_EQ(back->zero_extents.size(), 2u);
  EXPECT_EQ(back->zero_extents[1].offset_bytes, 1 * kMiB);
  EXPECT_EQ(back->zero_extents[1].length_bytes, 2 * kMiB);
  EXPECT_EQ(EncodeManifest(*back), json);  // stable
}

TEST(BackupSetCodecTest, MalformedManifestsAreRejectedNamingTheKey) {
  const std::string good = EncodeManifest(SampleSet());
  ASSERT_TRUE(DecodeManifest(good, "k").ok());
  auto edit = [&](const std::function<void(nlohmann::json&)>& f) {
    nlohmann::json j = nlohmann::json::parse(good);
    f(j);
    return j.dump();
  };
  std::vector<std::pair<std::string, std::string>> cases = {
      {"empty", ""},
      {"not json", "{\"format\": "},
      {"array", "[1,2,3]"},
      {"truncated", good.substr(0, good.size() / 2)},
      {"format", edit([](auto& j) { j["format"] = "other"; })},
      {"version", edit([](auto& j) { j["version"] = 99; })},
      {"missing id", edit([](auto& j) { j.erase("id"); })},
      {"id mismatch", edit([](auto& j) { j["id"] = "F7"; })},
      {"sequence 0", edit([](auto& j) { j["sequence"] = 0; })},
      {"type", edit([](auto& j) { j["type"] = "weekly"; })},
      {"volume name", edit([](auto& j) { j["volume"] = "a/b"; })},
      {"negative lsn", edit([](auto& j) { j["last_lsn"] = -1; })},
      {"string lsn", edit([](auto& j) { j["first_lsn"] = "100"; })},
      {"float size", edit([](auto& j) { j["volume_size_bytes"] = 1.5; })},
      {"block size", edit([](auto& j) { j["block_bytes"] = 3000; })},
      {"incr without base", edit([](auto& j) { j["base"] = ""; })},
      {"prev sha", edit([](auto& j) { j["prev_sha256"] = "xyz"; })},
      {"chunks not array", edit([](auto& j) { j["chunks"] = 5; })},
      {"bad hash", edit([](auto& j) { j["chunks"][0]["hash"] = "ZZ"; })},
      {"duplicate chunk", edit([](auto& j) { j["chunks"][1]["hash"] = j["chunks"][0]["hash"]; })},
      {"chunk size 0", edit([](auto& j) { j["chunks"][0]["raw_bytes"] = 0; })},
      {"chunk key", edit([](auto& j) { j["chunks"][0]["key"] = "chunks/zz/other"; })},
      {"new not bool", edit([](auto& j) { j["chunks"][0]["new"] = 1; })},
      {"extent shape", edit([](auto& j) {
         j["extents"][0] = nlohmann::json::array({1, 2});
       })},
      {"extent empty", edit([](auto& j) { j["extents"][0][1] = 0; })},
      {"extent overlap", edit([](auto& j) { j["extents"][1][0] = 4096; })},
      {"extent unsorted", edit([](auto& j) { std::swap(j["extents"][0], j["extents"][2]); })},
      {"extent past volume", edit([](auto& j) { j["extents"][2][0] = 64 * kMiB; })},
      {"extent overflow", edit([](auto& j) { j["extents"][2][1] = UINT64_MAX; })},
      {"chunk index", edit([](auto& j) { j["extents"][0][2] = 9; })},
      {"past chunk end", edit([](auto& j) { j["extents"][0][3] = 4096; })},
      {"zero overlap", edit([](auto& j) { j["zero_extents"][0][0] = 4096; })},
      {"zero empty", edit([](auto& j) { j["zero_extents"][0][1] = 0; })},
  };
  for (const auto& [what, json] : cases) {
    Result<BackupSet> r = DecodeManifest(json, "sets/db-1/0000000007-I7.json");
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_NE(r.status().message().find("sets/db-1/0000000007-I7.json"), std::string::npos)
        << what << ": " << r.status().ToString();
  }
}

TEST(BackupSetCodecTest, SequencesAreReservedPerStoreAndVolume) {
  MemoryWormStore store;
  Result<uint64_t> a = ReserveBackupSequence(store, "a");
  Result<uint64_t> b = ReserveBackupSequence(store, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  Result<uint64_t> again = ReserveBackupSequence(store, "a");
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(again.status().IsBusy()) << again.status().ToString();
  EXPECT_EQ(*NextBackupSequence(store), std::max(*a, *b) + 1);
  ReleaseBackupSequence(store, "a", *a);
  ReleaseBackupSequence(store, "b", *b);
  EXPECT_EQ(*NextBackupSequence(store), 1u);
  EXPECT_EQ(*ReserveBackupSequence(store, "a", 40), 40u);
  ReleaseBackupSequence(store, "a", 40);
}

// ---- Backups of a pool volume ------------------------------------------------------

class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    device_ = testing::NewMemoryDevice(512 * kMiB);
    pool_ = testing::MustCreatePool(*device_);
    store_ = std::make_unique<MemoryWormStore>(SmallChunks());
  }

  Volume* NewVolume(const std::string& name, uint64_t size_bytes) {
    Result<VolumeInfo> v = pool_->CreateVolume(name, size_bytes);
    SNAPDISK_CHECK(v.ok(), v.status().ToString().c_str());
    return *pool_->OpenVolume(name);
  }

  void Write(Volume* v, uint64_t offset, uint64_t length, uint64_t seed) {
    std::vector<std::byte> data = testing::PatternBytes(seed, length);
    ASSERT_TRUE(v->Write(offset, data).ok());
  }

  // Random block-aligned writes, trims and write-zeroes, some long, some
  // block-sized, some unaligned to chunks.
  void Churn(Volume* v, std::mt19937_64& rng, int ops) {
    const uint64_t blocks = v->size_bytes() / kBlock;
    for (int i = 0; i < ops; ++i) {
      const uint64_t first = rng() % blocks;
      const uint64_t count =
          std::min<uint64_t>(blocks - first, 1 + rng() % (rng() % 4 == 0 ? 64 : 4));
      const int what = static_cast<int>(rng() % 10);
      if (what < 7) {
        Write(v, first * kBlock, count * kBlock, rng());
      } else if (what < 9) {
        ASSERT_TRUE(v->Trim(first * kBlock, count * kBlock).ok());
      } else {
        ASSERT_TRUE(v->WriteZeroes(first * kBlock, count * kBlock).ok());
      }
    }
  }

  Result<BackupSet> Backup(const std::string& volume, BackupMethod method,
                           BackupOptions options = {}) {
    options.method = method;
    Result<std::unique_ptr<BackupJob>> job = BackupJob::Start(*pool_, *store_, volume, options);
    if (!job.ok()) return job.status();
    return (*job)->Run();
  }

  BackupSet MustBackup(const std::string& volume, BackupMethod method, BackupOptions options = {}) {
    Result<BackupSet> set = Backup(volume, method, options);
    SNAPDISK_CHECK(set.ok(), set.status().ToString().c_str());
    return std::move(set).value();
  }

  // An oracle: a snapshot of `volume` now.
  std::string Oracle(const std::string& volume) {
    const std::string name = "oracle-" + std::to_string(oracles_++);
    SNAPDISK_CHECK(pool_->CreateSnapshot(volume, name).ok(), "oracle snapshot");
    return name;
  }

  // Restores `id` into a new volume and compares it with the oracle.
  void ExpectRestores(const std::string& id, const std::string& volume, const std::string& oracle) {
    const std::string target = "restored-" + std::to_string(restores_++);
    Result<testing::RestoreReport> r = testing::RestoreBackupSet(*store_, id, *pool_, target);
    ASSERT_TRUE(r.ok()) << id << ": " << r.status().ToString();
    Volume* restored = *pool_->OpenVolume(target);
    Volume* expected = *pool_->OpenSnapshot(volume, oracle);
    EXPECT_EQ(testing::CompareVolumes(*restored, *expected), "") << "set " << id;
    ASSERT_TRUE(pool_->DeleteVolume(target).ok());
  }

  std::set<std::string> BackupSnapshots(const std::string& volume) {
    std::set<std::string> out;
    std::vector<SnapshotInfo> snaps = *pool_->ListSnapshots(volume);
    for (const SnapshotInfo& s : snaps) {
      if (s.name.rfind("backup-", 0) == 0) out.insert(s.name);
    }
    return out;
  }

  std::unique_ptr<MemoryDevice> device_;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<MemoryWormStore> store_;
  int oracles_ = 0;
  int restores_ = 0;
};

TEST_F(BackupTest, SnapshotBackupsAreIncrementalForeverAndEachRestoresAlone) {
  const uint64_t seed = testing::TestSeed(20240601);
  std::mt19937_64 rng(seed);
  Volume* v = NewVolume("vol", 16 * kMiB);
  Write(v, 0, 3 * kMiB + 12 * kKiB, rng());  // not chunk aligned at the end
  Write(v, 9 * kMiB, 5 * kBlock, rng());
  std::vector<std::pair<std::string, std::string>> backups;  // set id, oracle
  std::string oracle = Oracle("vol");
  BackupSet first = MustBackup("vol", BackupMethod::kSnapshot);
  EXPECT_EQ(first.type, BackupType::kSnapshot);
  EXPECT_EQ(first.first_lsn, 0u);
  EXPECT_EQ(first.last_lsn, pool_->GetVolume("vol")->lsn);
  EXPECT_EQ(first.data_bytes, 3 * kMiB + 12 * kKiB + 5 * kBlock);
  backups.emplace_back(first.id, oracle);
  uint64_t previous_lsn = first.last_lsn;
  for (int round = 0; round < 5; ++round) {
    Churn(v, rng, 40);
    if (round == 2) {
      ASSERT_TRUE(pool_->GrowVolume("vol", 20 * kMiB).ok());
    }
    if (round == 3) Write(v, 18 * kMiB, 200 * kKiB, rng());
    oracle = Oracle("vol");
    BackupSet s = MustBackup("vol", BackupMethod::kSnapshot);
    EXPECT_EQ(s.type, BackupType::kSnapshot);
    EXPECT_TRUE(s.base.empty());
    EXPECT_GT(s.last_lsn, previous_lsn);
    previous_lsn = s.last_lsn;
    // Only this backup's snapshot is kept.
    EXPECT_EQ(BackupSnapshots("vol"), std::set<std::string>{"backup-" + s.id});
    backups.emplace_back(s.id, oracle);
    // The newest and every earlier set restore on their own.
    for (const auto& [id, o] : backups) ExpectRestores(id, "vol", o);
  }
  // The manifests of the volume form a hash chain.
  std::vector<BackupSet> sets = *ListBackupSets(*store_, "vol");
  ASSERT_EQ(sets.size(), backups.size());
  EXPECT_EQ(sets[0].prev_sha256, "");
  for (size_t i = 1; i < sets.size(); ++i) EXPECT_EQ(sets[i].prev_sha256, sets[i - 1].sha256);
  Result<WormVerifyReport> verify = store_->Verify();
  ASSERT_TRUE(verify.ok());
  EXPECT_TRUE(verify->ok());
}

// A step submits no new read once it has held the pool's thread for
// kBackupStepBudgetNs (the in-memory device copies inside Submit); with time
// standing still it fills every read slot. The set restores the same.
TEST_F(BackupTest, AStepStopsSubmittingReadsAtItsTimeBudget) {
  // A device the workers cannot read beside the pool's thread (FaultDevice
  // has no ReadConcurrent): the backup's reads go through the pool.
  pool_.reset();
  FaultDevice through_pool(*device_);
  pool_ = testing::MustCreatePool(through_pool);
  struct ResetPool {
    std::unique_ptr<Pool>& pool;
    ~ResetPool() { pool.reset(); }  // before through_pool
  } reset_pool{pool_};
  Volume* v = NewVolume("vol", 8 * kMiB);
  Write(v, 0, 8 * kMiB, 11);
  const std::string oracle = Oracle("vol");
  auto first_step_reads = [&](Clock& clock) -> uint64_t {
    BackupOptions o;
    o.method = BackupMethod::kFull;
    o.max_reads_in_flight = 4;
    o.clock = &clock;
    auto job = BackupJob::Start(*pool_, *store_, "vol", o);
    EXPECT_TRUE(job.ok()) << job.status().ToString();
    if (!job.ok()) return 0;
    // The first step that submits anything: earlier ones find the job's
    // workers still starting (they are made off the pool's thread).
    uint64_t read = 0;
    for (int i = 0; i < 5000 && read == 0; ++i) {
      (void)(*job)->Step();
      pool_->Poll(0);  // the reads' completions (the copies were made at Submit)
      read = (*job)->progress().read_bytes;
      if (read == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    Result<BackupSet> set = (*job)->Run();
    EXPECT_TRUE(set.ok()) << set.status().ToString();
    if (set.ok()) ExpectRestores(set->id, "vol", oracle);
    return read;
  };
  const uint64_t chunk = store_->config().chunk_bytes;
  // More than the budget per clock read: one read, then the step ends.
  testing::TickingClock ticking(kBackupStepBudgetNs * 2);
  EXPECT_EQ(first_step_reads(ticking), chunk);
  ManualClock still;
  EXPECT_EQ(first_step_reads(still), 4 * chunk);
}

TEST_F(BackupTest, SnapshotBackupReadsOnlyTheChangedBlocks) {
  const uint64_t seed = testing::TestSeed(77);
  std::mt19937_64 rng(seed);
  Volume* v = NewVolume("vol", 16 * kMiB);
  Write(v, 0, 16 * kMiB, rng());
  BackupSet s1 = MustBackup("vol", BackupMethod::kSnapshot);
  EXPECT_EQ(s1.data_bytes, 16 * kMiB);
  // 1% of the blocks, scattered.
  const uint64_t blocks = 16 * kMiB / kBlock;
  std::set<uint64_t> changed;
  while (changed.size() < blocks / 100) changed.insert(rng() % blocks);
  for (uint64_t b : changed) Write(v, b * kBlock, kBlock, rng());
  const std::string oracle = Oracle("vol");
  BackupOptions options;
  options.method = BackupMethod::kSnapshot;
  auto job = BackupJob::Start(*pool_, *store_, "vol", options);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  Result<BackupSet> s2 = (*job)->Run();
  ASSERT_TRUE(s2.ok()) << s2.status().ToString();
  const BackupProgress p = (*job)->progress();
  EXPECT_EQ(p.state, BackupState::kDone);
  EXPECT_EQ(p.read_bytes, changed.size() * kBlock);
  EXPECT_EQ(p.total_bytes, changed.size() * kBlock);
  EXPECT_EQ(p.done_bytes, p.total_bytes);
  EXPECT_EQ(s2->data_bytes, 16 * kMiB);  // still a complete image
  // The scattered blocks are gathered into chunks: one object per chunk's
  // worth of changes, not one per block.
  const uint64_t chunk_bytes = store_->config().chunk_bytes;
  size_t new_chunks = 0;
  for (const ChunkInfo& c : s2->chunks) new_chunks += c.new_in_set ? 1 : 0;
  EXPECT_LE(new_chunks, (changed.size() * kBlock + chunk_bytes - 1) / chunk_bytes + 1)
      << changed.size() << " blocks changed";
  EXPECT_GE(new_chunks, 1u);
  ExpectRestores(s2->id, "vol", oracle);
}

TEST_F(BackupTest, FullBackupRoundTrip) {
  const uint64_t seed = testing::TestSeed(5);
  std::mt19937_64 rng(seed);
  Volume* v = NewVolume("vol", 8 * kMiB);
  Churn(v, rng, 60);
  const std::string oracle = Oracle("vol");
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  EXPECT_EQ(f.type, BackupType::kFull);
  EXPECT_EQ(f.id, "F" + std::to_string(f.sequence));
  EXPECT_EQ(f.first_lsn, 0u);
  EXPECT_TRUE(f.zero_extents.empty());
  EXPECT_EQ(f.retain_until_unix_ns, store_->NowUnixNs() + 7 * kDayNs);
  uint64_t allocated = 0;
  std::vector<Extent> map = *v->MapExtents(0, v->size_bytes());
  for (const Extent& e : map) {
    if (!e.zero) allocated += e.length_bytes;
  }
  EXPECT_EQ(f.data_bytes, allocated);
  for (const ChunkExtent& x : f.extents) EXPECT_LE(x.length_bytes, SmallChunks().chunk_bytes);
  ExpectRestores(f.id, "vol", oracle);
  EXPECT_EQ(BackupSnapshots("vol"), std::set<std::string>{"backup-" + f.id});
}

TEST_F(BackupTest, TheOracleComparisonSeesADifference) {
  Volume* v = NewVolume("vol", 4 * kMiB);
  Write(v, 0, 256 * kKiB, 1);
  const std::string oracle = Oracle("vol");
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  ASSERT_TRUE(testing::RestoreBackupSet(*store_, f.id, *pool_, "copy").ok());
  Volume* copy = *pool_->OpenVolume("copy");
  Volume* expected = *pool_->OpenSnapshot("vol", oracle);
  EXPECT_EQ(testing::CompareVolumes(*copy, *expected), "");
  Write(copy, 3 * kMiB, 512, 2);  // where the original is a hole
  EXPECT_NE(testing::CompareVolumes(*copy, *expected), "");
  ASSERT_TRUE(copy->Trim(3 * kMiB, kBlock).ok());
  EXPECT_EQ(testing::CompareVolumes(*copy, *expected), "");
  std::vector<std::byte> one(1, std::byte{0x55});
  ASSERT_TRUE(copy->Write(100 * kKiB + 7, one).ok());
  EXPECT_EQ(testing::CompareVolumes(*copy, *expected), "copy and oracle-0 differ at byte 102407");
}

TEST_F(BackupTest, FullThenDiffRoundTrip) {
  const uint64_t seed = testing::TestSeed(6);
  std::mt19937_64 rng(seed);
  Volume* v = NewVolume("vol", 8 * kMiB);
  Churn(v, rng, 60);
  const std::string o1 = Oracle("vol");
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  std::string o2;
  BackupSet d;
  for (int round = 0; round < 3; ++round) {
    Churn(v, rng, 30);
    o2 = Oracle("vol");
    store_->AdvanceNs(kDayNs / 4);
    d = MustBackup("vol", BackupMethod::kDiff);
    EXPECT_EQ(d.type, BackupType::kDiff);
    EXPECT_EQ(d.base, f.id);
    EXPECT_EQ(d.first_lsn, f.last_lsn + 1);
    EXPECT_EQ(BackupSnapshots("vol"), (std::set<std::string>{"backup-" + f.id, "backup-" + d.id}));
    ExpectRestores(d.id, "vol", o2);
  }
  EXPECT_FALSE(d.zero_extents.empty());  // the churn trims
  ExpectRestores(f.id, "vol", o1);
  // The full's retention follows its newest dependent.
  Result<BackupSet> f_now = FindBackupSet(*store_, f.id);
  ASSERT_TRUE(f_now.ok());
  EXPECT_EQ(f_now->retain_until_unix_ns, d.retain_until_unix_ns);
  for (const ChunkInfo& c : f_now->chunks) {
    EXPECT_GE(store_->Head(c.key)->retain_until_unix_ns, d.retain_until_unix_ns);
  }
}

TEST_F(BackupTest, FullThenIncrementalsRoundTrip) {
  const uint64_t seed = testing::TestSeed(8);
  std::mt19937_64 rng(seed);
  Volume* v = NewVolume("vol", 8 * kMiB);
  Churn(v, rng, 60);
  const std::string o0 = Oracle("vol");
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  std::vector<std::pair<BackupSet, std::string>> incrs;
  BackupSet prev = f;
  for (int i = 0; i < 3; ++i) {
    Churn(v, rng, 25);
    const std::string o = Oracle("vol");
    store_->AdvanceNs(kDayNs);
    BackupSet inc = MustBackup("vol", BackupMethod::kIncr);
    EXPECT_EQ(inc.type, BackupType::kIncr);
    EXPECT_EQ(inc.base, prev.id);
    EXPECT_EQ(inc.first_lsn, prev.last_lsn + 1);
    EXPECT_EQ(BackupSnapshots("vol"),
              (std::set<std::string>{"backup-" + f.id, "backup-" + inc.id}));
    incrs.emplace_back(inc, o);
    prev = inc;
  }
  ExpectRestores(f.id, "vol", o0);
  for (const auto& [inc, o] : incrs) ExpectRestores(inc.id, "vol", o);
  // A diff after incrementals goes back to the full.
  Churn(v, rng, 10);
  const std::string od = Oracle("vol");
  BackupSet d = MustBackup("vol", BackupMethod::kDiff);
  EXPECT_EQ(d.base, f.id);
  ExpectRestores(d.id, "vol", od);
  // Every member of the chain lives as long as the newest incremental.
  std::vector<BackupSet> all = *ListBackupSets(*store_, "vol");
  for (const BackupSet& s : all) {
    EXPECT_GE(s.retain_until_unix_ns, incrs.back().first.retain_until_unix_ns) << s.id;
  }
}

TEST_F(BackupTest, AutoPicksDiffWithinThreeDaysOfAFullElseFull) {
  Volume* v = NewVolume("vol", 4 * kMiB);
  Write(v, 0, 1 * kMiB, 1);
  BackupSet a1 = MustBackup("vol", BackupMethod::kAuto);
  EXPECT_EQ(a1.type, BackupType::kFull);  // no full yet
  store_->AdvanceNs(2 * kDayNs);
  Write(v, 2 * kMiB, 64 * kKiB, 2);
  std::string o = Oracle("vol");
  BackupSet a2 = MustBackup("vol", BackupMethod::kAuto);
  EXPECT_EQ(a2.type, BackupType::kDiff);
  EXPECT_EQ(a2.base, a1.id);
  ExpectRestores(a2.id, "vol", o);
  store_->AdvanceNs(kDayNs + kDayNs / 2);  // 3.5 days after the full
  Write(v, 3 * kMiB, 64 * kKiB, 3);
  o = Oracle("vol");
  BackupSet a3 = MustBackup("vol", BackupMethod::kAuto);
  EXPECT_EQ(a3.type, BackupType::kFull);
  ExpectRestores(a3.id, "vol", o);
  store_->AdvanceNs(kDayNs);
  BackupSet a4 = MustBackup("vol", BackupMethod::kAuto);
  EXPECT_EQ(a4.type, BackupType::kDiff);
  EXPECT_EQ(a4.base, a3.id);
}

TEST_F(BackupTest, DiffAndIncrWithoutABaseAreRefusedClearly) {
  Volume* v = NewVolume("vol", 4 * kMiB);
  Write(v, 0, 256 * kKiB, 1);
  Result<BackupSet> d = Backup("vol", BackupMethod::kDiff);
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(d.status().IsNotFound());
  EXPECT_NE(d.status().message().find("no full backup of 'vol' in lineage"), std::string::npos)
      << d.status().ToString();
  EXPECT_NE(d.status().message().find("take a full backup first"), std::string::npos);
  Result<BackupSet> i = Backup("vol", BackupMethod::kIncr);
  ASSERT_FALSE(i.ok());
  EXPECT_TRUE(i.status().IsNotFound());
  // A snapshot backup is not a base for physical ones.
  MustBackup("vol", BackupMethod::kSnapshot);
  EXPECT_FALSE(Backup("vol", BackupMethod::kIncr).ok());
  // The base's snapshot gone from the pool.
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  ASSERT_TRUE(pool_->DeleteSnapshot("vol", "backup-" + f.id).ok());
  d = Backup("vol", BackupMethod::kDiff);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("backup-" + f.id), std::string::npos)
      << d.status().ToString();
  EXPECT_NE(d.status().message().find("take a full backup first"), std::string::npos);
  // auto falls back to a full.
  EXPECT_EQ(MustBackup("vol", BackupMethod::kAuto).type, BackupType::kFull);
  // Nothing was left behind by the refusals.
  EXPECT_EQ(ListBackupSets(*store_, "vol")->size(), 3u);
  // A rollback starts a new lineage: no base there.
  BackupSet f2 = MustBackup("vol", BackupMethod::kFull);
  ASSERT_TRUE(pool_->Rollback("vol", "backup-" + f2.id).ok());
  d = Backup("vol", BackupMethod::kDiff);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("lineage"), std::string::npos);
}

TEST_F(BackupTest, StartRejectsBadArgumentsAndChangesNothing) {
  NewVolume("vol", 4 * kMiB);
  BackupOptions o;
  o.retain_days = 6;
  Result<BackupSet> r = Backup("vol", BackupMethod::kFull, o);
  EXPECT_TRUE(r.status().IsInvalidArgument());
  EXPECT_NE(r.status().message().find("retention must be 7-730 days (got 6)"), std::string::npos);
  o = {};
  o.rate_mb_per_s = -1;
  EXPECT_TRUE(Backup("vol", BackupMethod::kFull, o).status().IsInvalidArgument());
  o = {};
  o.worker_threads = 0;
  EXPECT_TRUE(Backup("vol", BackupMethod::kFull, o).status().IsInvalidArgument());
  o = {};
  o.max_reads_in_flight = 0;
  EXPECT_TRUE(Backup("vol", BackupMethod::kFull, o).status().IsInvalidArgument());
  EXPECT_TRUE(Backup("nope", BackupMethod::kFull).status().IsNotFound());
  // A log backup with no writes since the last one has nothing to ship.
  Result<BackupSet> log = Backup("vol", BackupMethod::kLog);
  EXPECT_TRUE(log.status().IsNotFound()) << log.status().ToString();
  EXPECT_EQ(store_->object_count(), 0u);
  EXPECT_TRUE(pool_->ListSnapshots("vol")->empty());
}

TEST_F(BackupTest, SecondFullOfUnchangedDataStoresNoNewChunks) {
  Volume* v = NewVolume("vol", 8 * kMiB);
  Write(v, 0, 3 * kMiB, 1);
  Write(v, 5 * kMiB, 300 * kKiB, 2);
  BackupSet f1 = MustBackup("vol", BackupMethod::kFull);
  EXPECT_GT(f1.stored_bytes, 0u);
  const uint64_t objects = store_->object_count();
  const uint64_t puts = store_->counters().puts;
  store_->AdvanceNs(kDayNs);
  BackupSet f2 = MustBackup("vol", BackupMethod::kFull);
  EXPECT_EQ(f2.stored_bytes, 0u);
  // The manifest and the restore index (its pages and top) only.
  EXPECT_EQ(f2.restore_index_pages, 1u);
  EXPECT_EQ(store_->counters().puts, puts + 3);
  EXPECT_EQ(store_->object_count(), objects + 3);
  EXPECT_EQ(f2.chunks.size(), f1.chunks.size());
  for (const ChunkInfo& c : f2.chunks) {
    EXPECT_FALSE(c.new_in_set);
    // Shared chunks now live as long as the newer set.
    EXPECT_EQ(store_->Head(c.key)->retain_until_unix_ns, f2.retain_until_unix_ns);
  }
  // Identical bytes at two places are one chunk.
  Volume* w = NewVolume("twin", 4 * kMiB);
  std::vector<std::byte> chunk = testing::PatternBytes(3, 64 * kKiB);
  ASSERT_TRUE(w->Write(0, chunk).ok());
  ASSERT_TRUE(w->Write(1 * kMiB, chunk).ok());
  BackupSet t = MustBackup("twin", BackupMethod::kFull);
  EXPECT_EQ(t.chunks.size(), 1u);
  EXPECT_EQ(t.extents.size(), 2u);
  // The storage report counts each chunk once, for the set that stored it.
  std::vector<StorageReport> reports = *ReportStorage(*store_);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[1].volume, "vol");
  EXPECT_EQ(reports[1].physical_bytes, f1.stored_bytes);
  EXPECT_EQ(reports[1].sets, 2u);
  EXPECT_EQ(reports[1].free_quota_bytes, 4 * kMiB);
  EXPECT_EQ(reports[1].billable_bytes, 0u);
}

TEST_F(BackupTest, StorageReportSplitsByMethodAndBillsBeyondTheQuota) {
  Volume* v = NewVolume("vol", 4 * kMiB);
  // Incompressible data: 3 MiB of chunks, more than the 2 MiB free quota.
  Write(v, 0, 3 * kMiB, 1);
  BackupSet s = MustBackup("vol", BackupMethod::kSnapshot);
  Write(v, 3 * kMiB, 256 * kKiB, 2);
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  std::vector<StorageReport> r = *ReportStorage(*store_, "vol");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].sets, 2u);
  EXPECT_EQ(r[0].snapshot_bytes, s.stored_bytes);
  EXPECT_EQ(r[0].physical_bytes, f.stored_bytes);  // only the new 256 KiB
  EXPECT_GT(r[0].snapshot_bytes, 3 * kMiB);
  EXPECT_EQ(r[0].volume_size_bytes, 4 * kMiB);
  EXPECT_EQ(r[0].billable_bytes, 0u);
  store_->AdvanceNs(kDayNs);
  // A full of a volume that only the physical chain holds.
  Volume* w = NewVolume("w", 4 * kMiB);
  Write(w, 0, 3 * kMiB, 9);
  BackupSet g = MustBackup("w", BackupMethod::kFull);
  r = *ReportStorage(*store_, "w");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].billable_bytes, g.stored_bytes - 2 * kMiB);
  EXPECT_TRUE(ReportStorage(*store_, "none")->empty());
}

TEST_F(BackupTest, PhysicalBackupReadsThroughTheVolumeQosAndSnapshotBackupDoesNot) {
  // A PL1 disk (thin: the pool only holds what is written); simulated time.
  pool_.reset();  // before its device
  device_ = testing::NewMemoryDevice(24 * kGiB);
  ManualClock clock(1'000'000'000);
  PoolOptions po;
  po.clock = &clock;
  pool_ = testing::MustCreatePool(*device_, po);
  ASSERT_TRUE(pool_->CreateVolume("db", 20 * kGiB, EssdLevel::kPL1).ok());
  Volume* v = *pool_->OpenVolume("db");
  ASSERT_NE(v->qos(), nullptr);
  Write(v, 0, 4 * kMiB, 1);
  Write(v, 7 * kGiB, 1 * kMiB, 2);
  const std::string oracle = Oracle("db");
  auto qos_read_bytes = [&] { return v->qos()->stats().Snapshot().of(IoOp::kRead).bytes; };

  const uint64_t before_snapshot = qos_read_bytes();
  BackupOptions options;
  options.clock = &clock;
  BackupSet s = MustBackup("db", BackupMethod::kSnapshot, options);
  EXPECT_EQ(qos_read_bytes(), before_snapshot);  // straight from the pool

  const int64_t t0 = clock.NowNs();
  BackupSet f = MustBackup("db", BackupMethod::kFull, options);
  EXPECT_EQ(qos_read_bytes() - before_snapshot, 5 * kMiB);
  // 5 MiB at PL1 20 GiB's 130 MB/s takes >= ~40 ms of (simulated) time.
  const double min_seconds = (5.0 * kMiB - 130e6 * 0.010) / 130e6;
  EXPECT_GE(static_cast<double>(clock.NowNs() - t0) / 1e9, min_seconds);
  ExpectRestores(f.id, "db", oracle);
  ExpectRestores(s.id, "db", oracle);
}

TEST_F(BackupTest, ASnapshotBackupReadsItsSnapshotOffThePoolsThread) {
  Volume* v = NewVolume("vol", 16 * kMiB);
  Write(v, 0, 6 * kMiB, 1);
  Write(v, 9 * kMiB, 4096, 2);
  ASSERT_TRUE(pool_->Commit().ok());
  const std::string oracle = Oracle("vol");
  auto device_read_bytes = [&] { return device_->stats().Snapshot().of(IoOp::kRead).bytes; };

  // The workers read the blocks beside the pool's thread: nothing of the
  // data goes through the device's queue (which the workload shares).
  uint64_t before = device_read_bytes();
  BackupSet s = MustBackup("vol", BackupMethod::kSnapshot);
  EXPECT_LT(device_read_bytes() - before, 1 * kMiB);
  EXPECT_EQ(s.data_bytes, 6 * kMiB + 4096);
  ExpectRestores(s.id, "vol", oracle);

  // A physical backup's workers read beside the pool's thread too (the
  // device's DMA); what it shares with the workload is the volume's QoS,
  // charged on the pool's thread
  // (PhysicalBackupReadsThroughTheVolumeQosAndSnapshotBackupDoesNot).
  before = device_read_bytes();
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  EXPECT_LT(device_read_bytes() - before, 1 * kMiB);
  EXPECT_EQ(f.data_bytes, 6 * kMiB + 4096);
  ExpectRestores(f.id, "vol", oracle);
}

TEST_F(BackupTest, AVolumeThatEndsInsideABlockIsReadOffThePoolsThreadToTheLastByte) {
  // 8 MiB + 1536 bytes: the last block holds three sectors of the volume.
  const uint64_t size = 8 * kMiB + 1536;
  Volume* v = NewVolume("odd", size);
  Write(v, 0, 2 * kMiB, 1);
  std::vector<std::byte> tail = testing::PatternBytes(2, 1536 + 4096);
  ASSERT_TRUE(v->Write(size - tail.size(), tail).ok());
  ASSERT_TRUE(pool_->Commit().ok());
  const std::string oracle = Oracle("odd");
  const uint64_t before = device_->stats().Snapshot().of(IoOp::kRead).bytes;
  BackupSet s = MustBackup("odd", BackupMethod::kSnapshot);
  EXPECT_LT(device_->stats().Snapshot().of(IoOp::kRead).bytes - before,
            1 * kMiB);  // off the thread
  EXPECT_EQ(s.data_bytes, 2 * kMiB + tail.size());
  ExpectRestores(s.id, "odd", oracle);
  // A following one whose only change is in the partial block.
  std::vector<std::byte> last = testing::PatternBytes(3, 512);
  ASSERT_TRUE(v->Write(size - 512, last).ok());
  const std::string oracle2 = Oracle("odd");
  BackupSet next = MustBackup("odd", BackupMethod::kSnapshot);
  ExpectRestores(next.id, "odd", oracle2);
}

TEST_F(BackupTest, ASnapshotBackupNamesACorruptBlockItReadOffThePoolsThread) {
  Volume* v = NewVolume("vol", 8 * kMiB);
  Write(v, 0, 2 * kMiB, 1);
  ASSERT_TRUE(pool_->Commit().ok());
  // Where block 5 lies, then garbage written there behind the pool's back.
  ASSERT_TRUE(pool_->CreateSnapshot("vol", "probe").ok());
  Volume* probe = *pool_->OpenSnapshot("vol", "probe");
  probe->SetInUse(true);
  auto entries = pool_->ResolveSnapshotBlocks(*probe, 5, 1);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  probe->SetInUse(false);
  std::vector<std::byte> garbage(kBlock, std::byte{0x77});
  ASSERT_TRUE(device_->Write((*entries)[0].pbn * kBlock, garbage).ok());

  Result<BackupSet> r = Backup("vol", BackupMethod::kSnapshot);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("reading 'vol@backup-"), std::string::npos)
      << r.status().ToString();
  EXPECT_NE(r.status().message().find("checksum mismatch at offset " + std::to_string(5 * kBlock)),
            std::string::npos)
      << r.status().ToString();
  EXPECT_TRUE(ListBackupSets(*store_, "vol")->empty());
  EXPECT_TRUE(BackupSnapshots("vol").empty());  // the job's snapshot is gone
}

TEST_F(BackupTest, RateCapPacesThePhysicalBackup) {
  Volume* v = NewVolume("vol", 8 * kMiB);
  Write(v, 0, 4 * kMiB, 1);
  ManualClock clock(5'000'000'000);
  BackupOptions options;
  options.clock = &clock;
  options.rate_mb_per_s = 8;  // 4 MiB: ~0.52 s
  const int64_t t0 = clock.NowNs();
  auto job = BackupJob::Start(*pool_, *store_, "vol", [&] {
    BackupOptions o = options;
    o.method = BackupMethod::kFull;
    return o;
  }());
  ASSERT_TRUE(job.ok());
  int callbacks = 0;
  Result<BackupSet> f = (*job)->Run([&](const BackupProgress& p) {
    ++callbacks;
    EXPECT_LE(p.done_bytes, p.total_bytes);
    return true;
  });
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_GE(callbacks, 1);
  const double seconds = static_cast<double>(clock.NowNs() - t0) / 1e9;
  const double expected = 4.0 * kMiB / 8e6;
  EXPECT_GE(seconds, expected - 0.02) << seconds;
  EXPECT_LE(seconds, expected + 0.1) << seconds;
  const BackupProgress p = (*job)->progress();
  EXPECT_EQ(p.done_bytes, 4 * kMiB);
  EXPECT_NEAR(p.rate_bytes_per_s, 8e6, 8e6 * 0.1);
  EXPECT_EQ(p.eta_s, 0);
}

TEST_F(BackupTest, CancelLeavesNoSetAndNoSnapshot) {
  Volume* v = NewVolume("vol", 16 * kMiB);
  Write(v, 0, 12 * kMiB, 1);
  for (BackupMethod method : {BackupMethod::kSnapshot, BackupMethod::kFull}) {
    BackupOptions options;
    options.method = method;
    options.max_reads_in_flight = 2;
    options.worker_threads = 1;
    auto job = BackupJob::Start(*pool_, *store_, "vol", options);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    EXPECT_EQ(BackupSnapshots("vol").size(), 1u);  // taken at Start
    for (int i = 0; i < 5; ++i) {
      (*job)->Step();
      pool_->Poll(1);
    }
    (*job)->Cancel();
    Result<BackupSet> r = (*job)->Run();
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.status().IsCancelled()) << r.status().ToString();
    EXPECT_EQ((*job)->progress().state, BackupState::kCancelled);
    EXPECT_LT((*job)->progress().done_bytes, 12 * kMiB);
    EXPECT_TRUE(ListBackupSets(*store_, "vol")->empty());
    EXPECT_TRUE(BackupSnapshots("vol").empty());
  }
  // Cancel from the progress callback (a rate cap makes the job last ~0.6 s).
  {
    BackupOptions options;
    options.method = BackupMethod::kFull;
    options.rate_mb_per_s = 20;
    auto job = BackupJob::Start(*pool_, *store_, "vol", options);
    ASSERT_TRUE(job.ok());
    int calls = 0;
    Result<BackupSet> r = (*job)->Run([&](const BackupProgress& p) {
      ++calls;
      return p.state != BackupState::kRunning;  // stop at the first report
    });
    EXPECT_TRUE(r.status().IsCancelled()) << r.status().ToString();
    EXPECT_GE(calls, 1);
    EXPECT_TRUE(BackupSnapshots("vol").empty());
  }
  // Each cancelled job is in the volume's task history.
  Result<std::vector<BackupTask>> history = BackupHistory(*pool_, "vol");
  ASSERT_TRUE(history.ok()) << history.status().ToString();
  ASSERT_EQ(history->size(), 3u);
  for (const BackupTask& t : *history) {
    EXPECT_EQ(t.result, "cancelled");
    EXPECT_EQ(t.trigger, "manual");
    EXPECT_TRUE(t.set_id.empty());
    EXPECT_LE(t.started_unix_ns, t.finished_unix_ns);
  }
  EXPECT_EQ((*history)[0].method, "snapshot");
  EXPECT_EQ((*history)[1].method, "full");
  // Destroying a running job cancels it.
  {
    BackupOptions options;
    options.method = BackupMethod::kFull;
    options.max_reads_in_flight = 1;
    auto job = BackupJob::Start(*pool_, *store_, "vol", options);
    ASSERT_TRUE(job.ok());
    (*job)->Step();
  }
  EXPECT_TRUE(BackupSnapshots("vol").empty());
  EXPECT_TRUE(ListBackupSets(*store_, "vol")->empty());
  // Chunks the cancelled jobs stored are reused by the next one.
  const std::string oracle = Oracle("vol");
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  ExpectRestores(f.id, "vol", oracle);
  // The store is sound.
  EXPECT_TRUE(store_->Verify()->ok());
}

TEST_F(BackupTest, StorePutFailuresLeaveNoSet) {
  Volume* v = NewVolume("vol", 8 * kMiB);
  Write(v, 0, 2 * kMiB, 1);
  store_->FailPutsAfter("chunks/", 5);
  Result<BackupSet> r = Backup("vol", BackupMethod::kFull);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsIOError()) << r.status().ToString();
  EXPECT_TRUE(ListBackupSets(*store_, "vol")->empty());
  EXPECT_TRUE(BackupSnapshots("vol").empty());
  store_->FailPutsAfter("sets/", 0);  // the manifest put fails
  r = Backup("vol", BackupMethod::kSnapshot);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(ListBackupSets(*store_, "vol")->empty());
  EXPECT_TRUE(BackupSnapshots("vol").empty());
  store_->ClearFaults();
  const std::string oracle = Oracle("vol");
  BackupSet s = MustBackup("vol", BackupMethod::kSnapshot);
  ExpectRestores(s.id, "vol", oracle);
  EXPECT_TRUE(store_->Verify()->ok());
  // The task history: two failures, with why, then the set.
  Result<std::vector<BackupTask>> history = BackupHistory(*pool_, "vol");
  ASSERT_TRUE(history.ok()) << history.status().ToString();
  ASSERT_EQ(history->size(), 3u);
  EXPECT_EQ((*history)[0].result, "failed");
  EXPECT_NE((*history)[0].error.find("IOError"), std::string::npos) << (*history)[0].error;
  EXPECT_EQ((*history)[1].result, "failed");
  EXPECT_EQ((*history)[2].result, "done");
  EXPECT_EQ((*history)[2].set_id, s.id);
  EXPECT_EQ((*history)[2].stored_bytes, s.stored_bytes);
}

// A device read error in the middle of a backup: no set, no snapshot, and the
// store verifies clean (the memory store, and the directory store).
// A pool on a device opened with O_DIRECT takes only 4 KiB-aligned buffers:
// every kind of backup reads into aligned ones, gathered pieces included.
TEST(BackupDirectIoTest, BackupsOfAPoolOnAnODirectDevice) {
  testing::ScratchDir scratch;
  FileDeviceOptions direct;
  direct.direct_io = true;
  auto device = FileDevice::Create(scratch.File("pool.img"), 128 * kMiB, direct);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  auto pool = testing::MustCreatePool(**device);
  ASSERT_TRUE(pool->CreateVolume("vol", 8 * kMiB).ok());
  Volume* v = *pool->OpenVolume("vol");
  auto write = [&](uint64_t offset, const std::vector<std::byte>& data) {
    AlignedBuffer aligned(data.size());
    std::memcpy(aligned.data(), data.data(), data.size());
    return v->Write(offset, aligned.span());
  };
  ASSERT_TRUE(write(0, testing::PatternBytes(1, 3 * kMiB)).ok());
  MemoryWormStore store(SmallChunks());
  BackupSet last;
  for (BackupMethod method : {BackupMethod::kSnapshot, BackupMethod::kFull, BackupMethod::kIncr,
                              BackupMethod::kSnapshot}) {
    // Scattered single blocks: gathered pieces at 4 KiB offsets in a chunk.
    for (uint64_t b = 3; b < 2048; b += 97) {
      ASSERT_TRUE(write(b * kBlock, testing::PatternBytes(b, kBlock)).ok());
    }
    BackupOptions options;
    options.method = method;
    auto job = BackupJob::Start(*pool, store, "vol", options);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    Result<BackupSet> set = (*job)->Run();
    ASSERT_TRUE(set.ok()) << BackupMethodName(method) << ": " << set.status().ToString();
    last = *set;
  }
  ASSERT_TRUE(pool->CreateSnapshot("vol", "now").ok());
  auto restored = RestoreToNewVolume(*pool, store, RestoreTarget::Backup(last.id), "copy");
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_EQ(testing::CompareVolumes(**pool->OpenVolume("copy"), **pool->OpenSnapshot("vol", "now")),
            "");
}

class BackupFaultTest : public ::testing::TestWithParam<bool> {};

TEST_P(BackupFaultTest, DeviceReadErrorLeavesNoPartialSet) {
  const bool dir_store = GetParam();
  testing::ScratchDir scratch;
  std::unique_ptr<WormStore> store;
  if (dir_store) {
    const std::string dir = scratch.File("store");
    ASSERT_TRUE(CreateDirStore(dir, SmallChunks()).ok());
    auto opened = OpenDirStore(dir);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store = std::move(opened).value();
  } else {
    store = std::make_unique<MemoryWormStore>(SmallChunks());
  }
  auto mem = testing::NewMemoryDevice(256 * kMiB);
  FaultDevice fault(*mem);
  auto pool = testing::MustCreatePool(fault);
  ASSERT_TRUE(pool->CreateVolume("vol", 8 * kMiB).ok());
  Volume* v = *pool->OpenVolume("vol");
  std::vector<std::byte> data = testing::PatternBytes(1, 6 * kMiB);
  ASSERT_TRUE(v->Write(0, data).ok());
  ASSERT_TRUE(pool->Commit().ok());
  for (BackupMethod method : {BackupMethod::kSnapshot, BackupMethod::kFull}) {
    // Fail a read some way into the backup (the pool reads data blocks only
    // now: its metadata is cached).
    FaultRule rule;
    rule.action = FaultAction::kIOError;
    rule.op = IoOp::kRead;
    rule.range = ByteRange{0, fault.size_bytes()};
    rule.probability = 0.05;
    rule.persistent = true;
    const uint32_t id = *fault.AddRule(rule);
    BackupOptions options;
    options.method = method;
    auto job = BackupJob::Start(*pool, *store, "vol", options);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    Result<BackupSet> r = (*job)->Run();
    ASSERT_TRUE(fault.RemoveRule(id).ok());
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.status().IsIOError()) << r.status().ToString();
    EXPECT_EQ((*job)->progress().state, BackupState::kFailed);
    EXPECT_TRUE(ListBackupSets(*store, "vol")->empty());
    if (pool->health().ok()) {
      std::vector<SnapshotInfo> snaps = *pool->ListSnapshots("vol");
      for (const SnapshotInfo& s : snaps) ADD_FAILURE() << s.name;
    }
    Result<WormVerifyReport> verify = store->Verify();
    ASSERT_TRUE(verify.ok()) << verify.status().ToString();
    for (const WormProblem& p : verify->problems) ADD_FAILURE() << p.key << ": " << p.what;
  }
  if (!pool->health().ok()) GTEST_SKIP() << "the pool failed on the read error";
  // Without faults the backup goes through and restores.
  BackupOptions options;
  options.method = BackupMethod::kFull;
  auto job = BackupJob::Start(*pool, *store, "vol", options);
  ASSERT_TRUE(job.ok());
  Result<BackupSet> f = (*job)->Run();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_TRUE(pool->CreateSnapshot("vol", "oracle").ok());
  ASSERT_TRUE(testing::RestoreBackupSet(*store, f->id, *pool, "restored").ok());
  EXPECT_EQ(testing::CompareVolumes(**pool->OpenVolume("restored"),
                                    **pool->OpenSnapshot("vol", "oracle")),
            "");
  EXPECT_TRUE(store->Verify()->ok());
}

INSTANTIATE_TEST_SUITE_P(Stores, BackupFaultTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "DirStore" : "MemoryStore"; });

TEST_F(BackupTest, RestoreDetectsACorruptChunkAndNamesIt) {
  Volume* v = NewVolume("vol", 4 * kMiB);
  Write(v, 0, 1 * kMiB, 1);
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  const ChunkInfo& victim = f.chunks[3];
  // A consistent rewrite (the store's own checksum updated): only the chunk's
  // content hash can tell.
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      victim.key,
                      [](std::vector<std::byte>& b) { b[b.size() - 3] ^= std::byte{4}; },
                      /*consistent=*/true)
                  .ok());
  Result<testing::RestoreReport> r = testing::RestoreBackupSet(*store_, f.id, *pool_, "r");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(victim.hash), std::string::npos) << r.status().ToString();
  EXPECT_FALSE(store_->Verify()->ok());
}

TEST_F(BackupTest, ExtendBackupSetExtendsTheChainAndNeverShortens) {
  Volume* v = NewVolume("vol", 4 * kMiB);
  Write(v, 0, 512 * kKiB, 1);
  BackupSet f = MustBackup("vol", BackupMethod::kFull);
  Write(v, 1 * kMiB, 128 * kKiB, 2);
  BackupSet i = MustBackup("vol", BackupMethod::kIncr);
  const int64_t until = i.retain_until_unix_ns + 30 * kDayNs;
  ASSERT_TRUE(ExtendBackupSet(*store_, i.id, until).ok());
  for (const std::string& id : {f.id, i.id}) {
    BackupSet s = *FindBackupSet(*store_, id);
    EXPECT_EQ(s.retain_until_unix_ns, until) << id;
    for (const ChunkInfo& c : s.chunks) EXPECT_GE(store_->Head(c.key)->retain_until_unix_ns, until);
  }
  Status shorter = ExtendBackupSet(*store_, i.id, until - kDayNs);
  EXPECT_TRUE(shorter.IsPermissionDenied()) << shorter.ToString();
  Status past = ExtendBackupSet(*store_, i.id, store_->NowUnixNs() - 1);
  EXPECT_TRUE(past.IsPermissionDenied()) << past.ToString();
  EXPECT_TRUE(ExtendBackupSet(*store_, "F999", until).IsNotFound());
  EXPECT_TRUE(ExtendBackupSet(*store_, "bogus", until).IsInvalidArgument());
  // Extending the full alone leaves the incremental as it was.
  ASSERT_TRUE(ExtendBackupSet(*store_, f.id, until + kDayNs).ok());
  EXPECT_EQ(FindBackupSet(*store_, i.id)->retain_until_unix_ns, until);
}

TEST_F(BackupTest, ChunksWhoseKeysExpiredAreStoredUnderAVariantKey) {
  Volume* v = NewVolume("vol", 4 * kMiB);
  Write(v, 0, 256 * kKiB, 1);
  BackupSet f1 = MustBackup("vol", BackupMethod::kFull);
  store_->AdvanceNs(8 * kDayNs);
  ASSERT_GT(store_->Expire()->objects, 0u);
  EXPECT_TRUE(ListBackupSets(*store_)->empty());
  // The same bytes again: their keys were used once and can never be again.
  const std::string oracle = Oracle("vol");
  BackupSet f2 = MustBackup("vol", BackupMethod::kFull);
  ASSERT_EQ(f2.chunks.size(), f1.chunks.size());
  for (const ChunkInfo& c : f2.chunks) {
    EXPECT_EQ(c.key, ChunkKey(c.hash) + ".1");
    EXPECT_TRUE(c.new_in_set);
  }
  ExpectRestores(f2.id, "vol", oracle);
  // And they dedup from there on.
  BackupSet f3 = MustBackup("vol", BackupMethod::kFull);
  EXPECT_EQ(f3.stored_bytes, 0u);
  for (const ChunkInfo& c : f3.chunks) EXPECT_EQ(c.key, ChunkKey(c.hash) + ".1");
}

TEST_F(BackupTest, JobsOnTwoVolumesRunTogetherAndOneVolumeRunsOneJob) {
  const uint64_t seed = testing::TestSeed(31);
  std::mt19937_64 rng(seed);
  Volume* a = NewVolume("a", 8 * kMiB);
  Volume* b = NewVolume("b", 8 * kMiB);
  Churn(a, rng, 40);
  Churn(b, rng, 40);
  const std::string oa = Oracle("a"), ob = Oracle("b");
  BackupOptions options;
  options.method = BackupMethod::kSnapshot;
  auto ja = BackupJob::Start(*pool_, *store_, "a", options);
  options.method = BackupMethod::kFull;
  auto jb = BackupJob::Start(*pool_, *store_, "b", options);
  ASSERT_TRUE(ja.ok() && jb.ok());
  EXPECT_NE((*ja)->progress().id, (*jb)->progress().id);
  auto again = BackupJob::Start(*pool_, *store_, "a", options);
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(again.status().IsBusy()) << again.status().ToString();
  // Driven as an event loop would: Step both, Poll(0), never block. Bounded
  // by time, not turns: the workers (the snapshot job's at the lowest
  // priority) need CPU that this loop and a loaded machine compete for.
  bool done_a = false, done_b = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!(done_a && done_b) && std::chrono::steady_clock::now() < deadline) {
    done_a = (*ja)->Step();
    done_b = (*jb)->Step();
    pool_->Poll(0);
  }
  ASSERT_TRUE(done_a && done_b);
  ASSERT_TRUE((*ja)->result().ok()) << (*ja)->result().status().ToString();
  ASSERT_TRUE((*jb)->result().ok()) << (*jb)->result().status().ToString();
  ExpectRestores((*ja)->result()->id, "a", oa);
  ExpectRestores((*jb)->result()->id, "b", ob);
}

TEST(ChunkPipelineTest, StoresDedupsAndCountsBytes) {
  MemoryWormStore store(SmallChunks());
  std::atomic<uint64_t> done{0}, stored{0};
  ChunkPipeline::Options o;
  o.worker_threads = 3;
  o.buffers = 4;
  o.chunk_bytes = 64 * kKiB;
  o.retain_until_unix_ns = store.NowUnixNs() + kDayNs;
  o.done_bytes = &done;
  o.stored_bytes = &stored;
  ChunkPipeline pipeline(store, o);
  std::vector<ChunkPipeline::Output> outputs;
  int submitted = 0;
  while (outputs.size() < 40) {
    std::byte* buf = pipeline.AcquireBuffer();
    if (buf != nullptr && submitted < 40) {
      std::vector<std::byte> raw = testing::PatternBytes(submitted % 10, 64 * kKiB);  // 10 distinct
      std::copy(raw.begin(), raw.end(), buf);
      pipeline.SubmitChunk(buf, raw.size(), submitted++);
    } else {
      if (buf != nullptr) pipeline.ReleaseBuffer(buf);
      pipeline.WaitForOutput(1'000'000);
    }
    pipeline.TakeOutputs(outputs);
  }
  int fresh = 0;
  for (const auto& out : outputs) {
    ASSERT_TRUE(out.status.ok()) << out.status.ToString();
    fresh += out.chunk.new_in_set;
  }
  EXPECT_EQ(fresh, 10);
  EXPECT_EQ(store.object_count(), 10u);
  EXPECT_EQ(done.load(), 40 * 64 * kKiB);
  EXPECT_EQ(stored.load(), store.stored_bytes());
  EXPECT_EQ(pipeline.pending(), 0u);
}

TEST(ChunkPipelineTest, AWorkerFillsAChunkBeforeStoringItAndReportsAFailedFill) {
  MemoryWormStore store(SmallChunks());
  ChunkPipeline::Options o;
  o.worker_threads = 2;
  o.buffers = 2;
  o.chunk_bytes = 64 * kKiB;
  o.retain_until_unix_ns = store.NowUnixNs() + kDayNs;
  ChunkPipeline pipeline(store, o);
  const std::vector<std::byte> raw = testing::PatternBytes(3, 64 * kKiB);
  std::byte* good = pipeline.AcquireBuffer();
  std::byte* bad = pipeline.AcquireBuffer();
  ASSERT_NE(good, nullptr);
  ASSERT_NE(bad, nullptr);
  EXPECT_EQ(pipeline.AcquireBuffer(), nullptr);
  pipeline.SubmitChunk(good, raw.size(), 1, [&](std::byte* into) {
    std::copy(raw.begin(), raw.end(), into);
    return Status::OK();
  });
  pipeline.SubmitChunk(bad, raw.size(), 2, [](std::byte*) { return Status::IOError("disk gone"); });
  EXPECT_EQ(pipeline.pending(), 2u);
  std::vector<ChunkPipeline::Output> outputs;
  while (outputs.size() < 2) {
    pipeline.WaitForOutput(1'000'000);
    pipeline.TakeOutputs(outputs);
  }
  EXPECT_EQ(pipeline.pending(), 0u);
  std::sort(outputs.begin(), outputs.end(),
            [](const auto& a, const auto& b) { return a.tag < b.tag; });
  ASSERT_TRUE(outputs[0].status.ok()) << outputs[0].status.ToString();
  ChunkInfo expected;
  std::vector<std::byte> scratch;
  MemoryWormStore other(SmallChunks());
  ASSERT_TRUE(
      ChunkPipeline::StoreChunk(other, raw, 1, other.NowUnixNs() + kDayNs, scratch, &expected)
          .ok());
  EXPECT_EQ(outputs[0].chunk.hash, expected.hash);  // the filled bytes were stored
  EXPECT_TRUE(outputs[1].status.IsIOError()) << outputs[1].status.ToString();
  EXPECT_EQ(store.object_count(), 1u);
  // Both buffers came back.
  std::byte* a = nullptr;
  std::byte* b = nullptr;
  for (int i = 0; i < 1000 && (a == nullptr || b == nullptr); ++i) {
    if (a == nullptr) a = pipeline.AcquireBuffer();
    if (b == nullptr) b = pipeline.AcquireBuffer();
  }
  EXPECT_NE(a, nullptr);
  EXPECT_NE(b, nullptr);
}

}  // namespace
}  // namespace snapdisk
