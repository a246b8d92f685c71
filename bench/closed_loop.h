// The in-process engine benchmark's loop, shared by bench/engine_bench.cc and
// bench/comparator_overhead.cc: QD `depth` random 4 KiB requests over
// [0, span) of a volume for `seconds`, each completion resubmitting at once
// (closed loop), reads with probability read_pct / 100. Returns the IOPS, or
// the first request error.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "disk/clock.h"
#include "disk/status.h"
#include "engine/aligned_buffer.h"
#include "engine/pool.h"

namespace snapdisk {

inline Result<double> ClosedLoopRandomIops(Pool& pool, Volume& v, double read_pct, uint64_t span,
                                           double seconds, uint64_t seed, int depth = 32) {
  std::vector<AlignedBuffer> buffers;
  for (int i = 0; i < depth; ++i) {
    buffers.emplace_back(4096);
    std::memset(buffers.back().data(), 0x5a + i, 4096);
  }
  std::vector<VolumeRequest> reqs(static_cast<size_t>(depth));
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution read(read_pct / 100);
  const uint64_t blocks = span / 4096;
  uint64_t done = 0;
  bool stop = false;
  Status failure;
  std::function<void(int)> submit = [&](int i) {
    reqs[i] = VolumeRequest{.op = read(rng) ? VolumeOp::kRead : VolumeOp::kWrite,
                            .offset_bytes = rng() % blocks * 4096,
                            .length_bytes = 4096,
                            .data = buffers[i].data()};
    reqs[i].on_complete = [&, i](VolumeRequest&, const Status& s) {
      if (!s.ok() && failure.ok()) failure = s;
      ++done;
      if (!stop && failure.ok()) submit(i);
    };
    if (Status s = v.Submit(reqs[i]); !s.ok() && failure.ok()) failure = s;
  };
  Clock& clock = SystemClock::Get();
  const int64_t start = clock.NowNs();
  for (int i = 0; i < depth; ++i) submit(i);
  while (clock.NowNs() - start < static_cast<int64_t>(seconds * 1e9) && failure.ok()) pool.Poll(1);
  stop = true;
  while (pool.in_flight() > 0) pool.Poll(1);
  SNAPDISK_RETURN_IF_ERROR(failure);
  return static_cast<double>(done) / (static_cast<double>(clock.NowNs() - start) / 1e9);
}

}  // namespace snapdisk
