// Progress bars on a terminal, and the Output of a command run in the
// `snapdisk` process itself.
//
// A ProgressBar draws one line on stderr, redrawn in place at most ten times
// a second: label, bar, percent, done/total, rate and ETA, e.g.
//   import db  [=========>          ]  45%  460.0 MiB / 1.0 GiB  230.1 MiB/s  ETA 0:03
// It draws only when stderr is a terminal (isatty), so piped or redirected
// output never carries progress. Finish() erases the line.
//
// Thread safety: one thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tools/cli/command_context.h"

namespace snapdisk::cli {

class ProgressBar {
 public:
  // `fd`: where to draw (stderr); drawing is off unless it is a terminal.
  explicit ProgressBar(int fd = 2);
  ~ProgressBar() { Finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  bool enabled() const { return enabled_; }
  void Update(std::string_view label, uint64_t done, uint64_t total, ProgressUnit unit);
  // Erases the bar if one is shown.
  void Finish();

  // The line for a given state (exposed for tests); `width` in columns.
  static std::string Render(std::string_view label, uint64_t done, uint64_t total,
                            ProgressUnit unit, double elapsed_s, size_t width);

 private:
  int fd_;
  bool enabled_;
  bool shown_ = false;
  int64_t start_ns_ = 0;
  int64_t last_draw_ns_ = 0;
  std::string label_;
};

// Output to this process's stdout and stderr, with a progress bar on stderr
// when it is a terminal.
class LocalOutput : public Output {
 public:
  void Stdout(std::string_view text) override;
  void Stderr(std::string_view text) override;
  void Progress(std::string_view label, uint64_t done, uint64_t total, ProgressUnit unit) override;
  void ProgressEnd() override { bar_.Finish(); }
  // Arms a SIGINT/SIGTERM/SIGHUP handler on the first call; true once one of
  // those signals arrived.
  bool Cancelled() override;

 private:
  ProgressBar bar_{2};
};

// Monotonic time in ns (for progress and rates).
int64_t MonotonicNs();

}  // namespace snapdisk::cli
