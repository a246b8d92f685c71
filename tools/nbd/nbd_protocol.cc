#include "tools/nbd/nbd_protocol.h"

namespace snapdisk::nbd {

Request DecodeRequest(const std::byte* p) {
  Request r;
  r.magic = Load32(p);
  r.flags = Load16(p + 4);
  r.type = Load16(p + 6);
  r.cookie = Load64(p + 8);
  r.offset = Load64(p + 16);
  r.length = Load32(p + 24);
  return r;
}

void EncodeRequest(const Request& r, std::byte* p) {
  Store32(p, r.magic);
  Store16(p + 4, r.flags);
  Store16(p + 6, r.type);
  Store64(p + 8, r.cookie);
  Store64(p + 16, r.offset);
  Store32(p + 24, r.length);
}

OptionHeader DecodeOptionHeader(const std::byte* p) {
  return OptionHeader{Load64(p), Load32(p + 8), Load32(p + 12)};
}

namespace {

// Reads a 32-bit length and that many bytes of string at `*at`.
bool TakeString(std::span<const std::byte> data, size_t* at, std::string* out) {
  if (data.size() - *at < 4) return false;
  const uint32_t n = Load32(data.data() + *at);
  *at += 4;
  if (data.size() - *at < n) return false;
  out->assign(reinterpret_cast<const char*>(data.data() + *at), n);
  *at += n;
  return true;
}

}  // namespace

Result<InfoRequest> DecodeInfoRequest(std::span<const std::byte> data) {
  InfoRequest r;
  size_t at = 0;
  if (!TakeString(data, &at, &r.name)) {
    return Status::InvalidArgument("export name length runs past the option data");
  }
  if (data.size() - at < 2) return Status::InvalidArgument("missing information request count");
  const uint16_t count = Load16(data.data() + at);
  at += 2;
  if (data.size() - at != size_t{count} * 2) {
    return Status::InvalidArgument("information request count " + std::to_string(count) +
                                   " does not match the option length");
  }
  r.info_types.reserve(count);
  for (uint16_t i = 0; i < count; ++i, at += 2) r.info_types.push_back(Load16(data.data() + at));
  return r;
}

Result<MetaContextRequest> DecodeMetaContextRequest(std::span<const std::byte> data) {
  MetaContextRequest r;
  size_t at = 0;
  if (!TakeString(data, &at, &r.name)) {
    return Status::InvalidArgument("export name length runs past the option data");
  }
  if (data.size() - at < 4) return Status::InvalidArgument("missing query count");
  const uint32_t count = Load32(data.data() + at);
  at += 4;
  // Each query takes at least 4 bytes: a count beyond that is a lie.
  if (count > (data.size() - at) / 4) {
    return Status::InvalidArgument("query count runs past the option data");
  }
  r.queries.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    std::string q;
    if (!TakeString(data, &at, &q)) {
      return Status::InvalidArgument("query length runs past the option data");
    }
    r.queries.push_back(std::move(q));
  }
  if (at != data.size()) return Status::InvalidArgument("trailing bytes after the queries");
  return r;
}

const char* OptionName(uint32_t option) {
  switch (option) {
    case kOptExportName:
      return "NBD_OPT_EXPORT_NAME";
    case kOptAbort:
      return "NBD_OPT_ABORT";
    case kOptList:
      return "NBD_OPT_LIST";
    case kOptStartTls:
      return "NBD_OPT_STARTTLS";
    case kOptInfo:
      return "NBD_OPT_INFO";
    case kOptGo:
      return "NBD_OPT_GO";
    case kOptStructuredReply:
      return "NBD_OPT_STRUCTURED_REPLY";
    case kOptListMetaContext:
      return "NBD_OPT_LIST_META_CONTEXT";
    case kOptSetMetaContext:
      return "NBD_OPT_SET_META_CONTEXT";
  }
  return "unknown option";
}

const char* CommandName(uint16_t type) {
  switch (type) {
    case kCmdRead:
      return "NBD_CMD_READ";
    case kCmdWrite:
      return "NBD_CMD_WRITE";
    case kCmdDisc:
      return "NBD_CMD_DISC";
    case kCmdFlush:
      return "NBD_CMD_FLUSH";
    case kCmdTrim:
      return "NBD_CMD_TRIM";
    case kCmdCache:
      return "NBD_CMD_CACHE";
    case kCmdWriteZeroes:
      return "NBD_CMD_WRITE_ZEROES";
    case kCmdBlockStatus:
      return "NBD_CMD_BLOCK_STATUS";
  }
  return "unknown command";
}

uint32_t ErrnoFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return 0;
    case StatusCode::kInvalidArgument:
      return kEinval;
    case StatusCode::kNoSpace:
      return kEnospc;
    default:
      return kEio;
  }
}

ExportName ParseExportName(std::string_view name) {
  const size_t at = name.find('@');
  if (at == std::string_view::npos) return ExportName{std::string(name), {}};
  return ExportName{std::string(name.substr(0, at)), std::string(name.substr(at + 1))};
}

}  // namespace snapdisk::nbd
