// `loom._loom.RecordStore`: the tuning database (records/record_store.h) for loom.records
// (python/loom/records.py). Records cross as their JSON lines (tune::RecordToJson, what `loom
// records export` writes), so Python reads every record the one way the CLI writes it. The store
// is thread-safe; the GIL is released during queries.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "loom/ops/target.h"
#include "loom/records/record.h"
#include "loom/records/record_store.h"
#include "status.h"

namespace py = pybind11;

namespace loom::python {
namespace {

class PyRecordStore {
 public:
  PyRecordStore(std::unique_ptr<tune::RecordStore> store, std::string path)
      : store_(std::move(store)), path_(std::move(path)) {}
  tune::RecordStore& store() {
    if (store_ == nullptr) {
      throw StatusError(
          absl::FailedPreconditionError(absl::StrCat("the record database ", path_, " is closed")));
    }
    return *store_;
  }
  void Close() { store_.reset(); }
  const std::string& path() const { return path_; }

 private:
  std::unique_ptr<tune::RecordStore> store_;
  std::string path_;
};

tune::RecordFilter Filter(const std::optional<std::string>& task,
                          const std::optional<std::string>& target,
                          const std::optional<std::string>& job) {
  return {.task_key = task, .target_key = target, .job_id = job};
}

std::vector<std::string> ToJson(const std::vector<tune::Record>& records) {
  std::vector<std::string> out;
  out.reserve(records.size());
  for (const tune::Record& r : records) out.push_back(tune::RecordToJson(r));
  return out;
}

std::unique_ptr<PyRecordStore> Open(const std::string& path, bool create) {
  if (!create && path != ":memory:" && !std::filesystem::exists(path)) {
    throw StatusError(
        absl::NotFoundError(absl::StrCat("record database '", path, "' does not exist")));
  }
  std::unique_ptr<tune::RecordStore> store = [&] {
    py::gil_scoped_release release;
    return ValueOrThrow(tune::OpenSqliteRecordStore(path));
  }();
  return std::make_unique<PyRecordStore>(std::move(store), path);
}

}  // namespace

void RegisterRecords(py::module_& m) {
  py::class_<PyRecordStore>(m, "RecordStore",
                            "tune::RecordStore: see loom.records (python/loom/records.py).")
      .def_static("open", &Open, py::arg("path"), py::arg("create"))
      .def("close", &PyRecordStore::Close)
      .def_property_readonly("path", &PyRecordStore::path)
      .def(
          "export_jsonl",
          [](PyRecordStore& s, std::optional<std::string> task, std::optional<std::string> target,
             std::optional<std::string> job) {
            tune::RecordStore& store = s.store();
            std::ostringstream out;
            {
              py::gil_scoped_release release;
              ThrowIfError(store.ExportJsonLines(out, Filter(task, target, job)));
            }
            return out.str();
          },
          py::arg("task"), py::arg("target"), py::arg("job"))
      .def(
          "count",
          [](PyRecordStore& s, std::optional<std::string> task, std::optional<std::string> target,
             std::optional<std::string> job) {
            tune::RecordStore& store = s.store();
            py::gil_scoped_release release;
            return ValueOrThrow(store.Count(Filter(task, target, job)));
          },
          py::arg("task"), py::arg("target"), py::arg("job"))
      .def(
          "best",
          [](PyRecordStore& s, const std::string& task, const std::string& target, int k) {
            tune::RecordStore& store = s.store();
            py::gil_scoped_release release;
            return ToJson(ValueOrThrow(store.BestK(task, target, k)));
          },
          py::arg("task"), py::arg("target"), py::arg("k"))
      .def(
          "history",
          [](PyRecordStore& s, const std::string& task, const std::string& target,
             std::optional<std::string> job) {
            tune::RecordStore& store = s.store();
            py::gil_scoped_release release;
            return ToJson(ValueOrThrow(store.ForTask(task, target, job)));
          },
          py::arg("task"), py::arg("target"), py::arg("job"))
      .def(
          "summary",
          [](PyRecordStore& s, const std::string& target) {
            tune::RecordStore& store = s.store();
            std::vector<tune::TaskSummary> summary = [&] {
              py::gil_scoped_release release;
              return ValueOrThrow(store.Summary(target));
            }();
            py::list out;
            for (const tune::TaskSummary& t : summary) {
              py::dict d;
              d["task_key"] = t.task_key;
              d["trials"] = t.trials;
              d["errors"] = t.errors;
              d["best_cost"] = std::isfinite(t.best_cost) ? py::cast(t.best_cost) : py::none();
              d["best_gflops"] = t.best_gflops;
              d["best_template"] = t.best_template;
              d["best_config_index"] = t.best_config_index;
              out.append(d);
            }
            return out;
          },
          py::arg("target"))
      .def(
          "stage_timings",
          [](PyRecordStore& s, const std::string& job) {
            tune::RecordStore& store = s.store();
            std::vector<tune::StageTimingRecord> timings = [&] {
              py::gil_scoped_release release;
              return ValueOrThrow(store.StageTimings(job));
            }();
            py::list out;
            for (const tune::StageTimingRecord& t : timings) {
              py::dict d;
              d["job_id"] = t.job_id;
              d["task_key"] = t.task_key;
              d["round"] = t.round;
              d["stage"] = t.timing.stage;
              d["start"] = absl::ToUnixMicros(t.timing.start);
              d["end"] = absl::ToUnixMicros(t.timing.end);
              d["resource"] = t.timing.resource;
              out.append(d);
            }
            return out;
          },
          py::arg("job"));
  m.def(
      "host_target", [] { return ops::HostCpuTarget().Key(); },
      "The target key of this CPU ('cpu:avx512:<model name>'): what records are stored under.");
}

}  // namespace loom::python
