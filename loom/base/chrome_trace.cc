#include "loom/base/chrome_trace.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "loom/base/chart.h"

namespace loom::base {

void ChromeTrace::NameProcess(int pid, const std::string& name, int sort_index) {
  metadata_.push_back({{"name", "process_name"},
                       {"ph", "M"},
                       {"pid", pid},
                       {"tid", 0},
                       {"args", {{"name", name}}}});
  metadata_.push_back({{"name", "process_sort_index"},
                       {"ph", "M"},
                       {"pid", pid},
                       {"tid", 0},
                       {"args", {{"sort_index", sort_index}}}});
}

void ChromeTrace::NameThread(int pid, int tid, const std::string& name, int sort_index) {
  metadata_.push_back({{"name", "thread_name"},
                       {"ph", "M"},
                       {"pid", pid},
                       {"tid", tid},
                       {"args", {{"name", name}}}});
  metadata_.push_back({{"name", "thread_sort_index"},
                       {"ph", "M"},
                       {"pid", pid},
                       {"tid", tid},
                       {"args", {{"sort_index", sort_index}}}});
}

void ChromeTrace::Add(TraceEvent event) { events_.push_back(std::move(event)); }

nlohmann::json ChromeTrace::ToJson() const {
  nlohmann::json events = metadata_;
  for (const TraceEvent& e : events_) {
    events.push_back({{"name", e.name},
                      {"cat", e.category},
                      {"ph", "X"},
                      {"ts", e.start_us},
                      {"dur", e.duration_us},
                      {"pid", e.pid},
                      {"tid", e.tid},
                      {"args", e.args}});
  }
  return {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
}

void AddLaneEvents(ChromeTrace& trace, int pid, const std::vector<std::string>& lanes,
                   std::vector<LaneEvent> events) {
  std::vector<std::vector<size_t>> by_lane(lanes.size());
  for (size_t i = 0; i < events.size(); ++i) {
    const int lane = events[i].lane;
    if (lane >= 0 && lane < static_cast<int>(lanes.size())) {
      by_lane[static_cast<size_t>(lane)].push_back(i);
    }
  }
  int next_tid = 1;
  for (size_t lane = 0; lane < lanes.size(); ++lane) {
    const std::vector<size_t>& members = by_lane[lane];
    if (members.empty()) continue;
    std::vector<std::pair<double, double>> iv;
    for (size_t i : members) {
      const TraceEvent& e = events[i].event;
      iv.emplace_back(e.start_us, e.start_us + e.duration_us);
    }
    const std::vector<int> rows = PackRows(iv);
    const int nrows = *std::max_element(rows.begin(), rows.end()) + 1;
    for (int r = 0; r < nrows; ++r) {
      trace.NameThread(pid, next_tid + r,
                       r == 0 ? lanes[lane] : absl::StrCat(lanes[lane], " #", r + 1), next_tid + r);
    }
    for (size_t k = 0; k < members.size(); ++k) {
      TraceEvent e = std::move(events[members[k]].event);
      e.pid = pid;
      e.tid = next_tid + rows[k];
      trace.Add(std::move(e));
    }
    next_tid += nrows;
  }
}

absl::Status ValidateChromeTrace(const nlohmann::json& trace) {
  const nlohmann::json* events = &trace;
  if (trace.is_object()) {
    if (!trace.contains("traceEvents")) {
      return absl::InvalidArgumentError("a trace object needs a \"traceEvents\" array");
    }
    events = &trace["traceEvents"];
    if (trace.contains("displayTimeUnit") &&
        !(trace["displayTimeUnit"] == "ms" || trace["displayTimeUnit"] == "ns")) {
      return absl::InvalidArgumentError("\"displayTimeUnit\" must be \"ms\" or \"ns\"");
    }
  }
  if (!events->is_array()) return absl::InvalidArgumentError("\"traceEvents\" must be an array");
  static const std::set<std::string> kPhases = {"B", "E", "X", "i", "I", "C", "b", "n", "e", "s",
                                                "t", "f", "P", "N", "O", "D", "M", "R", "c"};
  // Complete events per (pid, tid): (start, end, index).
  std::map<std::pair<int64_t, int64_t>, std::vector<std::tuple<double, double, size_t>>> spans;
  for (size_t i = 0; i < events->size(); ++i) {
    const nlohmann::json& e = (*events)[i];
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat("traceEvents[", i, "]: ", why));
    };
    if (!e.is_object()) return bad("not an object");
    if (!e.contains("ph") || !e["ph"].is_string()) return bad("no string \"ph\"");
    const std::string ph = e["ph"];
    if (!kPhases.contains(ph)) return bad(absl::StrCat("unknown phase \"", ph, "\""));
    if (e.contains("args") && !e["args"].is_object()) return bad("\"args\" must be an object");
    for (const char* id : {"pid", "tid"}) {
      if (e.contains(id) && !e[id].is_number_integer()) {
        return bad(absl::StrCat("\"", id, "\" must be an integer"));
      }
    }
    if (ph == "M") {
      if (!e.contains("name") || !e["name"].is_string()) return bad("metadata without a name");
      const std::string name = e["name"];
      if (name == "process_name" || name == "thread_name" || name == "process_labels") {
        if (!e.contains("args") || !e["args"].contains("name") || !e["args"]["name"].is_string()) {
          return bad(absl::StrCat(name, " needs a string args.name"));
        }
      } else if (name == "process_sort_index" || name == "thread_sort_index") {
        if (!e.contains("args") || !e["args"].contains("sort_index") ||
            !e["args"]["sort_index"].is_number_integer()) {
          return bad(absl::StrCat(name, " needs an integer args.sort_index"));
        }
      } else {
        return bad(absl::StrCat("unknown metadata \"", name, "\""));
      }
      if (!e.contains("pid")) return bad("metadata without a pid");
      continue;
    }
    if (!e.contains("name") || !e["name"].is_string()) return bad("no string \"name\"");
    if (e.contains("cat") && !e["cat"].is_string()) return bad("\"cat\" must be a string");
    if (!e.contains("ts") || !e["ts"].is_number() || !std::isfinite(e["ts"].get<double>())) {
      return bad("no finite number \"ts\"");
    }
    if (!e.contains("pid") || !e.contains("tid")) return bad("no \"pid\" and \"tid\"");
    if (ph != "X") continue;
    if (!e.contains("dur") || !e["dur"].is_number() || !(e["dur"].get<double>() >= 0)) {
      return bad("a complete event needs \"dur\" >= 0");
    }
    const double ts = e["ts"];
    spans[{e["pid"].get<int64_t>(), e["tid"].get<int64_t>()}].emplace_back(
        ts, ts + e["dur"].get<double>(), i);
  }
  // On one thread, complete events nest or are disjoint (a stack of open events).
  for (auto& [thread, list] : spans) {
    std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
      return std::get<0>(a) != std::get<0>(b) ? std::get<0>(a) < std::get<0>(b)
                                              : std::get<1>(a) > std::get<1>(b);
    });
    std::vector<std::tuple<double, double, size_t>> open;
    for (const auto& ev : list) {
      const auto [start, end, index] = ev;
      while (!open.empty() && std::get<1>(open.back()) <= start + 1e-3) open.pop_back();
      if (!open.empty() && end > std::get<1>(open.back()) + 1e-3) {
        return absl::InvalidArgumentError(absl::StrCat(
            "traceEvents[", index, "]: overlaps traceEvents[", std::get<2>(open.back()),
            "] on pid ", thread.first, " tid ", thread.second, " without nesting in it"));
      }
      open.push_back(ev);
    }
  }
  return absl::OkStatus();
}

}  // namespace loom::base
