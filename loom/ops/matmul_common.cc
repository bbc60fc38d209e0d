#include "loom/ops/matmul_common.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {

using codegen::Loop;
using codegen::LoopKind;
using codegen::Raw;
using codegen::Stmt;

Stmt ZeroAccumulators(int64_t rows, int64_t n_v) {
  return ForEachAccumulator(rows, n_v, {codegen::VecZero("acc_${r}_${j}")});
}

Stmt ForEachAccumulator(int64_t rows, int64_t n_v, std::vector<Stmt> body) {
  return Loop("r", rows, LoopKind::kUnrolled,
              {Loop("j", n_v, LoopKind::kUnrolled, std::move(body))});
}

Stmt AccumulateBlock(const MatrixBlock& b) {
  // One k step at k index `kexpr`: the B vectors first (n_v registers), then per row one
  // broadcast A value FMA'd into the row's accumulators.
  auto step = [&](const std::string& kexpr) {
    std::vector<Stmt> s;
    s.push_back(Raw(absl::StrCat("const int64_t kk = ", kexpr, ";")));
    s.push_back(Loop("j", b.n_v, LoopKind::kUnrolled, {codegen::VecLoad("w_${j}", b.b_addr)}));
    s.push_back(Loop("r", b.rows, LoopKind::kUnrolled,
                     {codegen::VecBroadcast("a_${r}", b.a_elem),
                      Loop("j", b.n_v, LoopKind::kUnrolled,
                           {codegen::VecFma("acc_${r}_${j}", "a_${r}", "w_${j}")})}));
    return codegen::Block(std::move(s));
  };
  const int64_t u = std::max<int64_t>(1, b.unroll_k);
  int64_t count = -1;
  if (!absl::SimpleAtoi(b.k_count, &count)) count = -1;
  std::vector<Stmt> body;
  if (count >= 0) {
    // A constant trip count: the unrolled main loop and a constant remainder.
    const int64_t main = count / u, rest = count % u;
    if (main > 0) {
      body.push_back(
          Loop("ko", main, LoopKind::kSerial,
               {Loop("ki", u, LoopKind::kUnrolled, {step(absl::StrCat("ko * ", u, " + ${ki}"))})}));
    }
    if (rest > 0) {
      body.push_back(Loop("kr", rest, LoopKind::kSerial, {step(absl::StrCat(main * u, " + kr"))}));
    }
  } else {
    body.push_back(codegen::LoopExpr(
        "ko", absl::StrCat("(", b.k_count, ") / ", u), LoopKind::kSerial,
        {Loop("ki", u, LoopKind::kUnrolled, {step(absl::StrCat("ko * ", u, " + ${ki}"))})}));
    if (u > 1) {
      body.push_back(
          codegen::LoopExpr("kr", absl::StrCat("(", b.k_count, ") % ", u), LoopKind::kSerial,
                            {step(absl::StrCat("(", b.k_count, ") / ", u, " * ", u, " + kr"))}));
    }
  }
  return codegen::Block(std::move(body));
}

namespace {

bool NeedsPacking(const PanelSpec& p, int64_t cols) {
  return p.b_source == PanelSpec::BSource::kPackInKernel ||
         (p.b_source == PanelSpec::BSource::kInPlace && cols < p.nr());
}

// Packs B'[k0 .. k0+kn, n0 .. n0+cols) into loom_panel [kn, nr], zero-padding columns past
// `cols`.
std::vector<Stmt> PackPanel(const PanelSpec& p, int64_t cols, const std::string& kn) {
  const int64_t nr = p.nr();
  std::vector<Stmt> s;
  if (!p.trans_b) {
    // Rows of B are contiguous: copy row slices.
    s.push_back(Raw(absl::StrCat("for (int64_t kk = 0; kk < ", kn, "; ++kk) {")));
    s.push_back(
        Raw(absl::StrCat("  const float* __restrict src = b_base + (k0 + kk) * ", p.n, " + n0;")));
    s.push_back(Raw(absl::StrCat("  float* __restrict dst = loom_panel + kk * ", nr, ";")));
    s.push_back(Raw(absl::StrCat("  for (int64_t c = 0; c < ", cols, "; ++c) dst[c] = src[c];")));
    if (cols < nr) {
      s.push_back(
          Raw(absl::StrCat("  for (int64_t c = ", cols, "; c < ", nr, "; ++c) dst[c] = 0;")));
    }
    s.push_back(Raw("}"));
    return s;
  }
  // B is [n, k]: column c of the panel is row n0 + c of B, contiguous in k. 8x8 blocks are
  // transposed in registers (loom_transpose8); the edges of the block grid element by element.
  s.push_back(Raw(absl::StrCat("const int64_t loom_k8 = (", kn, ") / 8 * 8;")));
  s.push_back(Raw(absl::StrCat("for (int64_t c = 0; c + 8 <= ", cols, "; c += 8) {")));
  s.push_back(Raw(absl::StrCat("  for (int64_t kk = 0; kk < loom_k8; kk += 8) loom_transpose8(",
                               "b_base + (n0 + c) * ", p.k, " + k0 + kk, ", p.k,
                               ", loom_panel + kk * ", nr, " + c, ", nr, ");")));
  s.push_back(Raw(absl::StrCat(
      "  for (int64_t cc = c; cc < c + 8; ++cc) for (int64_t kk = loom_k8; ", "kk < ", kn,
      "; ++kk) loom_panel[kk * ", nr, " + cc] = b_base[(n0 + cc) * ", p.k, " + k0 + kk];")));
  s.push_back(Raw("}"));
  if (cols % 8 != 0) {
    s.push_back(Raw(absl::StrCat("for (int64_t c = ", cols / 8 * 8, "; c < ", cols, "; ++c) {")));
    s.push_back(
        Raw(absl::StrCat("  const float* __restrict src = b_base + (n0 + c) * ", p.k, " + k0;")));
    s.push_back(Raw(absl::StrCat("  for (int64_t kk = 0; kk < ", kn, "; ++kk) loom_panel[kk * ", nr,
                                 " + c] = src[kk];")));
    s.push_back(Raw("}"));
  }
  if (cols < nr) {
    s.push_back(Raw(absl::StrCat("for (int64_t kk = 0; kk < ", kn, "; ++kk) {")));
    s.push_back(Raw(absl::StrCat("  for (int64_t c = ", cols, "; c < ", nr,
                                 "; ++c) loom_panel[kk * ", nr, " + c] = 0;")));
    s.push_back(Raw("}"));
  }
  return s;
}

// One register block of `rows` rows at m0 over the panel's K block at k0 (kn steps).
Stmt RowBlock(const PanelSpec& p, const Epilogue& ep, int64_t rows, int64_t cols,
              const std::string& kn) {
  const int64_t nr = p.nr(), kblocks = CeilDiv(p.k, p.tile_k);
  const bool narrow = cols < nr;
  // A narrow panel computes only the vectors its columns need.
  const int64_t n_v = narrow ? CeilDiv(cols, p.vec) : p.n_v;
  std::vector<Stmt> s;
  s.push_back(Raw(p.trans_a ? absl::StrCat("const float* ap = a_base + k0 * ", p.m, " + m0;")
                            : absl::StrCat("const float* ap = a_base + m0 * ", p.k, " + k0;")));
  s.push_back(Raw(absl::StrCat("float* op = y_base + m0 * ", p.n, " + n0;")));
  // Copies rows x cols of a row-major matrix (row stride n) at `src` into a staging tile.
  auto stage_in = [&](const std::string& tile, const std::string& src) {
    return Raw(absl::StrCat("for (int64_t r = 0; r < ", rows, "; ++r) for (int64_t c = 0; c < ",
                            cols, "; ++c) ", tile, "[r * ", nr, " + c] = ", src, "[r * ", p.n,
                            " + c];"));
  };
  s.push_back(ZeroAccumulators(rows, n_v));
  // Partial sums of earlier K blocks.
  if (kblocks > 1) {
    std::vector<Stmt> reload;
    std::string from = absl::StrCat("op + ${r} * ", p.n, " + ${j} * ", p.vec);
    if (narrow) {
      reload.push_back(stage_in("loom_tile", "op"));
      from = absl::StrCat("loom_tile + ${r} * ", nr, " + ${j} * ", p.vec);
    }
    reload.push_back(ForEachAccumulator(
        rows, n_v, {codegen::VecAdd("acc_${r}_${j}", absl::StrCat("loom_load(", from, ")"))}));
    s.push_back(codegen::If("kb > 0", std::move(reload)));
  }
  MatrixBlock block;
  block.rows = rows;
  block.n_v = n_v;
  block.vec = p.vec;
  block.unroll_k = p.unroll_k;
  block.k_count = kn;
  block.a_elem = p.trans_a ? absl::StrCat("ap[kk * ", p.m, " + ${r}]")
                           : absl::StrCat("ap[${r} * ", p.k, " + kk]");
  if (NeedsPacking(p, cols)) {
    block.b_addr = absl::StrCat("loom_panel + kk * ", nr, " + ${j} * ", p.vec);
  } else if (p.b_source == PanelSpec::BSource::kPrepacked) {
    block.b_addr = absl::StrCat("b_base + (k0 + kk) * ", nr, " + ${j} * ", p.vec);
  } else {
    block.b_addr = absl::StrCat("b_base + (k0 + kk) * ", p.n, " + n0 + ${j} * ", p.vec);
  }
  s.push_back(AccumulateBlock(block));
  // The epilogue, after the last K block. Channel operands hold n values (the output's columns,
  // unpadded), per-batch ones n per batch.
  if (!ep.empty()) {
    std::vector<Stmt> apply;
    EpilogueSite site{.channel = absl::StrCat("n0 + ${j} * ", p.vec),
                      .element = absl::StrCat("(op - output) + ${r} * ", p.n, " + ${j} * ", p.vec),
                      .batch = p.batch_var,
                      .channels = p.n};
    if (narrow) {
      // Operands are read through zero-padded staging tiles, so that whole vectors stay in
      // bounds: inside this block their names (FusedParams': `bias`, `residual`, `ep<k>`) are the
      // tiles, per-element ones rows x nr, per-channel ones nr.
      std::vector<std::pair<std::string, std::string>> rows_of, row_of;  // name, source row
      if (ep.bias) row_of.push_back({"bias", "bias + n0"});
      if (ep.residual) rows_of.push_back({"residual", "(residual + (op - output))"});
      for (size_t k = 0; k < ep.operands.size(); ++k) {
        const std::string name = absl::StrCat("ep", k);
        switch (ep.operands[k].kind) {
          case EpilogueOperand::Kind::kChannel:
            row_of.push_back({name, absl::StrCat(name, " + n0")});
            break;
          case EpilogueOperand::Kind::kElement:
            rows_of.push_back({name, absl::StrCat("(", name, " + (op - output))")});
            break;
          case EpilogueOperand::Kind::kBatchChannel:
            row_of.push_back({name, absl::StrCat(name, " + (", p.batch_var, ") * ", p.n, " + n0")});
            break;
        }
      }
      for (const auto& [name, src] : rows_of) {
        apply.push_back(Raw(absl::StrCat("float loom_st_", name, "[", rows * nr,
                                         "] __attribute__((aligned(64))) = {};")));
        apply.push_back(stage_in(absl::StrCat("loom_st_", name), src));
      }
      for (const auto& [name, src] : row_of) {
        apply.push_back(Raw(
            absl::StrCat("float loom_st_", name, "[", nr, "] __attribute__((aligned(64))) = {};")));
        apply.push_back(Raw(absl::StrCat("for (int64_t c = 0; c < ", cols, "; ++c) loom_st_", name,
                                         "[c] = (", src, ")[c];")));
      }
      for (const auto& list : {rows_of, row_of}) {
        for (const auto& [name, src] : list) {
          apply.push_back(Raw(absl::StrCat("const float* ", name, " = loom_st_", name, ";")));
        }
      }
      site = {.channel = absl::StrCat("${j} * ", p.vec),
              .element = absl::StrCat("${r} * ", nr, " + ${j} * ", p.vec),
              .batch = "0",
              .channels = 0};
    }
    apply.push_back(ForEachAccumulator(rows, n_v, EpilogueStmts(ep, "acc_${r}_${j}", site)));
    if (kblocks > 1) {
      s.push_back(codegen::If(absl::StrCat("kb == ", kblocks - 1), std::move(apply)));
    } else {
      s.push_back(codegen::Block(std::move(apply)));
    }
  }
  const std::string store_at = narrow ? absl::StrCat("loom_tile + ${r} * ", nr, " + ${j} * ", p.vec)
                                      : absl::StrCat("op + ${r} * ", p.n, " + ${j} * ", p.vec);
  s.push_back(ForEachAccumulator(rows, n_v, {codegen::VecStore(store_at, "acc_${r}_${j}")}));
  if (narrow) {
    s.push_back(
        Raw(absl::StrCat("for (int64_t r = 0; r < ", rows, "; ++r) for (int64_t c = 0; c < ", cols,
                         "; ++c) op[r * ", p.n, " + c] = loom_tile[r * ", nr, " + c];")));
  }
  return codegen::Block(std::move(s));
}

}  // namespace

std::vector<std::string> PanelGlobals(const PanelSpec& p) {
  if (!p.trans_b || p.b_source != PanelSpec::BSource::kPackInKernel) return {};
  // dst[r][c] = src[c][r] for an 8x8 block; rows of src and dst are `*_stride` floats apart.
  // Three rounds of two-source shuffles (one vpermt2ps each with AVX-512VL).
  return {
      "typedef float loom_v8 __attribute__((vector_size(32)));\n"
      "typedef float loom_v8u __attribute__((vector_size(32), aligned(4), may_alias));\n"
      "typedef int loom_i8 __attribute__((vector_size(32)));\n"
      "static inline __attribute__((always_inline)) void loom_transpose8(const float* src, "
      "int64_t src_stride, float* dst, int64_t dst_stride) {\n"
      "  loom_v8 r[8], t[8];\n"
      "  for (int i = 0; i < 8; ++i) r[i] = *(const loom_v8u*)(src + i * src_stride);\n"
      "  for (int i = 0; i < 8; i += 2) {\n"
      "    t[i] = __builtin_shuffle(r[i], r[i + 1], (loom_i8){0, 8, 1, 9, 4, 12, 5, 13});\n"
      "    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], (loom_i8){2, 10, 3, 11, 6, 14, 7, 15});\n"
      "  }\n"
      "  for (int i = 0; i < 8; i += 4) {\n"
      "    for (int j = 0; j < 2; ++j) {\n"
      "      r[i + j] = __builtin_shuffle(t[i + j], t[i + j + 2], (loom_i8){0, 1, 8, 9, 4, 5, 12, "
      "13});\n"
      "      r[i + j + 2] = __builtin_shuffle(t[i + j], t[i + j + 2], (loom_i8){2, 3, 10, 11, 6, "
      "7, 14, 15});\n"
      "    }\n"
      "  }\n"
      "  for (int j = 0; j < 4; ++j) {\n"
      "    t[j] = __builtin_shuffle(r[j], r[j + 4], (loom_i8){0, 1, 2, 3, 8, 9, 10, 11});\n"
      "    t[j + 4] = __builtin_shuffle(r[j], r[j + 4], (loom_i8){4, 5, 6, 7, 12, 13, 14, 15});\n"
      "  }\n"
      "  static const int order[8] = {0, 2, 1, 3, 4, 6, 5, 7};\n"
      "  for (int i = 0; i < 8; ++i) *(loom_v8u*)(dst + i * dst_stride) = t[order[i]];\n"
      "}"};
}

std::vector<int64_t> KBlockChoices(int64_t k) {
  std::vector<int64_t> out;
  for (int64_t kt : {64, 128, 256, 512}) {
    if (kt < k) out.push_back(kt);
  }
  int64_t added = 0;
  for (int64_t d = std::min<int64_t>(k - 1, 1023); d >= 96 && added < 2; --d) {
    if (k % d == 0 && std::find(out.begin(), out.end(), d) == out.end()) {
      out.push_back(d);
      ++added;
    }
  }
  out.push_back(k);
  std::sort(out.begin(), out.end());
  return out;
}

int64_t DefaultKBlock(const std::vector<int64_t>& choices, int64_t k, int64_t nr,
                      int64_t budget_bytes) {
  int64_t best = -1;
  for (int64_t c : choices) {
    if (c * nr * 4 <= budget_bytes) best = c;
  }
  if (best < 0) return choices.front();
  if (k % best != 0) {
    for (auto it = choices.rbegin(); it != choices.rend(); ++it) {
      if (*it < best && 2 * *it >= best && k % *it == 0) return *it;
    }
  }
  return best;
}

std::vector<Stmt> PanelBuffers(const PanelSpec& p, const Epilogue& ep) {
  const int64_t nr = p.nr();
  const int64_t narrow_cols = p.n % nr;
  const bool narrow = narrow_cols != 0;
  std::vector<Stmt> s;
  if ((p.n >= nr && NeedsPacking(p, nr)) || (narrow && NeedsPacking(p, narrow_cols))) {
    s.push_back(Raw(absl::StrCat("float loom_panel[", std::min(p.tile_k, p.k) * nr,
                                 "] __attribute__((aligned(64)));")));
  }
  if (narrow) {
    s.push_back(Raw(
        absl::StrCat("float loom_tile[", p.tile_m * nr, "] __attribute__((aligned(64))) = {};")));
  }
  return s;
}

std::vector<Stmt> PanelLoops(const PanelSpec& p, const Epilogue& ep, int64_t cols) {
  const int64_t kblocks = CeilDiv(p.k, p.tile_k);
  const bool even_k = p.k % p.tile_k == 0;
  std::vector<Stmt> kb_body;
  kb_body.push_back(Raw(absl::StrCat("const int64_t k0 = kb * ", p.tile_k, ";")));
  const std::string kn = even_k ? absl::StrCat(p.tile_k) : "kn";
  if (!even_k) {
    kb_body.push_back(Raw(absl::StrCat("const int64_t kn = ", p.k, " - k0 < ", p.tile_k, " ? ", p.k,
                                       " - k0 : ", p.tile_k, ";")));
  }
  if (NeedsPacking(p, cols)) {
    for (Stmt& s : PackPanel(p, cols, kn)) kb_body.push_back(std::move(s));
  }
  const int64_t full_rows = p.m / p.tile_m, tail_rows = p.m % p.tile_m;
  std::vector<Stmt> rows_body;
  rows_body.push_back(Raw(absl::StrCat("const int64_t m0 = mb * ", p.tile_m, ";")));
  if (tail_rows == 0) {
    rows_body.push_back(RowBlock(p, ep, p.tile_m, cols, kn));
  } else if (full_rows == 0) {
    rows_body.push_back(RowBlock(p, ep, tail_rows, cols, kn));
  } else {
    rows_body.push_back(
        codegen::If(absl::StrCat("mb < ", full_rows), {RowBlock(p, ep, p.tile_m, cols, kn)}));
    rows_body.push_back(
        codegen::If(absl::StrCat("mb == ", full_rows), {RowBlock(p, ep, tail_rows, cols, kn)}));
  }
  kb_body.push_back(Raw("for (int64_t mb = mb_begin; mb < mb_end; ++mb) {"));
  kb_body.push_back(codegen::Block(std::move(rows_body)));
  kb_body.push_back(Raw("}"));
  return {Loop("kb", kblocks, LoopKind::kSerial, std::move(kb_body))};
}

int64_t RegisterBlockRegisters(int64_t rows, int64_t n_v) { return rows * n_v + n_v + 1; }

double RegisterBlockCost(int64_t m, int64_t n, int64_t vec, const RegisterBlock& block) {
  // Cycles of one k step of a block of `rows` rows by b.n_v vectors.
  auto step = [&](const RegisterBlock& b, int64_t rows) {
    const double fmas = static_cast<double>(rows * b.n_v);
    const double loads = static_cast<double>(rows + b.n_v);
    return std::max({fmas / 2.0, loads / 2.0, 4.0});
  };
  const int64_t nr = block.n_v * vec, full_panels = n / nr, narrow_cols = n % nr;
  const int64_t full = m / block.rows, tail = m % block.rows;
  auto panel = [&](int64_t n_v) {
    const RegisterBlock b{block.rows, n_v};
    return static_cast<double>(full) * step(b, block.rows) + (tail > 0 ? step(b, tail) : 0.0);
  };
  const double cycles = static_cast<double>(full_panels) * panel(block.n_v) +
                        (narrow_cols > 0 ? panel(CeilDiv(narrow_cols, vec)) : 0.0);
  const double useful = static_cast<double>(m) * static_cast<double>(n) / static_cast<double>(vec) /
                        2.0;  // cycles at two full FMAs per cycle
  return cycles / useful;
}

std::vector<RegisterBlock> RankRegisterBlocks(int64_t m, int64_t n, int64_t vec, int64_t registers,
                                              const std::vector<int64_t>& rows_choices,
                                              const std::vector<int64_t>& n_v_choices) {
  std::vector<std::pair<double, RegisterBlock>> ranked;
  for (int64_t rows : rows_choices) {
    for (int64_t n_v : n_v_choices) {
      if (RegisterBlockRegisters(rows, n_v) > registers) continue;
      const RegisterBlock b{rows, n_v};
      ranked.push_back({RegisterBlockCost(m, n, vec, b), b});
    }
  }
  // Costs are compared in steps of 2% (closer is a tie, below the model's precision): then more
  // accumulators, then wider blocks.
  auto key = [](const std::pair<double, RegisterBlock>& x) {
    return std::tuple(std::llround(x.first * 50.0), -x.second.rows * x.second.n_v, -x.second.n_v);
  };
  std::stable_sort(ranked.begin(), ranked.end(),
                   [&](const auto& x, const auto& y) { return key(x) < key(y); });
  std::vector<RegisterBlock> out;
  for (const auto& [cost, b] : ranked) out.push_back(b);
  return out;
}

MatrixTemplate::MatrixTemplate(const graph::Workload& w, const Target& t, const TemplateOptions& o)
    : TemplateBase(w, t, o) {
  const std::vector<int64_t> vecs = VectorWidthChoices();
  space_.AddKnob("vec", vecs);
  std::vector<int64_t> n_v;
  for (int64_t j = 1; j <= 4; ++j) {
    if (j == 1 || (j - 1) * vecs.back() < w.n) n_v.push_back(j);
  }
  space_.AddKnob("tile_n", n_v);
  std::vector<int64_t> tile_m;
  for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14}) {
    if (m == 1 || m <= w.m) tile_m.push_back(m);
  }
  space_.AddKnob("tile_m", tile_m);
  space_.AddKnob("tile_k", KBlockChoices(w.k));
  space_.AddKnob("unroll_k", {1, 2, 4, 8});
}

void MatrixTemplate::AddMatrixConstraints() {
  AddRegisterConstraint(
      "tile_m*tile_n accumulators + tile_n + 1 operands", {"tile_m", "tile_n"},
      [](std::span<const int64_t> v) { return RegisterBlockRegisters(v[0], v[1]); });
}

MatrixKnobs MatrixTemplate::MatrixKnobsOf(const Config& c) const {
  MatrixKnobs k;
  k.vec = Knob(c, "vec");
  k.n_v = Knob(c, "tile_n");
  k.nr = k.vec * k.n_v;
  k.tile_m = Knob(c, "tile_m");
  k.tile_k = Knob(c, "tile_k");
  k.unroll_k = Knob(c, "unroll_k");
  return k;
}

PanelSpec MatrixTemplate::Spec(const MatrixKnobs& k, PanelSpec::BSource source) const {
  PanelSpec p;
  p.m = workload_.m;
  p.n = workload_.n;
  p.k = workload_.k;
  p.trans_a = workload_.trans_a;
  p.trans_b = workload_.trans_b;
  p.vec = k.vec;
  p.n_v = k.n_v;
  p.tile_m = k.tile_m;
  p.tile_k = k.tile_k;
  p.unroll_k = k.unroll_k;
  p.b_source = source;
  return p;
}

std::vector<Stmt> MatrixTemplate::PanelForNb(const PanelSpec& spec, const Epilogue& ep) const {
  const int64_t nr = spec.nr(), panels = CeilDiv(spec.n, nr), full = spec.n / nr;
  if (full == panels) return {codegen::Block(PanelLoops(spec, ep, nr))};
  if (full == 0) return {codegen::Block(PanelLoops(spec, ep, spec.n % nr))};
  return {codegen::If(absl::StrCat("nb < ", full), PanelLoops(spec, ep, nr)),
          codegen::If(absl::StrCat("nb == ", full), PanelLoops(spec, ep, spec.n % nr))};
}

std::vector<RegisterBlock> MatrixTemplate::RankedBlocks() const {
  auto values = [&](const char* knob) {
    return space_.knobs()[static_cast<size_t>(space_.KnobIndex(knob))].values;
  };
  return RankRegisterBlocks(workload_.m, workload_.n, target_.VectorLanes(), NumVectorRegisters(),
                            values("tile_m"), values("tile_n"));
}

Config MatrixTemplate::BlockConfig(
    const RegisterBlock& b, int64_t tile_k,
    const std::vector<std::pair<std::string, int64_t>>& extra) const {
  std::vector<std::pair<std::string, int64_t>> wanted = {{"vec", target_.VectorLanes()},
                                                         {"tile_n", b.n_v},
                                                         {"tile_m", b.rows},
                                                         {"tile_k", tile_k},
                                                         {"unroll_k", 4},
                                                         {"fault", 0}};
  for (const auto& e : extra) wanted.push_back(e);
  return ClosestConfig(wanted);
}

std::vector<std::string> MatrixTemplate::MatrixFeatureNames() const {
  std::vector<std::string> names;
  for (const ops::Knob& k : space_.knobs()) names.push_back(k.name);
  for (const char* n :
       {"nr", "accumulators", "registers_used", "k_blocks", "m_tail_rows", "n_pad_ratio",
        "panel_bytes", "a_tile_bytes", "log_arith_intensity", "model_cycles_per_fma"}) {
    names.push_back(n);
  }
  return names;
}

std::vector<float> MatrixTemplate::MatrixFeatures(const Config& config) const {
  std::vector<float> f;
  for (int64_t v : space_.Values(config)) f.push_back(static_cast<float>(v));
  const MatrixKnobs k = MatrixKnobsOf(config);
  const graph::Workload& w = workload_;
  const double panel_bytes = static_cast<double>(k.tile_k * k.nr) * 4;
  const double a_bytes = static_cast<double>(k.tile_k * k.tile_m) * 4;
  const double flops = 2.0 * static_cast<double>(k.tile_k * k.tile_m * k.nr);
  f.push_back(static_cast<float>(k.nr));
  f.push_back(static_cast<float>(k.tile_m * k.n_v));
  f.push_back(static_cast<float>(RegisterBlockRegisters(k.tile_m, k.n_v)));
  f.push_back(static_cast<float>(CeilDiv(w.k, k.tile_k)));
  f.push_back(static_cast<float>(w.m % k.tile_m));
  f.push_back(static_cast<float>(PaddedN(k)) / static_cast<float>(w.n));
  f.push_back(static_cast<float>(panel_bytes));
  f.push_back(static_cast<float>(a_bytes));
  f.push_back(static_cast<float>(std::log(flops / (panel_bytes + a_bytes))));
  f.push_back(static_cast<float>(RegisterBlockCost(w.m, w.n, k.vec, {k.tile_m, k.n_v})));
  return f;
}

double BusyShare(int64_t extent, int32_t threads) {
  return static_cast<double>(extent) / static_cast<double>(CeilDiv(extent, threads) * threads);
}

}  // namespace loom::ops::internal
