// Elementwise programs: a small SSA IR of scalar operations over typed operands, the one form in
// which the compiled runtime generates code for elementwise and broadcast operators. The planner
// (runtime/plan_builder.cc) turns a chain of ONNX nodes into one program (AppendNode); the program
// becomes a standalone kernel over broadcast operands (EmitElementwise), or is fused into a
// template's output store (Epilogue in template.h, applied by template_common's EpilogueStmts).
// Both print it with PrintElementwise, whose text is valid for a scalar and, for float32
// programs, for the kernel prelude's vector type `vf`; the math comes from codegen/vector_math.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/ops/kernel_source.h"
#include "loom/ops/target.h"

namespace loom::ops {

enum class EwOp : uint8_t {
  kConst,  // the literal p0, of type `dtype`
  kCast,   // a, converted to `dtype` (ONNX Cast: float -> bool is x != 0)
  // Unary.
  kNeg,
  kAbs,
  kSign,
  kCeil,
  kFloor,
  kRound,  // half to even
  kSqrt,
  kReciprocal,
  kExp,
  kLog,
  kSin,
  kCos,
  kTanh,
  kErf,
  kSigmoid,
  kSoftplus,
  kSoftsign,
  kRelu,
  kGeluErf,
  kGeluTanh,
  kHardSwish,
  kLeakyRelu,    // alpha p0
  kElu,          // alpha p0
  kSelu,         // alpha p0, gamma p1
  kHardSigmoid,  // alpha p0, beta p1
  kClip,         // bounds [p0, p1]
  kIsNaN,
  kIsInf,  // p0 != 0: detect +inf; p1 != 0: detect -inf
  kNot,
  // Binary (a, b).
  kAdd,
  kSub,
  kMul,
  kDiv,
  kPow,
  kMod,  // p0 != 0: fmod (the dividend's sign), else Python's (the divisor's sign)
  kMin,
  kMax,
  kPRelu,  // a < 0 ? a * b : a
  kAnd,
  kOr,
  kXor,
  kEqual,
  kLess,
  kLessOrEqual,
  kGreater,
  kGreaterOrEqual,
  // Ternary.
  kWhere,  // a ? b : c
};

// "Add", "Sigmoid", ... (for messages and tests).
const char* EwOpName(EwOp op);

struct EwInstr {
  EwOp op = EwOp::kConst;
  graph::DType dtype = graph::DType::kFloat32;  // the result's type (never float16/bfloat16)
  int32_t a = -1, b = -1, c = -1;               // operand values
  double p0 = 0, p1 = 0;                        // literal / attribute parameters (see EwOp)
};

// Values are numbered: the inputs 0 .. inputs.size()-1, then one per instruction in order.
// Inputs and outputs carry storage types; float16 and bfloat16 are computed in float32 (an input
// of such a type is the float32 value, an output is rounded back when stored).
struct ElementwiseProgram {
  std::vector<graph::DType> inputs;
  std::vector<EwInstr> instrs;
  std::vector<int32_t> outputs;
  std::vector<graph::DType> output_types;

  int32_t AddInput(graph::DType storage);
  int32_t Add(const EwInstr& instr);
  int32_t Const(graph::DType dtype, double value);
  void AddOutput(int32_t value, graph::DType storage);
  int32_t num_values() const { return static_cast<int32_t>(inputs.size() + instrs.size()); }
  // The compute type of value `v`.
  graph::DType TypeOf(int32_t v) const;
  // The instruction that defines `v`, or null for an input.
  const EwInstr* Def(int32_t v) const;
  bool empty() const { return instrs.empty(); }
  // One line per instruction ("v3 = Mul(v0, v2) float32"), for messages and tests.
  std::string ToString() const;
};

// The compute type of a storage type (float16 / bfloat16 -> float32).
graph::DType ComputeType(graph::DType storage);
// The C type a kernel uses for an element of `storage` ("float", "int64_t", "bool", "uint16_t"
// for the half types, ...).
std::string CType(graph::DType storage);

// True when AppendNode knows `op_type` (the elementwise operators of ONNX, Cast and CastLike).
bool IsElementwiseOp(std::string_view op_type);

// Appends `node`'s computation to `p`: `args` holds one value per node input (-1 for an omitted
// optional one), `out_type` the storage type of its output. Returns the value of the output.
// Scalar constants should be given as EwOp::kConst values: Clip bounds, Pow exponents and integer
// divisors are specialized when they are. kUnimplemented for what the IR does not generate: a
// dtype the operator is not computed in here (transcendental functions of integers), integer
// Div/Mod by a value that is not a nonzero constant (the reference kernel reports it), an
// attribute value it does not know (named).
absl::StatusOr<int32_t> AppendNode(const graph::Node& node, int64_t opset,
                                   const std::vector<int32_t>& args, graph::DType out_type,
                                   ElementwiseProgram* p);

// How PrintElementwise's text is typed.
enum class EwMode {
  kScalar,  // every value a scalar of its C compute type (inside a loop the compiler vectorizes)
  kVector,  // every value a `vf` register (or a comparison mask): float32 programs only
};
// True when `p` can be printed in EwMode::kVector: every value float32, except comparison
// results used only as a Where condition, and no cast.
bool IsVectorizable(const ElementwiseProgram& p);

struct PrintedElementwise {
  std::vector<std::string> lines;    // C statements declaring the temporaries
  std::vector<std::string> outputs;  // per program output: an expression of its compute type
};
// Statements computing `p` from `inputs` (one C expression per program input, of its compute
// type, or a vf in kVector mode). Temporaries are named `<prefix><value>`. kInvalidArgument for a
// malformed program or a kVector print of a program that is not vectorizable.
absl::StatusOr<PrintedElementwise> PrintElementwise(const ElementwiseProgram& p,
                                                    const std::vector<std::string>& inputs,
                                                    EwMode mode, const std::string& prefix);
// File-scope definitions the printed statements need (codegen::Kernel::globals): the vector math
// and the `loom_ew_*` helpers. The same for any program, so every kernel carries one copy.
std::vector<std::string> ElementwiseGlobals();

// A standalone elementwise kernel: `program` evaluated at every point of the iteration space
// `dims` (outermost first). Input k is read at sum(index[d] * strides[k][d]) elements from its
// base (a stride 0 broadcasts); every output is dense over `dims` (row-major).
struct ElementwiseSpec {
  ElementwiseProgram program;
  graph::Shape dims;
  std::vector<std::vector<int64_t>> strides;  // per program input, one per dim
};

// The spec for natural row-major operands of `input_shapes` broadcast (NumPy rules) to
// `out_shape`, with dimensions of size 1 dropped and contiguous runs merged.
// kInvalidArgument when a shape does not broadcast to `out_shape`.
absl::StatusOr<ElementwiseSpec> BroadcastSpec(ElementwiseProgram program,
                                              const std::vector<graph::Shape>& input_shapes,
                                              const graph::Shape& out_shape);

// The kernel for `spec` (CPU kernel ABI): arguments are the inputs then the outputs, in program
// order. The innermost dimension is the vectorized loop; the others are split among threads
// (results are the same for any thread count). kInvalidArgument for a malformed spec;
// kUnimplemented for a non-CPU target.
absl::StatusOr<KernelSource> EmitElementwise(const ElementwiseSpec& spec, const Target& target);

// The bytes each argument of EmitElementwise(spec)'s kernel spans (the extent its strides reach
// for an input, the dense size for an output), in argument order.
std::vector<int64_t> ElementwiseArgBytes(const ElementwiseSpec& spec);

}  // namespace loom::ops
