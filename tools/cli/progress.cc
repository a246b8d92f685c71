#include "tools/cli/progress.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <ctime>

#include "tools/cli/report.h"

namespace snapdisk::cli {

namespace {

void WriteAll(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report to
    }
    text.remove_prefix(static_cast<size_t>(n));
  }
}

std::string Amount(uint64_t v, ProgressUnit unit) {
  switch (unit) {
    case ProgressUnit::kBytes:
      return HumanBytes(v);
    case ProgressUnit::kBlocks:
      return std::to_string(v);
    case ProgressUnit::kHours:
      return std::to_string(v) + " h";
    case ProgressUnit::kSeconds:
      return std::to_string(v) + " s";
  }
  return std::to_string(v);
}

const char* RateSuffix(ProgressUnit unit) {
  switch (unit) {
    case ProgressUnit::kBytes:
      return "/s";
    case ProgressUnit::kBlocks:
      return " blocks/s";
    case ProgressUnit::kHours:
    case ProgressUnit::kSeconds:
      return "/s";
  }
  return "/s";
}

std::string Clock(double seconds) {
  const uint64_t s = static_cast<uint64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, s / 3600, s / 60 % 60,
                  s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%" PRIu64 ":%02" PRIu64, s / 60, s % 60);
  }
  return buf;
}

volatile sig_atomic_t g_interrupted = 0;
void OnInterrupt(int) { g_interrupted = 1; }

}  // namespace

int64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

ProgressBar::ProgressBar(int fd) : fd_(fd), enabled_(::isatty(fd) == 1) {}

std::string ProgressBar::Render(std::string_view label, uint64_t done, uint64_t total,
                                ProgressUnit unit, double elapsed_s, size_t width) {
  const double rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0;
  std::string tail;
  if (total > 0) {
    const uint64_t clamped = std::min(done, total);
    char pct[16];
    std::snprintf(
        pct, sizeof pct, "%3d%%",
        static_cast<int>(static_cast<double>(clamped) * 100 / static_cast<double>(total)));
    tail = std::string(pct) + "  " + Amount(done, unit) + " / " + Amount(total, unit);
  } else {
    tail = Amount(done, unit);
  }
  if (rate > 0) {
    // Planned seconds per second says nothing; the ETA does.
    if (unit != ProgressUnit::kSeconds) tail += "  " + Amount(static_cast<uint64_t>(rate), unit) + RateSuffix(unit);
    // Seconds are their own rate: what is left is the ETA.
    const double left = static_cast<double>(total - std::min(done, total));
    if (total > done) tail += "  ETA " + Clock(unit == ProgressUnit::kSeconds ? left : left / rate);
  }
  std::string line(label);
  // A bar of fixed width (so it does not jump as the figures change): what is
  // left after the label and room for the longest figures, 10 to 30 columns.
  constexpr size_t kTailRoom = 56;
  if (total > 0 && width > line.size() + 4 + kTailRoom + 10) {
    const size_t bar = std::min<size_t>(30, width - line.size() - 4 - kTailRoom);
    const size_t fill = static_cast<size_t>(static_cast<double>(std::min(done, total)) *
                                            static_cast<double>(bar) / static_cast<double>(total));
    line += "  [";
    for (size_t i = 0; i < bar; ++i) line += i < fill ? '=' : (i == fill ? '>' : ' ');
    line += "]";
  }
  line += "  " + tail;
  if (line.size() > width && width > 0) line.resize(width);
  return line;
}

void ProgressBar::Update(std::string_view label, uint64_t done, uint64_t total, ProgressUnit unit) {
  if (!enabled_) return;
  const int64_t now = MonotonicNs();
  if (!shown_ || label != label_) {
    // A new task starts the rate over; a run of stages (kSeconds) keeps it,
    // its label naming the stage.
    if (!shown_ || unit != ProgressUnit::kSeconds) start_ns_ = now;
    label_ = std::string(label);
  } else if (now - last_draw_ns_ < 100'000'000 && done < total) {
    return;
  }
  last_draw_ns_ = now;
  size_t width = 80;
  struct winsize ws;
  if (::ioctl(fd_, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) width = ws.ws_col;
  const std::string line =
      Render(label, done, total, unit, static_cast<double>(now - start_ns_) / 1e9, width - 1);
  WriteAll(fd_, "\r" + line + "\033[K");
  shown_ = true;
}

void ProgressBar::Finish() {
  if (!shown_) return;
  WriteAll(fd_, "\r\033[K");
  shown_ = false;
}

void LocalOutput::Stdout(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

void LocalOutput::Stderr(std::string_view text) {
  bar_.Finish();
  WriteAll(2, text);
}

bool LocalOutput::Cancelled() {
  static bool armed = false;
  if (!armed) {
    armed = true;
    struct sigaction sa = {};
    sa.sa_handler = OnInterrupt;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  }
  return g_interrupted != 0;
}

void LocalOutput::Progress(std::string_view label, uint64_t done, uint64_t total,
                           ProgressUnit unit) {
  bar_.Update(label, done, total, unit);
}

}  // namespace snapdisk::cli
