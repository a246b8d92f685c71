// Exit codes of every snapdisk command (documented in --help and README).
#pragma once

#include "disk/status.h"

namespace snapdisk::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitProblemsFound = 1;  // a check (fsck, scrub, verify) found problems
inline constexpr int kExitUsage = 2;          // bad command line
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitBusy = 4;
inline constexpr int kExitCorruption = 5;
inline constexpr int kExitIoError = 6;        // I/O error or no space
inline constexpr int kExitRefused = 7;        // refused by a retention lock or a policy
inline constexpr int kExitInterrupted = 130;  // Ctrl-C / SIGTERM (import, export undo their work)

inline constexpr const char* kExitCodeHelp =
    "Exit codes: 0 success, 1 a check found problems, 2 bad usage, 3 not found,\n"
    "4 busy, 5 corruption, 6 I/O error or no space, 7 refused (retention lock,\n"
    "policy), 130 interrupted.";

// The exit code for a failed Status.
inline int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return kExitOk;
    case StatusCode::kNotFound:
      return kExitNotFound;
    case StatusCode::kBusy:
      return kExitBusy;
    case StatusCode::kCorruption:
      return kExitCorruption;
    case StatusCode::kIOError:
    case StatusCode::kNoSpace:
      return kExitIoError;
    case StatusCode::kCancelled:
      return kExitInterrupted;
    case StatusCode::kPermissionDenied:
      return kExitRefused;
    case StatusCode::kInvalidArgument:
    case StatusCode::kAlreadyExists:
    case StatusCode::kUnsupported:
      return kExitUsage;
  }
  return kExitIoError;
}

}  // namespace snapdisk::cli
