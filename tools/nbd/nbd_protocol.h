// NBD wire format (doc/proto.md of NetworkBlockDevice/nbd): the constants the
// snapdisk server speaks, big-endian helpers, and decoders for the messages a
// client sends. Pure functions on byte spans, so tests can exercise them
// without sockets; the server (nbd_server.h) uses them on its read buffer.
//
// Every decoder checks lengths against the span it is given and reports a
// malformed message instead of reading past it. Nothing here allocates except
// the decoded strings of option requests (handshake only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"

namespace snapdisk::nbd {

// ---- Magic numbers -----------------------------------------------------------
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;       // "NBDMAGIC"
inline constexpr uint64_t kOptMagic = 0x49484156454F5054ull;       // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ull;  // option replies
inline constexpr uint32_t kRequestMagic = 0x25609513u;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698u;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33efu;

// ---- Handshake flags (server, 16 bits) and client flags (32 bits) -------------
inline constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
inline constexpr uint16_t kFlagNoZeroes = 1 << 1;
inline constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1 << 1;

// ---- Transmission flags (16 bits) ----------------------------------------------
inline constexpr uint16_t kFlagHasFlags = 1 << 0;
inline constexpr uint16_t kFlagReadOnly = 1 << 1;
inline constexpr uint16_t kFlagSendFlush = 1 << 2;
inline constexpr uint16_t kFlagSendFua = 1 << 3;
inline constexpr uint16_t kFlagRotational = 1 << 4;
inline constexpr uint16_t kFlagSendTrim = 1 << 5;
inline constexpr uint16_t kFlagSendWriteZeroes = 1 << 6;
inline constexpr uint16_t kFlagSendDf = 1 << 7;
inline constexpr uint16_t kFlagCanMultiConn = 1 << 8;
inline constexpr uint16_t kFlagSendResize = 1 << 9;
inline constexpr uint16_t kFlagSendCache = 1 << 10;
inline constexpr uint16_t kFlagSendFastZero = 1 << 11;

// ---- Options ---------------------------------------------------------------------
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;

// ---- Option replies ----------------------------------------------------------------
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepMetaContext = 4;
inline constexpr uint32_t kRepErrUnsup = 0x80000001u;
inline constexpr uint32_t kRepErrPolicy = 0x80000002u;
inline constexpr uint32_t kRepErrInvalid = 0x80000003u;
inline constexpr uint32_t kRepErrPlatform = 0x80000004u;
inline constexpr uint32_t kRepErrTlsReqd = 0x80000005u;
inline constexpr uint32_t kRepErrUnknown = 0x80000006u;
inline constexpr uint32_t kRepErrShutdown = 0x80000007u;
inline constexpr uint32_t kRepErrBlockSizeReqd = 0x80000008u;
inline constexpr uint32_t kRepErrTooBig = 0x80000009u;

// ---- NBD_REP_INFO types ------------------------------------------------------------
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// ---- Commands and command flags ------------------------------------------------------
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;

inline constexpr uint16_t kCmdFlagFua = 1 << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1 << 1;
inline constexpr uint16_t kCmdFlagDf = 1 << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1 << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// ---- Structured replies ----------------------------------------------------------------
inline constexpr uint16_t kReplyFlagDone = 1 << 0;
inline constexpr uint16_t kReplyTypeNone = 0;
inline constexpr uint16_t kReplyTypeOffsetData = 1;
inline constexpr uint16_t kReplyTypeOffsetHole = 2;
inline constexpr uint16_t kReplyTypeBlockStatus = 5;
inline constexpr uint16_t kReplyTypeError = 0x8001;
inline constexpr uint16_t kReplyTypeErrorOffset = 0x8002;

// base:allocation flags.
inline constexpr uint32_t kStateHole = 1 << 0;
inline constexpr uint32_t kStateZero = 1 << 1;

// ---- Error values -------------------------------------------------------------------------
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;

// ---- Sizes ------------------------------------------------------------------------------------
inline constexpr size_t kServerGreetingBytes = 18;  // NBDMAGIC, IHAVEOPT, handshake flags
inline constexpr size_t kOptionHeaderBytes = 16;    // IHAVEOPT, option, length
inline constexpr size_t kOptionReplyHeaderBytes = 20;
inline constexpr size_t kRequestBytes = 28;
inline constexpr size_t kSimpleReplyBytes = 16;
inline constexpr size_t kStructuredReplyBytes = 20;
inline constexpr std::string_view kBaseAllocation = "base:allocation";

// ---- Big-endian helpers -------------------------------------------------------------------------
inline uint16_t Load16(const std::byte* p) {
  return static_cast<uint16_t>((std::to_integer<uint16_t>(p[0]) << 8) |
                               std::to_integer<uint16_t>(p[1]));
}
inline uint32_t Load32(const std::byte* p) { return (uint32_t{Load16(p)} << 16) | Load16(p + 2); }
inline uint64_t Load64(const std::byte* p) { return (uint64_t{Load32(p)} << 32) | Load32(p + 4); }
inline void Store16(std::byte* p, uint16_t v) {
  p[0] = static_cast<std::byte>(v >> 8);
  p[1] = static_cast<std::byte>(v);
}
inline void Store32(std::byte* p, uint32_t v) {
  Store16(p, static_cast<uint16_t>(v >> 16));
  Store16(p + 2, static_cast<uint16_t>(v));
}
inline void Store64(std::byte* p, uint64_t v) {
  Store32(p, static_cast<uint32_t>(v >> 32));
  Store32(p + 4, static_cast<uint32_t>(v));
}

// Appends big-endian values and raw bytes to a growing message (handshake
// replies; never on the I/O path).
class MessageWriter {
 public:
  explicit MessageWriter(std::vector<std::byte>& out) : out_(out) {}
  void U16(uint16_t v) {
    std::byte b[2];
    Store16(b, v);
    out_.insert(out_.end(), b, b + 2);
  }
  void U32(uint32_t v) {
    std::byte b[4];
    Store32(b, v);
    out_.insert(out_.end(), b, b + 4);
  }
  void U64(uint64_t v) {
    std::byte b[8];
    Store64(b, v);
    out_.insert(out_.end(), b, b + 8);
  }
  void Bytes(std::string_view s) {
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out_.insert(out_.end(), p, p + s.size());
  }
  void Zeroes(size_t n) { out_.insert(out_.end(), n, std::byte{0}); }

 private:
  std::vector<std::byte>& out_;
};

// ---- Decoded client messages
// ----------------------------------------------------------------------

// A transmission request header (28 bytes).
struct Request {
  uint32_t magic = 0;
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;  // "handle" in older texts
  uint64_t offset = 0;
  uint32_t length = 0;
};
// `p` must hold kRequestBytes.
Request DecodeRequest(const std::byte* p);
void EncodeRequest(const Request& r, std::byte* p);  // for tests and clients

// An option header (16 bytes).
struct OptionHeader {
  uint64_t magic = 0;
  uint32_t option = 0;
  uint32_t length = 0;
};
OptionHeader DecodeOptionHeader(const std::byte* p);

// NBD_OPT_INFO / NBD_OPT_GO data: export name and the info types asked for.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> info_types;
};
// InvalidArgument when the lengths inside disagree with `data`'s size.
Result<InfoRequest> DecodeInfoRequest(std::span<const std::byte> data);

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data.
struct MetaContextRequest {
  std::string name;
  std::vector<std::string> queries;
};
Result<MetaContextRequest> DecodeMetaContextRequest(std::span<const std::byte> data);

// Name of an option, command or error for messages ("NBD_OPT_GO", ...).
const char* OptionName(uint32_t option);
const char* CommandName(uint16_t type);

// The NBD error value for a failed engine Status: InvalidArgument -> EINVAL,
// NoSpace -> ENOSPC, everything else (I/O error, corruption, ...) -> EIO.
uint32_t ErrnoFor(const Status& status);

// An export name maps to a volume ("db") or a snapshot ("db@nightly"). Names
// never contain '@' (engine/names.h), so the split is unambiguous.
struct ExportName {
  std::string volume;
  std::string snapshot;  // empty: the live volume
};
ExportName ParseExportName(std::string_view name);

}  // namespace snapdisk::nbd
