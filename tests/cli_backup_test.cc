// The backup commands of the CLI, run as the real binary ($SNAPDISK_BIN):
// store create|verify|expire|report, backup POOL VOL with every method,
// backup list|extend|export, policy set|show|remove|run (each bad value of
// policy set refused with its allowed range), the `backup` command/group
// parsing, and backups inside `snapdisk serve` while an NBD client keeps
// writing (its writes keep completing; the backup succeeds), cancelled by
// the client hanging up or by the server stopping.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "disk/clock.h"
#include "engine/pool_file.h"
#include "engine/volume.h"
#include "restore/lazy_restore.h"
#include "restore/restore_apply.h"
#include "snapshot/backup_export.h"
#include "support/backup_restore.h"
#include "support/cli_test_support.h"
#include "support/serve_process.h"
#include "support/test_env.h"
#include "tools/nbd/nbd_protocol.h"

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

class CliBackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = dir_.File("pool");
    store_ = dir_.File("store");
    auto pf = PoolFile::Create(pool_, 512 * kMiB);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    ASSERT_TRUE((*pf)->pool().CreateVolume("db", 64 * kMiB).ok());
    ASSERT_TRUE((*pf)->Close().ok());
    CliResult r = RunCli({"store", "create", store_, "--chunk-size", "256K"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // Writes through the library (no server holds the pool then).
  void Write(const std::string& volume, uint64_t offset, uint64_t length, uint64_t seed) {
    auto pf = PoolFile::Open(pool_);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    auto v = (*pf)->pool().OpenVolume(volume);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    ASSERT_TRUE((*v)->Write(offset, snapdisk::testing::PatternBytes(seed, length)).ok());
    ASSERT_TRUE((*pf)->Close().ok());
  }

  // Runs a command that must succeed with --json; returns its document.
  json RunJson(std::vector<std::string> args, const CliOptions& options = {}) {
    args.push_back("--json");
    CliResult r = RunCli(args, options);
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_EQ(r.err, "");
    json doc = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << r.out;
    return doc;
  }

  json Backup(const std::string& method, const std::string& volume = "db") {
    return RunJson({"backup", pool_, volume, "--store", store_, "--method", method});
  }

  snapdisk::testing::ScratchDir dir_;
  std::string pool_;
  std::string store_;
};

// ---- store ---------------------------------------------------------------------

TEST_F(CliBackupTest, StoreCreateRefusesBadSettingsAndExistingStores) {
  CliResult r = RunCli({"store", "create", store_});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "already holds a WORM store")) << r.err;

  r = RunCli({"store", "create", dir_.File("s2"), "--chunk-size", "48K"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "power of two from 64K to 64M")) << r.err;
  r = RunCli({"store", "create", dir_.File("s2"), "--zstd-level", "20"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "1-19")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.File("s2")));

  const json doc =
      RunJson({"store", "create", dir_.File("s2"), "--chunk-size", "4M", "--zstd-level", "3"});
  EXPECT_EQ(doc["chunk_bytes"], 4 * kMiB);
  EXPECT_EQ(doc["zstd_level"], 3);
  r = RunCli({"store", "verify", dir_.File("missing")});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(Contains(r.err, "store create")) << r.err;
}

TEST_F(CliBackupTest, StoreVerifyNamesTamperedObjects) {
  Write("db", 0, 2 * kMiB, 1);
  const json set = Backup("full");
  json doc = RunJson({"store", "verify", store_});
  EXPECT_EQ(doc["ok"], true);
  EXPECT_EQ(doc["problems"].size(), 0u);
  EXPECT_EQ(doc["head_sha256"].get<std::string>().size(), 64u);
  CliResult r = RunCli({"store", "verify", store_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "intact")) << r.out;

  // Rewrite one byte of the manifest behind the store's back.
  const std::string key = set["key"];
  const std::string path = store_ + "/objects/" + key;
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "X", 1, 3), 1);
  ::close(fd);
  ASSERT_EQ(::chmod(path.c_str(), 0444), 0);

  r = RunCli({"store", "verify", store_});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(Contains(r.out, key + ": ")) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_TRUE(Contains(r.err, "verify found 1 problem in store")) << r.err;
  r = RunCli({"store", "verify", store_, "--json"});
  EXPECT_EQ(r.exit_code, 1);
  doc = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  EXPECT_EQ(doc["ok"], false);
  ASSERT_EQ(doc["problems"].size(), 1u);
  EXPECT_EQ(doc["problems"][0]["key"], key);
}

TEST_F(CliBackupTest, StoreReportAndExpire) {
  Write("db", 0, 4 * kMiB, 2);
  Backup("full");
  Backup("snapshot");
  json doc = RunJson({"store", "report", store_});
  ASSERT_EQ(doc.size(), 1u);
  EXPECT_EQ(doc[0]["volume"], "db");
  EXPECT_EQ(doc[0]["sets"], 2);
  EXPECT_EQ(doc[0]["volume_size_bytes"], 64 * kMiB);
  EXPECT_EQ(doc[0]["free_quota_bytes"], 32 * kMiB);
  EXPECT_GT(doc[0]["physical_bytes"].get<uint64_t>(), 0u);
  for (const char* field : {"snapshot_bytes", "log_bytes", "billable_bytes"}) {
    EXPECT_TRUE(doc[0].contains(field)) << field;
  }
  EXPECT_EQ(RunJson({"store", "report", store_, "--volume", "other"}).size(), 0u);
  CliResult r = RunCli({"store", "report", store_});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.out, "FREE QUOTA")) << r.out;
  // Nothing has expired yet (7 days at least).
  doc = RunJson({"store", "expire", store_});
  EXPECT_EQ(doc["objects"], 0);
}

// ---- backup ----------------------------------------------------------------------

TEST_F(CliBackupTest, EveryMethodPrintsItsSetWithAnId) {
  Write("db", 0, 3 * kMiB, 3);
  const json snap = Backup("snapshot");
  EXPECT_EQ(snap["type"], "snapshot");
  EXPECT_EQ(snap["id"].get<std::string>().front(), 'S');
  const json full = Backup("full");
  EXPECT_EQ(full["type"], "full");
  EXPECT_EQ(full["id"].get<std::string>().front(), 'F');
  EXPECT_EQ(full["base"], nullptr);
  EXPECT_EQ(full["data_bytes"], 3 * kMiB);
  Write("db", 8 * kMiB, 1 * kMiB, 4);
  const json diff = Backup("diff");
  EXPECT_EQ(diff["type"], "diff");
  EXPECT_EQ(diff["base"], full["id"]);
  EXPECT_EQ(diff["data_bytes"], 1 * kMiB);
  Write("db", 16 * kMiB, 512 * 1024, 5);
  const json incr = Backup("incr");
  EXPECT_EQ(incr["type"], "incr");
  EXPECT_EQ(incr["base"], diff["id"]);
  EXPECT_EQ(incr["first_lsn"], diff["last_lsn"].get<uint64_t>() + 1);
  const json automatic = Backup("auto");  // a full finished just now: a diff
  EXPECT_EQ(automatic["type"], "diff");
  const json log = Backup("log");
  EXPECT_EQ(log["type"], "log");
  EXPECT_EQ(log["id"].get<std::string>().front(), 'L');
  EXPECT_TRUE(log.contains("first_record"));
  // Every id is distinct; every set is retained 7 days by default.
  std::set<std::string> ids;
  for (const json* s : {&snap, &full, &diff, &incr, &automatic, &log}) {
    ids.insert((*s)["id"].get<std::string>());
    const int64_t retained =
        (*s)["retain_until_unix_ns"].get<int64_t>() - (*s)["started_unix_ns"].get<int64_t>();
    EXPECT_EQ(retained, int64_t{7} * 86400 * 1'000'000'000);
  }
  EXPECT_EQ(ids.size(), 6u);

  CliResult r =
      RunCli({"backup", pool_, "db", "--store", store_, "--method", "full", "--retain", "30"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "Backed up volume 'db' as F")) << r.out;
  // Nothing written since that full: an incremental covering no LSN says so.
  r = RunCli({"backup", pool_, "db", "--store", store_, "--method", "incr"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "incr on F")) << r.out;
  EXPECT_TRUE(Contains(r.out, ", LSN none (at ")) << r.out;
}

TEST_F(CliBackupTest, BackupRefusesBadInputBeforeTouchingAnything) {
  const std::string before = testing::ContentFingerprint(pool_);
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--method", "weekly"}, 2, "snapshot, full, diff, incr, auto or log"},
      {{"--method", "full", "--retain", "5"}, 2, "7-730 days"},
      {{"--method", "full", "--retain", "x"}, 2, "7-730 days"},
      {{"--method", "full", "--rate", "0"}, 2, "rate must be"},
      {{"--method", "full", "--rate", "fast"}, 2, "rate must be"},
      {{}, 2, "--method is required"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"backup", pool_, "db", "--store", store_};
    args.insert(args.end(), c.args.begin(), c.args.end());
    CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.message << ": " << r.err;
    EXPECT_TRUE(Contains(r.err, c.message)) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  CliResult r = RunCli({"backup", pool_, "db", "--method", "full"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "--store")) << r.err;
  r = RunCli({"backup", pool_, "nope", "--store", store_, "--method", "full"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(Contains(r.err, "'nope'")) << r.err;
  r = RunCli({"backup", pool_, "db", "--store", dir_.File("nostore"), "--method", "full"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(Contains(r.err, "does not exist")) << r.err;
  // A diff needs a full.
  r = RunCli({"backup", pool_, "db", "--store", store_, "--method", "diff", "--json"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  const json doc = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  EXPECT_EQ(doc["error"]["code"], "NotFound");
  EXPECT_EQ(testing::ContentFingerprint(pool_), before);
}

TEST_F(CliBackupTest, BackupIsBothACommandAndAGroup) {
  // `backup` alone, and a group command without its store.
  CliResult r = RunCli({"backup"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "list, extend, export")) << r.err;
  r = RunCli({"backup", "list"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "--store")) << r.err;
  r = RunCli({"backup", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.out, "snapdisk backup POOL VOL --store DIR --method M")) << r.out;
  EXPECT_TRUE(Contains(r.out, "list")) << r.out;
  r = RunCli({"backup", "list", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.out, "--volume")) << r.out;

  // A pool file named like a snapdisk command ("pool") is still POOL; one
  // named like a command of the group goes as ./export.
  CliOptions in_dir;
  in_dir.cwd = dir_.path().string();
  r = RunCli({"backup", "pool", "db", "--store", "store", "--method", "full"}, in_dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::filesystem::copy_file(pool_, dir_.File("export"));
  r = RunCli({"backup", "--json", "./export", "db", "--store", "store", "--method", "snapshot"},
             in_dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // ... while `backup list` is the group's command.
  r = RunCli({"backup", "list", "--store", "store"}, in_dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "F1")) << r.out;
  r = RunCli({"backup", "list", "--store", "store", "db"}, in_dir);
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

TEST_F(CliBackupTest, ListShowsEverySetsFields) {
  Write("db", 0, 1 * kMiB, 6);
  const json full = Backup("full");
  Write("db", 4 * kMiB, 1 * kMiB, 7);
  const json incr = Backup("incr");
  const json list = RunJson({"backup", "list", "--store", store_});
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["id"], full["id"]);
  EXPECT_EQ(list[1]["id"], incr["id"]);
  for (const json& s : list) {
    for (const char* field :
         {"id", "type", "volume", "first_lsn", "last_lsn", "base", "started", "started_unix_ns",
          "finished", "finished_unix_ns", "consistent", "retain_until", "retain_until_unix_ns",
          "data_bytes", "stored_bytes", "volume_size_bytes", "key", "sha256"}) {
      EXPECT_TRUE(s.contains(field)) << field;
    }
  }
  EXPECT_EQ(list[0]["type"], "full");
  EXPECT_EQ(list[0]["base"], nullptr);
  EXPECT_EQ(list[1]["type"], "incr");
  EXPECT_EQ(list[1]["base"], full["id"]);
  EXPECT_EQ(list[1]["first_lsn"], list[0]["last_lsn"].get<uint64_t>() + 1);
  EXPECT_EQ(RunJson({"backup", "list", "--store", store_, "--volume", "db"}).size(), 2u);
  EXPECT_EQ(RunJson({"backup", "list", "--store", store_, "--volume", "other"}).size(), 0u);
  CliResult r = RunCli({"backup", "list", "--store", store_});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.out, "RETAIN UNTIL")) << r.out;
  EXPECT_TRUE(Contains(r.out, incr["id"].get<std::string>())) << r.out;
}

TEST_F(CliBackupTest, ExtendOnlyLengthensRetention) {
  Write("db", 0, 1 * kMiB, 8);
  const json set = Backup("full");
  const std::string id = set["id"];
  const int64_t until = set["retain_until_unix_ns"];
  // 40 days from now, as a date; then as RFC 3339 with an offset.
  const int64_t now_s = until / 1'000'000'000 - 7 * 86400;
  auto date = [](int64_t unix_s) {
    const time_t t = unix_s;
    tm tm_utc;
    gmtime_r(&t, &tm_utc);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm_utc);
    return std::string(buf);
  };
  json doc =
      RunJson({"backup", "extend", "--store", store_, id, "--until", date(now_s + 40 * 86400)});
  EXPECT_EQ(doc["id"], id);
  EXPECT_GT(doc["retain_until_unix_ns"].get<int64_t>(),
            until + int64_t{30} * 86400 * 1'000'000'000);
  const int64_t extended = doc["retain_until_unix_ns"];
  doc = RunJson({"backup", "extend", "--store", store_, id, "--until",
                 date(now_s + 50 * 86400) + "T12:00:00+02:00"});
  EXPECT_EQ(doc["retain_until_unix_ns"].get<int64_t>(),
            (extended / 1'000'000'000 + 10 * 86400 + 10 * 3600) * int64_t{1'000'000'000});

  // Earlier: refused by the retention lock (exit 7), nothing changes.
  CliResult r =
      RunCli({"backup", "extend", "--store", store_, id, "--until", date(now_s + 20 * 86400)});
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = RunCli({"backup", "extend", "--store", store_, id, "--until", "2026-02-30"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(Contains(r.err, "RFC 3339")) << r.err;
  r = RunCli({"backup", "extend", "--store", store_, "F999", "--until", date(now_s + 90 * 86400)});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  const json list = RunJson({"backup", "list", "--store", store_});
  EXPECT_EQ(list[0]["retain_until_unix_ns"].get<int64_t>(),
            (extended / 1'000'000'000 + 10 * 86400 + 10 * 3600) * int64_t{1'000'000'000});
}

TEST_F(CliBackupTest, ExportWritesAVerifiableFile) {
  Write("db", 0, 2 * kMiB, 9);
  const json full = Backup("full");
  Write("db", 10 * kMiB, 1 * kMiB, 10);
  const json incr = Backup("incr");
  const std::string file = dir_.File("incr.sdx");
  json doc = RunJson({"backup", "export", "--store", store_, incr["id"], file});
  EXPECT_EQ(doc["target_id"], incr["id"]);
  ASSERT_EQ(doc["sets"].size(), 2u);
  EXPECT_EQ(doc["sets"][0]["id"], full["id"]);
  auto report = VerifyBackupExport(file);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->sha256, doc["sha256"]);
  EXPECT_EQ(report->file_bytes, doc["file_bytes"]);

  CliResult r = RunCli({"backup", "export", "--store", store_, incr["id"], file});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(Contains(r.err, "--overwrite")) << r.err;
  r = RunCli({"backup", "export", "--store", store_, full["id"], file, "--overwrite"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "Exported backup set " + full["id"].get<std::string>())) << r.out;
  r = RunCli({"backup", "export", "--store", store_, "I77", dir_.File("x.sdx")});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.File("x.sdx")));
}

// ---- policy ----------------------------------------------------------------------

TEST_F(CliBackupTest, PolicySetRefusesEachOutOfRangeValueWithItsRange) {
  const std::string before = testing::ContentFingerprint(pool_);
  const std::vector<std::string> good = {
      "--method", "physical",    "--retention",     "30",  "--cycle", "mon,thu",
      "--window", "02:00-03:00", "--log-frequency", "data"};
  auto with = [&](const std::string& option, const std::string& value) {
    std::vector<std::string> args = {"policy", "set", pool_, "db", "--store", store_};
    bool replaced = false;
    for (size_t i = 0; i < good.size(); i += 2) {
      args.push_back(good[i]);
      args.push_back(good[i] == option ? value : good[i + 1]);
      replaced |= good[i] == option;
    }
    if (!replaced) {
      args.push_back(option);
      args.push_back(value);
    }
    return args;
  };
  struct Case {
    std::string option, value, message;
  };
  const std::vector<Case> cases = {
      {"--retention", "6", "retention must be 7-730 days (got 6)"},
      {"--retention", "731", "retention must be 7-730 days (got 731)"},
      {"--retention", "7.5", "7-730 days"},
      {"--method", "tape", "snapshot or physical"},
      {"--cycle", "mon", "at least two days"},
      {"--cycle", "mon,funday", "mon,tue,wed,thu,fri,sat,sun"},
      {"--window", "02:00-02:30", "1 to 24 hours"},
      {"--window", "02:00-02:00", "starts and ends at the same time"},
      {"--window", "25:00-26:00", "window"},
      {"--window", "2am", "HH:MM-HH:MM"},
      {"--log-frequency", "10m", "5m, 30m or data"},
      {"--log-retention", "6", "7-730 days"},
      {"--log-retention", "31", "log retention must be 7-30 days"},
      {"--incremental", "yes", "incremental must be on or off (got yes)"},
  };
  for (const Case& c : cases) {
    CliResult r = RunCli(with(c.option, c.value));
    EXPECT_EQ(r.exit_code, 2) << c.option << " " << c.value << ": " << r.err;
    EXPECT_TRUE(Contains(r.err, c.message)) << c.option << " " << c.value << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // Combinations the method does not allow.
  std::vector<std::string> args = with("--method", "snapshot");
  CliResult r = RunCli(args);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "5m, 30m")) << r.err;
  args = with("--log-frequency", "5m");
  ASSERT_EQ(args[6], "--method");
  args[7] = "snapshot";
  args.insert(args.end(), {"--incremental", "on"});
  r = RunCli(args);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "incremental")) << r.err;
  // Missing options, a missing store.
  r = RunCli({"policy", "set", pool_, "db", "--store", store_, "--method", "physical"});
  EXPECT_EQ(r.exit_code, 2);
  args = with("--retention", "30");
  args[5] = dir_.File("nostore");
  r = RunCli(args);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(Contains(r.err, "store create")) << r.err;
  r = RunCli({"policy", "show", pool_, "db"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(Contains(r.err, "has no backup policy")) << r.err;
  EXPECT_EQ(testing::ContentFingerprint(pool_), before);
}

TEST_F(CliBackupTest, PolicySetShowRemove) {
  CliOptions in_dir;
  in_dir.cwd = dir_.path().string();
  json doc = RunJson({"policy",
                      "set",
                      "pool",
                      "db",
                      "--store",
                      "store",
                      "--method",
                      "physical",
                      "--retention",
                      "30",
                      "--cycle",
                      "thu,MON",
                      "--window",
                      "23:00-01:00",
                      "--log-frequency",
                      "30m",
                      "--incremental",
                      "on",
                      "--log-retention",
                      "14"},
                     in_dir);
  EXPECT_EQ(doc["volume"], "db");
  // The store is kept as an absolute path (a server or scheduler runs elsewhere).
  EXPECT_EQ(doc["policy"]["store_dir"], std::filesystem::canonical(store_).string());
  doc = RunJson({"policy", "show", pool_, "db"});
  const json& p = doc["policy"];
  EXPECT_EQ(p["method"], "physical");
  EXPECT_EQ(p["incremental"], true);
  EXPECT_EQ(p["retention_days"], 30);
  EXPECT_EQ(p["cycle"], "mon,thu");
  EXPECT_EQ(p["window"], "23:00-01:00");
  EXPECT_EQ(p["log_frequency"], "30m");
  EXPECT_EQ(p["log_retention_days"], 14);
  EXPECT_EQ(doc["log"]["required"], true);
  CliResult r = RunCli({"policy", "show", pool_, "db"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.out, "mon,thu")) << r.out;
  // While a policy holds it, the write log cannot be turned off.
  r = RunCli({"policy", "remove", pool_, "db"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = RunCli({"policy", "show", pool_, "db"});
  EXPECT_EQ(r.exit_code, 3);
  r = RunCli({"policy", "remove", pool_, "db"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(Contains(r.err, "has no backup policy")) << r.err;
  r = RunCli({"policy", "show", pool_, "nope"});
  EXPECT_EQ(r.exit_code, 3);
}

TEST_F(CliBackupTest, PolicyRunRunsWhatIsDueOnce) {
  Write("db", 0, 2 * kMiB, 11);
  RunJson({"policy", "set", pool_, "db", "--store", store_, "--method", "snapshot", "--retention",
           "10", "--cycle", "mon,tue,wed,thu,fri,sat,sun", "--window", "00:00-24:00",
           "--log-frequency", "30m"});
  // Today's occurrence started at 00:00 and nothing served it: due now.
  json doc = RunJson({"policy", "run", pool_});
  ASSERT_GE(doc["runs"].size(), 1u) << doc.dump();
  const json* data_run = nullptr;
  for (const json& run : doc["runs"]) {
    EXPECT_EQ(run["status"], "OK") << run.dump();
    if (run["method"] == "snapshot") data_run = &run;
  }
  ASSERT_NE(data_run, nullptr) << doc.dump();
  EXPECT_EQ((*data_run)["set"]["type"], "snapshot");
  const int64_t retained = (*data_run)["set"]["retain_until_unix_ns"].get<int64_t>() -
                           (*data_run)["set"]["started_unix_ns"].get<int64_t>();
  EXPECT_EQ(retained, int64_t{10} * 86400 * 1'000'000'000);
  // Served: the next run has no data backup to do.
  doc = RunJson({"policy", "run", pool_});
  for (const json& run : doc["runs"]) EXPECT_NE(run["method"], "snapshot") << run.dump();
  EXPECT_NE(doc["next_due_unix_ns"], nullptr);
  // Policies of another store are skipped, and say so.
  RunJson({"store", "create", dir_.File("other")});
  CliResult r = RunCli({"policy", "run", pool_, "--store", dir_.File("other")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.out, "skipped")) << r.out;
  // The task history has the policy's backups.
  const json history = RunJson({"backup", "history", pool_});
  ASSERT_GE(history.size(), 1u) << history.dump();
  bool snapshot_task = false;
  for (const json& t : history) {
    EXPECT_EQ(t["trigger"], "policy") << t.dump();
    snapshot_task = snapshot_task || (t["method"] == "snapshot" && t["result"] == "done");
  }
  EXPECT_TRUE(snapshot_task) << history.dump();
}

// The seed's task list: every backup task that ended — done, failed or
// cancelled, by hand or by a policy — with its times, bytes and result, kept
// with the volume across restarts.
TEST_F(CliBackupTest, BackupHistoryListsEveryTaskThatEnded) {
  EXPECT_TRUE(Contains(RunCli({"backup", "history", pool_}).out, "no backup tasks recorded"));
  Write("db", 0, 2 * kMiB, 1);
  const json full = Backup("full");
  Write("db", 4 * kMiB, 1 * kMiB, 2);
  const json log = Backup("log");
  // Refused before it starts (bad input): no task, nothing changed.
  EXPECT_NE(RunCli({"backup", pool_, "db", "--store", store_, "--method", "diff", "--rate", "0"})
                .exit_code,
            0);
  const json history = RunJson({"backup", "history", pool_, "--volume", "db"});
  ASSERT_EQ(history.size(), 2u) << history.dump();
  EXPECT_EQ(history[0]["set"], full["id"]);
  EXPECT_EQ(history[0]["method"], "full");
  EXPECT_EQ(history[0]["trigger"], "manual");
  EXPECT_EQ(history[0]["result"], "done");
  EXPECT_EQ(history[0]["data_bytes"], 2 * kMiB);
  EXPECT_LE(history[0]["started_unix_ns"].get<int64_t>(),
            history[0]["finished_unix_ns"].get<int64_t>());
  EXPECT_EQ(history[1]["set"], log["id"]);
  EXPECT_EQ(history[1]["method"], "log");
  CliResult text = RunCli({"backup", "history", pool_});
  EXPECT_TRUE(Contains(text.out, "FINISHED")) << text.out;
  EXPECT_TRUE(Contains(text.out, full["id"].get<std::string>())) << text.out;
}

// ---- restore ---------------------------------------------------------------------

// The restored volume `restored` reads like `volume`, or like its snapshot
// `snapshot` when given ("" when equal, else where they differ).
std::string CompareInPool(const std::string& pool, const std::string& restored,
                          const std::string& volume, const std::string& snapshot = "") {
  // As a library user opens a pool whose instant restores may be filling.
  PoolOptions options;
  options.hydration_source_resolver = RecordedHydrationSourceResolver();
  auto pf = PoolFile::Open(pool, options);
  if (!pf.ok()) return pf.status().ToString();
  auto a = (*pf)->pool().OpenVolume(restored);
  auto b = snapshot.empty() ? (*pf)->pool().OpenVolume(volume)
                            : (*pf)->pool().OpenSnapshot(volume, snapshot);
  if (!a.ok() || !b.ok()) return "cannot open the volumes";
  std::string diff = snapdisk::testing::CompareVolumes(**a, **b);
  (void)(*pf)->Close();
  return diff;
}

TEST_F(CliBackupTest, RestoreAChainAtOnceOrStepByStep) {
  Write("db", 0, 3 * kMiB, 1);
  const json full = Backup("full");
  Write("db", 4 * kMiB, 1 * kMiB, 2);
  const json diff = Backup("diff");
  Write("db", 512 * 1024, 64 * 1024, 3);
  const json incr = Backup("incr");
  const std::string f = full["id"], d = diff["id"], i = incr["id"];

  // --plan: the chain, nothing changed.
  const json plan = RunJson({"restore", "--store", store_, i, "--to-new", pool_, "r1", "--plan"});
  ASSERT_EQ(plan["steps"].size(), 3u) << plan.dump();
  EXPECT_EQ(plan["steps"][0]["id"], f);
  EXPECT_EQ(plan["steps"][1]["id"], d);
  EXPECT_EQ(plan["steps"][2]["id"], i);
  EXPECT_NE(RunCli({"restore", "status", pool_, "r1"}).exit_code, 0);  // no r1 yet

  const json done = RunJson({"restore", "--store", store_, i, "--to-new", pool_, "r1"});
  EXPECT_EQ(done["applied"], json({f, d, i}));
  EXPECT_EQ(done["state"]["state"], "open");
  EXPECT_GT(done["rto_usable_seconds"].get<double>(), 0);
  EXPECT_EQ(CompareInPool(pool_, "r1", "db"), "");

  // Step by step: the full left restoring, a set out of order refused with
  // what to do, then the chain, then open.
  RunJson({"restore", "--store", store_, f, "--to-new", pool_, "r2", "--restoring"});
  EXPECT_EQ(RunJson({"restore", "status", pool_, "r2"})["state"], "restoring");
  CliResult refused = RunCli({"restore", "apply", "--store", store_, i, pool_, "r2"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_TRUE(
      Contains(refused.err, "incremental backup " + i + " begins at LSN " +
                                std::to_string(incr["first_lsn"].get<uint64_t>()) +
                                ", which is too recent to apply: the volume is at LSN " +
                                std::to_string(full["last_lsn"].get<uint64_t>()) + "; apply " + d +
                                " (LSN " + std::to_string(diff["first_lsn"].get<uint64_t>()) + "-" +
                                std::to_string(diff["last_lsn"].get<uint64_t>()) + ") first"))
      << refused.err;
  refused = RunCli({"restore", "apply", "--store", store_, f, pool_, "r2"});
  EXPECT_TRUE(Contains(refused.err, "backup " + f +
                                        " is a full backup; only differential, incremental or "
                                        "log backups can be applied now"))
      << refused.err;
  RunJson({"restore", "apply", "--store", store_, d, pool_, "r2"});
  RunJson({"restore", "apply", "--store", store_, i, pool_, "r2"});
  const json opened = RunJson({"restore", "open", pool_, "r2"});
  EXPECT_EQ(opened["state"], "open");
  EXPECT_GT(opened["checked_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(CompareInPool(pool_, "r2", "db"), "");
  EXPECT_NE(RunCli({"restore", "apply", "--store", store_, i, pool_, "r2"}).exit_code, 0);

  // Onto an existing volume: it ends up equal to the backup, whatever it held.
  Write("db", 8 * kMiB, 1 * kMiB, 9);
  RunJson({"restore", "--store", store_, f, "--onto", pool_, "r1"});
  EXPECT_NE(CompareInPool(pool_, "r1", "db"), "");  // db moved on; r1 is F's image

  // Bad command lines.
  EXPECT_EQ(
      RunCli({"restore", "--store", store_, f, "--time", "2026-01-01", "--to-new", pool_, "x"})
          .exit_code,
      2);
  EXPECT_EQ(RunCli({"restore", "--store", store_, f}).exit_code, 2);
  EXPECT_EQ(
      RunCli({"restore", "--store", store_, "--lsn", "abc", "--to-new", pool_, "x"}).exit_code, 2);
}

// The issue that made a store unreadable for a week: a log backup of one
// byte repeated lists the same chunk many times in its manifest, which the
// reader refused, and every command on the store failed from then on.
TEST_F(CliBackupTest, ALogBackupOfOneRepeatedByteLeavesTheStoreUsable) {
  const json full = Backup("full");
  {
    auto pf = PoolFile::Open(pool_);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    Volume* v = *(*pf)->pool().OpenVolume("db");
    ASSERT_TRUE(v->Write(0, std::vector<std::byte>(4 * kMiB, std::byte{0x33})).ok());
    ASSERT_TRUE((*pf)->Close().ok());
  }
  const json log = Backup("log");
  const json list = RunJson({"backup", "list", "--store", store_});
  ASSERT_EQ(list.size(), 2u) << list.dump();
  EXPECT_EQ(list[1]["id"], log["id"]);
  RunJson({"store", "report", store_});
  CliResult verify = RunCli({"store", "verify", store_});
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  // The store goes on: a restore to the log's end, more backups.
  RunJson({"restore", "--store", store_, "--lsn", std::to_string(log["last_lsn"].get<uint64_t>()),
           "--to-new", pool_, "r"});
  EXPECT_EQ(CompareInPool(pool_, "r", "db"), "");
  Backup("incr");
  Backup("snapshot");
  const std::string file = dir_.File("log.export");
  RunJson({"backup", "export", "--store", store_, log["id"], file});
  (void)full;
  // No write since: a log backup has nothing to ship, which is no failure.
  CliResult again = RunCli({"backup", pool_, "db", "--store", store_, "--method", "log"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(Contains(again.out, "nothing to ship")) << again.out;
  EXPECT_EQ(
      RunJson({"backup", pool_, "db", "--store", store_, "--method", "log"})["nothing_to_ship"],
      true);
}

// Restoring onto a volume that is not the backup's source, or growing it,
// needs --replace (SQL Server's WITH REPLACE); the refusal changes nothing.
TEST_F(CliBackupTest, RestoreOntoAnotherVolumeOrGrowingItNeedsReplace) {
  Write("db", 0, 2 * kMiB, 1);
  const std::string f = Backup("full")["id"];
  RunJson({"volume", "create", pool_, "src", "--size", "32M"});
  Write("src", 0, 1 * kMiB, 2);
  const std::string before = testing::ContentFingerprint(pool_);
  CliResult r = RunCli({"restore", "--store", store_, f, "--onto", pool_, "src"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(Contains(r.err, "restoring " + f +
                                  " (volume 'db', 64 MiB) onto volume 'src' "
                                  "(32 MiB) refused: it is not the backup's source volume, and the "
                                  "restore would grow it from 32 MiB to 64 MiB; replace it anyway "
                                  "with --replace"))
      << r.err;
  EXPECT_EQ(testing::ContentFingerprint(pool_), before);
  r = RunCli({"restore", "apply", "--store", store_, f, pool_, "src"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(Contains(r.err, "refused: it is not the backup's source volume")) << r.err;
  // The source itself, and a blank volume, need no --replace.
  RunJson({"restore", "--store", store_, f, "--onto", pool_, "db"});
  RunJson({"volume", "create", pool_, "blank", "--size", "16M"});
  RunJson({"restore", "--store", store_, f, "--onto", pool_, "blank"});
  RunJson({"restore", "--store", store_, f, "--onto", pool_, "src", "--replace"});
  EXPECT_EQ(CompareInPool(pool_, "src", "db"), "");
  EXPECT_EQ(RunJson({"volume", "info", pool_, "src"})["size_bytes"], 64 * kMiB);
}

// The seed's "download backup files for archiving or local restoration":
// export files restore on their own, chains and points in time included.
TEST_F(CliBackupTest, ExportFilesRestoreWithoutTheStore) {
  Write("db", 0, 2 * kMiB, 1);
  const json full = Backup("full");
  Write("db", 1 * kMiB, 512 * 1024, 2);
  const json l1 = Backup("log");
  Write("db", 3 * kMiB, 256 * 1024, 3);
  const json incr = Backup("incr");
  Write("db", 5 * kMiB, 256 * 1024, 4);
  const json l2 = Backup("log");
  auto exported = [&](const json& set) {
    const std::string file = dir_.File(set["id"].get<std::string>() + ".sdx");
    RunJson({"backup", "export", "--store", store_, set["id"], file});
    return file;
  };
  const std::string f = exported(full), i = exported(incr), a = exported(l1), b = exported(l2);
  std::filesystem::rename(store_, dir_.File("store-gone"));  // only the files are left

  // A chain: the incremental's file holds the full too.
  RunJson({"restore", "--from", i, incr["id"], "--to-new", pool_, "chain"});
  // To the end of the logs: the full's file and both logs' files.
  RunJson({"restore", "--from", f, "--from", a, "--from", b, "--lsn",
           std::to_string(l2["last_lsn"].get<uint64_t>()), "--to-new", pool_, "pitr"});
  EXPECT_EQ(CompareInPool(pool_, "pitr", "db"), "");
  // A log file missing from the chain is a gap, named.
  CliResult gap = RunCli({"restore", "--from", f, "--from", b, "--lsn",
                          std::to_string(l2["last_lsn"].get<uint64_t>()), "--to-new", pool_, "x"});
  EXPECT_NE(gap.exit_code, 0);
  EXPECT_TRUE(Contains(gap.err, "LSN")) << gap.err;
  // Step by step from files, as a migration does.
  RunJson({"restore", "--from", f, full["id"], "--to-new", pool_, "steps", "--restoring"});
  RunJson({"restore", "apply", "--from", a, l1["id"], pool_, "steps"});
  const json st = RunJson({"restore", "status", pool_, "steps"});
  ASSERT_EQ(st["applied"].size(), 2u) << st.dump();
  EXPECT_EQ(st["applied"][0]["id"], full["id"]);
  EXPECT_EQ(st["applied"][1]["id"], l1["id"]);
  // Files are read-only, and a damaged one is refused.
  CliResult both =
      RunCli({"restore", "--store", store_, "--from", f, full["id"], "--to-new", pool_, "y"});
  EXPECT_EQ(both.exit_code, 2) << both.err;
  {
    std::fstream damage(f, std::ios::in | std::ios::out | std::ios::binary);
    damage.seekp(200);
    damage.put('\x5a');
  }
  CliResult bad = RunCli({"restore", "--from", f, full["id"], "--to-new", pool_, "z"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(RunCli({"volume", "info", pool_, "z"}).exit_code, 0) << "nothing may be left";
}

TEST_F(CliBackupTest, BackupSetsCannotBeDeletedOnlyExpire) {
  const std::string f = Backup("full")["id"];
  for (const char* verb : {"delete", "remove"}) {
    CliResult r = RunCli({"backup", verb, "--store", store_, f});
    EXPECT_EQ(r.exit_code, 7) << verb << ": " << r.err;
    EXPECT_TRUE(Contains(r.err, "backup sets cannot be deleted")) << r.err;
    EXPECT_TRUE(Contains(r.err, "store expire")) << r.err;
  }
  EXPECT_EQ(RunJson({"backup", "list", "--store", store_}).size(), 1u);
}

TEST_F(CliBackupTest, ManualBackupsCanBeKeptForever) {
  Write("db", 0, 1 * kMiB, 1);
  for (const char* forever : {"forever", "-1"}) {
    const json set = RunJson(
        {"backup", pool_, "db", "--store", store_, "--method", "full", "--retain", forever});
    EXPECT_TRUE(set["retain_until"].is_null()) << set.dump();
    EXPECT_EQ(set["retain_forever"], true) << set.dump();
    EXPECT_EQ(set["retain_until_unix_ns"], INT64_MAX);
  }
  CliResult list = RunCli({"backup", "list", "--store", store_});
  EXPECT_TRUE(Contains(list.out, "forever")) << list.out;
  // Still write-once: it cannot be shortened, nor deleted.
  CliResult shorter =
      RunCli({"backup", "extend", "--store", store_, "F1", "--until", "2100-01-01"});
  EXPECT_EQ(shorter.exit_code, 7) << shorter.err;
  EXPECT_TRUE(Contains(shorter.err, "retained until forever")) << shorter.err;
  EXPECT_EQ(RunCli({"backup", "delete", "--store", store_, "F1"}).exit_code, 7);
  EXPECT_EQ(RunCli({"store", "expire", store_}).exit_code, 0);
  EXPECT_EQ(RunJson({"backup", "list", "--store", store_}).size(), 2u);
  // Automatic (policy) retention stays 7-730 days.
  CliResult policy = RunCli({"policy", "set", pool_, "db", "--store", store_, "--method",
                             "snapshot", "--retention", "forever", "--cycle", "mon,thu", "--window",
                             "02:00-03:00", "--log-frequency", "30m"});
  EXPECT_EQ(policy.exit_code, 2) << policy.err;
}

TEST_F(CliBackupTest, SnapshotSetsRestoreInstantly) {
  Write("db", 0, 6 * kMiB, 1);
  Write("db", 20 * kMiB, 1 * kMiB, 2);
  const json snap = Backup("snapshot");
  // The command returns once the volume is usable; without a server nothing
  // fills it meanwhile, yet every block reads right (fetched from the store
  // by whoever opens the pool), and `restore resume` fills it.
  const json early = RunJson({"restore", "--store", store_, snap["id"], "--to-new", pool_, "lazy"});
  EXPECT_EQ(early["instant"], true) << early.dump();
  EXPECT_EQ(early["fill"], "stopped") << early.dump();
  EXPECT_EQ(early["pending_bytes"], 21 * kMiB) << early.dump();
  EXPECT_GT(early["rto_usable_seconds"].get<double>(), 0);
  CliResult text = RunCli({"restore", "--store", store_, snap["id"], "--to-new", pool_, "lazy2"});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(Contains(text.out, "is usable now")) << text.out;
  EXPECT_TRUE(Contains(text.out, "restore resume")) << text.out;
  json st = RunJson({"restore", "status", pool_, "lazy"});
  EXPECT_EQ(st["hydrating"], true) << st.dump();
  EXPECT_EQ(st["instant"], true) << st.dump();
  EXPECT_EQ(st["applied"][0]["id"], snap["id"]) << st.dump();
  // Reading every block fetches every chunk once, and fills what it fetched.
  EXPECT_EQ(CompareInPool(pool_, "lazy", "db"), "");
  EXPECT_EQ(RunJson({"restore", "status", pool_, "lazy"})["hydrating"], false);
  // An unread one: `restore resume` fills it; a cap it was started with
  // (1 MB/s: 21 s) is lifted with --rate none.
  RunJson({"restore", "--store", store_, snap["id"], "--to-new", pool_, "capped", "--rate", "1"});
  const auto resumed_at = std::chrono::steady_clock::now();
  RunJson({"restore", "resume", "--store", store_, pool_, "capped", "--rate", "none"});
  EXPECT_LT(std::chrono::steady_clock::now() - resumed_at, std::chrono::seconds(15));
  EXPECT_EQ(RunJson({"restore", "status", pool_, "capped"})["hydrating"], false);
  EXPECT_EQ(CompareInPool(pool_, "capped", "db"), "");
  EXPECT_EQ(RunCli({"restore", "resume", "--store", store_, pool_, "lazy2", "--rate", "fast"})
                .exit_code,
            2);
  RunJson({"restore", "resume", "--store", store_, pool_, "lazy2"});
  EXPECT_EQ(RunJson({"restore", "status", pool_, "lazy2"})["hydrating"], false);
  EXPECT_EQ(CompareInPool(pool_, "lazy2", "db"), "");
  CliResult done = RunCli({"restore", "status", pool_, "lazy"});
  EXPECT_TRUE(Contains(done.out, "restored instantly from " + snap["id"].get<std::string>()))
      << done.out;

  // --wait fills before it returns.
  const json r =
      RunJson({"restore", "--store", store_, snap["id"], "--to-new", pool_, "fast", "--wait"});
  EXPECT_EQ(r["instant"], true) << r.dump();
  // The fill covers the span of the set's data (its restore index pages):
  // the 7 MiB written and the hole between them, which stays a hole; but for
  // the chunk the first read filled (the volume usable).
  EXPECT_LT(r["filled_bytes"].get<uint64_t>(), 21 * kMiB);
  EXPECT_GE(r["filled_bytes"].get<uint64_t>(), 20 * kMiB);
  EXPECT_NEAR(r["read_amplification"].get<double>(), 1.0, 0.01) << r.dump();
  EXPECT_LE(r["rto_usable_seconds"].get<double>(), r["complete_seconds"].get<double>());
  EXPECT_EQ(CompareInPool(pool_, "fast", "db"), "");
  // Filled, the status still tells what the fill read (its job left a
  // record in the commit that ended the hydration), as JSON and as text.
  const json after = RunJson({"restore", "status", pool_, "fast"});
  EXPECT_EQ(after["hydrating"], false);
  EXPECT_EQ(after["hydrated"]["set"], snap["id"]) << after.dump();
  EXPECT_EQ(after["hydration_read_bytes"], r["read_bytes"]) << after.dump();
  EXPECT_EQ(after["hydration_set_stored_bytes"], r["set_stored_bytes"]) << after.dump();
  EXPECT_NEAR(after["hydration_read_amplification"].get<double>(), 1.0, 0.01) << after.dump();
  CliResult after_text = RunCli({"restore", "status", pool_, "fast"});
  EXPECT_TRUE(Contains(after_text.out, "hydrated from set " + snap["id"].get<std::string>()))
      << after_text.out;
  EXPECT_TRUE(Contains(after_text.out, "(1.00x the set's")) << after_text.out;
  // A volume filled by reads, with no job to see the end, has no record.
  EXPECT_TRUE(RunJson({"restore", "status", pool_, "lazy"})["hydrated"].is_null());
  // A copy restore onto it replaces the data the record described.
  const json full_set = Backup("full");
  RunJson({"restore", "--store", store_, full_set["id"], "--onto", pool_, "fast", "--replace"});
  const json replaced = RunJson({"restore", "status", pool_, "fast"});
  EXPECT_TRUE(replaced["hydrated"].is_null()) << replaced.dump();
  EXPECT_EQ(replaced["hydration_read_bytes"], 0) << replaced.dump();
  // A pool without room for the whole fill is refused up front.
  // (a pool of 70 MiB holding a 64 MiB volume's data has less than the
  // set's 7 MiB free).
  const std::string tiny = dir_.File("tiny");
  RunJson({"pool", "create", tiny, "--size", "70M"});
  RunJson({"volume", "create", tiny, "filler", "--size", "64M"});
  {
    auto pf = PoolFile::Open(tiny);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    Volume* filler = *(*pf)->pool().OpenVolume("filler");
    ASSERT_TRUE(filler->Write(0, snapdisk::testing::PatternBytes(5, 64 * kMiB)).ok());
    ASSERT_TRUE((*pf)->Close().ok());
  }
  CliResult full = RunCli({"restore", "--store", store_, snap["id"], "--to-new", tiny, "r"});
  EXPECT_EQ(full.exit_code, 6) << full.err;
  EXPECT_TRUE(Contains(full.err, "needs up to 7 MiB of pool space")) << full.err;
  EXPECT_TRUE(Contains(full.err, "free")) << full.err;
  EXPECT_NE(RunCli({"volume", "info", tiny, "r"}).exit_code, 0);
  // --copy: the same image, copied before it is usable.
  const json copied =
      RunJson({"restore", "--store", store_, snap["id"], "--to-new", pool_, "slow", "--copy"});
  EXPECT_FALSE(copied.contains("instant"));
  EXPECT_EQ(CompareInPool(pool_, "slow", "db"), "");
  CliResult none = RunCli({"restore", "resume", "--store", store_, pool_, "slow"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_TRUE(Contains(none.err, "not restored lazily")) << none.err;
}

TEST_F(CliBackupTest, RestoreToAPointInTime) {
  Write("db", 0, 2 * kMiB, 1);
  Backup("full");
  Write("db", 1 * kMiB, 1 * kMiB, 2);
  {
    auto pf = PoolFile::Open(pool_);  // the oracle: db as it is at T
    ASSERT_TRUE(pf.ok());
    ASSERT_TRUE((*pf)->pool().CreateSnapshot("db", "at-t").ok());
    ASSERT_TRUE((*pf)->Close().ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const std::string t = FormatRfc3339(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  Write("db", 0, 1 * kMiB, 3);
  Backup("log");
  const json r = RunJson({"restore", "--store", store_, "--time", t, "--to-new", pool_, "pit"});
  EXPECT_EQ(r["state"]["state"], "open");
  EXPECT_EQ(r["applied"].size(), 2u) << r.dump();
  EXPECT_EQ(CompareInPool(pool_, "pit", "db", "at-t"), "");
  EXPECT_NE(CompareInPool(pool_, "pit", "db"), "");
}

// ---- inside `snapdisk serve` -----------------------------------------------------

// An NBD client that writes 4 KiB blocks, one at a time, and records when
// each write completed and how long it took.
class NbdWriter {
 public:
  NbdWriter(const std::string& socket_path, const std::string& name, uint64_t span_bytes)
      : span_bytes_(span_bytes) {
    using namespace snapdisk::nbd;  // NOLINT
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return;
    std::byte greeting[18];
    if (::recv(fd_, greeting, sizeof greeting, MSG_WAITALL) != 18) return;
    std::vector<std::byte> m;
    MessageWriter w(m);
    w.U32(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    w.U64(kOptMagic);
    w.U32(kOptGo);
    w.U32(static_cast<uint32_t>(4 + name.size() + 2));
    w.U32(static_cast<uint32_t>(name.size()));
    w.Bytes(name);
    w.U16(0);
    if (::send(fd_, m.data(), m.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(m.size())) return;
    for (;;) {
      std::byte h[20];
      if (::recv(fd_, h, sizeof h, MSG_WAITALL) != 20) return;
      std::vector<std::byte> data(Load32(h + 16));
      if (!data.empty() &&
          ::recv(fd_, data.data(), data.size(), MSG_WAITALL) != static_cast<ssize_t>(data.size())) {
        return;
      }
      const uint32_t type = Load32(h + 12);
      if (type == kRepAck) break;
      if (type != kRepInfo) return;
    }
    open_ = true;
    thread_ = std::thread([this] { Loop(); });
  }
  ~NbdWriter() {
    Stop();
    if (fd_ >= 0) ::close(fd_);
  }
  bool open() const { return open_; }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Completion times (steady clock) and latencies of the writes.
  std::vector<std::pair<std::chrono::steady_clock::time_point, double>> writes() {
    std::lock_guard<std::mutex> lock(mu_);
    return writes_;
  }
  std::string error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

 private:
  void Loop() {
    using namespace snapdisk::nbd;  // NOLINT
    const std::vector<std::byte> payload = snapdisk::testing::PatternBytes(42, 4096);
    for (uint64_t i = 0; !stop_; ++i) {
      std::vector<std::byte> m;
      MessageWriter w(m);
      w.U32(kRequestMagic);
      w.U16(0);
      w.U16(kCmdWrite);
      w.U64(i);
      w.U64((i * 4096 * 7) % span_bytes_);
      w.U32(4096);
      m.insert(m.end(), payload.begin(), payload.end());
      const auto start = std::chrono::steady_clock::now();
      std::byte reply[16];
      if (::send(fd_, m.data(), m.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(m.size()) ||
          ::recv(fd_, reply, sizeof reply, MSG_WAITALL) != 16) {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = "connection lost";
        return;
      }
      const auto end = std::chrono::steady_clock::now();
      std::lock_guard<std::mutex> lock(mu_);
      if (Load32(reply) != kSimpleReplyMagic || Load32(reply + 4) != 0 || Load64(reply + 8) != i) {
        error_ = "bad reply to write " + std::to_string(i);
        return;
      }
      writes_.emplace_back(end, std::chrono::duration<double, std::milli>(end - start).count());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  const uint64_t span_bytes_;
  int fd_ = -1;
  bool open_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::pair<std::chrono::steady_clock::time_point, double>> writes_;
  std::string error_;
};

class CliBackupServeTest : public CliBackupTest {
 protected:
  void SetUp() override {
    CliBackupTest::SetUp();
    if (snapdisk::testing::SnapdiskBin().empty()) GTEST_SKIP() << "no snapdisk binary";
    // 48 MiB of incompressible data: the backup reads and compresses a while
    // (longer still with --rate).
    for (uint64_t at = 0; at < 48 * kMiB; at += 8 * kMiB) Write("db", at, 8 * kMiB, 100 + at);
    socket_ = dir_.File("nbd.sock");
    server_ = std::make_unique<snapdisk::testing::ServerProcess>(
        pool_, std::vector<std::string>{"--socket", socket_}, dir_.File("server.log"));
    ASSERT_TRUE(server_->WaitReady()) << server_->Log();
  }
  void TearDown() override {
    if (server_) {
      EXPECT_EQ(server_->Stop(), 0) << server_->Log();
    }
  }
  // The server's running backups (`backup jobs`).
  json Jobs() {
    CliResult r = RunCli({"backup", "jobs", pool_, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out, nullptr, false);
  }
  // The sets in the store once the server runs no backup (a cancelled one
  // may still be undoing its start).
  json ListWhenFree() {
    for (int i = 0; i < 200 && !Jobs().empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(Jobs().empty()) << "a backup kept running";
    return RunJson({"backup", "list", "--store", store_});
  }
  std::vector<std::string> BackupSnapshots() {
    CliResult r = RunCli({"snapshot", "list", pool_, "db", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::string> names;
    for (const json& s : json::parse(r.out, nullptr, false)) names.push_back(s["name"]);
    return names;
  }

  std::string socket_;
  std::unique_ptr<snapdisk::testing::ServerProcess> server_;
};

TEST_F(CliBackupServeTest, BackupInsideTheServerKeepsNbdWritesCompleting) {
  NbdWriter writer(socket_, "db", 32 * kMiB);
  ASSERT_TRUE(writer.open()) << server_->Log();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto start = std::chrono::steady_clock::now();
  // --rate 24 MB/s: about two seconds for the 48 MiB (plus what the writer adds).
  CliResult r = RunCli(
      {"backup", pool_, "db", "--store", store_, "--method", "full", "--rate", "24", "--json"});
  const auto end = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  writer.Stop();
  ASSERT_EQ(r.exit_code, 0) << r.err << server_->Log();
  const json set = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(set.is_discarded()) << r.out;
  EXPECT_EQ(set["type"], "full");
  EXPECT_GE(set["data_bytes"].get<uint64_t>(), 48 * kMiB);
  EXPECT_EQ(writer.error(), "");
  const double backup_ms = std::chrono::duration<double, std::milli>(end - start).count();
  EXPECT_GT(backup_ms, 1000) << "the backup was meant to take a while";

  // The writes kept completing while the backup ran: some in every quarter
  // of its time, none waiting long.
  const auto writes = writer.writes();
  size_t during = 0;
  size_t quarters[4] = {};
  double max_ms = 0;
  for (const auto& [at, latency_ms] : writes) {
    if (at < start || at > end) continue;
    ++during;
    const double offset = std::chrono::duration<double, std::milli>(at - start).count();
    ++quarters[std::min<size_t>(3, static_cast<size_t>(offset * 4 / backup_ms))];
    max_ms = std::max(max_ms, latency_ms);
  }
  std::printf("backup %.0f ms; %zu writes meanwhile, max latency %.1f ms\n", backup_ms, during,
              max_ms);
  EXPECT_GE(during, 100u);
  for (size_t q : quarters) EXPECT_GT(q, 0u);
  // Bounded by the commits at the backup's start and end (one device flush each).
  EXPECT_LT(max_ms, 2000) << "an NBD write waited for the backup";

  // The set is in the store, the writer's data in the pool.
  const json list = ListWhenFree();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["id"], set["id"]);
}

TEST_F(CliBackupServeTest, ClientHangingUpCancelsTheBackup) {
  const auto snapshots_before = BackupSnapshots();
  CliOptions options;
  options.timeout_s = 1;  // killed after a second: the server sees the hang-up
  CliResult r = RunCli(
      {"backup", pool_, "db", "--store", store_, "--method", "full", "--rate", "5"}, options);
  EXPECT_EQ(r.exit_code, 128 + SIGKILL) << r.err;
  const json list = ListWhenFree();
  EXPECT_EQ(list.size(), 0u) << list.dump();
  EXPECT_EQ(BackupSnapshots(), snapshots_before);
  // The server goes on: a backup now succeeds.
  r = RunCli({"backup", pool_, "db", "--store", store_, "--method", "snapshot", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(CliBackupServeTest, StoppingTheServerCancelsTheBackup) {
  auto backup = std::async(std::launch::async, [&] {
    return RunCli({"backup", pool_, "db", "--store", store_, "--method", "full", "--rate", "5"});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_EQ(server_->Stop(SIGTERM), 0) << server_->Log();
  server_.reset();
  const CliResult r = backup.get();
  EXPECT_EQ(r.exit_code, 130) << r.err;
  EXPECT_TRUE(Contains(r.err, "cancelled")) << r.err;
  EXPECT_EQ(RunJson({"backup", "list", "--store", store_}).size(), 0u);
  EXPECT_EQ(BackupSnapshots().size(), 0u);
}

// A running backup is listed (with progress) from another command, the
// store's sets can be listed beside it, and `backup cancel` stops it.
TEST_F(CliBackupServeTest, RunningBackupsAreListedAndCancelled) {
  EXPECT_EQ(Jobs().size(), 0u);
  auto backup = std::async(std::launch::async, [&] {
    return RunCli({"backup", pool_, "db", "--store", store_, "--method", "full", "--rate", "4"});
  });
  json jobs;
  for (int i = 0; i < 200; ++i) {
    jobs = Jobs();
    if (jobs.size() == 1 && jobs[0]["done_bytes"].get<uint64_t>() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_EQ(jobs.size(), 1u) << jobs.dump();
  const std::string id = jobs[0]["id"];
  EXPECT_EQ(id.substr(0, 1), "F");
  EXPECT_EQ(jobs[0]["job"], 1);
  EXPECT_TRUE(Contains(jobs[0]["command"], "--method full")) << jobs.dump();
  EXPECT_GE(jobs[0]["total_bytes"].get<uint64_t>(), 48 * kMiB);
  EXPECT_LT(jobs[0]["done_bytes"].get<uint64_t>(), jobs[0]["total_bytes"].get<uint64_t>());
  EXPECT_FALSE(jobs[0]["eta_seconds"].is_null()) << jobs.dump();
  CliResult table = RunCli({"backup", "jobs", pool_});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_TRUE(Contains(table.out, id)) << table.out;
  EXPECT_TRUE(Contains(table.out, "ETA")) << table.out;

  // The store is held by the server; listing reads it beside the backup.
  CliResult list = RunCli({"backup", "list", "--store", store_});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(Contains(list.err, "in use by snapdisk serve of pool")) << list.err;
  EXPECT_EQ(RunJson({"backup", "list", "--store", store_}).size(), 0u);
  // Changing it still waits for the server.
  CliResult extend = RunCli({"store", "expire", store_});
  EXPECT_EQ(extend.exit_code, 4) << extend.err;
  EXPECT_TRUE(Contains(extend.err, "backup jobs")) << extend.err;

  CliResult none = RunCli({"backup", "cancel", pool_, "F999"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_TRUE(Contains(none.err, "no running job 'F999'; running: 1 (" + id + ")")) << none.err;
  CliResult cancel = RunCli({"backup", "cancel", pool_, id});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  const CliResult r = backup.get();
  EXPECT_EQ(r.exit_code, 130) << r.err;
  EXPECT_TRUE(Contains(r.err, "cancelled")) << r.err;
  EXPECT_EQ(ListWhenFree().size(), 0u);
  EXPECT_EQ(BackupSnapshots().size(), 0u);
}

// A restore runs inside the server; the volume is not exported while it is
// restoring, and is once `restore open` has opened it.
TEST_F(CliBackupServeTest, RestoringVolumesAreExportedOnlyOnceOpen) {
  const json full = RunJson({"backup", pool_, "db", "--store", store_, "--method", "full"});
  const std::string id = full["id"];
  RunJson({"restore", "--store", store_, id, "--to-new", pool_, "r", "--restoring"});
  {
    NbdWriter refused(socket_, "r", 1 * kMiB);
    EXPECT_FALSE(refused.open());
  }
  // Not in the export list either, so listing the server works (nbdinfo
  // --list opens every export it lists).
  const std::string uri = "nbd+unix:///?socket=" + socket_;
  std::string listed;
  {
    FILE* p = ::popen(("nbdinfo --list --json '" + uri + "' 2>&1").c_str(), "r");
    ASSERT_NE(p, nullptr);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) listed.append(buf, n);
    EXPECT_EQ(::pclose(p), 0) << listed;
  }
  EXPECT_TRUE(Contains(listed, "\"db\"")) << listed;
  EXPECT_FALSE(Contains(listed, "\"r\"")) << listed;
  RunJson({"restore", "open", pool_, "r"});
  NbdWriter writer(socket_, "r", 1 * kMiB);
  EXPECT_TRUE(writer.open()) << server_->Log();
  writer.Stop();
}

// Policies run by themselves: a server looking every second runs what a
// policy has due, with nobody running `policy run`, and records each task.
TEST_F(CliBackupServeTest, TheServerRunsDuePoliciesByItself) {
  ASSERT_EQ(server_->Stop(), 0) << server_->Log();
  server_ = std::make_unique<snapdisk::testing::ServerProcess>(
      pool_, std::vector<std::string>{"--socket", socket_, "--policy-check", "1"},
      dir_.File("server2.log"));
  ASSERT_TRUE(server_->WaitReady()) << server_->Log();
  RunJson({"policy", "set", pool_, "db", "--store", store_, "--method", "snapshot", "--retention",
           "7", "--cycle", "mon,tue,wed,thu,fri,sat,sun", "--window", "00:00-24:00",
           "--log-frequency", "5m"});
  json history;
  bool snapshot_done = false;
  for (int i = 0; i < 300 && !snapshot_done; ++i) {
    history = RunJson({"backup", "history", pool_});
    for (const json& t : history) {
      snapshot_done = snapshot_done || (t["method"] == "snapshot" && t["result"] == "done");
    }
    if (!snapshot_done) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(snapshot_done) << history.dump() << server_->Log();
  for (const json& t : history) EXPECT_EQ(t["trigger"], "policy") << t.dump();
  for (int i = 0; i < 200 && !Jobs().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(Contains(server_->Log(), "volume 'db': policy snapshot backup S")) << server_->Log();
  // `policy show` gives the last and the next run.
  const json shown = RunJson({"policy", "show", pool_, "db"});
  EXPECT_EQ(shown["last_data_run"]["method"], "snapshot") << shown.dump();
  // (A 5-minute log boundary may have passed meanwhile: then a log is due now.)
  EXPECT_FALSE(shown["next_run"].is_null()) << shown.dump();
  CliResult text = RunCli({"policy", "show", pool_, "db"});
  EXPECT_TRUE(Contains(text.out, "last data run")) << text.out;
  EXPECT_TRUE(Contains(text.out, "next run")) << text.out;
}

TEST_F(CliBackupServeTest, PolicyCommandsRunInsideTheServer) {
  RunJson({"policy", "set", pool_, "db", "--store", store_, "--method", "snapshot", "--retention",
           "7", "--cycle", "mon,tue,wed,thu,fri,sat,sun", "--window", "00:00-24:00",
           "--log-frequency", "5m"});
  EXPECT_EQ(RunJson({"policy", "show", pool_, "db"})["policy"]["method"], "snapshot");
  const json doc = RunJson({"policy", "run", pool_});
  bool snapshot_ran = false;
  for (const json& run : doc["runs"]) {
    EXPECT_EQ(run["status"], "OK") << run.dump();
    snapshot_ran |= run["method"] == "snapshot";
  }
  EXPECT_TRUE(snapshot_ran) << doc.dump();
}

// ---- restore open --check sync|async, restore check, the write fence ---------------
// (opencheck helper's block: a restoring volume refuses writes; the check before
// or after open, its record in `restore status`, a corrupted block found
// either way, an async check inside the server while an NBD client writes,
// cancelled, interrupted by a killed server.)

class CliRestoreCheckTest : public CliBackupTest {
 protected:
  void SetUp() override {
    CliBackupTest::SetUp();
    // The restore target is a pool of its own: its file holds r's blocks only.
    target_ = dir_.File("target");
    auto pf = PoolFile::Create(target_, 128 * kMiB);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    ASSERT_TRUE((*pf)->Close().ok());
    Write("db", 0, 2 * kMiB, 7);
    full_ = Backup("full")["id"];
  }
  void Restoring(const std::string& volume) {
    RunJson({"restore", "--store", store_, full_, "--to-new", target_, volume, "--restoring"});
  }
  // Writes through the library, as any user of the pool.
  Status WriteTarget(const std::string& volume, uint64_t offset, uint64_t length, uint64_t seed) {
    auto pf = PoolFile::Open(target_);
    if (!pf.ok()) return pf.status();
    auto v = (*pf)->pool().OpenVolume(volume);
    if (!v.ok()) return v.status();
    Status s = (*v)->Write(offset, snapdisk::testing::PatternBytes(seed, length));
    Status closed = (*pf)->Close();
    return s.ok() ? closed : s;
  }
  // Bit rot in the target's copy of db's block `block` (written by Write
  // with seed 7).
  void Rot(uint64_t block) {
    const auto data = snapdisk::testing::PatternBytes(7, 2 * kMiB);
    const std::byte* needle = data.data() + block * 4096;
    const int fd = ::open(target_.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char buf[4096];
    off_t at = -1;
    for (off_t off = 0; ::pread(fd, buf, sizeof buf, off) == sizeof buf; off += sizeof buf) {
      if (std::memcmp(buf, needle, sizeof buf) == 0) {
        at = off;  // data blocks are block-aligned in the pool file
        break;
      }
    }
    ASSERT_GE(at, 0);
    ASSERT_EQ(::pwrite(fd, "rot!", 4, at + 100), 4);
    ::close(fd);
  }
  json StatusOf(const std::string& volume) {
    return RunJson({"restore", "status", target_, volume});
  }

  std::string target_;
  std::string full_;
};

TEST_F(CliRestoreCheckTest, ARestoringVolumeRefusesWritesUntilOpenedAfterACleanCheck) {
  Restoring("r");
  Status w = WriteTarget("r", 0, 4096, 1);
  EXPECT_TRUE(w.IsPermissionDenied()) << w.ToString();
  EXPECT_EQ(w.message(),
            "volume 'r': write at offset 0 length 4096 refused: the volume is being restored "
            "(apply the next backup with `snapdisk restore apply`, or make it live with "
            "`snapdisk restore open`)");
  // import-diff onto it is refused the same way and changes nothing.
  RunJson({"snapshot", "create", pool_, "db", "s1"});
  const std::string diff = dir_.File("db.rbd");
  RunJson({"export-diff", pool_, "db@s1", diff});
  CliResult imported = RunCli({"import-diff", target_, "r", diff});
  EXPECT_EQ(imported.exit_code, 7) << imported.err;
  EXPECT_TRUE(Contains(imported.err, "refused: the volume is being restored")) << imported.err;
  EXPECT_TRUE(Contains(imported.err, "volume 'r' is as before the import")) << imported.err;
  json st = StatusOf("r");
  EXPECT_EQ(st["state"], "restoring");
  EXPECT_TRUE(st["check"].is_null()) << st.dump();
  EXPECT_EQ(RunCli({"restore", "open", target_, "r", "--check", "later"}).exit_code, 2);

  // The default is sync: checked, then opened.
  const json opened = RunJson({"restore", "open", target_, "r"});
  EXPECT_EQ(opened["state"], "open");
  EXPECT_EQ(opened["check"]["mode"], "sync");
  EXPECT_EQ(opened["check"]["state"], "clean");
  EXPECT_EQ(opened["checked_bytes"], 2 * kMiB);
  EXPECT_TRUE(WriteTarget("r", 0, 4096, 1).ok());
  st = StatusOf("r");
  EXPECT_EQ(st["check"]["mode"], "sync");
  EXPECT_EQ(st["check"]["state"], "clean");
  EXPECT_EQ(st["check"]["checked_bytes"], 2 * kMiB);
  EXPECT_FALSE(st["check"]["finished"].is_null());
  CliResult text = RunCli({"restore", "status", target_, "r"});
  EXPECT_TRUE(Contains(text.out, "sync check (started ")) << text.out;
  EXPECT_TRUE(Contains(text.out, "clean, 2 MiB checked")) << text.out;

  // `restore check` needs a restored volume.
  CliResult plain = RunCli({"restore", "check", pool_, "db"});
  EXPECT_EQ(plain.exit_code, 2);
  EXPECT_TRUE(Contains(plain.err, "volume 'db' has no restore state")) << plain.err;
}

// The seed: a database restoring "cannot be read or written until you open
// it". Export, backup, clone and snapshot of it are refused, saying how.
TEST_F(CliRestoreCheckTest, ARestoringVolumeIsClosedToEverythingButTheRestore) {
  Restoring("r");
  RunJson({"restore", "--store", store_, full_, "--to-new", target_, "live"});
  const std::string before = testing::ContentFingerprint(target_);
  const std::vector<std::vector<std::string>> refused = {
      {"export", target_, "r", dir_.File("r.img")},
      {"backup", target_, "r", "--store", store_, "--method", "full"},
      {"backup", target_, "r", "--store", store_, "--method", "snapshot"},
      {"backup", target_, "r", "--store", store_, "--method", "log"},
      {"snapshot", "create", target_, "r", "s"},
      {"clone", target_, "r@s", "c"},
  };
  for (const auto& args : refused) {
    CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 7) << args[0] << ": " << r.err;
    EXPECT_TRUE(Contains(r.err, "volume 'r'")) << r.err;
    EXPECT_TRUE(Contains(r.err, "restore")) << r.err;
    EXPECT_TRUE(Contains(r.err, "open")) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_.File("r.img")));
  EXPECT_EQ(testing::ContentFingerprint(target_), before);
  // The open one is fine; once r is open, so is r.
  RunJson({"snapshot", "create", target_, "live", "s"});
  RunJson({"restore", "open", target_, "r"});
  RunJson({"snapshot", "create", target_, "r", "s"});
  RunJson({"clone", target_, "r@s", "c"});
  RunJson({"export", target_, "r", dir_.File("r.img")});
}

TEST_F(CliRestoreCheckTest, ACorruptBlockIsFoundBeforeOrAfterOpen) {
  Restoring("r");
  Rot(100);
  const std::string offset = std::to_string(100 * 4096);
  // Sync: not opened.
  CliResult sync = RunCli({"restore", "open", target_, "r"});
  EXPECT_EQ(sync.exit_code, 5) << sync.err;
  EXPECT_TRUE(Contains(sync.err,
                       "volume 'r' stays restoring: the check found 1 bad block "
                       "(listed above)"))
      << sync.err;
  EXPECT_TRUE(Contains(sync.out, "was not opened")) << sync.out;
  // The bad block's line is printed once, not in every summary.
  const std::string both = sync.out + sync.err;
  const std::string line = "checksum mismatch at offset " + offset;
  size_t times = 0;
  for (size_t at = both.find(line); at != std::string::npos; at = both.find(line, at + 1)) ++times;
  EXPECT_EQ(times, 1u) << both;
  json st = StatusOf("r");
  EXPECT_EQ(st["state"], "restoring");
  EXPECT_EQ(st["check"]["state"], "problems");
  EXPECT_EQ(st["check"]["problems"], 1);

  // Async: opened at once, the problem found afterwards; it stays open.
  CliResult async = RunCli({"restore", "open", target_, "r", "--check", "async", "--json"});
  EXPECT_EQ(async.exit_code, 5) << async.err;
  EXPECT_TRUE(Contains(async.err,
                       "volume 'r' is open (it stays open), but its check found 1 bad "
                       "block"))
      << async.err;
  const json doc = json::parse(async.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << async.out;
  EXPECT_EQ(doc["state"], "open");
  EXPECT_EQ(doc["check"]["mode"], "async");
  EXPECT_EQ(doc["check"]["state"], "problems");
  ASSERT_EQ(doc["bad_blocks"].size(), 1u);
  EXPECT_EQ(doc["bad_blocks"][0]["offset_bytes"], 100 * 4096);
  st = StatusOf("r");
  EXPECT_EQ(st["state"], "open");
  EXPECT_EQ(st["check"]["mode"], "async");
  EXPECT_EQ(st["check"]["state"], "problems");
  EXPECT_EQ(st["check"]["first_problem"].get<std::string>().rfind("offset " + offset + ": ", 0), 0u)
      << st.dump();
  CliResult text = RunCli({"restore", "status", target_, "r"});
  EXPECT_TRUE(Contains(text.out, "async check (started ")) << text.out;
  EXPECT_TRUE(Contains(text.out, "1 bad block in 2 MiB checked")) << text.out;
  CliResult opened_text = RunCli({"restore", "open", target_, "r", "--check", "async"});
  EXPECT_NE(opened_text.exit_code, 0);  // open already

  // Checked again: still bad (exit 1), then fine once the block is rewritten.
  CliResult again = RunCli({"restore", "check", target_, "r"});
  EXPECT_EQ(again.exit_code, 1) << again.err;
  EXPECT_TRUE(Contains(again.out, offset)) << again.out;
  EXPECT_TRUE(Contains(again.err, "the check of volume 'r' found 1 bad block")) << again.err;
  EXPECT_EQ(StatusOf("r")["check"]["mode"], "sync");
  ASSERT_TRUE(WriteTarget("r", 100 * 4096, 4096, 3).ok());
  CliResult fixed = RunCli({"restore", "check", target_, "r"});
  EXPECT_EQ(fixed.exit_code, 0) << fixed.err;
  EXPECT_EQ(StatusOf("r")["check"]["state"], "clean");
}

TEST_F(CliRestoreCheckTest, ACheckLeftRunningShowsAsInterrupted) {
  Restoring("r");
  RunJson({"restore", "open", target_, "r", "--check", "async"});
  {
    // What a killed process leaves: the check recorded running.
    auto pf = PoolFile::Open(target_);
    ASSERT_TRUE(pf.ok());
    auto state = GetRestoreState((*pf)->pool(), "r");
    ASSERT_TRUE(state.ok() && *state);
    (*state)->check->state = RestoreCheckState::kRunning;
    (*state)->check->finished_unix_ns = 0;
    ASSERT_TRUE(
        (*pf)->pool().SetAttribute("r", kRestoreStateAttribute, EncodeRestoreState(**state)).ok());
    ASSERT_TRUE((*pf)->Close().ok());
  }
  EXPECT_EQ(StatusOf("r")["check"]["state"], "interrupted");
  CliResult text = RunCli({"restore", "status", target_, "r"});
  EXPECT_TRUE(Contains(text.out,
                       "interrupted (the process running it stopped); `snapdisk restore "
                       "check` runs it again"))
      << text.out;
  RunJson({"restore", "check", target_, "r"});
  EXPECT_EQ(StatusOf("r")["check"]["state"], "clean");
}

// Inside the server: open at once, check as a job (listed by `backup jobs`)
// while an NBD client writes to the volume; no false problem.
TEST_F(CliBackupServeTest, AsyncOpenChecksWhileAnNbdClientWrites) {
  const json full = RunJson({"backup", pool_, "db", "--store", store_, "--method", "full"});
  RunJson({"restore", "--store", store_, full["id"], "--to-new", pool_, "r", "--restoring"});
  // Inside the server the command answers at once: open, the check running
  // as a server job (48 MiB at 12 MB/s: about four seconds).
  const auto asked = std::chrono::steady_clock::now();
  const json answer = RunJson({"restore", "open", pool_, "r", "--check", "async", "--rate", "12"});
  EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::seconds(2));
  EXPECT_EQ(answer["state"], "open") << answer.dump();
  EXPECT_EQ(answer["check"]["state"], "running") << answer.dump();
  json jobs;
  for (int i = 0; i < 200; ++i) {
    jobs = Jobs();
    if (jobs.size() == 1 && jobs[0]["done_bytes"].get<uint64_t>() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_EQ(jobs.size(), 1u) << jobs.dump();
  EXPECT_EQ(jobs[0]["id"], "check:r");
  EXPECT_EQ(jobs[0]["label"], "check r");
  EXPECT_GE(jobs[0]["total_bytes"].get<uint64_t>(), 48 * kMiB);
  NbdWriter writer(socket_, "r", 32 * kMiB);
  ASSERT_TRUE(writer.open()) << "open volumes are exported while checked" << server_->Log();
  for (int i = 0; i < 400 && !Jobs().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  const auto end = std::chrono::steady_clock::now();
  writer.Stop();
  EXPECT_EQ(writer.error(), "");
  size_t during = 0;
  for (const auto& [at, latency_ms] : writer.writes()) during += at < end;
  EXPECT_GE(during, 20u) << "the client wrote while the check ran";
  const json st = RunJson({"restore", "status", pool_, "r"});
  EXPECT_EQ(st["check"]["state"], "clean");
  EXPECT_EQ(st["check"]["mode"], "async");
  EXPECT_TRUE(Jobs().empty());
}

// `backup cancel` stops the check (recorded cancelled; the volume stays
// open); a server killed in the middle of one leaves it interrupted.
TEST_F(CliBackupServeTest, AsyncChecksAreCancelledOrInterrupted) {
  const json full = RunJson({"backup", pool_, "db", "--store", store_, "--method", "full"});
  RunJson({"restore", "--store", store_, full["id"], "--to-new", pool_, "r", "--restoring"});
  auto wait_listed = [&] {
    for (int i = 0; i < 200; ++i) {
      const json jobs = Jobs();
      if (jobs.size() == 1 && jobs[0]["done_bytes"].get<uint64_t>() > 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  };
  const CliResult opened =
      RunCli({"restore", "open", pool_, "r", "--check", "async", "--rate", "4"});
  EXPECT_EQ(opened.exit_code, 0) << opened.err;
  EXPECT_TRUE(Contains(opened.out, "The server checks its data in the background")) << opened.out;
  ASSERT_TRUE(wait_listed());
  EXPECT_EQ(RunCli({"backup", "cancel", pool_, "check:r"}).exit_code, 0);
  for (int i = 0; i < 200 && !Jobs().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  json st = RunJson({"restore", "status", pool_, "r"});
  EXPECT_EQ(st["state"], "open");
  EXPECT_EQ(st["check"]["state"], "cancelled");

  auto check = std::async(std::launch::async, [&] {
    return RunCli({"restore", "check", pool_, "r", "--rate", "4"});
  });
  ASSERT_TRUE(wait_listed());
  server_->Stop(SIGKILL);
  server_.reset();
  EXPECT_NE(check.get().exit_code, 0);
  st = RunJson({"restore", "status", pool_, "r"});  // no server now: run here
  EXPECT_EQ(st["check"]["state"], "interrupted") << st.dump();
  RunJson({"restore", "check", pool_, "r"});
  EXPECT_EQ(RunJson({"restore", "status", pool_, "r"})["check"]["state"], "clean");
}

}  // namespace
}  // namespace snapdisk::cli
