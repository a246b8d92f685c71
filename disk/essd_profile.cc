#include "disk/essd_profile.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <limits>

namespace snapdisk {
namespace {

// One row of the table in the header. Throughput figures are in bytes so that
// the half and quarter MB steps stay exact integers.
struct LevelFormula {
  EssdLevel level;
  uint64_t min_gib;
  uint64_t max_gib;
  uint64_t iops_base;
  uint64_t iops_per_gib;
  uint64_t iops_cap;
  uint64_t throughput_base_bytes;
  uint64_t throughput_per_gib_bytes;
  uint64_t throughput_cap_bytes;
  int64_t latency_ns;
};

constexpr uint64_t kMB = kBytesPerMB;
constexpr LevelFormula kFormulas[] = {
    {EssdLevel::kPL0, 40, 32768, 1800, 12, 10'000, 100 * kMB, kMB / 4, 180 * kMB, 400'000},
    {EssdLevel::kPL1, 20, 32768, 1800, 50, 50'000, 120 * kMB, kMB / 2, 350 * kMB, 200'000},
    {EssdLevel::kPL2, 461, 32768, 1800, 50, 100'000, 120 * kMB, kMB / 2, 750 * kMB, 200'000},
    {EssdLevel::kPL3, 1261, 32768, 1800, 50, 1'000'000, 120 * kMB, kMB / 2, 4000 * kMB, 200'000},
};

const LevelFormula* FormulaFor(EssdLevel level) {
  for (const LevelFormula& f : kFormulas) {
    if (f.level == level) return &f;
  }
  return nullptr;
}

// "%.3f" without trailing zeros (and without a trailing point).
std::string TrimmedDecimal(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  std::string s(buf);
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  return s;
}

std::string FormatMs(int64_t ns) {
  return TrimmedDecimal(static_cast<double>(ns) / 1e6, 3) + " ms";
}

}  // namespace

const char* EssdLevelName(EssdLevel level) {
  switch (level) {
    case EssdLevel::kPL0:
      return "PL0";
    case EssdLevel::kPL1:
      return "PL1";
    case EssdLevel::kPL2:
      return "PL2";
    case EssdLevel::kPL3:
      return "PL3";
    case EssdLevel::kUnlimited:
      return "unlimited";
  }
  return "unknown";
}

Result<EssdLevel> ParseEssdLevel(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (EssdLevel level : {EssdLevel::kPL0, EssdLevel::kPL1, EssdLevel::kPL2, EssdLevel::kPL3,
                          EssdLevel::kUnlimited}) {
    std::string name = EssdLevelName(level);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower == name) return level;
  }
  return Status::InvalidArgument("unknown ESSD performance level '" + std::string(text) +
                                 "' (expected PL0, PL1, PL2, PL3 or unlimited)");
}

EssdCapacityRange EssdCapacityRangeGib(EssdLevel level) {
  if (const LevelFormula* f = FormulaFor(level)) return {f->min_gib, f->max_gib};
  return {0, std::numeric_limits<uint64_t>::max() / kBytesPerGiB};
}

std::string FormatCapacityGib(uint64_t capacity_bytes) {
  if (capacity_bytes % kBytesPerGiB == 0) {
    return std::to_string(capacity_bytes / kBytesPerGiB) + " GiB";
  }
  return TrimmedDecimal(static_cast<double>(capacity_bytes) / static_cast<double>(kBytesPerGiB),
                        3) +
         " GiB (" + std::to_string(capacity_bytes) + " bytes)";
}

EssdProfile EssdProfile::Unlimited(uint64_t capacity_bytes) {
  EssdProfile p;
  p.level = EssdLevel::kUnlimited;
  p.capacity_bytes = capacity_bytes;
  return p;
}

Result<EssdProfile> EssdProfile::For(EssdLevel level, uint64_t capacity_bytes) {
  if (level == EssdLevel::kUnlimited) return Unlimited(capacity_bytes);
  const LevelFormula* f = FormulaFor(level);
  if (f == nullptr) {
    return Status::InvalidArgument("unknown ESSD performance level " +
                                   std::to_string(static_cast<int>(level)));
  }
  // Range check on the exact size: max_gib * 2^30 cannot overflow (2^45).
  if (capacity_bytes < f->min_gib * kBytesPerGiB || capacity_bytes > f->max_gib * kBytesPerGiB) {
    return Status::InvalidArgument(std::string(EssdLevelName(level)) + " needs a capacity of " +
                                   std::to_string(f->min_gib) + "–" + std::to_string(f->max_gib) +
                                   " GiB; " + FormatCapacityGib(capacity_bytes) + " is outside it");
  }
  const uint64_t gib = capacity_bytes / kBytesPerGiB;
  EssdProfile p;
  p.level = level;
  p.capacity_bytes = capacity_bytes;
  p.iops_max = std::min(f->iops_base + f->iops_per_gib * gib, f->iops_cap);
  p.throughput_bytes_per_s = std::min(f->throughput_base_bytes + f->throughput_per_gib_bytes * gib,
                                      f->throughput_cap_bytes);
  p.write_latency_ns = f->latency_ns;
  p.read_latency_ns = f->latency_ns;
  return p;
}

std::string EssdProfile::Describe() const {
  std::string limits;
  limits += iops_max == 0 ? std::string("no IOPS limit") : std::to_string(iops_max) + " IOPS";
  limits += ", ";
  limits +=
      throughput_bytes_per_s == 0
          ? std::string("no throughput limit")
          : TrimmedDecimal(static_cast<double>(throughput_bytes_per_s) / kBytesPerMB, 3) + " MB/s";
  limits += ", ";
  if (write_latency_ns == 0 && read_latency_ns == 0) {
    limits += "no added latency";
  } else if (write_latency_ns == read_latency_ns) {
    limits += FormatMs(write_latency_ns) + " latency";
  } else {
    limits +=
        "write " + FormatMs(write_latency_ns) + " / read " + FormatMs(read_latency_ns) + " latency";
  }
  std::string head = level == EssdLevel::kUnlimited ? std::string("unlimited")
                                                    : std::string("ESSD ") + EssdLevelName(level);
  if (capacity_bytes != 0) head += ", " + FormatCapacityGib(capacity_bytes);
  return head + ": " + limits;
}

}  // namespace snapdisk
