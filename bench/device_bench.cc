// device_bench: FileDevice throughput at a fixed queue depth, fio-style.
//
// Workloads (one Google Benchmark each, one timed iteration of --runtime
// seconds): randwrite_4k, randread_4k, write_1m (sequential), read_1m
// (sequential). Each keeps exactly --qd requests in flight: a request is
// resubmitted from its completion callback with the next offset until the
// runtime is over, and the driving loop only calls Poll(1). Buffers are
// allocated once, 4096-aligned, and filled with random bytes.
//
// Counters: IOPS, bytes_per_second, lat_us_p50 / lat_us_p99 (from the
// device's IoStats), qd, direct, io_uring (1 unless the fallback path ran),
// completions_per_poll (callbacks run per Poll(1) of the driving loop).
//
// Configuration, flags first, then environment, then defaults:
//   --file=PATH      SNAPDISK_BENCH_FILE       the device file. An existing file is
//                                              used as is (its content is overwritten
//                                              by the write workloads); a missing one
//                                              is created and fully written first.
//                                              Default: a temp file, removed at exit.
//   --size=BYTES     SNAPDISK_BENCH_SIZE       I/O range from offset 0 (K/M/G/T suffixes;
//                                              default: the whole file, 1G for a new one)
//   --qd=N           SNAPDISK_BENCH_QD         requests in flight (default 32)
//   --runtime=SECS   SNAPDISK_BENCH_RUNTIME_S  per workload (default 10)
//   --direct=0|1     SNAPDISK_BENCH_DIRECT     O_DIRECT (default 1)
//   --completion_batch=N                       FileDeviceOptions::completion_batch
//                                              (default: the device's default)
// Everything else goes to Google Benchmark (--benchmark_filter=..., etc.).
#include <benchmark/benchmark.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "disk/clock.h"
#include "disk/file_device.h"

namespace snapdisk {
namespace {

struct BenchConfig {
  std::string file;
  bool temp_file = false;
  uint64_t size_bytes = 0;  // 0: the whole file
  uint32_t qd = 32;
  double runtime_s = 10;
  bool direct = true;
  int completion_batch = -1;  // -1: FileDeviceOptions' default
};

BenchConfig g_config;
std::byte* g_buffers = nullptr;  // g_config.qd * kMaxBlockBytes, 4096-aligned, allocated once
constexpr uint64_t kMaxBlockBytes = uint64_t{1} << 20;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "device_bench: %s\n", message.c_str());
  std::exit(2);
}

uint64_t ParseBytes(const std::string& text) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || value < 0) Die("bad size '" + text + "'");
  uint64_t scale = 1;
  switch (*end) {
    case 'k': case 'K': scale = uint64_t{1} << 10; ++end; break;
    case 'm': case 'M': scale = uint64_t{1} << 20; ++end; break;
    case 'g': case 'G': scale = uint64_t{1} << 30; ++end; break;
    case 't': case 'T': scale = uint64_t{1} << 40; ++end; break;
    default: break;
  }
  if (*end == 'i' || *end == 'I') ++end;
  if (*end == 'b' || *end == 'B') ++end;
  if (*end != '\0') Die("bad size '" + text + "'");
  return static_cast<uint64_t>(value * static_cast<double>(scale));
}

// Removes our flags from argv (so Google Benchmark does not reject them).
void ParseConfig(int* argc, char** argv) {
  auto env = [](const char* name) -> const char* { return std::getenv(name); };
  if (const char* v = env("SNAPDISK_BENCH_FILE")) g_config.file = v;
  if (const char* v = env("SNAPDISK_BENCH_SIZE")) g_config.size_bytes = ParseBytes(v);
  if (const char* v = env("SNAPDISK_BENCH_QD")) g_config.qd = std::atoi(v);
  if (const char* v = env("SNAPDISK_BENCH_RUNTIME_S")) g_config.runtime_s = std::atof(v);
  if (const char* v = env("SNAPDISK_BENCH_DIRECT")) g_config.direct = std::atoi(v) != 0;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    std::string arg = argv[i];
    auto value_of = [&](const char* flag) -> const char* {
      size_t n = std::strlen(flag);
      if (arg.compare(0, n, flag) == 0 && arg.size() > n && arg[n] == '=') {
        return argv[i] + n + 1;
      }
      return nullptr;
    };
    if (const char* v = value_of("--file")) {
      g_config.file = v;
    } else if (const char* v = value_of("--size")) {
      g_config.size_bytes = ParseBytes(v);
    } else if (const char* v = value_of("--qd")) {
      g_config.qd = std::atoi(v);
    } else if (const char* v = value_of("--runtime")) {
      g_config.runtime_s = std::atof(v);
    } else if (const char* v = value_of("--direct")) {
      g_config.direct = std::atoi(v) != 0;
    } else if (const char* v = value_of("--completion_batch")) {
      g_config.completion_batch = std::atoi(v);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  argv[out] = nullptr;
  if (g_config.qd == 0 || g_config.qd > 4096) Die("--qd must be in [1, 4096]");
  if (g_config.runtime_s <= 0) Die("--runtime must be positive");
}

FileDeviceOptions DeviceOptions() {
  FileDeviceOptions options{.sector_size_bytes = 4096,
                            .queue_depth = std::max(g_config.qd, FileDevice::kMinQueueDepth),
                            .direct_io = g_config.direct};
  if (g_config.completion_batch >= 0) options.completion_batch = g_config.completion_batch;
  return options;
}

// Makes sure the file exists and is fully allocated (written once), so no
// workload measures block allocation.
void PrepareFile() {
  if (g_config.file.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    g_config.file = std::string(tmp ? tmp : "/tmp") + "/snapdisk-device-bench-" +
                    std::to_string(getpid());
    g_config.temp_file = true;
  }
  struct stat st;
  if (stat(g_config.file.c_str(), &st) == 0) {
    const uint64_t file_size = static_cast<uint64_t>(st.st_size);
    if (g_config.size_bytes == 0 || g_config.size_bytes > file_size) g_config.size_bytes = file_size;
    g_config.size_bytes &= ~(kMaxBlockBytes - 1);
    if (g_config.size_bytes < kMaxBlockBytes) Die(g_config.file + ": smaller than 1 MiB");
    return;
  }
  if (g_config.size_bytes == 0) g_config.size_bytes = uint64_t{1} << 30;
  g_config.size_bytes &= ~(kMaxBlockBytes - 1);
  if (g_config.size_bytes < kMaxBlockBytes) Die("--size must be at least 1 MiB");
  std::fprintf(stderr, "device_bench: laying out %s (%llu MiB)\n", g_config.file.c_str(),
               static_cast<unsigned long long>(g_config.size_bytes >> 20));
  auto created = FileDevice::Create(g_config.file, g_config.size_bytes, DeviceOptions());
  if (!created.ok()) Die(created.status().ToString());
  FileDevice& dev = **created;
  for (uint64_t offset = 0; offset < g_config.size_bytes; offset += kMaxBlockBytes) {
    Status s = dev.Write(offset, std::span<const std::byte>(g_buffers, kMaxBlockBytes));
    if (!s.ok()) Die(s.ToString());
  }
  Status s = dev.Flush();
  if (!s.ok()) Die(s.ToString());
}

void RunWorkload(benchmark::State& state, IoOp op, uint64_t block_bytes, bool random) {
  auto opened = FileDevice::Open(g_config.file, DeviceOptions());
  if (!opened.ok()) {
    state.SkipWithError(opened.status().ToString().c_str());
    return;
  }
  FileDevice& dev = **opened;
  const uint64_t blocks = g_config.size_bytes / block_bytes;
  const uint32_t qd = g_config.qd;
  std::mt19937_64 rng(42);
  uint64_t next_block = 0;
  auto next_offset = [&]() -> uint64_t {
    if (random) return (rng() % blocks) * block_bytes;
    uint64_t offset = next_block * block_bytes;
    next_block = next_block + 1 == blocks ? 0 : next_block + 1;
    return offset;
  };

  std::vector<IoRequest> requests(qd);
  uint64_t completed = 0;
  uint64_t failed = 0;
  bool stop = false;
  IoCallback on_complete = [&](IoRequest& request, const Status& status) {
    ++completed;
    if (!status.ok()) {
      if (failed++ == 0) std::fprintf(stderr, "device_bench: %s\n", status.ToString().c_str());
      stop = true;
    }
    if (stop) return;
    request.offset_bytes = next_offset();
    Status s = dev.Submit(request);  // from the callback: goes out with the next Poll
    if (!s.ok()) Die(s.ToString());
  };
  for (uint32_t i = 0; i < qd; ++i) {
    requests[i] = IoRequest{.op = op, .offset_bytes = 0, .length_bytes = block_bytes,
                            .data = g_buffers + i * kMaxBlockBytes, .on_complete = on_complete};
  }

  double elapsed_s = 0;
  uint64_t polls = 0;
  for (auto _ : state) {
    dev.stats().Reset();
    completed = 0;
    stop = false;
    Clock& clock = SystemClock::Get();
    const int64_t start_ns = clock.NowNs();
    const int64_t deadline_ns = start_ns + static_cast<int64_t>(g_config.runtime_s * 1e9);
    for (IoRequest& request : requests) {
      request.offset_bytes = next_offset();
      Status s = dev.Submit(request);
      if (!s.ok()) Die(s.ToString());
    }
    polls = 0;
    while (dev.in_flight() > 0) {
      dev.Poll(1);
      ++polls;
      if (!stop && clock.NowNs() >= deadline_ns) stop = true;
    }
    elapsed_s = static_cast<double>(clock.NowNs() - start_ns) / 1e9;
    state.SetIterationTime(elapsed_s);
  }
  if (failed > 0) {
    state.SkipWithError("I/O errors (see stderr)");
    return;
  }
  const OpStats stats = dev.stats().Snapshot().of(op);
  state.counters["IOPS"] = static_cast<double>(completed) / elapsed_s;
  state.counters["bytes_per_second"] =
      static_cast<double>(completed) * static_cast<double>(block_bytes) / elapsed_s;
  state.counters["lat_us_p50"] = stats.latency_us_p50;
  state.counters["lat_us_p99"] = stats.latency_us_p99;
  state.counters["qd"] = qd;
  state.counters["completions_per_poll"] = polls ? static_cast<double>(completed) / polls : 0;
  state.counters["io_uring"] = dev.uses_io_uring() ? 1 : 0;
  state.counters["direct"] = g_config.direct ? 1 : 0;
}

}  // namespace
}  // namespace snapdisk

int main(int argc, char** argv) {
  using snapdisk::g_config;
  snapdisk::ParseConfig(&argc, argv);
  const size_t buffer_bytes = g_config.qd * snapdisk::kMaxBlockBytes;
  snapdisk::g_buffers = static_cast<std::byte*>(
      std::aligned_alloc(snapdisk::FileDevice::kDirectIoAlignmentBytes, buffer_bytes));
  if (snapdisk::g_buffers == nullptr) snapdisk::Die("out of memory");
  std::mt19937_64 rng(1);
  for (size_t i = 0; i < buffer_bytes; i += 8) {
    uint64_t v = rng();
    std::memcpy(snapdisk::g_buffers + i, &v, 8);
  }
  snapdisk::PrepareFile();

  struct Workload {
    const char* name;
    snapdisk::IoOp op;
    uint64_t block_bytes;
    bool random;
  };
  const Workload workloads[] = {
      {"randwrite_4k", snapdisk::IoOp::kWrite, 4096, true},
      {"randread_4k", snapdisk::IoOp::kRead, 4096, true},
      {"write_1m", snapdisk::IoOp::kWrite, snapdisk::kMaxBlockBytes, false},
      {"read_1m", snapdisk::IoOp::kRead, snapdisk::kMaxBlockBytes, false},
  };
  for (const Workload& w : workloads) {
    benchmark::RegisterBenchmark(w.name,
                                 [w](benchmark::State& state) {
                                   snapdisk::RunWorkload(state, w.op, w.block_bytes, w.random);
                                 })
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::AddCustomContext("file", g_config.file);
  benchmark::AddCustomContext("size_bytes", std::to_string(g_config.size_bytes));
  benchmark::AddCustomContext("qd", std::to_string(g_config.qd));
  benchmark::AddCustomContext("runtime_s", std::to_string(g_config.runtime_s));
  benchmark::AddCustomContext("direct", g_config.direct ? "1" : "0");

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (g_config.temp_file) unlink(g_config.file.c_str());
  std::free(snapdisk::g_buffers);
  return 0;
}
