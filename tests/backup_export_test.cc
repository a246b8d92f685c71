// Backup export files: export a set with what it depends on, verify it, read
// it back as a store (and restore from it), and find every kind of damage —
// flipped bits in each part, truncation anywhere, a changed trailer, appended
// garbage, sections dropped or rewritten consistently — never crashing on it.
// The test carries its own parser and encoder of the byte-exact format in the
// header, so the format is checked independently of the implementation.
#include "snapshot/backup_export.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/pool.h"
#include "engine/volume.h"
#include "engine/worm_store.h"
#include "snapshot/backup.h"
#include "snapshot/backup_set.h"
#include "support/backup_restore.h"
#include "engine/memory_worm_store.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * kKiB;
constexpr int64_t kDayNs = int64_t{86'400} * 1'000'000'000;

// ---- Files and the format, as the header documents it ---------------------------

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

uint64_t Get64(const std::vector<uint8_t>& b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(b[at + i]) << (8 * i);
  return v;
}
void Put64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t Get16(const std::vector<uint8_t>& b, size_t at) {
  return static_cast<uint16_t>(b[at] | (b[at + 1] << 8));
}

std::array<uint8_t, 16> Xxh128Canonical(const uint8_t* p, size_t n) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
  std::array<uint8_t, 16> out;
  std::memcpy(out.data(), c.digest, 16);
  return out;
}

std::vector<uint8_t> Sha256Bytes(const std::vector<uint8_t>& bytes, size_t n) {
  const std::string hex =
      Sha256Hex(std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), n));
  std::vector<uint8_t> out(32);
  for (size_t i = 0; i < 32; ++i)
    out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

struct Section {
  uint64_t offset = 0;
  uint8_t type = 0;
  std::string key;
  int64_t retain = 0;
  uint64_t payload_offset = 0;
  std::vector<uint8_t> payload;
};

struct Parsed {
  std::vector<uint8_t> header;  // 128 bytes
  std::vector<Section> sections;
  uint64_t trailer_offset = 0;
};

// Parses a sound file (test input only: asserts rather than checks).
Parsed Parse(const std::vector<uint8_t>& b) {
  Parsed p;
  EXPECT_GE(b.size(), 192u);
  p.header.assign(b.begin(), b.begin() + 128);
  const uint64_t count = Get64(b, 24) + Get64(b, 32);
  uint64_t off = 128;
  for (uint64_t i = 0; i < count; ++i) {
    Section s;
    s.offset = off;
    s.type = b[off + 4];
    const uint16_t key_bytes = Get16(b, off + 6);
    const uint64_t payload_bytes = Get64(b, off + 8);
    s.retain = static_cast<int64_t>(Get64(b, off + 16));
    s.key.assign(reinterpret_cast<const char*>(&b[off + 48]), key_bytes);
    s.payload_offset = off + 48 + key_bytes;
    s.payload.assign(b.begin() + s.payload_offset, b.begin() + s.payload_offset + payload_bytes);
    off = s.payload_offset + payload_bytes;
    p.sections.push_back(std::move(s));
  }
  p.trailer_offset = off;
  return p;
}

// Encodes a file from parts, every checksum computed afresh: what a careful
// forger (or a format-compatible writer) produces.
std::vector<uint8_t> Encode(std::vector<uint8_t> header, const std::vector<Section>& sections) {
  uint64_t manifests = 0;
  for (const Section& s : sections) manifests += s.type == 1 ? 1 : 0;
  Put64(header, 24, manifests);
  Put64(header, 32, sections.size() - manifests);
  Put64(header, 120, XXH3_64bits(header.data(), 120));
  std::vector<uint8_t> out = header;
  for (const Section& s : sections) {
    std::vector<uint8_t> h(48, 0);
    std::memcpy(h.data(), "SDXS", 4);
    h[4] = s.type;
    h[6] = static_cast<uint8_t>(s.key.size());
    h[7] = static_cast<uint8_t>(s.key.size() >> 8);
    Put64(h, 8, s.payload.size());
    Put64(h, 16, static_cast<uint64_t>(s.retain));
    const auto sum = Xxh128Canonical(s.payload.data(), s.payload.size());
    std::memcpy(&h[24], sum.data(), 16);
    std::vector<uint8_t> checked(h.begin(), h.begin() + 40);
    checked.insert(checked.end(), s.key.begin(), s.key.end());
    Put64(h, 40, XXH3_64bits(checked.data(), checked.size()));
    out.insert(out.end(), h.begin(), h.end());
    out.insert(out.end(), s.key.begin(), s.key.end());
    out.insert(out.end(), s.payload.begin(), s.payload.end());
  }
  std::vector<uint8_t> t(64, 0);
  std::memcpy(t.data(), "SNAPDISK-TRAILER", 16);
  Put64(t, 16, sections.size());
  Put64(t, 24, out.size());
  const std::vector<uint8_t> sha = Sha256Bytes(out, out.size());
  std::memcpy(&t[32], sha.data(), 32);
  out.insert(out.end(), t.begin(), t.end());
  return out;
}

// ---- Hand-built sets ---------------------------------------------------------------

class BackupExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WormStoreConfig config;
    config.chunk_bytes = 64 * kKiB;
    store_ = std::make_unique<MemoryWormStore>(config);
  }

  int64_t Retain() const { return store_->NowUnixNs() + 30 * kDayNs; }

  // Puts a chunk of `length` pattern bytes (under `variant` ".<n>" when > 0).
  ChunkInfo PutChunk(uint64_t seed, size_t length, int variant = 0) {
    std::vector<std::byte> raw = testing::PatternBytes(seed, length);
    // Half of each chunk repeats, so zstd has something to do.
    std::copy(raw.begin(), raw.begin() + length / 2, raw.begin() + length / 2);
    ChunkInfo c;
    c.hash = ChunkHash(raw);
    c.raw_bytes = raw.size();
    c.key = ChunkKey(c.hash) + (variant > 0 ? "." + std::to_string(variant) : "");
    std::vector<std::byte> object = EncodeChunk(raw, 1);
    c.stored_bytes = object.size();
    c.new_in_set = true;
    Status s = store_->Put(c.key, object, Retain());
    SNAPDISK_CHECK(s.ok(), s.ToString().c_str());
    raw_[c.hash] = std::move(raw);
    return c;
  }

  BackupSet PutSet(BackupType type, uint64_t sequence, const std::string& volume,
                   const std::string& base, uint64_t first_lsn, uint64_t last_lsn,
                   std::vector<ChunkInfo> chunks) {
    BackupSet s;
    s.id = std::string(1, BackupTypeLetter(type)) + std::to_string(sequence);
    s.sequence = sequence;
    s.volume = volume;
    s.volume_id = volume == "db" ? 1 : 2;
    s.lineage = s.volume_id;
    s.type = type;
    s.first_lsn = first_lsn;
    s.last_lsn = last_lsn;
    s.base = base;
    s.started_unix_ns = store_->NowUnixNs();
    s.finished_unix_ns = s.started_unix_ns + 1000;
    s.consistent_unix_ns = s.started_unix_ns;
    s.block_bytes = type == BackupType::kLog ? 0 : 4096;
    s.volume_size_bytes = type == BackupType::kLog ? 0 : 16 * kMiB;
    uint64_t offset = 0;
    for (const ChunkInfo& c : chunks) {
      s.data_bytes += c.raw_bytes;
      if (c.new_in_set) s.stored_bytes += c.stored_bytes;
      if (type != BackupType::kLog) {
        s.extents.push_back(ChunkExtent{offset, c.raw_bytes, c.hash, 0});
        offset += (c.raw_bytes + 4095) / 4096 * 4096;
      }
    }
    if (type == BackupType::kIncr) s.zero_extents.push_back(ZeroExtent{15 * kMiB, 4096});
    s.chunks = std::move(chunks);
    s.retain_until_unix_ns = Retain();
    Status st = PutManifest(*store_, s);
    SNAPDISK_CHECK(st.ok(), st.ToString().c_str());
    store_->AdvanceNs(kDayNs);
    return s;
  }

  // db: F1 <- I2 <- I3 (I3 uses a ".1" variant key), L4, D6 on F1; web: S5.
  void BuildSets() {
    ChunkInfo a = PutChunk(1, 40'000), b = PutChunk(2, 65'536), c = PutChunk(3, 5'000);
    ChunkInfo d = PutChunk(4, 30'000, /*variant=*/1), e = PutChunk(5, 12'345);
    ChunkInfo f = PutChunk(6, 9'000), g = PutChunk(7, 20'000);
    auto shared = [](ChunkInfo x) {
      x.new_in_set = false;
      return x;
    };
    PutSet(BackupType::kFull, 1, "db", "", 0, 100, {a, b});
    PutSet(BackupType::kIncr, 2, "db", "F1", 101, 200, {c, shared(b)});
    PutSet(BackupType::kIncr, 3, "db", "I2", 201, 300, {d, shared(a)});
    PutSet(BackupType::kLog, 4, "db", "", 301, 400, {f});
    PutSet(BackupType::kSnapshot, 5, "web", "", 0, 50, {shared(a), e});
    PutSet(BackupType::kDiff, 6, "db", "F1", 101, 500, {g, shared(c)});
  }

  std::string Path(const std::string& name) const { return dir_.File(name); }

  std::string MustExport(const std::string& id, const std::string& name,
                         ExportReport* written = nullptr) {
    const std::string path = Path(name);
    Status s = ExportBackupSet(*store_, id, path, {}, written);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return path;
  }

  std::vector<std::string> DirEntries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_.path())) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

  std::unique_ptr<MemoryWormStore> store_;
  std::map<std::string, std::vector<std::byte>> raw_;  // chunk hash -> bytes
  testing::ScratchDir dir_;
};

std::vector<std::string> Ids(const std::vector<ExportedSet>& sets) {
  std::vector<std::string> out;
  for (const ExportedSet& s : sets) out.push_back(s.id);
  return out;
}
std::vector<std::string> Ids(const std::vector<BackupSet>& sets) {
  std::vector<std::string> out;
  for (const BackupSet& s : sets) out.push_back(s.id);
  return out;
}

// ---- Round trips --------------------------------------------------------------------

TEST_F(BackupExportTest, IncrExportsItsChainAndVerifies) {
  BuildSets();
  ExportReport written;
  const std::string path = MustExport("I3", "i3.sdx", &written);
  EXPECT_EQ(Ids(written.sets), (std::vector<std::string>{"F1", "I2", "I3"}));
  EXPECT_EQ(written.chunk_count, 4u);  // a, b, c, d: each once
  EXPECT_EQ(written.file_bytes, fs::file_size(path));

  Result<ExportReport> r = VerifyBackupExport(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->target_id, "I3");
  EXPECT_EQ(r->version, 1u);
  EXPECT_EQ(Ids(r->sets), (std::vector<std::string>{"F1", "I2", "I3"}));
  EXPECT_EQ(r->manifest_count, 3u);
  EXPECT_EQ(r->chunk_count, 4u);
  EXPECT_EQ(r->chunk_stored_bytes, written.chunk_stored_bytes);
  EXPECT_EQ(r->sha256, written.sha256);
  EXPECT_EQ(r->file_bytes, written.file_bytes);
  EXPECT_EQ(r->config.chunk_bytes, 64 * kKiB);
  const ExportedSet& i3 = r->sets.back();
  EXPECT_EQ(i3.type, BackupType::kIncr);
  EXPECT_EQ(i3.base, "I2");
  EXPECT_EQ(i3.first_lsn, 201u);
  EXPECT_EQ(i3.last_lsn, 300u);
  EXPECT_EQ(i3.chunk_count, 2u);
  EXPECT_EQ(i3.chunk_raw_bytes, 30'000u + 40'000u);
  // Manifests are copied as stored: their SHA-256 is the store's.
  Result<BackupSet> in_store = FindBackupSet(*store_, "I3");
  ASSERT_TRUE(in_store.ok());
  EXPECT_EQ(i3.sha256, in_store->sha256);
  EXPECT_EQ(i3.retain_until_unix_ns, in_store->retain_until_unix_ns);
}

TEST_F(BackupExportTest, ReaderGivesEveryChunkAndWorksAsAStore) {
  BuildSets();
  const std::string path = MustExport("I3", "i3.sdx");
  Result<std::unique_ptr<BackupExportReader>> opened = OpenBackupExport(path);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  BackupExportReader& reader = **opened;
  EXPECT_EQ(reader.target_id(), "I3");
  EXPECT_EQ(Ids(reader.sets()), (std::vector<std::string>{"F1", "I2", "I3"}));
  std::set<std::string> hashes;
  for (const BackupSet& set : reader.sets()) {
    Result<BackupSet> original = FindBackupSet(*store_, set.id);
    ASSERT_TRUE(original.ok());
    EXPECT_EQ(set.sha256, original->sha256);
    EXPECT_EQ(set.key, original->key);
    for (const ChunkInfo& c : set.chunks) {
      hashes.insert(c.hash);
      Result<std::vector<std::byte>> bytes = reader.Get(c.hash);
      ASSERT_TRUE(bytes.ok()) << c.hash << ": " << bytes.status().ToString();
      EXPECT_EQ(*bytes, raw_.at(c.hash)) << c.hash;
      Result<std::vector<std::byte>> object = reader.GetObject(c.key);
      ASSERT_TRUE(object.ok());
      EXPECT_EQ(*object, *store_->Get(c.key));
    }
  }
  EXPECT_EQ(hashes.size(), 4u);
  EXPECT_TRUE(reader.Get(std::string(32, '0')).status().IsNotFound());
  EXPECT_TRUE(reader.FindSet("F9").status().IsNotFound());
  ASSERT_TRUE(reader.FindSet("I2").ok());

  // As a store: what restore code uses works unchanged.
  WormStore& view = reader.store();
  Result<std::vector<BackupSet>> chain = testing::ResolveRestoreChain(view, "I3");
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  EXPECT_EQ(Ids(*chain), (std::vector<std::string>{"F1", "I2", "I3"}));
  Result<std::vector<BackupSet>> listed = ListBackupSets(view, "db");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(Ids(*listed), (std::vector<std::string>{"F1", "I2", "I3"}));
  Result<std::vector<WormObjectInfo>> objects = view.List("chunks/");
  ASSERT_TRUE(objects.ok());
  ASSERT_EQ(objects->size(), 4u);
  for (const WormObjectInfo& o : *objects) {
    Result<WormObjectInfo> original = store_->Head(o.key);
    ASSERT_TRUE(original.ok()) << o.key;
    EXPECT_EQ(o.checksum, original->checksum) << o.key;  // same XXH3-128
    EXPECT_EQ(o.size_bytes, original->size_bytes);
    EXPECT_EQ(o.retain_until_unix_ns, original->retain_until_unix_ns);
  }
  EXPECT_EQ(view.config().chunk_bytes, 64 * kKiB);
  EXPECT_TRUE(view.Head("chunks/zz").status().IsNotFound());
  const std::byte one[1] = {std::byte{1}};
  EXPECT_TRUE(view.Put("x", one, view.NowUnixNs() + kDayNs).IsPermissionDenied());
  EXPECT_TRUE(view.Delete(objects->front().key).IsPermissionDenied());
  EXPECT_TRUE(view.ExtendRetention(objects->front().key, 0).IsPermissionDenied());
  EXPECT_TRUE(view.Expire().status().IsPermissionDenied());
  Result<WormVerifyReport> v = view.Verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok());
  EXPECT_EQ(v->objects, 7u);
}

TEST_F(BackupExportTest, SnapshotFullAndLogSetsStandAloneAndDiffTakesItsFull) {
  BuildSets();
  const std::map<std::string, std::vector<std::string>> expected = {
      {"F1", {"F1"}}, {"S5", {"S5"}}, {"L4", {"L4"}}, {"D6", {"F1", "D6"}}, {"I2", {"F1", "I2"}}};
  for (const auto& [id, sets] : expected) {
    const std::string path = MustExport(id, id + ".sdx");
    Result<ExportReport> r = VerifyBackupExport(path);
    ASSERT_TRUE(r.ok()) << id << ": " << r.status().ToString();
    EXPECT_EQ(Ids(r->sets), sets) << id;
    EXPECT_EQ(r->target_id, id);
  }
  Result<ExportReport> s5 = VerifyBackupExport(Path("S5.sdx"));
  ASSERT_TRUE(s5.ok());
  EXPECT_EQ(s5->chunk_count, 2u);  // its own chunk and the one shared with F1
  EXPECT_EQ(s5->sets[0].volume, "web");
}

TEST_F(BackupExportTest, WorksWithTheDirectoryStore) {
  const std::string store_dir = Path("store");
  ASSERT_TRUE(CreateDirStore(store_dir).ok());
  Result<std::unique_ptr<WormStore>> opened = OpenDirStore(store_dir);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  WormStore& store = **opened;
  std::vector<std::byte> raw = testing::PatternBytes(9, 70'000);
  ChunkInfo c{ChunkHash(raw), raw.size(), 0, true, ChunkKey(ChunkHash(raw))};
  std::vector<std::byte> object = EncodeChunk(raw, 3);
  c.stored_bytes = object.size();
  const int64_t retain = store.NowUnixNs() + 10 * kDayNs;
  ASSERT_TRUE(store.Put(c.key, object, retain).ok());
  BackupSet s;
  s.id = "F1";
  s.sequence = 1;
  s.volume = "vol";
  s.type = BackupType::kFull;
  s.block_bytes = 4096;
  s.volume_size_bytes = kMiB;
  s.data_bytes = raw.size();
  s.chunks = {c};
  s.extents = {ChunkExtent{0, raw.size(), c.hash, 0}};
  s.retain_until_unix_ns = retain;
  ASSERT_TRUE(PutManifest(store, s).ok());
  const std::string path = Path("out/f1.sdx");
  fs::create_directories(Path("out"));
  ASSERT_TRUE(ExportBackupSet(store, "F1", path).ok());
  Result<ExportReport> r = VerifyBackupExport(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Result<std::unique_ptr<BackupExportReader>> reader = OpenBackupExport(path);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(*(*reader)->Get(c.hash), raw);
}

TEST_F(BackupExportTest, ProgressCountsEveryObjectToTheTotal) {
  BuildSets();
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  ExportOptions options;
  options.progress = [&](uint64_t done, uint64_t total) {
    calls.emplace_back(done, total);
    return true;
  };
  ASSERT_TRUE(ExportBackupSet(*store_, "I3", Path("i3.sdx"), options).ok());
  ASSERT_EQ(calls.size(), 1u + 3u + 4u);  // before the first byte, then per object
  EXPECT_EQ(calls.front().first, 0u);
  for (size_t i = 1; i < calls.size(); ++i) {
    EXPECT_GT(calls[i].first, calls[i - 1].first);
    EXPECT_EQ(calls[i].second, calls[0].second);
  }
  EXPECT_EQ(calls.back().first, calls.back().second);

  uint64_t last = 0, file_total = 0;
  Result<ExportReport> r = VerifyBackupExport(Path("i3.sdx"), [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last);
    last = done;
    file_total = total;
    return true;
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(last, fs::file_size(Path("i3.sdx")));
  EXPECT_EQ(file_total, last);
}

// ---- Refusals -------------------------------------------------------------------------

TEST_F(BackupExportTest, UnknownOrMalformedIdIsRefusedAndWritesNothing) {
  BuildSets();
  Status s = ExportBackupSet(*store_, "F42", Path("x.sdx"));
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("F42"), std::string::npos) << s.ToString();
  s = ExportBackupSet(*store_, "nonsense", Path("x.sdx"));
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_TRUE(DirEntries().empty());
  s = ExportBackupSet(*store_, "F1", Path("no/such/dir/x.sdx"));
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  s = ExportBackupSet(*store_, "F1", dir_.path().string());
  EXPECT_FALSE(s.ok());
}

TEST_F(BackupExportTest, RefusesToOverwriteUnlessAsked) {
  BuildSets();
  const std::string path = Path("existing.sdx");
  WriteFile(path, {'k', 'e', 'e', 'p'});
  Status s = ExportBackupSet(*store_, "F1", path);
  EXPECT_TRUE(s.IsAlreadyExists()) << s.ToString();
  EXPECT_NE(s.message().find(path), std::string::npos);
  EXPECT_EQ(ReadFile(path), (std::vector<uint8_t>{'k', 'e', 'e', 'p'}));
  ExportOptions options;
  options.overwrite = true;
  ASSERT_TRUE(ExportBackupSet(*store_, "F1", path, options).ok());
  EXPECT_TRUE(VerifyBackupExport(path).ok());
  EXPECT_EQ(DirEntries(), std::vector<std::string>{"existing.sdx"});  // no temporary left
}

TEST_F(BackupExportTest, CancelRemovesThePartialFile) {
  BuildSets();
  for (int stop_at : {0, 1, 4, 7}) {
    int calls = 0;
    ExportOptions options;
    options.progress = [&](uint64_t, uint64_t) { return calls++ < stop_at; };
    Status s = ExportBackupSet(*store_, "I3", Path("i3.sdx"), options);
    EXPECT_TRUE(s.IsCancelled()) << stop_at << ": " << s.ToString();
    EXPECT_EQ(calls, stop_at + 1);
    EXPECT_TRUE(DirEntries().empty()) << "after cancelling at call " << stop_at;
  }
}

TEST_F(BackupExportTest, MissingOrDamagedStoreObjectsFailTheExport) {
  BuildSets();
  Result<BackupSet> i2 = FindBackupSet(*store_, "I2");
  ASSERT_TRUE(i2.ok());
  const ChunkInfo c = i2->chunks[0];  // new in I2
  // Rewritten consistently (the store's checksum matches): the content hash does not.
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      c.key, [](std::vector<std::byte>& b) { b.back() ^= std::byte{1}; },
                      /*consistent=*/true)
                  .ok());
  Status s = ExportBackupSet(*store_, "I3", Path("i3.sdx"));
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find(c.hash), std::string::npos) << s.ToString();
  EXPECT_TRUE(DirEntries().empty());
  // Without the check the copy goes through, and verification catches it.
  ExportOptions unchecked;
  unchecked.check_chunks = false;
  ASSERT_TRUE(ExportBackupSet(*store_, "I3", Path("i3.sdx"), unchecked).ok());
  Result<ExportReport> r = VerifyBackupExport(Path("i3.sdx"));
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find(c.key), std::string::npos) << r.status().ToString();
  // A chunk gone from the store: NotFound naming it, before any file exists.
  ASSERT_TRUE(store_->RemoveForTest(c.key).ok());
  s = ExportBackupSet(*store_, "I3", Path("again.sdx"));
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find(c.key), std::string::npos) << s.ToString();
  EXPECT_FALSE(fs::exists(Path("again.sdx")));
  // A base gone: the chain cannot be exported whole.
  ASSERT_TRUE(store_->RemoveForTest(i2->key).ok());
  s = ExportBackupSet(*store_, "I3", Path("again.sdx"));
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("I2"), std::string::npos) << s.ToString();
}

// ---- The format ---------------------------------------------------------------------

TEST_F(BackupExportTest, FileMatchesTheDocumentedFormatByteForByte) {
  BuildSets();
  const std::string path = MustExport("I3", "i3.sdx");
  const std::vector<uint8_t> bytes = ReadFile(path);
  EXPECT_EQ(std::memcmp(bytes.data(), "SNAPDISK-EXPORT\0", 16), 0);
  EXPECT_EQ(Get64(bytes, 16) & 0xffffffff, 1u);  // version
  EXPECT_EQ(Get64(bytes, 16) >> 32, 128u);       // header bytes
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&bytes[64])), "I3");
  const Parsed p = Parse(bytes);
  ASSERT_EQ(p.sections.size(), 7u);
  EXPECT_EQ(p.sections[0].key, FindBackupSet(*store_, "F1")->key);
  EXPECT_EQ(p.sections[2].key, FindBackupSet(*store_, "I3")->key);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(p.sections[i].type, 1);
  for (size_t i = 3; i < 7; ++i) {
    EXPECT_EQ(p.sections[i].type, 2);
    if (i > 3) {
      EXPECT_LT(p.sections[i - 1].key, p.sections[i].key);  // sorted by key
    }
    Result<std::vector<std::byte>> object = store_->Get(p.sections[i].key);
    ASSERT_TRUE(object.ok()) << p.sections[i].key;
    EXPECT_EQ(object->size(), p.sections[i].payload.size());
    EXPECT_EQ(std::memcmp(object->data(), p.sections[i].payload.data(), object->size()), 0);
  }
  EXPECT_EQ(p.trailer_offset + 64, bytes.size());
  // An independent encoder of the documented format reproduces the file exactly.
  EXPECT_EQ(Encode(p.header, p.sections), bytes);
}

// ---- Damage ---------------------------------------------------------------------------

class BackupExportDamageTest : public BackupExportTest {
 protected:
  void SetUp() override {
    BackupExportTest::SetUp();
    BuildSets();
    path_ = MustExport("I3", "i3.sdx");
    good_ = ReadFile(path_);
    parsed_ = Parse(good_);
  }

  // Writes `bytes` as a damaged copy and returns the verify status; checks
  // that Open does not crash and that a reader never returns wrong bytes.
  Status VerifyDamaged(const std::vector<uint8_t>& bytes, ExportReport* report = nullptr) {
    const std::string path = Path("damaged.sdx");
    WriteFile(path, bytes);
    Result<ExportReport> r = VerifyBackupExport(path, {}, report);
    Result<std::unique_ptr<BackupExportReader>> reader = OpenBackupExport(path);
    if (reader.ok()) {
      for (const auto& [hash, raw] : raw_) {
        Result<std::vector<std::byte>> got = (*reader)->Get(hash);
        if (got.ok()) {
          EXPECT_EQ(*got, raw) << "a reader returned wrong bytes for " << hash;
        }
      }
    } else {
      EXPECT_TRUE(reader.status().IsCorruption() || reader.status().IsUnsupported())
          << reader.status().ToString();
    }
    return r.ok() ? Status::OK() : r.status();
  }

  // Verify fails with Corruption and one of the problems it lists (the
  // first is the status message) contains `needle`.
  void ExpectDetected(const std::vector<uint8_t>& bytes, const std::string& needle,
                      const std::string& what) {
    ExportReport report;
    Status s = VerifyDamaged(bytes, &report);
    EXPECT_TRUE(s.IsCorruption()) << what << ": " << s.ToString();
    std::string all = s.message();
    for (const ExportProblem& p : report.problems) all += "\n  " + p.what;
    EXPECT_NE(all.find(needle), std::string::npos)
        << what << ": expected '" << needle << "' in: " << all;
  }

  std::vector<uint8_t> Flipped(uint64_t offset, int bit = 0) const {
    std::vector<uint8_t> b = good_;
    b[offset] ^= static_cast<uint8_t>(1u << bit);
    return b;
  }

  const Section& FirstChunk() const { return parsed_.sections[3]; }

  std::string path_;
  std::vector<uint8_t> good_;
  Parsed parsed_;
};

TEST_F(BackupExportDamageTest, AFlippedBitInEachPartIsNamed) {
  const Section& m = parsed_.sections[1];
  const Section& c = FirstChunk();
  const uint64_t t = parsed_.trailer_offset;
  struct Case {
    uint64_t offset;
    std::string needle;
    std::string what;
  };
  const std::vector<Case> cases = {
      {0, "bad magic", "file magic"},
      {30, "file header (offset 0): checksum mismatch", "manifest count"},
      {66, "file header (offset 0): checksum mismatch", "target id"},
      {121, "file header (offset 0): checksum mismatch", "header checksum"},
      {m.offset + 1, "section 1 of 7 at offset " + std::to_string(m.offset) + ": bad section magic",
       "manifest section magic"},
      {m.offset + 9,
       "section 1 of 7 at offset " + std::to_string(m.offset) +
           ": section header checksum mismatch",
       "manifest payload length"},
      {m.offset + 50, "section header checksum mismatch", "manifest key"},
      {m.payload_offset + 20,
       "section 1 of 7 (manifest '" + m.key + "') at offset " + std::to_string(m.offset) +
           ": payload checksum mismatch",
       "manifest payload"},
      {c.offset + 4,
       "section 3 of 7 at offset " + std::to_string(c.offset) +
           ": section header checksum mismatch",
       "chunk section type"},
      {c.offset + 30, "section header checksum mismatch", "chunk section's checksum field"},
      {c.payload_offset + c.payload.size() / 2,
       "section 3 of 7 (chunk '" + c.key + "') at offset " + std::to_string(c.offset) +
           ": payload checksum mismatch",
       "chunk payload"},
      {t + 3, "trailer at offset " + std::to_string(t) + ": bad trailer magic", "trailer magic"},
      {t + 16, "section count", "trailer section count"},
      {t + 25, "records its offset as", "trailer offset"},
      {t + 40, "SHA-256", "trailer SHA-256"},
  };
  for (const Case& k : cases) ExpectDetected(Flipped(k.offset, 3), k.needle, k.what);
}

TEST_F(BackupExportDamageTest, AChunkPayloadFlipListsEveryProblemAndTheReaderRefusesTheChunk) {
  const Section& c = FirstChunk();
  ExportReport report;
  Status s = VerifyDamaged(Flipped(c.payload_offset + 13), &report);
  ASSERT_TRUE(s.IsCorruption());
  // The section's checksum and the file's SHA-256 both see it.
  ASSERT_EQ(report.problems.size(), 2u) << s.ToString();
  EXPECT_EQ(report.problems[0].offset_bytes, c.offset);
  EXPECT_NE(report.problems[1].what.find("SHA-256"), std::string::npos);
  EXPECT_NE(s.message().find("and 1 more problem)"), std::string::npos) << s.ToString();
  EXPECT_EQ(Ids(report.sets), (std::vector<std::string>{"F1", "I2", "I3"}));

  Result<std::unique_ptr<BackupExportReader>> reader = OpenBackupExport(Path("damaged.sdx"));
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();  // open reads no chunk payloads
  std::string hash;
  for (const auto& [h, raw] : raw_) {
    if (c.key.find(h) != std::string::npos) hash = h;
  }
  ASSERT_FALSE(hash.empty());
  Result<std::vector<std::byte>> got = (*reader)->Get(hash);
  EXPECT_TRUE(got.status().IsCorruption());
  EXPECT_NE(got.status().message().find("payload checksum mismatch"), std::string::npos);
  Result<WormVerifyReport> v = (*reader)->store().Verify();
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->problems.size(), 1u);
  EXPECT_EQ(v->problems[0].key, c.key);
}

TEST_F(BackupExportDamageTest, TruncationAnywhereIsDetected) {
  const Section& m = parsed_.sections[0];
  const Section& c = parsed_.sections[5];
  const uint64_t t = parsed_.trailer_offset;
  std::vector<uint64_t> sizes = {0,
                                 1,
                                 15,
                                 16,
                                 100,
                                 127,
                                 128,
                                 129,
                                 m.offset + 47,
                                 m.payload_offset - 1,
                                 m.payload_offset + 10,
                                 parsed_.sections[1].offset,
                                 c.offset,
                                 c.payload_offset + 100,
                                 t,
                                 t + 1,
                                 t + 32,
                                 t + 63};
  const uint64_t seed = testing::TestSeed(4242);
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 40; ++i) sizes.push_back(rng() % good_.size());
  for (uint64_t size : sizes) {
    std::vector<uint8_t> b(good_.begin(), good_.begin() + static_cast<ptrdiff_t>(size));
    Status s = VerifyDamaged(b);
    EXPECT_TRUE(s.IsCorruption()) << "cut to " << size << ": " << s.ToString();
    const bool named =
        s.message().find("truncated") != std::string::npos ||
        (size < 16 && s.message().find("not a snapdisk backup export") != std::string::npos);
    EXPECT_TRUE(named) << "cut to " << size << ": " << s.ToString();
    Result<std::unique_ptr<BackupExportReader>> reader = OpenBackupExport(Path("damaged.sdx"));
    EXPECT_TRUE(reader.status().IsCorruption()) << "cut to " << size;
  }
}

TEST_F(BackupExportDamageTest, AppendedGarbageAndReplacedTrailerAreDetected) {
  std::vector<uint8_t> b = good_;
  b.insert(b.end(), {'j', 'u', 'n', 'k'});
  ExpectDetected(b, "4 bytes follow the trailer", "appended garbage");
  EXPECT_TRUE(OpenBackupExport(Path("damaged.sdx")).status().IsCorruption());

  // A whole second copy appended.
  b = good_;
  b.insert(b.end(), good_.begin(), good_.end());
  ExpectDetected(b, "bytes follow the trailer", "appended copy");

  // A trailer whose SHA-256 is of other bytes.
  b = good_;
  const std::vector<uint8_t> other = Sha256Bytes(b, 100);
  std::memcpy(&b[parsed_.trailer_offset + 32], other.data(), 32);
  ExpectDetected(b, "SHA-256", "replaced SHA-256");

  // Trailer removed.
  b.assign(good_.begin(), good_.begin() + static_cast<ptrdiff_t>(parsed_.trailer_offset));
  ExpectDetected(
      b, "the 64-byte trailer at offset " + std::to_string(parsed_.trailer_offset) + " is missing",
      "no trailer");

  // Not an export at all.
  ExpectDetected(std::vector<uint8_t>(4096, 'x'), "not a snapdisk backup export", "bad magic");
  EXPECT_TRUE(VerifyBackupExport(Path("absent.sdx")).status().IsNotFound());
}

TEST_F(BackupExportDamageTest, ANewerVersionIsUnsupported) {
  std::vector<uint8_t> b = good_;
  b[16] = 2;
  Put64(b, 120, XXH3_64bits(b.data(), 120));
  Status s = VerifyDamaged(b);
  EXPECT_TRUE(s.IsUnsupported()) << s.ToString();
  EXPECT_NE(s.message().find("version 2"), std::string::npos) << s.ToString();
  EXPECT_TRUE(OpenBackupExport(Path("damaged.sdx")).status().IsUnsupported());
  // Without its checksum fixed up it is damage, not a version.
  ExpectDetected(Flipped(17), "checksum mismatch", "version bit flip");
}

// Sections removed, duplicated or rewritten with every checksum recomputed:
// what the structure's checksums cannot see, the cross-checks must.
TEST_F(BackupExportDamageTest, ConsistentForgeriesAreCaughtByTheCrossChecks) {
  std::vector<Section> s = parsed_.sections;
  {  // A chunk dropped.
    std::vector<Section> d = s;
    const std::string key = d[4].key;
    d.erase(d.begin() + 4);
    ExpectDetected(Encode(parsed_.header, d),
                   "chunk object '" + key + "', which is not in the file", "dropped chunk");
  }
  {  // The base manifest dropped.
    std::vector<Section> d = s;
    d.erase(d.begin() + 1);
    ExpectDetected(Encode(parsed_.header, d), "is based on I2, which is not in the file",
                   "dropped base");
  }
  {  // A chunk's bytes changed, checksums recomputed: the content hash sees it.
    std::vector<Section> d = s;
    d[3].payload[d[3].payload.size() - 3] ^= 0x40;
    ExpectDetected(Encode(parsed_.header, d), "chunk ", "rewritten chunk");
  }
  {  // A manifest's JSON edited (LSN changed), checksums recomputed: parses, but
     // the SHA-256 of the manifest no longer matches the store's, which the
     // report shows; the file itself is consistent.
    std::vector<Section> d = s;
    std::string json(d[2].payload.begin(), d[2].payload.end());
    const size_t at = json.find("\"last_lsn\":300");
    ASSERT_NE(at, std::string::npos);
    json.replace(at, 14, "\"last_lsn\":301");
    d[2].payload.assign(json.begin(), json.end());
    const std::vector<uint8_t> forged = Encode(parsed_.header, d);
    WriteFile(Path("forged.sdx"), forged);
    Result<ExportReport> r = VerifyBackupExport(Path("forged.sdx"));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_NE(r->sets[2].sha256, FindBackupSet(*store_, "I3")->sha256);
    EXPECT_NE(r->sha256, VerifyBackupExport(path_)->sha256);  // kept elsewhere, it tells
  }
  {  // A base's LSN range edited, checksums recomputed: the chain no longer links up.
    std::vector<Section> d = s;
    std::string json(d[1].payload.begin(), d[1].payload.end());
    const size_t at = json.find("\"last_lsn\":200");
    ASSERT_NE(at, std::string::npos);
    json.replace(at, 14, "\"last_lsn\":201");
    d[1].payload.assign(json.begin(), json.end());
    ExpectDetected(Encode(parsed_.header, d), "set I3 on its base I2: LSNs do not follow on",
                   "edited base");
  }
  {  // A manifest under another set's key.
    std::vector<Section> d = s;
    d[1].key = d[0].key;
    ExpectDetected(Encode(parsed_.header, d), "key appears twice", "duplicate key");
  }
  {  // A chunk no set uses.
    std::vector<Section> d = s;
    Section extra = d[3];
    std::vector<std::byte> raw = testing::PatternBytes(99, 1000);
    std::vector<std::byte> object = EncodeChunk(raw, 1);
    extra.key = ChunkKey(ChunkHash(raw));
    extra.payload.assign(reinterpret_cast<const uint8_t*>(object.data()),
                         reinterpret_cast<const uint8_t*>(object.data()) + object.size());
    d.push_back(extra);
    ExpectDetected(Encode(parsed_.header, d), "is used by no set", "unused chunk");
  }
  {  // A chunk filed under another chunk's key.
    std::vector<Section> d = s;
    d[3].payload = d[4].payload;
    ExpectDetected(Encode(parsed_.header, d), "content hash", "chunk under the wrong key");
  }
  {  // A manifest that is not JSON.
    std::vector<Section> d = s;
    d[0].payload = {'{', 'x'};
    ExpectDetected(Encode(parsed_.header, d), "not valid JSON", "bad manifest");
  }
}

TEST_F(BackupExportDamageTest, RandomFlipsAreAlwaysDetectedAndNeverCrash) {
  const uint64_t seed = testing::TestSeed(20250101);
  std::mt19937_64 rng(seed);
  const int rounds = static_cast<int>(60 * testing::TestScale());
  for (int i = 0; i < rounds; ++i) {
    std::vector<uint8_t> b = good_;
    const int flips = 1 + static_cast<int>(rng() % 3);
    std::string where;
    for (int f = 0; f < flips; ++f) {
      const uint64_t at = rng() % b.size();
      const int bit = static_cast<int>(rng() % 8);
      b[at] ^= static_cast<uint8_t>(1u << bit);
      where += " " + std::to_string(at) + ":" + std::to_string(bit);
    }
    if (b == good_) continue;  // two flips undid each other
    Status s = VerifyDamaged(b);
    EXPECT_TRUE(s.IsCorruption() || s.IsUnsupported()) << "flips" << where << ": " << s.ToString();
  }
  // Random garbage of many lengths, and a valid header over garbage.
  for (int i = 0; i < rounds; ++i) {
    std::vector<uint8_t> b(rng() % 2000);
    for (uint8_t& x : b) x = static_cast<uint8_t>(rng());
    if (i % 2 == 0 && b.size() > 128) std::copy(good_.begin(), good_.begin() + 128, b.begin());
    Status s = VerifyDamaged(b);
    EXPECT_TRUE(s.IsCorruption()) << "garbage of " << b.size() << " bytes: " << s.ToString();
  }
}

// ---- End to end: a real backup chain, exported, restored from the file ------------------

TEST(BackupExportRestoreTest, RestoresFromTheFileAloneByteForByte) {
  const uint64_t seed = testing::TestSeed(31337);
  std::mt19937_64 rng(seed);
  auto device = testing::NewMemoryDevice(256 * kMiB);
  std::unique_ptr<Pool> pool = testing::MustCreatePool(*device);
  WormStoreConfig config;
  config.chunk_bytes = 64 * kKiB;
  auto store = std::make_unique<MemoryWormStore>(config);
  ASSERT_TRUE(pool->CreateVolume("vol", 4 * kMiB).ok());
  Volume* v = *pool->OpenVolume("vol");
  auto churn = [&](int ops) {
    for (int i = 0; i < ops; ++i) {
      const uint64_t block = rng() % (v->size_bytes() / 4096);
      const uint64_t count = std::min<uint64_t>(v->size_bytes() / 4096 - block, 1 + rng() % 16);
      ASSERT_TRUE(v->Write(block * 4096, testing::PatternBytes(rng(), count * 4096)).ok());
    }
  };
  auto backup = [&](BackupMethod method) {
    BackupOptions options;
    options.method = method;
    auto job = BackupJob::Start(*pool, *store, "vol", options);
    SNAPDISK_CHECK(job.ok(), job.status().ToString().c_str());
    Result<BackupSet> set = (*job)->Run();
    SNAPDISK_CHECK(set.ok(), set.status().ToString().c_str());
    store->AdvanceNs(kDayNs);
    return std::move(set).value();
  };
  churn(50);
  backup(BackupMethod::kFull);
  churn(20);
  backup(BackupMethod::kIncr);
  churn(20);
  const BackupSet last = backup(BackupMethod::kIncr);
  ASSERT_TRUE(pool->CreateSnapshot("vol", "oracle").ok());
  churn(20);  // the volume moves on; the file holds the state at `last`

  testing::ScratchDir dir;
  const std::string path = dir.File("vol.sdx");
  ASSERT_TRUE(ExportBackupSet(*store, last.id, path).ok());
  store.reset();  // the file alone from here on
  Result<ExportReport> r = VerifyBackupExport(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->sets.size(), 3u);
  Result<std::unique_ptr<BackupExportReader>> reader = OpenBackupExport(path);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  Result<testing::RestoreReport> restored =
      testing::RestoreBackupSet((*reader)->store(), last.id, *pool, "restored");
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_EQ(restored->sets.size(), 3u);
  Volume* copy = *pool->OpenVolume("restored");
  Volume* oracle = *pool->OpenSnapshot("vol", "oracle");
  EXPECT_EQ(testing::CompareVolumes(*copy, *oracle), "");
}

}  // namespace
}  // namespace snapdisk
