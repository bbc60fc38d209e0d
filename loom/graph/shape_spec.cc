#include "loom/graph/shape_spec.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace loom::graph {
namespace {

constexpr size_t kMaxSpecBytes = 1024;
constexpr char kInputShapeForm[] = "expected NAME=D0,D1,... (e.g. input=1,3,224,224)";

// A prefix of untrusted text, short enough for a one-line message.
std::string Quote(std::string_view text) {
  return std::string(text.substr(0, 64)) + (text.size() > 64 ? "..." : "");
}

}  // namespace

absl::StatusOr<Shape> ParseShape(std::string_view text) {
  const std::string t(text.substr(0, kMaxSpecBytes + 1));
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("bad shape '", Quote(text), "': ", why));
  };
  if (text.size() > kMaxSpecBytes) return bad("longer than 1024 bytes");
  if (t.empty()) return bad("no dimensions (expected D0,D1,..., e.g. 1,3,224,224)");
  Shape shape;
  for (const std::string& part : std::vector<std::string>(absl::StrSplit(t, ','))) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(part, &d) || d < 0) {
      return bad("expected comma-separated non-negative integers, e.g. 1,3,224,224");
    }
    if (d > kMaxShapeDim) return bad(absl::StrCat("dimension ", d, " is larger than 2^32"));
    shape.push_back(d);
    if (static_cast<int>(shape.size()) > kMaxShapeRank) {
      return bad(absl::StrCat("more than ", kMaxShapeRank, " dimensions"));
    }
  }
  return shape;
}

absl::StatusOr<std::pair<std::string, Shape>> ParseInputShape(std::string_view spec) {
  const size_t eq = spec.rfind('=');
  if (spec.size() > kMaxSpecBytes || eq == std::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad input shape '", Quote(spec), "': ", kInputShapeForm));
  }
  absl::StatusOr<Shape> shape = ParseShape(spec.substr(eq + 1));
  if (!shape.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad input shape '", Quote(spec), "': ", kInputShapeForm, "; ", shape.status().message()));
  }
  return std::make_pair(std::string(spec.substr(0, eq)), *std::move(shape));
}

std::string FormatInputShape(const std::string& name, const Shape& shape) {
  return absl::StrCat(name, "=", absl::StrJoin(shape, ","));
}

}  // namespace loom::graph
