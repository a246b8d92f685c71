// The snapdisk CLI's commands, run as the real binary ($SNAPDISK_BIN): every
// command's happy path, human and --json output, import/export round trips
// with holes, snapshot diff, clone, rollback, fsck and scrub on clean and
// corrupted pools, and progress bars on a terminal only.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/pool_file.h"
#include "engine/volume.h"
#include "support/test_env.h"
#include "support/cli_test_support.h"

namespace snapdisk::cli {
namespace {

using nlohmann::json;
using testing::CliOptions;
using testing::CliResult;
using testing::RunCli;

constexpr uint64_t kMiB = 1ull << 20;

// The file's bytes, reading only its data segments (pools are sparse).
std::string ReadFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "<missing>";
  struct stat st;
  ::fstat(fd, &st);
  std::string out(static_cast<size_t>(st.st_size), '\0');
  off_t pos = 0;
  while (pos < st.st_size) {
    const off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;
    const off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (::pread(fd, out.data() + data, static_cast<size_t>(hole - data), data) != hole - data) {
      ADD_FAILURE() << "short read of " << path;
    }
    pos = hole;
  }
  ::close(fd);
  return out;
}

// A sparse image of `size` bytes with data (pattern bytes) at the given
// ranges and holes elsewhere.
void WriteSparseImage(const std::string& path, uint64_t size,
                      const std::vector<std::pair<uint64_t, uint64_t>>& data, uint64_t seed) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  for (const auto& [offset, length] : data) {
    auto bytes = snapdisk::testing::PatternBytes(seed++, length);
    ASSERT_EQ(::pwrite(fd, bytes.data(), length, static_cast<off_t>(offset)),
              static_cast<ssize_t>(length));
  }
  ::close(fd);
}

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ~0ull;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

class CliCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = dir_.File("pool");
    CliResult r = Run({"pool", "create", pool_, "--size", "256M"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  CliResult Run(const std::vector<std::string>& args, const CliOptions& options = {}) {
    return RunCli(args, options);
  }
  // Runs a command that must succeed with --json and returns its document.
  json RunJson(std::vector<std::string> args, const CliOptions& options = {}) {
    args.push_back("--json");
    CliResult r = RunCli(args, options);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    json doc = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << r.out;
    return doc;
  }
  void ExpectOk(const std::vector<std::string>& args, const std::string& out_fragment = "",
                const CliOptions& options = {}) {
    CliResult r = RunCli(args, options);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "") << "no progress or noise on a piped stderr";
    if (!out_fragment.empty()) {
      EXPECT_NE(r.out.find(out_fragment), std::string::npos) << r.out;
    }
  }
  // Writes through the library (the CLI has no write command; NBD does that).
  void WriteVolume(const std::string& volume, uint64_t offset, const std::vector<std::byte>& data,
                   bool trim = false) {
    auto pf = PoolFile::Open(pool_);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    auto v = (*pf)->pool().OpenVolume(volume);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    if (trim) {
      ASSERT_TRUE((*v)->Trim(offset, data.size()).ok());
    } else {
      ASSERT_TRUE((*v)->Write(offset, data).ok());
    }
    ASSERT_TRUE((*pf)->Close().ok());
  }

  snapdisk::testing::ScratchDir dir_;
  std::string pool_;
};

TEST_F(CliCommandsTest, HelpForEveryCommand) {
  const std::vector<std::vector<std::string>> commands = {
      {},
      {"pool"},
      {"pool", "create"},
      {"pool", "info"},
      {"pool", "fsck"},
      {"pool", "scrub"},
      {"volume"},
      {"volume", "create"},
      {"volume", "list"},
      {"volume", "info"},
      {"volume", "delete"},
      {"import"},
      {"export"},
      {"snapshot"},
      {"snapshot", "create"},
      {"snapshot", "list"},
      {"snapshot", "delete"},
      {"snapshot", "diff"},
      {"clone"},
      {"rollback"},
  };
  for (auto args : commands) {
    args.push_back("--help");
    CliResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << args[0];
    EXPECT_NE(r.out.find("Usage: snapdisk"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Exit codes: 0 success, 1"), std::string::npos) << r.out;
  }
}

TEST_F(CliCommandsTest, PoolCreateAndInfo) {
  const json info = RunJson({"pool", "info", pool_});
  EXPECT_EQ(info["path"], pool_);
  EXPECT_EQ(info["pool_bytes"], 256 * kMiB);
  EXPECT_EQ(info["block_bytes"], 4096);
  EXPECT_EQ(info["volumes"], 0);
  EXPECT_EQ(info["snapshots"], 0);
  EXPECT_GT(info["free_bytes"].get<uint64_t>(), 250 * kMiB);
  EXPECT_GT(info["metadata_bytes"].get<uint64_t>(), 0u);
  ExpectOk({"pool", "info", pool_}, "block size  4 KiB");

  const std::string big = dir_.File("big");
  const json created = RunJson({"pool", "create", big, "--size", "1T", "--block-size", "64KiB"});
  EXPECT_EQ(created["pool_bytes"], 1ull << 40);
  EXPECT_EQ(created["block_bytes"], 65536);
  EXPECT_LT(AllocatedBytes(big), 64 * kMiB) << "the pool file must be sparse";
  ExpectOk({"pool", "create", dir_.File("small"), "--size", "64m"}, "Created pool");
  EXPECT_EQ(RunJson({"pool", "info", dir_.File("small")})["pool_bytes"], 64 * kMiB);
}

TEST_F(CliCommandsTest, VolumeLifecycle) {
  pool_ = dir_.File("bigger");
  ASSERT_EQ(Run({"pool", "create", pool_, "--size", "4G"}).exit_code, 0);
  const json v = RunJson({"volume", "create", pool_, "db", "--size", "256M"});
  EXPECT_EQ(v["name"], "db");
  EXPECT_EQ(v["size_bytes"], 256 * kMiB);
  EXPECT_EQ(v["profile"], "unlimited");
  EXPECT_EQ(v["origin"], nullptr);
  EXPECT_TRUE(v["created"].get<std::string>().ends_with("Z"));
  EXPECT_GT(v["created_unix_ns"].get<int64_t>(), 1'600'000'000'000'000'000);
  ExpectOk({"volume", "create", pool_, "logs", "--size", "1536M"}, "Created volume 'logs'");

  CliResult list = Run({"volume", "list", pool_});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("NAME"), std::string::npos);
  EXPECT_NE(list.out.find("256 MiB"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("1.5 GiB"), std::string::npos) << list.out;
  // Columns line up: every row is as long as the header up to the SIZE column.
  std::istringstream lines(list.out);
  std::string header, row1, row2;
  std::getline(lines, header);
  std::getline(lines, row1);
  std::getline(lines, row2);
  EXPECT_EQ(header.find("SIZE") + 4, row1.find("MiB") + 3) << list.out;
  EXPECT_EQ(header.find("SIZE") + 4, row2.find("GiB") + 3) << list.out;

  const json all = RunJson({"volume", "list", pool_});
  ASSERT_TRUE(all.is_array());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0]["name"], "db");
  EXPECT_EQ(all[1]["name"], "logs");

  const json info = RunJson({"volume", "info", pool_, "db"});
  EXPECT_EQ(info["mapped_bytes"], 0);
  EXPECT_EQ(info["in_use"], false);
  EXPECT_EQ(info["qos"]["iops_max"], 0);
  ExpectOk({"volume", "info", pool_, "db"}, "mapped     0 B");

  const json deleted = RunJson({"volume", "delete", pool_, "db"});
  EXPECT_EQ(deleted["deleted"]["name"], "db");
  ExpectOk({"volume", "delete", pool_, "logs"}, "Deleted volume 'logs'");
  EXPECT_EQ(RunJson({"volume", "list", pool_}), json::array());
  EXPECT_EQ(RunJson({"pool", "info", pool_})["volumes"], 0);
}

TEST_F(CliCommandsTest, EssdProfiles) {
  const std::string big = dir_.File("big");
  ASSERT_EQ(Run({"pool", "create", big, "--size", "2T"}).exit_code, 0);
  const json pl1 = RunJson({"volume", "create", big, "db", "--size", "100G", "--profile", "pl1"});
  EXPECT_EQ(pl1["profile"], "PL1");
  const json info = RunJson({"volume", "info", big, "db"});
  EXPECT_EQ(info["qos"]["iops_max"], 6800);                       // 1800 + 50 * 100
  EXPECT_EQ(info["qos"]["throughput_bytes_per_s"], 170'000'000);  // 120 + 0.5 * 100 MB/s
  ExpectOk({"volume", "info", big, "db"}, "ESSD PL1, 100 GiB: 6800 IOPS");
  ExpectOk({"volume", "create", big, "fast", "--size", "1300G", "--profile", "PL3"});
  ExpectOk({"volume", "create", big, "free", "--size", "1G", "--profile", "Unlimited"});
  ExpectOk({"volume", "list", big}, "PL3");
}

TEST_F(CliCommandsTest, ImportExportRoundTripKeepsHoles) {
  const std::string image = dir_.File("disk.raw");
  const uint64_t size = 64 * kMiB;
  WriteSparseImage(image, size, {{0, 4096}, {10 * kMiB, 3 * kMiB}, {63 * kMiB, kMiB}}, 7);
  const json imported = RunJson({"import", pool_, "db", image});
  EXPECT_EQ(imported["volume"]["size_bytes"], size);
  EXPECT_EQ(imported["image_bytes"], size);
  EXPECT_EQ(imported["written_bytes"], 4096 + 4 * kMiB);
  EXPECT_EQ(RunJson({"volume", "info", pool_, "db"})["mapped_bytes"], 4096 + 4 * kMiB);

  // Sparse file out.
  const std::string out = dir_.File("out.raw");
  const json exported = RunJson({"export", pool_, "db", out});
  EXPECT_EQ(exported["size_bytes"], size);
  EXPECT_EQ(exported["data_bytes"], 4096 + 4 * kMiB);
  EXPECT_EQ(ReadFile(out), ReadFile(image));
  EXPECT_LE(AllocatedBytes(out), 4 * kMiB + 64 * 1024) << "holes must stay holes";
  // Human output; an existing file is overwritten.
  ExpectOk({"export", pool_, "db", out}, "Exported volume 'db' (64 MiB, 4.0 MiB mapped) to");
  EXPECT_EQ(ReadFile(out), ReadFile(image));

  // stdout redirected to a file: sparse too. stdout a pipe: every byte.
  const std::string redirected = dir_.File("redirected.raw");
  CliOptions to_file;
  to_file.stdout_path = redirected;
  CliResult r = Run({"export", pool_, "db", "-"}, to_file);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("Exported volume 'db'"), std::string::npos) << "summary goes to stderr";
  EXPECT_EQ(ReadFile(redirected), ReadFile(image));
  EXPECT_LE(AllocatedBytes(redirected), 4 * kMiB + 64 * 1024);
  r = Run({"export", pool_, "db", "-"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out == ReadFile(image)) << "piped export differs";

  // Import from stdin: a redirected file (seekable) and a pipe.
  CliOptions from_file;
  from_file.stdin_path = image;
  ExpectOk({"import", pool_, "db2", "-"}, "Imported 64 MiB into volume 'db2'", from_file);
  EXPECT_EQ(RunJson({"volume", "info", pool_, "db2"})["mapped_bytes"], 4096 + 4 * kMiB);
  CliOptions from_pipe;
  from_pipe.stdin_is_pipe = true;
  from_pipe.stdin_data = ReadFile(image);
  const json piped = RunJson({"import", pool_, "db3", "-"}, from_pipe);
  EXPECT_EQ(piped["volume"]["size_bytes"], size);
  EXPECT_EQ(piped["written_bytes"], 4096 + 4 * kMiB) << "zero blocks on a pipe are skipped";
  for (const char* vol : {"db2", "db3"}) {
    const std::string copy = dir_.File(std::string(vol) + ".raw");
    ExpectOk({"export", pool_, vol, copy});
    EXPECT_EQ(ReadFile(copy), ReadFile(image)) << vol;
  }

  // --size: a bigger volume, and an image that is not a multiple of 512.
  const std::string odd = dir_.File("odd.raw");
  WriteSparseImage(odd, 1000, {{0, 1000}}, 9);
  const json padded = RunJson({"import", pool_, "odd", odd, "--size", "1M"});
  EXPECT_EQ(padded["volume"]["size_bytes"], kMiB);
  CliResult odd_out = Run({"export", pool_, "odd", "-"});
  ASSERT_EQ(odd_out.exit_code, 0);
  ASSERT_EQ(odd_out.out.size(), kMiB);
  EXPECT_EQ(odd_out.out.substr(0, 1000), ReadFile(odd));
  EXPECT_EQ(odd_out.out.substr(1000), std::string(kMiB - 1000, '\0'));
  ExpectOk({"pool", "fsck", pool_}, "is clean");
}

TEST_F(CliCommandsTest, SnapshotsDiffCloneRollback) {
  // Without the write log, which would share every written block (the usage
  // figures below are about snapshots alone).
  ExpectOk({"volume", "create", pool_, "db", "--size", "16M", "--log", "off"});
  WriteVolume("db", 0, snapdisk::testing::PatternBytes(1, 64 * 1024));
  const json s1 = RunJson({"snapshot", "create", pool_, "db", "s1"});
  EXPECT_EQ(s1["volume"], "db");
  EXPECT_EQ(s1["name"], "s1");
  EXPECT_EQ(s1["size_bytes"], 16 * kMiB);

  // Change 8 KiB at 1 MiB, trim the first 4 KiB.
  WriteVolume("db", kMiB, snapdisk::testing::PatternBytes(2, 8192));
  WriteVolume("db", 0, std::vector<std::byte>(4096), /*trim=*/true);
  ExpectOk({"snapshot", "create", pool_, "db", "s2"}, "Created snapshot 'db@s2'");

  const json diff = RunJson({"snapshot", "diff", pool_, "db", "s1", "s2"});
  EXPECT_EQ(diff["from"], "s1");
  EXPECT_EQ(diff["to"], "s2");
  ASSERT_EQ(diff["extents"].size(), 2u) << diff.dump();
  EXPECT_EQ(diff["extents"][0]["offset_bytes"], 0);
  EXPECT_EQ(diff["extents"][0]["length_bytes"], 4096);
  EXPECT_EQ(diff["extents"][0]["zero"], true);
  EXPECT_EQ(diff["extents"][1]["offset_bytes"], kMiB);
  EXPECT_EQ(diff["extents"][1]["length_bytes"], 8192);
  EXPECT_EQ(diff["extents"][1]["zero"], false);
  EXPECT_EQ(diff["changed_bytes"], 12288);
  // To the live volume: "-" or nothing; human output lists the extents.
  WriteVolume("db", 2 * kMiB, snapdisk::testing::PatternBytes(3, 4096));
  const json live = RunJson({"snapshot", "diff", pool_, "db", "s2", "-"});
  EXPECT_EQ(live["to"], nullptr);
  ASSERT_EQ(live["extents"].size(), 1u);
  EXPECT_EQ(live["extents"][0]["offset_bytes"], 2 * kMiB);
  EXPECT_EQ(RunJson({"snapshot", "diff", pool_, "db", "s2"}), live);
  CliResult human = Run({"snapshot", "diff", pool_, "db", "s1"});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("OFFSET"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find(" OFFSET  LENGTH  CHANGE\n"
                           "      0   4 KiB  zeroed\n"
                           "1048576   8 KiB  data\n"
                           "2097152   4 KiB  data\n"),
            std::string::npos)
      << human.out;
  EXPECT_NE(human.out.find("3 extents changed from 'db@s1' to the live volume"), std::string::npos)
      << human.out;

  // List with exclusive/shared bytes.
  const json snaps = RunJson({"snapshot", "list", pool_, "db"});
  ASSERT_EQ(snaps.size(), 2u);
  EXPECT_EQ(snaps[0]["name"], "s1");
  EXPECT_EQ(snaps[1]["name"], "s2");
  // s1 alone holds the first 4 KiB block (trimmed since) and the old 8 KiB at 1 MiB.
  EXPECT_EQ(snaps[0]["exclusive_bytes"], 4096);
  EXPECT_EQ(snaps[0]["shared_bytes"], 60 * 1024);
  EXPECT_GT(snaps[1]["shared_bytes"].get<uint64_t>(), 0u);
  ExpectOk({"snapshot", "list", pool_, "db"}, "EXCLUSIVE");

  // Clone s1: its image is s1's.
  const json clone = RunJson({"clone", pool_, "db@s1", "restored"});
  EXPECT_EQ(clone["name"], "restored");
  EXPECT_EQ(clone["origin"], "db@s1");
  const std::string s1_image = dir_.File("s1.raw"), clone_image = dir_.File("clone.raw");
  ExpectOk({"export", pool_, "db@s1", s1_image});
  ExpectOk({"export", pool_, "restored", clone_image});
  EXPECT_EQ(ReadFile(clone_image), ReadFile(s1_image));
  ExpectOk({"volume", "list", pool_}, "db@s1");
  ExpectOk({"clone", pool_, "db@s2", "restored2"},
           "Cloned 'db@s2' to new volume 'restored2' (16 MiB)");

  // Rollback: the volume reads as s1 again, with a new lineage.
  const uint64_t lineage = RunJson({"volume", "info", pool_, "db"})["lineage"];
  const json rolled = RunJson({"rollback", pool_, "db", "s1"});
  EXPECT_EQ(rolled["snapshot"]["name"], "s1");
  EXPECT_NE(rolled["volume"]["lineage"].get<uint64_t>(), lineage);
  const std::string db_image = dir_.File("db.raw");
  ExpectOk({"export", pool_, "db", db_image});
  EXPECT_EQ(ReadFile(db_image), ReadFile(s1_image));
  ExpectOk({"rollback", pool_, "db", "s2"}, "Rolled volume 'db' back to snapshot 's2'");
  EXPECT_EQ(RunJson({"snapshot", "diff", pool_, "db", "s2"})["extents"], json::array());

  // Delete.
  const json deleted = RunJson({"snapshot", "delete", pool_, "db", "s1"});
  EXPECT_EQ(deleted["deleted"]["name"], "s1");
  ExpectOk({"snapshot", "delete", pool_, "db", "s2"}, "Deleted snapshot 'db@s2'");
  EXPECT_EQ(RunJson({"snapshot", "list", pool_, "db"}), json::array());
  EXPECT_EQ(Run({"pool", "fsck", pool_}).exit_code, 0);
}

// Finds the byte offset of `needle` in the pool file (data blocks are stored
// as written).
off_t FindInFile(const std::string& path, const std::vector<std::byte>& needle) {
  const std::string data = ReadFile(path);
  const size_t at =
      data.find(std::string_view(reinterpret_cast<const char*>(needle.data()), needle.size()));
  return at == std::string::npos ? -1 : static_cast<off_t>(at);
}

TEST_F(CliCommandsTest, FsckAndScrubFindCorruption) {
  // Without the write log: scrub names a bad block once per tree holding it.
  ExpectOk({"volume", "create", pool_, "db", "--size", "16M", "--log", "off"});
  const auto block = snapdisk::testing::PatternBytes(11, 4096);
  WriteVolume("db", 5 * 4096, block);
  ExpectOk({"snapshot", "create", pool_, "db", "s1"});
  const json clean = RunJson({"pool", "fsck", pool_});
  EXPECT_EQ(clean["clean"], true);
  EXPECT_EQ(clean["problems"], json::array());
  ExpectOk({"pool", "fsck", pool_}, "is clean");
  const json scrub = RunJson({"pool", "scrub", pool_});
  EXPECT_EQ(scrub["clean"], true);
  EXPECT_EQ(scrub["blocks_read"], 1);
  ExpectOk({"pool", "scrub", pool_}, "all checksums match");

  // Bit rot in the data block: flip bytes with pwrite.
  const off_t at = FindInFile(pool_, block);
  ASSERT_GE(at, 0);
  const int fd = ::open(pool_.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const char junk[4] = {'r', 'o', 't', '!'};
  ASSERT_EQ(::pwrite(fd, junk, sizeof junk, at + 100), 4);
  ::close(fd);

  CliResult r = Run({"pool", "scrub", pool_});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("db"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("20480"), std::string::npos) << "the volume offset of the bad block";
  EXPECT_NE(r.out.find(std::to_string(at / 4096)), std::string::npos) << "the block";
  EXPECT_NE(r.err.find("scrub found 2 bad block references"), std::string::npos) << r.err;
  r = Run({"pool", "scrub", pool_, "--json"});
  EXPECT_EQ(r.exit_code, 1);
  const json bad = json::parse(r.out);
  EXPECT_EQ(bad["clean"], false);
  ASSERT_EQ(bad["problems"].size(), 2u) << "the volume and its snapshot share the block";
  EXPECT_EQ(bad["problems"][0]["volume"], "db");
  EXPECT_EQ(bad["problems"][0]["offset_bytes"], 5 * 4096);
  EXPECT_EQ(bad["problems"][0]["block"], at / 4096);

  // Reading it is a corruption error (exit 5) and leaves no partial file.
  const std::string out = dir_.File("out.raw");
  r = Run({"export", pool_, "db", out});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_NE(r.err.find("offset"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
  // Metadata is intact: fsck (which checks metadata) stays clean.
  EXPECT_EQ(Run({"pool", "fsck", pool_}).exit_code, 0);
}

// Flips one byte at `offset` of the file.
void FlipByte(const std::string& path, uint64_t offset) {
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c = 0;
  ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(offset)), 1);
  c = static_cast<char>(c ^ 0x5a);
  ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

TEST_F(CliCommandsTest, FsckFindsMetadataDamage) {
  ExpectOk({"volume", "create", pool_, "db", "--size", "16M"});
  const auto block = snapdisk::testing::PatternBytes(12, 4096);
  WriteVolume("db", 0, block);
  const off_t data_at = FindInFile(pool_, block);
  ASSERT_GE(data_at, 0);
  // The volume's leaf map node: a block whose first entry points at the data
  // block (engine/FORMAT.md, "Block-map trees").
  const uint64_t data_pbn = static_cast<uint64_t>(data_at) / 4096;
  std::vector<std::byte> entry(8);
  std::memcpy(entry.data(), &data_pbn, 8);  // little-endian host
  const std::string file = ReadFile(pool_);
  uint64_t leaf = 0;
  for (uint64_t off = 4096 * 2; off + 4096 <= file.size(); off += 4096) {
    if (off != static_cast<uint64_t>(data_at) &&
        std::memcmp(file.data() + off, entry.data(), 8) == 0) {
      leaf = off;
      break;
    }
  }
  ASSERT_NE(leaf, 0u) << "no map node points at block " << data_pbn;
  FlipByte(pool_, leaf + 1000);

  // The pool still opens (open reads the catalog only); fsck finds the node.
  ExpectOk({"volume", "list", pool_}, "db");
  CliResult r = Run({"pool", "fsck", pool_});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("checksum"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("fsck found"), std::string::npos) << r.err;
  r = Run({"pool", "fsck", pool_, "--json"});
  EXPECT_EQ(r.exit_code, 1);
  const json report = json::parse(r.out);
  EXPECT_EQ(report["clean"], false);
  ASSERT_FALSE(report["problems"].empty());
  EXPECT_EQ(report["problems"][0]["kind"], "checksum");
  // Reading through the node is a corruption error.
  EXPECT_EQ(Run({"export", pool_, "db", dir_.File("out.raw")}).exit_code, 5);

  // Damage the catalog (the record naming "db"; older copies too): the pool
  // no longer opens, which is corruption (exit 5), reported in one line.
  int catalogs = 0;
  for (uint64_t off = 4096 * 2; off + 4096 <= file.size(); off += 4096) {
    if (file.compare(off + 72, 3, std::string("db\0", 3)) == 0 && file[off + 16] == 1) {
      FlipByte(pool_, off + 72);
      ++catalogs;
    }
  }
  ASSERT_GT(catalogs, 0);
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"volume", "list", pool_},
                                             {"pool", "info", pool_},
                                             {"pool", "fsck", pool_},
                                             {"pool", "scrub", pool_}}) {
    r = Run(args);
    EXPECT_EQ(r.exit_code, 5) << args[1] << ": " << r.err;
    EXPECT_NE(r.err.find("snapdisk: "), std::string::npos);
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
  }
}

TEST_F(CliCommandsTest, ProgressBarOnlyOnATerminal) {
  const std::string image = dir_.File("disk.raw");
  WriteSparseImage(image, 32 * kMiB, {{0, 32 * kMiB}}, 3);
  // Piped stderr: nothing but what the command reports.
  CliResult piped = Run({"import", pool_, "a", image});
  ASSERT_EQ(piped.exit_code, 0);
  EXPECT_EQ(piped.err, "");
  // A terminal: the bar, drawn with \r and erased at the end.
  int master = -1;
  const std::string bin = testing::SnapdiskBin();
  const pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl(bin.c_str(), bin.c_str(), "import", pool_.c_str(), "b", image.c_str(), nullptr);
    _exit(127);
  }
  std::string tty;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(master, buf, sizeof buf);
    if (n <= 0) break;  // EIO once the child is gone
    tty.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(master);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << tty;
  EXPECT_NE(tty.find("\rimport b"), std::string::npos) << tty;
  EXPECT_NE(tty.find("%"), std::string::npos) << tty;
  EXPECT_NE(tty.find("MiB"), std::string::npos) << tty;
  EXPECT_NE(tty.find("\r\033[K"), std::string::npos) << "the bar is erased";
  EXPECT_NE(tty.find("Imported 32 MiB into volume 'b'"), std::string::npos) << tty;
}

}  // namespace
}  // namespace snapdisk::cli
