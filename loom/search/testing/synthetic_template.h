// A fake Template with no kernel: a 5-knob space (5,760 configs) whose "measured" throughput is a
// deterministic, smooth-ish function of the knob values with knob interactions, a categorical
// knob, a few invalid configs (declared as a space constraint; measured anyway they are
// instantiation errors) and a small deterministic ripple. Tuner tests
// and tuner_benchmark use it to measure sample efficiency without a compiler or a device.
#pragma once

#include <vector>

#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/toolchain/measure_result.h"

namespace loom::search {

class SyntheticTemplate final : public ops::Template {
 public:
  SyntheticTemplate();

  std::string name() const override { return "synthetic"; }
  const graph::Workload& workload() const override { return workload_; }
  const ops::Target& target() const override { return target_; }
  const ops::ConfigSpace& space() const override { return space_; }
  // kUnimplemented: the synthetic template has no kernel.
  absl::StatusOr<ops::KernelSource> Emit(const ops::Config& config) const override;
  std::vector<ops::BufferSpec> Buffers(const ops::Config& config) const override { return {}; }
  std::vector<graph::Tensor> PackInputs(const ops::Config& config,
                                        const std::vector<graph::Tensor>& natural) const override {
    return {};
  }
  graph::Tensor UnpackOutput(const ops::Config& config,
                             const graph::Tensor& output) const override {
    return {};
  }
  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override { return {}; }
  std::vector<graph::Shape> NaturalInputShapes() const override { return {}; }
  // The knob values.
  std::vector<float> Features(const ops::Config& config) const override;
  std::vector<std::string> FeatureNames() const override;
  ops::Config DefaultConfig() const override { return ops::Config{0}; }

  // Throughput (higher is better, at most about 1); 0 for an invalid config.
  double Throughput(const ops::Config& config) const;
  // The objective: cost 1/throughput seconds per config, or an instantiation error.
  std::vector<tune::MeasureResult> Measure(const std::vector<ops::Config>& configs) const;
  // The config with the highest throughput (by enumeration).
  ops::Config Optimum() const;

 private:
  ops::ConfigSpace space_;
  graph::Workload workload_;
  ops::Target target_;
};

}  // namespace loom::search
