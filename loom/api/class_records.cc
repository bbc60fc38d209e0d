#include "loom/api/class_records.h"

#include <sstream>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/records/record.h"
#include "loom/search/prior.h"

namespace loom::api {

std::string TargetModelOfKey(const std::string& target_key) {
  const std::string cls = search::TargetClassOfKey(target_key);
  return cls.size() < target_key.size() ? target_key.substr(cls.size() + 1) : target_key;
}

ClassRecords::ClassRecords(tune::RecordStore* inner, bool exact_only)
    : inner_(inner), exact_only_(exact_only) {}

absl::StatusOr<std::vector<tune::Record>> ClassRecords::BestK(const std::string& task_key,
                                                              const std::string& target_key,
                                                              int k) {
  absl::StatusOr<std::vector<tune::Record>> exact = inner_->BestK(task_key, target_key, k);
  if (exact_only_ || !exact.ok() || !exact->empty() || k < 1) return exact;
  // Every record of the task, on any target; the best successful one of this class.
  std::stringstream lines;
  tune::RecordFilter filter;
  filter.task_key = task_key;
  if (absl::Status st = inner_->ExportJsonLines(lines, filter); !st.ok()) return st;
  const std::string cls = search::TargetClassOfKey(target_key);
  std::optional<tune::Record> best;
  for (std::string line; std::getline(lines, line);) {
    absl::StatusOr<tune::Record> r = tune::RecordFromJson(line);
    if (!r.ok() || !r->ok() || r->target_key == target_key ||
        search::TargetClassOfKey(r->target_key) != cls) {
      continue;
    }
    if (!best.has_value() || r->median_cost < best->median_cost) best = *std::move(r);
  }
  if (!best.has_value()) return exact;
  {
    absl::MutexLock lock(&mu_);
    borrowed_from_.insert(TargetModelOfKey(best->target_key));
    ++borrowed_;
  }
  return std::vector<tune::Record>{*std::move(best)};
}

std::set<std::string> ClassRecords::borrowed_from() const {
  absl::MutexLock lock(&mu_);
  return borrowed_from_;
}

int64_t ClassRecords::borrowed() const {
  absl::MutexLock lock(&mu_);
  return borrowed_;
}

absl::Status ClassRecords::Append(const std::vector<tune::Record>& records) {
  return inner_->Append(records);
}
absl::StatusOr<std::vector<tune::Record>> ClassRecords::ForTask(
    const std::string& task_key, const std::string& target_key,
    const std::optional<std::string>& job_id) {
  return inner_->ForTask(task_key, target_key, job_id);
}
absl::StatusOr<std::vector<tune::Record>> ClassRecords::Similar(const graph::Workload& workload,
                                                                const std::string& target_key,
                                                                int limit) {
  return inner_->Similar(workload, target_key, limit);
}
absl::Status ClassRecords::AppendStageTimings(const std::string& job_id,
                                              const std::string& task_key, int64_t round,
                                              const std::vector<tune::StageTiming>& timings) {
  return inner_->AppendStageTimings(job_id, task_key, round, timings);
}
absl::StatusOr<std::vector<tune::StageTimingRecord>> ClassRecords::StageTimings(
    const std::string& job_id) {
  return inner_->StageTimings(job_id);
}
absl::Status ClassRecords::ExportJsonLines(std::ostream& out, const tune::RecordFilter& filter) {
  return inner_->ExportJsonLines(out, filter);
}
absl::StatusOr<int64_t> ClassRecords::ImportJsonLines(std::istream& in) {
  return inner_->ImportJsonLines(in);
}
absl::StatusOr<int64_t> ClassRecords::Count(const tune::RecordFilter& filter) {
  return inner_->Count(filter);
}
absl::StatusOr<std::vector<tune::TaskSummary>> ClassRecords::Summary(
    const std::string& target_key) {
  return inner_->Summary(target_key);
}

absl::StatusOr<ops::Target> CpuCompileTarget(const std::string& spec) {
  ops::Target target = ops::HostCpuTarget();
  if (spec == "cpu") return target;
  if (spec.rfind("cpu:", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CompileOptions.target: unknown target '", spec,
        "' (cpu, or cpu:ISA with ISA avx512, avx2 or generic; CUDA models compile with "
        "`loom bench --target cuda`)"));
  }
  absl::StatusOr<ops::Isa> isa = ops::ParseIsa(spec.substr(4));
  if (!isa.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CompileOptions.target '", spec, "': ", isa.status().message()));
  }
  if (static_cast<int>(*isa) > static_cast<int>(target.isa)) {
    return absl::FailedPreconditionError(
        absl::StrCat("CompileOptions.target '", spec, "': this CPU (", ops::IsaName(target.isa),
                     ") cannot run ", ops::IsaName(*isa), " kernels"));
  }
  target.isa = *isa;
  return target;
}

std::string TuningSummary(int64_t tuned, int64_t kernels, const ClassRecords* records,
                          const std::string& db, const ops::Target& target, bool exact_target) {
  std::string out = absl::StrCat(tuned, " of ", kernels, " kernels tuned");
  if (records == nullptr) return absl::StrCat(out, " (no record database)");
  const std::set<std::string> from = records->borrowed_from();
  if (!from.empty()) {
    return absl::StrCat(out, " (records from ", absl::StrJoin(from, ", "), ", same class)");
  }
  if (tuned > 0 || kernels == 0) return out;
  return absl::StrCat(
      out, " (no records for ", target.Key(), " in ", db,
      exact_target ? absl::StrCat("; --exact-target: those of other ", search::TargetClass(target),
                                  " machines are not used)")
                   : absl::StrCat(" nor for another ", search::TargetClass(target), " machine)"));
}

}  // namespace loom::api
