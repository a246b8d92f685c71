#include "disk/thread_placement.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace snapdisk {

std::vector<int> CpusBesideThisThread() {
  cpu_set_t mine;
  CPU_ZERO(&mine);
  if (::sched_getaffinity(0, sizeof(mine), &mine) != 0) return {};
  const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  std::vector<int> others;
  for (int cpu = 0; cpu < online && cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &mine)) others.push_back(cpu);
  }
  if (others.size() == static_cast<size_t>(online)) return {};  // a mask we cannot read
  return others;
}

void MoveThisThreadTo(const std::vector<int>& cpus) {
  if (cpus.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  (void)::sched_setaffinity(0, sizeof(set), &set);
}

void LowerThisThreadToLowest() {
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  const sched_param none{};
  if (::sched_setscheduler(tid, SCHED_IDLE, &none) != 0) {
    (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 19);
  }
  constexpr int kIoprioWhoProcess = 1;  // with a thread id: that thread
  constexpr int kIoprioClassBestEffort = 2;
  constexpr int kIoprioClassShift = 13;
  constexpr int kLowestLevel = 7;
  (void)::syscall(SYS_ioprio_set, kIoprioWhoProcess, tid,
                  (kIoprioClassBestEffort << kIoprioClassShift) | kLowestLevel);
}

}  // namespace snapdisk
