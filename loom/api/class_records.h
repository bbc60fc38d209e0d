// Records that travel between machines of one target class. A RecordStore view for compiling:
// a task with no record for the exact target (its CPU or GPU model included in the key) takes the
// best record of another target of the same class (search::TargetClassOfKey, "cpu:avx2"), whose
// config space is the same, and remembers whose records it used, so the compile can say so
// ("12 of 12 kernels tuned (records from AMD EPYC 9R14, same class)"). loom::Model::Compile wraps
// the compile's database in it (off with CompileOptions::exact_target); nothing else writes
// through it.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"

namespace loom::api {

class ClassRecords : public tune::RecordStore {
 public:
  // `inner` outlives this view. exact_only: BestK on the exact key only (a plain pass-through).
  ClassRecords(tune::RecordStore* inner, bool exact_only);

  // The best record of (task, target); when there is none and !exact_only, the best of another
  // target of the same class (at most one record: k is ignored for the fallback).
  absl::StatusOr<std::vector<tune::Record>> BestK(const std::string& task_key,
                                                  const std::string& target_key, int k) override;

  // The other targets (their model names: "AMD EPYC 9R14") whose records BestK returned.
  std::set<std::string> borrowed_from() const;
  // How many BestK calls the fallback answered.
  int64_t borrowed() const;

  // The rest pass through to `inner`.
  absl::Status Append(const std::vector<tune::Record>& records) override;
  absl::StatusOr<std::vector<tune::Record>> ForTask(
      const std::string& task_key, const std::string& target_key,
      const std::optional<std::string>& job_id) override;
  absl::StatusOr<std::vector<tune::Record>> Similar(const graph::Workload& workload,
                                                    const std::string& target_key,
                                                    int limit) override;
  absl::Status AppendStageTimings(const std::string& job_id, const std::string& task_key,
                                  int64_t round,
                                  const std::vector<tune::StageTiming>& timings) override;
  absl::StatusOr<std::vector<tune::StageTimingRecord>> StageTimings(
      const std::string& job_id) override;
  absl::Status ExportJsonLines(std::ostream& out, const tune::RecordFilter& filter) override;
  absl::StatusOr<int64_t> ImportJsonLines(std::istream& in) override;
  absl::StatusOr<int64_t> Count(const tune::RecordFilter& filter) override;
  absl::StatusOr<std::vector<tune::TaskSummary>> Summary(const std::string& target_key) override;

 private:
  tune::RecordStore* inner_;
  const bool exact_only_;
  mutable absl::Mutex mu_;
  std::set<std::string> borrowed_from_ ABSL_GUARDED_BY(mu_);
  int64_t borrowed_ ABSL_GUARDED_BY(mu_) = 0;
};

// A CPU compile's target: "cpu" (this CPU) or a class "cpu:ISA" with an ISA this CPU runs
// (avx512, avx2, generic), this CPU's model kept, so records of the class apply (ClassRecords).
// kInvalidArgument for anything else, kFailedPrecondition for an ISA this CPU lacks. What
// CompileOptions::target and `loom compile/bench --target` take.
absl::StatusOr<ops::Target> CpuCompileTarget(const std::string& spec);

// "AMD EPYC 9R14" from "cpu:avx512:AMD EPYC 9R14": the part of a target key after its class.
std::string TargetModelOfKey(const std::string& target_key);

// What a compile says about its records: "N of M kernels tuned", and where they came from
// ("(records from AMD EPYC 9R14, same class)") or why none applied ("(no records for
// cpu:avx2:... in loom.db nor for another cpu:avx2 machine)"). `records` null: no database.
std::string TuningSummary(int64_t tuned, int64_t kernels, const ClassRecords* records,
                          const std::string& db, const ops::Target& target, bool exact_target);

}  // namespace loom::api
