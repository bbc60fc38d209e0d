// What the daemon's web view serves, as pure functions of a snapshot (driver_view.h): the HTML
// pages (a shell around a fragment that the embedded script refreshes from /api/fragment/...),
// the login page, and /metrics in Prometheus' text exposition format. Every string taken from the
// state (job names, owners, model names are user input) is escaped here. Called by
// http_server.cc; tested without a server in http_pages_test.cc.
#pragma once

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

// The fragments (the contents of <main>).
std::string JobsFragment(const DriverView& view);
std::string JobFragment(const JobDetail& job);
struct DevicesOptions {
  absl::Duration window = absl::Minutes(10);  // the Gantt shows this much time before `now`
};
std::string DevicesFragment(const DriverView& view, const DevicesOptions& options);
std::string SchedulerFragment(const DriverView& view);

}  // namespace loom::service
