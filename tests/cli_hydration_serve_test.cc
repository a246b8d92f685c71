// Instant restores survive `snapdisk serve` stopping (tools/cli/hydration_resume.h):
// a volume left half-filled (a restore interrupted as a server stop or a crash
// leaves it) is attached to its store again when the server starts, and its
// fill goes on by itself as a job of the server (listed, cancellable) while
// NBD clients use the volume; SIGTERM and SIGKILL mid-fill lose nothing
// already written; a store that cannot be opened (missing, locked) leaves the
// volume unattached with one line in the log, pending blocks failing to read,
// until `restore resume`; backups and restores forwarded to the server share
// the store with the fill. Runs the real binary ($SNAPDISK_BIN).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine/pool_file.h"
#include "engine/volume.h"
#include "engine/worm_store.h"
#include "restore/lazy_restore.h"
#include "support/cli_test_support.h"
#include "support/serve_process.h"
#include "support/test_env.h"
#include "tools/cli/store_util.h"
#include "tools/nbd/nbd_protocol.h"

namespace snapdisk::cli {
namespace {

using nlohmann::json;
using testing::CliResult;
using testing::RunCli;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kVolumeBytes = 16 * kMiB;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The lines of `text` that contain `part`.
std::vector<std::string> LinesWith(const std::string& text, const std::string& part) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = text.substr(start, nl - start);
    if (Contains(line, part)) out.push_back(line);
    start = nl + 1;
  }
  return out;
}

// A synchronous NBD client over a Unix socket (simple replies): one request
// at a time.
class NbdClient {
 public:
  NbdClient(const std::string& socket_path, const std::string& name) {
    using namespace snapdisk::nbd;  // NOLINT
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return;
    std::byte greeting[18];
    if (!RecvAll(greeting, sizeof greeting)) return;
    std::vector<std::byte> m;
    MessageWriter w(m);
    w.U32(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    w.U64(kOptMagic);
    w.U32(kOptGo);
    w.U32(static_cast<uint32_t>(4 + name.size() + 2));
    w.U32(static_cast<uint32_t>(name.size()));
    w.Bytes(name);
    w.U16(0);
    if (!SendAll(m)) return;
    for (;;) {
      std::byte h[20];
      if (!RecvAll(h, sizeof h)) return;
      std::vector<std::byte> data(Load32(h + 16));
      if (!data.empty() && !RecvAll(data.data(), data.size())) return;
      const uint32_t type = Load32(h + 12);
      if (type == kRepAck) break;
      if (type != kRepInfo) return;
    }
    open_ = true;
  }
  ~NbdClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool open() const { return open_; }

  // The reply's NBD error (0: success); -1 when the connection broke.
  int64_t Read(uint64_t offset, uint32_t length, std::vector<std::byte>* out) {
    out->assign(length, std::byte{0});
    const int64_t error = Request(snapdisk::nbd::kCmdRead, offset, length, {});
    if (error == 0 && !RecvAll(out->data(), length)) return -1;
    return error;
  }
  int64_t Write(uint64_t offset, std::span<const std::byte> data) {
    return Request(snapdisk::nbd::kCmdWrite, offset, static_cast<uint32_t>(data.size()), data);
  }
  int64_t Flush() { return Request(snapdisk::nbd::kCmdFlush, 0, 0, {}); }

 private:
  int64_t Request(uint16_t command, uint64_t offset, uint32_t length,
                  std::span<const std::byte> payload) {
    using namespace snapdisk::nbd;  // NOLINT
    if (!open_) return -1;
    std::vector<std::byte> m;
    MessageWriter w(m);
    w.U32(kRequestMagic);
    w.U16(0);
    w.U16(command);
    w.U64(++cookie_);
    w.U64(offset);
    w.U32(length);
    m.insert(m.end(), payload.begin(), payload.end());
    std::byte reply[16];
    if (!SendAll(m) || !RecvAll(reply, sizeof reply)) return -1;
    if (Load32(reply) != kSimpleReplyMagic || Load64(reply + 8) != cookie_) return -1;
    return Load32(reply + 4);
  }
  bool SendAll(const std::vector<std::byte>& m) {
    return ::send(fd_, m.data(), m.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(m.size());
  }
  bool RecvAll(std::byte* p, size_t n) {
    return ::recv(fd_, p, n, MSG_WAITALL) == static_cast<ssize_t>(n);
  }

  int fd_ = -1;
  bool open_ = false;
  uint64_t cookie_ = 0;
};

class HydrationServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (snapdisk::testing::SnapdiskBin().empty()) GTEST_SKIP() << "no snapdisk binary";
    pool_ = dir_.File("pool");
    store_ = dir_.File("store");
    socket_ = dir_.File("nbd.sock");
    image_.assign(kVolumeBytes, std::byte{0});
    {
      auto pf = PoolFile::Create(pool_, 256 * kMiB);
      ASSERT_TRUE(pf.ok()) << pf.status().ToString();
      ASSERT_TRUE((*pf)->pool().CreateVolume("db", kVolumeBytes).ok());
      auto v = (*pf)->pool().OpenVolume("db");
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      // Incompressible data with a hole between: [0, 6 MiB) and [8, 12 MiB).
      for (const auto& [offset, length, seed] :
           {std::tuple{uint64_t{0}, 6 * kMiB, 1}, std::tuple{8 * kMiB, 4 * kMiB, 2}}) {
        const std::vector<std::byte> data = snapdisk::testing::PatternBytes(seed, length);
        ASSERT_TRUE((*v)->Write(offset, data).ok());
        std::memcpy(image_.data() + offset, data.data(), length);
      }
      ASSERT_TRUE((*pf)->Close().ok());
    }
    CliResult r = RunCli({"store", "create", store_, "--chunk-size", "256K"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    set_id_ = RunJson({"backup", pool_, "db", "--store", store_, "--method", "snapshot"})["id"];
  }

  // Runs a command that must succeed with --json; returns its document.
  json RunJson(std::vector<std::string> args) {
    args.push_back("--json");
    CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    json doc = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << r.out;
    return doc;
  }

  // What `snapdisk restore` does for an instant restore (the same call, the
  // same store locator), interrupted once `fill_bytes` are filled, as a
  // server stopped or killed mid-fill leaves it: the volume hydrating, its
  // map committed. Returns its hydration state then.
  HydrationInfo InterruptedRestore(const std::string& volume, uint64_t fill_bytes) {
    auto pf = PoolFile::Open(pool_);
    EXPECT_TRUE(pf.ok()) << pf.status().ToString();
    if (!pf.ok()) return {};
    Pool& pool = (*pf)->pool();
    HydrationInfo info;
    {
      auto store = OpenDirStore(store_);
      EXPECT_TRUE(store.ok()) << store.status().ToString();
      if (!store.ok()) return {};
      LazyRestoreOptions lazy;
      lazy.store_locator = CanonicalStoreDir(store_);
      auto job = StartLazyRestore(pool, **store, set_id_, volume, lazy);
      EXPECT_TRUE(job.ok()) << job.status().ToString();
      if (!job.ok()) return {};
      for (int i = 0; i < 1000 && (*job)->progress().filled_bytes < fill_bytes; ++i) {
        EXPECT_FALSE((*job)->Step()) << (*job)->result().ToString();
        pool.Poll(0);
      }
      // As RunHydration leaves a fill that did not finish: the source (which
      // reads the store) detached before the store closes.
      EXPECT_TRUE(pool.AttachHydrationSource(volume, nullptr).ok());
      auto got = pool.GetHydrationInfo(volume);
      EXPECT_TRUE(got.ok());
      if (got.ok()) info = *got;
    }
    EXPECT_TRUE((*pf)->Close().ok());
    return info;
  }

  // The volume's hydration state, through the library (no server running).
  HydrationInfo Info(const std::string& volume) {
    auto pf = PoolFile::Open(pool_);
    EXPECT_TRUE(pf.ok()) << pf.status().ToString();
    if (!pf.ok()) return {};
    auto info = (*pf)->pool().GetHydrationInfo(volume);
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    EXPECT_TRUE((*pf)->Close().ok());
    return info.ok() ? *info : HydrationInfo{};
  }

  // The volume's bytes, through the library (no server running; hydrated).
  std::vector<std::byte> ReadVolume(const std::string& volume) {
    std::vector<std::byte> out(kVolumeBytes);
    auto pf = PoolFile::Open(pool_);
    EXPECT_TRUE(pf.ok()) << pf.status().ToString();
    if (!pf.ok()) return {};
    auto v = (*pf)->pool().OpenVolume(volume);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    if (v.ok()) {
      Status s = (*v)->Read(0, out);
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
    EXPECT_TRUE((*pf)->Close().ok());
    return out;
  }

  std::unique_ptr<snapdisk::testing::ServerProcess> Serve(std::vector<std::string> args) {
    args.insert(args.begin(), {"--socket", socket_});
    auto server = std::make_unique<snapdisk::testing::ServerProcess>(
        pool_, args, dir_.File("server" + std::to_string(++servers_) + ".log"));
    EXPECT_TRUE(server->WaitReady()) << server->Log();
    return server;
  }

  json RestoreStatus(const std::string& volume) { return RunJson({"restore", "status", pool_, volume}); }
  json Jobs() { return RunJson({"backup", "jobs", pool_}); }

  // Waits (up to `timeout_s`) until `volume` is hydrated.
  bool WaitHydrated(const std::string& volume, int timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (RestoreStatus(volume)["hydrating"] == false) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Reads the whole volume over NBD; "" when it equals `expected`, else where
  // it first differs (or the error).
  std::string CompareOverNbd(const std::string& volume, const std::vector<std::byte>& expected) {
    NbdClient c(socket_, volume);
    if (!c.open()) return "cannot open export " + volume;
    std::vector<std::byte> got;
    for (uint64_t at = 0; at < kVolumeBytes; at += kMiB) {
      if (const int64_t e = c.Read(at, kMiB, &got); e != 0) {
        return "read at " + std::to_string(at) + ": error " + std::to_string(e);
      }
      if (std::memcmp(got.data(), expected.data() + at, kMiB) != 0) {
        return "differs in the MiB at " + std::to_string(at);
      }
    }
    return "";
  }

  // Writes `length` pattern bytes at `offset` over NBD and into `expected`.
  void ClientWrite(NbdClient& c, uint64_t offset, size_t length, uint64_t seed,
                   std::vector<std::byte>& expected) {
    const std::vector<std::byte> data = snapdisk::testing::PatternBytes(seed, length);
    ASSERT_EQ(c.Write(offset, data), 0) << "write at " << offset;
    std::memcpy(expected.data() + offset, data.data(), length);
  }

  // True when this process can open the store: nobody holds its lock.
  bool StoreIsFree() { return OpenDirStore(store_).ok(); }

  snapdisk::testing::ScratchDir dir_;
  std::string pool_;
  std::string store_;
  std::string socket_;
  std::string set_id_;
  std::vector<std::byte> image_;  // db's bytes, as backed up
  int servers_ = 0;
};

TEST_F(HydrationServeTest, FillGoesOnAfterSigtermAndSigkillAndKeepsClientWrites) {
  const HydrationInfo before = InterruptedRestore("r", 1 * kMiB);
  ASSERT_TRUE(before.hydrating);
  ASSERT_GT(before.pending_bytes, 6 * kMiB);
  std::vector<std::byte> expected = image_;

  // First start, the fill capped at 1.5 MB/s (several seconds for what is
  // pending): attached and filling at once, a job like any other.
  {
    auto server = Serve({"--hydrate-rate", "1.5"});
    const auto started = LinesWith(server->Log(), "volume 'r'");
    ASSERT_EQ(started.size(), 1u) << server->Log();
    EXPECT_TRUE(Contains(started[0], "filling the ")) << started[0];
    EXPECT_TRUE(Contains(started[0], "from set " + set_id_ + " of store " +
                                         CanonicalStoreDir(store_)))
        << started[0];
    json status = RestoreStatus("r");
    EXPECT_EQ(status["hydrating"], true);
    EXPECT_EQ(status["hydration_source_attached"], true);
    EXPECT_EQ(status["hydration_fill_running"], true) << status.dump();
    const json jobs = Jobs();
    ASSERT_EQ(jobs.size(), 1u) << jobs.dump();
    EXPECT_EQ(jobs[0]["id"], set_id_);
    EXPECT_EQ(jobs[0]["label"], "hydrate r from " + set_id_);
    EXPECT_EQ(status["hydration_fill_job"], jobs[0]["job"]);
    EXPECT_TRUE(Contains(jobs[0]["command"], "restore resume --store")) << jobs.dump();
    CliResult text = RunCli({"restore", "status", pool_, "r"});
    EXPECT_EQ(text.exit_code, 0) << text.err;
    EXPECT_TRUE(Contains(text.out, "; filling (job ")) << text.out;

    NbdClient c(socket_, "r");
    ASSERT_TRUE(c.open()) << server->Log();
    // A block far ahead of the fill reads the backup's bytes.
    std::vector<std::byte> got;
    ASSERT_EQ(c.Read(11 * kMiB, 256 * 1024, &got), 0);
    EXPECT_EQ(std::memcmp(got.data(), image_.data() + 11 * kMiB, got.size()), 0);
    // Writes into data not yet filled and into the hole, some not
    // block-aligned, then a flush: the client's bytes win.
    ClientWrite(c, 10 * kMiB + 3 * 4096, 96 * 1024, 71, expected);
    ClientWrite(c, 15 * kMiB + 100, 10000, 72, expected);
    ClientWrite(c, 5 * kMiB - 700, 1400, 73, expected);
    ASSERT_EQ(c.Flush(), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    EXPECT_EQ(server->Stop(SIGTERM), 0) << server->Log();
    const auto stopped = LinesWith(server->Log(), "volume 'r': filling from set");
    ASSERT_EQ(stopped.size(), 1u) << server->Log();
    EXPECT_TRUE(Contains(stopped[0], "stopped (the server is stopping)")) << stopped[0];
  }
  // What the fill and the writes did is committed; the rest is pending.
  const HydrationInfo after_term = Info("r");
  ASSERT_TRUE(after_term.hydrating) << "the fill was meant to take longer";
  EXPECT_FALSE(after_term.source_attached);
  EXPECT_LT(after_term.pending_bytes, before.pending_bytes);

  // Second start: killed mid-fill, after more client writes and a flush.
  {
    auto server = Serve({"--hydrate-rate", "1.5"});
    EXPECT_EQ(RestoreStatus("r")["hydration_fill_running"], true);
    NbdClient c(socket_, "r");
    ASSERT_TRUE(c.open()) << server->Log();
    ClientWrite(c, 2 * kMiB + 512, 8192, 74, expected);
    ClientWrite(c, 12 * kMiB - 4096, 4096, 75, expected);
    ASSERT_EQ(c.Flush(), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    server->Stop(SIGKILL);
  }
  const HydrationInfo after_kill = Info("r");
  ASSERT_TRUE(after_kill.hydrating) << "the fill was meant to take longer";
  EXPECT_LE(after_kill.pending_bytes, after_term.pending_bytes);

  // Third start, uncapped: the fill finishes by itself and lets the store go.
  {
    auto server = Serve({});
    ASSERT_TRUE(WaitHydrated("r", 20)) << server->Log();
    EXPECT_EQ(LinesWith(server->Log(), "volume 'r' is hydrated").size(), 1u) << server->Log();
    EXPECT_EQ(Jobs().size(), 0u);
    const json status = RestoreStatus("r");
    EXPECT_EQ(status["hydration_fill_running"], false);
    EXPECT_EQ(status["hydration_fill_job"], nullptr);
    EXPECT_TRUE(StoreIsFree()) << "the server still holds the store";
    EXPECT_EQ(CompareOverNbd("r", expected), "");
    EXPECT_EQ(server->Stop(SIGTERM), 0) << server->Log();
  }
  EXPECT_TRUE(ReadVolume("r") == expected);
  CliResult fsck = RunCli({"pool", "fsck", pool_});
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
}

TEST_F(HydrationServeTest, UnopenableStoreLeavesTheVolumeUnattachedUntilResume) {
  const HydrationInfo before = InterruptedRestore("r", 1 * kMiB);
  ASSERT_TRUE(before.hydrating);
  const std::string away = store_ + ".away";
  std::filesystem::rename(store_, away);

  // The store is missing: the server starts anyway and says so, once.
  {
    auto server = Serve({});
    const auto lines = LinesWith(server->Log(), "volume 'r'");
    ASSERT_EQ(lines.size(), 1u) << server->Log();
    EXPECT_TRUE(Contains(lines[0], "snapdisk: serve: volume 'r' (set " + set_id_ + " of store " +
                                       CanonicalStoreDir(store_) +
                                       ") stays unattached: the store does not exist"))
        << lines[0];
    EXPECT_TRUE(Contains(lines[0], "`snapdisk restore resume --store " +
                                       CanonicalStoreDir(store_) + " " + pool_ + " r`"))
        << lines[0];
    const json status = RestoreStatus("r");
    EXPECT_EQ(status["hydrating"], true);
    EXPECT_EQ(status["hydration_source_attached"], false);
    EXPECT_EQ(status["hydration_fill_running"], false);
    CliResult text = RunCli({"restore", "status", pool_, "r"});
    EXPECT_TRUE(Contains(text.out, "its store is attached when a block not filled yet is read"))
        << text.out;
    EXPECT_TRUE(Contains(text.out, "no fill is running")) << text.out;
    EXPECT_EQ(Jobs().size(), 0u);
    // Filled blocks read; pending ones fail, never read as zeros.
    NbdClient c(socket_, "r");
    ASSERT_TRUE(c.open()) << server->Log();
    std::vector<std::byte> got;
    ASSERT_EQ(c.Read(0, 64 * 1024, &got), 0);
    EXPECT_EQ(std::memcmp(got.data(), image_.data(), got.size()), 0);
    EXPECT_EQ(c.Read(11 * kMiB, 64 * 1024, &got), snapdisk::nbd::kEio);
    // Other volumes are served as usual.
    NbdClient db(socket_, "db");
    EXPECT_TRUE(db.open());
    EXPECT_EQ(server->Stop(SIGTERM), 0) << server->Log();
  }

  // Another store at that place, without the set (as if it had expired):
  // the same, with why.
  ASSERT_EQ(RunCli({"store", "create", store_}).exit_code, 0);
  {
    auto server = Serve({});
    const auto lines = LinesWith(server->Log(), "volume 'r'");
    ASSERT_EQ(lines.size(), 1u) << server->Log();
    EXPECT_TRUE(Contains(lines[0], ") stays unattached: ")) << lines[0];
    EXPECT_EQ(RestoreStatus("r")["hydration_source_attached"], false);
    EXPECT_EQ(server->Stop(SIGTERM), 0) << server->Log();
  }
  std::filesystem::remove_all(store_);

  // The store is back but held by another process: the same, with why.
  std::filesystem::rename(away, store_);
  auto held = OpenDirStore(store_);
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  {
    auto server = Serve({});
    const auto lines = LinesWith(server->Log(), "volume 'r'");
    ASSERT_EQ(lines.size(), 1u) << server->Log();
    EXPECT_TRUE(Contains(lines[0], "stays unattached: cannot open the store: ")) << lines[0];
    EXPECT_EQ(RestoreStatus("r")["hydration_source_attached"], false);

    // Once it is free, `restore resume` (forwarded to the server) finishes it.
    held->reset();
    const json resumed = RunJson({"restore", "resume", "--store", store_, pool_, "r"});
    EXPECT_EQ(resumed["volume"], "r") << resumed.dump();
    const json status = RestoreStatus("r");
    EXPECT_EQ(status["hydrating"], false);
    EXPECT_EQ(CompareOverNbd("r", image_), "");
    EXPECT_EQ(server->Stop(SIGTERM), 0) << server->Log();
  }
  EXPECT_TRUE(ReadVolume("r") == image_);
}

TEST_F(HydrationServeTest, ForwardedCommandsShareTheStoreAndCancelDetaches) {
  ASSERT_TRUE(InterruptedRestore("r", 0).hydrating);
  auto server = Serve({"--hydrate-rate", "1"});
  ASSERT_EQ(Jobs().size(), 1u);

  // While the fill holds the store, a backup and an instant restore forwarded
  // to the server use it too (one store object per directory in a process).
  const json set = RunJson({"backup", pool_, "db", "--store", store_, "--method", "snapshot"});
  const json restored =
      RunJson({"restore", "--store", store_, set["id"], "--to-new", pool_, "r2"});
  EXPECT_EQ(restored["instant"], true) << restored.dump();
  EXPECT_EQ(CompareOverNbd("r2", image_), "");
  EXPECT_EQ(RestoreStatus("r")["hydration_fill_running"], true);
  EXPECT_FALSE(StoreIsFree());
  // r2's fill went on in the server after the command answered; it ends.
  for (int i = 0; i < 400 && Jobs().size() > 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(RestoreStatus("r2")["hydrating"], false);

  // `backup cancel` stops the fill: the volume stays hydrating, unattached,
  // and the store is let go.
  const json jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u) << jobs.dump();
  CliResult cancel = RunCli({"backup", "cancel", pool_, std::to_string(jobs[0]["job"].get<int>())});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  for (int i = 0; i < 200 && !Jobs().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(Jobs().size(), 0u);
  const auto stopped = LinesWith(server->Log(), "volume 'r': filling from set");
  ASSERT_EQ(stopped.size(), 1u) << server->Log();
  EXPECT_TRUE(Contains(stopped[0], "stopped (cancelled by `snapdisk backup cancel`)")) << stopped[0];
  EXPECT_TRUE(Contains(stopped[0], "its source is detached")) << stopped[0];
  json status = RestoreStatus("r");
  EXPECT_EQ(status["hydrating"], true);
  EXPECT_EQ(status["hydration_source_attached"], false);
  EXPECT_EQ(status["hydration_fill_running"], false);
  EXPECT_TRUE(StoreIsFree()) << "the cancelled fill kept the store";
  {
    // A block not filled yet still reads right: the server attaches the
    // store the volume recorded on demand (read-only, so it stays free).
    NbdClient c(socket_, "r");
    ASSERT_TRUE(c.open());
    std::vector<std::byte> got;
    EXPECT_EQ(c.Read(11 * kMiB, 4096, &got), 0);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), image_.begin() + 11 * kMiB));
  }
  EXPECT_TRUE(StoreIsFree()) << "reading through the store locked it";

  RunJson({"restore", "resume", "--store", store_, pool_, "r"});
  EXPECT_EQ(RestoreStatus("r")["hydrating"], false);
  EXPECT_EQ(CompareOverNbd("r", image_), "");
  EXPECT_EQ(server->Stop(SIGTERM), 0) << server->Log();
}

TEST_F(HydrationServeTest, HydrateRateIsChecked) {
  for (const char* bad : {"0", "-1", "fast", "2000000"}) {
    CliResult r = RunCli({"serve", pool_, "--socket", socket_, "--hydrate-rate", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_TRUE(Contains(r.err, "rate must be a number of MB/s")) << r.err;
  }
}

}  // namespace
}  // namespace snapdisk::cli
