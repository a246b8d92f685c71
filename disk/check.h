// SNAPDISK_CHECK: assertions for programmer errors. They stay on in release
// builds (house style): a broken invariant stops the process with the file,
// line and condition rather than corrupting a pool. Bad input from users,
// clients or disks is never checked this way: it gets a Status.
#pragma once

namespace snapdisk::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const char* message);
}  // namespace snapdisk::internal

#define SNAPDISK_CHECK(condition, message)                                          \
  do {                                                                              \
    if (!(condition)) [[unlikely]]                                                  \
      ::snapdisk::internal::CheckFailed(__FILE__, __LINE__, #condition, (message)); \
  } while (0)
