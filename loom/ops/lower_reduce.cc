#include "loom/ops/lower_common.h"

namespace loom::ops::lower {
void RegisterReduceLowerings(LowerTable* table) {}
}  // namespace loom::ops::lower
