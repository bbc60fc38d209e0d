// A throw-away PostgreSQL server for tests: a copy of an `initdb` template (made once per user
// and PostgreSQL version under /tmp) in a temporary folder, `postgres` listening
// only on a Unix socket in that folder (listen_addresses=''), as an unprivileged user when the
// tests run as root (PostgreSQL refuses root), and shut down (immediate mode, as `pg_ctl stop -m
// immediate`) with the folder removed at the end. The server dies with the process that started
// it, so a crashed test leaves none behind. Used by the record store, state store and service
// tests that run once per backend.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace loom::tune::testing {

// The stores' two implementations, for tests parameterized over them (INSTANTIATE_TEST_SUITE_P
// with ::testing::Values(StoreBackend::kSqlite, StoreBackend::kPostgres), StoreBackendName).
enum class StoreBackend { kSqlite, kPostgres };
template <typename ParamInfo>
std::string StoreBackendName(const ParamInfo& info) {
  return info.param == StoreBackend::kSqlite ? "Sqlite" : "Postgres";
}

class PostgresCluster {
 public:
  // Starts a cluster. kNotFound when the server binaries (initdb, postgres) are absent: the only
  // reason a test may skip; any other error is a failure. $LOOM_PG_BIN overrides where the
  // binaries are looked for (default: the newest /usr/lib/postgresql/*/bin).
  static absl::StatusOr<std::unique_ptr<PostgresCluster>> Start();
  ~PostgresCluster();
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  // Creates a new, empty database and returns its URI (postgresql:///NAME?host=DIR&user=loom).
  absl::StatusOr<std::string> CreateDatabase();
  // The URI of database `name`.
  std::string Uri(const std::string& name) const;
  pid_t server_pid() const { return server_pid_; }

 private:
  PostgresCluster() = default;

  std::string dir_;  // data in dir_/data, the socket in dir_
  pid_t server_pid_ = -1;
  int next_database_ = 0;
};

// The cluster shared by the tests of one binary, started by the first call and stopped when the
// process exits. Call it from the main thread: the server is bound to the starting thread's life.
// Returns the error of Start (kNotFound: skip) on every call when it could not start.
absl::StatusOr<PostgresCluster*> SharedPostgresCluster();

}  // namespace loom::tune::testing
