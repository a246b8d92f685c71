// Helpers for engine tests: a pool on a MemoryDevice that can be reopened.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "disk/memory_device.h"
#include "engine/pool.h"
#include "engine/volume.h"

namespace snapdisk::testing {

inline std::unique_ptr<MemoryDevice> NewMemoryDevice(uint64_t size_bytes) {
  auto dev = MemoryDevice::Create(size_bytes, 4096, 256);
  SNAPDISK_CHECK(dev.ok(), dev.status().ToString().c_str());
  return std::move(dev).value();
}

inline std::unique_ptr<Pool> MustCreatePool(BlockDevice& dev, PoolOptions options = {}) {
  auto pool = Pool::Create(dev, options);
  SNAPDISK_CHECK(pool.ok(), pool.status().ToString().c_str());
  return std::move(pool).value();
}

inline std::unique_ptr<Pool> MustOpenPool(BlockDevice& dev, PoolOptions options = {}) {
  auto pool = Pool::Open(dev, options);
  SNAPDISK_CHECK(pool.ok(), pool.status().ToString().c_str());
  return std::move(pool).value();
}

inline std::vector<std::byte> ReadAll(Volume& v, uint64_t offset, uint64_t length) {
  std::vector<std::byte> out(length);
  Status s = v.Read(offset, out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

}  // namespace snapdisk::testing
