// A child process the comparator runs beside itself (`snapdisk serve`, fio):
// its stdout and stderr in files, stopped by signal, reaped. The destructor
// kills (SIGKILL) and reaps one still running, so an error path never leaves
// a server or a fio behind; and the child dies with the thread that started
// it (PR_SET_PDEATHSIG) when the comparator itself is killed.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "disk/status.h"

namespace snapdisk {

class ChildProcess {
 public:
  // Starts argv[0] (searched in PATH when it has no '/') with stdin from
  // /dev/null and stdout / stderr appended to the files named (empty:
  // /dev/null). NotFound when the program is not there, naming it.
  static Result<ChildProcess> Start(const std::vector<std::string>& argv,
                                    const std::string& stdout_path,
                                    const std::string& stderr_path);
  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  // True while the child has not exited (reaps it when it has).
  bool Running();
  // Sends `signal` to a running child (no effect once it exited).
  void Signal(int signal);
  // Waits up to `timeout_ms` (< 0: for ever) for the child to exit: its
  // wait status (waitpid's), or Busy (it still runs).
  Result<int> Wait(int timeout_ms);
  // The program's name, for messages.
  const std::string& name() const { return name_; }

 private:
  void Kill();  // SIGKILL and reap, if running

  pid_t pid_ = -1;
  int status_ = 0;
  std::string name_;
};

// "exited with 3", "was killed by signal 9": a wait status for a message.
std::string DescribeWaitStatus(int status);

}  // namespace snapdisk
