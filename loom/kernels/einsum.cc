// Einsum reference kernel, for the equations that are products of matrices (graph/einsum.h says
// which): labels used by one operand alone are summed first, then the operands are contracted
// left to right, each step one transpose of each side and one batched MatMul, and the result is
// transposed to the output's label order.
#include "loom/graph/einsum.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"
#include "loom/kernels/reference.h"

namespace loom::kernels::internal {
namespace {

// A tensor with one label per dim.
struct Labeled {
  Tensor t;
  std::vector<int> labels;
};

// t with its dims reordered so that output dim i is input dim perm[i] (the Transpose kernel).
absl::StatusOr<Tensor> Permute(const Tensor& t, const std::vector<int64_t>& perm) {
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i)
    identity = identity && perm[i] == static_cast<int64_t>(i);
  if (identity) return t;
  graph::Node node;
  node.name = "einsum_transpose";
  node.op_type = "Transpose";
  node.inputs = {"x"};
  node.outputs = {"y"};
  node.attrs["perm"] = perm;
  LOOM_ASSIGN_OR_RETURN(std::vector<Tensor> out, EvaluateNode(node, 13, {t}));
  return out[0];
}

// `x` with its dims reordered to `order` (labels of x) and reshaped to `shape`.
absl::StatusOr<Tensor> Arrange(const Labeled& x, const std::vector<int>& order, Shape shape) {
  std::vector<int64_t> perm;
  for (int label : order) {
    perm.push_back(std::find(x.labels.begin(), x.labels.end(), label) - x.labels.begin());
  }
  LOOM_ASSIGN_OR_RETURN(Tensor p, Permute(x.t, perm));
  return p.Reshaped(std::move(shape));
}

int64_t Extent(const Labeled& x, int label) {
  const auto it = std::find(x.labels.begin(), x.labels.end(), label);
  return x.t.dim(it - x.labels.begin());
}

int64_t Product(const Labeled& x, const std::vector<int>& labels) {
  int64_t p = 1;
  for (int l : labels) p *= Extent(x, l);
  return p;
}

bool Contains(const std::vector<int>& v, int label) {
  return std::find(v.begin(), v.end(), label) != v.end();
}

// Sums x over the labels not in `keep`: [kept..., summed...] as a matrix times a vector of ones.
absl::StatusOr<Labeled> SumOut(const Labeled& x, const std::vector<int>& keep) {
  std::vector<int> kept, summed;
  for (int l : x.labels) (Contains(keep, l) ? kept : summed).push_back(l);
  if (summed.empty()) return x;
  std::vector<int> order = kept;
  order.insert(order.end(), summed.begin(), summed.end());
  const int64_t rows = Product(x, kept), cols = Product(x, summed);
  LOOM_ASSIGN_OR_RETURN(Tensor m, Arrange(x, order, {rows, cols}));
  LOOM_ASSIGN_OR_RETURN(Tensor ones, NewTensor(x.t.dtype(), {cols}));
  VisitDType(x.t.dtype(), [&](auto zero) {
    using T = decltype(zero);
    std::fill(ones.data<T>(), ones.data<T>() + cols, T(1));
  });
  LOOM_ASSIGN_OR_RETURN(Tensor sum, MatMulTensors(m, ones));
  Shape shape;
  for (int l : kept) shape.push_back(Extent(x, l));
  LOOM_ASSIGN_OR_RETURN(Tensor reshaped, sum.Reshaped(shape));
  return Labeled{reshaped, kept};
}

// Contracts a and b over their shared labels that `later` does not need; shared labels that it
// needs are batch dims. The result is [batch..., a's own..., b's own...].
absl::StatusOr<Labeled> Contract(const Labeled& a, const Labeled& b, const std::vector<int>& later,
                                 absl::string_view equation) {
  std::vector<int> batch, contracted, a_own, b_own;
  for (int l : a.labels) {
    if (!Contains(b.labels, l)) {
      a_own.push_back(l);
    } else if (Contains(later, l)) {
      batch.push_back(l);
    } else {
      contracted.push_back(l);
    }
  }
  for (int l : b.labels) {
    if (!Contains(a.labels, l)) b_own.push_back(l);
  }
  for (int l : contracted) {
    if (Extent(a, l) != Extent(b, l)) {
      return absl::UnimplementedError(absl::StrCat("equation '", equation,
                                                   "' contracts a broadcast dimension (sizes ",
                                                   Extent(a, l), " and ", Extent(b, l), ")"));
    }
  }
  Shape a_shape, b_shape;
  for (int l : batch) {
    a_shape.push_back(Extent(a, l));
    b_shape.push_back(Extent(b, l));
  }
  const int64_t m = Product(a, a_own), k = Product(a, contracted), n = Product(b, b_own);
  a_shape.insert(a_shape.end(), {m, k});
  b_shape.insert(b_shape.end(), {k, n});
  std::vector<int> a_order = batch, b_order = batch;
  a_order.insert(a_order.end(), a_own.begin(), a_own.end());
  a_order.insert(a_order.end(), contracted.begin(), contracted.end());
  b_order.insert(b_order.end(), contracted.begin(), contracted.end());
  b_order.insert(b_order.end(), b_own.begin(), b_own.end());
  LOOM_ASSIGN_OR_RETURN(Tensor am, Arrange(a, a_order, a_shape));
  LOOM_ASSIGN_OR_RETURN(Tensor bm, Arrange(b, b_order, b_shape));
  LOOM_ASSIGN_OR_RETURN(Tensor product, MatMulTensors(am, bm));
  Shape shape(product.shape().begin(), product.shape().end() - 2);
  for (int l : a_own) shape.push_back(Extent(a, l));
  for (int l : b_own) shape.push_back(Extent(b, l));
  LOOM_ASSIGN_OR_RETURN(Tensor reshaped, product.Reshaped(shape));
  std::vector<int> labels = batch;
  labels.insert(labels.end(), a_own.begin(), a_own.end());
  labels.insert(labels.end(), b_own.begin(), b_own.end());
  return Labeled{reshaped, labels};
}

OpResult EinsumOp(const OpContext& ctx) {
  if (ctx.inputs.empty()) return absl::InvalidArgumentError("expects at least 1 input, got 0");
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, ctx.inputs.size(), ctx.inputs.size()));
  if (!ctx.node.HasAttr("equation")) {
    return absl::InvalidArgumentError("attribute 'equation' is missing");
  }
  const std::string equation = ctx.node.GetString("equation", "");
  std::vector<Shape> shapes;
  for (const Tensor& t : ctx.inputs) {
    LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, t, "input", kMatMulDTypes));
    if (t.dtype() != ctx.inputs[0].dtype()) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs differ in type: ", ctx.inputs[0].type().ToString(), " and ",
                       t.type().ToString()));
    }
    shapes.push_back(t.shape());
  }
  LOOM_ASSIGN_OR_RETURN(graph::EinsumSpec spec, graph::ParseEinsum(equation, shapes));
  const size_t count = ctx.inputs.size();
  // needed_after[i]: the labels that operands after i, or the output, use.
  std::vector<std::vector<int>> needed_after(count, spec.output);
  for (size_t i = count; i-- > 1;) {
    needed_after[i - 1] = needed_after[i];
    for (int l : spec.inputs[i]) {
      if (!Contains(needed_after[i - 1], l)) needed_after[i - 1].push_back(l);
    }
  }
  std::vector<Labeled> operands;
  for (size_t i = 0; i < count; ++i) {
    // Labels nobody else uses are summed away first.
    std::vector<int> others = spec.output;
    for (size_t j = 0; j < count; ++j) {
      if (j != i) others.insert(others.end(), spec.inputs[j].begin(), spec.inputs[j].end());
    }
    LOOM_ASSIGN_OR_RETURN(Labeled x, SumOut(Labeled{ctx.inputs[i], spec.inputs[i]}, others));
    operands.push_back(std::move(x));
  }
  Labeled acc = operands[0];
  for (size_t i = 1; i < count; ++i) {
    LOOM_ASSIGN_OR_RETURN(acc, Contract(acc, operands[i], needed_after[i], equation));
  }
  LOOM_ASSIGN_OR_RETURN(acc, SumOut(acc, spec.output));
  LOOM_ASSIGN_OR_RETURN(Tensor y, Arrange(acc, spec.output, spec.output_shape));
  // An output-only copy: never return a view of an input.
  if (y.raw_data() == ctx.inputs[0].raw_data()) y = y.Clone();
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterEinsumKernels(KernelTable* table) { (*table)["Einsum"] = &EinsumOp; }

}  // namespace loom::kernels::internal
