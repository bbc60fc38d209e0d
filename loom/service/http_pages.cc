#include "loom/service/http_pages.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/base/chart.h"
#include "loom/base/duration_text.h"
#include "loom/tune/stage_wire.h"
#include "loom/v1/stage_names.h"
#include "nlohmann/json.hpp"

namespace loom::service {
namespace {

using base::XmlEscape;

constexpr v1::JobState kJobStates[] = {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                                       v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED,
                                       v1::JOB_STATE_CANCELLED};
constexpr v1::StageKind kStageKinds[] = {v1::STAGE_KIND_PROPOSE, v1::STAGE_KIND_BUILD,
                                         v1::STAGE_KIND_MEASURE, v1::STAGE_KIND_UPDATE,
                                         v1::STAGE_KIND_SIMULATED};

// A number for Prometheus: integers without a fraction, others with enough digits.
std::string Num(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrFormat("%.0f", v);
  return absl::StrFormat("%.9g", v);
}

void Family(std::string& out, absl::string_view name, absl::string_view type,
            absl::string_view help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

// `labels`: (name, value) pairs; values are escaped here.
void Sample(std::string& out, absl::string_view name,
            const std::vector<std::pair<std::string, std::string>>& labels, double value) {
  absl::StrAppend(&out, name);
  if (!labels.empty()) {
    absl::StrAppend(&out, "{");
    for (size_t i = 0; i < labels.size(); ++i) {
      absl::StrAppend(&out, i ? "," : "", labels[i].first, "=\"",
                      PrometheusLabelValue(labels[i].second), "\"");
    }
    absl::StrAppend(&out, "}");
  }
  absl::StrAppend(&out, " ", Num(value), "\n");
}

void HistogramSamples(std::string& out, absl::string_view name, const Histogram& h) {
  const std::string bucket = absl::StrCat(name, "_bucket");
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    Sample(out, bucket, {{"le", Num(h.bounds[i])}}, static_cast<double>(h.cumulative[i]));
  }
  Sample(out, bucket, {{"le", "+Inf"}}, static_cast<double>(h.count));
  Sample(out, absl::StrCat(name, "_sum"), {}, h.sum);
  Sample(out, absl::StrCat(name, "_count"), {}, static_cast<double>(h.count));
}

// Busy time of a resource within [lo, hi] (seconds on one axis) and its idle gaps.
struct BusyFigures {
  double busy = 0;
  double longest_idle = 0;
  int idle_gaps = 0;  // gaps of at least a second
};
BusyFigures BusyWithin(std::vector<std::pair<double, double>> spans, double lo, double hi) {
  BusyFigures f;
  std::sort(spans.begin(), spans.end());
  double cursor = lo;  // the end of the busy time so far
  auto gap = [&](double until) {
    const double g = until - cursor;
    if (g <= 0) return;
    f.longest_idle = std::max(f.longest_idle, g);
    if (g >= 1) ++f.idle_gaps;
  };
  for (auto [s, e] : spans) {
    s = std::max(s, lo);
    e = std::min(e, hi);
    if (e <= s) continue;
    if (s > cursor) gap(s);
    if (e > cursor) {
      f.busy += e - std::max(s, cursor);
      cursor = e;
    }
  }
  gap(hi);
  return f;
}

// One device's (or one agent's CPU slots') lane of the devices page.
struct Lane {
  std::string agent;
  std::string hostname;
  std::string device;  // empty: the agent's CPU slots
  std::vector<const StageSpan*> spans;
  std::string Label() const {
    return absl::StrCat(hostname, " ", device.empty() ? std::string("cpu slots") : device);
  }
};

// Lanes in agent order: its CPU slots, then each device; spans assigned to theirs.
std::vector<Lane> Lanes(const DriverView& view) {
  std::vector<Lane> lanes;
  std::map<std::pair<std::string, std::string>, size_t> index;
  for (const AgentView& a : view.agents) {
    index[{a.id, ""}] = lanes.size();
    lanes.push_back({a.id, a.hostname, "", {}});
    for (const std::string& d : a.devices) {
      index[{a.id, d}] = lanes.size();
      lanes.push_back({a.id, a.hostname, d, {}});
    }
  }
  ForEachStage(view, [&](const StageSpan& s) {
    auto it = index.find({s.agent_id, s.device});
    if (it != index.end()) lanes[it->second].spans.push_back(&s);
  });
  return lanes;
}

// Bars narrower than this many pixels are drawn merged with their narrow neighbours: at the
// 1,000-job load a lane ends a 20 ms stage every few tens of ms, and 20,000 bars of a tenth of a
// pixel each would cost the daemon more to draw (and the browser to show) than they tell.
constexpr double kMinBarPixels = 2;

// The Gantt items of one lane: each stage at least kMinBarPixels wide as its own bar, runs of
// narrower stages that follow each other within that width as one bar ("12 short stages of 5
// jobs", data-stages="12"),
// coloured by the job and filled by the kind that hold most of its time. Each item's first
// attribute is its job (data-job); its series is set by the caller once every lane is drawn.
void LaneItems(const Lane& lane, int lane_index, absl::Time origin, double seconds_per_pixel,
               base::GanttChart& g) {
  auto at = [&](absl::Time t) { return std::max(0.0, absl::ToDoubleSeconds(t - origin)); };
  auto style_of = [](v1::StageKind kind) {
    int style = 0;
    for (size_t k = 0; k < std::size(kStageKinds); ++k) {
      if (kStageKinds[k] == kind) style = static_cast<int>(k);
    }
    return style;
  };
  auto single = [&](const StageSpan& s) {
    const std::string kind = tune::WireKindName(s.kind);
    g.items.push_back({.style = style_of(s.kind),
                       .tooltip = absl::StrFormat(
                           "%s task %d %s on %s: %.2f s%s", s.job_id, s.task, kind, lane.Label(),
                           absl::ToDoubleSeconds(s.end - s.start), s.running ? " (running)" : ""),
                       .segments = {{lane_index, at(s.start), at(s.end)}},
                       .attributes = {{"data-job", s.job_id}, {"data-kind", kind}}});
  };
  // Wide stages are drawn one by one; narrow ones (in start order) in runs.
  const double min_width = kMinBarPixels * seconds_per_pixel;
  std::vector<const StageSpan*> spans;
  for (const StageSpan* s : lane.spans) {
    if (s->end < origin) continue;
    if (at(s->end) - at(s->start) < min_width) {
      spans.push_back(s);
    } else {
      single(*s);
    }
  }
  std::stable_sort(spans.begin(), spans.end(),
                   [](const StageSpan* a, const StageSpan* b) { return a->start < b->start; });
  for (size_t i = 0; i < spans.size();) {
    const double start = at(spans[i]->start);
    double end = at(spans[i]->end);
    size_t j = i + 1;
    while (j < spans.size() && at(spans[j]->start) <= end + min_width) {
      end = std::max(end, at(spans[j]->end));
      ++j;
    }
    if (j == i + 1) {
      single(*spans[i]);
      i = j;
      continue;
    }
    std::map<std::string, double> job_time;
    std::map<v1::StageKind, double> kind_time;
    for (size_t k = i; k < j; ++k) {
      const double d = absl::ToDoubleSeconds(spans[k]->end - spans[k]->start);
      job_time[spans[k]->job_id] += d;
      kind_time[spans[k]->kind] += d;
    }
    auto most = [](const auto& m) {
      return std::max_element(m.begin(), m.end(),
                              [](const auto& a, const auto& b) { return a.second < b.second; })
          ->first;
    };
    const std::string job = most(job_time);
    const v1::StageKind main_kind = most(kind_time);
    std::string kinds;
    for (const auto& [k, d] : kind_time) {
      absl::StrAppend(&kinds, kinds.empty() ? "" : ", ", tune::WireKindName(k), " ",
                      absl::StrFormat("%.2f s", d));
    }
    g.items.push_back(
        {.style = style_of(main_kind),
         .tooltip = absl::StrFormat("%d short stages of %d jobs on %s in %.2f s (%s); most: %s",
                                    j - i, job_time.size(), lane.Label(), end - start, kinds, job),
         .segments = {{lane_index, start, end}},
         .attributes = {{"data-job", job},
                        {"data-kind", kind_time.size() == 1 ? tune::WireKindName(main_kind)
                                                            : std::string("mixed")},
                        {"data-stages", absl::StrCat(j - i)}}});
    i = j;
  }
}

std::string ProgressBar(double fraction) {
  return absl::StrFormat(
      "<div class=\"pbar\" title=\"%.0f%%\"><div class=\"pfill\" "
      "style=\"width:%.1f%%\"></div></div>",
      fraction * 100, std::clamp(fraction, 0.0, 1.0) * 100);
}

// The best latency so far (job_progress.h: unknown until every tuned task has a success) against
// the job's latency goal.
std::string LatencyCell(const v1::Job& job, double goal_ms) {
  std::string text = job.has_best_latency_ms() ? absl::StrFormat("%.3f ms", job.best_latency_ms())
                                               : std::string("&ndash;");
  if (goal_ms > 0) {
    const bool met = job.has_best_latency_ms() && job.best_latency_ms() <= goal_ms;
    absl::StrAppend(&text, absl::StrFormat(" / goal %.3f ms <span class=\"%s\">%s</span>", goal_ms,
                                           met ? "ok" : "pending", met ? "met" : "not yet"));
  }
  return text;
}

// Trials done of the job's total (job_progress.h), as a bar and "done/total".
std::string ProgressCell(const v1::Job& job, absl::string_view unit) {
  const double fraction = job.trials_total() > 0 ? static_cast<double>(job.trials_done()) /
                                                       static_cast<double>(job.trials_total())
                                                 : 0;
  return absl::StrCat(ProgressBar(fraction), " <span class=\"progress\">", job.trials_done(), "/",
                      job.trials_total(), unit, "</span>");
}

std::string EtaText(const v1::Job& job) {
  return job.has_eta_seconds() ? base::DurationText(job.eta_seconds()) : std::string("&ndash;");
}

std::string StateBadge(v1::JobState state) {
  const char* name = v1::JobStateShortName(state);
  return absl::StrCat("<span class=\"state ", name, "\">", name, "</span>");
}

}  // namespace

std::string PrometheusLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MetricsText(const DriverView& view) {
  std::string out;
  Family(out, "loom_up", "gauge", "1 while the daemon serves and its scheduler loop runs.");
  Sample(out, "loom_up", {}, view.running ? 1 : 0);

  Family(out, "loom_jobs", "gauge", "Jobs held by the daemon, by state.");
  for (v1::JobState s : kJobStates) {
    auto n = view.jobs_by_state.find(s);
    Sample(out, "loom_jobs", {{"state", v1::JobStateShortName(s)}},
           n == view.jobs_by_state.end() ? 0 : static_cast<double>(n->second));
  }

  Family(out, "loom_stages", "gauge", "Stages queued for resources or running now, by kind.");
  std::map<std::string, int64_t> running;
  for (const StageSpan& s : view.stages) {  // running stages are never in the shared chunks
    if (s.running) ++running[tune::WireKindName(s.kind)];
  }
  for (v1::StageKind k : kStageKinds) {
    const std::string kind = tune::WireKindName(k);
    auto q = view.queued_by_kind.find(kind);
    Sample(out, "loom_stages", {{"kind", kind}, {"state", "queued"}},
           q == view.queued_by_kind.end() ? 0 : static_cast<double>(q->second));
    Sample(out, "loom_stages", {{"kind", kind}, {"state", "running"}},
           static_cast<double>(running[kind]));
  }

  Family(out, "loom_stages_ended_total", "counter",
         "Stages that ended since the daemon started, by kind and how (reported by the agent, or "
         "revoked: cancelled, expired or requeued).");
  for (const auto& [key, n] : view.stages_ended) {
    Sample(out, "loom_stages_ended_total", {{"kind", key.first}, {"outcome", key.second}},
           static_cast<double>(n));
  }

  Family(out, "loom_scheduler_queued_stages", "gauge",
         "Ready stages waiting for resources, by the scheduler's resource class: CPU slots, "
         "device kind (target key; empty: CPU only) and named device (empty: any of the kind).");
  for (const v1::QueueStats& q : view.stats.queues()) {
    Sample(out, "loom_scheduler_queued_stages",
           {{"cpu_slots", absl::StrCat(q.cpu_slots())},
            {"device_kind", q.device_kind()},
            {"device", q.device()}},
           static_cast<double>(q.ready()));
  }
  Family(out, "loom_scheduler_grants_total", "counter", "Stages granted by the scheduler.");
  Sample(out, "loom_scheduler_grants_total", {}, static_cast<double>(view.stats.grants()));
  Family(out, "loom_stages_dispatched_total", "counter", "Granted stages delivered to agents.");
  Sample(out, "loom_stages_dispatched_total", {},
         static_cast<double>(view.stats.stages_dispatched()));
  Family(out, "loom_stages_requeued_total", "counter",
         "Stages requeued after a failure or a lost agent.");
  Sample(out, "loom_stages_requeued_total", {}, static_cast<double>(view.stats.stages_requeued()));
  Family(out, "loom_reports_refused_total", "counter",
         "Agent reports refused as forged or from a flagged agent.");
  Sample(out, "loom_reports_refused_total", {}, static_cast<double>(view.stats.reports_refused()));

  Family(out, "loom_queue_wait_seconds", "histogram",
         "Time from a stage being ready to its grant (queued for resources).");
  HistogramSamples(out, "loom_queue_wait_seconds", view.queue_wait_seconds);
  Family(out, "loom_dispatch_seconds", "histogram",
         "Time from a grant to the agent receiving the stage.");
  HistogramSamples(out, "loom_dispatch_seconds", view.dispatch_seconds);

  Family(out, "loom_agents", "gauge",
         "Registered agents by state (flagged agents are also alive "
         "or lost).");
  Sample(out, "loom_agents", {{"state", "alive"}}, view.stats.agents_alive());
  Sample(out, "loom_agents", {{"state", "lost"}}, view.stats.agents_lost());
  Sample(out, "loom_agents", {{"state", "flagged"}}, view.stats.agents_flagged());
  Family(out, "loom_agent_seconds_since_heartbeat", "gauge",
         "Seconds since the agent was last heard from (heartbeat, report or poll).");
  for (const AgentView& a : view.agents) {
    Sample(out, "loom_agent_seconds_since_heartbeat", {{"agent", a.id}, {"hostname", a.hostname}},
           std::max(0.0, absl::ToDoubleSeconds(view.now - a.last_seen)));
  }
  Family(out, "loom_agent_cpu_slots", "gauge", "CPU slots of the agent (general plus lent).");
  for (const AgentView& a : view.agents) {
    Sample(out, "loom_agent_cpu_slots", {{"agent", a.id}}, a.cpu_slots);
  }
  Family(out, "loom_agent_cpu_slots_used", "gauge", "CPU slots held by running stages.");
  for (const AgentView& a : view.agents) {
    Sample(out, "loom_agent_cpu_slots_used", {{"agent", a.id}}, a.cpu_slots_used);
  }

  Family(out, "loom_build_cache_hits_total", "counter",
         "Kernels the agent found in its build cache since it started (its heartbeat's count).");
  for (const AgentView& a : view.agents) {
    Sample(out, "loom_build_cache_hits_total", {{"agent", a.id}},
           static_cast<double>(a.build_cache_hits));
  }
  Family(out, "loom_build_cache_misses_total", "counter",
         "Kernels the agent compiled (not found in its build cache) since it started.");
  for (const AgentView& a : view.agents) {
    Sample(out, "loom_build_cache_misses_total", {{"agent", a.id}},
           static_cast<double>(a.build_cache_misses));
  }

  // The scheduler's device figures (Scheduler::Usage, as GetStats reports them).
  std::string busy_seconds, util;
  Family(out, "loom_device_busy", "gauge", "1 while a stage holds the device.");
  Family(busy_seconds, "loom_device_busy_seconds_total", "counter",
         "Time the device was leased since its agent registered (shared leases counted once).");
  Family(util, "loom_device_utilization", "gauge",
         "Busy fraction of the device since its agent registered.");
  for (const v1::DeviceStats& d : view.stats.devices()) {
    const std::vector<std::pair<std::string, std::string>> labels = {{"agent", d.agent_id()},
                                                                     {"device", d.name()}};
    Sample(out, "loom_device_busy", labels, d.leases() > 0 ? 1 : 0);
    Sample(busy_seconds, "loom_device_busy_seconds_total", labels, d.busy_seconds());
    Sample(util, "loom_device_utilization", labels, d.utilization());
  }
  absl::StrAppend(&out, busy_seconds, util);

  Family(out, "loom_records_written_total", "counter",
         "Tuning records stored for the jobs the daemon holds.");
  Sample(out, "loom_records_written_total", {}, static_cast<double>(view.records_written));
  Family(
      out, "loom_measurement_errors_total", "counter",
      "Trials that failed (compile, run, timeout or wrong answer) in the jobs the daemon holds.");
  Sample(out, "loom_measurement_errors_total", {}, static_cast<double>(view.measurement_errors));
  Family(out, "loom_measurement_errors_by_kind_total", "counter",
         "Failed trials stored since the daemon started, by the record's error kind.");
  // Every kind, 0 included, so that rate() sees a kind's first error.
  for (int k = static_cast<int>(tune::ErrorKind::kInstantiation);
       k <= static_cast<int>(tune::ErrorKind::kUnknown); ++k) {
    const std::string kind = tune::ErrorKindName(static_cast<tune::ErrorKind>(k));
    auto n = view.measurement_errors_by_kind.find(kind);
    Sample(out, "loom_measurement_errors_by_kind_total", {{"kind", kind}},
           n == view.measurement_errors_by_kind.end() ? 0 : static_cast<double>(n->second));
  }
  return out;
}

absl::string_view AppStyle() {
  return R"css(*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;background:#fafafa}
header{display:flex;flex-wrap:wrap;align-items:center;gap:12px;padding:8px 16px;background:#263238;color:#fff}
header a{color:#cfd8dc;text-decoration:none;padding:4px 8px;border-radius:4px}
header a.active{background:#455a64;color:#fff}
header .who{margin-left:auto;font-size:12px;color:#b0bec5}
main{padding:12px 16px;max-width:1200px;margin:auto}
h1{font-size:20px;margin:8px 0}h2{font-size:16px;margin:16px 0 6px}
table{border-collapse:collapse;width:100%;background:#fff;margin-bottom:12px}
th,td{padding:6px 8px;border-bottom:1px solid #e0e0e0;text-align:left;vertical-align:top}
th{background:#eceff1;font-weight:600}
.scroll{overflow-x:auto}
.pbar{width:120px;height:10px;background:#e0e0e0;border-radius:5px;overflow:hidden;display:inline-block}
.pbar .pfill{height:100%;background:#43a047}
.state{padding:1px 6px;border-radius:8px;font-size:12px;background:#eceff1}
.state.running{background:#bbdefb}.state.succeeded{background:#c8e6c9}
.state.failed{background:#ffcdd2}.state.cancelled{background:#ffe0b2}
.ok{color:#2e7d32}.pending{color:#ef6c00}.muted{color:#777}
.chart svg{max-width:100%;height:auto;background:#fff}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.error{color:#c62828}
form.login{max-width:360px;margin:40px auto;background:#fff;padding:20px;border:1px solid #ddd}
form.login input{width:100%;padding:8px;margin:8px 0}
@media (max-width:640px){main{padding:8px}th,td{padding:4px}.wide{display:none}.pbar{width:60px}}
)css";
}

absl::string_view AppScript() {
  return R"js((function () {
  var main = document.getElementById('main');
  var src = main && main.getAttribute('data-src');
  if (!src) return;
  var stamp = document.getElementById('updated');
  var etag = null;  // of the fragment shown: an unchanged one comes back as 304, no body
  function shown() {
    if (stamp) stamp.textContent = 'updated ' + new Date().toLocaleTimeString();
  }
  function tick() {
    var headers = etag ? {'If-None-Match': etag} : {};
    fetch(src, {credentials: 'same-origin', cache: 'no-store', headers: headers}).then(function (r) {
      if (r.status === 401) { window.location.href = '/login'; return null; }
      if (r.status === 304) { shown(); return null; }
      if (!r.ok) return null;
      var tag = r.headers.get('ETag');
      return r.json().then(function (j) { return {tag: tag, j: j}; });
    }).then(function (got) {
      if (got && got.j && typeof got.j.html === 'string') {
        main.innerHTML = got.j.html;
        etag = got.tag;
        shown();
      }
    }).catch(function () {}).then(function () { setTimeout(tick, 3000); });
  }
  setTimeout(tick, 3000);
})();
)js";
}

std::string PageHtml(const PageShell& page) {
  std::string nav;
  for (const auto& [name, href] : std::vector<std::pair<std::string, std::string>>{
           {"jobs", "/"}, {"devices", "/devices"}, {"scheduler", "/scheduler"}}) {
    absl::StrAppend(&nav, "<a href=\"", href, "\"", page.active == name ? " class=\"active\"" : "",
                    ">", name, "</a>");
  }
  return absl::StrCat(
      "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<title>Loom &middot; ",
      XmlEscape(page.title),
      "</title><link rel=\"stylesheet\" href=\"/assets/app.css\"></head>\n<body><header>"
      "<b>Loom</b><nav>",
      nav, "</nav><span class=\"who\">",
      page.user.empty() ? "" : absl::StrCat("signed in as ", XmlEscape(page.user), " &middot; "),
      "<span id=\"updated\"></span></span></header>\n<main id=\"main\"",
      page.fragment_url.empty() ? ""
                                : absl::StrCat(" data-src=\"", XmlEscape(page.fragment_url), "\""),
      ">", page.fragment, "</main>\n<script src=\"/assets/app.js\"></script></body></html>\n");
}

std::string LoginPageHtml(absl::string_view error) {
  std::string form = absl::StrCat(
      "<form class=\"login\" method=\"post\" action=\"/login\"><h1>Sign in</h1>",
      error.empty() ? ""
                    : absl::StrCat("<p class=\"error\">", XmlEscape(std::string(error)), "</p>"),
      "<label for=\"token\">Token (from the daemon's tokens file)</label>"
      "<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" "
      "required autofocus><button type=\"submit\">Sign in</button></form>");
  return PageHtml({.title = "sign in", .fragment = std::move(form)});
}

std::string JobsFragment(const DriverView& view) {
  std::string rows;
  for (auto it = view.jobs.rbegin(); it != view.jobs.rend(); ++it) {
    const v1::Job& j = *it;
    auto goal = view.latency_goal_ms.find(j.id());
    std::string stage;
    for (const v1::TaskProgress& t : j.tasks()) {
      if (t.stage() != "done" && !t.stage().empty()) {
        stage = t.stage();
        break;
      }
    }
    if (!j.failure_reason().empty()) stage = j.failure_reason();
    absl::StrAppend(&rows, "<tr class=\"job\" data-job=\"", XmlEscape(j.id()),
                    "\" data-trials-done=\"", j.trials_done(), "\" data-trials=\"",
                    j.trials_total(), "\"><td><a href=\"/job/", XmlEscape(j.id()), "\">",
                    XmlEscape(j.id()), "</a></td><td class=\"name\">", XmlEscape(j.name()),
                    "</td><td>", XmlEscape(j.owner()), "</td><td>", StateBadge(j.state()),
                    "</td><td>", ProgressCell(j, ""), "</td><td>", EtaText(j), "</td><td>",
                    LatencyCell(j, goal == view.latency_goal_ms.end() ? 0 : goal->second),
                    "</td><td class=\"wide muted\">", XmlEscape(stage), "</td></tr>\n");
  }
  if (rows.empty()) rows = "<tr><td colspan=\"8\" class=\"muted\">no jobs yet</td></tr>";
  if (view.jobs_not_shown > 0) {
    absl::StrAppend(&rows, "<tr><td colspan=\"8\" class=\"muted\" id=\"not-shown\">",
                    view.jobs_not_shown,
                    " older jobs not shown (<code>loom jobs</code> lists them)"
                    "</td></tr>");
  }
  return absl::StrCat(
      "<h1>Jobs</h1><div class=\"scroll\"><table id=\"jobs\"><thead><tr><th>id</th><th>name</th>"
      "<th>owner</th><th>state</th><th>progress (trials)</th><th>ETA</th>"
      "<th>best latency so far</th><th class=\"wide\">now</th></tr></thead><tbody>",
      rows, "</tbody></table></div>");
}

std::string JobFragment(const JobDetail& d) {
  const v1::Job& j = d.job;
  std::string out =
      absl::StrCat("<h1>Job ", XmlEscape(j.id()), ": <span class=\"name\">", XmlEscape(j.name()),
                   "</span></h1><div class=\"summary\">", StateBadge(j.state()), " owner ",
                   XmlEscape(j.owner()), " &middot; target ", XmlEscape(j.target()), " &middot; ",
                   ProgressCell(j, " trials"), " &middot; ETA ", EtaText(j),
                   " &middot; best latency ", LatencyCell(j, d.latency_goal_ms), "</div>");
  if (!j.failure_reason().empty()) {
    absl::StrAppend(&out, "<p class=\"error\">", XmlEscape(j.failure_reason()), "</p>");
  }

  // Tuning curves: per task, the best GFLOPS so far after each trial, against the trial number
  // and against the time since the job started; failed trials as crosses.
  std::map<std::string, int> task_index;
  for (int i = 0; i < j.tasks_size(); ++i) task_index.emplace(j.tasks(i).task_key(), i);
  double origin =
      j.started_unix_micros() > 0 ? static_cast<double>(j.started_unix_micros()) / 1e6 : 0;
  if (origin == 0 && !d.records.empty()) {
    origin = absl::ToDoubleSeconds(d.records.front().timestamp - absl::UnixEpoch());
  }
  const int n = j.tasks_size();
  std::vector<base::LineSeries> by_trial(n), by_time(n);
  std::vector<int> trials(n, 0);
  std::vector<double> best(n, 0);
  int errors = 0;
  for (const tune::Record& r : d.records) {
    auto t = task_index.find(r.task_key);
    if (t == task_index.end()) continue;
    const int i = t->second;
    const double x_trial = ++trials[i];
    const double x_time =
        std::max(0.0, absl::ToDoubleSeconds(r.timestamp - absl::UnixEpoch()) - origin);
    if (r.ok()) {
      best[i] = std::max(best[i], r.Gflops());
      by_trial[i].points.push_back({x_trial, best[i]});
      by_time[i].points.push_back({x_time, best[i]});
    } else {
      ++errors;
      by_trial[i].markers.push_back({x_trial, best[i]});
      by_time[i].markers.push_back({x_time, best[i]});
    }
  }
  base::LineChart trial_chart{.title = "Best GFLOPS against trials",
                              .subtitle = "each task's best so far; x: a failed trial",
                              .x_label = "trials",
                              .y_label = "GFLOPS",
                              .width = 560,
                              .height = 320};
  base::LineChart time_chart{.title = "Best GFLOPS against time",
                             .subtitle = "seconds since the job started",
                             .x_label = "time (s)",
                             .y_label = "GFLOPS",
                             .width = 560,
                             .height = 320};
  for (int i = 0; i < n; ++i) {
    if (by_trial[i].points.empty() && by_trial[i].markers.empty()) continue;
    for (auto* s : {&by_trial[i], &by_time[i]}) {
      s->name = absl::StrCat("task ", i);
      s->color = base::SeriesColor(i, n);
      s->dots = true;
    }
    trial_chart.series.push_back(std::move(by_trial[i]));
    time_chart.series.push_back(std::move(by_time[i]));
  }
  absl::StrAppend(&out, "<h2>Tuning curves</h2>");
  if (d.records.empty()) {
    absl::StrAppend(&out, "<p class=\"muted\">no trials measured yet</p>");
  } else {
    absl::StrAppend(&out, "<div class=\"charts\" data-records=\"", d.records.size(),
                    "\" data-errors=\"", errors, "\"><div class=\"chart\" id=\"curve-trials\">",
                    base::LineChartSvg(trial_chart),
                    "</div><div class=\"chart\" id=\"curve-time\">", base::LineChartSvg(time_chart),
                    "</div></div>");
  }

  absl::StrAppend(&out,
                  "<h2>Tasks</h2><div class=\"scroll\"><table id=\"tasks\"><thead><tr><th>task</th>"
                  "<th>trials</th><th>best GFLOPS</th><th>errors</th><th>now</th>"
                  "<th class=\"wide\">workload</th></tr></thead><tbody>");
  for (int i = 0; i < n; ++i) {
    const v1::TaskProgress& t = j.tasks(i);
    absl::StrAppend(&out, "<tr><td>task ", i, "</td><td>", t.trials_done(), "/", t.trials(),
                    "</td><td>", absl::StrFormat("%.2f", t.best_gflops()), "</td><td>", t.errors(),
                    "</td><td>", XmlEscape(t.stage()), "</td><td class=\"wide muted\">",
                    XmlEscape(t.task_key()), "</td></tr>");
  }
  absl::StrAppend(&out, "</tbody></table></div>");

  absl::StrAppend(&out,
                  "<h2>Stage timings</h2><div class=\"scroll\"><table id=\"stages\"><thead><tr>"
                  "<th>kind</th><th>stages</th><th>total (s)</th><th>mean (s)</th></tr></thead>"
                  "<tbody>");
  for (const auto& [kind, seconds] : d.stage_seconds) {
    const int64_t count = d.stage_count.at(kind);
    absl::StrAppend(&out, "<tr><td>", XmlEscape(kind), "</td><td>", count, "</td><td>",
                    absl::StrFormat("%.2f", seconds), "</td><td>",
                    absl::StrFormat("%.3f", count > 0 ? seconds / count : 0), "</td></tr>");
  }
  absl::StrAppend(
      &out, absl::StrFormat("</tbody></table></div><p class=\"muted\">CPU time %.1f s, device time "
                            "%.1f s, %d records (stages this daemon ran since it started)</p>",
                            j.cpu_seconds(), j.device_seconds(), j.records()));
  return out;
}

size_t FragmentJsonPiece(absl::string_view fragment, size_t from, std::string* out, size_t block) {
  auto continuation = [&](size_t i) {
    return (static_cast<unsigned char>(fragment[i]) & 0xC0) == 0x80;
  };
  size_t end = std::min(fragment.size(), from + std::max<size_t>(block, 1));
  while (end > from && end < fragment.size() && continuation(end)) --end;
  if (end == from && from < fragment.size()) {  // a block shorter than the sequence at `from`
    for (end = from + 1; end < fragment.size() && continuation(end);) ++end;
  }
  if (from == 0) out->append("{\"html\":\"");
  const std::string quoted = nlohmann::json(std::string(fragment.substr(from, end - from)))
                                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  out->append(quoted, 1, quoted.size() - 2);  // without its quotes
  if (end == fragment.size()) out->append("\"}");
  return end;
}

size_t FragmentJsonSize(absl::string_view fragment) {
  size_t size = 0;
  std::string piece;
  size_t from = 0;
  do {
    piece.clear();
    from = FragmentJsonPiece(fragment, from, &piece);
    size += piece.size();
  } while (from < fragment.size());
  return size;
}

std::string DevicesFragment(const DriverView& view, const DevicesOptions& options) {
  const absl::Time origin_time = view.now - options.window;
  auto At = [&](absl::Time t) { return std::max(0.0, absl::ToDoubleSeconds(t - origin_time)); };
  const double axis_end = absl::ToDoubleSeconds(options.window);
  std::vector<Lane> lanes = Lanes(view);

  base::GanttChart g{
      .title = "Stages on agents' devices and CPU slots",
      .subtitle = absl::StrFormat("the last %s, until %s UTC; running stages end now",
                                  base::DurationText(absl::ToDoubleSeconds(options.window)),
                                  absl::FormatTime("%H:%M:%S", view.now, absl::UTCTimeZone())),
      .axis_end = axis_end,
      .axis_label = "time (s, 0 = window start)",
      .width = 1100};
  for (v1::StageKind k : kStageKinds) {
    g.styles.push_back({.name = tune::WireKindName(k),
                        .letter = tune::WireKindName(k)[0],
                        .fill = k == v1::STAGE_KIND_MEASURE ? base::BarFill::kSolid
                                : k == v1::STAGE_KIND_BUILD ? base::BarFill::kHatched
                                                            : base::BarFill::kFaded});
  }
  std::string rows;
  for (size_t li = 0; li < lanes.size(); ++li) {
    const Lane& lane = lanes[li];
    g.lanes.push_back(lane.Label());
    std::vector<std::pair<double, double>> spans;
    bool busy = false;
    for (const StageSpan* s : lane.spans) {
      busy |= s->running;
      if (s->end < origin_time) continue;
      spans.push_back({At(s->start), At(s->end)});
    }
    LaneItems(lane, static_cast<int>(li), origin_time, axis_end / g.width, g);
    const BusyFigures f = BusyWithin(spans, 0, axis_end);
    // A device's utilization since its agent registered: the scheduler's (GetStats).
    std::string since = "&ndash;";
    for (const v1::DeviceStats& d : view.stats.devices()) {
      if (!lane.device.empty() && d.agent_id() == lane.agent && d.name() == lane.device) {
        since = absl::StrFormat("%.0f%%", 100 * d.utilization());
      }
    }
    const AgentView* agent = nullptr;
    for (const AgentView& a : view.agents) {
      if (a.id == lane.agent) agent = &a;
    }
    absl::StrAppend(
        &rows, "<tr><td>", XmlEscape(lane.hostname), " <span class=\"muted\">",
        XmlEscape(lane.agent), "</span></td><td>",
        lane.device.empty() ? std::string("cpu slots") : XmlEscape(lane.device), "</td><td>",
        agent == nullptr ? "?"
        : agent->flagged ? "flagged"
        : agent->alive   ? "alive"
                         : "lost",
        "</td><td>",
        lane.device.empty() && agent != nullptr
            ? absl::StrCat(agent->cpu_slots_used, "/", agent->cpu_slots, " slots")
            : std::string(busy ? "busy" : "idle"),
        "</td><td>", absl::StrFormat("%.0f%%", 100 * f.busy / axis_end), "</td><td class=\"wide\">",
        since, "</td><td>", absl::StrFormat("%.1f s", f.longest_idle), " (", f.idle_gaps,
        " gaps &ge; 1 s)</td><td>",
        agent == nullptr
            ? "?"
            : absl::StrFormat("%.1f s ago",
                              std::max(0.0, absl::ToDoubleSeconds(view.now - agent->last_seen))),
        "</td></tr>\n");
  }
  // The legend: the jobs of the drawn bars (a merged bar's main job), by id.
  std::map<std::string, int> series;
  for (const base::GanttItem& item : g.items) series.emplace(item.attributes[0].second, 0);
  for (auto& [id, i] : series) {
    i = static_cast<int>(g.series.size());
    g.series.push_back(id);
  }
  for (base::GanttItem& item : g.items) item.series = series[item.attributes[0].second];
  // The page is built around the chart, its largest part (a megabyte at 300 jobs on 20 agents), in
  // its own string rather than copied into a second one.
  std::string page =
      g.items.empty() ? "<p class=\"muted\">no stages in this window</p>" : base::GanttSvg(g);
  g = {};
  page.insert(0, "<h1>Devices and agents</h1><div class=\"chart\" id=\"gantt\">");
  absl::StrAppend(
      &page,
      "</div><div class=\"scroll\"><table id=\"devices\"><thead><tr><th>agent</th><th>resource"
      "</th><th>state</th><th>now</th><th>busy in the window</th>"
      "<th class=\"wide\">utilization since registered</th><th>longest idle gap</th>"
      "<th>last heard</th></tr></thead><tbody>",
      rows.empty() ? "<tr><td colspan=\"8\" class=\"muted\">no agents registered</td></tr>" : rows,
      "</tbody></table></div>");
  return page;
}

std::string SchedulerFragment(const DriverView& view) {
  const v1::ServerStats& s = view.stats;
  std::string classes;
  for (const v1::QueueStats& q : s.queues()) {
    absl::StrAppend(&classes, "<tr><td>", q.cpu_slots(), "</td><td>",
                    q.device_kind().empty() ? "&ndash;" : XmlEscape(q.device_kind()), "</td><td>",
                    q.device().empty() ? "any" : XmlEscape(q.device()), "</td><td class=\"depth\">",
                    q.ready(), "</td></tr>");
  }
  if (classes.empty()) {
    classes = "<tr><td colspan=\"4\" class=\"muted\">no stage submitted yet</td></tr>";
  }
  // Drawn by decades (1 ms, 10 ms, ... 10 s, then 1 min and more) so the labels stay readable on
  // a phone; the histogram itself keeps its finer buckets for /metrics.
  auto histogram_chart = [](const std::string& title, const Histogram& h) {
    base::BarChart c{.title = title, .y_label = "stages", .series = {"stages"}};
    c.value_format = "%.0f";
    int64_t below = 0;
    for (size_t i = 0; i < h.bounds.size(); ++i) {
      const double b = h.bounds[i];
      const double decade = std::pow(10.0, std::round(std::log10(b)));
      if (std::fabs(b - decade) > 1e-12 * decade && b != 60) continue;
      const int64_t in = h.cumulative[i] - below;
      below = h.cumulative[i];
      c.groups.push_back(
          {.label = absl::StrCat("\u2264", b < 1 ? absl::StrCat(b * 1e3, " ms")
                                                 : (b < 60 ? absl::StrCat(b, " s") : "1 min")),
           .values = {static_cast<double>(in)}});
    }
    c.groups.push_back({.label = "more", .values = {static_cast<double>(h.count - below)}});
    c.width = 560;
    c.height = 260;
    return base::BarChartSvg(c);
  };
  return absl::StrCat(
      "<h1>Scheduler</h1><table id=\"figures\"><tbody>"
      "<tr><th>policy</th><td id=\"policy\">",
      XmlEscape(s.policy()), "</td></tr><tr><th>grants per second (last minute)</th><td>",
      absl::StrFormat("%.2f", s.grants_per_second()), "</td></tr><tr><th>grants in all</th><td>",
      s.grants(), "</td></tr><tr><th>stages ready / running</th><td>", s.ready_stages(), " / ",
      s.running_stages(), "</td></tr><tr><th>stages dispatched / requeued</th><td>",
      s.stages_dispatched(), " / ", s.stages_requeued(),
      "</td></tr><tr><th>jobs active / all</th><td>", s.jobs_active(), " / ", s.jobs_total(),
      "</td></tr><tr><th>agents alive / lost / flagged</th><td>", s.agents_alive(), " / ",
      s.agents_lost(), " / ", s.agents_flagged(),
      "</td></tr></tbody></table><h2>Queue depth by resource class</h2><table id=\"queues\">"
      "<thead><tr><th>CPU slots</th><th>device kind</th><th>device</th><th>ready stages</th>"
      "</tr></thead><tbody>",
      classes, "</tbody></table><div class=\"charts\"><div class=\"chart\">",
      histogram_chart("Queue wait (ready to grant)", view.queue_wait_seconds),
      "</div><div class=\"chart\">",
      histogram_chart("Dispatch latency (grant to agent)", view.dispatch_seconds), "</div></div>");
}

}  // namespace loom::service
