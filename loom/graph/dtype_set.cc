#include "loom/graph/dtype_set.h"

#include <string>

namespace loom::graph {

std::string DTypeSet::ToString() const {
  std::string out;
  for (DType d : AllDTypes()) {
    if (!Contains(d)) continue;
    if (!out.empty()) out += ", ";
    out += DTypeName(d);
  }
  return out.empty() ? "none" : out;
}

}  // namespace loom::graph
