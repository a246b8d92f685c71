// Helpers shared by the tests: scratch directories, seeds, byte patterns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace snapdisk::testing {

// A fresh, empty directory for one test, under $SNAPDISK_TEST_TMPDIR, else the
// build tree's test-tmp (compiled in), else the system temp dir; removed by
// the destructor.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The seed for a randomized test: $SNAPDISK_SEED, else `--seed N` on the test
// binary's command line (see SetSeedFromArgs), else `fallback`. Printed to
// stdout so that a failing run can be repeated.
uint64_t TestSeed(uint64_t fallback);
// Scale for randomized test sizes: $SNAPDISK_TEST_SCALE (default 1).
uint64_t TestScale();
// True in the asan preset: tests that run ~15x slower there cover a slice
// (saying so in a comment), the release run the whole.
inline bool BuiltWithSanitizers() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

// Deterministic bytes: the same (seed, length) gives the same contents.
std::vector<std::byte> PatternBytes(uint64_t seed, size_t length);

}  // namespace snapdisk::testing
