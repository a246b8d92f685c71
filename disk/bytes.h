// Small byte-buffer helpers shared by every layer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace snapdisk {

// True when all `n` bytes at `data` are zero (compared against a static zero
// block a step at a time: memcmp's vectorized loop, any length).
inline bool IsAllZero(const void* data, size_t n) {
  static const std::byte kZeros[4096] = {};
  const auto* p = static_cast<const std::byte*>(data);
  while (n > 0) {
    const size_t step = std::min(n, sizeof kZeros);
    if (std::memcmp(p, kZeros, step) != 0) return false;
    p += step;
    n -= step;
  }
  return true;
}

// "512 B", "4 KiB", "1.5 GiB": one decimal unless the value is a whole
// number of its unit (for messages and reports).
std::string HumanBytes(uint64_t bytes);
// The largest binary unit that represents `bytes` exactly: "1028 KiB",
// "3 MiB", "4097 B" (for extents, where rounding would mislead).
std::string ExactBytes(uint64_t bytes);

}  // namespace snapdisk
