// `snapdisk serve` with real NBD clients: qemu-img (convert, compare),
// qemu-io (patterns), nbdinfo (--map), nbdcopy, and fio's nbd engine with
// verification; plus a snapshot taken through the CLI while the pool is
// served (the control socket). Each test skips, saying which, when a client
// is not on PATH.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/pool_file.h"
#include "engine/volume.h"
#include "support/serve_process.h"
#include "support/test_env.h"
#include "tools/nbd/nbd_protocol.h"

namespace snapdisk {
namespace {

using testing::ServerProcess;
using testing::SnapdiskBin;

constexpr uint64_t kImageBytes = 64 << 20;

bool OnPath(const std::string& tool) {
  return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0;
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Runs `cmd` through the shell (60 s limit), output and errors into *output;
// returns the exit code.
int Shell(const std::string& cmd, std::string* output = nullptr) {
  FILE* p = ::popen(("timeout 60 " + cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  if (output != nullptr) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define REQUIRE_TOOL(tool)                                             \
  do {                                                                 \
    if (!OnPath(tool)) {                                               \
      GTEST_SKIP() << tool " is not installed (not on PATH); skipped"; \
    }                                                                  \
  } while (0)

// Holds an export open (NBD_OPT_GO), as any client would, without I/O.
class HeldExport {
 public:
  HeldExport(const std::string& socket_path, const std::string& name) {
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
      if (type == kRepAck) {
        open_ = true;
        return;
      }
      if (type != kRepInfo) return;
    }
  }
  ~HeldExport() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool open() const { return open_; }

 private:
  int fd_ = -1;
  bool open_ = false;
};

class NbdInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (SnapdiskBin().empty()) {
      GTEST_SKIP() << "no snapdisk binary: set SNAPDISK_BIN";
    }
    pool_ = dir_.File("pool");
    socket_ = dir_.File("nbd.sock");
    auto pf = PoolFile::Create(pool_, 1 << 30);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    ASSERT_TRUE((*pf)->pool().CreateVolume("vm", kImageBytes).ok());
    ASSERT_TRUE((*pf)->pool().CreateVolume("copy", kImageBytes).ok());
    ASSERT_TRUE((*pf)->Close().ok());
    server_ = std::make_unique<ServerProcess>(pool_, std::vector<std::string>{"--socket", socket_},
                                              dir_.File("server.log"));
    ASSERT_TRUE(server_->WaitReady()) << server_->Log();
  }
  void TearDown() override {
    if (server_) {
      EXPECT_EQ(server_->Stop(), 0) << server_->Log();
    }
  }
  std::string Uri(const std::string& name) const {
    return "nbd+unix:///" + name + "?socket=" + socket_;
  }

  // A sparse raw image with a few written regions (and holes between them).
  std::string MakeImage(const std::string& name, uint64_t seed) {
    const std::string path = dir_.File(name);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    EXPECT_EQ(::ftruncate(fd, kImageBytes), 0);
    const uint64_t regions[][2] = {{0, 1 << 20},
                                   {5 << 20, 300000},
                                   {(20 << 20) + 512, 70000},
                                   {kImageBytes - (2 << 20), 2 << 20}};
    for (const auto& r : regions) {
      auto data = testing::PatternBytes(seed + r[0], r[1]);
      EXPECT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(r[0])),
                static_cast<ssize_t>(data.size()));
    }
    ::close(fd);
    return path;
  }

  testing::ScratchDir dir_;
  std::string pool_, socket_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(NbdInteropTest, QemuImgConvertIntoVolumeAndCompare) {
  REQUIRE_TOOL("qemu-img");
  const std::string image = MakeImage("src.img", 1);
  std::string out;
  ASSERT_EQ(
      Shell("qemu-img convert -n -f raw -O raw " + Quote(image) + " " + Quote(Uri("vm")), &out), 0)
      << out << server_->Log();
  EXPECT_EQ(Shell("qemu-img compare -f raw -F raw " + Quote(image) + " " + Quote(Uri("vm")), &out),
            0)
      << out;
  // The copy is sparse: the image's holes are holes in the volume.
  if (OnPath("nbdinfo")) {
    ASSERT_EQ(Shell("nbdinfo --map " + Quote(Uri("vm")), &out), 0) << out;
    EXPECT_NE(out.find("   1048576     4194304    3  hole,zero"), std::string::npos) << out;
  }
  // And back out of the volume into a file.
  const std::string back = dir_.File("back.img");
  ASSERT_EQ(Shell("qemu-img convert -f raw -O raw " + Quote(Uri("vm")) + " " + Quote(back), &out),
            0)
      << out;
  EXPECT_EQ(Shell("cmp " + Quote(image) + " " + Quote(back), &out), 0) << out;
}

TEST_F(NbdInteropTest, NbdinfoMapShowsHolesAsHoles) {
  REQUIRE_TOOL("nbdinfo");
  REQUIRE_TOOL("qemu-io");
  std::string out;
  ASSERT_EQ(Shell("qemu-io -f raw -c 'write -P 0x11 1M 1M' -c 'write -P 0x22 10M 64k' " +
                      Quote(Uri("vm")),
                  &out),
            0)
      << out;
  ASSERT_EQ(Shell("nbdinfo --map " + Quote(Uri("vm")), &out), 0) << out;
  // "offset length type description" lines.
  std::istringstream lines(out);
  std::vector<std::tuple<uint64_t, uint64_t, int>> map;
  uint64_t offset, length;
  int type;
  std::string rest;
  while (lines >> offset >> length >> type && std::getline(lines, rest))
    map.emplace_back(offset, length, type);
  const std::vector<std::tuple<uint64_t, uint64_t, int>> want = {
      {0, 1 << 20, 3},  // hole,zero
      {1 << 20, 1 << 20, 0},
      {2 << 20, 8 << 20, 3},
      {10 << 20, 64 << 10, 0},
      {(10 << 20) + (64 << 10), kImageBytes - (10 << 20) - (64 << 10), 3}};
  EXPECT_EQ(map, want) << out;
  EXPECT_NE(out.find("hole,zero"), std::string::npos) << out;
}

TEST_F(NbdInteropTest, NbdcopyRoundTrip) {
  REQUIRE_TOOL("nbdcopy");
  REQUIRE_TOOL("qemu-img");
  const std::string image = MakeImage("src.img", 2);
  std::string out;
  ASSERT_EQ(Shell("nbdcopy " + Quote(image) + " " + Quote(Uri("vm")), &out), 0) << out;
  const std::string back = dir_.File("back.img");
  ASSERT_EQ(Shell("nbdcopy " + Quote(Uri("vm")) + " " + Quote(back), &out), 0) << out;
  EXPECT_EQ(Shell("cmp " + Quote(image) + " " + Quote(back), &out), 0) << out;
  // Volume to volume over two connections.
  ASSERT_EQ(Shell("nbdcopy " + Quote(Uri("vm")) + " " + Quote(Uri("copy")), &out), 0) << out;
  EXPECT_EQ(
      Shell("qemu-img compare -f raw -F raw " + Quote(image) + " " + Quote(Uri("copy")), &out), 0)
      << out;
}

TEST_F(NbdInteropTest, QemuIoPatterns) {
  REQUIRE_TOOL("qemu-io");
  std::string out;
  ASSERT_EQ(Shell("qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' "
                  "-c 'write -P 0xcd 100000 3000' -c 'read -P 0xcd 100000 3000' "
                  "-c 'read -P 0 64k 34464' -c 'write -z 8k 4k' -c 'read -P 0 8k 4k' "
                  "-c 'discard 32k 32k' -c 'read -P 0xab 16k 16k' -c 'flush' " +
                      Quote(Uri("vm")),
                  &out),
            0)
      << out;
  EXPECT_EQ(out.find("Pattern verification failed"), std::string::npos) << out;
  EXPECT_EQ(out.find("error"), std::string::npos) << out;
  // A fresh connection sees the same data.
  ASSERT_EQ(
      Shell("qemu-io -f raw -c 'read -P 0xab 0 8k' -c 'read -P 0 8k 4k' " + Quote(Uri("vm")), &out),
      0)
      << out;
  EXPECT_EQ(out.find("Pattern verification failed"), std::string::npos) << out;
  // The snapshot-free volume refuses nothing; a missing export is an error.
  EXPECT_NE(Shell("qemu-io -f raw -c 'read 0 4k' " + Quote(Uri("missing")), &out), 0) << out;
}

TEST_F(NbdInteropTest, FioNbdEngineVerifies) {
  REQUIRE_TOOL("fio");
  std::string out;
  Shell("fio --enghelp", &out);
  if (out.find("nbd") == std::string::npos) {
    GTEST_SKIP() << "fio lacks the nbd engine (fio --enghelp does not list it); skipped";
  }
  ASSERT_EQ(Shell("fio --name=verify --ioengine=nbd --uri=" + Quote(Uri("vm")) +
                      " --rw=randwrite --bs=4k --iodepth=32 --size=32m --verify=crc32c "
                      "--verify_state_save=0"
                      " --do_verify=1 --verify_fatal=1 --output-format=terse",
                  &out),
            0)
      << out << server_->Log();
  EXPECT_EQ(out.find("verify:"), std::string::npos) << out;
  ASSERT_EQ(
      Shell("fio --name=mixed --ioengine=nbd --uri=" + Quote(Uri("vm")) +
                " --rw=randrw --bs=4k-64k --iodepth=32 --size=16m --offset=32m"
                " --verify=crc32c --verify_state_save=0 --verify_fatal=1 --output-format=terse",
            &out),
      0)
      << out;
}

TEST_F(NbdInteropTest, SnapshotWhileServedThroughTheControlSocket) {
  REQUIRE_TOOL("qemu-img");
  REQUIRE_TOOL("qemu-io");
  std::string out;
  if (Shell(Quote(SnapdiskBin()) + " snapshot --help", &out) != 0 ||
      out.find("create") == std::string::npos) {
    GTEST_SKIP() << "the CLI's `snapdisk snapshot` command is not available in this build; skipped";
  }
  const std::string image = MakeImage("src.img", 3);
  ASSERT_EQ(
      Shell("qemu-img convert -n -f raw -O raw " + Quote(image) + " " + Quote(Uri("vm")), &out), 0)
      << out;
  ASSERT_EQ(Shell(Quote(SnapdiskBin()) + " snapshot create " + Quote(pool_) + " vm s1", &out), 0)
      << out << server_->Log();
  // Overwrite through NBD, and the same on a copy of the image.
  const std::string changed = dir_.File("changed.img");
  ASSERT_EQ(Shell("cp --sparse=always " + Quote(image) + " " + Quote(changed), &out), 0) << out;
  const std::string writes =
      "-c 'write -P 0x5a 512k 1M' -c 'write -P 0xa5 40M 4k' -c 'write -z 0 64k'";
  ASSERT_EQ(Shell("qemu-io -f raw " + writes + " " + Quote(Uri("vm")), &out), 0) << out;
  ASSERT_EQ(Shell("qemu-io -f raw " + writes + " " + Quote(changed), &out), 0) << out;
  EXPECT_EQ(
      Shell("qemu-img compare -f raw -F raw " + Quote(image) + " " + Quote(Uri("vm@s1")), &out), 0)
      << "snapshot differs from the original: " << out;
  EXPECT_EQ(
      Shell("qemu-img compare -f raw -F raw " + Quote(changed) + " " + Quote(Uri("vm")), &out), 0)
      << "live volume differs from the overwritten image: " << out;
  // While a client holds the volume, rollback is refused as busy (exit 4).
  {
    HeldExport held(socket_, "vm");
    ASSERT_TRUE(held.open());
    EXPECT_EQ(Shell(Quote(SnapdiskBin()) + " rollback " + Quote(pool_) + " vm s1", &out), 4) << out;
  }
}

}  // namespace
}  // namespace snapdisk
