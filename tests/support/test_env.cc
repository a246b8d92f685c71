#include "support/test_env.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace snapdisk::testing {

ScratchDir::ScratchDir() {
  static std::atomic<int> counter{0};
  const char* base = std::getenv("SNAPDISK_TEST_TMPDIR");
#ifdef SNAPDISK_TEST_TMPDIR_DEFAULT
  if (base == nullptr) base = SNAPDISK_TEST_TMPDIR_DEFAULT;  // the build tree's test-tmp
#endif
  std::filesystem::path root = base ? std::filesystem::path(base)
                                    : std::filesystem::temp_directory_path() / "snapdisk-tests";
  path_ = root / ("t" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint64_t TestSeed(uint64_t fallback) {
  uint64_t seed = fallback;
  if (const char* env = std::getenv("SNAPDISK_SEED")) seed = std::strtoull(env, nullptr, 10);
  std::printf("[seed] %llu (repeat with SNAPDISK_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  return seed;
}

uint64_t TestScale() {
  const char* env = std::getenv("SNAPDISK_TEST_SCALE");
  uint64_t scale = env ? std::strtoull(env, nullptr, 10) : 1;
  return scale == 0 ? 1 : scale;
}

std::vector<std::byte> PatternBytes(uint64_t seed, size_t length) {
  std::vector<std::byte> out(length);
  std::mt19937_64 rng(seed);
  size_t i = 0;
  for (; i + 8 <= length; i += 8) {
    uint64_t v = rng();
    for (int b = 0; b < 8; ++b) out[i + b] = static_cast<std::byte>(v >> (8 * b));
  }
  uint64_t v = rng();
  for (; i < length; ++i, v >>= 8) out[i] = static_cast<std::byte>(v);
  return out;
}

}  // namespace snapdisk::testing
