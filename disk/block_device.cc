#include "disk/block_device.h"

#include <string>

namespace snapdisk {

namespace {

Status Refused(const std::string& device, const IoRequest& request, const std::string& problem) {
  return Status::InvalidArgument(device + ": " + IoOpName(request.op) + " at offset " +
                                 std::to_string(request.offset_bytes) + " length " +
                                 std::to_string(request.length_bytes) + ": " + problem);
}

}  // namespace

Status BlockDevice::ValidateRequest(const IoRequest& request) const {
  if (!request.on_complete) return Refused(name(), request, "request has no completion callback");
  return ValidateExtent(request);
}

Status BlockDevice::ValidateExtent(const IoRequest& request) const {
  auto describe = [&](const std::string& problem) { return Refused(name(), request, problem); };
  if (request.op == IoOp::kFlush) return Status::OK();
  if (request.op != IoOp::kRead && request.op != IoOp::kWrite && request.op != IoOp::kDiscard) {
    return describe("unknown operation");
  }
  const uint64_t sector = sector_size_bytes();
  if (request.length_bytes == 0) return describe("length is zero");
  if (!IsAligned(request.offset_bytes, sector) || !IsAligned(request.length_bytes, sector)) {
    return describe("not aligned to the " + std::to_string(sector) + "-byte sector");
  }
  const uint64_t size = size_bytes();
  if (request.offset_bytes > size || request.length_bytes > size - request.offset_bytes) {
    return describe("beyond the end of the " + std::to_string(size) + "-byte device");
  }
  if ((request.op == IoOp::kRead || request.op == IoOp::kWrite) && request.data == nullptr) {
    return describe("no data buffer");
  }
  return Status::OK();
}

Status BlockDevice::SubmitAndWait(IoRequest& request) {
  bool done = false;
  Status result;
  request.on_complete = [&](IoRequest&, const Status& status) {
    result = status;
    done = true;
  };
  SNAPDISK_RETURN_IF_ERROR(Submit(request));
  while (!done) Poll(1);
  return result;
}

Status BlockDevice::Read(uint64_t offset_bytes, std::span<std::byte> out) {
  IoRequest request{.op = IoOp::kRead,
                    .offset_bytes = offset_bytes,
                    .length_bytes = out.size(),
                    .data = out.data()};
  return SubmitAndWait(request);
}

Status BlockDevice::ReadConcurrent(uint64_t /*offset_bytes*/, std::span<std::byte> /*out*/) {
  return Status::Unsupported(name() + ": no reads beside the driving thread");
}

Status BlockDevice::Write(uint64_t offset_bytes, std::span<const std::byte> data) {
  // The device never writes into a write request's buffer.
  IoRequest request{.op = IoOp::kWrite,
                    .offset_bytes = offset_bytes,
                    .length_bytes = data.size(),
                    .data = const_cast<std::byte*>(data.data())};
  return SubmitAndWait(request);
}

Status BlockDevice::Flush() {
  IoRequest request{.op = IoOp::kFlush};
  return SubmitAndWait(request);
}

Status BlockDevice::Discard(uint64_t offset_bytes, uint64_t length_bytes) {
  IoRequest request{
      .op = IoOp::kDiscard, .offset_bytes = offset_bytes, .length_bytes = length_bytes};
  return SubmitAndWait(request);
}

}  // namespace snapdisk
