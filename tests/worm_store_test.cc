// Tests of the WORM directory store (engine/worm_store.h): the contract,
// every refusal, expiry on a simulated clock, the audit log, tamper detection,
// crash recovery, locking and concurrency.
#include "engine/worm_store.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/test_env.h"

namespace snapdisk {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::snapdisk::testing::PatternBytes;
using ::snapdisk::testing::ScratchDir;
using ::snapdisk::testing::TestSeed;

constexpr int64_t kSecondNs = 1'000'000'000;
constexpr int64_t kDayNs = 86'400 * kSecondNs;
constexpr int64_t kStartUnixNs = 1'735'689'600 * kSecondNs;  // 2025-01-01T00:00:00Z

// ---- Helpers ------------------------------------------------------------------

std::vector<std::byte> Bytes(std::string_view s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::string Sha256HexOf(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EXPECT_EQ(EVP_Digest(bytes.data(), bytes.size(), digest, &n, EVP_sha256(), nullptr), 1);
  std::string out;
  char hex[3];
  for (unsigned int i = 0; i < n; ++i) {
    std::snprintf(hex, sizeof hex, "%02x", digest[i]);
    out += hex;
  }
  return out;
}

std::string Xxh128HexOf(std::string_view bytes) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(bytes.data(), bytes.size()));
  std::string out;
  char hex[3];
  for (unsigned char b : c.digest) {
    std::snprintf(hex, sizeof hex, "%02x", b);
    out += hex;
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, std::string_view content) {
  fs::create_directories(fs::path(path).parent_path());
  if (fs::exists(path)) fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path, std::ios::binary);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  WriteFile(path, text);
}

// A wall clock that moves only when told to.
class SimClock {
 public:
  int64_t now() const { return now_.load(); }
  void Advance(int64_t delta_ns) { now_ += delta_ns; }
  DirStoreOptions options() {
    DirStoreOptions o;
    o.now_unix_ns = [this] { return now_.load(); };
    return o;
  }

 private:
  std::atomic<int64_t> now_{kStartUnixNs};
};

bool HasProblem(const WormVerifyReport& report, const std::string& key, const std::string& what) {
  for (const auto& p : report.problems) {
    if (p.key == key && p.what.find(what) != std::string::npos) return true;
  }
  return false;
}

std::string Describe(const WormVerifyReport& report) {
  std::string out;
  for (const auto& p : report.problems) out += "  [" + p.key + "] " + p.what + "\n";
  return out;
}

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const ::snapdisk::Status s_ = (expr);                   \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)

class WormStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = scratch_.File("store");
    ASSERT_OK(CreateDirStore(dir_));
    Reopen();
  }

  void Reopen() {
    store_.reset();
    auto opened = OpenDirStore(dir_, clock_.options());
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
  }

  void Close() { store_.reset(); }

  Status Put(const std::string& key, std::string_view data, int64_t retain_days = 30) {
    return store_->Put(key, Bytes(data), clock_.now() + retain_days * kDayNs);
  }

  std::string GetString(const std::string& key) {
    auto got = store_->Get(key);
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    if (!got.ok()) return "";
    return std::string(reinterpret_cast<const char*>(got->data()), got->size());
  }

  WormVerifyReport VerifyNow() {
    auto report = store_->Verify();
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : WormVerifyReport{};
  }

  std::string ObjectPath(const std::string& key) const { return dir_ + "/objects/" + key; }
  std::string LogPath() const { return dir_ + "/audit.log"; }
  std::string TempPath(const std::string& key) const {
    return dir_ + "/tmp/" + Xxh128HexOf(key) + ".tmp";
  }

  std::vector<json> AuditEntries() {
    std::vector<json> out;
    for (const auto& line : ReadLines(LogPath())) out.push_back(json::parse(line));
    return out;
  }

  ScratchDir scratch_;
  std::string dir_;
  SimClock clock_;
  std::unique_ptr<WormStore> store_;
};

// ---- Create and open --------------------------------------------------------

TEST(WormStoreCreateTest, RejectsBadConfig) {
  ScratchDir scratch;
  for (uint64_t chunk : {uint64_t{0}, uint64_t{1000}, uint64_t{32} << 10, (uint64_t{64} << 10) + 1,
                         uint64_t{128} << 20, uint64_t{3} << 20}) {
    WormStoreConfig config;
    config.chunk_bytes = chunk;
    Status s = CreateDirStore(scratch.File("s"), config);
    EXPECT_TRUE(s.IsInvalidArgument()) << chunk << ": " << s.ToString();
    EXPECT_NE(s.message().find("chunk_bytes"), std::string::npos) << s.ToString();
  }
  for (int level : {0, -1, 20}) {
    WormStoreConfig config;
    config.zstd_level = level;
    Status s = CreateDirStore(scratch.File("s"), config);
    EXPECT_TRUE(s.IsInvalidArgument()) << level << ": " << s.ToString();
    EXPECT_NE(s.message().find("zstd_level"), std::string::npos) << s.ToString();
  }
  EXPECT_FALSE(fs::exists(scratch.File("s")));
  // Nothing half-made was left beside it either.
  EXPECT_TRUE(fs::is_empty(scratch.path()));
}

TEST(WormStoreCreateTest, KeepsConfigAndRefusesSecondCreate) {
  ScratchDir scratch;
  const std::string dir = scratch.File("a/b/store");
  WormStoreConfig config;
  config.chunk_bytes = uint64_t{256} << 10;
  config.zstd_level = 7;
  ASSERT_OK(CreateDirStore(dir, config));
  Status again = CreateDirStore(dir);
  EXPECT_TRUE(again.IsAlreadyExists()) << again.ToString();
  EXPECT_NE(again.message().find(dir), std::string::npos);
  // A trailing slash names the same store.
  EXPECT_TRUE(CreateDirStore(dir + "/").IsAlreadyExists());

  auto store = OpenDirStore(dir + "/");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->config().chunk_bytes, uint64_t{256} << 10);
  EXPECT_EQ((*store)->config().zstd_level, 7);
  // store.json is read-only; the config is in it.
  struct stat st;
  ASSERT_EQ(::stat((dir + "/store.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  json j = json::parse(ReadFile(dir + "/store.json"));
  EXPECT_EQ(j["chunk_bytes"], 262144);
  EXPECT_EQ(j["zstd_level"], 7);
  EXPECT_EQ(j["format_version"], 1);
  // Real clock by default.
  EXPECT_GT((*store)->NowUnixNs(), kStartUnixNs);
}

TEST(WormStoreCreateTest, EmptyDirectoryYesNonEmptyNoNonStoreNotFound) {
  ScratchDir scratch;
  const std::string empty = scratch.File("empty");
  fs::create_directories(empty);
  ASSERT_OK(CreateDirStore(empty));
  EXPECT_TRUE(OpenDirStore(empty).ok());

  const std::string full = scratch.File("full");
  WriteFile(full + "/something", "x");
  Status s = CreateDirStore(full);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("not empty"), std::string::npos);

  auto opened = OpenDirStore(full);
  EXPECT_TRUE(opened.status().IsNotFound()) << opened.status().ToString();
  EXPECT_NE(opened.status().message().find(full), std::string::npos);
  EXPECT_FALSE(fs::exists(full + "/.lock"));  // opening a non-store leaves nothing
  EXPECT_TRUE(OpenDirStore(scratch.File("missing")).status().IsNotFound());
  EXPECT_TRUE(RemoveDirStore(scratch.File("missing")).IsNotFound());
}

TEST_F(WormStoreTest, BusyWhileOpenElsewhere) {
  auto second = OpenDirStore(dir_, clock_.options());
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(second.status().IsBusy()) << second.status().ToString();
  EXPECT_EQ(second.status().message(), "store " + dir_ + " is in use by another process");
  Status removed = RemoveDirStore(dir_, clock_.options());
  EXPECT_TRUE(removed.IsBusy()) << removed.ToString();
  Close();
  EXPECT_TRUE(OpenDirStore(dir_, clock_.options()).ok());
}

TEST_F(WormStoreTest, BusyNamesTheHolderThatSaidWhoItIs) {
  Close();
  DirStoreOptions holder = clock_.options();
  holder.holder = "snapdisk serve of pool /p/db.pool (pid 42)\nignored";
  auto first = OpenDirStore(dir_, holder);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(DirStoreHolder(dir_), "snapdisk serve of pool /p/db.pool (pid 42)");
  auto second = OpenDirStore(dir_, clock_.options());
  EXPECT_TRUE(second.status().IsBusy());
  EXPECT_EQ(second.status().message(),
            "store " + dir_ + " is in use by snapdisk serve of pool /p/db.pool (pid 42)");
}

// A read-only view beside the writer: sees what was logged when it opened,
// changes nothing on disk, refuses every change.
TEST_F(WormStoreTest, ReadOnlyViewBesideTheWriter) {
  const int64_t retain = clock_.now() + 7 * kDayNs;
  ASSERT_OK(Put("sets/a/1.json", "one"));
  ASSERT_OK(store_->Put("chunks/big", PatternBytes(3, 200'000), retain));
  DirStoreOptions ro = clock_.options();
  ro.read_only = true;
  // A writer mid-append: a torn last line, which a view must leave alone.
  {
    std::ofstream log(LogPath(), std::ios::app);
    log << "{\"seq\": 99, \"op\": \"put\", \"key\": \"torn";
  }
  const auto log_size = fs::file_size(LogPath());
  auto view = OpenDirStore(dir_, ro);
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  WormStore& v = **view;
  EXPECT_EQ(v.List("")->size(), 2u);
  auto got = v.Get("sets/a/1.json");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got->data()), got->size()), "one");
  const std::vector<std::byte> big = PatternBytes(3, 200'000);
  EXPECT_EQ(*v.Get("chunks/big"), big);
  EXPECT_EQ(*v.GetRange("chunks/big", 1000, 10),
            std::vector<std::byte>(big.begin() + 1000, big.begin() + 1010));
  for (Status refused :
       {v.Put("x", Bytes("x"), retain), v.ExtendRetention("sets/a/1.json", retain + kDayNs),
        v.Delete("sets/a/1.json"), v.Expire().status(), v.Verify().status()}) {
    EXPECT_TRUE(refused.IsPermissionDenied()) << refused.ToString();
    EXPECT_NE(refused.message().find("read-only"), std::string::npos) << refused.ToString();
  }
  EXPECT_EQ(fs::file_size(LogPath()), log_size);  // nothing logged, nothing cut
  EXPECT_TRUE(RemoveDirStore(dir_, ro).IsPermissionDenied());
  EXPECT_TRUE(fs::exists(dir_ + "/store.json"));
}

// ---- Round trip ---------------------------------------------------------------

TEST_F(WormStoreTest, PutGetHeadListRoundTrip) {
  const int64_t retain = clock_.now() + 7 * kDayNs;
  const auto big = PatternBytes(7, (3 << 20) + 123);
  ASSERT_OK(store_->Put("sets/vol1/0000000001-F1.json", Bytes("{\"set\":1}"), retain));
  ASSERT_OK(store_->Put("chunks/ab/abcdef", big, retain));
  ASSERT_OK(store_->Put("chunks/ab/empty", {}, retain + kDayNs));
  ASSERT_OK(store_->Put("top", Bytes("top-level"), retain));

  EXPECT_EQ(GetString("sets/vol1/0000000001-F1.json"), "{\"set\":1}");
  auto got = store_->Get("chunks/ab/abcdef");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, big);
  EXPECT_EQ(GetString("chunks/ab/empty"), "");

  auto head = store_->Head("chunks/ab/abcdef");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->key, "chunks/ab/abcdef");
  EXPECT_EQ(head->size_bytes, big.size());
  EXPECT_EQ(head->checksum,
            Xxh128HexOf(std::string_view(reinterpret_cast<const char*>(big.data()), big.size())));
  EXPECT_EQ(head->created_unix_ns, clock_.now());
  EXPECT_EQ(head->retain_until_unix_ns, retain);

  auto all = store_->List("");
  ASSERT_TRUE(all.ok());
  std::vector<std::string> keys;
  for (const auto& o : *all) keys.push_back(o.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"chunks/ab/abcdef", "chunks/ab/empty",
                                            "sets/vol1/0000000001-F1.json", "top"}));
  auto chunks = store_->List("chunks/");
  ASSERT_TRUE(chunks.ok());
  EXPECT_EQ(chunks->size(), 2u);
  EXPECT_EQ((*chunks)[1].retain_until_unix_ns, retain + kDayNs);
  EXPECT_TRUE(store_->List("nothing/")->empty());

  // On disk: read-only files at their key's path.
  struct stat st;
  ASSERT_EQ(::stat(ObjectPath("chunks/ab/abcdef").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), big.size());
  EXPECT_TRUE(fs::is_empty(dir_ + "/tmp"));

  auto missing = store_->Get("nope");
  EXPECT_TRUE(missing.status().IsNotFound());
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  EXPECT_TRUE(store_->Head("nope").status().IsNotFound());

  // The index is rebuilt from the audit log.
  Reopen();
  EXPECT_EQ(store_->List("")->size(), 4u);
  EXPECT_EQ(store_->Head("chunks/ab/abcdef")->checksum, head->checksum);
  EXPECT_EQ(store_->Head("chunks/ab/abcdef")->created_unix_ns, head->created_unix_ns);
  EXPECT_EQ(*store_->Get("chunks/ab/abcdef"), big);
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  EXPECT_EQ(report.objects, 4u);
  EXPECT_EQ(report.bytes, big.size() + 9 + 9);
}

TEST_F(WormStoreTest, GetRangeReadsPartsOfAnObject) {
  const int64_t retain = clock_.now() + 7 * kDayNs;
  const auto big = PatternBytes(11, (1 << 20) + 4097);  // large: written around the page cache
  ASSERT_OK(store_->Put("packs/p1", big, retain));
  for (auto [offset, length] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 1}, {0, big.size()}, {4095, 2}, {big.size() - 1, 1}, {123'457, 300'001}}) {
    auto got = store_->GetRange("packs/p1", offset, length);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(std::equal(got->begin(), got->end(), big.begin() + offset))
        << offset << "+" << length;
    EXPECT_EQ(got->size(), length);
  }
  for (auto [offset, length] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 0}, {0, big.size() + 1}, {big.size(), 1}, {~uint64_t{0}, 2}}) {
    auto bad = store_->GetRange("packs/p1", offset, length);
    EXPECT_TRUE(bad.status().IsInvalidArgument()) << offset << "+" << length;
    EXPECT_NE(bad.status().message().find("packs/p1"), std::string::npos);
  }
  EXPECT_TRUE(store_->GetRange("nope", 0, 1).status().IsNotFound());
  // A file cut short behind the store's back: Corruption, never short data.
  ASSERT_EQ(::chmod(ObjectPath("packs/p1").c_str(), 0644), 0);
  ASSERT_EQ(::truncate(ObjectPath("packs/p1").c_str(), 1000), 0);
  EXPECT_TRUE(store_->GetRange("packs/p1", 0, 10).status().IsCorruption());
}

// Objects written around the page cache (O_DIRECT) and the buffered fallback
// where the file system refuses it read back alike, whatever their size.
TEST_F(WormStoreTest, ObjectsOfEverySizeRoundTripAfterReopen) {
  const int64_t retain = clock_.now() + 7 * kDayNs;
  const std::vector<size_t> sizes = {1, 4095, 4096, 65535, 65536, 65537, 1 << 20, (1 << 20) + 1};
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_OK(store_->Put("o/" + std::to_string(i), PatternBytes(i, sizes[i]), retain));
  }
  Reopen();
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto got = store_->Get("o/" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, PatternBytes(i, sizes[i])) << sizes[i];
    struct stat st;
    ASSERT_EQ(::stat(ObjectPath("o/" + std::to_string(i)).c_str(), &st), 0);
    EXPECT_EQ(static_cast<size_t>(st.st_size), sizes[i]);
  }
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
}

TEST_F(WormStoreTest, RetainAtLeastExtendsOnlyWhatIsShorterAllOrNothing) {
  ASSERT_OK(Put("a", "a", 10));
  ASSERT_OK(Put("b", "b", 40));
  ASSERT_OK(Put("c", "c", 10));
  const int64_t until = clock_.now() + 20 * kDayNs;
  const size_t entries_before = AuditEntries().size();
  // A missing key: refused, nothing extended.
  const std::vector<std::string> with_missing = {"a", "nope", "c"};
  Status missing = store_->RetainAtLeast(with_missing, until);
  EXPECT_TRUE(missing.IsNotFound()) << missing.ToString();
  EXPECT_NE(missing.message().find("nope"), std::string::npos);
  EXPECT_EQ(store_->Head("a")->retain_until_unix_ns, clock_.now() + 10 * kDayNs);
  EXPECT_TRUE(store_->RetainAtLeast(std::vector<std::string>{"a"}, clock_.now())
                  .IsInvalidArgument());

  const std::vector<std::string> keys = {"a", "b", "c", "a"};
  ASSERT_OK(store_->RetainAtLeast(keys, until));
  EXPECT_EQ(store_->Head("a")->retain_until_unix_ns, until);
  EXPECT_EQ(store_->Head("b")->retain_until_unix_ns, clock_.now() + 40 * kDayNs);  // left alone
  EXPECT_EQ(store_->Head("c")->retain_until_unix_ns, until);
  // One "extend" entry per extended object (a twice in the list: once).
  const std::vector<json> entries = AuditEntries();
  size_t extends = 0;
  for (size_t i = entries_before; i < entries.size(); ++i) {
    if (entries[i]["op"] == "extend" && entries[i]["result"] == "ok") ++extends;
  }
  EXPECT_EQ(extends, 2u);
  Reopen();  // the log replays to the same retention
  EXPECT_EQ(store_->Head("a")->retain_until_unix_ns, until);
  EXPECT_EQ(store_->Head("c")->retain_until_unix_ns, until);
  EXPECT_TRUE(VerifyNow().ok());
}

// ---- Refusals -------------------------------------------------------------

TEST_F(WormStoreTest, OverwriteIsRefused) {
  ASSERT_OK(Put("a/obj", "first"));
  Status s = Put("a/obj", "second");
  EXPECT_TRUE(s.IsAlreadyExists()) << s.ToString();
  EXPECT_NE(s.message().find("a/obj"), std::string::npos) << s.ToString();
  EXPECT_EQ(GetString("a/obj"), "first");
  Reopen();
  EXPECT_TRUE(Put("a/obj", "third").IsAlreadyExists());
  EXPECT_EQ(GetString("a/obj"), "first");
  EXPECT_TRUE(fs::is_empty(dir_ + "/tmp"));
}

TEST_F(WormStoreTest, DeleteIsAlwaysRefused) {
  ASSERT_OK(Put("locked", "data", /*retain_days=*/2));
  Status s = store_->Delete("locked");
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("locked"), std::string::npos);
  EXPECT_NE(s.message().find("2025-01-03T00:00:00Z"), std::string::npos) << s.ToString();
  EXPECT_EQ(GetString("locked"), "data");

  // Retention over: still refused, the expiry pass alone removes it.
  clock_.Advance(3 * kDayNs);
  s = store_->Delete("locked");
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("removed by the expiry pass only"), std::string::npos);
  EXPECT_NE(s.message().find("locked"), std::string::npos);
  EXPECT_EQ(GetString("locked"), "data");

  ASSERT_TRUE(store_->Expire().ok());
  s = store_->Delete("locked");
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  s = store_->Delete("never-was");
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("never-was"), std::string::npos);
}

TEST_F(WormStoreTest, RetentionExtendsButNeverShortens) {
  ASSERT_OK(Put("obj", "x", 10));
  const int64_t until = clock_.now() + 10 * kDayNs;

  Status s = store_->ExtendRetention("obj", until - kDayNs);
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("obj"), std::string::npos);
  EXPECT_NE(s.message().find("2025-01-11T00:00:00Z"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(std::to_string(until)), std::string::npos) << s.ToString();
  EXPECT_EQ(store_->Head("obj")->retain_until_unix_ns, until);

  ASSERT_OK(store_->ExtendRetention("obj", until));  // the same time: no change
  ASSERT_OK(store_->ExtendRetention("obj", until + 5 * kDayNs));
  EXPECT_EQ(store_->Head("obj")->retain_until_unix_ns, until + 5 * kDayNs);
  Reopen();
  EXPECT_EQ(store_->Head("obj")->retain_until_unix_ns, until + 5 * kDayNs);
  EXPECT_TRUE(store_->ExtendRetention("obj", until).IsPermissionDenied());

  // Past its retention, an extension must still lie in the future.
  clock_.Advance(20 * kDayNs);
  s = store_->ExtendRetention("obj", clock_.now() - kSecondNs);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("future"), std::string::npos);
  ASSERT_OK(store_->ExtendRetention("obj", clock_.now() + kDayNs));

  s = store_->ExtendRetention("ghost", clock_.now() + kDayNs);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("ghost"), std::string::npos);
}

TEST_F(WormStoreTest, RetentionInThePastIsRefused) {
  for (int64_t until : {clock_.now(), clock_.now() - 1, int64_t{0}, int64_t{-5}}) {
    Status s = store_->Put("k", Bytes("x"), until);
    EXPECT_TRUE(s.IsInvalidArgument()) << until << ": " << s.ToString();
    EXPECT_NE(s.message().find("object k"), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find("future"), std::string::npos) << s.ToString();
  }
  EXPECT_TRUE(store_->Head("k").status().IsNotFound());
  EXPECT_FALSE(fs::exists(ObjectPath("k")));
  ASSERT_OK(store_->Put("k", Bytes("x"), clock_.now() + 1));  // refusals did not burn the key
}

TEST_F(WormStoreTest, BadKeysAreRefusedEverywhere) {
  const std::vector<std::string> bad = {"",
                                        "/abs",
                                        "trailing/",
                                        "a//b",
                                        ".",
                                        "..",
                                        "a/./b",
                                        "a/../b",
                                        "../escape",
                                        "sp ace",
                                        "tab\tkey",
                                        "new\nline",
                                        "q\"uote",
                                        "back\\sl",
                                        "star*",
                                        "colon:",
                                        "utf8-\xc3\xa9",
                                        "bad-utf8-\xff",
                                        std::string(513, 'a'),
                                        std::string(256, 'c'),
                                        std::string("nul\0byte", 8)};
  for (const auto& key : bad) {
    SCOPED_TRACE(key);
    Status put = store_->Put(key, Bytes("x"), clock_.now() + kDayNs);
    EXPECT_TRUE(put.IsInvalidArgument()) << put.ToString();
    EXPECT_NE(put.message().find("bad key"), std::string::npos) << put.ToString();
    EXPECT_TRUE(store_->Get(key).status().IsInvalidArgument());
    EXPECT_TRUE(store_->Head(key).status().IsInvalidArgument());
    EXPECT_TRUE(store_->Delete(key).IsInvalidArgument());
    EXPECT_TRUE(store_->ExtendRetention(key, clock_.now() + kDayNs).IsInvalidArgument());
  }
  EXPECT_TRUE(store_->List("")->empty());
  EXPECT_TRUE(fs::is_empty(dir_ + "/objects"));

  const std::string longest = std::string(254, 'a') + "/" + std::string(255, 'b') + "/c";
  ASSERT_EQ(longest.size(), 512u);
  for (const std::string& key : {longest, std::string("a"), std::string("A.b_c-9/.hidden/x..y")}) {
    ASSERT_OK(store_->Put(key, Bytes("ok"), clock_.now() + kDayNs));
    EXPECT_EQ(GetString(key), "ok");
  }
  // The refusals were logged and the log still replays.
  Reopen();
  EXPECT_EQ(store_->List("")->size(), 3u);
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
}

TEST_F(WormStoreTest, KeyThatIsAlsoAFolderIsRefused) {
  ASSERT_OK(Put("a/b", "file"));
  Status s = Put("a/b/c", "below a file");
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("a/b/c"), std::string::npos);
  ASSERT_OK(Put("x/y/z", "deep"));
  s = Put("x/y", "a folder");
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  s = Put("x", "a folder");
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  ASSERT_OK(Put("x/yy", "sibling"));
  ASSERT_OK(Put("a/bc", "sibling"));
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
}

// ---- Expiry ----------------------------------------------------------------

TEST_F(WormStoreTest, ExpiryPassAtSimulatedTimes) {
  ASSERT_OK(Put("one-day", "1", 1));
  ASSERT_OK(Put("two-days", "22", 2));
  ASSERT_OK(Put("three-days", "333", 3));
  ASSERT_OK(Put("extended", "4444", 1));
  ASSERT_OK(store_->ExtendRetention("extended", clock_.now() + 5 * kDayNs));

  clock_.Advance(kDayNs - 1);  // one ns before the first retention ends
  auto pass = store_->Expire();
  ASSERT_TRUE(pass.ok()) << pass.status().ToString();
  EXPECT_EQ(pass->objects, 0u);
  EXPECT_EQ(store_->List("")->size(), 4u);

  clock_.Advance(1);  // retention over at exactly retain-until
  pass = store_->Expire();
  ASSERT_TRUE(pass.ok());
  EXPECT_EQ(pass->objects, 1u);
  EXPECT_EQ(pass->bytes, 1u);
  EXPECT_TRUE(store_->Head("one-day").status().IsNotFound());
  EXPECT_NE(store_->Get("one-day").status().message().find("expired"), std::string::npos);
  EXPECT_FALSE(fs::exists(ObjectPath("one-day")));
  EXPECT_TRUE(store_->Head("extended").ok());

  clock_.Advance(2 * kDayNs + kSecondNs);  // day 3: two more go
  pass = store_->Expire();
  ASSERT_TRUE(pass.ok());
  EXPECT_EQ(pass->objects, 2u);
  EXPECT_EQ(pass->bytes, 5u);
  EXPECT_EQ(GetString("extended"), "4444");

  // The state survives a reopen, and expired keys stay used.
  Reopen();
  auto left = store_->List("");
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].key, "extended");
  Status again = Put("two-days", "new");
  EXPECT_TRUE(again.IsAlreadyExists()) << again.ToString();
  EXPECT_NE(again.message().find("never written again"), std::string::npos);
  EXPECT_EQ(store_->Expire()->objects, 0u);

  clock_.Advance(3 * kDayNs);  // day 6
  EXPECT_EQ(store_->Expire()->objects, 1u);
  EXPECT_TRUE(store_->List("")->empty());
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  EXPECT_EQ(report.objects, 0u);
}

TEST_F(WormStoreTest, ExpiredButNotYetRemovedIsStillThereAndVerifiesClean) {
  ASSERT_OK(Put("old", "bytes", 1));
  clock_.Advance(10 * kDayNs);
  EXPECT_EQ(GetString("old"), "bytes");
  EXPECT_TRUE(store_->Head("old").ok());
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  EXPECT_EQ(report.objects, 1u);
}

TEST_F(WormStoreTest, RemoveStoreRefusedWhileLockedAllowedAfterExpire) {
  ASSERT_OK(Put("a", "1", 1));
  ASSERT_OK(Put("b/c", "2", 4));
  Close();
  Status s = RemoveDirStore(dir_, clock_.options());
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("2 objects"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("2025-01-05T00:00:00Z"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(dir_), std::string::npos) << s.ToString();
  EXPECT_TRUE(fs::exists(ObjectPath("b/c")));

  clock_.Advance(2 * kDayNs);
  s = RemoveDirStore(dir_, clock_.options());
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("1 object "), std::string::npos) << s.ToString();

  clock_.Advance(3 * kDayNs);
  Reopen();
  EXPECT_EQ(store_->Expire()->objects, 2u);
  Close();
  ASSERT_OK(RemoveDirStore(dir_, clock_.options()));
  EXPECT_FALSE(fs::exists(dir_));
  EXPECT_TRUE(fs::is_empty(scratch_.path()));
}

// ---- Audit log --------------------------------------------------------------

TEST_F(WormStoreTest, AuditLogRecordsEveryOperationInAHashChain) {
  ASSERT_OK(Put("obj", "data", 2));
  EXPECT_FALSE(Put("obj", "again").ok());                            // overwrite
  EXPECT_FALSE(store_->Put("late", Bytes("x"), clock_.now()).ok());  // retention in the past
  EXPECT_FALSE(store_->Put("bad key", Bytes("x"), clock_.now() + 1).ok());
  EXPECT_FALSE(store_->Delete("obj").ok());                                  // locked
  EXPECT_FALSE(store_->ExtendRetention("obj", clock_.now() + kDayNs).ok());  // shorten
  ASSERT_OK(store_->ExtendRetention("obj", clock_.now() + 3 * kDayNs));
  clock_.Advance(4 * kDayNs);
  EXPECT_FALSE(store_->Delete("obj").ok());  // expired: expiry pass only
  ASSERT_TRUE(store_->Expire().ok());
  EXPECT_FALSE(store_->Delete("obj").ok());  // gone
  Close();
  EXPECT_FALSE(RemoveDirStore(scratch_.File("nothing-here")).ok());

  std::vector<std::pair<std::string, std::string>> expected = {
      {"create", "ok"},
      {"put", "ok"},
      {"put", "AlreadyExists"},
      {"put", "InvalidArgument"},
      {"put", "InvalidArgument"},
      {"delete", "PermissionDenied"},
      {"extend", "PermissionDenied"},
      {"extend", "ok"},
      {"delete", "InvalidArgument"},
      {"expire", "ok"},
      {"expire_done", "ok"},
      {"delete", "NotFound"},
  };
  const std::vector<std::string> lines = ReadLines(LogPath());
  ASSERT_EQ(lines.size(), expected.size()) << ReadFile(LogPath());
  std::string prev = Sha256HexOf(ReadFile(dir_ + "/store.json"));
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE(lines[i]);
    json j = json::parse(lines[i]);
    EXPECT_EQ(j["seq"], i + 1);
    EXPECT_EQ(j["op"], expected[i].first);
    EXPECT_EQ(j["result"], expected[i].second);
    EXPECT_EQ(j["prev_sha256"], prev);
    if (expected[i].second != "ok") {
      EXPECT_FALSE(j["message"].get<std::string>().empty());
    }
    prev = Sha256HexOf(lines[i]);
  }
  json put = json::parse(lines[1]);
  EXPECT_EQ(put["key"], "obj");
  EXPECT_EQ(put["size_bytes"], 4);
  EXPECT_EQ(put["xxh3_128"], Xxh128HexOf("data"));
  EXPECT_EQ(put["retain_until_unix_ns"], kStartUnixNs + 2 * kDayNs);
  EXPECT_EQ(put["created_unix_ns"], kStartUnixNs);
  EXPECT_EQ(json::parse(lines[3])["key"], "late");
  EXPECT_EQ(json::parse(lines[4])["key"], "bad key");
  EXPECT_EQ(json::parse(lines[6])["previous_retain_until_unix_ns"], kStartUnixNs + 2 * kDayNs);

  Reopen();
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  EXPECT_EQ(report.head_sha256, prev);
}

// ---- Tamper detection -------------------------------------------------------

class WormTamperTest : public WormStoreTest {
 protected:
  void SetUp() override {
    WormStoreTest::SetUp();
    ASSERT_OK(Put("sets/v/1.json", "manifest one"));
    ASSERT_OK(Put("chunks/aa/1", std::string(1000, 'a')));
    ASSERT_OK(Put("chunks/bb/2", std::string(2000, 'b')));
    ASSERT_OK(Put("chunks/cc/3", std::string(3000, 'c')));
    WormVerifyReport clean = VerifyNow();
    ASSERT_TRUE(clean.ok()) << Describe(clean);
    ASSERT_EQ(clean.objects, 4u);
  }
  void MakeWritable(const std::string& path) {
    fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  }
};

TEST_F(WormTamperTest, RewrittenObject) {
  const std::string path = ObjectPath("chunks/bb/2");
  MakeWritable(path);
  std::string bytes = ReadFile(path);
  bytes[1234] = 'X';
  WriteFile(path, bytes);
  Reopen();
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "chunks/bb/2", "rewritten")) << Describe(report);
  EXPECT_TRUE(HasProblem(report, "chunks/bb/2", "no longer read-only")) << Describe(report);
  EXPECT_EQ(report.problems.size(), 2u) << Describe(report);
  auto got = store_->Get("chunks/bb/2");
  EXPECT_TRUE(got.status().IsCorruption()) << got.status().ToString();
  EXPECT_NE(got.status().message().find("chunks/bb/2"), std::string::npos);
  EXPECT_EQ(GetString("chunks/aa/1"), std::string(1000, 'a'));
}

TEST_F(WormTamperTest, TruncatedAndGrownObjects) {
  MakeWritable(ObjectPath("chunks/aa/1"));
  fs::resize_file(ObjectPath("chunks/aa/1"), 999);
  MakeWritable(ObjectPath("chunks/cc/3"));
  fs::resize_file(ObjectPath("chunks/cc/3"), 3001);
  WormVerifyReport report = VerifyNow();  // while open
  EXPECT_TRUE(HasProblem(report, "chunks/aa/1", "truncated (999 bytes, expected 1000)"))
      << Describe(report);
  EXPECT_TRUE(HasProblem(report, "chunks/cc/3", "grown")) << Describe(report);
  EXPECT_TRUE(store_->Get("chunks/aa/1").status().IsCorruption());
  EXPECT_TRUE(store_->Get("chunks/cc/3").status().IsCorruption());
}

TEST_F(WormTamperTest, RemovedObject) {
  fs::remove(ObjectPath("sets/v/1.json"));
  Reopen();  // a removed object is not mistaken for an interrupted put
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "sets/v/1.json", "removed")) << Describe(report);
  EXPECT_EQ(report.problems.size(), 1u) << Describe(report);
  auto got = store_->Get("sets/v/1.json");
  EXPECT_TRUE(got.status().IsCorruption()) << got.status().ToString();
  EXPECT_TRUE(store_->Head("sets/v/1.json").ok());  // the log still says it exists
}

TEST_F(WormTamperTest, AddedFiles) {
  WriteFile(ObjectPath("chunks/aa/planted"), "evil");
  WriteFile(ObjectPath("new/folder/file"), "evil too");
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "chunks/aa/planted", "added (4 bytes)")) << Describe(report);
  EXPECT_TRUE(HasProblem(report, "new/folder/file", "added")) << Describe(report);
  EXPECT_EQ(report.problems.size(), 2u) << Describe(report);
  // A Put never writes over a planted file.
  Status s = Put("chunks/aa/planted", "mine");
  EXPECT_TRUE(s.IsAlreadyExists()) << s.ToString();
  EXPECT_EQ(ReadFile(ObjectPath("chunks/aa/planted")), "evil");
}

TEST_F(WormTamperTest, EditedAuditLine) {
  Close();
  std::vector<std::string> lines = ReadLines(LogPath());
  ASSERT_EQ(lines.size(), 5u);
  // Line 3 puts chunks/aa/1: shorten its retention by hand.
  json j = json::parse(lines[2]);
  ASSERT_EQ(j["key"], "chunks/aa/1");
  const std::string from = std::to_string(j["retain_until_unix_ns"].get<int64_t>());
  const std::string to = std::to_string(kStartUnixNs + kDayNs);
  ASSERT_EQ(from.size(), to.size());
  lines[2].replace(lines[2].find(from), from.size(), to);
  WriteLines(LogPath(), lines);

  Reopen();
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "audit.log", "line 3")) << Describe(report);
  EXPECT_TRUE(HasProblem(report, "audit.log", "edited")) << Describe(report);
  EXPECT_EQ(report.problems.size(), 1u) << Describe(report);
  // The edit cannot be used to delete anything.
  clock_.Advance(2 * kDayNs);
  auto pass = store_->Expire();
  EXPECT_TRUE(pass.status().IsCorruption()) << pass.status().ToString();
  EXPECT_TRUE(fs::exists(ObjectPath("chunks/aa/1")));
  clock_.Advance(100 * kDayNs);
  Close();
  Status removed = RemoveDirStore(dir_, clock_.options());
  EXPECT_TRUE(removed.IsCorruption()) << removed.ToString();
  EXPECT_TRUE(fs::exists(ObjectPath("chunks/aa/1")));
}

TEST_F(WormTamperTest, DeletedAuditLine) {
  Close();
  std::vector<std::string> lines = ReadLines(LogPath());
  lines.erase(lines.begin() + 3);  // line 4: the put of chunks/bb/2
  WriteLines(LogPath(), lines);
  Reopen();
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "audit.log", "line 4")) << Describe(report);
  EXPECT_TRUE(HasProblem(report, "audit.log", "removed")) << Describe(report);
  // Its object is now a file the history does not explain.
  EXPECT_TRUE(HasProblem(report, "chunks/bb/2", "added")) << Describe(report);
}

TEST_F(WormTamperTest, InsertedAuditLine) {
  Close();
  std::vector<std::string> lines = ReadLines(LogPath());
  lines.insert(lines.begin() + 2, lines[1]);  // a replayed copy of line 2
  WriteLines(LogPath(), lines);
  Reopen();
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "audit.log", "line 3")) << Describe(report);
  EXPECT_TRUE(HasProblem(report, "audit.log", "second put")) << Describe(report);
}

TEST_F(WormTamperTest, LogChangedWhileOpen) {
  // The last line edited: only the head the store holds can tell.
  std::vector<std::string> lines = ReadLines(LogPath());
  std::string& last = lines.back();
  last.replace(last.find("chunks/cc/3"), 11, "chunks/cc/4");
  WriteLines(LogPath(), lines);
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "audit.log", "line 5 does not match the last line"))
      << Describe(report);

  // The last line dropped.
  lines.pop_back();
  WriteLines(LogPath(), lines);
  report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "audit.log", "lines removed")) << Describe(report);
}

TEST_F(WormTamperTest, EditedStoreJson) {
  Close();
  const std::string path = dir_ + "/store.json";
  MakeWritable(path);
  std::string text = ReadFile(path);
  text.replace(text.find("\"zstd_level\": 1"), 15, "\"zstd_level\": 9");
  WriteFile(path, text);
  Reopen();
  EXPECT_EQ(store_->config().zstd_level, 9);
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "audit.log", "store.json")) << Describe(report);
  EXPECT_TRUE(HasProblem(report, "audit.log", "line 1")) << Describe(report);
}

TEST_F(WormTamperTest, ModeAndSymlinkChanges) {
  fs::permissions(ObjectPath("chunks/aa/1"), fs::perms::owner_write, fs::perm_options::add);
  fs::remove(ObjectPath("chunks/bb/2"));
  fs::create_symlink(ObjectPath("chunks/cc/3"), ObjectPath("chunks/bb/2"));
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "chunks/aa/1", "no longer read-only (mode 0644)"))
      << Describe(report);
  EXPECT_TRUE(HasProblem(report, "chunks/bb/2", "symbolic link")) << Describe(report);
  EXPECT_EQ(report.problems.size(), 2u) << Describe(report);
  EXPECT_TRUE(store_->Get("chunks/bb/2").status().IsCorruption());
}

// Anyone can append a well-chained line; a forged "expire" for a locked object
// must not make the store delete it.
TEST_F(WormTamperTest, ForgedExpireLineDeletesNothing) {
  Close();
  std::vector<std::string> lines = ReadLines(LogPath());
  json forged;
  forged["seq"] = lines.size() + 1;
  forged["op"] = "expire";
  forged["time_unix_ns"] = clock_.now();
  forged["key"] = "chunks/aa/1";
  forged["size_bytes"] = 1000;
  forged["retain_until_unix_ns"] = clock_.now() + 30 * kDayNs;
  forged["result"] = "ok";
  forged["prev_sha256"] = Sha256HexOf(lines.back());
  lines.push_back(forged.dump());
  // nlohmann sorts members: put seq first and prev_sha256 last as the store does.
  std::string& line = lines.back();
  const std::string prev = ",\"prev_sha256\":\"" + Sha256HexOf(lines[lines.size() - 2]) + "\"";
  line.erase(line.find(prev), prev.size());
  const std::string seq = "\"seq\":" + std::to_string(lines.size()) + ",";
  line.erase(line.find(seq), seq.size());
  line = "{" + seq + line.substr(1, line.size() - 2) + prev + "}";
  WriteLines(LogPath(), lines);

  Reopen();
  EXPECT_TRUE(fs::exists(ObjectPath("chunks/aa/1")));
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "audit.log", "before its retention ended")) << Describe(report);
  EXPECT_TRUE(store_->Expire().status().IsCorruption());
  EXPECT_TRUE(fs::exists(ObjectPath("chunks/aa/1")));
}

// ---- Crash recovery -----------------------------------------------------------

TEST_F(WormStoreTest, ReopenCompletesALoggedPutFromItsTempFile) {
  ASSERT_OK(Put("sets/v/9.json", "logged, not renamed"));
  ASSERT_OK(Put("other", "fine"));
  Close();
  // The crash: the put's line is in the log, its file still under tmp/.
  fs::rename(ObjectPath("sets/v/9.json"), TempPath("sets/v/9.json"));
  fs::remove(dir_ + "/objects/sets/v");
  Reopen();
  EXPECT_EQ(GetString("sets/v/9.json"), "logged, not renamed");
  EXPECT_TRUE(fs::is_empty(dir_ + "/tmp"));
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  const auto entries = AuditEntries();
  ASSERT_FALSE(entries.empty());
  EXPECT_EQ(entries.back()["op"], "recover");
  EXPECT_EQ(entries.back()["action"], "completed put");
  EXPECT_EQ(entries.back()["key"], "sets/v/9.json");
}

TEST_F(WormStoreTest, ReopenDeletesUnloggedAndBadTempFiles) {
  ASSERT_OK(Put("kept", "ok"));
  ASSERT_OK(Put("damaged", "right bytes"));
  Close();
  // A put that crashed before its log line, and random junk.
  WriteFile(TempPath("never-logged"), "half a put");
  WriteFile(dir_ + "/tmp/junk", "junk");
  // A logged put whose temp file holds the wrong bytes: not completed.
  fs::rename(ObjectPath("damaged"), TempPath("damaged"));
  WriteFile(TempPath("damaged"), "wrong bytes");
  Reopen();
  EXPECT_TRUE(fs::is_empty(dir_ + "/tmp"));
  EXPECT_TRUE(store_->Head("never-logged").status().IsNotFound());
  ASSERT_OK(Put("never-logged", "now for real"));
  EXPECT_EQ(GetString("never-logged"), "now for real");
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "damaged", "removed")) << Describe(report);
  EXPECT_EQ(report.problems.size(), 1u) << Describe(report);
  int removed_temps = 0;
  for (const auto& e : AuditEntries()) {
    if (e["op"] == "recover" && e["action"] == "removed temp file") ++removed_temps;
  }
  EXPECT_EQ(removed_temps, 3);
}

TEST_F(WormStoreTest, ReopenCutsATornLastLine) {
  ASSERT_OK(Put("a", "1"));
  Close();
  const std::string before = ReadFile(LogPath());
  {
    std::ofstream out(LogPath(), std::ios::binary | std::ios::app);
    out << "{\"seq\":3,\"op\":\"put\",\"key\":\"b\",\"si";  // a crash mid-append
  }
  Reopen();
  EXPECT_EQ(ReadFile(LogPath()).substr(0, before.size()), before);
  const auto entries = AuditEntries();
  EXPECT_EQ(entries.back()["action"], "cut a torn last line");
  EXPECT_EQ(entries.back()["seq"], 3);
  ASSERT_OK(Put("b", "2"));
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  Reopen();
  EXPECT_EQ(store_->List("")->size(), 2u);
}

TEST_F(WormStoreTest, ReopenFinishesAnInterruptedExpiryPass) {
  ASSERT_OK(Put("x", "expiring", 1));
  ASSERT_OK(Put("y", "staying", 10));
  const std::string saved = ReadFile(ObjectPath("x"));
  clock_.Advance(2 * kDayNs);
  ASSERT_EQ(store_->Expire()->objects, 1u);
  Close();
  // The crash: "expire x" logged, the file not yet gone, no "expire_done".
  std::vector<std::string> lines = ReadLines(LogPath());
  ASSERT_EQ(json::parse(lines.back())["op"], "expire_done");
  lines.pop_back();
  WriteLines(LogPath(), lines);
  WriteFile(ObjectPath("x"), saved);
  Reopen();
  EXPECT_FALSE(fs::exists(ObjectPath("x")));
  EXPECT_TRUE(store_->Head("x").status().IsNotFound());
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  EXPECT_EQ(AuditEntries().back()["op"], "expire_done");
}

TEST_F(WormStoreTest, ExpiredObjectBroughtBackIsReported) {
  ASSERT_OK(Put("x", "expiring", 1));
  const std::string saved = ReadFile(ObjectPath("x"));
  clock_.Advance(2 * kDayNs);
  ASSERT_EQ(store_->Expire()->objects, 1u);
  WriteFile(ObjectPath("x"), saved);
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(HasProblem(report, "x", "expired")) << Describe(report);
  EXPECT_TRUE(store_->Get("x").status().IsNotFound());
}

// ---- Verify progress ---------------------------------------------------------

TEST_F(WormStoreTest, VerifyReportsProgressOverBytesAndCancels) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK(store_->Put("obj/" + std::to_string(i), PatternBytes(i, (1 << 20) + i * 1000),
                          clock_.now() + kDayNs));
  }
  uint64_t last_done = 0, total = 0, calls = 0;
  auto report = store_->Verify([&](uint64_t done, uint64_t t) {
    EXPECT_GE(done, last_done);
    EXPECT_LE(done, t);
    last_done = done;
    total = t;
    ++calls;
    return true;
  });
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << Describe(*report);
  EXPECT_EQ(total, 5u * (1 << 20) + 10000);
  EXPECT_EQ(last_done, total);
  EXPECT_EQ(report->bytes, total);
  EXPECT_GE(calls, 6u);
  EXPECT_EQ(report->head_sha256, Sha256HexOf(ReadLines(LogPath()).back()));

  auto cancelled = store_->Verify([](uint64_t done, uint64_t) { return done < (2 << 20); });
  EXPECT_TRUE(cancelled.status().IsCancelled()) << cancelled.status().ToString();
}

// ---- Concurrency ----------------------------------------------------------

TEST_F(WormStoreTest, ConcurrentPutsFromFourThreads) {
  const uint64_t seed = TestSeed(20250101);
  constexpr int kThreads = 4;
  const int per_thread = 40 * static_cast<int>(::snapdisk::testing::TestScale());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed + t);
      for (int i = 0; i < per_thread; ++i) {
        const std::string key = "chunks/" + std::to_string(t) + "/" + std::to_string(i);
        const auto data = PatternBytes(seed * 1000 + t * 100 + i, rng() % (256 << 10));
        Status s = store_->Put(key, data, clock_.now() + kDayNs);
        if (!s.ok()) {
          ADD_FAILURE() << s.ToString();
          ++failures;
        }
        // Read back something an earlier put of this thread wrote.
        if (i > 0) {
          const std::string back = "chunks/" + std::to_string(t) + "/" + std::to_string(rng() % i);
          if (!store_->Get(back).ok() || !store_->Head(back).ok()) ++failures;
        }
      }
    });
  }
  // All four race for the same key: exactly one wins.
  std::atomic<int> winners{0}, already{0};
  std::vector<std::thread> racers;
  for (int t = 0; t < kThreads; ++t) {
    racers.emplace_back([&, t] {
      Status s = store_->Put("race", Bytes("racer " + std::to_string(t)), clock_.now() + kDayNs);
      if (s.ok()) ++winners;
      if (s.IsAlreadyExists()) ++already;
    });
  }
  for (auto& th : threads) th.join();
  for (auto& th : racers) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(winners.load(), 1);
  EXPECT_EQ(already.load(), kThreads - 1);
  EXPECT_EQ(store_->List("chunks/")->size(), static_cast<size_t>(kThreads * per_thread));
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  Reopen();
  EXPECT_EQ(store_->List("")->size(), static_cast<size_t>(kThreads * per_thread + 1));
  report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  EXPECT_EQ(report.objects, static_cast<uint64_t>(kThreads * per_thread + 1));
}

TEST_F(WormStoreTest, VerifyAndExpireRunBesidePuts) {
  std::atomic<bool> stop{false};
  std::thread putter([&] {
    for (int i = 0; !stop.load(); ++i) {
      ASSERT_OK(store_->Put("p/" + std::to_string(i), PatternBytes(i, 4096),
                            clock_.now() + (i % 3 + 2) * kDayNs));
    }
  });
  for (int round = 0; round < 5; ++round) {
    WormVerifyReport report = VerifyNow();
    EXPECT_TRUE(report.ok()) << Describe(report);
    clock_.Advance(kDayNs);
    ASSERT_TRUE(store_->Expire().ok());
  }
  stop = true;
  putter.join();
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
  Reopen();
  report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
}

// Not a benchmark: prints the rate the backup engine's pattern gets (two
// threads putting 1 MiB objects) as a smoke check that nothing is O(objects).
TEST_F(WormStoreTest, TwoThreadsPutOneMiBObjects) {
  constexpr int kPerThread = 24;
  const auto data = PatternBytes(1, 1 << 20);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto copy = data;
        copy[0] = static_cast<std::byte>(t);
        copy[1] = static_cast<std::byte>(i);
        ASSERT_OK(store_->Put("chunks/" + std::to_string(t) + "/" + std::to_string(i), copy,
                              clock_.now() + kDayNs));
      }
    });
  }
  for (auto& th : threads) th.join();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[rate] %d x 1 MiB puts from 2 threads: %.1f MB/s\n", 2 * kPerThread,
              2 * kPerThread * 1.048576 / secs);
  EXPECT_EQ(store_->List("")->size(), 2u * kPerThread);
}

// ---- Randomized model test ---------------------------------------------------

TEST_F(WormStoreTest, RandomOperationsMatchAModel) {
  const uint64_t seed = TestSeed(424242);
  std::mt19937_64 rng(seed);
  struct Model {
    std::string data;
    int64_t retain_until_unix_ns;
  };
  std::map<std::string, Model> live;
  std::set<std::string> gone;
  const std::vector<std::string> keys = {"a", "b", "c/d", "c/e", "f/g/h", "i", "j", "k/l"};
  const int steps = 400 * static_cast<int>(::snapdisk::testing::TestScale());
  for (int step = 0; step < steps; ++step) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " step " + std::to_string(step));
    const std::string& key = keys[rng() % keys.size()];
    const int64_t now = clock_.now();
    switch (rng() % 8) {
      case 0:
      case 1: {  // put
        const int64_t until = now + static_cast<int64_t>(rng() % (4 * kDayNs)) - kDayNs / 2;
        const std::string data = std::to_string(rng());
        Status s = store_->Put(key, Bytes(data), until);
        if (until <= now) {
          EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
        } else if (live.count(key) || gone.count(key)) {
          EXPECT_TRUE(s.IsAlreadyExists()) << s.ToString();
        } else {
          EXPECT_TRUE(s.ok()) << s.ToString();
          live[key] = {data, until};
        }
        break;
      }
      case 2: {  // extend
        const int64_t until = now + static_cast<int64_t>(rng() % (4 * kDayNs)) - kDayNs;
        Status s = store_->ExtendRetention(key, until);
        auto it = live.find(key);
        if (it == live.end()) {
          EXPECT_TRUE(s.IsNotFound()) << s.ToString();
        } else if (until < it->second.retain_until_unix_ns) {
          EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
        } else if (until <= now) {
          EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
        } else {
          EXPECT_TRUE(s.ok()) << s.ToString();
          it->second.retain_until_unix_ns = until;
        }
        break;
      }
      case 3: {  // delete
        Status s = store_->Delete(key);
        auto it = live.find(key);
        if (it == live.end()) {
          EXPECT_TRUE(s.IsNotFound()) << s.ToString();
        } else if (now < it->second.retain_until_unix_ns) {
          EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
        } else {
          EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
        }
        break;
      }
      case 4: {  // time passes; sometimes an expiry pass
        clock_.Advance(static_cast<int64_t>(rng() % (kDayNs / 2)));
        if (rng() % 2) {
          auto pass = store_->Expire();
          ASSERT_TRUE(pass.ok()) << pass.status().ToString();
          uint64_t expected = 0;
          for (auto it = live.begin(); it != live.end();) {
            if (it->second.retain_until_unix_ns <= clock_.now()) {
              gone.insert(it->first);
              it = live.erase(it);
              ++expected;
            } else {
              ++it;
            }
          }
          EXPECT_EQ(pass->objects, expected);
        }
        break;
      }
      case 5: {  // get and head
        auto got = store_->Get(key);
        auto head = store_->Head(key);
        auto it = live.find(key);
        if (it == live.end()) {
          EXPECT_TRUE(got.status().IsNotFound()) << got.status().ToString();
          EXPECT_TRUE(head.status().IsNotFound());
        } else {
          ASSERT_TRUE(got.ok()) << got.status().ToString();
          EXPECT_EQ(std::string(reinterpret_cast<const char*>(got->data()), got->size()),
                    it->second.data);
          ASSERT_TRUE(head.ok());
          EXPECT_EQ(head->retain_until_unix_ns, it->second.retain_until_unix_ns);
        }
        break;
      }
      case 6: {  // list
        auto all = store_->List("");
        ASSERT_TRUE(all.ok());
        std::vector<std::string> got_keys, want_keys;
        for (const auto& o : *all) got_keys.push_back(o.key);
        for (const auto& [k, m] : live) want_keys.push_back(k);
        EXPECT_EQ(got_keys, want_keys);
        break;
      }
      case 7:
        if (rng() % 8 == 0) Reopen();
        break;
    }
  }
  WormVerifyReport report = VerifyNow();
  EXPECT_TRUE(report.ok()) << Describe(report);
}

}  // namespace
}  // namespace snapdisk
