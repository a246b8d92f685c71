// Ceph RBD export-diff streams (restore/rbd_diff.h). The reference is Ceph's
// doc/dev/rbd-diff.rst, not this library: streams are built byte by byte here
// from the spec (SpecStream) and the library's exports are decoded here by
// the spec (DecodeBySpec) and applied to an in-memory image. Covered: v1 and
// v2 streams imported and the volume read back; export then import into
// another volume; v1 and v2 exports of the same snapshots carrying the same
// records; --from chains applied in order (and refused out of order, naming
// the missing snapshot); records in any order, overlapping, applied in
// stream order as Ceph does; a stream truncated at every byte, unknown tags,
// out-of-range records and every other malformation refused with nothing
// written; interrupted and failing imports
// rolled back; a randomized chain round trip (seed printed, --seed N).
#include "restore/rbd_diff.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "engine/pool.h"
#include "engine/volume.h"
#include "support/backup_restore.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk::rbd {
namespace {

using snapdisk::testing::CompareVolumes;
using snapdisk::testing::PatternBytes;
using snapdisk::testing::ScratchDir;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * 1024;

using Bytes = std::vector<std::byte>;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

Bytes Fill(size_t n, uint8_t value) { return Bytes(n, std::byte{value}); }

// ---- The spec, independently of the library ---------------------------------

// A stream laid out byte by byte as rbd-diff.rst describes it. boundaries()
// lists where each part ends: the header, then every record.
class SpecStream {
 public:
  explicit SpecStream(int version) : v2_(version == 2) {
    Text(version == 2 ? "rbd diff v2\n" : "rbd diff v1\n");
    Mark();
  }
  SpecStream& From(const std::string& name) { return Name('f', name); }
  SpecStream& To(const std::string& name) { return Name('t', name); }
  SpecStream& Size(uint64_t size_bytes) {
    Tag('s');
    if (v2_) Le64(8);
    Le64(size_bytes);
    return Mark();
  }
  SpecStream& Write(uint64_t offset, const Bytes& data) {
    Tag('w');
    if (v2_) Le64(16 + data.size());
    Le64(offset);
    Le64(data.size());
    bytes_.insert(bytes_.end(), data.begin(), data.end());
    return Mark();
  }
  SpecStream& Zero(uint64_t offset, uint64_t length) {
    Tag('z');
    if (v2_) Le64(16);
    Le64(offset);
    Le64(length);
    return Mark();
  }
  SpecStream& End() {
    Tag('e');
    return Mark();
  }
  // Raw pieces, for malformed records.
  SpecStream& Tag(char tag) {
    bytes_.push_back(static_cast<std::byte>(tag));
    return *this;
  }
  SpecStream& Le64(uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xff));
    return *this;
  }
  SpecStream& Le32(uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xff));
    return *this;
  }
  SpecStream& Text(std::string_view text) {
    for (char c : text) bytes_.push_back(static_cast<std::byte>(c));
    return *this;
  }
  SpecStream& Mark() {
    boundaries_.push_back(bytes_.size());
    return *this;
  }

  size_t size() const { return bytes_.size(); }
  const Bytes& bytes() const { return bytes_; }
  const std::vector<size_t>& boundaries() const { return boundaries_; }

 private:
  SpecStream& Name(char tag, const std::string& name) {
    Tag(tag);
    if (v2_) Le64(4 + name.size());
    Le32(static_cast<uint32_t>(name.size()));
    Text(name);
    return Mark();
  }

  bool v2_;
  Bytes bytes_;
  std::vector<size_t> boundaries_;
};

struct SpecRecord {
  char tag = 0;
  std::string name;
  uint64_t size = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  Bytes data;
  bool operator==(const SpecRecord&) const = default;
};

// Decodes a stream by the spec; "" in *error when it is well formed.
std::vector<SpecRecord> DecodeBySpec(const Bytes& s, std::string* error) {
  std::vector<SpecRecord> out;
  size_t pos = 0;
  auto need = [&](size_t n) {
    if (s.size() - pos < n) {
      *error = "truncated at " + std::to_string(pos);
      return false;
    }
    return true;
  };
  auto le = [&](int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[pos + i]);
    pos += bytes;
    return v;
  };
  error->clear();
  if (!need(12)) return out;
  const std::string header(reinterpret_cast<const char*>(s.data()), 12);
  if (header != "rbd diff v1\n" && header != "rbd diff v2\n") {
    *error = "bad header";
    return out;
  }
  const bool v2 = header[10] == '2';
  pos = 12;
  for (;;) {
    if (!need(1)) return out;
    SpecRecord r;
    r.tag = static_cast<char>(s[pos++]);
    if (r.tag == 'e') {
      out.push_back(r);
      if (pos != s.size()) *error = "bytes after the end";
      return out;
    }
    uint64_t length = 0;
    if (v2) {
      if (!need(8)) return out;
      length = le(8);
    }
    const size_t fields_at = pos;
    if (r.tag == 'f' || r.tag == 't') {
      if (!need(4)) return out;
      const uint64_t n = le(4);
      if (!need(n)) return out;
      r.name.assign(reinterpret_cast<const char*>(s.data() + pos), n);
      pos += n;
    } else if (r.tag == 's') {
      if (!need(8)) return out;
      r.size = le(8);
    } else if (r.tag == 'w' || r.tag == 'z') {
      if (!need(16)) return out;
      r.offset = le(8);
      r.length = le(8);
      if (r.tag == 'w') {
        if (!need(r.length)) return out;
        r.data.assign(s.begin() + pos, s.begin() + pos + r.length);
        pos += r.length;
      }
    } else {
      *error = "unknown tag";
      return out;
    }
    if (v2 && length != pos - fields_at) {
      *error = "v2 length mismatch at " + std::to_string(fields_at);
      return out;
    }
    out.push_back(std::move(r));
  }
}

// Applies decoded data records to an image (as rbd import-diff would).
void ApplyBySpec(const std::vector<SpecRecord>& records, Bytes* image) {
  for (const SpecRecord& r : records) {
    if (r.tag == 's' && r.size > image->size()) image->resize(r.size);
    if (r.tag == 'w') std::copy(r.data.begin(), r.data.end(), image->begin() + r.offset);
    if (r.tag == 'z') std::fill_n(image->begin() + r.offset, r.length, std::byte{0});
  }
}

// ---- Fixture -------------------------------------------------------------------

class RbdDiffTest : public ::testing::Test {
 protected:
  void SetUp() override { MakePool(4096); }

  void MakePool(uint32_t block_bytes) {
    pool_.reset();
    dev_ = snapdisk::testing::NewMemoryDevice(1024 * kMiB);
    PoolOptions options;
    options.block_bytes = block_bytes;
    pool_ = snapdisk::testing::MustCreatePool(*dev_, options);
  }

  Volume& Create(const std::string& name, uint64_t size_bytes) {
    auto info = pool_->CreateVolume(name, size_bytes);
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    return Open(name);
  }
  Volume& Open(const std::string& name) {
    auto v = pool_->OpenVolume(name);
    SNAPDISK_CHECK(v.ok(), v.status().ToString().c_str());
    return **v;
  }
  Volume& Snap(const std::string& volume, const std::string& name) {
    auto v = pool_->OpenSnapshot(volume, name);
    SNAPDISK_CHECK(v.ok(), v.status().ToString().c_str());
    return **v;
  }
  void MustWrite(Volume& v, uint64_t offset, const Bytes& data) {
    Status s = v.Write(offset, data);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void MustSnapshot(const std::string& volume, const std::string& name) {
    auto s = pool_->CreateSnapshot(volume, name);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
  }
  Bytes Image(Volume& v) { return snapdisk::testing::ReadAll(v, 0, v.size_bytes()); }

  std::vector<std::string> SnapshotNames(const std::string& volume) {
    std::vector<std::string> names;
    auto snaps = pool_->ListSnapshots(volume);
    EXPECT_TRUE(snaps.ok()) << snaps.status().ToString();
    if (snaps.ok()) {
      for (const SnapshotInfo& s : *snaps) names.push_back(s.name);
    }
    return names;
  }

  std::string Save(const std::string& name, const Bytes& bytes) {
    const std::string path = dir_.File(name);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    return path;
  }
  Bytes Load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return Bytes(reinterpret_cast<const std::byte*>(text.data()),
                 reinterpret_cast<const std::byte*>(text.data()) + text.size());
  }

  Result<ImportReport> Import(const std::string& volume, const Bytes& stream) {
    return ImportDiff(*pool_, volume, Save("stream-" + std::to_string(++streams_), stream));
  }
  // Exports volume@snapshot (from `from`) and returns the stream's bytes.
  Bytes Export(const std::string& volume, const std::string& snapshot, const std::string& from,
               DiffFormat format, ExportReport* report = nullptr) {
    ExportOptions options;
    options.format = format;
    options.from_snapshot = from;
    const std::string path = dir_.File("export-" + std::to_string(++streams_));
    auto r = ExportDiff(*pool_, volume, snapshot, path, options);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {};
    if (report) *report = *r;
    return Load(path);
  }

  // A volume must be exactly as it was: same bytes, same snapshots, no undo
  // snapshot left.
  void ExpectUnchanged(const std::string& volume, const Bytes& image,
                       const std::vector<std::string>& snapshots) {
    Volume& v = Open(volume);
    EXPECT_EQ(v.size_bytes(), image.size());
    EXPECT_TRUE(Image(v) == image) << "volume '" << volume << "' changed";
    EXPECT_EQ(SnapshotNames(volume), snapshots);
  }

  ScratchDir dir_;
  std::unique_ptr<MemoryDevice> dev_;
  std::unique_ptr<Pool> pool_;
  int streams_ = 0;
};

// ---- Spec-built streams imported --------------------------------------------------

TEST_F(RbdDiffTest, SpecBuiltStreamsOfBothFormatsImportByteForByte) {
  for (int version : {1, 2}) {
    SCOPED_TRACE("format v" + std::to_string(version));
    const std::string name = "v" + std::to_string(version);
    Volume& v = Create(name, 1 * kMiB);
    // Old data the stream overwrites, zeroes, and leaves alone.
    MustWrite(v, 0, PatternBytes(7, 256 * kKiB));
    Bytes expected = Image(v);

    const Bytes aligned = PatternBytes(version * 10 + 1, 8 * kKiB);
    const Bytes unaligned = PatternBytes(version * 10 + 2, 3000);
    const Bytes zeros = Fill(12 * kKiB, 0);  // data that happens to be zeros
    SpecStream s(version);
    s.To("snap1").Size(1 * kMiB);
    s.Write(4 * kKiB, aligned).Write(20000, unaligned).Zero(64 * kKiB, 8 * kKiB + 100);
    s.Write(100 * kKiB, zeros).Write(300 * kKiB + 17, unaligned).Zero(1 * kMiB - 1024, 512);
    s.Write(1 * kMiB - 1, Fill(1, 0xab)).End();

    std::copy(aligned.begin(), aligned.end(), expected.begin() + 4 * kKiB);
    std::copy(unaligned.begin(), unaligned.end(), expected.begin() + 20000);
    std::fill_n(expected.begin() + 64 * kKiB, 8 * kKiB + 100, std::byte{0});
    std::fill_n(expected.begin() + 100 * kKiB, 12 * kKiB, std::byte{0});
    std::copy(unaligned.begin(), unaligned.end(), expected.begin() + 300 * kKiB + 17);
    std::fill_n(expected.begin() + 1 * kMiB - 1024, 512, std::byte{0});
    expected[1 * kMiB - 1] = std::byte{0xab};

    auto report = Import(name, s.bytes());
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(static_cast<int>(report->summary.format), version);
    EXPECT_FALSE(report->summary.from_snapshot.has_value());
    EXPECT_EQ(report->summary.to_snapshot, "snap1");
    EXPECT_EQ(report->summary.data_records, 5u);
    EXPECT_EQ(report->summary.zero_records, 2u);
    EXPECT_EQ(report->summary.data_bytes, 8 * kKiB + 3000 + 12 * kKiB + 3000 + 1);
    EXPECT_EQ(report->summary.stream_bytes, s.size());
    // The all-zero data block became write-zeroes, not data.
    EXPECT_EQ(report->written_bytes + report->zeroed_bytes,
              report->summary.data_bytes + report->summary.zero_bytes);
    EXPECT_GE(report->zeroed_bytes, 12 * kKiB + 8 * kKiB + 100 + 512);
    ASSERT_TRUE(report->snapshot.has_value());
    EXPECT_EQ(report->snapshot->name, "snap1");

    EXPECT_TRUE(Image(v) == expected);
    EXPECT_TRUE(Image(Snap(name, "snap1")) == expected);
    EXPECT_EQ(SnapshotNames(name), std::vector<std::string>{"snap1"});
    // Zeroed whole blocks are holes.
    auto map = v.MapExtents(64 * kKiB, 8 * kKiB);
    ASSERT_TRUE(map.ok());
    ASSERT_EQ(map->size(), 1u);
    EXPECT_TRUE((*map)[0].zero);
  }
}

// Ceph's `rbd import-diff` applies data records in stream order, whatever
// their offsets, a later record winning where two overlap; so does import.
TEST_F(RbdDiffTest, RecordsInAnyOrderAndOverlappingApplyInStreamOrder) {
  const uint64_t seed = snapdisk::testing::TestSeed(88);
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 6; ++round) {
    const int version = 1 + round % 2;
    SCOPED_TRACE("round " + std::to_string(round) + ", format v" + std::to_string(version));
    const std::string name = "any" + std::to_string(round);
    constexpr uint64_t kVolume = 512 * kKiB;
    Volume& v = Create(name, kVolume);
    MustWrite(v, 0, PatternBytes(rng(), kVolume));
    Bytes expected = Image(v);
    SpecStream s(version);
    s.To("after");
    // Descending, overlapping, unaligned, zeros over data and data over zeros.
    for (int r = 0; r < 40; ++r) {
      const uint64_t offset = rng() % (kVolume - 1);
      const uint64_t length = 1 + rng() % std::min<uint64_t>(kVolume - offset, 40 * kKiB);
      if (rng() % 3 == 0) {
        s.Zero(offset, length);
        std::fill_n(expected.begin() + static_cast<std::ptrdiff_t>(offset), length, std::byte{0});
      } else {
        const Bytes data = rng() % 4 == 0 ? Fill(length, 0x5a) : PatternBytes(rng(), length);
        s.Write(offset, data);
        std::copy(data.begin(), data.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
      }
    }
    // And the spec's own worst case: a record that ends before the previous
    // one begins, then one inside it.
    s.Write(300 * kKiB, Fill(8 * kKiB, 0x01)).Write(8192, Fill(100, 0x02));
    s.Zero(300 * kKiB + 100, 50).Write(300 * kKiB + 120, Fill(10, 0x03)).End();
    std::fill_n(expected.begin() + 300 * kKiB, 8 * kKiB, std::byte{0x01});
    std::fill_n(expected.begin() + 8192, 100, std::byte{0x02});
    std::fill_n(expected.begin() + 300 * kKiB + 100, 50, std::byte{0});
    std::fill_n(expected.begin() + 300 * kKiB + 120, 10, std::byte{0x03});
    auto report = Import(name, s.bytes());
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(Image(v) == expected) << "seed " << seed;
    EXPECT_TRUE(Image(Snap(name, "after")) == expected);
    EXPECT_EQ(SnapshotNames(name), std::vector<std::string>{"after"});
  }
}

TEST_F(RbdDiffTest, SpecBuiltStreamWithoutMetadataOrSnapshotsAppliesToAnyVolume) {
  Volume& v = Create("plain", 256 * kKiB);
  MustWrite(v, 0, PatternBytes(3, 256 * kKiB));
  Bytes expected = Image(v);
  SpecStream s(1);
  // No 'f', 't' or 's'; zero-length records change nothing.
  s.Write(5, Fill(10, 0x11)).Write(20, {}).Zero(20, 0).Zero(30, 0).End();
  std::fill_n(expected.begin() + 5, 10, std::byte{0x11});
  auto report = Import("plain", s.bytes());
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_FALSE(report->snapshot.has_value());
  EXPECT_TRUE(Image(v) == expected);
  EXPECT_TRUE(SnapshotNames("plain").empty());

  // The empty stream: a header and the end record.
  SpecStream empty(2);
  empty.End();
  ASSERT_TRUE(Import("plain", empty.bytes()).ok());
  EXPECT_TRUE(Image(v) == expected);
}

TEST_F(RbdDiffTest, StreamSizeGrowsTheVolumeAndDataLandsBeyondTheOldEnd) {
  Volume& v = Create("grow", 1 * kMiB);
  MustWrite(v, 0, PatternBytes(1, 4 * kKiB));
  Bytes expected = Image(v);
  expected.resize(3 * kMiB);
  const Bytes tail = PatternBytes(2, 100 * kKiB);
  std::copy(tail.begin(), tail.end(), expected.begin() + 2 * kMiB + 5);
  SpecStream s(2);
  s.Size(3 * kMiB).To("big").Write(2 * kMiB + 5, tail).End();
  auto report = Import("grow", s.bytes());
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->old_size_bytes, 1 * kMiB);
  EXPECT_EQ(report->size_bytes, 3 * kMiB);
  EXPECT_EQ(v.size_bytes(), 3 * kMiB);
  EXPECT_TRUE(Image(v) == expected);
  EXPECT_EQ(Snap("grow", "big").size_bytes(), 3 * kMiB);
}

// ---- Export ----------------------------------------------------------------------

// Fills a volume of at least 16 MiB with a mix: data, unaligned data, zeros
// written as data, trims and write-zeroes over data.
void Scribble(Volume& v, uint64_t seed) {
  ASSERT_GE(v.size_bytes(), 16 * kMiB);
  ASSERT_TRUE(v.Write(0, PatternBytes(seed, 64 * kKiB)).ok());
  ASSERT_TRUE(v.Write(100 * kKiB + 3, PatternBytes(seed + 1, 5000)).ok());
  ASSERT_TRUE(v.Write(200 * kKiB, Fill(16 * kKiB, 0)).ok());
  ASSERT_TRUE(v.Write(300 * kKiB, PatternBytes(seed + 2, 9 * kMiB)).ok());  // > 4 MiB records
  ASSERT_TRUE(v.Trim(16 * kKiB, 8 * kKiB).ok());
  ASSERT_TRUE(v.WriteZeroes(1 * kMiB, 4 * kKiB).ok());
}

TEST_F(RbdDiffTest, ExportDecodesBySpecAndImportsIntoAnotherVolume) {
  Volume& src = Create("src", 16 * kMiB);
  Scribble(src, 40);
  MustSnapshot("src", "s1");
  for (DiffFormat format : {DiffFormat::kV1, DiffFormat::kV2}) {
    SCOPED_TRACE("format v" + std::to_string(static_cast<int>(format)));
    ExportReport report;
    const Bytes stream = Export("src", "s1", "", format, &report);
    EXPECT_EQ(report.stream_bytes, stream.size());
    std::string error;
    const std::vector<SpecRecord> records = DecodeBySpec(stream, &error);
    ASSERT_EQ(error, "");
    ASSERT_GE(records.size(), 3u);
    EXPECT_EQ(records[0].tag, 't');
    EXPECT_EQ(records[0].name, "s1");
    EXPECT_EQ(records[1].tag, 's');
    EXPECT_EQ(records[1].size, 16 * kMiB);
    EXPECT_EQ(records.back().tag, 'e');
    uint64_t last_end = 0;
    for (const SpecRecord& r : records) {
      EXPECT_NE(r.tag, 'f');
      if (r.tag == 'w') {
        EXPECT_LE(r.length, kMaxDataRecordBytes);
      }
      if (r.tag == 'w' || r.tag == 'z') {
        EXPECT_GE(r.offset, last_end);  // in order, no overlap
        last_end = r.offset + r.length;
      }
    }
    // The spec's reading of the stream gives the snapshot's image.
    Bytes image(16 * kMiB);
    ApplyBySpec(records, &image);
    EXPECT_TRUE(image == Image(Snap("src", "s1")));
    // The zeros written as data went out as 'z', not as 16 KiB of 'w'.
    bool zero_record_for_zeros = false;
    for (const SpecRecord& r : records) {
      if (r.tag == 'z' && r.offset <= 200 * kKiB && r.offset + r.length >= 216 * kKiB) {
        zero_record_for_zeros = true;
      }
    }
    EXPECT_TRUE(zero_record_for_zeros);

    const std::string dst = "dst-v" + std::to_string(static_cast<int>(format));
    Create(dst, 16 * kMiB);
    auto imported = Import(dst, stream);
    ASSERT_TRUE(imported.ok()) << imported.status().ToString();
    EXPECT_EQ(CompareVolumes(Snap("src", "s1"), Open(dst)), "");
    EXPECT_EQ(CompareVolumes(Snap("src", "s1"), Snap(dst, "s1")), "");
  }
}

TEST_F(RbdDiffTest, V1AndV2ExportsOfTheSameSnapshotsCarryTheSameRecords) {
  Volume& src = Create("src", 32 * kMiB);
  Scribble(src, 1);
  MustSnapshot("src", "a");
  ASSERT_TRUE(src.Write(5 * kMiB + 1, PatternBytes(9, 6 * kMiB)).ok());
  ASSERT_TRUE(src.Trim(0, 32 * kKiB).ok());
  MustSnapshot("src", "b");
  for (const std::string from : {"", "a"}) {
    SCOPED_TRACE("from '" + from + "'");
    const Bytes v1 = Export("src", "b", from, DiffFormat::kV1);
    const Bytes v2 = Export("src", "b", from, DiffFormat::kV2);
    std::string error;
    const auto r1 = DecodeBySpec(v1, &error);
    ASSERT_EQ(error, "");
    const auto r2 = DecodeBySpec(v2, &error);
    ASSERT_EQ(error, "");
    EXPECT_TRUE(r1 == r2);
    // v2 is v1 plus one le64 length per record but the end record.
    EXPECT_EQ(v2.size(), v1.size() + 8 * (r1.size() - 1));
    // The library's own reader agrees with the spec's.
    MemorySource source(v2, "v2");
    DiffReader reader(source);
    size_t i = 0;
    while (!reader.done()) {
      auto r = reader.Next();
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ASSERT_LT(i, r2.size());
      EXPECT_EQ(static_cast<char>(r->type), r2[i].tag);
      EXPECT_EQ(r->snapshot, r2[i].name);
      if (r->type == RecordType::kData || r->type == RecordType::kZero) {
        EXPECT_EQ(r->offset_bytes, r2[i].offset);
        EXPECT_EQ(r->length_bytes, r2[i].length);
      }
      if (r->type == RecordType::kData) {
        EXPECT_TRUE(std::equal(r2[i].data.begin(), r2[i].data.end(),
                               v2.begin() + static_cast<ptrdiff_t>(r->data_position)));
      }
      ++i;
    }
    EXPECT_EQ(i, r2.size());
  }
}

TEST_F(RbdDiffTest, WriterOutputIsTheSpecsBytes) {
  // The library's writer against the hand-built stream, both formats.
  for (int version : {1, 2}) {
    SpecStream spec(version);
    const Bytes data = PatternBytes(5, 777);
    spec.From("x").To("y.z").Size(1 * kMiB).Write(10, data).Zero(4096, 8192).End();
    struct Collect : ByteSink {
      Status Write(std::span<const std::byte> b) override {
        bytes.insert(bytes.end(), b.begin(), b.end());
        return Status::OK();
      }
      Bytes bytes;
    } sink;
    DiffWriter writer(sink, version == 1 ? DiffFormat::kV1 : DiffFormat::kV2);
    ASSERT_TRUE(writer.Begin("x", "y.z", 1 * kMiB).ok());
    ASSERT_TRUE(writer.Data(10, data).ok());
    ASSERT_TRUE(writer.Zero(4096, 8192).ok());
    // The writer refuses what the reader would.
    EXPECT_TRUE(writer.Zero(4096, 1).IsInvalidArgument());
    EXPECT_TRUE(writer.Zero(1 * kMiB, 1).IsInvalidArgument());
    ASSERT_TRUE(writer.End().ok());
    EXPECT_TRUE(sink.bytes == spec.bytes()) << "v" << version;
    EXPECT_EQ(writer.bytes_written(), spec.size());
  }
}

// ---- Chains ------------------------------------------------------------------------

TEST_F(RbdDiffTest, FromChainsApplyInOrderAndRefuseOutOfOrder) {
  Volume& src = Create("src", 16 * kMiB);
  Scribble(src, 100);
  MustSnapshot("src", "snap1");
  ASSERT_TRUE(src.Write(7 * kMiB, PatternBytes(101, 64 * kKiB)).ok());
  ASSERT_TRUE(src.Trim(300 * kKiB, 1 * kMiB).ok());
  ASSERT_TRUE(src.WriteZeroes(3, 5000).ok());
  ASSERT_TRUE(src.Write(2 * kMiB + 11, Fill(20 * kKiB, 0)).ok());
  MustSnapshot("src", "snap2");
  const Bytes full = Export("src", "snap1", "", DiffFormat::kV2);
  const Bytes incr = Export("src", "snap2", "snap1", DiffFormat::kV1);
  std::string error;
  const auto incr_records = DecodeBySpec(incr, &error);
  ASSERT_EQ(error, "");
  ASSERT_EQ(incr_records[0].tag, 'f');
  EXPECT_EQ(incr_records[0].name, "snap1");
  EXPECT_EQ(incr_records[1].name, "snap2");

  Volume& dst = Create("dst", 16 * kMiB);
  const Bytes before = Image(dst);
  // The incremental first: refused, naming what is missing; nothing written.
  auto r = Import("dst", incr);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "has no snapshot 'snap1'")) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "starts from")) << r.status().ToString();
  ExpectUnchanged("dst", before, {});

  ASSERT_TRUE(Import("dst", full).ok());
  EXPECT_EQ(CompareVolumes(Snap("src", "snap1"), dst), "");
  auto second = Import("dst", incr);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->summary.from_snapshot, "snap1");
  EXPECT_EQ(CompareVolumes(Snap("src", "snap2"), dst), "");
  EXPECT_EQ(CompareVolumes(Snap("src", "snap2"), Snap("dst", "snap2")), "");
  EXPECT_EQ(CompareVolumes(Snap("src", "snap1"), Snap("dst", "snap1")), "");
  EXPECT_EQ(SnapshotNames("dst"), (std::vector<std::string>{"snap1", "snap2"}));

  // Applying it again: snap2 exists now.
  auto again = Import("dst", incr);
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(again.status().IsAlreadyExists()) << again.status().ToString();
  EXPECT_TRUE(Contains(again.status().message(), "'snap2'"));
}

TEST_F(RbdDiffTest, IncrementalRefusedWhenTheVolumeChangedSinceItsFromSnapshot) {
  Volume& src = Create("src", 16 * kMiB);
  Scribble(src, 7);
  MustSnapshot("src", "snap1");
  ASSERT_TRUE(src.Write(1 * kMiB, PatternBytes(8, 4 * kKiB)).ok());
  MustSnapshot("src", "snap2");
  const Bytes full = Export("src", "snap1", "", DiffFormat::kV2);
  const Bytes incr = Export("src", "snap2", "snap1", DiffFormat::kV2);

  Volume& dst = Create("dst", 16 * kMiB);
  ASSERT_TRUE(Import("dst", full).ok());
  MustWrite(dst, 3 * kMiB, Fill(1, 1));  // a write since snap1
  const Bytes written = Image(dst);
  auto r = Import("dst", incr);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "volume 'dst' was written since snapshot 'snap1'"))
      << r.status().ToString();
  ExpectUnchanged("dst", written, {"snap1"});

  // A grow since snap1 is a change too.
  ASSERT_TRUE(pool_->Rollback("dst", "snap1").ok());
  ASSERT_TRUE(pool_->GrowVolume("dst", 24 * kMiB).ok());
  r = Import("dst", incr);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status().message(), "grown since snapshot 'snap1'"))
      << r.status().ToString();

  // Back at snap1 (same size) it applies.
  Create("dst2", 16 * kMiB);
  ASSERT_TRUE(Import("dst2", full).ok());
  ASSERT_TRUE(Import("dst2", incr).ok());
  EXPECT_EQ(CompareVolumes(Snap("src", "snap2"), Open("dst2")), "");
}

// ---- Malformed streams: refused, nothing written --------------------------------------

TEST_F(RbdDiffTest, TruncatedAtEveryByteIsRefusedWithNothingWritten) {
  for (int version : {1, 2}) {
    SCOPED_TRACE("format v" + std::to_string(version));
    const std::string name = "t" + std::to_string(version);
    Volume& v = Create(name, 256 * kKiB);
    MustWrite(v, 0, PatternBytes(11, 256 * kKiB));
    MustSnapshot(name, "base");
    const Bytes before = Image(v);
    SpecStream s(version);
    s.From("base").To("next").Size(256 * kKiB);
    s.Write(100, PatternBytes(12, 40)).Zero(4096, 4096).Write(9000, PatternBytes(13, 20)).End();
    const std::vector<size_t>& bounds = s.boundaries();
    for (size_t length = 0; length < s.size(); ++length) {
      SCOPED_TRACE("first " + std::to_string(length) + " bytes");
      const Bytes prefix(s.bytes().begin(), s.bytes().begin() + static_cast<ptrdiff_t>(length));
      auto r = Import(name, prefix);
      ASSERT_FALSE(r.ok());
      if (length == 0) {
        EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
      } else {
        EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
        EXPECT_TRUE(Contains(r.status().message(), "truncated")) << r.status().ToString();
        // The error names the byte where the cut record starts.
        size_t record_at = 0;
        for (size_t b : bounds) {
          if (b <= length) record_at = b;
        }
        if (length >= 12) {
          EXPECT_TRUE(Contains(r.status().message(), "byte " + std::to_string(record_at) + ":"))
              << r.status().ToString();
        }
      }
      ExpectUnchanged(name, before, {"base"});
    }
    // The whole stream applies.
    ASSERT_TRUE(Import(name, s.bytes()).ok());
    EXPECT_EQ(SnapshotNames(name), (std::vector<std::string>{"base", "next"}));
  }
}

TEST_F(RbdDiffTest, MalformedStreamsAreRefusedNamingTheByteWithNothingWritten) {
  Volume& v = Create("vol", 1 * kMiB);
  MustWrite(v, 0, PatternBytes(21, 1 * kMiB));
  MustSnapshot("vol", "base");
  const Bytes before = Image(v);
  const std::vector<std::string> snaps = {"base"};
  const Bytes four = PatternBytes(22, 4096);

  struct Case {
    std::string what;
    Bytes stream;
    StatusCode code;
    std::string message;  // a part of the error
  };
  std::vector<Case> cases;
  auto add = [&](const std::string& what, const SpecStream& s, StatusCode code,
                 const std::string& message) {
    cases.push_back({what, s.bytes(), code, message});
  };
  for (int version : {1, 2}) {
    const std::string v = " (v" + std::to_string(version) + ")";
    const size_t h = 12;
    {
      SpecStream s(version);
      s.To("x").Tag('x');
      add("unknown tag in the metadata" + v, s, StatusCode::kCorruption,
          "byte " + std::to_string(s.size() - 1) + ": unknown record tag 'x'");
    }
    {
      SpecStream s(version);
      s.Write(0, four);
      const size_t at = s.size();
      s.Tag('q').Le64(16).Le64(0).Le64(0).End();
      add("unknown tag among the data" + v, s, StatusCode::kCorruption,
          "byte " + std::to_string(at) + ": unknown record tag 'q'");
    }
    {
      SpecStream s(version);
      s.Tag(static_cast<char>(0x01));
      add("binary tag" + v, s, StatusCode::kCorruption, "unknown record tag 0x01");
    }
    {
      SpecStream s(version);
      s.Size(1 * kMiB).Write(1 * kMiB - 100, four).End();
      add("a write beyond the stream's size" + v, s, StatusCode::kCorruption,
          "beyond the image size 1048576");
    }
    {
      SpecStream s(version);
      s.Size(1 * kMiB).Zero(1 * kMiB, 1).End();
      add("a zero record beyond the stream's size" + v, s, StatusCode::kCorruption,
          "beyond the image size");
    }
    {
      SpecStream s(version);
      s.Write(1 * kMiB - 10, four).End();  // no 's': the volume's size bounds it
      add("a write beyond the volume" + v, s, StatusCode::kInvalidArgument,
          "beyond the end of volume 'vol'");
    }
    {
      SpecStream s(version);
      s.Zero(UINT64_MAX - 10, 100).End();
      add("offset + length overflowing" + v, s, StatusCode::kCorruption, "overflows 64 bits");
    }
    {
      SpecStream s(version);
      s.Write(0, four).To("late").End();
      add("metadata after data" + v, s, StatusCode::kCorruption,
          "byte " + std::to_string(h + (version == 2 ? 25 : 17) + 4096) +
              ": record 't': a metadata record after a data record");
    }
    {
      SpecStream s(version);
      s.To("a").To("b").End();
      add("two to-snapshot records" + v, s, StatusCode::kCorruption, "a second one");
    }
    {
      SpecStream s(version);
      s.Size(1 * kMiB).Size(1 * kMiB).End();
      add("two size records" + v, s, StatusCode::kCorruption, "a second one");
    }
    {
      SpecStream s(version);
      s.End().Text("junk");
      add("bytes after the end record" + v, s, StatusCode::kCorruption,
          "byte " + std::to_string(h + 1) + ": 4 bytes follow the end record at byte 12");
    }
    {
      SpecStream s(version);
      s.Tag('t');
      if (version == 2) s.Le64(4);
      s.Le32(0).End();
      add("an empty snapshot name" + v, s, StatusCode::kCorruption, "an empty snapshot name");
    }
    {
      SpecStream s(version);
      s.Tag('f');
      if (version == 2) s.Le64(4 + 100000);
      s.Le32(100000).End();
      add("a huge snapshot name" + v, s, StatusCode::kCorruption, "a snapshot name of 100000");
    }
    {
      SpecStream s(version);
      s.Write(0, four);
      const size_t at = s.size();
      s.Tag('w');
      if (version == 2) s.Le64(16 + 1000);
      s.Le64(8192).Le64(1000).Text("short").End();
      add("a write whose data runs past the end" + v, s, StatusCode::kCorruption,
          "byte " + std::to_string(at) + ": record 'w': its 1000 bytes of data run past the end");
    }
    {
      SpecStream s(version);
      s.To("bad@name").End();
      add("a to snapshot snapdisk cannot name" + v, s, StatusCode::kInvalidArgument,
          "not a valid snapdisk snapshot name");
    }
    {
      SpecStream s(version);
      s.From("missing").End();
      add("a from snapshot the volume lacks" + v, s, StatusCode::kNotFound,
          "volume 'vol' has no snapshot 'missing', which diff stream");
    }
    {
      SpecStream s(version);
      s.To("base").End();
      add("a to snapshot the volume has" + v, s, StatusCode::kAlreadyExists,
          "volume 'vol' already has a snapshot 'base'");
    }
    {
      SpecStream s(version);
      s.Size(512 * kKiB).End();
      add("a size smaller than the volume" + v, s, StatusCode::kUnsupported, "cannot shrink");
    }
    {
      SpecStream s(version);
      s.Size(2 * kMiB + 1).End();
      add("a size not a multiple of 512" + v, s, StatusCode::kInvalidArgument,
          "not a multiple of 512");
    }
  }
  // v2 only: length fields that disagree with their records.
  {
    SpecStream s(2);
    s.Tag('s').Le64(16).Le64(1 * kMiB).Le64(0).End();
    add("v2 size record with a wrong length", s, StatusCode::kCorruption,
        "byte 12: record 's': its length field says 16 bytes follow, its fields take 8");
  }
  {
    SpecStream s(2);
    s.Tag('w').Le64(16 + 4).Le64(0).Le64(3).Text("abcd").End();
    add("v2 write with a wrong length", s, StatusCode::kCorruption, "its fields take 19");
  }
  {
    SpecStream s(2);
    s.Tag('z').Le64(0).Le64(0).Le64(4096).End();
    add("v2 zero record with length 0", s, StatusCode::kCorruption, "length field says 0");
  }
  {
    SpecStream s(2);
    s.Tag('t').Le64(5).Le32(3).Text("abc").End();
    add("v2 name record with a wrong length", s, StatusCode::kCorruption, "its fields take 7");
  }
  {
    SpecStream s(2);
    s.Tag('w').Le64(15).Le64(0).Le64(UINT64_MAX).End();
    add("v2 write with a data length near 2^64", s, StatusCode::kCorruption, "a data length");
  }
  // Not a stream at all, or another version.
  {
    SpecStream s(1);
    Bytes bytes = s.bytes();
    bytes[0] = std::byte{'R'};
    cases.push_back({"a wrong header", bytes, StatusCode::kInvalidArgument,
                     "is not an RBD export-diff stream"});
    Bytes v3 = s.bytes();
    v3[10] = std::byte{'3'};
    cases.push_back({"format v3", v3, StatusCode::kUnsupported, "RBD diff format 'v3'"});
    cases.push_back({"a raw image", PatternBytes(1, 4096), StatusCode::kInvalidArgument,
                     "not an RBD export-diff stream"});
  }

  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto r = Import("vol", c.stream);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), c.code) << r.status().ToString();
    EXPECT_TRUE(Contains(r.status().message(), c.message)) << r.status().ToString();
    ExpectUnchanged("vol", before, snaps);
  }
}

TEST_F(RbdDiffTest, ImportRefusesMissingFilesVolumesAndVolumesInUse) {
  Volume& v = Create("vol", 1 * kMiB);
  SpecStream s(2);
  s.Write(0, Fill(10, 1)).End();
  const std::string path = Save("ok", s.bytes());
  auto r = ImportDiff(*pool_, "vol", dir_.File("missing"));
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  r = ImportDiff(*pool_, "nope", path);
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  r = ImportDiff(*pool_, "vol", dir_.path().string());
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  // A FIFO cannot be read twice: refused (without waiting for a writer).
  const std::string fifo = dir_.File("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  r = ImportDiff(*pool_, "vol", fifo);
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "save it to a file first")) << r.status().ToString();
  v.SetInUse(true);
  r = ImportDiff(*pool_, "vol", path);
  EXPECT_TRUE(r.status().IsBusy()) << r.status().ToString();
  v.SetInUse(false);
  ASSERT_TRUE(ImportDiff(*pool_, "vol", path).ok());
}

// ---- Undo ------------------------------------------------------------------------------

TEST_F(RbdDiffTest, CancelledImportRollsTheVolumeBack) {
  Volume& v = Create("vol", 64 * kMiB);
  MustWrite(v, 0, PatternBytes(31, 2 * kMiB));
  MustSnapshot("vol", "base");
  const Bytes before = Image(v);
  const uint64_t lsn_before = pool_->GetVolume("vol")->lsn;
  SpecStream s(2);
  s.From("base").To("next").Size(96 * kMiB);
  for (uint64_t at = 0; at < 48 * kMiB; at += 2 * kMiB) s.Write(at, PatternBytes(at, 1 * kMiB));
  s.End();
  const std::string path = Save("big", s.bytes());

  auto job = ImportJob::Start(*pool_, "vol", path);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  // Step into the apply phase until some data has landed.
  int steps = 0;
  while ((*job)->progress().label.rfind("import-diff", 0) != 0 ||
         (*job)->progress().done_bytes == 0) {
    ASSERT_FALSE((*job)->Step()) << (*job)->result().status().ToString();
    pool_->Poll(pool_->in_flight() > 0 ? 1 : 0);
    ASSERT_LT(++steps, 100000);
  }
  EXPECT_EQ(v.size_bytes(), 96 * kMiB);  // grown before the writes
  // The undo snapshot exists meanwhile, and the volume is in use.
  EXPECT_EQ(SnapshotNames("vol"), (std::vector<std::string>{"base", "import-diff-undo-1"}));
  EXPECT_TRUE(pool_->Rollback("vol", "base").IsBusy());
  (*job)->Cancel();
  auto r = (*job)->Run();
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCancelled()) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "is as before the import")) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "keeps its new size")) << r.status().ToString();
  Bytes grown = before;
  grown.resize(96 * kMiB);
  ExpectUnchanged("vol", grown, {"base"});
  EXPECT_FALSE(v.in_use());
  EXPECT_EQ(pool_->GetVolume("vol")->lsn, lsn_before);
  job->reset();
}

TEST_F(RbdDiffTest, StreamChangingDuringTheImportIsUndone) {
  Volume& v = Create("vol", 64 * kMiB);
  MustWrite(v, 0, PatternBytes(41, 1 * kMiB));
  const Bytes before = Image(v);
  SpecStream s(1);
  s.To("next");
  for (uint64_t at = 0; at < 32 * kMiB; at += 1 * kMiB) s.Write(at, PatternBytes(at + 1, 1 * kMiB));
  s.End();
  const std::string path = Save("moving", s.bytes());
  auto job = ImportJob::Start(*pool_, "vol", path);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  while ((*job)->progress().label.rfind("import-diff", 0) != 0 ||
         (*job)->progress().done_bytes == 0) {
    ASSERT_FALSE((*job)->Step()) << (*job)->result().status().ToString();
    pool_->Poll(pool_->in_flight() > 0 ? 1 : 0);
  }
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(s.size() / 2)), 0);
  auto r = (*job)->Run();
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsIOError()) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "changed while it was being imported"))
      << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "is as before the import")) << r.status().ToString();
  ExpectUnchanged("vol", before, {});
}

TEST_F(RbdDiffTest, DestroyingARunningImportUndoesIt) {
  Volume& v = Create("vol", 64 * kMiB);
  const Bytes before = Image(v);
  SpecStream good(2);
  good.To("t");
  for (uint64_t at = 0; at < 64 * kMiB; at += 1 * kMiB) {
    good.Write(at, PatternBytes(at + 3, 512 * kKiB));
  }
  good.End();
  auto job = ImportJob::Start(*pool_, "vol", Save("s", good.bytes()));
  ASSERT_TRUE(job.ok());
  while ((*job)->progress().label.rfind("import-diff", 0) != 0 ||
         (*job)->progress().done_bytes == 0) {
    ASSERT_FALSE((*job)->Step()) << (*job)->result().status().ToString();
    pool_->Poll(pool_->in_flight() > 0 ? 1 : 0);
  }
  ASSERT_LT((*job)->progress().done_bytes, (*job)->progress().total_bytes);
  job->reset();  // cancels, waits, rolls back
  ExpectUnchanged("vol", before, {});
}

// ---- Export refusals ------------------------------------------------------------------

TEST_F(RbdDiffTest, ExportRefusesBadTargetsAndLeavesNoPartialFile) {
  Volume& v = Create("vol", 16 * kMiB);
  Scribble(v, 5);
  MustSnapshot("vol", "s");
  const std::string path = dir_.File("out.diff");
  auto r = ExportDiff(*pool_, "vol", "missing", path);
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  ExportOptions from_missing;
  from_missing.from_snapshot = "nope";
  r = ExportDiff(*pool_, "vol", "s", path, from_missing);
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "'vol@nope'")) << r.status().ToString();
  r = ExportDiff(*pool_, "vol", "s", dir_.File("no/such/dir/x"));
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  r = ExportDiff(*pool_, "vol", "s", dir_.path().string());
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();

  ASSERT_TRUE(ExportDiff(*pool_, "vol", "s", path).ok());
  const Bytes first = Load(path);
  r = ExportDiff(*pool_, "vol", "s", path);
  EXPECT_TRUE(r.status().IsAlreadyExists()) << r.status().ToString();
  EXPECT_TRUE(Load(path) == first);
  ExportOptions v1;
  v1.format = DiffFormat::kV1;
  v1.overwrite = true;
  ASSERT_TRUE(ExportDiff(*pool_, "vol", "s", path, v1).ok());
  EXPECT_LT(Load(path).size(), first.size());

  // Cancelled half-way: no file, no temporary left; the snapshot is free.
  const std::string cancelled = dir_.File("cancelled.diff");
  auto job = ExportJob::Start(*pool_, "vol", "s", cancelled, {});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_TRUE(pool_->DeleteSnapshot("vol", "s").IsBusy());
  ASSERT_FALSE((*job)->Step());
  (*job)->Cancel();
  auto cr = (*job)->Run();
  EXPECT_TRUE(cr.status().IsCancelled()) << cr.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(cancelled));
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    EXPECT_EQ(entry.path().filename().string().find(".partial"), std::string::npos) << entry.path();
  }
  job->reset();
  EXPECT_TRUE(pool_->DeleteSnapshot("vol", "s").ok());
}

TEST_F(RbdDiffTest, ExportToADescriptorWritesInOrder) {
  Volume& v = Create("vol", 16 * kMiB);
  Scribble(v, 9);
  MustSnapshot("vol", "s");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const Bytes file = Export("vol", "s", "", DiffFormat::kV2);
  // The pipe holds 64 KiB: drain it from a thread while the export writes.
  Bytes piped;
  std::thread reader([&] {
    std::byte buf[65536];
    for (;;) {
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      piped.insert(piped.end(), buf, buf + n);
    }
  });
  ExportOptions options;
  options.output_fd = fds[1];
  auto r = ExportDiff(*pool_, "vol", "s", "pipe", options);
  ::close(fds[1]);
  reader.join();
  ::close(fds[0]);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(piped == file);
}

// ---- Randomized chain round trip ---------------------------------------------------

TEST_F(RbdDiffTest, RandomizedChainsRoundTrip) {
  const uint64_t base_seed = snapdisk::testing::TestSeed(20261121);
  const uint64_t rounds = 4 * snapdisk::testing::TestScale();
  for (uint64_t round = 0; round < rounds; ++round) {
    const uint64_t seed = base_seed + round;
    const uint32_t block = round % 2 == 0 ? 4096 : 65536;
    SCOPED_TRACE("seed " + std::to_string(seed) + " block " + std::to_string(block));
    MakePool(block);
    std::mt19937_64 rng(seed);
    auto pick = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
    uint64_t size = (4 + pick(12)) * kMiB;
    Volume* src = &Create("src", size);
    std::vector<std::string> snaps;
    std::vector<Bytes> images;
    const int snapshots = 3 + static_cast<int>(pick(3));
    for (int k = 0; k < snapshots; ++k) {
      const int ops = 5 + static_cast<int>(pick(30));
      for (int i = 0; i < ops; ++i) {
        const uint64_t offset = pick(size);
        const uint64_t len = 1 + pick(std::min<uint64_t>(size - offset, 2 * kMiB));
        switch (pick(5)) {
          case 0:
            ASSERT_TRUE(src->Trim(offset, len).ok());
            break;
          case 1:
            ASSERT_TRUE(src->WriteZeroes(offset, len).ok());
            break;
          case 2:
            ASSERT_TRUE(src->Write(offset, Fill(len, 0)).ok());
            break;
          default:
            ASSERT_TRUE(src->Write(offset, PatternBytes(rng(), len)).ok());
        }
      }
      if (pick(4) == 0) {  // grow between snapshots
        size += (1 + pick(4)) * kMiB;
        ASSERT_TRUE(pool_->GrowVolume("src", size).ok());
      }
      snaps.push_back("s" + std::to_string(k));
      MustSnapshot("src", snaps.back());
      images.push_back(Image(Snap("src", snaps.back())));
    }
    // Streams: a full one of the first snapshot, then incrementals, formats
    // at random. Each is also decoded by the spec and applied to a model.
    Create("dst", 4 * kMiB);  // the streams' size records grow it
    Bytes model(4 * kMiB);
    for (int k = 0; k < snapshots; ++k) {
      const DiffFormat format = pick(2) == 0 ? DiffFormat::kV1 : DiffFormat::kV2;
      const std::string from = k == 0 ? "" : snaps[static_cast<size_t>(k - 1)];
      const Bytes stream = Export("src", snaps[static_cast<size_t>(k)], from, format);
      std::string error;
      const auto records = DecodeBySpec(stream, &error);
      ASSERT_EQ(error, "") << "stream " << k;
      ApplyBySpec(records, &model);
      ASSERT_TRUE(model == images[static_cast<size_t>(k)]) << "spec model at snapshot " << k;
      auto r = Import("dst", stream);
      ASSERT_TRUE(r.ok()) << "stream " << k << ": " << r.status().ToString();
      Volume& dst = Open("dst");
      ASSERT_EQ(CompareVolumes(Snap("src", snaps[static_cast<size_t>(k)]), dst), "")
          << "after stream " << k;
    }
    for (int k = 0; k < snapshots; ++k) {
      EXPECT_EQ(CompareVolumes(Snap("src", snaps[static_cast<size_t>(k)]),
                               Snap("dst", snaps[static_cast<size_t>(k)])),
                "")
          << "snapshot " << k;
    }
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace snapdisk::rbd
