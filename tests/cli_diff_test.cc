// `snapdisk import-diff` and `snapdisk export-diff`, run as the real binary
// ($SNAPDISK_BIN): a --from chain exported (v1 and v2) and imported into a
// fresh volume, --json summaries, exit codes of the refusals (missing from
// snapshot, existing file, truncated stream, bad --format), export to stdout,
// and both commands carried out by `snapdisk serve` while it holds the pool.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/pool_file.h"
#include "engine/volume.h"
#include "support/backup_restore.h"
#include "support/cli_test_support.h"
#include "support/serve_process.h"
#include "support/test_env.h"

namespace snapdisk::cli {
namespace {

using nlohmann::json;
using testing::CliOptions;
using testing::CliResult;
using testing::RunCli;

constexpr uint64_t kMiB = 1ull << 20;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class CliDiffTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = dir_.File("pool");
    auto pf = PoolFile::Create(pool_, 256 * kMiB);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    Pool& pool = (*pf)->pool();
    ASSERT_TRUE(pool.CreateVolume("src", 16 * kMiB).ok());
    ASSERT_TRUE(pool.CreateVolume("dst", 16 * kMiB).ok());
    Volume* v = *pool.OpenVolume("src");
    ASSERT_TRUE(v->Write(0, snapdisk::testing::PatternBytes(1, 3 * kMiB)).ok());
    ASSERT_TRUE(v->Write(9 * kMiB + 7, snapdisk::testing::PatternBytes(2, 5 * kMiB)).ok());
    ASSERT_TRUE(pool.CreateSnapshot("src", "snap1").ok());
    ASSERT_TRUE(v->Write(1 * kMiB, snapdisk::testing::PatternBytes(3, 100000)).ok());
    ASSERT_TRUE(v->Trim(2 * kMiB, 1 * kMiB).ok());
    ASSERT_TRUE(pool.CreateSnapshot("src", "snap2").ok());
    ASSERT_TRUE((*pf)->Close().ok());
  }

  json RunJson(std::vector<std::string> args) {
    args.push_back("--json");
    CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    json doc = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << r.out;
    return doc;
  }

  // "" when dst@snap equals src@snap (and the live dst equals src@`live`).
  std::string Compare(const std::string& snap, const std::string& live) {
    auto pf = PoolFile::Open(pool_);
    if (!pf.ok()) return pf.status().ToString();
    Pool& pool = (*pf)->pool();
    std::string diff = snapdisk::testing::CompareVolumes(**pool.OpenSnapshot("src", snap),
                                                         **pool.OpenSnapshot("dst", snap));
    if (diff.empty()) {
      diff = snapdisk::testing::CompareVolumes(**pool.OpenSnapshot("src", live),
                                               **pool.OpenVolume("dst"));
    }
    (void)(*pf)->Close();
    return diff;
  }

  snapdisk::testing::ScratchDir dir_;
  std::string pool_;
};

TEST_F(CliDiffTest, ChainRoundTripsWithJsonSummaries) {
  const std::string full = dir_.File("full.diff");
  const std::string incr = dir_.File("incr.diff");
  json doc = RunJson({"export-diff", pool_, "src@snap1", full, "--format", "1"});
  EXPECT_EQ(doc["format"], 1);
  EXPECT_EQ(doc["snapshot"], "snap1");
  EXPECT_TRUE(doc["from_snapshot"].is_null());
  EXPECT_EQ(doc["size_bytes"], 16 * kMiB);
  EXPECT_EQ(doc["data_bytes"], 8 * kMiB + 4096);       // whole blocks: 9 MiB + 7 is unaligned
  EXPECT_GE(doc["data_records"].get<uint64_t>(), 3u);  // 5 MiB is cut at 4 MiB boundaries
  EXPECT_EQ(doc["stream_bytes"], std::filesystem::file_size(full));
  doc = RunJson({"export-diff", pool_, "src@snap2", incr, "--from-snap", "snap1"});
  EXPECT_EQ(doc["format"], 2);
  EXPECT_EQ(doc["from_snapshot"], "snap1");
  EXPECT_GE(doc["zero_bytes"].get<uint64_t>(), 1 * kMiB);

  // The incremental first: refused, exit 3, naming the missing snapshot.
  CliResult r = RunCli({"import-diff", pool_, "dst", incr});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(Contains(r.err, "volume 'dst' has no snapshot 'snap1'")) << r.err;

  doc = RunJson({"import-diff", pool_, "dst", full});
  EXPECT_EQ(doc["format"], 1);
  EXPECT_EQ(doc["to_snapshot"], "snap1");
  EXPECT_EQ(doc["snapshot"]["name"], "snap1");
  EXPECT_EQ(doc["written_bytes"], 8 * kMiB + 4096);
  r = RunCli({"import-diff", pool_, "dst", incr});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "created snapshot 'dst@snap2'")) << r.out;
  EXPECT_EQ(Compare("snap1", "snap2"), "");
  r = RunCli({"snapshot", "list", pool_, "dst", "--json"});
  const json snaps = json::parse(r.out, nullptr, false);
  ASSERT_EQ(snaps.size(), 2u) << r.out;
  EXPECT_EQ(snaps[1]["name"], "snap2");

  // Again: snap2 exists (exit 2, AlreadyExists).
  r = RunCli({"import-diff", pool_, "dst", incr, "--json"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(json::parse(r.out, nullptr, false)["error"]["code"], "AlreadyExists") << r.out;
}

// The migration from RBD: a raw image of the first snapshot imported as the
// full (`import --snapshot`), then the diff stream from it.
TEST_F(CliDiffTest, ARawImageAndItsDiffsMigrateAVolume) {
  const std::string raw = dir_.File("snap1.raw");
  const std::string incr = dir_.File("incr.diff");
  CliResult r = RunCli({"export", pool_, "src@snap1", raw});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  RunJson({"export-diff", pool_, "src@snap2", incr, "--from-snap", "snap1"});
  json doc = RunJson({"import", pool_, "mig", raw, "--snapshot", "snap1"});
  EXPECT_EQ(doc["snapshot"], "snap1");
  r = RunCli({"import-diff", pool_, "mig", incr});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto pf = PoolFile::Open(pool_);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  Pool& pool = (*pf)->pool();
  EXPECT_EQ(snapdisk::testing::CompareVolumes(**pool.OpenSnapshot("src", "snap1"),
                                              **pool.OpenSnapshot("mig", "snap1")),
            "");
  EXPECT_EQ(snapdisk::testing::CompareVolumes(**pool.OpenSnapshot("src", "snap2"),
                                              **pool.OpenVolume("mig")),
            "");
  ASSERT_TRUE((*pf)->Close().ok());
  // A bad snapshot name is refused before anything is imported.
  r = RunCli({"import", pool_, "mig2", raw, "--snapshot", "a/b"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(RunCli({"volume", "info", pool_, "mig2"}).exit_code, 3);
}

TEST_F(CliDiffTest, RefusalsHaveTheirExitCodes) {
  const std::string out = dir_.File("s.diff");
  ASSERT_EQ(RunCli({"export-diff", pool_, "src@snap1", out}).exit_code, 0);
  CliResult r = RunCli({"export-diff", pool_, "src@snap1", out});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "already exists (give --overwrite")) << r.err;
  EXPECT_EQ(RunCli({"export-diff", pool_, "src@snap1", out, "--overwrite"}).exit_code, 0);
  r = RunCli({"export-diff", pool_, "src@snap1", pool_, "--overwrite"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "is the pool file itself")) << r.err;
  r = RunCli({"export-diff", pool_, "src@nope", dir_.File("x")});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(Contains(r.err, "snapshot 'src@nope' does not exist")) << r.err;
  EXPECT_EQ(RunCli({"export-diff", pool_, "src", dir_.File("x")}).exit_code, 2);  // no @SNAP
  EXPECT_EQ(RunCli({"export-diff", pool_, "src@snap1", dir_.File("x"), "--format", "3"}).exit_code,
            2);
  EXPECT_EQ(RunCli({"export-diff", pool_, "src@snap1", "-", "--json"}).exit_code, 2);
  EXPECT_FALSE(std::filesystem::exists(dir_.File("x")));

  // A truncated stream: exit 5, the volume untouched.
  const auto size = std::filesystem::file_size(out);
  std::filesystem::resize_file(out, size - 1);
  r = RunCli({"import-diff", pool_, "dst", out});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_TRUE(Contains(r.err, "truncated")) << r.err;
  r = RunCli({"snapshot", "list", pool_, "dst", "--json"});
  EXPECT_EQ(json::parse(r.out, nullptr, false).size(), 0u) << r.out;
  r = RunCli({"import-diff", pool_, "dst", "-"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "needs a file")) << r.err;
  r = RunCli({"import-diff", pool_, "dst", dir_.File("missing")});
  EXPECT_EQ(r.exit_code, 3);
}

TEST_F(CliDiffTest, ExportToStdoutMatchesTheFile) {
  const std::string file = dir_.File("f.diff");
  const std::string piped = dir_.File("piped.diff");
  ASSERT_EQ(RunCli({"export-diff", pool_, "src@snap2", file, "--from", "snap1"}).exit_code, 0);
  CliOptions options;
  options.stdout_path = piped;
  CliResult r = RunCli({"export-diff", pool_, "src@snap2", "-", "--from", "snap1"}, options);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.err, "Exported 'src@snap2'")) << r.err;  // the summary, on stderr
  EXPECT_EQ(testing::ContentFingerprint(file), testing::ContentFingerprint(piped));
  EXPECT_EQ(std::filesystem::file_size(file), std::filesystem::file_size(piped));
}

TEST_F(CliDiffTest, CommandsRunInsideTheServer) {
  if (snapdisk::testing::SnapdiskBin().empty()) GTEST_SKIP() << "no snapdisk binary";
  snapdisk::testing::ServerProcess server(
      pool_, std::vector<std::string>{"--socket", dir_.File("nbd.sock")}, dir_.File("server.log"));
  ASSERT_TRUE(server.WaitReady()) << server.Log();
  const std::string full = dir_.File("full.diff");
  const std::string incr = dir_.File("incr.diff");
  // Relative paths are the client's: run from the scratch directory.
  CliOptions in_dir;
  in_dir.cwd = dir_.path().string();
  CliResult r = RunCli({"export-diff", pool_, "src@snap1", "full.diff"}, in_dir);
  ASSERT_EQ(r.exit_code, 0) << r.err << server.Log();
  ASSERT_TRUE(std::filesystem::exists(full));
  r = RunCli({"export-diff", pool_, "src@snap2", incr, "--from", "snap1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err << server.Log();
  r = RunCli({"import-diff", pool_, "dst", incr});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(Contains(r.err, "has no snapshot 'snap1'")) << r.err;
  r = RunCli({"import-diff", pool_, "dst", "full.diff", "--json"}, in_dir);
  ASSERT_EQ(r.exit_code, 0) << r.err << server.Log();
  EXPECT_EQ(json::parse(r.out, nullptr, false)["snapshot"]["name"], "snap1") << r.out;
  r = RunCli({"import-diff", pool_, "dst", incr});
  ASSERT_EQ(r.exit_code, 0) << r.err << server.Log();
  EXPECT_EQ(server.Stop(), 0) << server.Log();
  EXPECT_EQ(Compare("snap1", "snap2"), "");
}

}  // namespace
}  // namespace snapdisk::cli
