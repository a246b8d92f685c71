// Small byte-buffer helpers shared by every layer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "disk/status.h"

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

// A size in bytes: digits, then optionally a binary unit K, M, G, T, P or E
// (1K = 1024), case-insensitive, optionally followed by "B" or "iB"; or a
// plain "B" for bytes. "64G", "512m", "4KiB", "1tb", "4096", "4096B".
// InvalidArgument (naming the text) for anything else: empty, zero, signs,
// fractions, spaces, unknown units, or a value that does not fit in 64 bits.
Result<uint64_t> ParseSize(std::string_view text);

}  // namespace snapdisk
