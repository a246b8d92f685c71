// main() for every test binary: GoogleTest's flags, plus `--seed N` (or
// `--seed=N`), which sets SNAPDISK_SEED for TestSeed(), and `--scale N`, which
// sets SNAPDISK_TEST_SCALE to raise randomized test sizes for long runs.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    auto take = [&](const char* flag, const char* env) {
      size_t n = std::strlen(flag);
      if (std::strcmp(argv[i], flag) == 0 && i + 1 < argc) {
        setenv(env, argv[++i], 1);
        return true;
      }
      if (std::strncmp(argv[i], flag, n) == 0 && argv[i][n] == '=') {
        setenv(env, argv[i] + n + 1, 1);
        return true;
      }
      return false;
    };
    if (i > 0 && (take("--seed", "SNAPDISK_SEED") || take("--scale", "SNAPDISK_TEST_SCALE"))) {
      continue;
    }
    rest.push_back(argv[i]);
  }
  int rest_argc = static_cast<int>(rest.size());
  rest.push_back(nullptr);
  ::testing::InitGoogleTest(&rest_argc, rest.data());
  return RUN_ALL_TESTS();
}
