#include "loom/runtime/compiled_model.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "loom/base/fork_join_pool.h"
#include "loom/base/status_macros.h"
#include "loom/runtime/plan.h"

namespace loom::runtime {
namespace {

constexpr int64_t kAlign = 64;

int64_t RoundUp(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// parallel_for of loom_parallel_t over a base::ForkJoinPool (chunks claimed dynamically).
void PoolParallelFor(int64_t n, loom_range_fn fn, void* ctx, void* pool) {
  static_cast<base::ForkJoinPool*>(pool)->Run(n, fn, ctx);
}

}  // namespace

CompiledModel::CompiledModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CompiledModel::~CompiledModel() = default;

absl::StatusOr<std::unique_ptr<CompiledModel>> CompiledModel::Instantiate(
    std::unique_ptr<Impl> impl, int32_t num_threads) {
  if (num_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads must be at least 1, got ", num_threads));
  }
  // More threads than cores only queue behind each other (and a huge count from a tampered
  // artifact must not exhaust the process).
  const auto cores = static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads = std::min(num_threads, cores);
  impl->num_threads = num_threads;
  if (impl->plan.arena_bytes > 0) {
    void* p =
        std::aligned_alloc(kAlign, static_cast<size_t>(RoundUp(impl->plan.arena_bytes, kAlign)));
    if (p == nullptr) return absl::ResourceExhaustedError("cannot allocate the arena");
    impl->arena.reset(static_cast<char*>(p));
  }
  impl->par.num_threads = num_threads;
  if (num_threads > 1) {
    impl->pool = std::make_unique<base::ForkJoinPool>(num_threads);
    impl->par.pool = impl->pool.get();
    impl->par.parallel_for = &PoolParallelFor;
    impl->parallel_steps = ParallelSteps(impl->plan, kMinParallelStepBytes);
  }
  return std::unique_ptr<CompiledModel>(new CompiledModel(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<CompiledModel>> CompiledModel::Compile(
    const graph::Graph& graph, const CompileOptions& options) {
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads must be at least 1, got ", options.num_threads));
  }
  auto t0 = std::chrono::steady_clock::now();
  auto impl = std::make_unique<Impl>();
  LOOM_RETURN_IF_ERROR(BuildPlan(graph, options, impl.get()));
  impl->stats.compile_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Instantiate(std::move(impl), options.num_threads);
}

absl::StatusOr<std::vector<graph::Tensor>> CompiledModel::Run(
    const std::map<std::string, graph::Tensor>& inputs) {
  return impl_->Execute(inputs, nullptr);
}

absl::StatusOr<std::vector<graph::Tensor>> CompiledModel::RunProfiled(
    const std::map<std::string, graph::Tensor>& inputs, std::vector<StepTiming>* timings) {
  return impl_->Execute(inputs, timings);
}

const CompileStats& CompiledModel::stats() const { return impl_->stats; }
int32_t CompiledModel::num_threads() const { return impl_->num_threads; }
const std::string& CompiledModel::target_key() const { return impl_->plan.target_key; }

std::vector<graph::ValueInfo> CompiledModel::inputs() const { return impl_->plan.inputs; }
std::vector<graph::ValueInfo> CompiledModel::outputs() const { return impl_->plan.outputs; }

std::string CompiledModel::DescribePlan() const {
  const Plan& plan = impl_->plan;
  std::string s;
  for (const Step& st : plan.steps) {
    absl::StrAppend(&s, st.kind, " ", st.name);
    ForEachRef(st.op, [&](const Ref& r, int64_t, bool written) {
      absl::StrAppend(&s, written ? " ->" : "", " [");
      switch (r.kind) {
        case Ref::Kind::kArena: {
          const BufferInfo& info = plan.buffers[static_cast<size_t>(r.index)];
          absl::StrAppend(&s, info.what, " @", info.offset, "+", info.bytes);
          break;
        }
        case Ref::Kind::kConst:
          absl::StrAppend(&s, "const ", r.index);
          break;
        case Ref::Kind::kInput:
          absl::StrAppend(&s, "input '", plan.inputs[static_cast<size_t>(r.index)].name, "'");
          break;
        case Ref::Kind::kOutput:
          absl::StrAppend(&s, "output '", plan.outputs[static_cast<size_t>(r.index)].name, "'");
          break;
      }
      absl::StrAppend(&s, "]");
    });
    absl::StrAppend(&s, "\n");
  }
  return s;
}

}  // namespace loom::runtime
