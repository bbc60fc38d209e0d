// The register-blocked core shared by the CPU matrix templates (dense_pack.cc, batch_matmul.cc):
// a block of `rows` x `n_v` vector accumulators `acc_<r>_<j>` that, for each k, loads n_v vectors
// of B, broadcasts one element of A per row and FMAs them; and the model that picks the block
// shape for a product's extents (default and initial configs). The templates own the loops
// around the block (panels, packing, parallelism, epilogues). Internal to ops/.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loom/codegen/loop_nest.h"
#include "loom/ops/template.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {

// One register block's operands, as C expressions. `kk` is the k index relative to the block's
// first k; `${r}` is the block row and `${j}` the vector column (both unrolled).
struct MatrixBlock {
  int64_t rows = 1;
  int64_t n_v = 1;
  int64_t vec = 16;
  int64_t unroll_k = 1;
  std::string k_count;  // the number of k steps: a constant or an expression
  std::string a_elem;   // A'[r][kk], a float
  std::string b_addr;   // the address of B'[kk][j * vec .. j * vec + vec)
};

// `vf acc_<r>_<j> = {}` for every accumulator of a rows x n_v block.
codegen::Stmt ZeroAccumulators(int64_t rows, int64_t n_v);
// The k loop of `block` (unrolled by unroll_k, then a remainder loop): acc_<r>_<j> += A'[r][kk]
// * B'[kk][j].
codegen::Stmt AccumulateBlock(const MatrixBlock& block);
// `body` once per accumulator (loops r and j unrolled), e.g. epilogue and store statements.
codegen::Stmt ForEachAccumulator(int64_t rows, int64_t n_v, std::vector<codegen::Stmt> body);

// The loops of a matrix kernel over one column panel of B' (nr = n_v * vec columns starting at
// the variable `n0`) for the row blocks [mb_begin, mb_end) (variables): K blocks of tile_k, each
// making its panel of B' available (packing it into `loom_panel` when asked) and running a
// register block per row block, with partial sums of a split K kept in Y, `ep` applied after the
// last K block and a narrow panel (cols < nr) computed in the vectors it needs and stored through
// the staging tile `loom_tile`.
// Expects the variables a_base (A of this product), b_base (see BSource) and y_base (Y, row
// stride n), and the stack buffers PanelBuffers declares. Shared by dense_pack and
// batch_matmul.
struct PanelSpec {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false;  // A is [k, m]
  bool trans_b = false;  // B is [n, k] (kInKernelPack only)
  int64_t vec = 16, n_v = 1, tile_m = 1, tile_k = 1, unroll_k = 1;
  // The batch index of this product (batch_matmul's `bi`), for per-batch epilogue operands.
  std::string batch_var = "0";
  enum class BSource {
    kPrepacked,     // b_base: this panel of B' packed ahead as [k, nr], zero-padded
    kPackInKernel,  // b_base: B itself; the panel is packed into loom_panel per K block
    kInPlace,       // b_base: B itself, row-major [k, n], read in place (a narrow panel is packed)
  };
  BSource b_source = BSource::kPrepacked;
  int64_t nr() const { return n_v * vec; }
};
// Epilogue: when it runs, the accumulator acc_<r>_<j> holds Y[m0 + r][n0 + j * vec ..] (of batch
// `batch_var`), and its EpilogueSite says so: channel n0 + j * vec among the n columns (channel
// operands are not padded: Y is not), element (op - output) + r * n + j * vec, the batch. On a
// narrow panel every operand is read through a zero-padded staging tile, so reads stay in
// bounds.
// The stack buffers PanelLoops uses for `spec` (declare them once per parallel body).
std::vector<codegen::Stmt> PanelBuffers(const PanelSpec& spec, const Epilogue& ep);
// The loops for a panel of `cols` columns (cols == nr, or the narrow last panel n % nr).
std::vector<codegen::Stmt> PanelLoops(const PanelSpec& spec, const Epilogue& ep, int64_t cols);

// The K block sizes the matrix templates offer for a reduction of `k`: powers of two from 64 to
// 512 below k, the two largest divisors of k in [96, 1024) that are not among them, and k itself
// (ascending). A K block need not divide k: the last one is shorter.
std::vector<int64_t> KBlockChoices(int64_t k);
// The largest of `choices` whose panel slice (tile_k x nr floats) fits `budget_bytes`, preferring
// one that divides k among those at least half as large; the smallest choice when none fits.
int64_t DefaultKBlock(const std::vector<int64_t>& choices, int64_t k, int64_t nr,
                      int64_t budget_bytes);
// File-scope helper a kernel needs for PanelLoops with a transposed B (Kernel::globals):
// loom_transpose8, an 8x8 block transpose in vector shuffles.
std::vector<std::string> PanelGlobals(const PanelSpec& spec);

// A register block shape: rows of A by n_v vectors of B.
struct RegisterBlock {
  int64_t rows = 1;
  int64_t n_v = 1;
};
// Vector registers a block needs: its accumulators, n_v B vectors and one broadcast A value.
int64_t RegisterBlockRegisters(int64_t rows, int64_t n_v);
// Modelled cycles per useful FMA (1 at the peak) of an m x n output computed in rows x n_v blocks
// of `vec` lanes: a narrow last panel runs the vectors its columns need (padded to whole vectors),
// the tail rows run in a smaller block, and
// each k step of a block costs max(FMAs, loads) / 2 cycles (two FMA and two load ports) but no
// less than the 4-cycle FMA latency.
double RegisterBlockCost(int64_t m, int64_t n, int64_t vec, const RegisterBlock& block);
// The blocks among `rows` x `n_v` choices that fit `registers`, cheapest first (ties: more
// accumulators, then wider). Never empty when 1 x 1 fits.
std::vector<RegisterBlock> RankRegisterBlocks(int64_t m, int64_t n, int64_t vec, int64_t registers,
                                              const std::vector<int64_t>& rows_choices,
                                              const std::vector<int64_t>& n_v_choices);

// The knobs every matrix template has, first in its space: vec, tile_n (n_v vectors per panel, nr
// = n_v * vec columns), tile_m (rows per register block), tile_k (K block), unroll_k.
struct MatrixKnobs {
  int64_t vec = 16, n_v = 1, nr = 16, tile_m = 1, tile_k = 1, unroll_k = 1;
};

// The base of dense_pack and batch_matmul: the shared knobs and their register-file constraint,
// the panel loops' spec, the cost model's defaults, the shared cost-model features.
class MatrixTemplate : public TemplateBase {
 protected:
  // Adds the shared knobs; the template then adds its own, MaybeAddFaultKnob(), and
  // AddMatrixConstraints().
  MatrixTemplate(const graph::Workload& w, const Target& t, const TemplateOptions& o);
  void AddMatrixConstraints();

  MatrixKnobs MatrixKnobsOf(const Config& c) const;
  // N rounded up to whole panels.
  int64_t PaddedN(const MatrixKnobs& k) const { return CeilDiv(workload_.n, k.nr) * k.nr; }
  PanelSpec Spec(const MatrixKnobs& k, PanelSpec::BSource source) const;
  // The loops for panel `nb` (a variable; n0 and b_base set): the full panels', or the narrow
  // last panel's.
  std::vector<codegen::Stmt> PanelForNb(const PanelSpec& spec, const Epilogue& ep) const;
  // Register blocks of this space, cheapest first by the cost model at the target's widest
  // vectors.
  std::vector<RegisterBlock> RankedBlocks() const;
  // The config with block `b` at the widest vectors, `tile_k`, unroll_k 4, `extra` knobs (others:
  // their first value); fault 0.
  Config BlockConfig(const RegisterBlock& b, int64_t tile_k,
                     const std::vector<std::pair<std::string, int64_t>>& extra) const;
  // The shared features (knob values, then nr, accumulators, registers_used, k_blocks,
  // m_tail_rows, n_pad_ratio, panel_bytes, a_tile_bytes, log_arith_intensity,
  // model_cycles_per_fma); templates append their own.
  std::vector<std::string> MatrixFeatureNames() const;
  std::vector<float> MatrixFeatures(const Config& config) const;
};

// The share of `threads` slots that a parallel loop of `extent` even items keeps busy.
double BusyShare(int64_t extent, int32_t threads);

// The batch_matmul template (batch_matmul.cc), for MakeTemplate.
std::unique_ptr<Template> MakeBatchMatmul(const graph::Workload& w, const Target& t,
                                          const TemplateOptions& o);

}  // namespace loom::ops::internal
