// The state store factory: the one place that decides SQLite or PostgreSQL by the name.
#include "loom/service/state_store.h"

#include "absl/strings/str_cat.h"
#include "loom/records/postgres.h"

namespace loom::service {

absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(const std::string& path_or_uri,
                                                           const StateStoreOptions& options) {
  if (tune::IsPostgresUri(path_or_uri)) return OpenPostgresStateStore(path_or_uri, options);
  if (options.standby) {
    return absl::InvalidArgumentError(absl::StrCat("state '", path_or_uri,
                                                   "' is an SQLite file, which one daemon holds "
                                                   "alone: a standby needs a postgresql:// state"));
  }
  return OpenSqliteStateStore(path_or_uri);
}

}  // namespace loom::service
