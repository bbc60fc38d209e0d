#include "loom/service/state_rows.h"

#include <cmath>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loom::service {
namespace {

absl::Status Damaged(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("state store: ", what));
}

bool FiniteNonNegative(double v) { return std::isfinite(v) && v >= 0; }

// The `phase` column of a task row: a stage kind's value while the task runs, these two after it
// ended (the values of the daemon's states before TaskEnd, kept so they load unchanged).
constexpr int64_t kDonePhase = 4;
constexpr int64_t kSkippedPhase = 5;
static_assert(static_cast<int64_t>(sched::StageKind::kPropose) == 0 &&
              static_cast<int64_t>(sched::StageKind::kUpdate) == 3);

// A task row's `history` column -> TaskRow::session, the one place that reads it. The column holds
// the session's state (v1::TaskSessionState, serialized); daemons before this release stored that
// state wrapped in a v1::UpdateInput (its field 3, `session`), which is unwrapped here so that
// their state files load. The two are told apart by the first byte: a saved state always starts
// with its `version` (field 1, a varint: tag 0x08), a wrapper with field 3, length-delimited (tag
// 0x1a). nullopt for a wrapper that does not parse; the state itself is parsed, and refused when
// damaged, where the session is restored (JobDriver::SessionFor).
std::optional<std::string> SessionColumn(const std::string& stored) {
  constexpr char kWrapperTag = 0x1a;  // v1::UpdateInput.session: (3 << 3) | length-delimited
  if (stored.empty() || stored[0] != kWrapperTag) return stored;
  v1::UpdateInput wrapper;
  if (!wrapper.ParseFromString(stored)) return std::nullopt;
  return std::move(*wrapper.mutable_session());
}

// "j17": the only job ids the daemon writes.
bool IsJobId(absl::string_view id) {
  int64_t n = 0;
  return id.size() >= 2 && id.size() <= 20 && id[0] == 'j' && absl::SimpleAtoi(id.substr(1), &n) &&
         n > 0;
}

}  // namespace

absl::StatusOr<JobRow> DecodeJobRow(const RawJobRow& raw) {
  if (!IsJobId(raw.id)) return Damaged("a job row has a malformed id");
  const std::string what = absl::StrCat("job ", raw.id, ": ");
  JobRow j;
  j.id = raw.id;
  j.uid = raw.uid;
  j.owner = raw.owner;
  j.name = raw.name;
  if (raw.state < v1::JOB_STATE_QUEUED || raw.state > v1::JOB_STATE_CANCELLED) {
    return Damaged(absl::StrCat(what, "unknown state ", raw.state));
  }
  j.state = static_cast<v1::JobState>(raw.state);
  if (raw.priority < -1000 || raw.priority > 1000) {
    return Damaged(absl::StrCat(what, "priority out of range"));
  }
  j.priority = static_cast<int>(raw.priority);
  if (!j.spec.ParseFromString(raw.spec)) return Damaged(absl::StrCat(what, "corrupt spec"));
  j.submitted = absl::FromUnixMicros(raw.submitted_us);
  j.started = absl::FromUnixMicros(raw.started_us);
  j.finished = absl::FromUnixMicros(raw.finished_us);
  j.failure_reason = raw.failure_reason;
  if (raw.prepared != 0 && raw.prepared != 1) return Damaged(absl::StrCat(what, "bad prepared"));
  j.prepared = raw.prepared != 0;
  j.isa = raw.isa;
  j.target_key = raw.target_key;
  if (!FiniteNonNegative(raw.cpu_seconds) || !FiniteNonNegative(raw.device_seconds) ||
      !FiniteNonNegative(raw.estimated_latency_ms) ||
      !FiniteNonNegative(raw.device_seconds_limit) || raw.records < 0) {
    return Damaged(absl::StrCat(what, "negative or non-finite counters"));
  }
  j.cpu_seconds = raw.cpu_seconds;
  j.device_seconds = raw.device_seconds;
  j.records = raw.records;
  j.estimated_latency_ms = raw.estimated_latency_ms;
  j.device_seconds_limit = raw.device_seconds_limit;
  return j;
}

absl::StatusOr<TaskRow> DecodeTaskRow(const std::string& job_id, const RawTaskRow& raw) {
  const std::string what = absl::StrCat("job ", job_id, " task ", raw.index, ": ");
  if (raw.index < 0 || raw.index > 1'000'000) {
    return Damaged(absl::StrCat("job ", job_id, ": a task index is out of range"));
  }
  TaskRow t;
  t.job_id = job_id;
  t.index = static_cast<int>(raw.index);
  t.task_key = raw.task_key;
  t.template_name = raw.template_name;
  // best_cost: +inf when the task has only failed results (older states stored it so).
  if (!FiniteNonNegative(raw.flops) || !(raw.best_cost >= 0) || raw.count < 1 || raw.round < 0 ||
      raw.trials_done < 0 || raw.trials_done > 1'000'000'000 || raw.errors < 0 ||
      raw.errors > 1'000'000'000) {
    return Damaged(absl::StrCat(what, "negative or non-finite counters"));
  }
  t.flops = raw.flops;
  t.count = raw.count;
  if (raw.phase < 0 || raw.phase > kSkippedPhase) {
    return Damaged(absl::StrCat(what, "unknown phase ", raw.phase));
  }
  if (raw.phase >= kDonePhase) {
    t.end = raw.phase == kDonePhase ? TaskEnd::kDone : TaskEnd::kSkipped;
  } else {
    t.stage = static_cast<sched::StageKind>(raw.phase);
  }
  t.round = raw.round;
  t.trials_done = static_cast<int>(raw.trials_done);
  t.errors = static_cast<int>(raw.errors);
  t.best_cost = raw.best_cost;
  t.skip_reason = raw.skip_reason;
  std::optional<std::string> session = SessionColumn(raw.history);
  if (!session.has_value() || !t.configs.ParseFromString(raw.configs) ||
      !t.artifacts.ParseFromString(raw.artifacts)) {
    return Damaged(absl::StrCat(what, "corrupt blob"));
  }
  t.session = *std::move(session);
  return t;
}

int64_t EncodeTaskPhase(const TaskRow& task) {
  switch (task.end) {
    case TaskEnd::kDone:
      return kDonePhase;
    case TaskEnd::kSkipped:
      return kSkippedPhase;
    case TaskEnd::kNone:
      break;
  }
  return static_cast<int64_t>(task.stage);
}

absl::StatusOr<LeaseRow> DecodeLeaseRow(const RawLeaseRow& raw) {
  if (!v1::StageKind_IsValid(static_cast<int>(raw.kind)) ||
      raw.kind != static_cast<int>(raw.kind)) {
    return Damaged(absl::StrCat("lease ", raw.lease_id, ": unknown stage kind ", raw.kind));
  }
  if (raw.task < -1 || raw.task > 1'000'000) {
    return Damaged(absl::StrCat("lease ", raw.lease_id, ": task out of range"));
  }
  return LeaseRow{raw.lease_id,
                  raw.job_id,
                  static_cast<int>(raw.task),
                  static_cast<v1::StageKind>(raw.kind),
                  raw.agent_id,
                  absl::FromUnixMicros(raw.granted_us)};
}

absl::Status CheckTaskIndices(const std::string& job_id, const std::vector<TaskRow>& tasks) {
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i].index != static_cast<int>(i)) {
      return Damaged(absl::StrCat("job ", job_id, ": task ", i, " is missing"));
    }
  }
  return absl::OkStatus();
}

}  // namespace loom::service
