// What the daemon checks in what users and agents send it, as pure functions: a submitted job's
// spec against the API's ranges and the daemon's measurement caps, an uploaded model against
// external data, importer errors rewritten for the caller (no server paths, no tensor values),
// and an agent's build and measure outputs against what it was asked and what the device can
// physically do. The job driver (job_driver.cc) calls them at the service edge; the request
// fuzzer (request_checks_fuzzer.cc) feeds them arbitrary messages.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "loom/tune/spread.h"
#include "loom/v1/agent.pb.h"
#include "loom/v1/jobs.pb.h"
#include "loom/v1/stage.pb.h"

namespace loom::service {

// The most a job may ask of a device (`loom serve --max-measure-*`): past them a submission is
// refused, so one job cannot hold a device for hours.
struct MeasureCaps {
  int max_repeat = 20;            // MeasureSpec.repeat
  int max_min_repeat_ms = 1000;   // MeasureSpec.min_repeat_ms
  int max_number = 1000000;       // MeasureSpec.number
  double max_run_timeout_s = 60;  // MeasureSpec.run_timeout_s
  int max_batch = 64;             // SubmitJobRequest.batch_size (candidates per measure stage)
};

// The target kind a job measures on: "cpu" or "cuda" ("cuda:sm_90" -> "cuda"; empty -> "cpu").
std::string TargetKind(const v1::SubmitJobRequest& spec);

// A SubmitJobRequest.request_id: empty, or 1 to 64 of [A-Za-z0-9._:-]; kInvalidArgument otherwise.
absl::Status ValidateRequestId(std::string_view id);
// A fresh request id for one submission (32 hex digits from the system's entropy): what clients
// (api/job_client.h, the CLI) send so that their retries submit once.
std::string NewRequestId();
// A registration's secret (RegisterResponse.session): 32 hex digits from the system's entropy
// (std::random_device), for an --insecure daemon to tell an agent from a caller that only knows
// its id.
std::string NewSessionSecret();
// Whether `shown` is `secret`, in time that depends only on their lengths. False for an empty
// `secret`.
bool SameSecret(std::string_view shown, std::string_view secret);

// kInvalidArgument naming the first field outside the API's range or the daemon's caps (and the
// flag that sets the cap).
absl::Status ValidateSubmit(const v1::SubmitJobRequest& request, const MeasureCaps& caps);

// An uploaded ONNX model must carry all its data: kInvalidArgument naming the first tensor (an
// initializer or a node's attribute, in the graph or a function or subgraph) that points at
// external data, or saying the bytes are not an ONNX model.
absl::Status CheckUploadedModel(std::string_view onnx_bytes);

// An importer or shape-inference message made fit for the user who uploaded the model: `hide`
// (the server's private folder) and any other absolute path become "the uploaded model" and
// "<path>", bare numeric lists ("[0,268435455]", tensor values) become "[...]" (typed shapes such
// as f32[2,3] stay), and the text is one line of at most 300 characters.
std::string PublicModelError(absl::string_view message, absl::string_view hide);

// An upper bound on the FLOP/s `device` can reach (its cores x the widest FMA of its ISA x 6.5
// GHz, x 1.5 for timer noise; a fixed 5 PFLOP/s for a GPU): a result faster than this is
// impossible.
double PeakFlopsBound(const v1::DeviceInfo& device);

// An agent's build output for `input`: one artifact per config in order, each naming its config,
// a successful one with a SHA-256 content hash. kPermissionDenied (forged: the agent is flagged)
// when it names other configs; kInvalidArgument when it is malformed.
absl::Status CheckBuildOutput(const v1::BuildOutput& output, const v1::BuildInput& input);

struct MeasureBounds {
  double flops = 0;       // of one run of the task's workload (the daemon's own figure)
  double peak_flops = 0;  // PeakFlopsBound of the device that measured; 0: unchecked
  int max_costs = 20;     // timed repeats a result may carry
};
// An agent's measure output for the artifacts it was given: one result per artifact in order,
// each naming its artifact's config. kPermissionDenied (forged: the agent is flagged) for a result
// of another config, a success for a candidate whose build failed, a success without the
// wrong-answer check, more costs than repeats, or a cost faster than the device's peak;
// kInvalidArgument when the output is malformed.
absl::Status CheckMeasureOutput(const v1::MeasureOutput& output, const v1::BuildOutput& artifacts,
                                const MeasureBounds& bounds);

// The most a build cache counter of a heartbeat may say: a million kernels a second for 30 years
// stay below it.
inline constexpr int64_t kMaxBuildCacheCount = int64_t{1} << 50;
// An agent's build cache counters (HeartbeatRequest.build_cache_hits/misses, counted since the
// agent started): kInvalidArgument naming the field when one is negative, above
// kMaxBuildCacheCount, or below what this registration reported before (`hits_before`,
// `misses_before`).
absl::Status CheckBuildCacheCounters(const v1::HeartbeatRequest& request, int64_t hits_before,
                                     int64_t misses_before);

}  // namespace loom::service
