// Restore planning (restore/restore_plan.h) over handmade manifests: the
// minimal chain for every kind of target, coverage of points in time and
// LSNs, and every refusal with its exact message.
#include "restore/restore_plan.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "disk/clock.h"

namespace snapdisk {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr int64_t kEpochNs = 1'780'000'000'000'000'000;

// Times in these tests: LSN k was written at T(k) = epoch + 10k ms; a data
// backup ending at LSN k is consistent at T(k) + 5 ms.
int64_t T(uint64_t lsn) { return kEpochNs + static_cast<int64_t>(lsn) * 10'000'000; }
int64_t Consistent(uint64_t lsn) { return T(lsn) + 5'000'000; }

BackupSet Set(BackupType type, uint64_t seq, uint64_t first, uint64_t last,
              const std::string& base = "", uint64_t lineage = 12) {
  BackupSet s;
  s.type = type;
  s.sequence = seq;
  s.id = std::string(1, BackupTypeLetter(type)) + std::to_string(seq);
  s.volume = "db";
  s.volume_id = 12;
  s.lineage = lineage;
  s.first_lsn = first;
  s.last_lsn = last;
  s.base = base;
  s.block_bytes = 4096;
  s.volume_size_bytes = 64 * kMiB;
  const std::string hash(32, static_cast<char>('a' + seq % 6));
  s.chunks = {ChunkInfo{hash, 65536, 1000 + seq, true, ChunkKey(hash)}};
  if (type == BackupType::kLog) {
    s.first_record_unix_ns = T(first);
    s.last_record_unix_ns = T(last);
    s.data_bytes = 65536;
  } else {
    s.consistent_unix_ns = Consistent(last);
    s.extents = {ChunkExtent{0, 65536, hash, 0}};
    s.data_bytes = 65536;
  }
  return s;
}

BackupSet Full(uint64_t seq, uint64_t last) { return Set(BackupType::kFull, seq, 0, last); }
BackupSet Log(uint64_t seq, uint64_t first, uint64_t last, uint64_t lineage = 12) {
  return Set(BackupType::kLog, seq, first, last, "", lineage);
}

std::vector<std::string> Ids(const RestorePlan& plan) {
  std::vector<std::string> out;
  for (const RestoreStep& s : plan.steps) out.push_back(s.set.id);
  return out;
}

using Ids_ = std::vector<std::string>;

// F1 (0-100), I2 on F1 (101-200), D3 on F1 (101-300), I4 on D3 (301-400),
// I5 on I4 (401-500), S6 a snapshot set (0-550).
std::vector<BackupSet> DataChainSets() {
  return {Full(1, 100),
          Set(BackupType::kIncr, 2, 101, 200, "F1"),
          Set(BackupType::kDiff, 3, 101, 300, "F1"),
          Set(BackupType::kIncr, 4, 301, 400, "D3"),
          Set(BackupType::kIncr, 5, 401, 500, "I4"),
          Set(BackupType::kSnapshot, 6, 0, 550)};
}

TEST(RestorePlanTest, BackupTargetsGetTheMinimalChain) {
  const auto sets = DataChainSets();
  struct Case {
    const char* id;
    Ids_ chain;
  } cases[] = {{"F1", {"F1"}},
               {"I2", {"F1", "I2"}},
               {"D3", {"F1", "D3"}},
               {"I4", {"F1", "D3", "I4"}},
               {"I5", {"F1", "D3", "I4", "I5"}},
               {"S6", {"S6"}}};
  for (const Case& c : cases) {
    auto plan = PlanRestoreFromSets(sets, RestoreTarget::Backup(c.id));
    ASSERT_TRUE(plan.ok()) << c.id << ": " << plan.status().ToString();
    EXPECT_EQ(Ids(*plan), c.chain) << c.id;
    EXPECT_EQ(plan->volume, "db");
    EXPECT_EQ(plan->lineage, 12u);
    EXPECT_EQ(plan->end_lsn, plan->steps.back().set.last_lsn);
    EXPECT_TRUE(plan->end_lsn_exact);
    EXPECT_EQ(plan->end_unix_ns, plan->steps.back().set.consistent_unix_ns);
    EXPECT_EQ(plan->read_bytes(), [&] {
      uint64_t n = 0;
      for (const RestoreStep& s : plan->steps) n += s.set.chunks[0].stored_bytes;
      return n;
    }());
    EXPECT_EQ(plan->data_bytes(), 65536u * plan->steps.size());
  }
  auto missing = PlanRestoreFromSets(sets, RestoreTarget::Backup("F9"));
  EXPECT_TRUE(missing.status().IsNotFound());
  EXPECT_EQ(missing.status().message(), "backup set F9 is not in the store");
}

TEST(RestorePlanTest, BrokenDataChainsAreRefusedNamingTheLink) {
  auto sets = DataChainSets();
  sets.erase(sets.begin() + 3);  // I4 gone
  auto plan = PlanRestoreFromSets(sets, RestoreTarget::Backup("I5"));
  EXPECT_TRUE(plan.status().IsCorruption());
  EXPECT_EQ(plan.status().message(),
            "backup chain of I5 is broken: I5 depends on I4, which is not in the store");

  sets = DataChainSets();
  sets[2].base = "I2";  // a diff on an incr
  plan = PlanRestoreFromSets(sets, RestoreTarget::Backup("D3"));
  EXPECT_EQ(plan.status().message(),
            "backup chain of D3 is broken: differential backup D3 depends on incremental "
            "backup I2, not on a full backup");

  sets = DataChainSets();
  sets[4].first_lsn = 402;
  plan = PlanRestoreFromSets(sets, RestoreTarget::Backup("I5"));
  EXPECT_EQ(plan.status().message(),
            "backup chain of I5 is broken: I5 begins at LSN 402 but its base I4 ends at LSN 400");

  sets = DataChainSets();
  sets[3].lineage = 13;
  plan = PlanRestoreFromSets(sets, RestoreTarget::Backup("I5"));
  EXPECT_EQ(plan.status().message(),
            "backup chain of I5 is broken: I5 is of volume id 12 lineage 12, its base I4 of "
            "volume id 12 lineage 13");
}

// F1 (0-100), L2 (1-150: partly before F1), D3 on F1 (101-160), L4 (151-220),
// L5 (221-300).
std::vector<BackupSet> PitrSets() {
  return {Full(1, 100), Log(2, 1, 150), Set(BackupType::kDiff, 3, 101, 160, "F1"),
          Log(4, 151, 220), Log(5, 221, 300)};
}

TEST(RestorePlanTest, PointInTimeTakesTheLatestDataBackupThenTheLog) {
  const auto sets = PitrSets();
  // Between F1 and D3: F1, then L2 from 101 and L4 up to the record at T.
  auto plan = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", T(155) + 1));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "L2", "L4"}));
  EXPECT_EQ(plan->steps[1].from_lsn, 101u) << "L2 is applied from F1's LSN + 1";
  EXPECT_EQ(plan->steps[1].through_lsn, 150u);
  EXPECT_FALSE(plan->steps[1].stop_after_unix_ns) << "all of L2 is before T";
  EXPECT_EQ(plan->steps[2].from_lsn, 151u);
  ASSERT_TRUE(plan->steps[2].stop_after_unix_ns);
  EXPECT_EQ(*plan->steps[2].stop_after_unix_ns, T(155) + 1);
  EXPECT_FALSE(plan->end_lsn_exact);
  EXPECT_EQ(plan->end_unix_ns, T(155) + 1);

  // After D3: D3's chain, then L4 from 161.
  plan = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", T(170)));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "D3", "L4"}));
  EXPECT_EQ(plan->steps[2].from_lsn, 161u) << "partly covered: from the backup's LSN + 1";

  // Exactly at a backup's consistent point: the backup alone when the next
  // record is after it.
  plan = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", Consistent(100)));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "L2"})) << "L2 holds LSN 101, after T: covered, nothing to do";
  plan = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", Consistent(160)));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "D3", "L4"}))
      << "L4 holds D3's next LSN: records at T itself would apply";
  EXPECT_TRUE(plan->steps[2].stop_after_unix_ns);

  // A segment boundary: T at L4's last record takes all of L4 and stops
  // because L5 begins after T.
  plan = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", T(220)));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "D3", "L4"}));
  EXPECT_EQ(plan->end_lsn, 220u);
  EXPECT_TRUE(plan->end_lsn_exact);

  // The last shipped record itself is covered.
  plan = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", T(300)));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "D3", "L4", "L5"}));
}

TEST(RestorePlanTest, PointsInTimeOutsideTheBackupsAreRefused) {
  const auto sets = PitrSets();
  auto before = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", Consistent(100) - 1));
  EXPECT_TRUE(before.status().IsNotFound());
  EXPECT_EQ(before.status().message(),
            "point in time " + FormatRfc3339(Consistent(100) - 1) +
                " is before the first backup of volume 'db' (F1, consistent at " +
                FormatRfc3339(Consistent(100)) + ")");

  auto after = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", T(300) + 1));
  EXPECT_TRUE(after.status().IsNotFound());
  EXPECT_EQ(after.status().message(),
            "point in time " + FormatRfc3339(T(300) + 1) +
                " is after the last shipped log record of volume 'db' lineage 12 (LSN 300 at " +
                FormatRfc3339(T(300)) + ", in L5)");

  // A data backup and no log after it at all.
  std::vector<BackupSet> only_full = {Full(1, 100)};
  auto no_log = PlanRestoreFromSets(only_full, RestoreTarget::PointInTime("db", T(200)));
  EXPECT_TRUE(no_log.status().IsNotFound());
  EXPECT_EQ(no_log.status().message(),
            "point in time " + FormatRfc3339(T(200)) +
                " is after the last shipped log record of volume 'db' lineage 12: no log backup "
                "continues after full backup F1 (LSN 100, consistent at " +
                FormatRfc3339(Consistent(100)) + ")");

  auto nothing = PlanRestoreFromSets(only_full, RestoreTarget::PointInTime("other", T(200)));
  EXPECT_TRUE(nothing.status().IsNotFound());
  EXPECT_EQ(nothing.status().message(), "no backups of volume 'other' in the store");

  std::vector<BackupSet> logs_only = {Log(1, 1, 50)};
  auto no_data = PlanRestoreFromSets(logs_only, RestoreTarget::PointInTime("db", T(20)));
  EXPECT_EQ(no_data.status().message(),
            "volume 'db' has no data backup (snapshot, full, differential or incremental) to "
            "restore from");
}

TEST(RestorePlanTest, ALaterBackupAtTheSameLsnProvesNothingWasWritten) {
  // F1 at LSN 100, nothing written, F2 at LSN 100 much later; no log.
  std::vector<BackupSet> sets = {Full(1, 100), Full(2, 100)};
  sets[1].consistent_unix_ns = Consistent(100) + 1'000'000'000;
  auto plan = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", Consistent(100) + 500));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1"}));
}

TEST(RestorePlanTest, LogGapsAreRefusedNamingTheMissingLsnsAndTheSetsAround) {
  // F1 (0-100), L2 (101-150), L4 (171-220): LSN 151-170 are missing.
  std::vector<BackupSet> sets = {Full(1, 100), Log(2, 101, 150), Log(4, 171, 220)};
  auto gap = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", T(180)));
  EXPECT_TRUE(gap.status().IsCorruption());
  EXPECT_EQ(gap.status().message(),
            "log gap: volume 'db' lineage 12: LSN 151-170 missing between L2 (ends at LSN 150) "
            "and L4 (begins at LSN 171); cannot restore to point in time " +
                FormatRfc3339(T(180)) + " past LSN 150");
  auto gap_lsn = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 200));
  EXPECT_EQ(gap_lsn.status().message(),
            "log gap: volume 'db' lineage 12: LSN 151-170 missing between L2 (ends at LSN 150) "
            "and L4 (begins at LSN 171); cannot restore to LSN 200 past LSN 150");
  // Right after the backup.
  std::vector<BackupSet> late = {Full(1, 100), Log(2, 102, 150)};
  auto one = PlanRestoreFromSets(late, RestoreTarget::Lsn("db", 120));
  EXPECT_EQ(one.status().message(),
            "log gap: volume 'db' lineage 12: LSN 101 missing between F1 (ends at LSN 100) and "
            "L2 (begins at LSN 102); cannot restore to LSN 120 past LSN 100");
  // Before the gap, everything is covered.
  auto fine = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", T(140)));
  ASSERT_TRUE(fine.ok()) << fine.status().ToString();
  EXPECT_EQ(Ids(*fine), (Ids_{"F1", "L2"}));
}

TEST(RestorePlanTest, LsnTargets) {
  const auto sets = PitrSets();
  auto plan = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 250));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "D3", "L4", "L5"}));
  EXPECT_EQ(plan->steps[2].from_lsn, 161u);
  EXPECT_EQ(plan->steps[2].through_lsn, 220u);
  EXPECT_EQ(plan->steps[3].from_lsn, 221u);
  EXPECT_EQ(plan->steps[3].through_lsn, 250u);
  EXPECT_EQ(plan->end_lsn, 250u);
  EXPECT_TRUE(plan->end_lsn_exact);

  plan = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 160));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "D3"})) << "a backup that ends at N needs no log";

  plan = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 130));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "L2"}));
  EXPECT_EQ(plan->steps[1].through_lsn, 130u);

  auto before = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 99));
  EXPECT_TRUE(before.status().IsNotFound());
  EXPECT_EQ(before.status().message(),
            "LSN 99 is before the first backup of volume 'db' lineage 12 (F1, at LSN 100)");
  auto after = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 301));
  EXPECT_TRUE(after.status().IsNotFound());
  EXPECT_EQ(after.status().message(),
            "LSN 301 is after the last shipped log record of volume 'db' lineage 12 (LSN 300 at " +
                FormatRfc3339(T(300)) + ", in L5)");

  // A log set as a backup target: as of its last record.
  plan = PlanRestoreFromSets(sets, RestoreTarget::Backup("L4"));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "D3", "L4"}));
  EXPECT_EQ(plan->end_lsn, 220u);
  EXPECT_EQ(plan->target.kind, RestoreTarget::Kind::kBackup);
}

TEST(RestorePlanTest, PlansStayInOneLineage) {
  // Lineage 12: F1 (0-100), L2 (101-150). A rollback to LSN 120 starts
  // lineage 13: F3 (0-130), L4 (131-160), whose LSNs repeat 12's.
  std::vector<BackupSet> sets = {Full(1, 100), Log(2, 101, 150),
                                 Set(BackupType::kFull, 3, 0, 130, "", 13), Log(4, 131, 160, 13)};
  sets[2].consistent_unix_ns = T(200);
  sets[3].first_record_unix_ns = T(201);
  sets[3].last_record_unix_ns = T(230);
  // By LSN: the newest lineage unless told.
  auto plan = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 140));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F3", "L4"}));
  EXPECT_EQ(plan->lineage, 13u);
  plan = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 140, 12));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F1", "L2"}));
  // By time: the lineage of the latest data backup before T.
  plan = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", T(210)));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ids(*plan), (Ids_{"F3", "L4"}));
  // Between lineage 12's last record and lineage 13's first backup: not
  // covered, and the message says where the volume went on.
  auto gone = PlanRestoreFromSets(sets, RestoreTarget::PointInTime("db", T(180)));
  EXPECT_TRUE(gone.status().IsNotFound());
  EXPECT_EQ(gone.status().message(),
            "point in time " + FormatRfc3339(T(180)) +
                " is after the last shipped log record of volume 'db' lineage 12 (LSN 150 at " +
                FormatRfc3339(T(150)) +
                ", in L2); the volume went on in lineage 13 (after a rollback), whose first set "
                "after that is F3 at " +
                FormatRfc3339(T(200)));
  auto unknown = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 140, 7));
  EXPECT_TRUE(unknown.status().IsNotFound());
  EXPECT_EQ(unknown.status().message(),
            "no backups of volume 'db' lineage 7 in the store (its backups are of lineage 12, 13)");
}

TEST(RestorePlanTest, TheVolumeSizeIsTheLargestOfTheChain) {
  auto sets = PitrSets();
  sets[3].volume_size_bytes = 96 * kMiB;  // grown before L4
  auto plan = PlanRestoreFromSets(sets, RestoreTarget::Lsn("db", 250));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->volume_size_bytes, 96 * kMiB);
  EXPECT_EQ(plan->block_bytes, 4096u);
}

TEST(RestorePlanTest, ThePlanPrintsEveryStep) {
  auto plan = PlanRestoreFromSets(PitrSets(), RestoreTarget::PointInTime("db", T(155) + 1));
  ASSERT_TRUE(plan.ok());
  const std::string text = plan->ToString();
  std::printf("%s", text.c_str());
  EXPECT_NE(text.find("restore plan: point in time " + FormatRfc3339(T(155) + 1) +
                      " of volume 'db'"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("source: volume 'db' (id 12, lineage 12)"), std::string::npos) << text;
  EXPECT_NE(text.find("1. F1  full  LSN 0-100  consistent at " + FormatRfc3339(Consistent(100))),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("2. L2  log  LSN 101-150 (of 1-150)"), std::string::npos) << text;
  EXPECT_NE(text.find("3. L4  log  LSN 151-220  records " + FormatRfc3339(T(151)) + " to " +
                      FormatRfc3339(T(220)) + ", stops after " + FormatRfc3339(T(155) + 1)),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("read 1004 bytes at most"), std::string::npos) << text;
  EXPECT_NE(text.find("restores to LSN at most 220"), std::string::npos) << text;
  EXPECT_NE(text.find("3 steps, " + std::to_string(1001 + 1002 + 1004) + " bytes to read"),
            std::string::npos)
      << text;
}

TEST(RestorePlanTest, MalformedTargetsAreRefused) {
  RestoreTarget t = RestoreTarget::PointInTime("", 5);
  EXPECT_TRUE(PlanRestoreFromSets({}, t).status().IsInvalidArgument());
  EXPECT_TRUE(PlanRestoreFromSets({}, RestoreTarget::Backup("")).status().IsInvalidArgument());
}

}  // namespace
}  // namespace snapdisk
