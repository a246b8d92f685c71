// Bad input to the snapdisk CLI (the real binary): every invocation gets the
// right exit code, exactly one line on stderr naming the problem, nothing on
// stdout (or only an {"error": ...} object with --json), and changes nothing:
// the pool file's contents and the directory's files are as before. Also: a
// pool held by another process (Busy naming the pid), files that are not
// pools, and read-only commands that must not change a byte of the pool.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/pool_file.h"
#include "engine/volume.h"
#include "support/test_env.h"
#include "support/cli_test_support.h"

namespace snapdisk::cli {
namespace {

using nlohmann::json;
using testing::CliOptions;
using testing::CliResult;
using testing::ContentFingerprint;
using testing::RunCli;

// Every file in `dir` with its content fingerprint (lock files by name only:
// they hold the pid of the last process that opened the pool).
std::map<std::string, std::string> DirState(const std::string& dir) {
  std::map<std::string, std::string> state;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    state[name] = name.ends_with(".lock") ? "lock"
                  : e.is_regular_file()   ? ContentFingerprint(e.path().string())
                                          : "other";
  }
  return state;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

class CliBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = dir_.File("pool");
    ASSERT_EQ(RunCli({"pool", "create", pool_, "--size", "64M"}).exit_code, 0);
    ASSERT_EQ(RunCli({"volume", "create", pool_, "db", "--size", "4M"}).exit_code, 0);
    {
      auto pf = PoolFile::Open(pool_);
      ASSERT_TRUE(pf.ok());
      auto v = (*pf)->pool().OpenVolume("db");
      ASSERT_TRUE(v.ok());
      ASSERT_TRUE((*v)->Write(8192, snapdisk::testing::PatternBytes(1, 65536)).ok());
    }
    ASSERT_EQ(RunCli({"snapshot", "create", pool_, "db", "s1"}).exit_code, 0);
    ASSERT_EQ(RunCli({"clone", pool_, "db@s1", "db2"}).exit_code, 0);
    auto img = snapdisk::testing::PatternBytes(2, 65536);
    WriteBytes(dir_.File("img"),
               std::string(reinterpret_cast<const char*>(img.data()), img.size()));
    WriteBytes(dir_.File("odd"), std::string(1000, 'x'));
    WriteBytes(dir_.File("emptyfile"), "");
    auto junk = snapdisk::testing::PatternBytes(3, 1 << 20);
    WriteBytes(dir_.File("notpool"),
               std::string(reinterpret_cast<const char*>(junk.data()), junk.size()));
    std::filesystem::create_directory(dir_.File("adir"));
    // A pool cut short: the first MiB of a 64 MiB pool.
    const std::string cut = dir_.File("truncated");
    ASSERT_EQ(RunCli({"pool", "create", cut, "--size", "64M"}).exit_code, 0);
    ASSERT_EQ(::truncate(cut.c_str(), 1 << 20), 0);
  }

  snapdisk::testing::ScratchDir dir_;
  std::string pool_;
};

struct BadCase {
  std::vector<std::string> args;  // "P" is replaced by the pool, "D/" by the scratch dir
  int exit_code;
  std::string fragment;         // must appear in the one stderr line
  std::string stdin_data = {};  // fed through a pipe when not empty
};

TEST_F(CliBadInputTest, EveryBadInvocationIsOneLineAndChangesNothing) {
  const std::string long_name(129, 'a');
  const std::vector<BadCase> cases = {
      // The command line itself.
      {{}, 2, "'snapdisk' needs a command: pool, volume"},
      {{"frobnicate"}, 2, "unknown command 'frobnicate'"},
      {{"--frob"}, 2, "unknown option '--frob'"},
      {{"pool"}, 2, "'snapdisk pool' needs a command: create, info, fsck, scrub"},
      {{"pool", "frob", "P"}, 2, "unknown command 'frob'"},
      {{"volume", "list", "P", "--frob"}, 2, "--frob"},
      {{"volume", "list", "P", "extra"}, 2, "not expected: extra"},
      {{"pool", "info"}, 2, "POOL is required"},
      {{"snapshot", "diff", "P", "db"}, 2, "FROM is required"},
      {{"rollback", "P", "db", "s1", "extra"}, 2, "extra"},
      {{"volume", "create", "P", "v"}, 2, "--size is required"},
      {{"volume", "create", "P", "v", "--size"}, 2, "--size"},
      {{"volume", "create", "P", "v", "--size", "1M", "--profile"}, 2, "--profile"},
      // Sizes.
      {{"volume", "create", "P", "v", "--size", "12X"}, 2, "'12X' is not a valid size"},
      {{"volume", "create", "P", "v", "--size=-1"}, 2, "'-1' is not a valid size (it is negative"},
      {{"volume", "create", "P", "v", "--size", "0"}, 2, "'0' is not a valid size (it is zero"},
      {{"volume", "create", "P", "v", "--size", ""}, 2, "'' is not a valid size (it is empty"},
      {{"volume", "create", "P", "v", "--size="}, 2, "--size: 1 required SIZE missing"},
      {{"volume", "create", "P", "v", "--size", "99999999999999999999"}, 2, "too large"},
      {{"volume", "create", "P", "v", "--size", "16E"},
       2,
       "'16E' is not a valid size (it is too large"},
      {{"volume", "create", "P", "v", "--size", "1.5G"}, 2, "fractions are not accepted"},
      {{"volume", "create", "P", "v", "--size", "4 K"}, 2, "unknown unit ' K'"},
      {{"volume", "create", "P", "v", "--size", "1000"}, 2, "not a positive multiple of 512"},
      {{"volume", "create", "P", "v", "--size", "1T"}, 2, "larger than the pool's capacity"},
      {{"volume", "create", "P", "v", "--size", "32M", "--profile", "PL9"},
       2,
       "unknown ESSD performance level 'PL9'"},
      {{"volume", "create", "P", "v", "--size", "32M", "--profile", "PL1"},
       2,
       "PL1 needs a capacity of 20"},
      // Names.
      {{"volume", "create", "P", "a/b", "--size", "1M"},
       2,
       "volume name 'a/b' has a character that is not allowed"},
      {{"volume", "create", "P", long_name, "--size", "1M"}, 2, "is longer than 128 characters"},
      {{"volume", "create", "P", ".", "--size", "1M"}, 2, "volume name '.' is reserved"},
      {{"volume", "create", "P", "", "--size", "1M"}, 2, "volume name is empty"},
      {{"volume", "create", "P", "db", "--size", "1M"}, 2, "volume 'db' already exists"},
      // Missing and busy objects.
      {{"volume", "info", "P", "nope"}, 3, "volume 'nope' does not exist in pool D/pool"},
      {{"volume", "delete", "P", "nope"}, 3, "volume 'nope' does not exist in pool"},
      {{"volume", "delete", "P", "db"}, 4, "volume 'db' has 1 snapshots; delete them first"},
      {{"volume", "list", "D/nopool"}, 3, "pool D/nopool does not exist"},
      {{"pool", "fsck", "D/nopool"}, 3, "pool D/nopool does not exist"},
      {{"snapshot", "create", "P", "nope", "s"}, 3, "volume 'nope' does not exist in pool"},
      {{"snapshot", "create", "P", "db", "s1"}, 2, "snapshot 'db@s1' already exists"},
      {{"snapshot", "create", "P", "db", "a b"}, 2, "snapshot name 'a b' has a character"},
      {{"snapshot", "create", "P", "db", "-"}, 2, "snapshot name '-' is reserved"},
      {{"snapshot", "delete", "P", "db", "nope"}, 3, "snapshot 'db@nope' does not exist in pool"},
      {{"snapshot", "list", "P", "nope"}, 3, "volume 'nope' does not exist"},
      {{"snapshot", "diff", "P", "db", "nope"}, 3, "snapshot 'db@nope' does not exist"},
      {{"snapshot", "diff", "P", "db", "s1", "nope"}, 3, "snapshot 'db@nope' does not exist"},
      {{"snapshot", "diff", "P", "db", "s1", "x y"}, 2, "snapshot name 'x y'"},
      {{"snapshot", "diff", "P", "db", "-"}, 2, "FROM must be a snapshot"},
      {{"clone", "P", "db", "x"}, 2, "'db' names no snapshot: expected VOL@SNAP"},
      {{"clone", "P", "db@nope", "x"}, 3, "snapshot 'db@nope' does not exist"},
      {{"clone", "P", "db@s1", "db2"}, 2, "volume 'db2' already exists"},
      {{"clone", "P", "db@s1", "b/d"}, 2, "volume name 'b/d'"},
      {{"clone", "P", "@s1", "x"}, 2, "volume name is empty"},
      {{"clone", "P", "db@", "x"}, 2, "empty snapshot name after '@'"},
      {{"rollback", "P", "db", "nope"}, 3, "snapshot 'db@nope' does not exist"},
      {{"rollback", "P", "nope", "s1"}, 3, "volume 'nope' does not exist"},
      // Pools that are not pools.
      {{"pool", "info", "D/notpool"}, 5, "D/notpool is not a snapdisk pool"},
      {{"pool", "scrub", "D/notpool"}, 5, "is not a snapdisk pool"},
      {{"volume", "list", "D/emptyfile"}, 5, "is not a snapdisk pool (only 0 bytes)"},
      {{"pool", "info", "D/truncated"}, 5, "pool is truncated"},
      {{"pool", "info", "D/adir"}, 2, "D/adir is a directory, not a pool file"},
      // pool create.
      {{"pool", "create", "P", "--size", "64M"}, 2, "D/pool already exists"},
      {{"pool", "create", "D/new", "--size", "1K"}, 2, "size"},
      {{"pool", "create", "D/new", "--size", "64K"}, 2, "too small"},
      {{"pool", "create", "D/new", "--size", "1G", "--block-size", "3K"},
       2,
       "block size 3K is not a power of two from 4K to 64K"},
      {{"pool", "create", "D/new", "--size", "1G", "--block-size", "128K"},
       2,
       "not a power of two"},
      {{"pool", "create", "D/no/such/dir/p", "--size", "1G"},
       3,
       "directory D/no/such/dir does not exist"},
      // import.
      {{"import", "P", "v", "D/nofile"}, 3, "image D/nofile does not exist"},
      {{"import", "P", "db", "D/img"}, 2, "volume 'db' already exists"},
      {{"import", "P", "v", "D/odd"}, 2, "is 1000 bytes, not a multiple of 512"},
      {{"import", "P", "v", "D/emptyfile"}, 2, "image D/emptyfile is empty"},
      {{"import", "P", "v", "D/adir"}, 2, "image D/adir is a directory"},
      {{"import", "P", "v", "D/img", "--size", "4K"}, 2, "larger than --size"},
      {{"import", "P", "v", "D/img", "--profile", "PL1"}, 2, "PL1 needs a capacity"},
      {{"import", "P", "v", "-", "--profile", "PL2"},
       2,
       "give --size with --profile PL2",
       std::string(4096, 'x')},
      {{"import", "P", "v", "-"}, 2, "image on stdin is empty"},
      {{"import", "P", "v/x", "D/img"}, 2, "volume name 'v/x'"},
      {{"import", "P", "v", "D/img", "extra"}, 2, "extra"},
      // export.
      {{"export", "P", "nope", "D/out"}, 3, "volume 'nope' does not exist in pool"},
      {{"export", "P", "db@nope", "D/out"}, 3, "snapshot 'db@nope' does not exist"},
      {{"export", "P", "db", "D/no/such/dir/out"}, 3, "directory of D/no/such/dir/out"},
      {{"export", "P", "db", "-", "--json"}, 2, "--json: cannot be used with FILE -"},
      {{"export", "P", "db", "P"}, 2, "is the pool file itself"},
      {{"export", "P", "db", "D/adir"}, 2, "D/adir is a directory"},
      {{"export", "P", "db@s1@x", "D/out"}, 2, "snapshot name 's1@x'"},
      // --json errors.
      {{"volume", "create", "P", "v", "--size", "1G", "--json"}, 2, "larger than the pool"},
      {{"volume", "info", "P", "nope", "--json"}, 3, "volume 'nope' does not exist"},
      {{"volume", "create", "P", "v", "--size", "12X", "--json"}, 2, "'12X' is not a valid size"},
  };
  ASSERT_GE(cases.size(), 50u);
  const std::string dir = dir_.path().string() + "/";
  auto expand = [&](std::string s) {
    if (s == "P") return pool_;
    size_t at;
    while ((at = s.find("D/")) != std::string::npos) s.replace(at, 2, dir);
    return s;
  };
  const std::string pool_before = ContentFingerprint(pool_);
  const auto dir_before = DirState(dir_.path().string());
  for (const BadCase& c : cases) {
    std::vector<std::string> args;
    std::string shown = "snapdisk";
    for (const std::string& a : c.args) {
      args.push_back(expand(a));
      shown += " " + a;
    }
    CliOptions options;
    if (!c.stdin_data.empty()) {
      options.stdin_is_pipe = true;
      options.stdin_data = c.stdin_data;
    }
    const CliResult r = RunCli(args, options);
    SCOPED_TRACE(shown + "\n  stderr: " + r.err + "  stdout: " + r.out);
    EXPECT_EQ(r.exit_code, c.exit_code);
    const auto lines = r.ErrLines();
    ASSERT_EQ(lines.size(), 1u) << "exactly one line on stderr";
    EXPECT_EQ(lines[0].rfind("snapdisk: ", 0), 0u);
    EXPECT_NE(lines[0].find(expand(c.fragment)), std::string::npos);
    const bool json_flag = std::find(args.begin(), args.end(), "--json") != args.end();
    if (json_flag) {
      const json doc = json::parse(r.out, nullptr, false);
      ASSERT_TRUE(doc.is_object());
      EXPECT_EQ(doc["error"]["exit_code"], c.exit_code);
      EXPECT_NE(doc["error"]["message"].get<std::string>().find(expand(c.fragment)),
                std::string::npos);
      EXPECT_TRUE(doc["error"]["code"].is_string());
    } else {
      EXPECT_EQ(r.out, "");
    }
    EXPECT_EQ(ContentFingerprint(pool_), pool_before) << "the pool changed";
    EXPECT_EQ(DirState(dir_.path().string()), dir_before) << "files appeared or changed";
  }
}

TEST_F(CliBadInputTest, ReadOnlyCommandsChangeNoByte) {
  const std::string before = ContentFingerprint(pool_);
  const std::string out = dir_.File("out.raw");
  const std::vector<std::vector<std::string>> commands = {
      {"pool", "info", pool_},           {"pool", "info", pool_, "--json"},
      {"pool", "fsck", pool_},           {"pool", "scrub", pool_},
      {"volume", "list", pool_},         {"volume", "info", pool_, "db"},
      {"snapshot", "list", pool_, "db"}, {"snapshot", "diff", pool_, "db", "s1"},
      {"export", pool_, "db@s1", out},   {"export", pool_, "db2", out},
  };
  for (const auto& args : commands) {
    const CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 0) << args[0] << " " << args[1] << ": " << r.err;
    EXPECT_EQ(ContentFingerprint(pool_), before) << args[0] << " " << args[1];
  }
}

TEST_F(CliBadInputTest, PoolInUseIsBusyNamingThePid) {
  auto held = PoolFile::Open(pool_);
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  const std::string pid = std::to_string(::getpid());
  const std::vector<std::vector<std::string>> commands = {
      {"volume", "list", pool_},
      {"pool", "info", pool_, "--json"},
      {"pool", "fsck", pool_},
      {"snapshot", "create", pool_, "db", "s2"},
      {"import", pool_, "v", dir_.File("img")},
      {"export", pool_, "db", dir_.File("out")},
      {"rollback", pool_, "db", "s1"},
  };
  for (const auto& args : commands) {
    const CliResult r = RunCli(args);
    SCOPED_TRACE(args[0] + " " + args[1] + ": " + r.err);
    EXPECT_EQ(r.exit_code, 4);
    ASSERT_EQ(r.ErrLines().size(), 1u);
    EXPECT_NE(r.err.find("pool " + pool_ + " is in use by process " + pid), std::string::npos);
  }
  EXPECT_FALSE(std::filesystem::exists(dir_.File("out")));
  held->reset();
  EXPECT_EQ(RunCli({"volume", "list", pool_}).exit_code, 0);
}

TEST_F(CliBadInputTest, DamagedSuperblocksAreCorruptionNotACrash) {
  // Zeroed superblocks, flipped superblock bytes, random bytes in the space
  // map region: always exit 5 (or a clean open when a backup copy saves it),
  // never a crash.
  const std::string pristine = dir_.File("pristine");
  std::filesystem::copy_file(pool_, pristine);
  struct Damage {
    uint64_t offset;
    std::string bytes;
  };
  const std::vector<std::vector<Damage>> damages = {
      {{0, std::string(4096, '\0')}, {4096, std::string(4096, '\0')}},
      {{20, "\xff"}, {4096 + 20, "\xff"}},
      {{8, "\x07"}, {4096 + 8, "\x07"}},
      {{24, std::string(8, '\xff')}, {4096 + 24, std::string(8, '\xff')}},
  };
  for (size_t i = 0; i < damages.size(); ++i) {
    std::filesystem::copy_file(pristine, pool_, std::filesystem::copy_options::overwrite_existing);
    const int fd = ::open(pool_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    for (const Damage& d : damages[i]) {
      ASSERT_EQ(::pwrite(fd, d.bytes.data(), d.bytes.size(), static_cast<off_t>(d.offset)),
                static_cast<ssize_t>(d.bytes.size()));
    }
    ::close(fd);
    for (const char* cmd : {"info", "fsck"}) {
      const CliResult r = RunCli({"pool", cmd, pool_});
      SCOPED_TRACE("damage " + std::to_string(i) + " pool " + cmd + ": " + r.err);
      EXPECT_TRUE(r.exit_code == 5 || r.exit_code == 6) << r.exit_code;
      EXPECT_EQ(r.ErrLines().size(), 1u);
      EXPECT_EQ(r.out, "");
    }
  }
}

}  // namespace
}  // namespace snapdisk::cli
