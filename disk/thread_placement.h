// Where and how urgently helper threads run beside a latency-critical
// driving thread (the pool's): backup workers, a memory device's page
// supplier.
//
// Measured on the comparator (2 CPUs, Linux 6.18, EEVDF): SCHED_IDLE helpers
// on the driving thread's CPU still get a scheduler slice now and then, and
// the driving thread then waits 1-4 ms; normal-priority helpers there cost it
// ~0.9 ms at a time. A driving thread that must not wait pins itself to a CPU
// (sched_setaffinity); helpers created afterwards move to the others.
#pragma once

#include <vector>

namespace snapdisk {

// The online CPUs the calling thread is not allowed on, when it is pinned to
// some but not all of them; else empty (no preference).
std::vector<int> CpusBesideThisThread();
// Restricts the calling thread to `cpus` (nothing when empty). Best effort.
void MoveThisThreadTo(const std::vector<int>& cpus);
// The lowest CPU priority (SCHED_IDLE, or nice 19 where refused) and the
// lowest best-effort disk priority (level 7): the thread gets what others
// leave. On Linux SCHED_IDLE is a weight (3 against nice 0's 1024), not
// starvation: under full load the thread still progresses, slowly. Chosen
// over nice 19 because a waking normal thread preempts it at once, while a
// nice-19 thread keeps its slice: the comparator's p99 during a snapshot
// backup was 5.3 ms with nice-19 workers against 1.6 and 2.0 ms with
// SCHED_IDLE (same build). Not ioprio idle: that class can starve. Best
// effort: failures leave the thread as it was.
void LowerThisThreadToLowest();

}  // namespace snapdisk
