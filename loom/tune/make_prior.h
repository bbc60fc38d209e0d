// A tuning prior (loom/search/prior.h) written from a team's record database: `loom records prior`
// and the API's Records::Prior. It lives in tune/ because it reads the record store's records,
// which search/ may not include.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loom/records/record.h"
#include "loom/search/prior.h"

namespace loom::tune {

struct MakePriorOptions {
  // Configs kept per task: the best quarter of the budget by throughput, the rest drawn at random
  // from the others (so that the prior also shows what is slow, and failures). <= 0: all.
  int per_task = 400;
  uint64_t seed = 1;
};

// A prior from records of one target (any order, several tasks): per (task, template), each
// distinct config once with its best successful measurement (0 GFLOPS when it never succeeded).
// Records whose config JSON is not an object of integer knobs are skipped.
search::TuningPrior MakePrior(const std::vector<Record>& records, std::string target_class,
                              std::string source, const MakePriorOptions& options = {});

}  // namespace loom::tune
