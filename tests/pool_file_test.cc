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

namespace snapdisk {
namespace {

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  SNAPDISK_CHECK(::stat(path.c_str(), &st) == 0, "stat failed");
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// Trimmed space goes back to the file system once no snapshot holds it.
TEST(PoolFileTest, TrimPunchesTheFileOnceNoSnapshotHoldsIt) {
  testing::ScratchDir dir;
  const std::string path = dir.File("pool");
  auto pf = PoolFile::Create(path, 1ull << 30);
  ASSERT_TRUE(pf.ok());
  Pool& pool = (*pf)->pool();
  ASSERT_TRUE(pool.CreateVolume("v", 256 << 20).ok());
  // The write log would keep the written blocks until shipped (see
  // WriteLogTest for that); this test is about trim and snapshots.
  ASSERT_TRUE(pool.SetLogEnabled("v", false).ok());
  Volume* v = *pool.OpenVolume("v");
  ASSERT_TRUE(v->Write(0, testing::PatternBytes(3, 64 << 20)).ok());
  ASSERT_TRUE(v->Flush().ok());
  const uint64_t full = AllocatedBytes(path);
  EXPECT_GT(full, 64u << 20);
  ASSERT_TRUE(pool.CreateSnapshot("v", "keep").ok());
  ASSERT_TRUE(v->Trim(0, 64 << 20).ok());
  ASSERT_TRUE(v->Flush().ok());
  EXPECT_GT(AllocatedBytes(path), 60u << 20) << "the snapshot still holds the data";
  ASSERT_TRUE(pool.DeleteSnapshot("v", "keep").ok());
  ASSERT_TRUE(pool.Commit().ok());
  ASSERT_TRUE(pool.Commit().ok());  // freed blocks are punched once they have cooled a commit
  EXPECT_LT(AllocatedBytes(path), 8u << 20) << "trimmed blocks were not punched";
  std::vector<std::byte> back(4096, std::byte{1});
  ASSERT_TRUE(v->Read(1 << 20, back).ok());
  EXPECT_EQ(back, std::vector<std::byte>(4096));
}

}  // namespace
}  // namespace snapdisk
