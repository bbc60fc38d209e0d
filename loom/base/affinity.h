// CPU affinity of threads and of whole process groups: a stage's worker threads and the compiler
// drivers it started with every cc1plus / as / ld below them. Used by the embedded engine
// (engine.cc) and the agent's CorePlacer to keep CPU work off a device's cores while it measures.
#pragma once

#include <sys/types.h>

#include <vector>

namespace loom::base {

// Confines thread `tid` (0: the calling thread) to `cores`. Empty `cores`: does nothing. Errors
// are ignored: the thread may have ended in the meantime.
void SetThreadAffinity(pid_t tid, const std::vector<int>& cores);

// Confines every thread of every process whose process group is in `groups`, the group leaders
// (the drivers) first so that processes they start from now on inherit the set; the others are
// found in /proc. Empty `groups` or `cores`: does nothing.
void PinProcessGroups(const std::vector<pid_t>& groups, const std::vector<int>& cores);

}  // namespace loom::base
