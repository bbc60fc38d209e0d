// What the service's libFuzzer targets run on one input, shared with the tests that replay their
// seed corpora (tests/data/state_rows_corpus/, tests/data/request_corpus/) so every seed and every
// crash once found stays a regression test. Test support: header-only, never in the product.
//   FuzzStateRows: the bytes are the columns of a job row, two task rows and a lease row; true
//   when every row decodes.
//   FuzzRequest: the first byte picks a decoder (a SubmitJobRequest with its uploaded model, an
//   agent's ReportStageRequest against a fixed build, a tokens file), the rest is its input; true
//   when the input passes every check.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "google/protobuf/stubs/logging.h"
#include "loom/service/auth.h"
#include "loom/service/request_checks.h"
#include "loom/service/state_rows.h"

namespace loom::service::testing {

// Protobuf logs every string field that is not UTF-8; at fuzzing rates that is most inputs.
inline void SilenceProtobufLogs() {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
}

// Reads typed fields off the front of the input; past its end every field is empty or zero.
class FieldReader {
 public:
  explicit FieldReader(std::string_view in) : in_(in) {}
  int64_t Int() {
    int64_t v = 0;
    const size_t n = std::min(sizeof(v), in_.size());
    std::memcpy(&v, in_.data(), n);
    in_.remove_prefix(n);
    return v;
  }
  double Real() {
    double v = 0;
    const size_t n = std::min(sizeof(v), in_.size());
    std::memcpy(&v, in_.data(), n);
    in_.remove_prefix(n);
    return v;
  }
  // One length byte (two for blobs), then that many bytes.
  std::string Text(bool blob = false) {
    size_t len = 0;
    for (int i = 0; i < (blob ? 2 : 1) && !in_.empty(); ++i) {
      len = len * 256 + static_cast<uint8_t>(in_[0]);
      in_.remove_prefix(1);
    }
    len = std::min(len, in_.size());
    std::string s(in_.substr(0, len));
    in_.remove_prefix(len);
    return s;
  }
  std::string_view Rest() const { return in_; }

 private:
  std::string_view in_;
};

inline bool FuzzStateRows(std::string_view input) {
  FieldReader r(input);
  RawJobRow job;
  job.id = r.Text();
  job.uid = r.Text();
  job.owner = r.Text();
  job.name = r.Text();
  job.state = r.Int();
  job.priority = r.Int();
  job.spec = r.Text(/*blob=*/true);
  job.submitted_us = r.Int();
  job.started_us = r.Int();
  job.finished_us = r.Int();
  job.failure_reason = r.Text();
  job.prepared = r.Int();
  job.isa = r.Text();
  job.target_key = r.Text();
  job.cpu_seconds = r.Real();
  job.device_seconds = r.Real();
  job.records = r.Int();
  job.estimated_latency_ms = r.Real();
  job.device_seconds_limit = r.Real();
  absl::StatusOr<JobRow> decoded = DecodeJobRow(job);
  bool ok = decoded.ok();
  if (ok) (void)decoded->RecordKey();
  std::vector<TaskRow> tasks;
  for (int i = 0; i < 2; ++i) {
    RawTaskRow t;
    t.index = r.Int();
    t.task_key = r.Text();
    t.template_name = r.Text();
    t.flops = r.Real();
    t.count = r.Int();
    t.phase = r.Int();
    t.round = r.Int();
    t.trials_done = r.Int();
    t.errors = r.Int();
    t.best_cost = r.Real();
    t.skip_reason = r.Text();
    t.history = r.Text(true);
    t.configs = r.Text(true);
    t.artifacts = r.Text(true);
    absl::StatusOr<TaskRow> task = DecodeTaskRow(job.id, t);
    ok = ok && task.ok();
    if (task.ok()) tasks.push_back(*std::move(task));
  }
  ok = CheckTaskIndices(job.id, tasks).ok() && ok;
  RawLeaseRow lease;
  lease.lease_id = r.Text();
  lease.job_id = r.Text();
  lease.task = r.Int();
  lease.kind = r.Int();
  lease.agent_id = r.Text();
  lease.granted_us = r.Int();
  return DecodeLeaseRow(lease).ok() && ok;
}

inline bool FuzzRequest(std::string_view input) {
  if (input.empty()) return false;
  const uint8_t which = static_cast<uint8_t>(input[0]) % 3;
  input.remove_prefix(1);
  switch (which) {
    case 0: {
      v1::SubmitJobRequest req;
      if (!req.ParseFromArray(input.data(), static_cast<int>(input.size()))) return false;
      bool ok = ValidateSubmit(req, MeasureCaps{}).ok();
      if (req.has_onnx_model()) ok = CheckUploadedModel(req.onnx_model()).ok() && ok;
      if (PublicModelError(req.name(), "/tmp/loom-upload-x").size() > 300) __builtin_trap();
      return ok;
    }
    case 1: {
      v1::ReportStageRequest req;
      if (!req.ParseFromArray(input.data(), static_cast<int>(input.size()))) return false;
      v1::BuildInput asked;
      v1::BuildOutput sent;
      for (int64_t c : {3, 7}) {
        asked.add_config_indices(c);
        v1::Artifact* a = sent.add_artifacts();
        a->set_config_index(c);
        a->set_content_hash(std::string(64, 'f'));
      }
      if (req.result().has_build()) return CheckBuildOutput(req.result().build(), asked).ok();
      return CheckMeasureOutput(req.result().measure(), sent,
                                MeasureBounds{.flops = 1e9, .peak_flops = 1e12, .max_costs = 20})
          .ok();
    }
    default: {
      absl::StatusOr<TokenTable> t =
          TokenTable::Parse(absl::string_view(input.data(), input.size()));
      if (t.ok()) (void)t->Authenticate("Bearer x");
      return t.ok();
    }
  }
}

}  // namespace loom::service::testing
