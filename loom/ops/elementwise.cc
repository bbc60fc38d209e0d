#include "loom/ops/elementwise.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/cpp_printer.h"
#include "loom/codegen/loop_nest.h"
#include "loom/codegen/vector_math.h"

namespace loom::ops {

using graph::DType;

namespace {

bool IsBool(DType t) { return t == DType::kBool; }
bool IsFloat(DType t) { return t == DType::kFloat32 || t == DType::kFloat64; }
bool IsInt(DType t) { return graph::IsIntegerDType(t); }
bool IsComparison(EwOp op) {
  return op == EwOp::kEqual || op == EwOp::kLess || op == EwOp::kLessOrEqual ||
         op == EwOp::kGreater || op == EwOp::kGreaterOrEqual;
}
int Arity(EwOp op) {
  if (op == EwOp::kConst) return 0;
  if (op == EwOp::kWhere) return 3;
  if (op >= EwOp::kAdd) return 2;
  return 1;
}

}  // namespace

const char* EwOpName(EwOp op) {
  static const char* const kNames[] = {
      "Const",    "Cast",  "Neg",         "Abs",         "Sign",      "Ceil",
      "Floor",    "Round", "Sqrt",        "Reciprocal",  "Exp",       "Log",
      "Sin",      "Cos",   "Tanh",        "Erf",         "Sigmoid",   "Softplus",
      "Softsign", "Relu",  "GeluErf",     "GeluTanh",    "HardSwish", "LeakyRelu",
      "Elu",      "Selu",  "HardSigmoid", "Clip",        "IsNaN",     "IsInf",
      "Not",      "Add",   "Sub",         "Mul",         "Div",       "Pow",
      "Mod",      "Min",   "Max",         "PRelu",       "And",       "Or",
      "Xor",      "Equal", "Less",        "LessOrEqual", "Greater",   "GreaterOrEqual",
      "Where"};
  const auto i = static_cast<size_t>(op);
  return i < sizeof(kNames) / sizeof(kNames[0]) ? kNames[i] : "?";
}

// ---------------------------------------------------------------------------------------------
// The program.

DType ComputeType(DType storage) { return graph::IsHalfDType(storage) ? DType::kFloat32 : storage; }

std::string CType(DType storage) {
  switch (storage) {
    case DType::kFloat32:
      return "float";
    case DType::kFloat64:
      return "double";
    case DType::kInt64:
      return "int64_t";
    case DType::kInt32:
      return "int32_t";
    case DType::kInt16:
      return "int16_t";
    case DType::kInt8:
      return "int8_t";
    case DType::kUint64:
      return "uint64_t";
    case DType::kUint32:
      return "uint32_t";
    case DType::kUint16:
    case DType::kFloat16:
    case DType::kBFloat16:
      return "uint16_t";
    case DType::kUint8:
      return "uint8_t";
    case DType::kBool:
      return "bool";
    case DType::kUndefined:
      break;
  }
  return "void";
}

int32_t ElementwiseProgram::AddInput(DType storage) {
  inputs.push_back(storage);
  // Inputs come first: appending one after instructions would renumber them.
  return static_cast<int32_t>(inputs.size()) - 1;
}

int32_t ElementwiseProgram::Add(const EwInstr& instr) {
  instrs.push_back(instr);
  return num_values() - 1;
}

int32_t ElementwiseProgram::Const(DType dtype, double value) {
  EwInstr i;
  i.op = EwOp::kConst;
  i.dtype = ComputeType(dtype);
  i.p0 = value;
  return Add(i);
}

void ElementwiseProgram::AddOutput(int32_t value, DType storage) {
  outputs.push_back(value);
  output_types.push_back(storage);
}

DType ElementwiseProgram::TypeOf(int32_t v) const {
  if (v < 0 || v >= num_values()) return DType::kUndefined;
  if (v < static_cast<int32_t>(inputs.size())) return ComputeType(inputs[static_cast<size_t>(v)]);
  return instrs[static_cast<size_t>(v) - inputs.size()].dtype;
}

const EwInstr* ElementwiseProgram::Def(int32_t v) const {
  if (v < static_cast<int32_t>(inputs.size()) || v >= num_values()) return nullptr;
  return &instrs[static_cast<size_t>(v) - inputs.size()];
}

std::string ElementwiseProgram::ToString() const {
  std::string s;
  for (size_t k = 0; k < inputs.size(); ++k) {
    absl::StrAppend(&s, "v", k, " = input ", graph::DTypeName(inputs[k]), "\n");
  }
  for (size_t k = 0; k < instrs.size(); ++k) {
    const EwInstr& i = instrs[k];
    absl::StrAppend(&s, "v", inputs.size() + k, " = ", EwOpName(i.op), "(");
    if (i.op == EwOp::kConst) absl::StrAppend(&s, i.p0);
    for (int32_t a : {i.a, i.b, i.c}) {
      if (a >= 0) absl::StrAppend(&s, a == i.a ? "v" : ", v", a);
    }
    absl::StrAppend(&s, ") ", graph::DTypeName(i.dtype), "\n");
  }
  for (size_t k = 0; k < outputs.size(); ++k) {
    absl::StrAppend(&s, "out", k, " = v", outputs[k], " ", graph::DTypeName(output_types[k]), "\n");
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// ONNX nodes -> instructions.

namespace {

struct OpInfo {
  EwOp op;
  enum Types { kFloatOnly, kNumeric, kBoolOnly, kAny } types;
};

const std::map<std::string, OpInfo, std::less<>>& UnaryOps() {
  static const auto* m = new std::map<std::string, OpInfo, std::less<>>{
      {"Neg", {EwOp::kNeg, OpInfo::kNumeric}},
      {"Abs", {EwOp::kAbs, OpInfo::kNumeric}},
      {"Sign", {EwOp::kSign, OpInfo::kNumeric}},
      {"Relu", {EwOp::kRelu, OpInfo::kNumeric}},
      {"Ceil", {EwOp::kCeil, OpInfo::kFloatOnly}},
      {"Floor", {EwOp::kFloor, OpInfo::kFloatOnly}},
      {"Round", {EwOp::kRound, OpInfo::kFloatOnly}},
      {"Sqrt", {EwOp::kSqrt, OpInfo::kFloatOnly}},
      {"Reciprocal", {EwOp::kReciprocal, OpInfo::kFloatOnly}},
      {"Exp", {EwOp::kExp, OpInfo::kFloatOnly}},
      {"Log", {EwOp::kLog, OpInfo::kFloatOnly}},
      {"Sin", {EwOp::kSin, OpInfo::kFloatOnly}},
      {"Cos", {EwOp::kCos, OpInfo::kFloatOnly}},
      {"Tanh", {EwOp::kTanh, OpInfo::kFloatOnly}},
      {"Erf", {EwOp::kErf, OpInfo::kFloatOnly}},
      {"Sigmoid", {EwOp::kSigmoid, OpInfo::kFloatOnly}},
      {"Softplus", {EwOp::kSoftplus, OpInfo::kFloatOnly}},
      {"Softsign", {EwOp::kSoftsign, OpInfo::kFloatOnly}},
      {"HardSwish", {EwOp::kHardSwish, OpInfo::kFloatOnly}},
      {"HardSigmoid", {EwOp::kHardSigmoid, OpInfo::kFloatOnly}},
      {"LeakyRelu", {EwOp::kLeakyRelu, OpInfo::kFloatOnly}},
      {"Elu", {EwOp::kElu, OpInfo::kFloatOnly}},
      {"Selu", {EwOp::kSelu, OpInfo::kFloatOnly}},
      {"Gelu", {EwOp::kGeluErf, OpInfo::kFloatOnly}},
      {"IsNaN", {EwOp::kIsNaN, OpInfo::kFloatOnly}},
      {"IsInf", {EwOp::kIsInf, OpInfo::kFloatOnly}},
      {"Not", {EwOp::kNot, OpInfo::kBoolOnly}},
  };
  return *m;
}

const std::map<std::string, OpInfo, std::less<>>& BinaryOps() {
  static const auto* m = new std::map<std::string, OpInfo, std::less<>>{
      {"Add", {EwOp::kAdd, OpInfo::kNumeric}},
      {"Sub", {EwOp::kSub, OpInfo::kNumeric}},
      {"Mul", {EwOp::kMul, OpInfo::kNumeric}},
      {"Div", {EwOp::kDiv, OpInfo::kNumeric}},
      {"Pow", {EwOp::kPow, OpInfo::kFloatOnly}},
      {"Mod", {EwOp::kMod, OpInfo::kNumeric}},
      {"PRelu", {EwOp::kPRelu, OpInfo::kFloatOnly}},
      {"And", {EwOp::kAnd, OpInfo::kBoolOnly}},
      {"Or", {EwOp::kOr, OpInfo::kBoolOnly}},
      {"Xor", {EwOp::kXor, OpInfo::kBoolOnly}},
      {"Equal", {EwOp::kEqual, OpInfo::kAny}},
      {"Less", {EwOp::kLess, OpInfo::kNumeric}},
      {"LessOrEqual", {EwOp::kLessOrEqual, OpInfo::kNumeric}},
      {"Greater", {EwOp::kGreater, OpInfo::kNumeric}},
      {"GreaterOrEqual", {EwOp::kGreaterOrEqual, OpInfo::kNumeric}},
  };
  return *m;
}

bool TypesOk(OpInfo::Types types, DType t) {
  switch (types) {
    case OpInfo::kFloatOnly:
      return IsFloat(t);
    case OpInfo::kNumeric:
      return IsFloat(t) || IsInt(t);
    case OpInfo::kBoolOnly:
      return IsBool(t);
    case OpInfo::kAny:
      return IsFloat(t) || IsInt(t) || IsBool(t);
  }
  return false;
}

absl::Status Unsupported(const graph::Node& node, const std::string& what) {
  return absl::UnimplementedError(
      absl::StrCat(node.Describe(), ": no generated elementwise code for ", what));
}

// The literal of a kConst value, if `v` is one.
const EwInstr* ConstOf(const ElementwiseProgram& p, int32_t v) {
  const EwInstr* d = p.Def(v);
  return d != nullptr && d->op == EwOp::kConst ? d : nullptr;
}

// A nonzero integer constant whose division cannot overflow (not -1, which overflows the most
// negative value).
bool SafeIntegerDivisor(const ElementwiseProgram& p, int32_t v) {
  const EwInstr* c = ConstOf(p, v);
  return c != nullptr && c->p0 != 0 && c->p0 != -1 && c->p0 == std::trunc(c->p0);
}

int32_t Emit(ElementwiseProgram* p, EwOp op, DType dtype, int32_t a, int32_t b = -1, int32_t c = -1,
             double p0 = 0, double p1 = 0) {
  EwInstr i;
  i.op = op;
  i.dtype = dtype;
  i.a = a;
  i.b = b;
  i.c = c;
  i.p0 = p0;
  i.p1 = p1;
  return p->Add(i);
}

}  // namespace

bool IsElementwiseOp(std::string_view op_type) {
  return UnaryOps().count(op_type) > 0 || BinaryOps().count(op_type) > 0 || op_type == "Clip" ||
         op_type == "Where" || op_type == "Max" || op_type == "Min" || op_type == "Sum" ||
         op_type == "Mean" || op_type == "Cast" || op_type == "CastLike";
}

absl::StatusOr<int32_t> AppendNode(const graph::Node& node, int64_t opset,
                                   const std::vector<int32_t>& args, DType out_type,
                                   ElementwiseProgram* p) {
  if (args.size() != node.inputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        node.Describe(), ": ", args.size(), " operands for ", node.inputs.size(), " inputs"));
  }
  for (int32_t a : args) {
    if (a < -1 || a >= p->num_values()) {
      return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": bad operand ", a));
    }
  }
  const DType out = ComputeType(out_type);
  auto arg = [&](size_t k) { return k < args.size() ? args[k] : -1; };
  auto need = [&](size_t min, size_t max) -> absl::Status {
    if (args.size() < min || args.size() > max || arg(0) < 0) {
      return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": ", args.size(),
                                                     " inputs (expected ", min, "..", max, ")"));
    }
    for (size_t k = 1; k < min; ++k) {
      if (arg(k) < 0) {
        return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": input ", k, " missing"));
      }
    }
    return absl::OkStatus();
  };
  const DType t0 = args.empty() || args[0] < 0 ? DType::kUndefined : p->TypeOf(args[0]);

  if (node.op_type == "Cast" || node.op_type == "CastLike") {
    LOOM_RETURN_IF_ERROR(need(node.op_type == "Cast" ? 1 : 2, node.op_type == "Cast" ? 1 : 2));
    if (!(IsFloat(t0) || IsInt(t0) || IsBool(t0)) || !(IsFloat(out) || IsInt(out) || IsBool(out))) {
      return Unsupported(node, absl::StrCat("a cast from ", graph::DTypeName(t0), " to ",
                                            graph::DTypeName(out_type)));
    }
    if (t0 == out) return args[0];
    return Emit(p, EwOp::kCast, out, args[0]);
  }

  if (auto u = UnaryOps().find(node.op_type); u != UnaryOps().end()) {
    LOOM_RETURN_IF_ERROR(need(1, 1));
    if (!TypesOk(u->second.types, t0)) {
      return Unsupported(node, absl::StrCat(node.op_type, " of ", graph::DTypeName(t0)));
    }
    EwOp op = u->second.op;
    double p0 = 0, p1 = 0;
    switch (op) {
      case EwOp::kLeakyRelu:
        p0 = node.GetFloat("alpha", 0.01f);
        break;
      case EwOp::kElu:
        p0 = node.GetFloat("alpha", 1.0f);
        break;
      case EwOp::kSelu:
        p0 = node.GetFloat("alpha", 1.67326319217681884765625f);
        p1 = node.GetFloat("gamma", 1.05070102214813232421875f);
        break;
      case EwOp::kHardSigmoid:
        p0 = node.GetFloat("alpha", 0.2f);
        p1 = node.GetFloat("beta", 0.5f);
        break;
      case EwOp::kIsInf:
        p0 = static_cast<double>(node.GetInt("detect_positive", 1));
        p1 = static_cast<double>(node.GetInt("detect_negative", 1));
        break;
      case EwOp::kGeluErf: {
        const std::string approx = node.GetString("approximate", "none");
        if (approx == "tanh") {
          op = EwOp::kGeluTanh;
        } else if (approx != "none") {
          return Unsupported(node, absl::StrCat("attribute approximate='", approx, "'"));
        }
        break;
      }
      default:
        break;
    }
    const bool to_bool = op == EwOp::kIsNaN || op == EwOp::kIsInf || op == EwOp::kNot;
    return Emit(p, op, to_bool ? DType::kBool : t0, args[0], -1, -1, p0, p1);
  }

  if (auto b = BinaryOps().find(node.op_type); b != BinaryOps().end()) {
    LOOM_RETURN_IF_ERROR(need(2, 2));
    const EwOp op = b->second.op;
    int32_t a0 = args[0], a1 = args[1];
    DType t1 = p->TypeOf(a1);
    if (op == EwOp::kPow && t1 != t0) {
      // Mixed base and exponent types: the exponent is converted to the base's type.
      if (!(IsFloat(t1) || IsInt(t1))) return Unsupported(node, "Pow with a bool exponent");
      a1 = Emit(p, EwOp::kCast, t0, a1);
      t1 = t0;
    }
    if (t0 != t1) {
      return Unsupported(node, absl::StrCat(node.op_type, " of ", graph::DTypeName(t0), " and ",
                                            graph::DTypeName(t1)));
    }
    if (!TypesOk(b->second.types, t0)) {
      return Unsupported(node, absl::StrCat(node.op_type, " of ", graph::DTypeName(t0)));
    }
    double p0 = 0;
    if (op == EwOp::kMod) {
      p0 = static_cast<double>(node.GetInt("fmod", 0));
      if (IsFloat(t0) && p0 == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(node.Describe(), ": Mod of floats needs fmod=1"));
      }
    }
    if ((op == EwOp::kDiv || op == EwOp::kMod) && IsInt(t0) && !SafeIntegerDivisor(*p, a1)) {
      return Unsupported(node, "an integer division by a value that is not a nonzero constant");
    }
    const bool to_bool =
        IsComparison(op) || op == EwOp::kAnd || op == EwOp::kOr || op == EwOp::kXor;
    return Emit(p, op, to_bool ? DType::kBool : t0, a0, a1, -1, p0);
  }

  if (node.op_type == "Clip") {
    LOOM_RETURN_IF_ERROR(need(1, 3));
    if (!(IsFloat(t0) || IsInt(t0))) return Unsupported(node, "Clip of bool");
    double lo = -std::numeric_limits<double>::infinity();
    double hi = std::numeric_limits<double>::infinity();
    int32_t lo_v = -1, hi_v = -1;
    if (opset < 11) {
      lo = node.GetFloat("min", -std::numeric_limits<float>::infinity());
      hi = node.GetFloat("max", std::numeric_limits<float>::infinity());
    } else {
      for (size_t k = 1; k < 3; ++k) {
        const int32_t v = arg(k);
        if (v < 0) continue;
        if (p->TypeOf(v) != t0) return Unsupported(node, "Clip bounds of another type");
        if (const EwInstr* c = ConstOf(*p, v)) {
          (k == 1 ? lo : hi) = c->p0;
        } else {
          (k == 1 ? lo_v : hi_v) = v;
        }
      }
    }
    int32_t x = args[0];
    if (IsFloat(t0) && lo_v < 0 && hi_v < 0) return Emit(p, EwOp::kClip, t0, x, -1, -1, lo, hi);
    // Integer bounds, or bounds computed at run time: max then min.
    if (lo_v >= 0) {
      x = Emit(p, EwOp::kMax, t0, x, lo_v);
    } else if (!std::isinf(lo)) {
      x = Emit(p, EwOp::kMax, t0, x, p->Const(t0, lo));
    }
    if (hi_v >= 0) {
      x = Emit(p, EwOp::kMin, t0, x, hi_v);
    } else if (!std::isinf(hi)) {
      x = Emit(p, EwOp::kMin, t0, x, p->Const(t0, hi));
    }
    return x;
  }

  if (node.op_type == "Where") {
    LOOM_RETURN_IF_ERROR(need(3, 3));
    const DType tx = p->TypeOf(args[1]);
    if (!IsBool(t0) || tx != p->TypeOf(args[2])) {
      return Unsupported(node, "Where with these operand types");
    }
    return Emit(p, EwOp::kWhere, tx, args[0], args[1], args[2]);
  }

  if (node.op_type == "Max" || node.op_type == "Min" || node.op_type == "Sum" ||
      node.op_type == "Mean") {
    LOOM_RETURN_IF_ERROR(need(1, 64));
    const bool mean = node.op_type == "Mean";
    if (!(IsFloat(t0) || (IsInt(t0) && !mean))) {
      return Unsupported(node, absl::StrCat(node.op_type, " of ", graph::DTypeName(t0)));
    }
    const EwOp op = node.op_type == "Max"   ? EwOp::kMax
                    : node.op_type == "Min" ? EwOp::kMin
                                            : EwOp::kAdd;
    int32_t acc = args[0];
    for (size_t k = 1; k < args.size(); ++k) {
      if (args[k] < 0 || p->TypeOf(args[k]) != t0) {
        return Unsupported(node, "operands of different types");
      }
      acc = Emit(p, op, t0, acc, args[k]);
    }
    if (mean && args.size() > 1) {
      acc = Emit(p, EwOp::kDiv, t0, acc, p->Const(t0, static_cast<double>(args.size())));
    }
    return acc;
  }
  return absl::UnimplementedError(
      absl::StrCat(node.Describe(), ": ", node.op_type, " is not an elementwise operator"));
}

// ---------------------------------------------------------------------------------------------
// Printing.

bool IsVectorizable(const ElementwiseProgram& p) {
  for (DType t : p.inputs) {
    if (t != DType::kFloat32) return false;
  }
  std::vector<bool> is_mask(static_cast<size_t>(p.num_values()), false);
  for (size_t k = 0; k < p.instrs.size(); ++k) {
    const EwInstr& i = p.instrs[k];
    const size_t v = p.inputs.size() + k;
    if (i.op == EwOp::kCast) return false;
    if (IsComparison(i.op)) {
      if (p.TypeOf(i.a) != DType::kFloat32) return false;
      is_mask[v] = true;
      continue;
    }
    if (i.dtype != DType::kFloat32) return false;
    for (int32_t a : {i.a, i.b, i.c}) {
      if (a < 0) continue;
      const bool cond = i.op == EwOp::kWhere && a == i.a;
      if (is_mask[static_cast<size_t>(a)] != cond) return false;
    }
  }
  for (int32_t o : p.outputs) {
    if (o < 0 || o >= p.num_values() || is_mask[static_cast<size_t>(o)]) return false;
  }
  for (DType t : p.output_types) {
    if (t != DType::kFloat32) return false;
  }
  return true;
}

namespace {

// A C literal of `value` in type `t` (infinities and NaN through builtins).
std::string Literal(DType t, double value) {
  if (IsBool(t)) return value != 0 ? "true" : "false";
  if (IsInt(t)) {
    if (graph::IsSignedIntegerDType(t)) {
      const auto v = static_cast<int64_t>(value);
      if (v == std::numeric_limits<int64_t>::min()) return "(-9223372036854775807LL - 1)";
      return absl::StrCat("(", CType(t), ")", v, "LL");
    }
    return absl::StrCat("(", CType(t), ")", static_cast<uint64_t>(value), "ULL");
  }
  const bool f32 = t == DType::kFloat32;
  if (std::isnan(value)) return f32 ? "__builtin_nanf(\"\")" : "__builtin_nan(\"\")";
  if (std::isinf(value)) {
    const char* inf = f32 ? "__builtin_inff()" : "__builtin_inf()";
    return value > 0 ? inf : absl::StrCat("(-", inf, ")");
  }
  if (f32) return absl::StrFormat("%.9ef", static_cast<float>(value));
  return absl::StrFormat("%.17e", value);
}

// The expression of one instruction; `a`, `b`, `c` are its operands' names.
absl::StatusOr<std::string> Expr(const ElementwiseProgram& p, const EwInstr& i,
                                 const std::string& a, const std::string& b, const std::string& c,
                                 EwMode mode) {
  const DType t = i.dtype;
  const std::string ct = CType(t);
  const bool vec = mode == EwMode::kVector;
  // Integer arithmetic is done in the type itself (C++ would promote narrow types to int).
  auto wrap = [&](const std::string& e) {
    return vec || !IsInt(t) ? e : absl::StrCat("(", ct, ")(", e, ")");
  };
  auto fk = [&](double v) { return Literal(IsFloat(t) ? t : DType::kFloat32, v); };
  switch (i.op) {
    case EwOp::kConst:
      if (vec) return absl::StrCat("loom_bcast(", Literal(DType::kFloat32, i.p0), ")");
      return Literal(t, i.p0);
    case EwOp::kCast: {
      const DType from = p.TypeOf(i.a);
      if (IsBool(t)) return absl::StrCat("(", a, " != 0)");
      if (IsBool(from)) return absl::StrCat("(", ct, ")(", a, " ? 1 : 0)");
      return absl::StrCat("(", ct, ")(", a, ")");
    }
    case EwOp::kNeg:
      return wrap(absl::StrCat("-", a));
    case EwOp::kAbs:
      return absl::StrCat("loom_ew_abs(", a, ")");
    case EwOp::kSign:
      return absl::StrCat("loom_ew_sign(", a, ")");
    case EwOp::kRelu:
      return absl::StrCat("loom_ew_relu(", a, ")");
    case EwOp::kCeil:
      return absl::StrCat("loom_ew_ceil(", a, ")");
    case EwOp::kFloor:
      return absl::StrCat("loom_ew_floor(", a, ")");
    case EwOp::kRound:
      return absl::StrCat("loom_ew_round(", a, ")");
    case EwOp::kSqrt:
      return absl::StrCat("loom_ew_sqrt(", a, ")");
    case EwOp::kReciprocal:
      return absl::StrCat(fk(1), " / ", a);
    case EwOp::kExp:
      return absl::StrCat("loom_ew_exp(", a, ")");
    case EwOp::kLog:
      return absl::StrCat("loom_ew_log(", a, ")");
    case EwOp::kSin:
      return absl::StrCat("loom_ew_sin(", a, ")");
    case EwOp::kCos:
      return absl::StrCat("loom_ew_cos(", a, ")");
    case EwOp::kTanh:
      return absl::StrCat("loom_ew_tanh(", a, ")");
    case EwOp::kErf:
      return absl::StrCat("loom_ew_erf(", a, ")");
    case EwOp::kSigmoid:
      return absl::StrCat("loom_ew_sigmoid(", a, ")");
    case EwOp::kSoftplus:
      return absl::StrCat("loom_ew_softplus(", a, ")");
    case EwOp::kSoftsign:
      return absl::StrCat(a, " / (loom_ew_abs(", a, ") + ", fk(1), ")");
    case EwOp::kGeluErf:
      return absl::StrCat("loom_ew_gelu_erf(", a, ")");
    case EwOp::kGeluTanh:
      return absl::StrCat("loom_ew_gelu_tanh(", a, ")");
    case EwOp::kHardSwish:
      return absl::StrCat(a, " * loom_ew_clip(", a, " * ", fk(1.0 / 6.0), " + ", fk(0.5), ", ",
                          fk(0), ", ", fk(1), ")");
    case EwOp::kHardSigmoid:
      return absl::StrCat("loom_ew_clip(", a, " * ", fk(i.p0), " + ", fk(i.p1), ", ", fk(0), ", ",
                          fk(1), ")");
    case EwOp::kLeakyRelu:
      return absl::StrCat("loom_ew_leaky(", a, ", ", fk(i.p0), ")");
    case EwOp::kElu:
      return absl::StrCat("loom_ew_elu(", a, ", ", fk(i.p0), ")");
    case EwOp::kSelu:
      return absl::StrCat("loom_ew_selu(", a, ", ", fk(i.p0), ", ", fk(i.p1), ")");
    case EwOp::kClip:
      return absl::StrCat("loom_ew_clip(", a, ", ", fk(i.p0), ", ", fk(i.p1), ")");
    case EwOp::kIsNaN:
      return absl::StrCat("(", a, " != ", a, ")");
    case EwOp::kIsInf:
      return absl::StrCat("loom_ew_isinf(", a, ", ", i.p0 != 0 ? "true" : "false", ", ",
                          i.p1 != 0 ? "true" : "false", ")");
    case EwOp::kNot:
      return absl::StrCat("!", a);
    case EwOp::kAdd:
      return wrap(absl::StrCat(a, " + ", b));
    case EwOp::kSub:
      return wrap(absl::StrCat(a, " - ", b));
    case EwOp::kMul:
      return wrap(absl::StrCat(a, " * ", b));
    case EwOp::kDiv:
      return wrap(absl::StrCat(a, " / ", b));
    case EwOp::kPow: {
      // Small constant exponents are products (Pow(x, 2) in decomposed normalizations).
      if (const EwInstr* e = ConstOf(p, i.b)) {
        if (e->p0 == 1) return a;
        if (e->p0 == 2) return absl::StrCat(a, " * ", a);
        if (e->p0 == 3) return absl::StrCat(a, " * ", a, " * ", a);
        if (e->p0 == 0.5) return absl::StrCat("loom_ew_sqrt(", a, ")");
        if (e->p0 == -1) return absl::StrCat(fk(1), " / ", a);
      }
      return absl::StrCat("loom_ew_pow(", a, ", ", b, ")");
    }
    case EwOp::kMod:
      if (IsFloat(t)) return absl::StrCat("loom_ew_fmod(", a, ", ", b, ")");
      return wrap(
          absl::StrCat(i.p0 != 0 ? "loom_ew_imod_c(" : "loom_ew_imod_py(", a, ", ", b, ")"));
    case EwOp::kMin:
      return absl::StrCat("loom_ew_min(", a, ", ", b, ")");
    case EwOp::kMax:
      return absl::StrCat("loom_ew_max(", a, ", ", b, ")");
    case EwOp::kPRelu:
      return absl::StrCat("loom_ew_prelu(", a, ", ", b, ")");
    case EwOp::kAnd:
      return absl::StrCat("(", a, " && ", b, ")");
    case EwOp::kOr:
      return absl::StrCat("(", a, " || ", b, ")");
    case EwOp::kXor:
      return absl::StrCat("(", a, " != ", b, ")");
    case EwOp::kEqual:
      return absl::StrCat("(", a, " == ", b, ")");
    case EwOp::kLess:
      return absl::StrCat("(", a, " < ", b, ")");
    case EwOp::kLessOrEqual:
      return absl::StrCat("(", a, " <= ", b, ")");
    case EwOp::kGreater:
      return absl::StrCat("(", a, " > ", b, ")");
    case EwOp::kGreaterOrEqual:
      return absl::StrCat("(", a, " >= ", b, ")");
    case EwOp::kWhere:
      return absl::StrCat("(", a, " ? ", b, " : ", c, ")");
  }
  return absl::InternalError("unknown elementwise op");
}

// The helpers, generic over a scalar (float, double, integers) and the float vector `vf`. For a
// vector, `V op scalar` broadcasts the scalar, comparisons give masks and `m ? a : b` selects per
// lane. Functions without a vector form run per lane (the compiler still vectorizes the scalar
// loops of standalone kernels, where they are called on scalars). Min/max follow std::min/max.
constexpr char kHelpers[] = R"LOOM(
#ifndef LOOM_EW
#define LOOM_EW static inline __attribute__((always_inline))
template <class F> LOOM_EW float loom_ew_lanes(float x, F f) { return f(x); }
template <class V, class F> LOOM_EW V loom_ew_lanes(V x, F f) {
  float t[sizeof(V) / sizeof(float)];
  __builtin_memcpy(t, &x, sizeof x);
  for (unsigned i = 0; i < sizeof(V) / sizeof(float); ++i) t[i] = f(t[i]);
  __builtin_memcpy(&x, t, sizeof x);
  return x;
}
template <class F> LOOM_EW float loom_ew_lanes2(float x, float y, F f) { return f(x, y); }
template <class V, class F> LOOM_EW V loom_ew_lanes2(V x, V y, F f) {
  float t[sizeof(V) / sizeof(float)], u[sizeof(V) / sizeof(float)];
  __builtin_memcpy(t, &x, sizeof x);
  __builtin_memcpy(u, &y, sizeof y);
  for (unsigned i = 0; i < sizeof(V) / sizeof(float); ++i) t[i] = f(t[i], u[i]);
  __builtin_memcpy(&x, t, sizeof x);
  return x;
}
template <class V> LOOM_EW V loom_ew_max(V a, V b) { return a < b ? b : a; }
template <class V> LOOM_EW V loom_ew_min(V a, V b) { return b < a ? b : a; }
template <class V> LOOM_EW V loom_ew_relu(V x) { V z = {}; return x < z ? z : x; }
template <class V> LOOM_EW V loom_ew_abs(V x) { V z = {}; return x < z ? z - x : x; }
template <class V> LOOM_EW V loom_ew_sign(V x) {
  V z = {};
  V one = z + 1;
  return x > z ? one : (x < z ? z - one : z);
}
template <class V, class S> LOOM_EW V loom_ew_clip(V x, S lo, S hi) {
  V z = {};
  return loom_ew_min(loom_ew_max(x, z + lo), z + hi);
}
template <class V, class S> LOOM_EW V loom_ew_leaky(V x, S alpha) {
  V z = {};
  return x < z ? x * alpha : x;
}
template <class V> LOOM_EW V loom_ew_prelu(V x, V slope) { V z = {}; return x < z ? x * slope : x; }
LOOM_EW double loom_ew_exp(double x) { return __builtin_exp(x); }
LOOM_EW double loom_ew_log(double x) { return __builtin_log(x); }
LOOM_EW double loom_ew_tanh(double x) { return __builtin_tanh(x); }
LOOM_EW double loom_ew_erf(double x) { return __builtin_erf(x); }
LOOM_EW double loom_ew_sigmoid(double x) { return 1.0 / (1.0 + __builtin_exp(-x)); }
LOOM_EW double loom_ew_softplus(double x) { return __builtin_log1p(__builtin_exp(-__builtin_fabs(x))) + (x > 0 ? x : 0.0); }
LOOM_EW double loom_ew_gelu_erf(double x) { return 0.5 * x * (1.0 + __builtin_erf(x * 0.70710678118654752440)); }
LOOM_EW double loom_ew_gelu_tanh(double x) { return 0.5 * x * (1.0 + __builtin_tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x))); }
LOOM_EW double loom_ew_sqrt(double x) { return __builtin_sqrt(x); }
LOOM_EW double loom_ew_ceil(double x) { return __builtin_ceil(x); }
LOOM_EW double loom_ew_floor(double x) { return __builtin_floor(x); }
LOOM_EW double loom_ew_round(double x) { return __builtin_rint(x); }
LOOM_EW double loom_ew_sin(double x) { return __builtin_sin(x); }
LOOM_EW double loom_ew_cos(double x) { return __builtin_cos(x); }
LOOM_EW double loom_ew_pow(double x, double y) { return __builtin_pow(x, y); }
LOOM_EW double loom_ew_fmod(double x, double y) { return __builtin_fmod(x, y); }
template <class V> LOOM_EW V loom_ew_exp(V x) { return loom_exp(x); }
template <class V> LOOM_EW V loom_ew_log(V x) { return loom_log(x); }
template <class V> LOOM_EW V loom_ew_tanh(V x) { return loom_tanh(x); }
template <class V> LOOM_EW V loom_ew_erf(V x) { return loom_erf(x); }
template <class V> LOOM_EW V loom_ew_sigmoid(V x) { return loom_sigmoid(x); }
template <class V> LOOM_EW V loom_ew_softplus(V x) { return loom_softplus(x); }
template <class V> LOOM_EW V loom_ew_gelu_erf(V x) { return loom_gelu_erf(x); }
template <class V> LOOM_EW V loom_ew_gelu_tanh(V x) { return loom_gelu_tanh(x); }
template <class V> LOOM_EW V loom_ew_sqrt(V x) { return loom_ew_lanes(x, [](float t) { return __builtin_sqrtf(t); }); }
template <class V> LOOM_EW V loom_ew_ceil(V x) { return loom_ew_lanes(x, [](float t) { return __builtin_ceilf(t); }); }
template <class V> LOOM_EW V loom_ew_floor(V x) { return loom_ew_lanes(x, [](float t) { return __builtin_floorf(t); }); }
template <class V> LOOM_EW V loom_ew_round(V x) { return loom_ew_lanes(x, [](float t) { return __builtin_rintf(t); }); }
template <class V> LOOM_EW V loom_ew_sin(V x) { return loom_ew_lanes(x, [](float t) { return __builtin_sinf(t); }); }
template <class V> LOOM_EW V loom_ew_cos(V x) { return loom_ew_lanes(x, [](float t) { return __builtin_cosf(t); }); }
template <class V> LOOM_EW V loom_ew_pow(V x, V y) { return loom_ew_lanes2(x, y, [](float s, float t) { return __builtin_powf(s, t); }); }
template <class V> LOOM_EW V loom_ew_fmod(V x, V y) { return loom_ew_lanes2(x, y, [](float s, float t) { return __builtin_fmodf(s, t); }); }
template <class V, class S> LOOM_EW V loom_ew_elu(V x, S alpha) {
  V z = {};
  return x < z ? (loom_ew_exp(x) - 1) * alpha : x;
}
template <class V, class S> LOOM_EW V loom_ew_selu(V x, S alpha, S gamma) {
  V z = {};
  return x <= z ? (loom_ew_exp(x) * alpha - alpha) * gamma : x * gamma;
}
template <class V> LOOM_EW bool loom_ew_isinf(V x, bool pos, bool neg) {
  return (pos && x == (V)__builtin_inf()) || (neg && x == -(V)__builtin_inf());
}
// Integer remainders by a constant divisor that is neither 0 nor -1 (AppendNode checks).
template <class T> LOOM_EW T loom_ew_imod_c(T a, T b) { return a % b; }
template <class T> LOOM_EW T loom_ew_imod_py(T a, T b) {
  T r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
// IEEE binary16 and bfloat16 storage (round to nearest even; NaN stays NaN).
LOOM_EW float loom_ew_h2f(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
  if (e == 0x1f) {
    bits = sign | 0x7f800000u | (m << 13);
  } else if (e != 0) {
    bits = sign | ((e + 112u) << 23) | (m << 13);
  } else {
    float f = (float)m * 5.9604644775390625e-8f;
    __builtin_memcpy(&bits, &f, 4);
    bits |= sign;
  }
  float r;
  __builtin_memcpy(&r, &bits, 4);
  return r;
}
LOOM_EW uint16_t loom_ew_f2h(float f) {
  uint32_t x;
  __builtin_memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
  if (ax < 0x38800000u) {
    float a;
    __builtin_memcpy(&a, &ax, 4);
    a += 0.5f;  // the subnormal half is the low bits of a + 0.5, rounded to nearest even
    uint32_t b;
    __builtin_memcpy(&b, &a, 4);
    return (uint16_t)(sign | (b - 0x3f000000u));
  }
  const uint32_t odd = (ax >> 13) & 1u;
  return (uint16_t)(sign | ((ax + 0xc8000fffu + odd) >> 13));
}
LOOM_EW float loom_ew_bf2f(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float r;
  __builtin_memcpy(&r, &bits, 4);
  return r;
}
LOOM_EW uint16_t loom_ew_f2bf(float f) {
  uint32_t x;
  __builtin_memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
#endif  // LOOM_EW
)LOOM";

}  // namespace

std::vector<std::string> ElementwiseGlobals() { return {codegen::VectorMathSource(), kHelpers}; }

absl::StatusOr<PrintedElementwise> PrintElementwise(const ElementwiseProgram& p,
                                                    const std::vector<std::string>& inputs,
                                                    EwMode mode, const std::string& prefix) {
  if (inputs.size() != p.inputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the program has ", p.inputs.size(), " inputs, ",
                                                   inputs.size(), " were given"));
  }
  if (p.outputs.size() != p.output_types.size()) {
    return absl::InvalidArgumentError("outputs and output types differ in number");
  }
  if (mode == EwMode::kVector && !IsVectorizable(p)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the program is not float32 throughout; it cannot run on vectors:\n", p.ToString()));
  }
  PrintedElementwise out;
  std::vector<std::string> names(static_cast<size_t>(p.num_values()));
  // Inputs are bound once: an expression such as a load is evaluated a single time.
  for (size_t k = 0; k < inputs.size(); ++k) {
    names[k] = absl::StrCat(prefix, k);
    out.lines.push_back(
        absl::StrCat("const ", mode == EwMode::kVector ? "vf" : CType(ComputeType(p.inputs[k])),
                     " ", names[k], " = ", inputs[k], ";"));
  }
  for (size_t k = 0; k < p.instrs.size(); ++k) {
    const EwInstr& i = p.instrs[k];
    const int32_t v = static_cast<int32_t>(p.inputs.size() + k);
    const int arity = Arity(i.op);
    const int32_t ops[3] = {i.a, i.b, i.c};
    for (int j = 0; j < 3; ++j) {
      const bool used = j < arity;
      if (used != (ops[j] >= 0) || ops[j] >= v) {
        return absl::InvalidArgumentError(
            absl::StrCat("instruction v", v, " (", EwOpName(i.op), ") has bad operands"));
      }
    }
    if (i.dtype == DType::kUndefined || graph::IsHalfDType(i.dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat("instruction v", v, " has type ", graph::DTypeName(i.dtype)));
    }
    auto name = [&](int32_t a) { return a >= 0 ? names[static_cast<size_t>(a)] : std::string(); };
    LOOM_ASSIGN_OR_RETURN(std::string e, Expr(p, i, name(i.a), name(i.b), name(i.c), mode));
    const std::string var = absl::StrCat(prefix, v);
    if (mode == EwMode::kVector) {
      out.lines.push_back(absl::StrCat("const auto ", var, " = ", e, ";"));
    } else {
      out.lines.push_back(absl::StrCat("const ", CType(i.dtype), " ", var, " = ", e, ";"));
    }
    names[static_cast<size_t>(v)] = var;
  }
  for (int32_t o : p.outputs) {
    if (o < 0 || o >= p.num_values()) {
      return absl::InvalidArgumentError(absl::StrCat("output v", o, " is not a value"));
    }
    out.outputs.push_back(names[static_cast<size_t>(o)]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Standalone kernels.

absl::StatusOr<ElementwiseSpec> BroadcastSpec(ElementwiseProgram program,
                                              const std::vector<graph::Shape>& input_shapes,
                                              const graph::Shape& out_shape) {
  if (input_shapes.size() != program.inputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat(input_shapes.size(), " shapes for ",
                                                   program.inputs.size(), " program inputs"));
  }
  const size_t rank = out_shape.size();
  // Per input, its stride along each output dim (0 where it broadcasts).
  std::vector<std::vector<int64_t>> strides(input_shapes.size(), std::vector<int64_t>(rank, 0));
  for (size_t k = 0; k < input_shapes.size(); ++k) {
    const graph::Shape& s = input_shapes[k];
    if (s.size() > rank) {
      return absl::InvalidArgumentError(absl::StrCat("operand ", graph::ShapeToString(s),
                                                     " has a higher rank than the output ",
                                                     graph::ShapeToString(out_shape)));
    }
    int64_t stride = 1;
    for (size_t j = s.size(); j-- > 0;) {
      const size_t d = rank - s.size() + j;
      if (s[j] == out_shape[d]) {
        strides[k][d] = out_shape[d] == 1 ? 0 : stride;
      } else if (s[j] != 1) {
        return absl::InvalidArgumentError(absl::StrCat("operand ", graph::ShapeToString(s),
                                                       " does not broadcast to ",
                                                       graph::ShapeToString(out_shape)));
      }
      stride *= s[j];
    }
  }
  ElementwiseSpec spec;
  spec.program = std::move(program);
  spec.strides.resize(input_shapes.size());
  for (size_t d = 0; d < rank; ++d) {
    if (out_shape[d] == 1) continue;
    // Merge into the previous kept dim when every operand is contiguous across the two.
    bool merge = !spec.dims.empty();
    for (size_t k = 0; merge && k < strides.size(); ++k) {
      merge = spec.strides[k].back() == strides[k][d] * out_shape[d];
    }
    if (merge) {
      spec.dims.back() *= out_shape[d];
      for (size_t k = 0; k < strides.size(); ++k) spec.strides[k].back() = strides[k][d];
      continue;
    }
    spec.dims.push_back(out_shape[d]);
    for (size_t k = 0; k < strides.size(); ++k) spec.strides[k].push_back(strides[k][d]);
  }
  if (spec.dims.empty()) {
    spec.dims = {1};
    for (auto& s : spec.strides) s = {0};
  }
  return spec;
}

namespace {

absl::Status CheckSpec(const ElementwiseSpec& spec) {
  const ElementwiseProgram& p = spec.program;
  if (spec.dims.empty()) return absl::InvalidArgumentError("an elementwise spec needs dims");
  if (spec.strides.size() != p.inputs.size()) {
    return absl::InvalidArgumentError("one stride list per program input is needed");
  }
  for (int64_t d : spec.dims) {
    if (d < 0) return absl::InvalidArgumentError("negative dimension");
  }
  for (const auto& s : spec.strides) {
    if (s.size() != spec.dims.size()) {
      return absl::InvalidArgumentError("a stride list does not match the dims");
    }
    for (int64_t x : s) {
      if (x < 0) return absl::InvalidArgumentError("negative stride");
    }
  }
  if (p.outputs.empty()) return absl::InvalidArgumentError("the program has no output");
  return absl::OkStatus();
}

std::string LoadExpr(DType storage, const std::string& ptr_elem) {
  if (storage == DType::kFloat16) return absl::StrCat("loom_ew_h2f(", ptr_elem, ")");
  if (storage == DType::kBFloat16) return absl::StrCat("loom_ew_bf2f(", ptr_elem, ")");
  return ptr_elem;
}

std::string StoreExpr(DType storage, DType compute, const std::string& value) {
  if (storage == DType::kFloat16) return absl::StrCat("loom_ew_f2h(", value, ")");
  if (storage == DType::kBFloat16) return absl::StrCat("loom_ew_f2bf(", value, ")");
  if (storage == compute) return value;
  return absl::StrCat("(", CType(storage), ")(", value, ")");
}

}  // namespace

std::vector<int64_t> ElementwiseArgBytes(const ElementwiseSpec& spec) {
  std::vector<int64_t> bytes;
  int64_t total = 1;
  for (int64_t d : spec.dims) total *= d;
  for (size_t k = 0; k < spec.program.inputs.size(); ++k) {
    int64_t last = 0;  // the furthest element read
    for (size_t d = 0; d < spec.dims.size() && k < spec.strides.size(); ++d) {
      if (spec.dims[d] > 0) last += (spec.dims[d] - 1) * spec.strides[k][d];
    }
    const int64_t elems = total == 0 ? 0 : last + 1;
    bytes.push_back(elems * static_cast<int64_t>(graph::DTypeSize(spec.program.inputs[k])));
  }
  for (DType t : spec.program.output_types) {
    bytes.push_back(total * static_cast<int64_t>(graph::DTypeSize(t)));
  }
  return bytes;
}

absl::StatusOr<KernelSource> EmitElementwise(const ElementwiseSpec& spec, const Target& target) {
  if (target.kind != "cpu") {
    return absl::UnimplementedError(
        absl::StrCat("elementwise kernels are generated for cpu targets only, not ", target.kind));
  }
  LOOM_RETURN_IF_ERROR(CheckSpec(spec));
  const ElementwiseProgram& p = spec.program;
  const size_t nd = spec.dims.size();
  const size_t ni = p.inputs.size();
  const int64_t inner = spec.dims.back();
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < nd; ++d) rows *= spec.dims[d];

  codegen::Kernel k;
  k.vector_lanes = 1;
  k.comment = absl::StrCat("elementwise dims [", absl::StrJoin(spec.dims, ","), "]");
  k.globals = ElementwiseGlobals();
  for (size_t i = 0; i < ni; ++i)
    k.params.push_back({absl::StrCat("in", i), false, CType(p.inputs[i])});
  for (size_t o = 0; o < p.outputs.size(); ++o) {
    k.params.push_back({absl::StrCat("out", o), true, CType(p.output_types[o])});
  }
  // A parallel task covers `chunk` rows of the innermost dim: about 16K elements.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(inner, 1));
  const int64_t tasks = rows == 0 || inner == 0 ? 0 : (rows + chunk - 1) / chunk;
  KernelSource src;
  // No contraction: a*b+c must round like the reference kernels' separate operations.
  src.compile_flags = absl::StrCat(target.CompilerFlags(), " -ffp-contract=off");
  if (tasks == 0) {  // an empty tensor: nothing to compute
    LOOM_ASSIGN_OR_RETURN(src.code, codegen::PrintCpp(k));
    return src;
  }

  std::vector<codegen::Stmt> body;
  using codegen::Raw;
  body.push_back(Raw(absl::StrCat("const int64_t r0 = t * ", chunk, ";")));
  body.push_back(Raw(absl::StrCat("const int64_t r1 = r0 + ", chunk, " < ", rows, " ? r0 + ", chunk,
                                  " : ", rows, ";")));
  // The outer indices of row r0, then carried along row by row.
  body.push_back(Raw("int64_t rest = r0;"));
  for (size_t d = nd - 1; d-- > 0;) {
    body.push_back(Raw(absl::StrCat("int64_t i", d, " = rest % ", spec.dims[d], ";")));
    body.push_back(Raw(absl::StrCat("rest /= ", spec.dims[d], ";")));
  }
  body.push_back(Raw("(void)rest;"));
  std::vector<codegen::Stmt> row;
  for (size_t i = 0; i < ni; ++i) {
    std::string off = "0";
    for (size_t d = 0; d + 1 < nd; ++d) {
      if (spec.strides[i][d] != 0) absl::StrAppend(&off, " + i", d, " * ", spec.strides[i][d]);
    }
    row.push_back(Raw(absl::StrCat("const ", CType(p.inputs[i]), "* __restrict p", i, " = in", i,
                                   " + (", off, ");")));
  }
  for (size_t o = 0; o < p.outputs.size(); ++o) {
    row.push_back(Raw(absl::StrCat(CType(p.output_types[o]), "* __restrict q", o, " = out", o,
                                   " + r * ", inner, ";")));
  }
  // Inputs that do not move along the inner dim are read once per row.
  std::vector<std::string> in_exprs(ni);
  std::vector<codegen::Stmt> elem;
  for (size_t i = 0; i < ni; ++i) {
    const int64_t s = spec.strides[i][nd - 1];
    const std::string ct = CType(ComputeType(p.inputs[i]));
    if (s == 0) {
      row.push_back(Raw(absl::StrCat("const ", ct, " a", i, " = ",
                                     LoadExpr(p.inputs[i], absl::StrCat("p", i, "[0]")), ";")));
    } else {
      const std::string at =
          s == 1 ? absl::StrCat("p", i, "[x]") : absl::StrCat("p", i, "[x * ", s, "]");
      elem.push_back(
          Raw(absl::StrCat("const ", ct, " a", i, " = ", LoadExpr(p.inputs[i], at), ";")));
    }
    in_exprs[i] = absl::StrCat("a", i);
  }
  LOOM_ASSIGN_OR_RETURN(PrintedElementwise printed,
                        PrintElementwise(p, in_exprs, EwMode::kScalar, "v"));
  for (std::string& line : printed.lines) elem.push_back(Raw(std::move(line)));
  for (size_t o = 0; o < p.outputs.size(); ++o) {
    elem.push_back(Raw(absl::StrCat(
        "q", o, "[x] = ", StoreExpr(p.output_types[o], p.TypeOf(p.outputs[o]), printed.outputs[o]),
        ";")));
  }
  row.push_back(codegen::Loop("x", inner, codegen::LoopKind::kVectorized, std::move(elem)));
  // Carry the outer indices to the next row.
  if (nd > 1) {
    std::string carry;
    for (size_t d = nd - 1; d-- > 0;) {
      absl::StrAppend(&carry, "if (++i", d, " == ", spec.dims[d], ") { i", d, " = 0; ");
    }
    for (size_t d = nd - 1; d-- > 0;) absl::StrAppend(&carry, "}");
    row.push_back(Raw(carry));
  }
  row.insert(row.begin(), Raw("const int64_t r = r0 + rr;"));
  body.push_back(codegen::LoopExpr("rr", "r1 - r0", codegen::LoopKind::kSerial, std::move(row)));
  k.body.push_back(codegen::Loop("t", tasks, codegen::LoopKind::kParallel, std::move(body)));
  LOOM_ASSIGN_OR_RETURN(src.code, codegen::PrintCpp(k));
  return src;
}

}  // namespace loom::ops
