#include "loom/codegen/loop_nest.h"

#include <utility>

namespace loom::codegen {

Stmt Block(std::vector<Stmt> body) {
  Stmt s;
  s.kind = Stmt::Kind::kBlock;
  s.body = std::move(body);
  return s;
}

Stmt Loop(std::string var, int64_t extent, LoopKind kind, std::vector<Stmt> body) {
  Stmt s;
  s.kind = Stmt::Kind::kLoop;
  s.text = std::move(var);
  s.extent = std::to_string(extent);
  s.const_extent = extent;
  s.loop_kind = kind;
  s.body = std::move(body);
  return s;
}

Stmt LoopExpr(std::string var, std::string extent, LoopKind kind, std::vector<Stmt> body) {
  Stmt s;
  s.kind = Stmt::Kind::kLoop;
  s.text = std::move(var);
  s.extent = std::move(extent);
  s.loop_kind = kind;
  s.body = std::move(body);
  return s;
}

Stmt If(std::string condition, std::vector<Stmt> body) {
  Stmt s;
  s.kind = Stmt::Kind::kIf;
  s.text = std::move(condition);
  s.body = std::move(body);
  return s;
}

Stmt Raw(std::string statement) {
  Stmt s;
  s.kind = Stmt::Kind::kRaw;
  s.text = std::move(statement);
  return s;
}

Stmt Comment(const std::string& text) { return Raw("// " + text); }

namespace {
Stmt VecOp(Stmt::Kind kind, std::string text, std::string arg0, std::string arg1) {
  Stmt s;
  s.kind = kind;
  s.text = std::move(text);
  s.arg0 = std::move(arg0);
  s.arg1 = std::move(arg1);
  return s;
}
}  // namespace

Stmt VecZero(std::string name) { return VecOp(Stmt::Kind::kVecZero, std::move(name), "", ""); }
Stmt VecLoad(std::string name, std::string address) {
  return VecOp(Stmt::Kind::kVecLoad, std::move(name), std::move(address), "");
}
Stmt VecStore(std::string address, std::string name) {
  return VecOp(Stmt::Kind::kVecStore, std::move(name), std::move(address), "");
}
Stmt VecBroadcast(std::string name, std::string scalar) {
  return VecOp(Stmt::Kind::kVecBroadcast, std::move(name), std::move(scalar), "");
}
Stmt VecFma(std::string acc, std::string a, std::string b) {
  return VecOp(Stmt::Kind::kVecFma, std::move(acc), std::move(a), std::move(b));
}
Stmt VecAdd(std::string acc, std::string a) {
  return VecOp(Stmt::Kind::kVecAdd, std::move(acc), std::move(a), "");
}

Stmt Barrier() {
  Stmt s;
  s.kind = Stmt::Kind::kBarrier;
  return s;
}

}  // namespace loom::codegen
