// The one textual form of a tensor shape and of a pinned input shape, as users type them:
// "1,3,224,224" and "NAME=D0,D1,..." (e.g. input=1,3,224,224). Every command's --input-shape
// (cli/model_options.cc, `loom submit`), loom::JobClient's request and the service's submit check
// and job set-up (service/request_checks.cc, job_driver.cc) parse with these, so a shape the
// README shows is accepted everywhere and a bad one gets the same message everywhere.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

// The largest rank and dimension a shape may have: a spec is untrusted input (it arrives over
// the network), and larger ones describe no tensor Loom could allocate.
inline constexpr int kMaxShapeRank = 16;
inline constexpr int64_t kMaxShapeDim = int64_t{1} << 32;

// "1,3,224,224" -> {1,3,224,224}. Dimensions are non-negative integers up to kMaxShapeDim,
// at most kMaxShapeRank of them. kInvalidArgument naming the text and the expected form.
absl::StatusOr<Shape> ParseShape(std::string_view text);

// "NAME=D0,D1,..." -> {NAME, shape}. The name is everything before the last '=' (ONNX names may
// hold ':'); kInvalidArgument "bad input shape '...': expected NAME=D0,D1,... (e.g.
// input=1,3,224,224)" otherwise.
absl::StatusOr<std::pair<std::string, Shape>> ParseInputShape(std::string_view spec);

// The inverse of ParseInputShape: "NAME=D0,D1,...".
std::string FormatInputShape(const std::string& name, const Shape& shape);

}  // namespace loom::graph
