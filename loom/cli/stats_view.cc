#include "loom/cli/stats_view.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/base/duration_text.h"
#include "loom/cli/job_view.h"
#include "loom/cli/json_output.h"

namespace loom::cli {

std::string QueueName(const v1::QueueStats& q) {
  if (!q.device().empty()) return absl::StrCat("device ", q.device());
  if (q.device_kind().empty()) return absl::StrCat("cpu x", q.cpu_slots());
  std::string name = absl::StrCat("device ", q.device_kind());
  if (q.cpu_slots() > 0) absl::StrAppend(&name, " + cpu x", q.cpu_slots());
  return name;
}

nlohmann::json StatsJson(const v1::ServerStats& s) {
  nlohmann::json j = ProtoJson(s);
  // Each queue also under the name the table gives it.
  for (int i = 0; i < s.queues_size(); ++i) j["queues"][i]["resource"] = QueueName(s.queues(i));
  return j;
}

std::vector<std::string> StatsSummaryLines(const v1::ServerStats& s) {
  return {absl::StrFormat("policy %s, up %s; agents: %d alive, %d lost, %d flagged", s.policy(),
                          base::DurationText(s.uptime_seconds()), s.agents_alive(), s.agents_lost(),
                          s.agents_flagged()),
          absl::StrFormat("jobs: %d queued, %d running, %d in all", s.jobs_queued(),
                          s.jobs_running(), s.jobs_total()),
          absl::StrFormat("stages: %d ready, %d running; %d granted (%.2f/s over the last minute), "
                          "%d requeued, %d reports refused",
                          s.ready_stages(), s.running_stages(), s.grants(), s.grants_per_second(),
                          s.stages_requeued(), s.reports_refused()),
          absl::StrFormat("queue wait p50 %.1f ms, p99 %.1f ms; dispatch p50 %.1f ms, p99 %.1f ms",
                          s.queue_wait_p50_ms(), s.queue_wait_p99_ms(), s.dispatch_p50_ms(),
                          s.dispatch_p99_ms())};
}

std::vector<std::string> QueueLines(const v1::ServerStats& s) {
  std::vector<std::string> out = {absl::StrFormat("%-60s %6s", "QUEUE (RESOURCE CLASS)", "READY")};
  for (const v1::QueueStats& q : s.queues()) {
    out.push_back(absl::StrFormat("%-60.60s %6d", QueueName(q), q.ready()));
  }
  if (s.queues().empty()) out.push_back("(no stage submitted yet)");
  return out;
}

std::vector<std::string> DeviceLines(const v1::ServerStats& s, const std::string& util_label) {
  std::vector<std::string> out = {absl::StrFormat("%-12s %-10s %-16s %-36s %5s %6s %9s %6s",
                                                  "AGENT", "DEVICE", "HOST", "TARGET", "ALIVE",
                                                  "LEASES", "BUSY-S", util_label)};
  for (const v1::DeviceStats& d : s.devices()) {
    out.push_back(absl::StrFormat("%-12.12s %-10.10s %-16.16s %-36.36s %5s %6d %9.1f %5.1f%%",
                                  d.agent_id(), d.name(), d.hostname(), d.target_key(),
                                  d.alive() ? "yes" : "no", d.leases(), d.busy_seconds(),
                                  100 * d.utilization()));
  }
  if (s.devices().empty()) out.push_back("(no devices)");
  return out;
}

std::vector<std::string> StatsLines(const v1::ServerStats& s) {
  std::vector<std::string> out = StatsSummaryLines(s);
  out.push_back("");
  for (std::string& l : QueueLines(s)) out.push_back(std::move(l));
  out.push_back("");
  for (std::string& l : DeviceLines(s, "UTIL")) out.push_back(std::move(l));
  return out;
}

}  // namespace loom::cli
