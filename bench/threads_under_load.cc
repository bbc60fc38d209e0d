// Issue 17's thread-pool figure: a compiled model's latency at one and at two threads while a
// busy loop is pinned on core 0 (background load), next to the same without the load. Two
// threads should never be much slower than one: the fork-join pool (base/fork_join_pool.h) must
// not wait for a worker that shares its core with the busy loop.
//
//   build/<dir>/bench/threads_under_load MODEL [--runs N] [--busy-core C] [--no-load]
//
// MODEL is anything `loom bench` takes (zoo:NAME or an ONNX file). The two compiled variants
// run in alternation (one run each, `runs` times), so drift of the machine's load hits both; the
// median and the best per variant are printed. The model threads are
// not pinned (as `loom bench` runs them); the busy loop is a thread of this process pinned to
// --busy-core (default 0).
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "loom/base/rng.h"
#include "loom/frontend/model_loader.h"
#include "loom/runtime/compiled_model.h"

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: threads_under_load MODEL [--runs N] [--busy-core C] [--no-load]\n");
    return 2;
  }
  const std::string model = argv[1];
  int runs = 40, busy_core = 0;
  bool load = true;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--no-load") {
      load = false;
    } else if (flag == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (flag == "--busy-core" && i + 1 < argc) {
      busy_core = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  auto loaded = loom::frontend::LoadModel(model);
  if (!loaded.ok()) {
    std::fprintf(stderr, "loom: error: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  std::map<std::string, loom::graph::Tensor> feeds;
  loom::base::Rng rng(1);
  for (const auto& in : loaded->graph.inputs) {
    loom::graph::Tensor t(in.type.dtype, in.type.shape);
    if (in.type.dtype == loom::graph::DType::kFloat32) {
      for (float& v : t.values<float>()) v = static_cast<float>(rng.Normal(0.0, 1.0));
    }
    feeds[in.name] = std::move(t);
  }
  std::vector<std::unique_ptr<loom::runtime::CompiledModel>> variants;
  for (int threads : {1, 2}) {
    auto cm = loom::runtime::CompiledModel::Compile(loaded->graph, {.num_threads = threads});
    if (!cm.ok()) {
      std::fprintf(stderr, "loom: error: %s\n", cm.status().ToString().c_str());
      return 1;
    }
    variants.push_back(std::move(*cm));
  }

  std::atomic<bool> stop{false};
  std::thread busy;
  if (load) {
    busy = std::thread([&] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(busy_core, &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
      volatile uint64_t x = 0;
      while (!stop.load(std::memory_order_relaxed)) x = x + 1;
    });
  }
  std::vector<std::vector<double>> ms(variants.size());
  for (auto& v : variants) {  // warm-up
    if (auto out = v->Run(feeds); !out.ok()) {
      std::fprintf(stderr, "loom: error: %s\n", out.status().ToString().c_str());
      stop.store(true);
      if (busy.joinable()) busy.join();
      return 1;
    }
  }
  for (int r = 0; r < runs; ++r) {
    for (size_t v = 0; v < variants.size(); ++v) {
      const auto t0 = std::chrono::steady_clock::now();
      (void)variants[v]->Run(feeds);
      ms[v].push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  stop.store(true);
  if (busy.joinable()) busy.join();
  std::printf("%s, %s, %d alternating runs per variant\n", model.c_str(),
              load ? ("busy loop pinned on core " + std::to_string(busy_core)).c_str()
                   : "no background load",
              runs);
  std::printf("| threads | median ms | best ms |\n|---:|---:|---:|\n");
  for (size_t v = 0; v < variants.size(); ++v) {
    std::printf("| %d | %.2f | %.2f |\n", variants[v]->num_threads(), Median(ms[v]),
                *std::min_element(ms[v].begin(), ms[v].end()));
  }
  std::printf("two threads / one thread (medians): %.2f\n", Median(ms[1]) / Median(ms[0]));
  return 0;
}
