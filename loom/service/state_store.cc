// The state store factory: the one place that decides SQLite or PostgreSQL by the name.
#include "loom/service/state_store.h"

#include "loom/records/postgres.h"

namespace loom::service {

absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(const std::string& path_or_uri) {
  if (tune::IsPostgresUri(path_or_uri)) return OpenPostgresStateStore(path_or_uri);
  return OpenSqliteStateStore(path_or_uri);
}

}  // namespace loom::service
