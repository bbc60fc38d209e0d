// `loom._loom.JobClient` / `Watch`: loom::JobClient (loom/api/job_client.h), the same gRPC client
// of `loom serve` the CLI speaks through, for loom.Client (python/loom/client.py). Messages cross
// as plain dicts (job states by their short names, times in Unix microseconds). Calls release the
// GIL; a Watch may be cancelled from another thread.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "loom/api/job_client.h"
#include "loom/v1/stage_names.h"
#include "status.h"

namespace py = pybind11;

namespace loom::python {
namespace {

py::dict JobDict(const v1::Job& j) {
  py::dict d;
  d["id"] = j.id();
  d["owner"] = j.owner();
  d["name"] = j.name();
  d["state"] = v1::JobStateShortName(j.state());
  d["priority"] = j.priority();
  d["target"] = j.target();
  d["trials"] = j.trials();
  d["submitted_us"] = j.submitted_unix_micros();
  d["started_us"] = j.started_unix_micros();
  d["finished_us"] = j.finished_unix_micros();
  d["failure_reason"] = j.failure_reason();
  d["queue_position"] = j.queue_position();
  d["expected_start_us"] = j.expected_start_unix_micros();
  py::list tasks;
  for (const v1::TaskProgress& t : j.tasks()) {
    py::dict td;
    td["task_key"] = t.task_key();
    td["trials_done"] = t.trials_done();
    td["trials"] = t.trials();
    td["best_gflops"] = t.best_gflops();
    td["errors"] = t.errors();
    td["stage"] = t.stage();
    tasks.append(td);
  }
  d["tasks"] = tasks;
  d["cpu_seconds"] = j.cpu_seconds();
  d["device_seconds"] = j.device_seconds();
  d["records"] = j.records();
  d["estimated_latency_ms"] = j.estimated_latency_ms();
  return d;
}

py::dict ResourceDict(const v1::ResourceUse& u) {
  py::dict d;
  d["agent_id"] = u.agent_id();
  d["hostname"] = u.hostname();
  d["alive"] = u.alive();
  d["cpu_slots"] = u.cpu_slots();
  d["cpu_slots_used"] = u.cpu_slots_used();
  d["devices"] = u.devices();
  d["devices_busy"] = u.devices_busy();
  d["leases"] = u.leases();
  return d;
}

py::dict BestDict(const v1::BestConfig& b) {
  py::dict d;
  d["task_key"] = b.task_key();
  d["template"] = b.template_name();
  d["target_key"] = b.target_key();
  d["config_index"] = b.config_index();
  d["config_json"] = b.config_json();
  d["median_cost"] = b.median_cost();
  d["gflops"] = b.gflops();
  return d;
}

// Runs a client call with the GIL released and raises its error.
template <typename Fn>
auto Call(Fn&& fn) {
  auto result = [&] {
    py::gil_scoped_release release;
    return fn();
  }();
  if (!result.ok()) throw StatusError(result.status());
  return *std::move(result);
}

struct PyWatch {
  std::unique_ptr<JobClient::Watch> watch;
};

}  // namespace

void RegisterClient(py::module_& m) {
  py::class_<PyWatch>(m, "Watch", "JobClient::Watch: see loom.Client.watch.")
      .def("next",
           [](PyWatch& w) -> py::object {
             std::optional<v1::JobEvent> ev = Call([&] { return w.watch->Next(); });
             if (!ev.has_value()) return py::none();
             py::dict d;
             d["time_us"] = ev->time_unix_micros();
             d["message"] = ev->message();
             d["job"] = ev->has_job() ? py::object(JobDict(ev->job())) : py::none();
             return d;
           })
      .def("cancel", [](PyWatch& w) { w.watch->Cancel(); });

  py::class_<JobClient>(m, "JobClient", "loom::JobClient: see loom.Client.")
      .def_static(
          "connect",
          [](const std::string& server, const std::string& token, const std::string& tls_ca,
             double timeout_s) {
            if (!(timeout_s > 0)) {
              throw StatusError(absl::InvalidArgumentError("timeout must be positive"));
            }
            return ValueOrThrow(JobClient::Connect({.server = server,
                                                    .token = token,
                                                    .tls_ca = tls_ca,
                                                    .timeout = absl::Seconds(timeout_s)}));
          },
          py::arg("server"), py::arg("token"), py::arg("tls_ca"), py::arg("timeout_s"))
      .def_property_readonly("server", &JobClient::server)
      .def(
          "submit",
          [](JobClient& c, const std::string& model, const std::string& name,
             const std::string& target, int32_t trials, int32_t priority, double latency_goal_ms,
             const std::string& tuner, int32_t batch_size, int32_t max_tasks,
             const std::vector<int32_t>& tasks, int64_t seed, bool use_prior,
             const std::map<std::string, std::vector<int64_t>>& input_shapes, int32_t min_repeat_ms,
             int32_t repeat, double run_timeout_s,
             const std::optional<std::map<std::string, double>>& simulated) {
            SubmitOptions o{.model = model,
                            .name = name,
                            .target = target,
                            .trials = trials,
                            .priority = priority,
                            .latency_goal_ms = latency_goal_ms,
                            .tuner = tuner,
                            .batch_size = batch_size,
                            .max_tasks = max_tasks,
                            .tasks = tasks,
                            .seed = seed,
                            .use_prior = use_prior,
                            .input_shapes = input_shapes,
                            .min_repeat_ms = min_repeat_ms,
                            .repeat = repeat,
                            .run_timeout_s = run_timeout_s};
            if (simulated.has_value()) {
              absl::StatusOr<v1::SimulatedWorkload> w = MakeSimulatedWorkload(*simulated);
              if (!w.ok()) {
                throw StatusError(absl::Status(w.status().code(),
                                               absl::StrCat("simulated: ", w.status().message())));
              }
              o.simulated = *std::move(w);
            }
            v1::SubmitJobRequest req = ValueOrThrow(MakeSubmitRequest(o));
            return JobDict(Call([&] { return c.Submit(req); }));
          },
          py::arg("model"), py::arg("name"), py::arg("target"), py::arg("trials"),
          py::arg("priority"), py::arg("latency_goal_ms"), py::arg("tuner"), py::arg("batch_size"),
          py::arg("max_tasks"), py::arg("tasks"), py::arg("seed"), py::arg("use_prior"),
          py::arg("input_shapes"), py::arg("min_repeat_ms"), py::arg("repeat"),
          py::arg("run_timeout_s"), py::arg("simulated"))
      .def(
          "list",
          [](JobClient& c, bool all_users, bool include_ended) {
            v1::ListJobsResponse resp = Call([&] { return c.List(all_users, include_ended); });
            py::list jobs, resources;
            for (const v1::Job& j : resp.jobs()) jobs.append(JobDict(j));
            for (const v1::ResourceUse& u : resp.resources()) resources.append(ResourceDict(u));
            return py::make_tuple(jobs, resources);
          },
          py::arg("all_users"), py::arg("include_ended"))
      .def(
          "get",
          [](JobClient& c, const std::string& id) {
            return JobDict(Call([&] { return c.Get(id); }));
          },
          py::arg("job_id"))
      .def(
          "cancel",
          [](JobClient& c, const std::string& id) {
            return JobDict(Call([&] { return c.Cancel(id); }));
          },
          py::arg("job_id"))
      .def(
          "logs",
          [](JobClient& c, const std::string& id, int32_t tail) {
            return Call([&] { return c.Logs(id, tail); });
          },
          py::arg("job_id"), py::arg("tail"))
      .def(
          "result",
          [](JobClient& c, const std::string& id, const std::optional<std::string>& dir,
             bool compile, const std::string& target) {
            v1::JobResult res = Call([&] { return c.Result(id); });
            py::dict d;
            d["job"] = JobDict(res.job());
            py::list best;
            for (const v1::BestConfig& b : res.best()) best.append(BestDict(b));
            d["best"] = best;
            d["records_jsonl"] = res.records_jsonl();
            d["zoo_model"] = res.zoo_model();
            d["has_onnx_model"] = !res.model_onnx().empty();
            if (dir.has_value()) {
              WrittenJobResult w = Call([&] {
                return WriteJobResult(res, *dir, {.compile = compile, .target = target});
              });
              d["records_db"] = w.records_db;
              d["records_written"] = w.records;
              d["best_json"] = w.best_json;
              d["model"] = w.model;
              d["artifact"] = w.artifact;
              d["target"] = w.target;
              d["target_key"] = w.target_key;
              d["tuned"] = w.tuning_summary;
            }
            return d;
          },
          py::arg("job_id"), py::arg("dir"), py::arg("compile"), py::arg("target"))
      .def(
          "watch",
          [](JobClient& c, const std::string& id) {
            return PyWatch{Call([&] { return c.WatchJob(id); })};
          },
          py::arg("job_id"), py::keep_alive<0, 1>());
}

}  // namespace loom::python
