// `loom records summary|export|import|prior|stages|trace --db FILE`: look into the tuning
// database — best results per task, JSON-lines export/import (to move records between machines or
// merge jobs), a tuning prior for other machines of the same class (search/prior.h), the stage
// timings of a job's rounds (where the time of a tuning round goes), and those timings as a Chrome
// trace for Perfetto (experiment/trace.h).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <streambuf>

#include "absl/strings/str_format.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/experiment/trace.h"
#include "loom/ops/target.h"
#include "loom/records/postgres.h"
#include "loom/records/record_store.h"
#include "loom/search/prior.h"
#include "loom/tune/make_prior.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

struct RecordsOptions {
  std::string db = "loom.db";
  std::string target;  // empty: this host
  std::string file;    // export/import path ("-" for stdout/stdin)
  std::string job;
  std::vector<std::string> jobs;  // trace: these jobs; empty: every job with stage timings
  std::string task;
  int per_task = tune::MakePriorOptions{}.per_task;
  bool json = false;
};

void RunSummary(const RecordsOptions& o) {
  auto store = OpenExistingRecordDb(o.db);
  std::string target = o.target.empty() ? ops::HostCpuTarget().Key() : o.target;
  auto summary = store->Summary(target);
  FailIfError(summary.status());
  if (o.json) {
    nlohmann::json j = {{"target", target}, {"db", o.db}, {"tasks", nlohmann::json::array()}};
    for (const auto& s : *summary) {
      nlohmann::json t = {{"task", s.task_key}, {"trials", s.trials}, {"errors", s.errors}};
      if (std::isfinite(s.best_cost)) {
        t["best_ms"] = s.best_cost * 1e3;
        t["best_gflops"] = s.best_gflops;
        t["best_template"] = s.best_template;
        t["best_config_index"] = s.best_config_index;
      }
      j["tasks"].push_back(std::move(t));
    }
    PrintJson(j, 2);
    return;
  }
  std::printf("target %s, %zu tasks\n", target.c_str(), summary->size());
  std::printf("%-70s %7s %7s %11s %9s\n", "task", "trials", "errors", "best ms", "best GF");
  for (const auto& s : *summary) {
    std::printf(
        "%-70s %7lld %7lld %11s %9s\n", s.task_key.c_str(), static_cast<long long>(s.trials),
        static_cast<long long>(s.errors),
        std::isfinite(s.best_cost) ? absl::StrFormat("%.4f", s.best_cost * 1e3).c_str() : "-",
        s.best_gflops > 0 ? absl::StrFormat("%.2f", s.best_gflops).c_str() : "-");
  }
}

tune::RecordFilter Filter(const RecordsOptions& o) {
  tune::RecordFilter f;
  if (!o.job.empty()) f.job_id = o.job;
  if (!o.task.empty()) f.task_key = o.task;
  if (!o.target.empty()) f.target_key = o.target;
  return f;
}

void RunExport(const RecordsOptions& o) {
  auto store = OpenExistingRecordDb(o.db);
  if (o.file == "-") {
    FailIfError(store->ExportJsonLines(std::cout, Filter(o)));
    return;
  }
  std::ofstream out(o.file);
  if (!out) Fail(absl::NotFoundError(absl::StrFormat("cannot write '%s'", o.file)));
  FailIfError(store->ExportJsonLines(out, Filter(o)));
  auto n = store->Count(Filter(o));
  FailIfError(n.status());
  if (o.json) {
    PrintJson({{"exported", *n}, {"output", o.file}});
    return;
  }
  std::printf("exported %lld records to %s\n", static_cast<long long>(*n), o.file.c_str());
}

void RunImport(const RecordsOptions& o) {
  auto store = tune::OpenRecordStore(o.db);  // created when missing
  FailIfError(store.status());
  absl::StatusOr<int64_t> n;
  if (o.file == "-") {
    n = (*store)->ImportJsonLines(std::cin);
  } else {
    std::ifstream in(o.file);
    if (!in) Fail(absl::NotFoundError(absl::StrFormat("cannot read '%s'", o.file)));
    n = (*store)->ImportJsonLines(in);
  }
  if (!n.ok()) {
    Fail(absl::Status(n.status().code(), absl::StrFormat("%s: %s", o.file, n.status().message())));
  }
  if (o.json) {
    PrintJson({{"imported", *n}, {"db", tune::RedactUri(o.db)}});
    return;
  }
  std::printf("imported %lld records into %s\n", static_cast<long long>(*n),
              tune::RedactUri(o.db).c_str());
}

// A tuning prior from every task's records on one target (this host's by default).
void RunPrior(const RecordsOptions& o) {
  auto store = OpenExistingRecordDb(o.db);
  const std::string target = o.target.empty() ? ops::HostCpuTarget().Key() : o.target;
  auto summary = store->Summary(target);
  FailIfError(summary.status());
  if (summary->empty()) {
    Fail(absl::NotFoundError(
        absl::StrFormat("no records of target '%s' in %s (see `loom records summary`)", target,
                        tune::RedactUri(o.db))));
  }
  std::vector<tune::Record> records;
  for (const auto& s : *summary) {
    auto task = store->ForTask(s.task_key, target, std::nullopt);
    FailIfError(task.status());
    records.insert(records.end(), task->begin(), task->end());
  }
  search::TuningPrior prior = tune::MakePrior(records, search::TargetClassOfKey(target), target,
                                              tune::MakePriorOptions{.per_task = o.per_task});
  std::ofstream out(o.file);
  if (!out) Fail(absl::NotFoundError(absl::StrFormat("cannot write '%s'", o.file)));
  out << search::PriorToJson(prior);
  out.close();
  if (!out) Fail(absl::DataLossError(absl::StrFormat("writing '%s' failed", o.file)));
  size_t configs = 0;
  for (const auto& t : prior.tasks) configs += t.configs.size();
  if (o.json) {
    PrintJson({{"target_class", prior.target_class},
               {"tasks", prior.tasks.size()},
               {"configs", configs},
               {"records", records.size()},
               {"output", o.file}});
    return;
  }
  std::printf("wrote a %s prior of %zu tasks, %zu configs (from %zu records) to %s\n",
              prior.target_class.c_str(), prior.tasks.size(), configs, records.size(),
              o.file.c_str());
}

// Per stage: rounds, mean and total time, share of the summed stage time; and the device's busy
// fraction over the rounds' wall time (each round from its first start to its last end, so the
// pause between an interrupted run and its resumption does not count).
void RunStages(const RecordsOptions& o) {
  auto store = OpenExistingRecordDb(o.db);
  auto timings = store->StageTimings(o.job);
  FailIfError(timings.status());
  if (timings->empty()) {
    Fail(absl::NotFoundError(
        absl::StrFormat("no stage timings for job '%s' in %s", o.job, tune::RedactUri(o.db))));
  }
  struct Agg {
    int64_t n = 0;
    double total = 0;
  };
  std::map<std::string, Agg> by_stage;
  std::map<std::pair<std::string, int64_t>, std::pair<absl::Time, absl::Time>> rounds;
  double total = 0;
  for (const auto& t : *timings) {
    double s = absl::ToDoubleSeconds(t.timing.end - t.timing.start);
    by_stage[t.timing.stage].n++;
    by_stage[t.timing.stage].total += s;
    total += s;
    auto [it, fresh] = rounds.try_emplace({t.task_key, t.round}, t.timing.start, t.timing.end);
    if (!fresh) {
      it->second.first = std::min(it->second.first, t.timing.start);
      it->second.second = std::max(it->second.second, t.timing.end);
    }
  }
  double wall = 0;
  for (const auto& [_, span] : rounds) wall += absl::ToDoubleSeconds(span.second - span.first);
  double measure = by_stage.count("measure") ? by_stage["measure"].total : 0;
  if (o.json) {
    nlohmann::json stages = nlohmann::json::array();
    for (const auto& [stage, agg] : by_stage) {
      stages.push_back({{"stage", stage},
                        {"runs", agg.n},
                        {"total_seconds", agg.total},
                        {"share", total > 0 ? agg.total / total : 0.0}});
    }
    PrintJson({{"job", o.job},
               {"rounds", rounds.size()},
               {"stage_runs", timings->size()},
               {"wall_seconds", wall},
               {"device_busy", wall > 0 ? measure / wall : 0.0},
               {"stages", stages}});
    return;
  }
  std::printf("job %s: %zu rounds, %zu stage runs, %.2f s of round wall time\n", o.job.c_str(),
              rounds.size(), timings->size(), wall);
  std::printf("%-10s %7s %10s %10s %7s\n", "stage", "runs", "mean s", "total s", "share");
  for (const char* stage : {"propose", "build", "measure", "update"}) {
    auto it = by_stage.find(stage);
    if (it == by_stage.end()) continue;
    std::printf("%-10s %7lld %10.4f %10.3f %6.1f%%\n", stage, static_cast<long long>(it->second.n),
                it->second.total / static_cast<double>(it->second.n), it->second.total,
                total > 0 ? 100.0 * it->second.total / total : 0.0);
  }
  if (wall > 0) {
    std::printf("device busy %.1f%% of round time (idle %.1f%%: the gap a scheduler can fill)\n",
                100.0 * measure / wall, 100.0 * (1.0 - measure / wall));
  }
}

// Collects the job ids of JSON-lines records written into it, one line at a time, so that
// finding every job of a large database needs no more memory than its longest record.
class JobIdSink final : public std::streambuf {
 public:
  const std::set<std::string>& ids() const { return ids_; }

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    if (c != '\n') {
      line_.push_back(static_cast<char>(c));
      return c;
    }
    auto record = tune::RecordFromJson(line_);
    if (record.ok() && !record->job_id.empty()) ids_.insert(record->job_id);
    line_.clear();
    return c;
  }

 private:
  std::string line_;
  std::set<std::string> ids_;
};

// Every job's stage timings (or those of --job), as a Chrome trace.
void RunTrace(const RecordsOptions& o) {
  auto store = OpenExistingRecordDb(o.db);
  std::vector<std::string> jobs = o.jobs;
  if (jobs.empty()) {
    JobIdSink sink;
    std::ostream out(&sink);
    FailIfError(store->ExportJsonLines(out, {}));
    jobs.assign(sink.ids().begin(), sink.ids().end());
  }
  std::vector<tune::StageTimingRecord> timings;
  for (const std::string& job : jobs) {
    auto of_job = store->StageTimings(job);
    FailIfError(of_job.status());
    if (of_job->empty() && !o.jobs.empty()) {
      Fail(absl::NotFoundError(
          absl::StrFormat("no stage timings for job '%s' in %s", job, tune::RedactUri(o.db))));
    }
    timings.insert(timings.end(), of_job->begin(), of_job->end());
  }
  if (timings.empty()) {
    Fail(
        absl::NotFoundError(absl::StrFormat("no stage timings in %s (jobs tuned with `loom tune`, "
                                            "`loom experiment` or an agent store them)",
                                            tune::RedactUri(o.db))));
  }
  std::ofstream out(o.file);
  if (!out) Fail(absl::NotFoundError(absl::StrFormat("cannot write '%s'", o.file)));
  out << experiment::StageTimingsTrace(timings).ToJson().dump() << "\n";
  out.close();
  if (!out) Fail(absl::DataLossError(absl::StrFormat("writing '%s' failed", o.file)));
  std::set<std::string> with_timings;
  for (const auto& t : timings) with_timings.insert(t.job_id);
  if (o.json) {
    PrintJson({{"stages", timings.size()}, {"jobs", with_timings.size()}, {"output", o.file}});
    return;
  }
  std::printf("wrote %zu stages of %zu jobs to %s (open it in ui.perfetto.dev)\n", timings.size(),
              with_timings.size(), o.file.c_str());
}

}  // namespace

void RegisterRecordsCommand(CLI::App& app) {
  auto o = std::make_shared<RecordsOptions>();
  auto* rec = app.add_subcommand("records", "Inspect, export and import the tuning database");
  rec->require_subcommand(1);
  auto add_db = [&](CLI::App* c) {
    c->add_option("--db", o->db, "Record database: an SQLite file or a postgresql:// URI");
  };
  auto* summary = rec->add_subcommand("summary", "Best result per task");
  add_db(summary);
  summary->add_option("--target", o->target, "Target key (default: this host)");
  AddJsonFlag(summary, &o->json, "One JSON object");
  summary->callback([o] { RunSummary(*o); });

  auto* exp = rec->add_subcommand("export", "Write records as JSON lines");
  add_db(exp);
  exp->add_option("-o,--output", o->file, "Output file, or - for stdout")->required();
  exp->add_option("--job", o->job, "Only this job");
  exp->add_option("--task", o->task, "Only this task key");
  exp->add_option("--target", o->target, "Only this target key");
  AddJsonFlag(exp, &o->json, "One JSON object (with -o FILE)");
  exp->callback([o] { RunExport(*o); });

  auto* imp = rec->add_subcommand("import", "Read records from JSON lines");
  add_db(imp);
  imp->add_option("FILE", o->file, "JSON-lines file, or - for stdin")->required();
  AddJsonFlag(imp, &o->json, "One JSON object");
  imp->callback([o] { RunImport(*o); });

  auto* prior = rec->add_subcommand(
      "prior", "Write a tuning prior (for machines of the same class) from a target's records");
  add_db(prior);
  prior->add_option("-o,--output", o->file, "Output JSON file")->required();
  prior->add_option("--target", o->target, "Target key (default: this host)");
  prior->add_option("--per-task", o->per_task, "Configs kept per task (0: all)")
      ->check(CLI::NonNegativeNumber);
  AddJsonFlag(prior, &o->json, "One JSON object");
  prior->callback([o] { RunPrior(*o); });

  auto* stages = rec->add_subcommand("stages", "Where a job's tuning rounds spend their time");
  add_db(stages);
  stages->add_option("--job", o->job, "Job id (printed by loom tune)")->required();
  AddJsonFlag(stages, &o->json, "One JSON object");
  stages->callback([o] { RunStages(*o); });

  auto* trace = rec->add_subcommand(
      "trace", "Write the jobs' stage timings as a Chrome trace (trace.json, for Perfetto)");
  add_db(trace);
  trace->add_option("-o,--output", o->file, "Output JSON file (default: trace.json)");
  trace->add_option("--job", o->jobs, "Only these jobs (repeatable; default: every job)");
  AddJsonFlag(trace, &o->json, "One JSON object");
  trace->callback([o] {
    if (o->file.empty()) o->file = "trace.json";
    RunTrace(*o);
  });
}

}  // namespace loom::cli
