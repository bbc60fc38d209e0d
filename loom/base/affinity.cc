#include "loom/base/affinity.h"

#include <dirent.h>
#include <sched.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loom::base {

void SetThreadAffinity(pid_t tid, const std::vector<int>& cores) {
  if (cores.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cores) CPU_SET(c, &set);
  sched_setaffinity(tid, sizeof(set), &set);
}

void PinProcessGroups(const std::vector<pid_t>& groups, const std::vector<int>& cores) {
  if (groups.empty() || cores.empty()) return;
  for (pid_t g : groups) SetThreadAffinity(g, cores);  // the drivers first
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return;
  while (dirent* e = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    std::ifstream f(absl::StrCat("/proc/", pid, "/stat"));
    std::string line;
    if (!std::getline(f, line)) continue;
    const size_t paren = line.rfind(')');  // the command name may hold spaces and parentheses
    if (paren == std::string::npos) continue;
    std::istringstream rest(line.substr(paren + 1));
    char state = 0;
    int ppid = 0, pgrp = 0;
    if (!(rest >> state >> ppid >> pgrp)) continue;
    if (std::find(groups.begin(), groups.end(), pgrp) == groups.end()) continue;
    DIR* tasks = opendir(absl::StrCat("/proc/", pid, "/task").c_str());
    if (tasks == nullptr) continue;
    while (dirent* t = readdir(tasks)) {
      int tid = 0;
      if (absl::SimpleAtoi(t->d_name, &tid)) SetThreadAffinity(tid, cores);
    }
    closedir(tasks);
  }
  closedir(proc);
}

}  // namespace loom::base
