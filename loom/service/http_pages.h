// What the daemon's web view serves, as pure functions of a snapshot (driver_view.h): the HTML
// pages (a shell around a fragment that the embedded script refreshes from /api/fragment/...),
// the login page, and /metrics in Prometheus' text exposition format. Every string taken from the
// state (job names, owners, model names are user input) is escaped here. Called by
// http_server.cc; tested without a server in http_pages_test.cc.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "loom/service/driver_view.h"

namespace loom::service {

// A Prometheus label value: backslash, double quote and newline escaped.
std::string PrometheusLabelValue(absl::string_view value);

// /metrics: the daemon-wide figures of an admin's view (see docs/WEB.md for the list).
std::string MetricsText(const DriverView& view);

// The page shell: head, navigation, `fragment` in <main>, refreshed every few seconds from
// `fragment_url` (empty: never) by /assets/app.js. `title` is escaped; `fragment` is HTML.
struct PageShell {
  std::string title;
  std::string active;  // "jobs" | "devices" | "scheduler": the highlighted link
  std::string fragment;
  std::string fragment_url;
  std::string user;  // shown in the header; empty on the login page
};
std::string PageHtml(const PageShell& page);

// The login form (posting `token` to /login); `error` (escaped) is shown above it when not empty.
std::string LoginPageHtml(absl::string_view error);

// The embedded script and style sheet (/assets/app.js, /assets/app.css).
absl::string_view AppScript();
absl::string_view AppStyle();

// The JSON the page's script polls, {"html": FRAGMENT}, byte for byte as nlohmann::json dumps it,
// in pieces: appends to `out` the piece that encodes fragment[from, end), where end is at most
// `block` bytes further (never inside a UTF-8 sequence), with the opening `{"html":"` when from is
// 0 and the closing `"}` when end is the fragment's size; returns end. The web view streams a
// fragment's JSON from the one drawn fragment instead of keeping a second, escaped copy
// (http_server.cc). Invalid UTF-8 is replaced by U+FFFD.
inline constexpr size_t kFragmentJsonBlock = 16 << 10;
size_t FragmentJsonPiece(absl::string_view fragment, size_t from, std::string* out,
                         size_t block = kFragmentJsonBlock);
// The size of the whole JSON (every piece from 0).
size_t FragmentJsonSize(absl::string_view fragment);

// The fragments (the contents of <main>).
std::string JobsFragment(const DriverView& view);
std::string JobFragment(const JobDetail& job);
struct DevicesOptions {
  absl::Duration window = absl::Minutes(10);  // the Gantt shows this much time before `now`
};
std::string DevicesFragment(const DriverView& view, const DevicesOptions& options);
std::string SchedulerFragment(const DriverView& view);

}  // namespace loom::service
