// How the CLI shows the daemon's ServerStats (GetStats): the text tables of `loom stats` and the
// device and queue rows of `loom top`, and the JSON of `loom stats --json` (json_output.h's
// ProtoJson: proto field names, numbers as JSON numbers).
#pragma once

#include <string>
#include <vector>

#include "loom/v1/jobs.pb.h"
#include "nlohmann/json.hpp"

namespace loom::cli {

// "cpu x2", "device cpu:avx2:... + cpu x1", "device a1/cuda:0".
std::string QueueName(const v1::QueueStats& q);
// ProtoJson(stats), each queue with its QueueName as "resource".
nlohmann::json StatsJson(const v1::ServerStats& stats);
// The summary lines (policy, uptime, agents, jobs, stages, rates, latencies).
std::vector<std::string> StatsSummaryLines(const v1::ServerStats& stats);
std::vector<std::string> QueueLines(const v1::ServerStats& stats);
// One row per device; the UTIL column shows each device's `utilization` under `util_label`.
std::vector<std::string> DeviceLines(const v1::ServerStats& stats, const std::string& util_label);
// Everything `loom stats` prints: summary, queues, devices (utilization since registration).
std::vector<std::string> StatsLines(const v1::ServerStats& stats);

}  // namespace loom::cli
