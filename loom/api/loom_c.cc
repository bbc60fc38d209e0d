// The C API (include/loom/loom_c.h) over runtime::CompiledModel::Load for CPU artifacts and
// runtime::LoadCudaArtifact for GPU artifacts (`loom compile --target cuda`): artifacts only. Every
// entry point turns an absl::Status into a loom_status_t and a thread-local message.
#include "loom/loom_c.h"

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/cuda_model.h"

// One of `model` (a CPU artifact) and `gpu` (a GPU artifact on GPU 0) is set.
struct loom_model {
  std::unique_ptr<loom::runtime::CompiledModel> model;
  loom::runtime::LoadedCudaArtifact gpu;
  std::vector<loom::graph::ValueInfo> inputs;
  std::vector<loom::graph::ValueInfo> outputs;
};

namespace {

thread_local std::string last_error;

loom_status_t Code(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return LOOM_OK;
    case absl::StatusCode::kInvalidArgument:
      return LOOM_INVALID_ARGUMENT;
    case absl::StatusCode::kNotFound:
      return LOOM_NOT_FOUND;
    case absl::StatusCode::kFailedPrecondition:
      return LOOM_FAILED_PRECONDITION;
    case absl::StatusCode::kInternal:
      return LOOM_INTERNAL;
    case absl::StatusCode::kUnavailable:
      return LOOM_UNAVAILABLE;
    case absl::StatusCode::kDataLoss:
      return LOOM_DATA_LOSS;
    default:
      return LOOM_UNKNOWN;
  }
}

loom_status_t Fail(const absl::Status& status) {
  last_error = std::string(status.message());
  return Code(status.code());
}

loom_status_t Invalid(const std::string& message) {
  return Fail(absl::InvalidArgumentError(message));
}

loom_status_t Shape(const std::vector<loom::graph::ValueInfo>& values, const char* what,
                    int32_t index, int64_t* dims, int32_t max_rank, int32_t* rank) {
  if (index < 0 || index >= static_cast<int32_t>(values.size())) {
    return Invalid(absl::StrCat(what, " index ", index, " is out of range (the model has ",
                                values.size(), ")"));
  }
  if (rank == nullptr || (dims == nullptr && max_rank > 0)) {
    return Invalid("rank and dims must not be null");
  }
  const loom::graph::Shape& shape = values[static_cast<size_t>(index)].type.shape;
  *rank = static_cast<int32_t>(shape.size());
  for (int32_t d = 0; d < max_rank && d < *rank; ++d) dims[d] = shape[static_cast<size_t>(d)];
  return LOOM_OK;
}

}  // namespace

extern "C" {

loom_status_t loom_model_load(const char* dir, int32_t num_threads, loom_model_t** model) {
  if (dir == nullptr || model == nullptr) return Invalid("dir and model must not be null");
  *model = nullptr;
  if (num_threads < 0) {
    return Invalid(absl::StrCat("num_threads must be at least 0, got ", num_threads));
  }
  auto m = std::make_unique<loom_model>();
  if (loom::runtime::IsCudaArtifactDir(dir)) {
    // Its kernels run on the GPU: no CPU threads to choose, as `loom run DIR --threads`.
    if (num_threads > 0) {
      return Invalid(
          absl::StrCat(dir, " is a GPU artifact: num_threads must be 0, got ", num_threads));
    }
    auto loaded = loom::runtime::LoadCudaArtifact(dir);
    if (!loaded.ok()) return Fail(loaded.status());
    m->gpu = *std::move(loaded);
    m->inputs = m->gpu.model->inputs();
    m->outputs = m->gpu.model->outputs();
  } else {
    auto loaded = loom::runtime::CompiledModel::Load(dir, {.num_threads = num_threads});
    if (!loaded.ok()) return Fail(loaded.status());
    m->model = *std::move(loaded);
    m->inputs = m->model->inputs();
    m->outputs = m->model->outputs();
  }
  for (const auto* list : {&m->inputs, &m->outputs}) {
    for (const loom::graph::ValueInfo& v : *list) {
      if (v.type.dtype != loom::graph::DType::kFloat32) {
        return Fail(absl::FailedPreconditionError(absl::StrCat(
            "'", v.name, "' is ", v.type.ToString(), ": the C API handles float32 tensors only")));
      }
    }
  }
  *model = m.release();
  return LOOM_OK;
}

void loom_model_free(loom_model_t* model) { delete model; }

int32_t loom_model_num_inputs(const loom_model_t* model) {
  return model == nullptr ? 0 : static_cast<int32_t>(model->inputs.size());
}
int32_t loom_model_num_outputs(const loom_model_t* model) {
  return model == nullptr ? 0 : static_cast<int32_t>(model->outputs.size());
}

const char* loom_model_input_name(const loom_model_t* model, int32_t index) {
  if (model == nullptr || index < 0 || index >= loom_model_num_inputs(model)) return nullptr;
  return model->inputs[static_cast<size_t>(index)].name.c_str();
}
const char* loom_model_output_name(const loom_model_t* model, int32_t index) {
  if (model == nullptr || index < 0 || index >= loom_model_num_outputs(model)) return nullptr;
  return model->outputs[static_cast<size_t>(index)].name.c_str();
}

loom_status_t loom_model_input_shape(const loom_model_t* model, int32_t index, int64_t* dims,
                                     int32_t max_rank, int32_t* rank) {
  if (model == nullptr) return Invalid("model must not be null");
  return Shape(model->inputs, "input", index, dims, max_rank, rank);
}
loom_status_t loom_model_output_shape(const loom_model_t* model, int32_t index, int64_t* dims,
                                      int32_t max_rank, int32_t* rank) {
  if (model == nullptr) return Invalid("model must not be null");
  return Shape(model->outputs, "output", index, dims, max_rank, rank);
}

loom_status_t loom_model_run(loom_model_t* model, const float* const* inputs,
                             float* const* outputs) {
  if (model == nullptr || (inputs == nullptr && !model->inputs.empty()) || outputs == nullptr) {
    return Invalid("model, inputs and outputs must not be null");
  }
  std::map<std::string, loom::graph::Tensor> feeds;
  for (size_t i = 0; i < model->inputs.size(); ++i) {
    if (inputs == nullptr || inputs[i] == nullptr) {
      return Invalid(absl::StrCat("inputs[", i, "] is null"));
    }
    const loom::graph::ValueInfo& v = model->inputs[i];
    loom::graph::Tensor t(loom::graph::DType::kFloat32, v.type.shape);
    std::memcpy(t.raw_data(), inputs[i], t.num_bytes());
    feeds[v.name] = std::move(t);
  }
  auto out = model->model != nullptr ? model->model->Run(feeds) : model->gpu.model->Run(feeds);
  if (!out.ok()) return Fail(out.status());
  for (size_t i = 0; i < out->size(); ++i) {
    if (outputs[i] == nullptr) return Invalid(absl::StrCat("outputs[", i, "] is null"));
    std::memcpy(outputs[i], (*out)[i].raw_data(), (*out)[i].num_bytes());
  }
  return LOOM_OK;
}

const char* loom_last_error(void) { return last_error.c_str(); }

}  // extern "C"
