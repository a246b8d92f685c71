// The control socket (tools/cli/control.h): while a server holds a pool, the
// CLI's commands on it run inside the server. The test plays the server: it
// holds the pool with PoolFile (so the CLI cannot open it itself: Busy) and a
// thread accepts on ControlSocketPath(pool) and calls ServeControlConnection.
// Also the protocol directly, over a socketpair: malformed requests, another
// pool's path, progress lines, a client that hangs up mid-import.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/pool_file.h"
#include "engine/volume.h"
#include "support/test_env.h"
#include "support/cli_test_support.h"
#include "tools/cli/control.h"

namespace snapdisk::cli {
namespace {

using nlohmann::json;
using testing::CliOptions;
using testing::CliResult;
using testing::RunCli;

std::string ReadAll(const std::string& path) {
  std::string out;
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "<missing>";
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

void WriteAll(const std::string& path, const std::vector<std::byte>& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// A stand-in for `snapdisk serve`: accepts on the control socket and serves
// each connection on its own thread, under `mu` (the pool is driven by one
// thread at a time; the test takes `mu` to touch the pool itself).
class TestServer {
 public:
  // `hang_up`: accept and close without a reply (a broken server).
  TestServer(Pool& pool, std::string pool_path, bool hang_up = false)
      : pool_(pool), path_(std::move(pool_path)), hang_up_(hang_up) {
    auto fd = ListenControlSocket(path_);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    listen_fd_ = fd.ok() ? *fd : -1;
    EXPECT_EQ(::pipe2(stop_, O_CLOEXEC), 0);
    thread_ = std::thread([this] { Loop(); });
  }
  ~TestServer() {
    (void)!::write(stop_[1], "x", 1);
    thread_.join();
    ::close(stop_[0]);
    ::close(stop_[1]);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    RemoveControlSocket(path_);
  }
  int served() const { return served_; }
  std::mutex mu;

 private:
  void Loop() {
    for (;;) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents) return;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++served_;
      if (hang_up_) {
        ::close(fd);
        continue;
      }
      std::lock_guard<std::mutex> lock(mu);
      ServeControlConnection(fd, pool_, path_);
    }
  }

  Pool& pool_;
  const std::string path_;
  const bool hang_up_;
  int listen_fd_ = -1;
  int stop_[2] = {-1, -1};
  std::atomic<int> served_{0};
  std::thread thread_;
};

class CliControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_path_ = std::filesystem::absolute(dir_.File("pool")).string();
    ASSERT_EQ(RunCli({"pool", "create", pool_path_, "--size", "256M"}).exit_code, 0);
    ASSERT_EQ(RunCli({"volume", "create", pool_path_, "db", "--size", "16M"}).exit_code, 0);
    auto pf = PoolFile::Open(pool_path_);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    held_ = std::move(pf).value();
    auto v = held_->pool().OpenVolume("db");
    ASSERT_TRUE(v.ok());
    ASSERT_TRUE((*v)->Write(4096, snapdisk::testing::PatternBytes(5, 8192)).ok());
  }
  Pool& pool() { return held_->pool(); }
  std::string Cwd() const { return std::filesystem::absolute(dir_.path()).string(); }

  snapdisk::testing::ScratchDir dir_;
  std::string pool_path_;
  std::unique_ptr<PoolFile> held_;
};

TEST_F(CliControlTest, CommandsRunInsideTheServer) {
  TestServer server(pool(), pool_path_);
  CliResult r = RunCli({"snapshot", "create", pool_path_, "db", "s1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Created snapshot 'db@s1'\n");
  EXPECT_EQ(r.err, "");
  r = RunCli({"snapshot", "list", pool_path_, "db", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json snaps = json::parse(r.out);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0]["name"], "s1");
  EXPECT_EQ(snaps[0]["shared_bytes"], 8192);
  r = RunCli({"volume", "create", pool_path_, "v2", "--size", "1M", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCli({"volume", "list", pool_path_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json volumes = json::parse(r.out);
  ASSERT_EQ(volumes.size(), 2u);
  EXPECT_EQ(volumes[0]["name"], "db");
  EXPECT_EQ(volumes[0]["snapshots"], 1);
  EXPECT_EQ(volumes[1]["name"], "v2");
  r = RunCli({"pool", "info", pool_path_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("volumes     2"), std::string::npos) << r.out;
  EXPECT_EQ(RunCli({"pool", "fsck", pool_path_}).exit_code, 0);
  EXPECT_EQ(RunCli({"clone", pool_path_, "db@s1", "c1"}).exit_code, 0);
  EXPECT_EQ(server.served(), 7);
  // The server's own pool has the changes, committed.
  std::lock_guard<std::mutex> lock(server.mu);
  auto listed = pool().ListSnapshots("db");
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name, "s1");
  EXPECT_TRUE(pool().GetVolume("c1").ok());
}

TEST_F(CliControlTest, ErrorsComeBackAsIfLocal) {
  TestServer server(pool(), pool_path_);
  CliResult r = RunCli({"volume", "info", pool_path_, "nope"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err, "snapdisk: volume 'nope' does not exist in pool " + pool_path_ + "\n");
  EXPECT_EQ(r.out, "");
  r = RunCli({"volume", "info", pool_path_, "nope", "--json"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(json::parse(r.out)["error"]["code"], "NotFound");
  r = RunCli({"volume", "create", pool_path_, "db", "--size", "1M"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("already exists"), std::string::npos);
  EXPECT_EQ(server.served(), 3);
  // Usage errors never reach the server.
  r = RunCli({"volume", "create", pool_path_, "x", "--size", "12X"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(server.served(), 3);
  // pool create is always local: the path exists.
  r = RunCli({"pool", "create", pool_path_, "--size", "1G"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(server.served(), 3);
}

TEST_F(CliControlTest, RollbackOfAVolumeInUseIsRefused) {
  TestServer server(pool(), pool_path_);
  ASSERT_EQ(RunCli({"snapshot", "create", pool_path_, "db", "s1"}).exit_code, 0);
  ASSERT_EQ(RunCli({"volume", "create", pool_path_, "scratch", "--size", "1M"}).exit_code, 0);
  {
    std::lock_guard<std::mutex> lock(server.mu);
    (*pool().OpenVolume("db"))->SetInUse(true);
    (*pool().OpenVolume("scratch"))->SetInUse(true);
  }
  CliResult r = RunCli({"rollback", pool_path_, "db", "s1"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_EQ(r.err, "snapdisk: volume 'db' is in use (open by a client)\n");
  r = RunCli({"volume", "delete", pool_path_, "scratch"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("in use"), std::string::npos);
  r = RunCli({"volume", "info", pool_path_, "db", "--json"});
  EXPECT_EQ(json::parse(r.out)["in_use"], true);
  {
    std::lock_guard<std::mutex> lock(server.mu);
    (*pool().OpenVolume("db"))->SetInUse(false);
  }
  r = RunCli({"rollback", pool_path_, "db", "s1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(CliControlTest, ImportAndExportThroughTheServer) {
  TestServer server(pool(), pool_path_);
  const auto image = snapdisk::testing::PatternBytes(9, 3 << 20);
  WriteAll(dir_.File("img"), image);
  const std::string image_text(reinterpret_cast<const char*>(image.data()), image.size());
  // Relative paths, resolved against the client's working directory.
  CliOptions in_dir;
  in_dir.cwd = dir_.path().string();
  CliResult r = RunCli({"import", "pool", "a", "img"}, in_dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Imported 3 MiB into volume 'a'"), std::string::npos) << r.out;
  r = RunCli({"export", "pool", "a", "out.raw"}, in_dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadAll(dir_.File("out.raw")), image_text);
  // stdin and stdout ("-") are passed to the server (SCM_RIGHTS): a pipe...
  CliOptions piped;
  piped.stdin_is_pipe = true;
  piped.stdin_data = image_text;
  r = RunCli({"import", pool_path_, "b", "-"}, piped);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCli({"export", pool_path_, "b", "-"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out == image_text) << "piped export through the server differs";
  // ...and redirected files.
  CliOptions redirected;
  redirected.stdin_path = dir_.File("img");
  ASSERT_EQ(RunCli({"import", pool_path_, "c", "-"}, redirected).exit_code, 0);
  redirected.stdout_path = dir_.File("c.raw");
  ASSERT_EQ(RunCli({"export", pool_path_, "c", "-"}, redirected).exit_code, 0);
  EXPECT_EQ(ReadAll(dir_.File("c.raw")), image_text);
  // A failed import through the server leaves nothing behind.
  WriteAll(dir_.File("odd"), std::vector<std::byte>(1000));
  r = RunCli({"import", pool_path_, "d", dir_.File("odd")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("not a multiple of 512"), std::string::npos) << r.err;
  std::lock_guard<std::mutex> lock(server.mu);
  EXPECT_FALSE(pool().GetVolume("d").ok());
  EXPECT_EQ(server.served(), 7);
}

TEST_F(CliControlTest, StaleSocketFallsBackToLocal) {
  held_.reset();  // no process holds the pool
  auto fd = ListenControlSocket(pool_path_);
  ASSERT_TRUE(fd.ok());
  ::close(*fd);  // the server died without removing its socket
  ASSERT_TRUE(std::filesystem::exists(ControlSocketPath(pool_path_)));
  CliResult r = RunCli({"volume", "list", pool_path_, "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)[0]["name"], "db");
  // A new server replaces the stale socket; a live one is Busy.
  auto again = ListenControlSocket(pool_path_);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto twice = ListenControlSocket(pool_path_);
  EXPECT_TRUE(twice.status().IsBusy()) << twice.status().ToString();
  ::close(*again);
  RemoveControlSocket(pool_path_);
}

TEST_F(CliControlTest, ServerThatHangsUpIsAnIoError) {
  TestServer server(pool(), pool_path_, /*hang_up=*/true);
  CliResult r = RunCli({"volume", "list", pool_path_});
  EXPECT_EQ(r.exit_code, 6);
  EXPECT_EQ(r.ErrLines().size(), 1u);
  EXPECT_NE(r.err.find("closed the connection without a reply"), std::string::npos) << r.err;
}

// ---- The protocol over a socketpair -----------------------------------------

// Sends `request` (one line) on a socketpair, serves it on this thread, and
// returns the reply's lines.
std::vector<json> Exchange(Pool& pool, const std::string& pool_path, const std::string& request,
                           bool close_client_first = false) {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  EXPECT_EQ(::write(sv[0], request.data(), request.size()), static_cast<ssize_t>(request.size()));
  if (close_client_first) ::close(sv[0]);
  ServeControlConnection(sv[1], pool, pool_path);
  std::vector<json> lines;
  if (close_client_first) return lines;
  std::string reply;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(sv[0], buf, sizeof buf)) > 0) reply.append(buf, static_cast<size_t>(n));
  ::close(sv[0]);
  size_t start = 0, nl;
  while ((nl = reply.find('\n', start)) != std::string::npos) {
    lines.push_back(json::parse(reply.substr(start, nl - start), nullptr, false));
    start = nl + 1;
  }
  EXPECT_EQ(start, reply.size()) << "every reply line ends in a newline";
  return lines;
}

json Request(const std::vector<std::string>& argv, const std::string& cwd, bool progress = false) {
  return {{"argv", argv}, {"cwd", cwd}, {"progress", progress}, {"fds", json::array()}};
}

TEST_F(CliControlTest, ProtocolErrors) {
  const std::string cwd = std::filesystem::absolute(dir_.path()).string();
  struct Case {
    std::string request;
    int exit_code;
    std::string fragment;
  } cases[] = {
      {"not json\n", 2, "malformed control request"},
      {"{\"cwd\": \"/\"}\n", 2, "malformed control request"},
      {"{\"argv\": [1, 2], \"cwd\": \"/\"}\n", 2, "non-string"},
      {"{\"argv\": [\"volume\", \"list\", \"pool\"], \"cwd\": \"relative\"}\n", 2, "malformed"},
      {Request({"volume", "list", pool_path_}, cwd).dump().substr(0, 20) + "\n", 2, "malformed"},
      {"{\"argv\": [\"volume\", \"list\", \"x\"], \"cwd\": \"/\", \"fds\": [\"stdin\"]}\n", 2,
       "'fds' does not match"},
      {Request({"volume", "list", dir_.File("other")}, cwd).dump() + "\n", 2,
       "this control socket serves pool " + pool_path_},
      {Request({"pool", "create", dir_.File("p2"), "--size", "1G"}, cwd).dump() + "\n", 2,
       "does not run through a pool's server"},
      {Request({"volume", "frob"}, cwd).dump() + "\n", 2, "snapdisk: "},
      {Request({"import", pool_path_, "x", "-"}, cwd).dump() + "\n", 2,
       "did not pass the stdin/stdout descriptor"},
      {Request({"volume", "info", pool_path_, "nope"}, cwd).dump() + "\n", 3,
       "volume 'nope' does not exist in pool " + pool_path_},
  };
  ::close(::open(dir_.File("other").c_str(), O_CREAT | O_WRONLY, 0644));
  for (const Case& c : cases) {
    SCOPED_TRACE(c.request);
    const auto lines = Exchange(pool(), pool_path_, c.request);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0]["exit_code"], c.exit_code);
    EXPECT_NE(lines[0]["stderr"].get<std::string>().find(c.fragment), std::string::npos)
        << lines[0].dump();
  }
  // A relative pool path in the request resolves against its cwd.
  const auto ok = Exchange(pool(), pool_path_,
                           Request({"volume", "list", "pool", "--json"}, cwd).dump() + "\n");
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0]["exit_code"], 0) << ok[0].dump();
  EXPECT_EQ(json::parse(ok[0]["stdout"].get<std::string>())[0]["name"], "db");
}

TEST_F(CliControlTest, ProgressLinesThenTheReply) {
  WriteAll(dir_.File("img"), snapdisk::testing::PatternBytes(4, 24 << 20));
  const auto lines = Exchange(
      pool(), pool_path_, Request({"import", pool_path_, "big", "img"}, Cwd(), true).dump() + "\n");
  ASSERT_GE(lines.size(), 2u);
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    ASSERT_TRUE(lines[i].contains("progress")) << lines[i].dump();
    EXPECT_EQ(lines[i]["progress"]["label"], "import big");
    EXPECT_EQ(lines[i]["progress"]["unit"], "bytes");
    EXPECT_EQ(lines[i]["progress"]["total"], 24 << 20);
  }
  EXPECT_EQ(lines.back()["exit_code"], 0) << lines.back().dump();
  EXPECT_NE(lines.back()["stdout"].get<std::string>().find("Imported 24 MiB"), std::string::npos);
  // Without "progress": only the reply.
  const auto quiet =
      Exchange(pool(), pool_path_,
               Request({"export", pool_path_, "big", "out"}, Cwd(), false).dump() + "\n");
  ASSERT_EQ(quiet.size(), 1u);
  EXPECT_EQ(quiet[0]["exit_code"], 0);
}

TEST_F(CliControlTest, ClientHangingUpCancelsAnImport) {
  WriteAll(dir_.File("img"), snapdisk::testing::PatternBytes(4, 8 << 20));
  Exchange(pool(), pool_path_, Request({"import", pool_path_, "gone", "img"}, Cwd()).dump() + "\n",
           /*close_client_first=*/true);
  EXPECT_TRUE(pool().GetVolume("gone").status().IsNotFound()) << "the half import was undone";
  EXPECT_EQ(pool().ListVolumes().size(), 1u);
}

}  // namespace
}  // namespace snapdisk::cli
