// Status and Result<T>: how every snapdisk layer reports success and failure.
//
// A Status is OK or an error code with a message. The OK status holds no
// allocation, so returning it is free. Messages name what failed: the path,
// volume and byte offset where they are known. No snapdisk API throws across a
// module boundary; everything fallible returns a Status or a Result<T>.
//
// Thread safety: a Status is a value; distinct objects may be used from
// distinct threads freely.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "disk/check.h"

namespace snapdisk {

enum class StatusCode : uint8_t {
  kOk = 0,
  kNotFound = 1,
  kInvalidArgument = 2,
  kCorruption = 3,
  kIOError = 4,
  kNoSpace = 5,
  kBusy = 6,
  kUnsupported = 7,
  kAlreadyExists = 8,
  kCancelled = 9,
  // Refused by a rule that no caller can override: a WORM retention lock, a
  // policy that keeps the log on.
  kPermissionDenied = 10,
};

// "OK", "NotFound", ... (stable: used in --json output).
const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(const Status& other)
      : state_(other.state_ ? std::make_unique<State>(*other.state_) : nullptr) {}
  Status& operator=(const Status& other) {
    if (this != &other) state_ = other.state_ ? std::make_unique<State>(*other.state_) : nullptr;
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view msg) { return Status(StatusCode::kNotFound, msg); }
  static Status InvalidArgument(std::string_view msg) {
    return Status(StatusCode::kInvalidArgument, msg);
  }
  static Status Corruption(std::string_view msg) { return Status(StatusCode::kCorruption, msg); }
  static Status IOError(std::string_view msg) { return Status(StatusCode::kIOError, msg); }
  static Status NoSpace(std::string_view msg) { return Status(StatusCode::kNoSpace, msg); }
  static Status Busy(std::string_view msg) { return Status(StatusCode::kBusy, msg); }
  static Status Unsupported(std::string_view msg) { return Status(StatusCode::kUnsupported, msg); }
  static Status AlreadyExists(std::string_view msg) {
    return Status(StatusCode::kAlreadyExists, msg);
  }
  static Status Cancelled(std::string_view msg) { return Status(StatusCode::kCancelled, msg); }
  static Status PermissionDenied(std::string_view msg) {
    return Status(StatusCode::kPermissionDenied, msg);
  }
  // An error from a failed system call: errno is mapped to a code (ENOSPC and
  // EDQUOT to NoSpace, everything else to IOError) and its text appended.
  static Status FromErrno(int errno_value, std::string_view context);

  bool ok() const { return state_ == nullptr; }
  StatusCode code() const { return state_ ? state_->code : StatusCode::kOk; }
  bool IsNotFound() const { return code() == StatusCode::kNotFound; }
  bool IsInvalidArgument() const { return code() == StatusCode::kInvalidArgument; }
  bool IsCorruption() const { return code() == StatusCode::kCorruption; }
  bool IsIOError() const { return code() == StatusCode::kIOError; }
  bool IsNoSpace() const { return code() == StatusCode::kNoSpace; }
  bool IsBusy() const { return code() == StatusCode::kBusy; }
  bool IsUnsupported() const { return code() == StatusCode::kUnsupported; }
  bool IsAlreadyExists() const { return code() == StatusCode::kAlreadyExists; }
  bool IsCancelled() const { return code() == StatusCode::kCancelled; }
  bool IsPermissionDenied() const { return code() == StatusCode::kPermissionDenied; }

  // The message alone ("" for OK).
  const std::string& message() const;
  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;
  // The same code with "<prefix>: " put before the message; OK stays OK.
  Status WithContext(std::string_view prefix) const;
  // The same code with `message` instead of this one's; OK stays OK.
  Status WithMessage(std::string_view message) const;

 private:
  struct State {
    StatusCode code;
    std::string message;
  };
  Status(StatusCode code, std::string_view msg)
      : state_(std::make_unique<State>(State{code, std::string(msg)})) {}
  std::unique_ptr<State> state_;
};

// A value or the Status that says why there is none. Never holds an OK status
// without a value.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    SNAPDISK_CHECK(!status_.ok(), "Result built from an OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & {
    SNAPDISK_CHECK(ok(), status_.ToString().c_str());
    return *value_;
  }
  const T& value() const& {
    SNAPDISK_CHECK(ok(), status_.ToString().c_str());
    return *value_;
  }
  T&& value() && {
    SNAPDISK_CHECK(ok(), status_.ToString().c_str());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace snapdisk

// Return early with the status when it is not OK.
#define SNAPDISK_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    ::snapdisk::Status snapdisk_status_ = (expr);        \
    if (!snapdisk_status_.ok()) return snapdisk_status_; \
  } while (0)

#define SNAPDISK_CONCAT_INNER(a, b) a##b
#define SNAPDISK_CONCAT(a, b) SNAPDISK_CONCAT_INNER(a, b)
// `SNAPDISK_ASSIGN_OR_RETURN(auto x, FunctionReturningResult());`
#define SNAPDISK_ASSIGN_OR_RETURN(lhs, expr)                     \
  auto SNAPDISK_CONCAT(snapdisk_result_, __LINE__) = (expr);     \
  if (!SNAPDISK_CONCAT(snapdisk_result_, __LINE__).ok())         \
    return SNAPDISK_CONCAT(snapdisk_result_, __LINE__).status(); \
  lhs = std::move(SNAPDISK_CONCAT(snapdisk_result_, __LINE__)).value()
