// Early-return helpers for absl::Status / absl::StatusOr. Used by every module that propagates
// expected failures (bad input, compiler errors, lost devices) instead of throwing.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LOOM_CONCAT_INNER_(a, b) a##b
#define LOOM_CONCAT_(a, b) LOOM_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` yields a non-OK status.
#define LOOM_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status loom_status_ = (expr);        \
    if (!loom_status_.ok()) return loom_status_; \
  } while (false)

// `LOOM_ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define LOOM_ASSIGN_OR_RETURN(lhs, expr) \
  LOOM_ASSIGN_OR_RETURN_IMPL_(LOOM_CONCAT_(loom_statusor_, __LINE__), lhs, expr)
// `var` names a variable and `lhs` may be a declaration (`auto x`): neither can be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define LOOM_ASSIGN_OR_RETURN_IMPL_(var, lhs, expr) \
  auto var = (expr);                                \
  if (!var.ok()) return std::move(var).status();    \
  lhs = std::move(var).value()
// NOLINTEND(bugprone-macro-parentheses)
