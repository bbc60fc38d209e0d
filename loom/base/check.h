// LOOM_CHECK: internal invariants only. Never use it for user input or the environment; those
// return absl::Status (see STYLE.md, "Errors").
#pragma once

#include <cstdio>
#include <cstdlib>

#define LOOM_CHECK(cond)                                                                         \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "%s:%d: internal invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                              \
    }                                                                                            \
  } while (false)
