#include "loom/ops/lower_common.h"

namespace loom::ops::lower {
void RegisterNormLowerings(LowerTable* table) {}
}  // namespace loom::ops::lower
