#include "loom/records/postgres.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "loom/base/status_macros.h"

namespace loom::tune {
namespace {

// Serializes schema migrations of every Loom component in one database ("LOOMSCHM").
constexpr int64_t kSchemaLockKey = 0x4c4f4f4d5343484d;

// libpq's messages span lines ("...failed: ...\n\tIs the server running...?"): one line, short.
std::string Flatten(absl::string_view text) {
  std::string out;
  for (char c : text) {
    const bool space = c == '\n' || c == '\r' || c == '\t' || c == ' ';
    if (space && (out.empty() || out.back() == ' ')) continue;
    out.push_back(space ? ' ' : c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() > 300) out = absl::StrCat(out.substr(0, 300), "...");
  return out;
}

absl::StatusCode CodeOf(absl::string_view sqlstate) {
  if (sqlstate.size() != 5) return absl::StatusCode::kUnavailable;  // no answer from the server
  const absl::string_view cls = sqlstate.substr(0, 2);
  if (cls == "22") return absl::StatusCode::kInvalidArgument;  // data exception
  if (cls == "08" || sqlstate.substr(0, 3) == "57P") return absl::StatusCode::kUnavailable;
  if (cls == "40") return absl::StatusCode::kAborted;  // serialization failure, deadlock
  if (cls == "53") return absl::StatusCode::kResourceExhausted;
  if (cls == "28" || sqlstate == "42501") return absl::StatusCode::kPermissionDenied;
  if (cls == "55") return absl::StatusCode::kFailedPrecondition;  // lock not available, in use
  return absl::StatusCode::kInternal;
}

void IgnoreNotice(void*, const char*) {}

}  // namespace

bool IsPostgresUri(absl::string_view uri) {
  return absl::StartsWith(uri, "postgresql://") || absl::StartsWith(uri, "postgres://");
}

std::string RedactUri(absl::string_view uri) {
  const size_t scheme = uri.find("://");
  if (scheme == absl::string_view::npos) return std::string(uri);
  const size_t start = scheme + 3;
  size_t end = uri.find_first_of("/?", start);
  if (end == absl::string_view::npos) end = uri.size();
  std::string out(uri.substr(0, start));
  const absl::string_view authority = uri.substr(start, end - start);
  const size_t at = authority.rfind('@');
  if (at != absl::string_view::npos) {
    const absl::string_view user_info = authority.substr(0, at);
    const size_t colon = user_info.find(':');
    absl::StrAppend(&out, user_info.substr(0, colon),
                    colon == absl::string_view::npos ? "" : ":***", authority.substr(at));
  } else {
    absl::StrAppend(&out, authority);
  }
  absl::string_view rest = uri.substr(end);
  const size_t q = rest.find('?');
  if (q == absl::string_view::npos) return absl::StrCat(out, rest);
  absl::StrAppend(&out, rest.substr(0, q + 1));
  std::vector<std::string> params;
  for (absl::string_view p : absl::StrSplit(rest.substr(q + 1), '&')) {
    params.push_back(absl::StartsWith(p, "password=") ? "password=***" : std::string(p));
  }
  return absl::StrCat(out, absl::StrJoin(params, "&"));
}

PgParam PgText(absl::string_view s) { return PgParam{std::string(s), false}; }
PgParam PgInt(int64_t v) { return PgParam{absl::StrCat(v), false}; }
PgParam PgReal(double v) { return PgParam{absl::StrFormat("%.17g", v), false}; }
PgParam PgBytes(absl::string_view s) { return PgParam{std::string(s), true}; }
PgParam PgNull() { return PgParam{std::nullopt, false}; }
PgParam PgOptionalText(const std::optional<std::string>& s) {
  return s.has_value() ? PgText(*s) : PgNull();
}

std::string PgResult::Text(int r, int c) const {
  return std::string(PQgetvalue(res_.get(), r, c), PQgetlength(res_.get(), r, c));
}

absl::StatusOr<int64_t> PgResult::Int(int r, int c) const {
  int64_t v = 0;
  if (!absl::SimpleAtoi(Text(r, c), &v)) {
    return absl::DataLossError(absl::StrCat("column '", PQfname(res_.get(), c), "' holds '",
                                            Flatten(Text(r, c).substr(0, 40)),
                                            "', not an integer"));
  }
  return v;
}

absl::StatusOr<double> PgResult::Real(int r, int c) const {
  double v = 0;
  if (!absl::SimpleAtod(Text(r, c), &v)) {
    return absl::DataLossError(absl::StrCat("column '", PQfname(res_.get(), c), "' holds '",
                                            Flatten(Text(r, c).substr(0, 40)), "', not a number"));
  }
  return v;
}

absl::StatusOr<std::string> PgResult::Bytes(int r, int c) const {
  size_t n = 0;
  unsigned char* p =
      PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(res_.get(), r, c)), &n);
  if (p == nullptr) {
    return absl::DataLossError(
        absl::StrCat("column '", PQfname(res_.get(), c), "' is not a readable bytea value"));
  }
  std::string out(reinterpret_cast<const char*>(p), n);
  PQfreemem(p);
  return out;
}

absl::StatusOr<std::unique_ptr<PgConnection>> PgConnection::Connect(const std::string& uri,
                                                                    const std::string& what) {
  // Later keywords override earlier ones: the URI's own connect_timeout wins over ours.
  const char* keys[] = {"connect_timeout", "dbname", "fallback_application_name", nullptr};
  const char* values[] = {"10", uri.c_str(), "loom", nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
    std::string why = conn != nullptr ? Flatten(PQerrorMessage(conn)) : "out of memory";
    PQfinish(conn);
    return absl::UnavailableError(
        absl::StrCat("cannot connect to PostgreSQL at '", RedactUri(uri), "' (", what, "): ", why));
  }
  PQsetNoticeProcessor(conn, &IgnoreNotice, nullptr);
  return std::unique_ptr<PgConnection>(new PgConnection(conn, what, RedactUri(uri)));
}

PgConnection::~PgConnection() { PQfinish(conn_); }

absl::Status PgConnection::Error(const PGresult* res, const std::string& sql) const {
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  const std::string why = Flatten(primary != nullptr ? primary : PQerrorMessage(conn_));
  return absl::Status(CodeOf(state != nullptr ? state : ""),
                      absl::StrCat(what_, " '", redacted_, "': ", why, " (running `",
                                   Flatten(sql.substr(0, 60)), sql.size() > 60 ? "...`)" : "`)"));
}

absl::Status PgConnection::Reconnect() {
  PQreset(conn_);
  if (PQstatus(conn_) != CONNECTION_OK) return Error(nullptr, "(reconnecting)");
  if (!on_reconnect_) return absl::OkStatus();
  reconnecting_ = true;
  absl::Status st = on_reconnect_();
  reconnecting_ = false;
  return st;
}

absl::StatusOr<PgConnection::Bound> PgConnection::Bind(const std::vector<PgParam>& params) const {
  Bound b;
  for (const PgParam& p : params) {
    if (p.value.has_value() && !p.binary && p.value->find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(what_, " '", redacted_,
                       "': a text value holds a NUL byte, which PostgreSQL cannot store"));
    }
    b.values.push_back(p.value.has_value() ? p.value->c_str() : nullptr);
    b.lengths.push_back(p.value.has_value() ? static_cast<int>(p.value->size()) : 0);
    b.formats.push_back(p.binary ? 1 : 0);
  }
  return b;
}

absl::StatusOr<PgResult> PgConnection::Exec(const std::string& sql,
                                            const std::vector<PgParam>& params) {
  LOOM_ASSIGN_OR_RETURN(Bound bound, Bind(params));
  std::vector<const char*>& values = bound.values;
  std::vector<int>& lengths = bound.lengths;
  std::vector<int>& formats = bound.formats;
  // Outside a transaction a statement found the connection lost runs once more on a fresh one
  // (the stores write only inside transactions, so nothing is applied twice); inside one the
  // transaction fails and the next call reconnects.
  const bool may_retry = !in_transaction_ && !reconnecting_;
  for (int attempt = 0;; ++attempt) {
    if (PQstatus(conn_) != CONNECTION_OK && may_retry) LOOM_RETURN_IF_ERROR(Reconnect());
    PGresult* res = params.empty()
                        ? PQexec(conn_, sql.c_str())
                        : PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                                       values.data(), lengths.data(), formats.data(), 0);
    PgResult result(res);
    const ExecStatusType st = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return result;
    if (attempt == 0 && may_retry && PQstatus(conn_) != CONNECTION_OK) continue;
    return Error(res, sql);
  }
}

absl::Status PgConnection::ExecBatch(const std::vector<PgStatement>& statements) {
  if (statements.size() <= 1) {
    return statements.empty() ? absl::OkStatus()
                              : Exec(statements[0].sql, statements[0].params).status();
  }
  std::vector<Bound> bound;
  for (const PgStatement& s : statements) {
    LOOM_ASSIGN_OR_RETURN(Bound b, Bind(s.params));
    bound.push_back(std::move(b));
  }
  if (PQstatus(conn_) != CONNECTION_OK || PQenterPipelineMode(conn_) != 1) {
    return Error(nullptr, statements[0].sql);
  }
  absl::Status st;
  size_t sent = 0;
  for (size_t i = 0; i < statements.size(); ++i) {
    const Bound& b = bound[i];
    if (PQsendQueryParams(conn_, statements[i].sql.c_str(), static_cast<int>(b.values.size()),
                          nullptr, b.values.data(), b.lengths.data(), b.formats.data(), 0) != 1) {
      st = Error(nullptr, statements[i].sql);
      break;
    }
    ++sent;
  }
  if (PQpipelineSync(conn_) != 1 && st.ok()) st = Error(nullptr, "(pipeline sync)");
  // Each statement sent gives its result (PGRES_PIPELINE_ABORTED after a failed one) and a null;
  // then the sync point. A lost connection ends the reading: the next call reconnects.
  for (size_t i = 0; i < sent && PQstatus(conn_) == CONNECTION_OK; ++i) {
    PgResult first(PQgetResult(conn_));
    while (PGresult* more = PQgetResult(conn_)) PQclear(more);
    const PGresult* res = first.raw();
    const ExecStatusType t = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st.ok() && t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
      st = Error(t == PGRES_PIPELINE_ABORTED ? nullptr : res, statements[i].sql);
    }
  }
  while (PQstatus(conn_) == CONNECTION_OK) {
    PgResult r(PQgetResult(conn_));
    if (r.raw() == nullptr || PQresultStatus(r.raw()) == PGRES_PIPELINE_SYNC) break;
  }
  if (PQexitPipelineMode(conn_) != 1 && st.ok()) st = Error(nullptr, "(leaving pipeline mode)");
  return st;
}

absl::Status PgConnection::InTransaction(const std::function<absl::Status()>& body) {
  LOOM_RETURN_IF_ERROR(Exec("BEGIN").status());
  in_transaction_ = true;
  absl::Status st = body();
  if (st.ok()) st = Exec("COMMIT").status();
  if (!st.ok()) Exec("ROLLBACK").IgnoreError();
  in_transaction_ = false;
  return st;
}

absl::Status PgConnection::Migrate(const std::string& component,
                                   const std::vector<const char*>& migrations,
                                   const std::string& probe_table) {
  const int64_t latest = static_cast<int64_t>(migrations.size());
  return InTransaction([&]() -> absl::Status {
    LOOM_RETURN_IF_ERROR(
        Exec("SELECT pg_advisory_xact_lock($1)", {PgInt(kSchemaLockKey)}).status());
    LOOM_RETURN_IF_ERROR(Exec("CREATE TABLE IF NOT EXISTS loom_schema (component TEXT PRIMARY KEY, "
                              "version INTEGER NOT NULL)")
                             .status());
    LOOM_ASSIGN_OR_RETURN(PgResult row, Exec("SELECT version FROM loom_schema WHERE component = $1",
                                             {PgText(component)}));
    int64_t version = 0;
    if (row.rows() > 0) {
      LOOM_ASSIGN_OR_RETURN(version, row.Int(0, 0));
    }
    if (version > latest) {
      return absl::FailedPreconditionError(
          absl::StrCat(what_, " '", redacted_, "' has ", component, " schema version ", version,
                       "; this Loom understands up to ", latest, ": upgrade Loom"));
    }
    if (version == latest) return absl::OkStatus();
    if (version == 0) {
      LOOM_ASSIGN_OR_RETURN(PgResult probe, Exec("SELECT to_regclass($1) IS NOT NULL",
                                                 {PgText(absl::StrCat("public.", probe_table))}));
      if (probe.rows() > 0 && probe.Text(0, 0) == "t") {
        return absl::FailedPreconditionError(absl::StrCat(
            what_, " '", redacted_, "' has a table '", probe_table,
            "' that Loom did not create (no Loom schema version): use another database"));
      }
    }
    for (int64_t v = version; v < latest; ++v) LOOM_RETURN_IF_ERROR(Exec(migrations[v]).status());
    LOOM_RETURN_IF_ERROR(Exec("INSERT INTO loom_schema (component, version) VALUES ($1, $2) "
                              "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                              {PgText(component), PgInt(latest)})
                             .status());
    return absl::OkStatus();
  });
}

}  // namespace loom::tune
