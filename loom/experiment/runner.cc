#include "loom/experiment/runner.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace loom::experiment {
namespace {

double TunedLatencyMs(const engine::JobResult& job) {
  double sum = 0;
  for (const auto& o : job.outcomes) {
    if (std::isfinite(o.best_cost)) sum += o.best_cost * static_cast<double>(o.task.count);
  }
  return sum * 1e3;
}

SetupJobResult JobRow(const engine::JobResult& job, absl::Time setup_start) {
  return SetupJobResult{.name = job.name,
                        .job_id = job.job_id,
                        .seconds = absl::ToDoubleSeconds(job.end - setup_start),
                        .tuned_latency_ms = TunedLatencyMs(job),
                        .records = job.records,
                        .error = std::string(job.status.message())};
}

absl::StatusOr<engine::EngineResult> RunOnce(const std::vector<engine::EngineJob>& jobs,
                                             const std::string& policy, const std::string& setup,
                                             const RunnerOptions& options,
                                             tune::RecordStore* store) {
  engine::EngineOptions eo = options.engine;
  eo.policy = policy;
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> eng, engine::Engine::Create(eo));
  std::function<void(const engine::EngineProgress&)> progress;
  if (options.on_progress) {
    progress = [&](const engine::EngineProgress& p) { options.on_progress(setup, p); };
  }
  return eng->Run(jobs, store, progress);
}

}  // namespace

absl::StatusOr<std::vector<SetupResult>> RunExperiment(const std::vector<engine::EngineJob>& jobs,
                                                       const std::vector<std::string>& setups,
                                                       const RunnerOptions& options,
                                                       tune::RecordStore* store) {
  if (jobs.empty()) return absl::InvalidArgumentError("an experiment needs at least one job");
  std::vector<SetupResult> results;
  for (const std::string& setup : setups) {
    std::vector<engine::EngineJob> own = jobs;
    for (engine::EngineJob& j : own) {
      j.options.job_id = absl::StrCat(j.options.job_id, "@", setup);
      j.options.transfer = false;
    }
    SetupResult r;
    r.setup = setup;
    double cpu_slot_seconds = 0;
    int capacity = 1;
    if (setup == "dedicated") {
      for (const engine::EngineJob& j : own) {
        LOOM_ASSIGN_OR_RETURN(engine::EngineResult one,
                              RunOnce({j}, "interleaved", setup, options, store));
        const double t = absl::ToDoubleSeconds(one.makespan());
        r.makespan_s += t;
        r.device_busy_s += one.device_busy_seconds;
        cpu_slot_seconds += one.cpu_slot_seconds;
        capacity = std::max(1, one.cpu_capacity);
        r.jobs.push_back(JobRow(one.jobs[0], one.start));
        r.device_hours += t / 3600;
      }
    } else {
      LOOM_ASSIGN_OR_RETURN(engine::EngineResult all, RunOnce(own, setup, setup, options, store));
      r.makespan_s = absl::ToDoubleSeconds(all.makespan());
      r.device_busy_s = all.device_busy_seconds;
      cpu_slot_seconds = all.cpu_slot_seconds;
      capacity = std::max(1, all.cpu_capacity);
      for (const engine::JobResult& j : all.jobs) r.jobs.push_back(JobRow(j, all.start));
      r.device_hours = r.makespan_s / 3600;
    }
    if (r.makespan_s > 0) {
      r.device_utilization = r.device_busy_s / r.makespan_s;
      r.cpu_utilization = cpu_slot_seconds / (capacity * r.makespan_s);
    }
    r.lower_bound_s = std::max(r.device_busy_s, cpu_slot_seconds / capacity);
    results.push_back(std::move(r));
  }
  return results;
}

absl::Status WriteResults(const std::vector<SetupResult>& results, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::FailedPreconditionError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const std::string csv_path = absl::StrCat(dir, "/results.csv");
  std::ofstream csv(csv_path);
  if (!csv) return absl::FailedPreconditionError(absl::StrCat("cannot write ", csv_path));
  csv << "setup,makespan_s,lower_bound_s,device_utilization,cpu_utilization,device_hours,job,"
         "job_seconds,tuned_latency_ms,records,error\n";
  nlohmann::json j = nlohmann::json::array();
  for (const SetupResult& r : results) {
    nlohmann::json s = {{"setup", r.setup},
                        {"makespan_s", r.makespan_s},
                        {"lower_bound_s", r.lower_bound_s},
                        {"device_busy_s", r.device_busy_s},
                        {"device_utilization", r.device_utilization},
                        {"cpu_utilization", r.cpu_utilization},
                        {"device_hours", r.device_hours},
                        {"jobs", nlohmann::json::array()}};
    for (const SetupJobResult& job : r.jobs) {
      csv << absl::StrFormat("%s,%.3f,%.3f,%.4f,%.4f,%.6f,%s,%.3f,%.6f,%d,\"%s\"\n", r.setup,
                             r.makespan_s, r.lower_bound_s, r.device_utilization, r.cpu_utilization,
                             r.device_hours, job.name, job.seconds, job.tuned_latency_ms,
                             job.records, job.error);
      s["jobs"].push_back({{"name", job.name},
                           {"job_id", job.job_id},
                           {"seconds", job.seconds},
                           {"tuned_latency_ms", job.tuned_latency_ms},
                           {"records", job.records},
                           {"error", job.error}});
    }
    j.push_back(std::move(s));
  }
  if (!csv.good()) return absl::DataLossError(absl::StrCat("writing ", csv_path, " failed"));
  const std::string json_path = absl::StrCat(dir, "/results.json");
  std::ofstream js(json_path);
  js << j.dump(2) << "\n";
  if (!js.good()) return absl::DataLossError(absl::StrCat("writing ", json_path, " failed"));
  return absl::OkStatus();
}

}  // namespace loom::experiment
