// Private to loom/graph/: what the per-operator shape rules share (the per-node view `Ctx`,
// attribute checks, axis normalisation) and the registration function of each rule family.
// shape_inference.cc owns the table and the public API; each family file
// (shape_rules_<family>.cc) adds its operators to the table.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "loom/base/status_macros.h"
#include "loom/graph/dtype_set.h"
#include "loom/graph/graph.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tensor.h"

namespace loom::graph::internal {

enum class AttrKind { kInt, kFloat, kString, kInts, kFloats, kTensor };

// "an int", "a list of floats", ...
const char* AttrKindName(AttrKind kind);
// True when `v` holds `kind` (an int is accepted where a float is expected).
bool AttrHasKind(const AttrValue& v, AttrKind kind);
// kInvalidArgument "<node>: <msg>".
absl::Status NodeError(const Node& node, absl::string_view msg);
// Rank-agnostic axis normalization: [-rank, rank) -> [0, rank).
absl::StatusOr<int64_t> NormalizeAxis(const Node& node, int64_t axis, int64_t rank,
                                      absl::string_view what = "axis");
// Normalizes a list of axes and rejects duplicates.
absl::StatusOr<std::vector<int64_t>> NormalizeAxes(const Node& node,
                                                   const std::vector<int64_t>& axes, int64_t rank);
std::vector<int64_t> TensorToInt64s(const Tensor& t);

// Per-node view: typed access to inputs, constants and attributes, with errors naming the node.
class Ctx {
 public:
  Ctx(const Graph& g, const Node& n) : graph_(g), node_(n) {}

  const Node& node() const { return node_; }
  int64_t opset() const { return graph_.opset; }

  bool Has(size_t i) const { return i < node_.inputs.size() && !node_.inputs[i].empty(); }

  absl::StatusOr<TensorType> In(size_t i) const {
    if (!Has(i)) return Error(absl::StrCat("missing required input #", i));
    auto t = graph_.TypeOf(node_.inputs[i]);
    if (!t.ok()) {
      return Error(absl::StrCat("input '", node_.inputs[i],
                                "' has no known type (is it defined before this node?)"));
    }
    return *t;
  }

  // A float32 input (every compute op in Loom works on float32).
  absl::StatusOr<TensorType> FloatIn(size_t i) const {
    LOOM_ASSIGN_OR_RETURN(TensorType t, In(i));
    if (t.dtype != DType::kFloat32) {
      return Error(absl::StrCat("input '", node_.inputs[i], "' has type ", t.ToString(),
                                "; only float32 is supported"));
    }
    return t;
  }

  // A shape-defining input, which must be known before run time.
  absl::StatusOr<Tensor> ConstIn(size_t i, absl::string_view what) const {
    if (!Has(i)) return Error(absl::StrCat("missing required input ", what));
    std::optional<Tensor> t = ConstantValueOf(graph_, node_.inputs[i]);
    if (!t.has_value()) {
      return NotConstant(i, absl::StrCat("input '", node_.inputs[i], "' (", what,
                                         ") is not constant; Loom needs static shapes"));
    }
    return *t;
  }

  // The error for input i, whose value the rule needs, not being constant: `msg`, with the value
  // named in the kNeedsConstantPayload payload.
  absl::Status NotConstant(size_t i, absl::string_view msg) const {
    absl::Status st = Error(msg);
    st.SetPayload(kNeedsConstantPayload, absl::Cord(node_.inputs[i]));
    return st;
  }

  std::optional<Tensor> MaybeConst(size_t i) const {
    if (!Has(i)) return std::nullopt;
    return ConstantValueOf(graph_, node_.inputs[i]);
  }

  // A constant integer list input (shape, axes, pads, starts, ...): int64 or int32, rank <= 1.
  absl::StatusOr<std::vector<int64_t>> ConstInts(size_t i, absl::string_view what) const {
    LOOM_ASSIGN_OR_RETURN(Tensor t, ConstIn(i, what));
    if (t.dtype() != DType::kInt64 && t.dtype() != DType::kInt32) {
      return Error(absl::StrCat(what, " must be int64 or int32, got ", t.type().ToString()));
    }
    if (t.rank() > 1) {
      return Error(absl::StrCat(what, " must be a 1-D tensor, got ", t.type().ToString()));
    }
    return TensorToInt64s(t);
  }

  absl::Status CheckAttrs(std::initializer_list<std::pair<const char*, AttrKind>> spec) const {
    for (const auto& [name, kind] : spec) {
      auto it = node_.attrs.find(name);
      if (it != node_.attrs.end() && !AttrHasKind(it->second, kind)) {
        return Error(absl::StrCat("attribute '", name, "' must be ", AttrKindName(kind)));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Error(absl::string_view msg) const { return NodeError(node_, msg); }

 private:
  const Graph& graph_;
  const Node& node_;
};

using Types = std::vector<TensorType>;

// Repeats `t` once per node output.
Types Same(const Node& node, const TensorType& t);

absl::Status CheckRank(const Ctx& c, const TensorType& t, int64_t min_rank, absl::string_view what);

// Input i, whose element type must be in `allowed` ("input 'x' has type int64[2]; Exp accepts
// float32, ..."). Defined in shape_rules_elementwise.cc.
absl::StatusOr<TensorType> TypedIn(const Ctx& c, size_t i, DTypeSet allowed);

// One operator's rule: the output types of a node from its inputs' types (and constants).
using Rule = std::function<absl::StatusOr<Types>(const Ctx&)>;
using RuleTable = std::map<std::string, Rule, std::less<>>;

// Rule families, one file each. Each adds its operators to `table`.
void RegisterElementwiseShapeRules(RuleTable* table);  // shape_rules_elementwise.cc
void RegisterNnShapeRules(RuleTable* table);           // shape_rules_nn.cc
void RegisterTensorShapeRules(RuleTable* table);       // shape_rules_tensor.cc

}  // namespace loom::graph::internal
