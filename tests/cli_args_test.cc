// Unit tests of the CLI's argument parsing and formatting (in-process).
#include <gtest/gtest.h>

#include "tools/cli/args.h"
#include "tools/cli/command_context.h"
#include "tools/cli/progress.h"
#include "tools/cli/report.h"

namespace snapdisk::cli {
namespace {

TEST(CliArgsTest, SizesAccepted) {
  struct Case {
    const char* text;
    uint64_t bytes;
  } cases[] = {
      {"4096", 4096},
      {"1", 1},
      {"512B", 512},
      {"512b", 512},
      {"4K", 4096},
      {"4k", 4096},
      {"4KB", 4096},
      {"4kib", 4096},
      {"4KiB", 4096},
      {"512M", 512ull << 20},
      {"64G", 64ull << 30},
      {"64gb", 64ull << 30},
      {"1T", 1ull << 40},
      {"1TiB", 1ull << 40},
      {"2P", 2ull << 50},
      {"15E", 15ull << 60},
      {"18446744073709551615", 18446744073709551615ull},
      {"16777215T", 16777215ull << 40},
  };
  for (const Case& c : cases) {
    auto size = ParseSize(c.text);
    ASSERT_TRUE(size.ok()) << c.text << ": " << size.status().ToString();
    EXPECT_EQ(*size, c.bytes) << c.text;
  }
}

TEST(CliArgsTest, SizesRejected) {
  struct Case {
    const char* text;
    const char* why;
  } cases[] = {
      {"", "empty"},
      {"0", "zero"},
      {"0G", "zero"},
      {"-1", "negative"},
      {"-4K", "negative"},
      {"+4K", "does not start with a number"},
      {"12X", "unknown unit 'X'"},
      {"1.5G", "fractions"},
      {"1,5G", "fractions"},
      {"G", "does not start with a number"},
      {" 4K", "does not start with a number"},
      {"4K ", "unknown unit"},
      {"4 K", "unknown unit"},
      {"4iB", "unknown unit"},
      {"4KK", "unknown unit"},
      {"4KiBB", "unknown unit"},
      {"16E", "too large"},
      {"16777216T", "too large"},
      {"18446744073709551616", "too large"},
      {"99999999999999999999999", "too large"},
      {"0x100", "unknown unit"},
  };
  for (const Case& c : cases) {
    auto size = ParseSize(c.text);
    ASSERT_FALSE(size.ok()) << "'" << c.text << "' parsed as " << *size;
    EXPECT_TRUE(size.status().IsInvalidArgument());
    EXPECT_NE(size.status().message().find(c.why), std::string::npos)
        << c.text << ": " << size.status().message();
    EXPECT_NE(size.status().message().find("'" + std::string(c.text) + "'"), std::string::npos);
  }
}

TEST(CliArgsTest, VolumeRefs) {
  auto live = ParseVolumeRef("db", false);
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(live->volume, "db");
  EXPECT_EQ(live->snapshot, "");
  auto snap = ParseVolumeRef("db@nightly-1", true);
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->volume, "db");
  EXPECT_EQ(snap->snapshot, "nightly-1");
  EXPECT_FALSE(ParseVolumeRef("db", true).ok());
  EXPECT_FALSE(ParseVolumeRef("db@", false).ok());
  EXPECT_FALSE(ParseVolumeRef("@s", false).ok());
  EXPECT_FALSE(ParseVolumeRef("db@s@t", false).ok());
  EXPECT_FALSE(ParseVolumeRef("d/b@s", false).ok());
  EXPECT_FALSE(ParseVolumeRef("", false).ok());
}

TEST(CliArgsTest, HumanSizes) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(4096), "4 KiB");
  EXPECT_EQ(HumanBytes(1536ull << 20), "1.5 GiB");
  EXPECT_EQ(HumanBytes(64ull << 30), "64 GiB");
  EXPECT_EQ(HumanBytes(1ull << 40), "1 TiB");
  EXPECT_EQ(HumanBytes(UINT64_MAX), "16.0 EiB");
  EXPECT_EQ(ExactBytes(1052672), "1028 KiB");
  EXPECT_EQ(ExactBytes(3ull << 20), "3 MiB");
  EXPECT_EQ(ExactBytes(4097), "4097 B");
  EXPECT_EQ(ExactBytes(0), "0 B");
}

TEST(CliArgsTest, Times) {
  EXPECT_EQ(Rfc3339(0), "1970-01-01T00:00:00.000000000Z");
  EXPECT_EQ(Rfc3339(1714557600123456789), "2024-05-01T10:00:00.123456789Z");
  EXPECT_EQ(HumanTime(1714557600123456789), "2024-05-01 10:00:00 UTC");
  EXPECT_EQ(Rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
}

TEST(CliArgsTest, TableAlignment) {
  Table t({"NAME", "SIZE"});
  t.RightAlign(1);
  t.AddRow({"a", "1 GiB"});
  t.AddRow({"long-name", "512 B"});
  EXPECT_EQ(t.Render(),
            "NAME        SIZE\n"
            "a          1 GiB\n"
            "long-name  512 B\n");
}

TEST(CliArgsTest, ProgressLine) {
  const std::string line =
      ProgressBar::Render("import db", 512ull << 20, 1ull << 30, ProgressUnit::kBytes, 2.0, 120);
  EXPECT_NE(line.find("import db"), std::string::npos) << line;
  EXPECT_NE(line.find(" 50%"), std::string::npos) << line;
  EXPECT_NE(line.find("512 MiB / 1 GiB"), std::string::npos) << line;
  EXPECT_NE(line.find("256 MiB/s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 0:02"), std::string::npos) << line;
  EXPECT_NE(line.find("[="), std::string::npos) << line;
  EXPECT_LE(line.size(), 120u);
  const std::string narrow = ProgressBar::Render("scrub", 10, 100, ProgressUnit::kBlocks, 1.0, 40);
  EXPECT_LE(narrow.size(), 40u);
  EXPECT_EQ(narrow.find('['), std::string::npos) << narrow;  // no room for a bar
}

TEST(CliArgsTest, ErrorMessages) {
  EXPECT_EQ(ErrorMessage(Status::NotFound("volume 'db' does not exist"), "/x/p"),
            "volume 'db' does not exist in pool /x/p");
  EXPECT_EQ(ErrorMessage(Status::NotFound("pool /x/p does not exist"), "/x/p"),
            "pool /x/p does not exist");
  EXPECT_EQ(ErrorMessage(Status::Corruption("bad\nthing"), "p"), "bad thing");
}

}  // namespace
}  // namespace snapdisk::cli
