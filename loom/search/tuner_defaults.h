// A tuning job's search defaults, in a header with no dependencies: search::TunerOptions and
// tune::TaskTunerOptions (and through them every entry point's flags and the daemon's
// SessionOptionsOf) take their defaults from here, and so does a parser that must stay light,
// the experiment spec (experiment/spec.h), whose fuzzer is built from spec.cc alone.
#pragma once

#include <string_view>

namespace loom::search {

// The tuner kind of a job that names none (TunerKinds() lists the kinds).
inline constexpr std::string_view kDefaultTunerKind = "xgb";
// Configs proposed, built and measured per round of a job that sets no batch size.
inline constexpr int kDefaultBatchSize = 8;

}  // namespace loom::search
