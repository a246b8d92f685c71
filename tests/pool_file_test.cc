#include "engine/pool_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "engine/volume.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

TEST(PoolFileTest, CreateReopenAndSparse) {
  testing::ScratchDir dir;
  const std::string path = dir.File("pool");
  auto data = testing::PatternBytes(1, 1 << 20);
  {
    auto pf = PoolFile::Create(path, 1ull << 40);  // 1 TiB, sparse
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    Pool& pool = (*pf)->pool();
    ASSERT_TRUE(pool.CreateVolume("v", 1ull << 30).ok());
    ASSERT_TRUE((*pool.OpenVolume("v"))->Write(0, data).ok());
  }
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 64ull << 20) << "pool file is not sparse";
  auto pf = PoolFile::Open(path);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE((*(*pf)->pool().OpenVolume("v"))->Read(0, back).ok());
  EXPECT_EQ(back, data);
}

TEST(PoolFileTest, SecondOpenIsBusyWithPid) {
  testing::ScratchDir dir;
  const std::string path = dir.File("pool");
  auto first = PoolFile::Create(path, 64 << 20);
  ASSERT_TRUE(first.ok());
  auto second = PoolFile::Open(path);
  ASSERT_TRUE(second.status().IsBusy()) << second.status().ToString();
  EXPECT_NE(second.status().message().find(std::to_string(::getpid())), std::string::npos)
      << second.status().ToString();
  // Another process gets the same answer.
  pid_t child = fork();
  if (child == 0) {
    auto other = PoolFile::Open(path);
    _exit(other.status().IsBusy() ? 0 : 1);
  }
  int wstatus = 0;
  waitpid(child, &wstatus, 0);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  first->reset();
  EXPECT_TRUE(PoolFile::Open(path).ok());
}

TEST(PoolFileTest, NotAPoolAndMissing) {
  testing::ScratchDir dir;
  EXPECT_TRUE(PoolFile::Open(dir.File("missing")).status().IsNotFound());
  const std::string junk = dir.File("junk");
  std::ofstream(junk) << std::string(1 << 20, 'x');
  auto r = PoolFile::Open(junk);
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  const std::string odd = dir.File("odd");
  std::ofstream(odd) << "short";
  r = PoolFile::Open(odd);
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_TRUE(PoolFile::Create(junk, 64 << 20).status().IsAlreadyExists());
}

TEST(PoolFileTest, TruncatedPoolIsCorruption) {
  testing::ScratchDir dir;
  const std::string path = dir.File("pool");
  ASSERT_TRUE(PoolFile::Create(path, 64 << 20).ok());
  ASSERT_EQ(::truncate(path.c_str(), 32 << 20), 0);
  auto r = PoolFile::Open(path);
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().ToString();
}

}  // namespace
}  // namespace snapdisk
