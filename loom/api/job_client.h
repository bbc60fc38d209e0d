// A C++ client of `loom serve`'s JobService (proto/loom/v1/jobs.proto): submit, list, status,
// watch, cancel, logs and results of tuning jobs, each call one absl::Status or value. Built on
// service/client.h (server and token resolution, TLS, gRPC status -> absl::Status). Called by the
// Python package's `loom.Client` (python/src/client_binding.cc).
//
//   auto client = loom::JobClient::Connect({.server = "127.0.0.1:7070", .token = "tok"});
//   absl::StatusOr<loom::v1::Job> job = (*client)->Submit(*loom::MakeSubmitRequest({
//       .model = "zoo:resnet18", .trials = 16}));
//   auto watch = (*client)->Watch(job->id());
//   while (auto ev = (*watch)->Next(); ev.ok() && ev->has_value()) { ... }
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/tune/task_session.h"
#include "loom/v1/jobs.grpc.pb.h"

namespace loom {

struct JobClientOptions {
  // HOST:PORT; empty: LOOM_SERVER, then the config file, then 127.0.0.1:7070 (service/client.h).
  std::string server{};
  // Bearer token; empty: LOOM_TOKEN, then the config file.
  std::string token{};
  // PEM CA certificate: connect with TLS; empty: LOOM_TLS_CA, then the config file.
  std::string tls_ca{};
  // Deadline of each unary call (Submit and Result get at least five minutes: uploads and
  // downloads of models and records).
  absl::Duration timeout = absl::Seconds(30);
  // Added to a kUnavailable error after the server's address: how the caller picks another
  // ("set --server or LOOM_SERVER" for the CLI).
  std::string unavailable_hint{};
};

// What to submit (the flags of `loom submit`). `model` is "zoo:NAME", a bare zoo name or an ONNX
// file (read and uploaded); empty with `simulated` set: a load-test job.
struct SubmitOptions {
  std::string model{};
  std::string name{};  // default: the model's
  std::string target = "cpu";
  int32_t trials = 32;  // per task; under a job budget a cap per task
  // One budget for the whole job, shared among its tasks by expected gain (tune/task_scheduler.h);
  // 0: none.
  int64_t total_trials = 0;
  double time_budget_seconds = 0;
  // Tasks whose rounds may run at once, each on its own device (SubmitJobRequest.spread); 1: one
  // round at a time.
  int32_t spread = 1;
  int32_t priority = 0;
  double latency_goal_ms = 0;
  std::string tuner = search::TunerOptions{}.kind;
  int32_t batch_size = tune::TaskTunerOptions{}.batch_size;
  int32_t max_tasks = 0;
  std::vector<int32_t> tasks{};  // task indices as `loom tasks` lists them; empty: all
  int64_t seed = 0;
  bool use_prior = true;
  std::map<std::string, std::vector<int64_t>> input_shapes{};
  // Measure spec; 0: the agents' defaults.
  int32_t min_repeat_ms = 0;
  int32_t repeat = 0;
  double run_timeout_s = 0;
  std::optional<v1::SimulatedWorkload> simulated{};
};

// kInvalidArgument for contradictory or out-of-range options, kNotFound for an unreadable model
// file.
absl::StatusOr<v1::SubmitJobRequest> MakeSubmitRequest(const SubmitOptions& options);

// A load-test workload from its keys: tasks, rounds (counts, default 1), propose, build, measure,
// update (seconds per stage). kInvalidArgument naming an unknown key.
absl::StatusOr<v1::SimulatedWorkload> MakeSimulatedWorkload(
    const std::map<std::string, double>& keys);

class JobClient {
 public:
  // Resolves the server and credentials and opens a channel (no call is made yet: a server that
  // is down fails the first call with kUnavailable). kInvalidArgument for a malformed config
  // file, kNotFound for an unreadable CA file.
  static absl::StatusOr<std::unique_ptr<JobClient>> Connect(const JobClientOptions& options);

  // The server's errors keep their gRPC code; the message starts with the code's name
  // ("NOT_FOUND: no job j9"). kUnavailable names the server it tried. Submit sends a request id
  // (a fresh one unless `request` has one), the same on every retry: one job per call.
  absl::StatusOr<v1::Job> Submit(const v1::SubmitJobRequest& request);
  absl::StatusOr<v1::ListJobsResponse> List(bool all_users, bool include_ended);
  absl::StatusOr<v1::Job> Get(const std::string& job_id);
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  // The scheduler's view (queues, devices, rates); an admin token (kPermissionDenied otherwise).
  absl::StatusOr<v1::ServerStats> Stats();
  // The job's log lines; the last `tail` only when tail > 0.
  absl::StatusOr<std::vector<std::string>> Logs(const std::string& job_id, int32_t tail);
  absl::StatusOr<v1::JobResult> Result(const std::string& job_id);

  // The events of one job until it ends: the first is its current state. Next blocks until the
  // next event; nullopt when the stream ended (the job ended), an error when the call failed.
  // Cancel, from any thread, ends a blocked Next with kCancelled.
  class Watch {
   public:
    virtual ~Watch() = default;
    virtual absl::StatusOr<std::optional<v1::JobEvent>> Next() = 0;
    virtual void Cancel() = 0;
  };
  absl::StatusOr<std::unique_ptr<Watch>> WatchJob(const std::string& job_id);

  // The server this client talks to.
  const std::string& server() const { return server_; }

  struct Connection;
  ~JobClient();

 private:
  JobClient(std::unique_ptr<Connection> connection, std::string server, absl::Duration timeout);
  std::unique_ptr<Connection> connection_;
  std::string server_;
  absl::Duration timeout_;
};

struct WriteJobResultOptions {
  // Also compile the model from the job's records into DIR/model.
  bool compile = true;
  // The target to compile for: "cpu" (this host) or a CPU class ("cpu:avx2"); empty: the class
  // the job's records were measured on (records of another CPU model of that class apply,
  // api/class_records.h), this host when the job has no records.
  std::string target{};
};

// What WriteJobResult wrote.
struct WrittenJobResult {
  std::string records_db;  // DIR/records.db
  int64_t records = 0;     // records imported into it
  std::string best_json;   // DIR/best.json
  std::string model;       // the model to compile ("zoo:NAME" or DIR/model.onnx); empty: none
  std::string artifact;    // DIR/model when compiled, else empty
  // When compiled: the target it was compiled for ("cpu", "cpu:avx2"), the artifact's target key,
  // Model::tuning_summary() ("3 of 3 kernels tuned") and its counts.
  std::string target{};
  std::string target_key{};
  std::string tuning_summary{};
  int64_t tuned_kernels = 0;
  int64_t kernel_steps = 0;
};

// Writes a job's result into `dir` the way `loom result` does: records.db (the job's records),
// best.json, model.onnx (an uploaded model), and with options.compile the model compiled from
// those records as an artifact in DIR/model. A failed compile is "compiling the tuned model for
// TARGET: ..." with the compiler's code.
absl::StatusOr<WrittenJobResult> WriteJobResult(const v1::JobResult& result, const std::string& dir,
                                                const WriteJobResultOptions& options = {});

}  // namespace loom
