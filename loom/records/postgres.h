// A PostgreSQL connection for Loom's stores: connect by URI (errors name the URI without its
// password), run parameterized statements (never SQL built from values), read typed columns,
// wrap work in a transaction, and migrate a component's schema under an advisory lock. Used by
// the PostgreSQL record store (postgres_record_store.cc) and the service's PostgreSQL state store
// (service/postgres_state_store.cc); the factories OpenRecordStore / OpenStateStore pick them for
// `postgresql://` URIs (IsPostgresUri).
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom::tune {

// True for `postgresql://...` and `postgres://...`: everything else is an SQLite path.
bool IsPostgresUri(absl::string_view uri);

// `uri` with its password (in the user part or a `password=` parameter) replaced by "***", for
// messages and logs.
std::string RedactUri(absl::string_view uri);

// One statement parameter: text (NULL when unset) or bytes (bytea).
struct PgParam {
  std::optional<std::string> value;
  bool binary = false;
};
PgParam PgText(absl::string_view s);
PgParam PgInt(int64_t v);
PgParam PgReal(double v);  // exact (17 significant digits), Infinity and NaN included
PgParam PgBytes(absl::string_view s);
PgParam PgNull();
PgParam PgOptionalText(const std::optional<std::string>& s);

// One statement of a pipelined batch (PgConnection::ExecBatch).
struct PgStatement {
  std::string sql;
  std::vector<PgParam> params;
};

// The rows of one statement, in text format. Column accessors take (row, column) from 0.
class PgResult {
 public:
  explicit PgResult(PGresult* res) : res_(res, &PQclear) {}
  int rows() const { return PQntuples(res_.get()); }
  bool IsNull(int r, int c) const { return PQgetisnull(res_.get(), r, c) != 0; }
  std::string Text(int r, int c) const;
  const PGresult* raw() const { return res_.get(); }
  // kDataLoss when the column does not hold a number (a damaged or foreign table).
  absl::StatusOr<int64_t> Int(int r, int c) const;
  absl::StatusOr<double> Real(int r, int c) const;
  // A bytea column, unescaped.
  absl::StatusOr<std::string> Bytes(int r, int c) const;

 private:
  std::unique_ptr<PGresult, void (*)(PGresult*)> res_;
};

// One connection. Not thread-safe: its owner serializes calls (the stores hold a mutex).
class PgConnection {
 public:
  // Connects to `uri`; `what` names the store in messages ("record database", "state").
  // kUnavailable "cannot connect to PostgreSQL at '<uri without password>': <reason>".
  static absl::StatusOr<std::unique_ptr<PgConnection>> Connect(const std::string& uri,
                                                               const std::string& what);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  const std::string& redacted_uri() const { return redacted_; }

  // Runs one statement with `params` bound to $1, $2, ... Outside a transaction, a lost connection
  // is re-established (running the on_reconnect hook) and the statement run once more: callers
  // write only inside InTransaction. Errors are one line naming the store and mapped from the
  // SQLSTATE: kInvalidArgument for data the database refuses (bad encoding, a NUL byte),
  // kUnavailable for a lost connection, kAborted for a serialization failure or deadlock,
  // kFailedPrecondition for an object in use (lock_timeout),
  // kResourceExhausted for a full disk, kInternal otherwise.
  absl::StatusOr<PgResult> Exec(const std::string& sql, const std::vector<PgParam>& params = {});

  // Runs `statements` in order in one round trip (libpq's pipeline mode), for writes inside
  // InTransaction: a transaction's many small writes then cost one wait for the server instead
  // of one each. The first that fails fails the batch with Exec's error; those after it are not
  // applied (the transaction is aborted, and InTransaction rolls it back). Rows are dropped.
  absl::Status ExecBatch(const std::vector<PgStatement>& statements);

  // Runs `body` between BEGIN and COMMIT; rolls back when it (or COMMIT) fails.
  absl::Status InTransaction(const std::function<absl::Status()>& body);

  // Brings `component`'s schema to version `migrations.size()`: migrations[v] takes it from v to
  // v + 1. Versions live in the table loom_schema (component, version); concurrent openers wait
  // for each other on an advisory lock. kFailedPrecondition when the database holds a newer
  // version of the component, or holds `probe_table` without a Loom version (another
  // application's table of that name).
  absl::Status Migrate(const std::string& component, const std::vector<const char*>& migrations,
                       const std::string& probe_table);

  // Runs after the connection was lost and re-established, before the statement that found it
  // lost: what the session held (an advisory lock) must be taken again. Its error fails that
  // statement.
  void set_on_reconnect(std::function<absl::Status()> hook) { on_reconnect_ = std::move(hook); }

 private:
  PgConnection(PGconn* conn, std::string what, std::string redacted)
      : conn_(conn), what_(std::move(what)), redacted_(std::move(redacted)) {}
  absl::Status Error(const PGresult* res, const std::string& sql) const;
  // The values of `params` as PQexecParams takes them; kInvalidArgument for a text value with a
  // NUL byte. The pointers point into `params`.
  struct Bound {
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
  };
  absl::StatusOr<Bound> Bind(const std::vector<PgParam>& params) const;
  absl::Status Reconnect();

  PGconn* conn_;
  const std::string what_;
  const std::string redacted_;
  bool in_transaction_ = false;
  std::function<absl::Status()> on_reconnect_;
  bool reconnecting_ = false;  // inside on_reconnect_: no second reset
};

}  // namespace loom::tune
