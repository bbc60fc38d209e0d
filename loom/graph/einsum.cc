#include "loom/graph/einsum.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "loom/base/status_macros.h"

namespace loom::graph {
namespace {

// One operand's term: its letters, and where "..." stands (-1 when absent).
struct Term {
  std::vector<int> letters;
  int ellipsis_at = -1;
};

absl::StatusOr<Term> ParseTerm(absl::string_view text, absl::string_view equation) {
  Term term;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (ch == ' ') continue;
    if (ch == '.') {
      if (term.ellipsis_at >= 0 || text.substr(i, 3) != "...") {
        return absl::InvalidArgumentError(
            absl::StrCat("equation '", equation, "' has a malformed or repeated '...'"));
      }
      term.ellipsis_at = static_cast<int>(term.letters.size());
      i += 2;
      continue;
    }
    if (!std::isalpha(static_cast<unsigned char>(ch))) {
      return absl::InvalidArgumentError(absl::StrCat("equation '", equation,
                                                     "' has an invalid character '",
                                                     text.substr(i, 1), "' (labels are letters)"));
    }
    if (std::count(term.letters.begin(), term.letters.end(), ch) > 0) {
      return absl::InvalidArgumentError(absl::StrCat("equation '", equation, "' repeats label '",
                                                     text.substr(i, 1), "' within the term '", text,
                                                     "'; diagonals are not supported"));
    }
    term.letters.push_back(ch);
  }
  return term;
}

}  // namespace

absl::StatusOr<EinsumSpec> ParseEinsum(absl::string_view equation,
                                       const std::vector<Shape>& shapes) {
  const size_t arrow = equation.find("->");
  const absl::string_view lhs = equation.substr(0, arrow);
  std::vector<absl::string_view> terms = absl::StrSplit(lhs, ',');
  if (terms.size() != shapes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("equation '", equation, "' has ", terms.size(),
                                                   " operand terms but there are ", shapes.size(),
                                                   " inputs"));
  }
  EinsumSpec spec;
  spec.sizes.assign(EinsumSpec::kEllipsisLabel + 64, 0);
  int64_t ellipsis_rank = 0;
  std::vector<Term> parsed;
  for (size_t t = 0; t < terms.size(); ++t) {
    LOOM_ASSIGN_OR_RETURN(Term term, ParseTerm(terms[t], equation));
    const int64_t rank = static_cast<int64_t>(shapes[t].size());
    const int64_t named = static_cast<int64_t>(term.letters.size());
    if (term.ellipsis_at < 0 ? rank != named : rank < named) {
      return absl::InvalidArgumentError(absl::StrCat("equation '", equation, "': term '", terms[t],
                                                     "' does not fit input ", t, " of shape ",
                                                     ShapeToString(shapes[t])));
    }
    if (term.ellipsis_at >= 0) ellipsis_rank = std::max(ellipsis_rank, rank - named);
    parsed.push_back(std::move(term));
  }
  if (ellipsis_rank > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("equation '", equation, "' broadcasts over too many dims"));
  }
  // Labels of each operand's dims; sizes agree (broadcast dims of "..." may be 1).
  std::map<int, int> count;      // label -> number of operands using it
  std::set<int> broadcast_ones;  // labels that some operand has with extent 1
  for (size_t t = 0; t < parsed.size(); ++t) {
    const Term& term = parsed[t];
    std::vector<int> labels;
    const int64_t rank = static_cast<int64_t>(shapes[t].size());
    const int64_t own = term.ellipsis_at < 0 ? 0 : rank - static_cast<int64_t>(term.letters.size());
    for (size_t i = 0; i <= term.letters.size(); ++i) {
      if (static_cast<int>(i) == term.ellipsis_at) {
        for (int64_t k = 0; k < own; ++k) {
          labels.push_back(EinsumSpec::kEllipsisLabel + static_cast<int>(ellipsis_rank - own + k));
        }
      }
      if (i < term.letters.size()) labels.push_back(term.letters[i]);
    }
    for (size_t d = 0; d < labels.size(); ++d) {
      const int label = labels[d];
      const int64_t extent = shapes[t][d];
      int64_t& size = spec.sizes[static_cast<size_t>(label)];
      const bool broadcast = label >= EinsumSpec::kEllipsisLabel;
      if (count[label] == 0 || (broadcast && size == 1)) {
        if (count[label] == 0 || extent != 1) size = extent;
      } else if (size != extent && !(broadcast && extent == 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "equation '", equation, "': a label has size ", size, " in one operand and ", extent,
            " in input ", t, " of shape ", ShapeToString(shapes[t])));
      }
      ++count[label];
      if (extent == 1) broadcast_ones.insert(label);
    }
    spec.inputs.push_back(std::move(labels));
  }
  if (arrow == absl::string_view::npos) {
    // Implicit output: the broadcast dims, then the letters used once, in alphabetical order.
    for (int64_t k = 0; k < ellipsis_rank; ++k) {
      spec.output.push_back(EinsumSpec::kEllipsisLabel + static_cast<int>(k));
    }
    for (const auto& [label, n] : count) {
      if (label < EinsumSpec::kEllipsisLabel && n == 1) spec.output.push_back(label);
    }
  } else {
    LOOM_ASSIGN_OR_RETURN(Term out, ParseTerm(equation.substr(arrow + 2), equation));
    for (size_t i = 0; i <= out.letters.size(); ++i) {
      if (static_cast<int>(i) == out.ellipsis_at) {
        for (int64_t k = 0; k < ellipsis_rank; ++k) {
          spec.output.push_back(EinsumSpec::kEllipsisLabel + static_cast<int>(k));
        }
      }
      if (i >= out.letters.size()) continue;
      if (count[out.letters[i]] == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "equation '", equation, "': output label '",
            std::string(1, static_cast<char>(out.letters[i])), "' does not appear in any input"));
      }
      spec.output.push_back(out.letters[i]);
    }
  }
  // A broadcast dim that is summed away (in several operands, extent 1 in some, not in the
  // output) is not a matrix product: refused, as the kernel cannot contract it.
  for (int label : broadcast_ones) {
    if (count[label] > 1 && spec.sizes[static_cast<size_t>(label)] != 1 &&
        std::find(spec.output.begin(), spec.output.end(), label) == spec.output.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "equation '", equation, "' sums a broadcast dimension of '...' (sizes 1 and ",
          spec.sizes[static_cast<size_t>(label)], "); it is not a matrix product"));
    }
  }
  for (int label : spec.output) spec.output_shape.push_back(spec.sizes[static_cast<size_t>(label)]);
  return spec;
}

}  // namespace loom::graph
