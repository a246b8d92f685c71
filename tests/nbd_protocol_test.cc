// The NBD server speaking the protocol with a raw-socket client: handshake,
// LIST/INFO/GO, read/write round trips (simple and structured replies),
// read-only snapshots, error replies that keep the connection alive, hard
// disconnects on malformed input that leave other clients alone, pipelining,
// BLOCK_STATUS, limits, and SIGTERM committing the pool. Also unit tests of
// the wire codec (tools/nbd/nbd_protocol.h).
//
// The server is the real binary ($SNAPDISK_BIN serve), on a pool made through
// the library in a scratch directory and closed before the server starts.
#include "tools/nbd/nbd_protocol.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "disk/file_device.h"
#include "engine/pool_file.h"
#include "engine/volume.h"
#include "support/serve_process.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::ServerProcess;
using testing::SnapdiskBin;

using namespace snapdisk::nbd;  // NOLINT: the protocol's constants

constexpr uint64_t kVolumeBytes = 64 << 20;
constexpr uint32_t kMaxRequestBytes = 32 << 20;

std::vector<std::byte> Bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}

// ---- The server process ------------------------------------------------------------

// ---- A raw NBD client ---------------------------------------------------------------

struct OptReply {
  uint32_t option = 0;
  uint32_t type = 0;
  std::vector<std::byte> data;
};

struct Reply {
  bool structured = false;
  uint16_t flags = 0;  // structured only
  uint16_t type = 0;   // structured only
  uint32_t error = 0;  // simple: the error field; structured: from an error chunk
  uint64_t cookie = 0;
  std::vector<std::byte> payload;  // structured chunk payload
};

class RawClient {
 public:
  explicit RawClient(const std::string& socket_path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return fd_ >= 0; }

  bool Send(const void* p, size_t n) {
    const auto* b = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::send(fd_, b, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      b += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  bool Send(const std::vector<std::byte>& v) { return Send(v.data(), v.size()); }
  // False on EOF, error or 20 s without data.
  bool Recv(void* p, size_t n) {
    auto* b = static_cast<char*>(p);
    while (n > 0) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 20000) <= 0) return false;
      ssize_t r = ::recv(fd_, b, n, 0);
      if (r <= 0) return false;
      b += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }
  // True when the server closed the connection (EOF or reset) within 10 s.
  bool ClosedByServer() {
    char c;
    for (;;) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 10000) <= 0) return false;
      ssize_t r = ::recv(fd_, &c, 1, 0);
      if (r == 0 || (r < 0 && errno == ECONNRESET)) return true;
      if (r < 0) return false;
    }
  }

  // Reads and drops whatever arrives within `ms`.
  void Drain(int ms) {
    char sink[65536];
    for (;;) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, ms) <= 0 || ::recv(fd_, sink, sizeof sink, 0) <= 0) return;
    }
  }
  // Greeting + client flags. Returns the handshake flags.
  uint16_t Hello(uint32_t client_flags = kClientFlagFixedNewstyle | kClientFlagNoZeroes) {
    std::byte g[18];
    if (!Recv(g, sizeof g)) return 0;
    EXPECT_EQ(Load64(g), kNbdMagic);
    EXPECT_EQ(Load64(g + 8), kOptMagic);
    std::byte f[4];
    Store32(f, client_flags);
    Send(f, 4);
    return Load16(g + 16);
  }
  void Option(uint32_t option, const std::vector<std::byte>& data = {}) {
    std::vector<std::byte> m;
    MessageWriter w(m);
    w.U64(kOptMagic);
    w.U32(option);
    w.U32(static_cast<uint32_t>(data.size()));
    m.insert(m.end(), data.begin(), data.end());
    Send(m);
  }
  OptReply ReadOptReply() {
    OptReply r;
    std::byte h[20];
    if (!Recv(h, sizeof h)) {
      r.type = 0xffffffff;
      return r;
    }
    EXPECT_EQ(Load64(h), kOptReplyMagic);
    r.option = Load32(h + 8);
    r.type = Load32(h + 12);
    r.data.resize(Load32(h + 16));
    if (!r.data.empty() && !Recv(r.data.data(), r.data.size())) r.type = 0xffffffff;
    return r;
  }
  // NBD_OPT_INFO/GO data.
  static std::vector<std::byte> InfoData(const std::string& name,
                                         std::vector<uint16_t> infos = {}) {
    std::vector<std::byte> d;
    MessageWriter w(d);
    w.U32(static_cast<uint32_t>(name.size()));
    w.Bytes(name);
    w.U16(static_cast<uint16_t>(infos.size()));
    for (uint16_t i : infos) w.U16(i);
    return d;
  }
  // Full handshake into transmission on `name`; returns the transmission
  // flags (0 on failure).
  uint16_t Go(const std::string& name, bool structured, bool base_allocation = false) {
    Hello();
    if (structured) {
      Option(kOptStructuredReply);
      if (ReadOptReply().type != kRepAck) return 0;
    }
    if (base_allocation) {
      std::vector<std::byte> d;
      MessageWriter w(d);
      w.U32(static_cast<uint32_t>(name.size()));
      w.Bytes(name);
      w.U32(1);
      w.U32(static_cast<uint32_t>(kBaseAllocation.size()));
      w.Bytes(kBaseAllocation);
      Option(kOptSetMetaContext, d);
      OptReply r = ReadOptReply();
      if (r.type != kRepMetaContext) return 0;
      context_id_ = Load32(r.data.data());
      if (ReadOptReply().type != kRepAck) return 0;
    }
    structured_ = structured;
    Option(kOptGo, InfoData(name, {kInfoBlockSize}));
    uint16_t flags = 0;
    for (;;) {
      OptReply r = ReadOptReply();
      if (r.type == kRepAck) return flags;
      if (r.type != kRepInfo) return 0;
      if (Load16(r.data.data()) == kInfoExport) {
        size_ = Load64(r.data.data() + 2);
        flags = Load16(r.data.data() + 10);
      }
    }
  }

  void Request(uint16_t type, uint16_t flags, uint64_t cookie, uint64_t offset, uint32_t length,
               const std::vector<std::byte>* payload = nullptr) {
    std::byte h[kRequestBytes];
    EncodeRequest({kRequestMagic, flags, type, cookie, offset, length}, h);
    Send(h, sizeof h);
    if (payload != nullptr) Send(*payload);
  }
  // One reply message (a simple reply, or one structured chunk). For a simple
  // reply to a successful read, `read_length` bytes of data follow.
  Reply ReadReply(uint32_t read_length = 0) {
    Reply r;
    std::byte m[4];
    if (!Recv(m, 4)) {
      r.error = 0xffffffff;
      return r;
    }
    if (Load32(m) == kSimpleReplyMagic) {
      std::byte h[12];
      if (!Recv(h, 12)) r.error = 0xffffffff;
      r.error = Load32(h);
      r.cookie = Load64(h + 4);
      if (r.error == 0 && read_length > 0) {
        r.payload.resize(read_length);
        if (!Recv(r.payload.data(), read_length)) r.error = 0xffffffff;
      }
      return r;
    }
    EXPECT_EQ(Load32(m), kStructuredReplyMagic);
    r.structured = true;
    std::byte h[16];
    if (!Recv(h, 16)) {
      r.error = 0xffffffff;
      return r;
    }
    r.flags = Load16(h);
    r.type = Load16(h + 2);
    r.cookie = Load64(h + 4);
    r.payload.resize(Load32(h + 12));
    if (!r.payload.empty() && !Recv(r.payload.data(), r.payload.size())) r.error = 0xffffffff;
    if ((r.type & 0x8000) != 0 && r.payload.size() >= 6) r.error = Load32(r.payload.data());
    return r;
  }
  // Synchronous helpers in transmission.
  uint32_t Write(uint64_t offset, const std::vector<std::byte>& data, uint16_t flags = 0) {
    Request(kCmdWrite, flags, ++cookie_, offset, static_cast<uint32_t>(data.size()), &data);
    Reply r = ReadReply();
    EXPECT_EQ(r.cookie, cookie_);
    return r.error;
  }
  uint32_t Command(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
    Request(type, flags, ++cookie_, offset, length);
    Reply r = ReadReply();
    EXPECT_EQ(r.cookie, cookie_);
    return r.error;
  }
  // Reads into `out`; returns the NBD error.
  uint32_t Read(uint64_t offset, uint32_t length, std::vector<std::byte>* out) {
    Request(kCmdRead, 0, ++cookie_, offset, length);
    out->assign(length, std::byte{0});
    for (;;) {
      Reply r = ReadReply(length);
      EXPECT_EQ(r.cookie, cookie_);
      if (!r.structured) {
        if (r.error == 0) *out = std::move(r.payload);
        return r.error;
      }
      if (r.error != 0) {
        // Skip to the final chunk.
        while ((r.flags & kReplyFlagDone) == 0) r = ReadReply();
        return Load32(r.payload.data()) != 0 ? Load32(r.payload.data()) : r.error;
      }
      if (r.type == kReplyTypeOffsetData) {
        const uint64_t at = Load64(r.payload.data());
        EXPECT_GE(at, offset);
        std::memcpy(out->data() + (at - offset), r.payload.data() + 8, r.payload.size() - 8);
      } else if (r.type == kReplyTypeOffsetHole) {
        // zeros already
      }
      if ((r.flags & kReplyFlagDone) != 0) return 0;
    }
  }
  uint64_t size() const { return size_; }
  uint32_t context_id() const { return context_id_; }
  uint64_t next_cookie() { return ++cookie_; }

 private:
  int fd_ = -1;
  bool structured_ = false;
  uint64_t size_ = 0;
  uint32_t context_id_ = 0;
  uint64_t cookie_ = 1000;
};

// ---- Fixture: a pool with two volumes and a snapshot, served -----------------------

class NbdProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (SnapdiskBin().empty()) {
      GTEST_SKIP() << "no snapdisk binary: set SNAPDISK_BIN";
    }
    pool_path_ = dir_.File("pool");
    socket_path_ = dir_.File("nbd.sock");
    old_ = testing::PatternBytes(1, 1 << 20);
    new_ = testing::PatternBytes(2, 64 << 10);
    {
      auto pf = PoolFile::Create(pool_path_, 512 << 20);
      ASSERT_TRUE(pf.ok()) << pf.status().ToString();
      Pool& pool = (*pf)->pool();
      ASSERT_TRUE(pool.CreateVolume("db", kVolumeBytes).ok());
      ASSERT_TRUE(pool.CreateVolume("other", 16 << 20).ok());
      Volume* db = *pool.OpenVolume("db");
      ASSERT_TRUE(db->Write(0, old_).ok());
      ASSERT_TRUE(pool.CreateSnapshot("db", "s1").ok());
      ASSERT_TRUE(db->Write(0, new_).ok());  // the live volume now differs from s1
      ASSERT_TRUE((*pf)->Close().ok());
    }
    StartServer();
  }
  void StartServer() {
    server_ = std::make_unique<ServerProcess>(
        pool_path_, std::vector<std::string>{"--socket", socket_path_}, dir_.File("server.log"));
    ASSERT_TRUE(server_->WaitReady()) << server_->Log();
  }
  void TearDown() override {
    if (server_) {
      EXPECT_EQ(server_->Stop(), 0) << server_->Log();
    }
  }

  testing::ScratchDir dir_;
  std::string pool_path_, socket_path_;
  std::vector<std::byte> old_, new_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(NbdProtocolTest, ReadyLineNamesSocketAndCounts) {
  const std::string log = server_->Log();
  EXPECT_NE(log.find("on unix:" + socket_path_), std::string::npos) << log;
  EXPECT_NE(log.find("(2 volumes, 1 snapshots)"), std::string::npos) << log;
}

TEST_F(NbdProtocolTest, HandshakeListInfoUnknownAbort) {
  RawClient c(socket_path_);
  ASSERT_TRUE(c.connected());
  const uint16_t hs = c.Hello();
  EXPECT_TRUE(hs & kFlagFixedNewstyle);
  EXPECT_TRUE(hs & kFlagNoZeroes);

  c.Option(kOptList);
  std::vector<std::string> names;
  for (;;) {
    OptReply r = c.ReadOptReply();
    ASSERT_EQ(r.option, kOptList);
    if (r.type == kRepAck) break;
    ASSERT_EQ(r.type, kRepServer);
    const uint32_t n = Load32(r.data.data());
    names.emplace_back(reinterpret_cast<const char*>(r.data.data() + 4), n);
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"db", "db@s1", "other"}));

  // LIST with data is invalid, and the session goes on.
  c.Option(kOptList, Bytes("x"));
  EXPECT_EQ(c.ReadOptReply().type, kRepErrInvalid);

  auto info = [&](const std::string& name, uint64_t* size, uint16_t* flags,
                  uint32_t block_size[3]) {
    c.Option(kOptInfo, RawClient::InfoData(name, {kInfoBlockSize, kInfoName}));
    std::string canonical;
    for (;;) {
      OptReply r = c.ReadOptReply();
      if (r.type != kRepInfo) return r.type;
      const uint16_t t = Load16(r.data.data());
      if (t == kInfoExport) {
        EXPECT_EQ(r.data.size(), 12u);
        *size = Load64(r.data.data() + 2);
        *flags = Load16(r.data.data() + 10);
      } else if (t == kInfoBlockSize) {
        EXPECT_EQ(r.data.size(), 14u);
        for (int i = 0; i < 3; ++i) block_size[i] = Load32(r.data.data() + 2 + 4 * i);
      } else if (t == kInfoName) {
        canonical.assign(reinterpret_cast<const char*>(r.data.data() + 2), r.data.size() - 2);
        EXPECT_EQ(canonical, name);
      }
    }
  };
  uint64_t size = 0;
  uint16_t flags = 0;
  uint32_t bs[3] = {};
  ASSERT_EQ(info("db", &size, &flags, bs), kRepAck);
  EXPECT_EQ(size, kVolumeBytes);
  for (uint16_t f : {kFlagHasFlags, kFlagSendFlush, kFlagSendFua, kFlagSendTrim,
                     kFlagSendWriteZeroes, kFlagCanMultiConn}) {
    EXPECT_TRUE(flags & f) << "flag " << f << " missing from " << flags;
  }
  EXPECT_FALSE(flags & kFlagReadOnly);
  EXPECT_EQ(bs[0], 1u);
  EXPECT_EQ(bs[1], 4096u);
  EXPECT_EQ(bs[2], kMaxRequestBytes);

  ASSERT_EQ(info("db@s1", &size, &flags, bs), kRepAck);
  EXPECT_EQ(size, kVolumeBytes);
  EXPECT_TRUE(flags & kFlagReadOnly);

  EXPECT_EQ(info("nope", &size, &flags, bs), kRepErrUnknown);
  EXPECT_EQ(info("db@nope", &size, &flags, bs), kRepErrUnknown);
  // Two volumes: no default export.
  EXPECT_EQ(info("", &size, &flags, bs), kRepErrUnknown);

  // Malformed INFO data, unknown option, STARTTLS: errors, not hang-ups.
  c.Option(kOptInfo, Bytes("\x00\x00\x00\x10"
                           "db"));
  EXPECT_EQ(c.ReadOptReply().type, kRepErrInvalid);
  c.Option(99, Bytes("whatever"));
  EXPECT_EQ(c.ReadOptReply().type, kRepErrUnsup);
  c.Option(kOptStartTls);
  EXPECT_EQ(c.ReadOptReply().type, kRepErrUnsup);
  // Meta contexts need structured replies first.
  c.Option(kOptSetMetaContext, Bytes(std::string("\x00\x00\x00\x02"
                                                 "db"
                                                 "\x00\x00\x00\x00",
                                                 10)));
  EXPECT_EQ(c.ReadOptReply().type, kRepErrInvalid);

  c.Option(kOptAbort);
  OptReply r = c.ReadOptReply();
  EXPECT_EQ(r.type, kRepAck);
  EXPECT_TRUE(c.ClosedByServer());
}

TEST_F(NbdProtocolTest, ListMetaContext) {
  RawClient c(socket_path_);
  c.Hello();
  c.Option(kOptStructuredReply);
  ASSERT_EQ(c.ReadOptReply().type, kRepAck);
  std::vector<std::byte> d;
  MessageWriter w(d);
  w.U32(2);
  w.Bytes("db");
  w.U32(2);
  w.U32(5);
  w.Bytes("base:");
  w.U32(9);
  w.Bytes("qemu:junk");
  c.Option(kOptListMetaContext, d);
  OptReply r = c.ReadOptReply();
  ASSERT_EQ(r.type, kRepMetaContext);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(r.data.data() + 4), r.data.size() - 4),
            kBaseAllocation);
  EXPECT_EQ(c.ReadOptReply().type, kRepAck);
}

TEST_F(NbdProtocolTest, ReadWriteRoundTripStructuredAndSimple) {
  for (bool structured : {true, false}) {
    SCOPED_TRACE(structured ? "structured" : "simple");
    RawClient c(socket_path_);
    const uint16_t flags = c.Go("db", structured);
    ASSERT_NE(flags, 0);
    EXPECT_EQ(c.size(), kVolumeBytes);
    std::vector<std::byte> got;
    // The live volume's data, as written before the server started.
    ASSERT_EQ(c.Read(0, 64 << 10, &got), 0u);
    EXPECT_EQ(got, new_);
    // Unaligned write spanning blocks, then aligned, read back.
    const auto data = testing::PatternBytes(structured ? 10 : 11, 200000);
    const uint64_t at = (2 << 20) + 777;
    ASSERT_EQ(c.Write(at, data), 0u);
    ASSERT_EQ(c.Read(at, static_cast<uint32_t>(data.size()), &got), 0u);
    EXPECT_EQ(got, data);
    const auto big = testing::PatternBytes(12, 1 << 20);  // received straight into the slot
    ASSERT_EQ(c.Write(8 << 20, big, kCmdFlagFua), 0u);
    ASSERT_EQ(c.Read(8 << 20, 1 << 20, &got), 0u);
    EXPECT_EQ(got, big);
    EXPECT_EQ(c.Command(kCmdFlush, 0, 0), 0u);
    // Zero-length requests are answered, not hung up on.
    EXPECT_EQ(c.Command(kCmdWrite, 0, 0), 0u);
    EXPECT_EQ(c.Read(0, 0, &got), 0u);
    c.Request(kCmdDisc, 0, 1, 0, 0);
    EXPECT_TRUE(c.ClosedByServer());
  }
}

TEST_F(NbdProtocolTest, TrimWriteZeroesAndBlockStatus) {
  RawClient c(socket_path_);
  ASSERT_NE(c.Go("db", true, /*base_allocation=*/true), 0);
  auto status = [&](uint64_t offset, uint32_t length, uint16_t flags = 0) {
    c.Request(kCmdBlockStatus, flags, c.next_cookie(), offset, length);
    Reply r = c.ReadReply();
    std::vector<std::pair<uint32_t, uint32_t>> extents;
    EXPECT_EQ(r.error, 0u);
    EXPECT_EQ(r.type, kReplyTypeBlockStatus);
    EXPECT_TRUE(r.flags & kReplyFlagDone);
    EXPECT_EQ(Load32(r.payload.data()), c.context_id());
    for (size_t i = 4; i + 8 <= r.payload.size(); i += 8) {
      extents.emplace_back(Load32(r.payload.data() + i), Load32(r.payload.data() + i + 4));
    }
    return extents;
  };
  // 1 MiB of data (the snapshot's, partly overwritten), then a hole.
  auto e = status(0, kVolumeBytes);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0], std::make_pair(uint32_t{1 << 20}, uint32_t{0}));
  EXPECT_EQ(e[1], std::make_pair(uint32_t{kVolumeBytes - (1 << 20)}, kStateHole | kStateZero));
  e = status(0, kVolumeBytes, kCmdFlagReqOne);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].first, uint32_t{1 << 20});

  // Write zeroes (aligned: unmapped; unaligned: zeroed in place) and trim.
  ASSERT_EQ(c.Command(kCmdWriteZeroes, 0, 64 << 10, kCmdFlagFastZero), 0u);
  ASSERT_EQ(c.Command(kCmdWriteZeroes, 100000, 5000, kCmdFlagNoHole | kCmdFlagFua), 0u);
  EXPECT_EQ(c.Command(kCmdWriteZeroes, 100000, 5000, kCmdFlagFastZero), kEnotsup);
  ASSERT_EQ(c.Command(kCmdTrim, 512 << 10, (256 << 10) + 100), 0u);
  std::vector<std::byte> got;
  ASSERT_EQ(c.Read(0, 1 << 20, &got), 0u);
  std::vector<std::byte> want = old_;
  std::fill(want.begin(), want.begin() + (64 << 10), std::byte{0});
  std::fill(want.begin() + 100000, want.begin() + 105000, std::byte{0});
  std::fill(want.begin() + (512 << 10), want.begin() + (768 << 10), std::byte{0});
  EXPECT_TRUE(got == want) << "data after write-zeroes/trim differs";
  e = status(0, 1 << 20);
  ASSERT_GE(e.size(), 3u);
  EXPECT_EQ(e[0], std::make_pair(uint32_t{64 << 10}, kStateHole | kStateZero));
  // Beyond the end: EINVAL, and the connection stays.
  EXPECT_EQ(c.Command(kCmdBlockStatus, kVolumeBytes - 4096, 8192), kEinval);
  ASSERT_EQ(c.Read(0, 4096, &got), 0u);
}

TEST_F(NbdProtocolTest, BlockStatusNeedsMetaContext) {
  RawClient c(socket_path_);
  ASSERT_NE(c.Go("db", true, false), 0);
  EXPECT_EQ(c.Command(kCmdBlockStatus, 0, 4096), kEinval);
}

TEST_F(NbdProtocolTest, SnapshotExportIsReadOnly) {
  RawClient c(socket_path_);
  const uint16_t flags = c.Go("db@s1", true);
  ASSERT_NE(flags, 0);
  EXPECT_TRUE(flags & kFlagReadOnly);
  std::vector<std::byte> got;
  ASSERT_EQ(c.Read(0, 1 << 20, &got), 0u);
  EXPECT_TRUE(got == old_) << "the snapshot must show the data from before it was taken";
  EXPECT_EQ(c.Write(0, testing::PatternBytes(3, 4096)), kEperm);
  EXPECT_EQ(c.Command(kCmdTrim, 0, 4096), kEperm);
  EXPECT_EQ(c.Command(kCmdWriteZeroes, 0, 4096), kEperm);
  EXPECT_EQ(c.Command(kCmdFlush, 0, 0), 0u);
  ASSERT_EQ(c.Read(0, 4096, &got), 0u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), old_.begin()));
  // Simple replies too.
  RawClient s(socket_path_);
  ASSERT_NE(s.Go("db@s1", false), 0);
  EXPECT_EQ(s.Write(0, testing::PatternBytes(3, 4096)), kEperm);
  ASSERT_EQ(s.Read(4096, 4096, &got), 0u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), old_.begin() + 4096));
}

TEST_F(NbdProtocolTest, OutOfRangeAndBadRequestsGetErrorsAndConnectionLives) {
  for (bool structured : {true, false}) {
    SCOPED_TRACE(structured ? "structured" : "simple");
    RawClient c(socket_path_);
    ASSERT_NE(c.Go("db", structured), 0);
    std::vector<std::byte> got;
    EXPECT_EQ(c.Read(kVolumeBytes - 4096, 8192, &got), kEinval);
    EXPECT_EQ(c.Read(~uint64_t{0} - 10, 4096, &got), kEinval);  // offset + length overflows
    EXPECT_EQ(c.Write(kVolumeBytes, testing::PatternBytes(4, 4096)), kEnospc);
    EXPECT_EQ(c.Command(kCmdTrim, kVolumeBytes, 4096), kEinval);
    EXPECT_EQ(c.Command(kCmdWriteZeroes, kVolumeBytes - 512, 4096), kEnospc);
    EXPECT_EQ(c.Command(77, 0, 4096), kEinval);              // unknown command
    EXPECT_EQ(c.Command(kCmdFlush, 0, 0, 1 << 9), kEinval);  // unknown flag
    EXPECT_EQ(c.Read(0, 4096, &got), 0u);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), new_.begin()));
  }
}

TEST_F(NbdProtocolTest, RequestsOverTheSizeLimitGetEinval) {
  RawClient c(socket_path_);
  ASSERT_NE(c.Go("db", true), 0);
  std::vector<std::byte> got;
  EXPECT_EQ(c.Read(0, kMaxRequestBytes + 4096, &got), kEinval);
  // A too-long write's payload is read and dropped; the stream stays in sync.
  const std::vector<std::byte> huge(kMaxRequestBytes + 4096, std::byte{0x5a});
  EXPECT_EQ(c.Write(0, huge), kEinval);
  ASSERT_EQ(c.Read(0, 4096, &got), 0u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), new_.begin())) << "the refused write changed data";
  // Exactly the limit works.
  const auto max = testing::PatternBytes(5, kMaxRequestBytes);
  EXPECT_EQ(c.Write(16 << 20, max), 0u);
  ASSERT_EQ(c.Read(16 << 20, kMaxRequestBytes, &got), 0u);
  EXPECT_TRUE(got == max);
}

TEST_F(NbdProtocolTest, MalformedInputClosesOnlyThatConnection) {
  RawClient good(socket_path_);
  ASSERT_NE(good.Go("db", true), 0);
  {
    // Bad request magic in transmission.
    RawClient bad(socket_path_);
    ASSERT_NE(bad.Go("db", true), 0);
    const std::vector<std::byte> junk(28, std::byte{0x42});
    bad.Send(junk);
    EXPECT_TRUE(bad.ClosedByServer());
  }
  {
    // Bad option magic in the handshake.
    RawClient bad(socket_path_);
    bad.Hello();
    const std::vector<std::byte> junk(16, std::byte{0x17});
    bad.Send(junk);
    EXPECT_TRUE(bad.ClosedByServer());
  }
  {
    // Unknown client flags.
    RawClient bad(socket_path_);
    bad.Hello(0x80);
    EXPECT_TRUE(bad.ClosedByServer());
  }
  {
    // An absurd option length (denial of service).
    RawClient bad(socket_path_);
    bad.Hello();
    std::vector<std::byte> m;
    MessageWriter w(m);
    w.U64(kOptMagic);
    w.U32(kOptGo);
    w.U32(0x7fffffff);
    bad.Send(m);
    EXPECT_TRUE(bad.ClosedByServer());
  }
  {
    // A client vanishing mid-request.
    RawClient bad(socket_path_);
    ASSERT_NE(bad.Go("db", true), 0);
    bad.Request(kCmdWrite, 0, 1, 0, 65536);
    bad.Send(std::vector<std::byte>(1000, std::byte{1}));
  }
  // The first client and a new one still work.
  std::vector<std::byte> got;
  ASSERT_EQ(good.Read(0, 4096, &got), 0u);
  RawClient again(socket_path_);
  ASSERT_NE(again.Go("db", false), 0);
  ASSERT_EQ(again.Read(0, 4096, &got), 0u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), new_.begin()));
}

TEST_F(NbdProtocolTest, SixtyFourRequestsPipelined) {
  RawClient c(socket_path_);
  ASSERT_NE(c.Go("db", true), 0);
  constexpr int kRequests = 64;
  constexpr uint32_t kLen = 16 << 10;
  std::vector<std::vector<std::byte>> data;
  // All 64 writes in one send, then all 64 reads in one send.
  std::vector<std::byte> batch;
  for (int i = 0; i < kRequests; ++i) {
    data.push_back(testing::PatternBytes(100 + i, kLen));
    std::byte h[kRequestBytes];
    EncodeRequest({kRequestMagic, 0, kCmdWrite, uint64_t(i), uint64_t(i) * 3 * kLen + 512, kLen},
                  h);
    batch.insert(batch.end(), h, h + kRequestBytes);
    batch.insert(batch.end(), data.back().begin(), data.back().end());
  }
  ASSERT_TRUE(c.Send(batch));
  std::map<uint64_t, int> seen;
  for (int i = 0; i < kRequests; ++i) {
    Reply r = c.ReadReply();
    EXPECT_EQ(r.error, 0u);
    ++seen[r.cookie];
  }
  EXPECT_EQ(seen.size(), size_t{kRequests});
  batch.clear();
  for (int i = 0; i < kRequests; ++i) {
    std::byte h[kRequestBytes];
    EncodeRequest(
        {kRequestMagic, 0, kCmdRead, uint64_t(1000 + i), uint64_t(i) * 3 * kLen + 512, kLen}, h);
    batch.insert(batch.end(), h, h + kRequestBytes);
  }
  ASSERT_TRUE(c.Send(batch));
  int ok = 0;
  for (int i = 0; i < kRequests; ++i) {
    Reply r = c.ReadReply();
    ASSERT_EQ(r.type, kReplyTypeOffsetData);
    ASSERT_TRUE(r.flags & kReplyFlagDone);
    const int index = static_cast<int>(r.cookie - 1000);
    ASSERT_GE(index, 0);
    ASSERT_LT(index, kRequests);
    EXPECT_EQ(Load64(r.payload.data()), uint64_t(index) * 3 * kLen + 512);
    ok +=
        std::equal(r.payload.begin() + 8, r.payload.end(), data[index].begin(), data[index].end());
  }
  EXPECT_EQ(ok, kRequests);
}

TEST_F(NbdProtocolTest, ManyClientsAtOnce) {
  constexpr int kClients = 8;
  std::vector<std::thread> threads;
  std::vector<int> good(kClients, 0);
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      RawClient c(socket_path_);
      if (c.Go(t % 2 ? "db" : "other", t % 3 != 0) == 0) return;
      const uint64_t base = uint64_t(t % 2 ? 24 + t : t) << 20;
      std::vector<std::byte> batch;
      std::vector<std::vector<std::byte>> data;
      for (int i = 0; i < 40; ++i) {
        data.push_back(testing::PatternBytes(1000 * t + i, 4096));
        std::byte h[kRequestBytes];
        EncodeRequest({kRequestMagic, 0, kCmdWrite, uint64_t(i), base + i * 4096, 4096}, h);
        batch.insert(batch.end(), h, h + kRequestBytes);
        batch.insert(batch.end(), data.back().begin(), data.back().end());
      }
      c.Send(batch);
      for (int i = 0; i < 40; ++i) {
        if (c.ReadReply().error != 0) return;
      }
      std::vector<std::byte> got;
      for (int i = 0; i < 40; ++i) {
        if (c.Read(base + i * 4096, 4096, &got) != 0 || got != data[i]) return;
      }
      good[t] = 1;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kClients; ++t) EXPECT_EQ(good[t], 1) << "client " << t;
}

TEST_F(NbdProtocolTest, OldStyleExportNameOption) {
  RawClient c(socket_path_);
  c.Hello(kClientFlagFixedNewstyle);  // no NO_ZEROES: 124 zero bytes follow
  c.Option(kOptExportName, Bytes("db@s1"));
  std::byte reply[8 + 2 + 124];
  ASSERT_TRUE(c.Recv(reply, sizeof reply));
  EXPECT_EQ(Load64(reply), kVolumeBytes);
  EXPECT_TRUE(Load16(reply + 8) & kFlagReadOnly);
  std::vector<std::byte> got;
  ASSERT_EQ(c.Read(0, 4096, &got), 0u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), old_.begin()));
  // An unknown name cannot get an error reply: the server hangs up.
  RawClient d(socket_path_);
  d.Hello();
  d.Option(kOptExportName, Bytes("missing"));
  EXPECT_TRUE(d.ClosedByServer());
}

TEST_F(NbdProtocolTest, SigtermFinishesRequestsCommitsAndExitsZero) {
  const auto data = testing::PatternBytes(77, 256 << 10);
  {
    RawClient c(socket_path_);
    ASSERT_NE(c.Go("other", true), 0);
    ASSERT_EQ(c.Write(4 << 20, data), 0u);  // no flush: SIGTERM must commit it
    for (int i = 0; i < 16; ++i) {
      std::vector<std::byte> chunk(data.begin() + i * 4096, data.begin() + (i + 1) * 4096);
      c.Request(kCmdWrite, 0, 500 + i, (5 << 20) + i * 4096, 4096, &chunk);
    }
    for (int i = 0; i < 16; ++i) ASSERT_EQ(c.ReadReply().error, 0u);
    // More requests, possibly still in flight when the signal lands: the
    // server must not crash or hang on them (they may or may not be applied).
    for (int i = 0; i < 16; ++i) {
      std::vector<std::byte> chunk(4096, std::byte{0x33});
      c.Request(kCmdWrite, 0, 600 + i, (6 << 20) + i * 4096, 4096, &chunk);
    }
    EXPECT_EQ(server_->Stop(SIGTERM), 0) << server_->Log();
  }
  const std::string log = server_->Log();
  EXPECT_NE(log.find("committed"), std::string::npos) << log;
  server_.reset();
  EXPECT_FALSE(std::filesystem::exists(socket_path_)) << "socket left behind";
  EXPECT_FALSE(std::filesystem::exists(pool_path_ + ".ctl")) << "control socket left behind";
  auto pf = PoolFile::Open(pool_path_);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  Volume* v = *(*pf)->pool().OpenVolume("other");
  std::vector<std::byte> got(data.size());
  ASSERT_TRUE(v->Read(4 << 20, got).ok());
  EXPECT_TRUE(got == data);
  ASSERT_TRUE(v->Read(5 << 20, std::span(got).subspan(0, 16 * 4096)).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + 16 * 4096, data.begin()));
}

TEST_F(NbdProtocolTest, SigintAlsoExitsZero) {
  EXPECT_EQ(server_->Stop(SIGINT), 0) << server_->Log();
  server_.reset();
}

TEST_F(NbdProtocolTest, SecondServerIsBusyMissingAndCorruptPools) {
  // The pool is held: exit 4 with a message naming the holder.
  ServerProcess second(pool_path_, {"--socket", dir_.File("second.sock")}, dir_.File("second.log"));
  EXPECT_EQ(second.Stop(0), 4) << second.Log();
  EXPECT_NE(second.Log().find("in use"), std::string::npos) << second.Log();
  // A missing pool: exit 3 (the pool is opened before any socket is touched,
  // so the running server's socket is left alone).
  ServerProcess third(dir_.File("missing-pool"), {"--socket", socket_path_},
                      dir_.File("third.log"));
  EXPECT_EQ(third.Stop(0), 3) << third.Log();
  {
    std::ofstream junk(dir_.File("junk"));
    junk << std::string(1 << 20, 'x');
  }
  ServerProcess fourth(dir_.File("junk"), {"--socket", dir_.File("fourth.sock")},
                       dir_.File("fourth.log"));
  EXPECT_EQ(fourth.Stop(0), 5) << fourth.Log();
  ServerProcess fifth(pool_path_, {}, dir_.File("fifth.log"));  // neither --socket nor --port
  EXPECT_EQ(fifth.Stop(0), 2) << fifth.Log();
  RawClient c(socket_path_);
  ASSERT_NE(c.Go("db", true), 0);
}

TEST_F(NbdProtocolTest, TcpOnLoopback) {
  ServerProcess tcp(dir_.File("tcp-pool-missing"), {"--port", "0"}, dir_.File("tcp.log"));
  EXPECT_EQ(tcp.Stop(0), 3);  // the pool is checked first
  // The real pool is held by the fixture's server; stop it and serve over TCP.
  ASSERT_EQ(server_->Stop(), 0);
  server_.reset();
  ServerProcess s(pool_path_, {"--port", "0"}, dir_.File("tcp2.log"));
  ASSERT_TRUE(s.WaitReady()) << s.Log();
  const std::string log = s.Log();
  const size_t at = log.find("on tcp:127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << log;
  const int port = std::atoi(log.c_str() + at + std::strlen("on tcp:127.0.0.1:"));
  ASSERT_GT(port, 0);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::byte g[18];
  ASSERT_EQ(::recv(fd, g, sizeof g, MSG_WAITALL), 18);
  EXPECT_EQ(Load64(g), kNbdMagic);
  ::close(fd);
  EXPECT_EQ(s.Stop(), 0) << s.Log();
}

// Random handshakes, options, request headers (valid magic, random fields)
// and payloads, with clients hanging up at random points: the server answers
// or hangs up on each, and keeps serving. Seeded (--seed N repeats a run).
TEST_F(NbdProtocolTest, RandomInputNeverBreaksTheServer) {
  std::mt19937_64 rng(testing::TestSeed(20240611));
  auto pick = [&](uint64_t n) { return rng() % n; };
  const uint64_t iterations = 150 * testing::TestScale();
  for (uint64_t it = 0; it < iterations; ++it) {
    RawClient c(socket_path_);
    ASSERT_TRUE(c.connected()) << "iteration " << it << ": server gone\n" << server_->Log();
    std::vector<std::byte> junk;
    auto random_bytes = [&](size_t n) {
      for (size_t i = 0; i < n; ++i) junk.push_back(static_cast<std::byte>(rng()));
    };
    const uint64_t stage = pick(4);
    if (stage == 0) {
      random_bytes(pick(64));  // garbage instead of client flags
    } else if (stage == 1) {
      c.Hello();
      for (uint64_t n = pick(4); n > 0; --n) {  // random options
        std::vector<std::byte> data;
        MessageWriter w(data);
        const uint32_t option = static_cast<uint32_t>(pick(12));
        if (pick(2) == 0) {
          w.U32(static_cast<uint32_t>(pick(2) ? pick(300) : rng()));
          w.Bytes("db");
          w.U32(static_cast<uint32_t>(pick(3)));
        }
        for (uint64_t k = pick(40); k > 0; --k) data.push_back(static_cast<std::byte>(rng()));
        c.Option(option, data);
      }
    } else {
      if (c.Go(pick(2) ? "db" : "db@s1", stage == 2, stage == 2 && pick(2)) == 0) continue;
      for (uint64_t n = pick(8); n > 0; --n) {
        const uint64_t offsets[] = {0, kVolumeBytes - 4096, kVolumeBytes, rng(),
                                    pick(kVolumeBytes)};
        const uint32_t lengths[] = {0,
                                    1,
                                    4096,
                                    kMaxRequestBytes + 1,
                                    static_cast<uint32_t>(rng()),
                                    static_cast<uint32_t>(pick(70000))};
        Request r{kRequestMagic,
                  static_cast<uint16_t>(pick(4) ? pick(32) : rng()),
                  static_cast<uint16_t>(pick(9)),
                  rng(),
                  offsets[pick(5)],
                  lengths[pick(6)]};
        if (pick(10) == 0) r.magic = static_cast<uint32_t>(rng());
        std::byte h[kRequestBytes];
        EncodeRequest(r, h);
        junk.insert(junk.end(), h, h + kRequestBytes);
        if (r.type == kCmdWrite) {
          // The whole payload, or a random part of it (then the next header
          // lands inside the payload, as garbage).
          random_bytes(pick(2) && r.length <= (1 << 20) ? r.length : pick(5000));
        }
      }
    }
    c.Send(junk);
    if (pick(2) == 0) c.Drain(20);  // read what comes back for a moment, then hang up
  }
  // Everyone else is still served.
  RawClient ok(socket_path_);
  ASSERT_NE(ok.Go("db", true), 0) << server_->Log();
  std::vector<std::byte> got;
  ASSERT_EQ(ok.Read(0, 4096, &got), 0u);
}

// ---- The FileDevice eventfd the server's loop waits on -------------------------------

bool Readable(int fd, int timeout_ms) {
  pollfd pfd{fd, POLLIN, 0};
  return ::poll(&pfd, 1, timeout_ms) == 1;
}

TEST(NbdEventFdTest, FileDeviceSignalsQueuedAndFinishedWork) {
  for (bool sync_io : {false, true}) {
    SCOPED_TRACE(sync_io ? "pread/pwrite fallback" : "io_uring");
    testing::ScratchDir dir;
    FileDeviceOptions options;
    options.force_sync_io = sync_io;
    options.completion_batch = 1;  // leaves completions behind in the CQ
    auto device = FileDevice::Create(dir.File("dev"), 1 << 20, options);
    ASSERT_TRUE(device.ok()) << device.status().ToString();
    FileDevice& d = **device;
    const int efd = d.completion_event_fd();
    ASSERT_GE(efd, 0);
    EXPECT_EQ(d.completion_event_fd(), efd) << "one eventfd per device";
    EXPECT_TRUE(Readable(efd, 0)) << "readable at once when made";
    eventfd_t value;
    (void)eventfd_read(efd, &value);
    d.Poll(0);  // read, then Poll: the documented pattern
    EXPECT_FALSE(Readable(efd, 0)) << "idle device signals nothing";
    // Requests queued outside Poll make it readable, before any Poll.
    std::vector<std::byte> data(4096, std::byte{7});
    int done = 0;
    IoRequest r[4];
    for (int i = 0; i < 4; ++i) {
      r[i] = IoRequest{IoOp::kWrite, uint64_t(i) * 4096, 4096, data.data(),
                       [&](IoRequest&, const Status& s) { done += s.ok(); }};
      ASSERT_TRUE(d.Submit(r[i]).ok());
    }
    ASSERT_TRUE(Readable(efd, 1000));
    // Poll(0) until everything is delivered, waiting only on the eventfd.
    for (int rounds = 0; done < 4 && rounds < 100; ++rounds) {
      ASSERT_TRUE(Readable(efd, 2000)) << "work left but the eventfd is quiet; done " << done;
      (void)eventfd_read(efd, &value);
      d.Poll(0);
    }
    EXPECT_EQ(done, 4);
    EXPECT_EQ(d.in_flight(), 0u);
  }
}

// ---- Codec unit tests ---------------------------------------------------------------

TEST(NbdCodecTest, RequestRoundTripBigEndian) {
  std::byte b[kRequestBytes];
  EncodeRequest({kRequestMagic, kCmdFlagFua, kCmdWrite, 0x0102030405060708ull,
                 0x1122334455667788ull, 0xdeadbeef},
                b);
  EXPECT_EQ(b[0], std::byte{0x25});
  EXPECT_EQ(b[3], std::byte{0x13});
  const Request r = DecodeRequest(b);
  EXPECT_EQ(r.magic, kRequestMagic);
  EXPECT_EQ(r.flags, kCmdFlagFua);
  EXPECT_EQ(r.type, kCmdWrite);
  EXPECT_EQ(r.cookie, 0x0102030405060708ull);
  EXPECT_EQ(r.offset, 0x1122334455667788ull);
  EXPECT_EQ(r.length, 0xdeadbeefu);
}

TEST(NbdCodecTest, InfoRequestValidation) {
  auto ok = DecodeInfoRequest(RawClient::InfoData("db@s1", {kInfoBlockSize, kInfoName}));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->name, "db@s1");
  EXPECT_EQ(ok->info_types, (std::vector<uint16_t>{kInfoBlockSize, kInfoName}));
  auto data = RawClient::InfoData("db", {kInfoName});
  for (size_t cut = 0; cut < data.size(); ++cut) {
    EXPECT_FALSE(DecodeInfoRequest(std::span(data).subspan(0, cut)).ok()) << cut;
  }
  data.push_back(std::byte{0});
  EXPECT_FALSE(DecodeInfoRequest(data).ok());
  // A name length far beyond the data.
  std::vector<std::byte> lie(6, std::byte{0xff});
  EXPECT_FALSE(DecodeInfoRequest(lie).ok());
}

TEST(NbdCodecTest, MetaContextRequestValidation) {
  std::vector<std::byte> d;
  MessageWriter w(d);
  w.U32(2);
  w.Bytes("db");
  w.U32(2);
  w.U32(15);
  w.Bytes("base:allocation");
  w.U32(0);
  auto ok = DecodeMetaContextRequest(d);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->name, "db");
  EXPECT_EQ(ok->queries, (std::vector<std::string>{"base:allocation", ""}));
  for (size_t cut = 0; cut < d.size(); ++cut) {
    EXPECT_FALSE(DecodeMetaContextRequest(std::span(d).subspan(0, cut)).ok()) << cut;
  }
  std::vector<std::byte> huge_count;
  MessageWriter h(huge_count);
  h.U32(0);
  h.U32(0xffffffff);
  EXPECT_FALSE(DecodeMetaContextRequest(huge_count).ok());
}

TEST(NbdCodecTest, ExportNamesAndErrors) {
  EXPECT_EQ(ParseExportName("db").volume, "db");
  EXPECT_EQ(ParseExportName("db").snapshot, "");
  EXPECT_EQ(ParseExportName("db@s1").volume, "db");
  EXPECT_EQ(ParseExportName("db@s1").snapshot, "s1");
  EXPECT_EQ(ErrnoFor(Status::OK()), 0u);
  EXPECT_EQ(ErrnoFor(Status::InvalidArgument("x")), kEinval);
  EXPECT_EQ(ErrnoFor(Status::NoSpace("x")), kEnospc);
  EXPECT_EQ(ErrnoFor(Status::Corruption("x")), kEio);
  EXPECT_EQ(ErrnoFor(Status::IOError("x")), kEio);
}

}  // namespace
}  // namespace snapdisk
