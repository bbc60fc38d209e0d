#include "loom/experiment/report.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/experiment/gantt.h"

namespace loom::experiment {
namespace {

const SetupResult* Find(const ExperimentResult& r, const std::string& setup) {
  for (const SetupResult& s : r.setups) {
    if (s.setup == setup) return &s;
  }
  return nullptr;
}

std::string F(double v, int digits) {
  return std::isfinite(v) ? absl::StrFormat("%.*f", digits, v) : "&ndash;";
}

std::string Pct(double v, int digits = 1) {
  return std::isfinite(v) ? absl::StrFormat("%.*f%%", digits, v * 100) : "&ndash;";
}

std::string Verdict(bool known, bool ok) {
  if (!known) return "<td class=\"na\">not measured</td>";
  return ok ? "<td class=\"ok\">met</td>" : "<td class=\"bad\">not met</td>";
}

constexpr char kStyle[] = R"(<style>
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; }
td.l, th.l { text-align: left; }
td.ok { color: #176317; font-weight: bold; } td.bad { color: #b01c1c; font-weight: bold; }
td.na { color: #777; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
figure { margin: 0 0 24px; overflow-x: auto; }
</style>
)";

}  // namespace

const SetupResult* SequentialReference(const ExperimentResult& result) {
  if (const SetupResult* d = Find(result, "dedicated")) return d;
  return Find(result, "sequential");
}

double ServiceRatio(const ServiceSetupResult& service, const SetupResult* embedded) {
  if (embedded == nullptr || embedded->makespan_s <= 0 || !service.error.empty() ||
      service.makespan_s <= 0) {
    return NAN;
  }
  for (const ServiceJobResult& j : service.jobs) {
    if (j.state != "succeeded") return NAN;
  }
  return service.makespan_s / embedded->makespan_s;
}

std::string ReportHtml(const ExperimentResult& result, const ReportContext& context) {
  const SetupResult* seq = SequentialReference(result);
  const SetupResult* dedicated = Find(result, "dedicated");
  const SetupResult* interleaved = Find(result, "interleaved");
  const SetupResult* predictive = Find(result, "predictive");
  const SetupResult* uncontrolled = Find(result, "uncontrolled");
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  absl::StrAppend(&h, "<title>", XmlEscape(context.name), ": Loom experiment</title>\n", kStyle,
                  "</head>\n<body>\n");
  absl::StrAppend(&h, "<h1>", XmlEscape(context.name), "</h1>\n<p>");
  if (!context.machine.empty()) absl::StrAppend(&h, "Machine: ", XmlEscape(context.machine), ". ");
  if (!context.command.empty()) {
    absl::StrAppend(&h, "Command: <code>", XmlEscape(context.command), "</code>.");
  }
  absl::StrAppend(&h,
                  "</p>\n<p>Setups: <b>dedicated</b> runs each job alone on the whole machine, one "
                  "after another (the sum of their times is running them in sequence; each time is "
                  "what the job takes on its own dedicated server); the others run all jobs at "
                  "once under a scheduling policy.</p>\n");

  // Goals.
  absl::StrAppend(&h,
                  "<h2>Goals</h2>\n<table>\n<tr><th class=\"l\">goal</th><th "
                  "class=\"l\">figure</th><th>verdict</th></tr>\n");
  {
    const bool known = seq != nullptr && interleaved != nullptr && seq->makespan_s > 0;
    const double ratio = known ? interleaved->makespan_s / seq->makespan_s : NAN;
    absl::StrAppend(&h,
                    "<tr><td class=\"l\">interleaved makespan &le; 0.75 &times; sequential</td>"
                    "<td class=\"l\">",
                    known ? absl::StrFormat("%.1f s / %.1f s = %.3f", interleaved->makespan_s,
                                            seq->makespan_s, ratio)
                          : "&ndash;",
                    "</td>", Verdict(known, ratio <= 0.75), "</tr>\n");
  }
  {
    const bool known = interleaved != nullptr && predictive != nullptr;
    absl::StrAppend(
        &h, "<tr><td class=\"l\">predictive makespan &le; interleaved</td><td class=\"l\">",
        known ? absl::StrFormat("%.1f s vs %.1f s", predictive->makespan_s, interleaved->makespan_s)
              : "&ndash;",
        "</td>", Verdict(known, known && predictive->makespan_s <= interleaved->makespan_s),
        "</tr>\n");
  }
  {
    const bool known = interleaved != nullptr && std::isfinite(interleaved->distortion_median);
    absl::StrAppend(&h,
                    "<tr><td class=\"l\">median measurement distortion under interleaved &le; "
                    "3%</td><td class=\"l\">interleaved ",
                    interleaved ? Pct(interleaved->distortion_median, 2) : "&ndash;",
                    ", uncontrolled ",
                    uncontrolled ? Pct(uncontrolled->distortion_median, 2) : "&ndash;", "</td>",
                    Verdict(known, known && interleaved->distortion_median <= 0.03), "</tr>\n");
  }
  {
    bool known = dedicated != nullptr && interleaved != nullptr;
    bool ok = true;
    std::string figure;
    for (size_t j = 0; known && j < interleaved->jobs.size() && j < dedicated->jobs.size(); ++j) {
      const double a = interleaved->jobs[j].final_latency_ms;
      const double b = dedicated->jobs[j].final_latency_ms;
      if (!std::isfinite(a) || !std::isfinite(b) || b <= 0) {
        known = false;
        break;
      }
      ok = ok && a <= b * 1.05;
      absl::StrAppend(&figure, figure.empty() ? "" : "; ", XmlEscape(interleaved->jobs[j].name),
                      absl::StrFormat(" %.3f ms vs %.3f ms (%+.1f%%)", a, b, (a / b - 1) * 100));
    }
    absl::StrAppend(&h,
                    "<tr><td class=\"l\">final latency tuned under interleaved within 5% of the "
                    "same job tuned alone</td><td class=\"l\">",
                    known ? figure : "&ndash;", "</td>", Verdict(known, ok), "</tr>\n");
  }
  {
    const bool known = !result.simulation.empty();
    bool ok = true;
    std::string figure;
    for (const SimulationRow& row : result.simulation) {
      ok = ok && std::fabs(row.ratio - 1) <= 0.15;
      absl::StrAppend(&figure, figure.empty() ? "" : "; ", XmlEscape(row.policy),
                      absl::StrFormat(" %.3f", row.ratio));
    }
    absl::StrAppend(&h,
                    "<tr><td class=\"l\">simulated makespan within 15% of measured, per "
                    "policy</td><td class=\"l\">",
                    known ? figure : XmlEscape(result.simulation_error), "</td>",
                    Verdict(known, ok), "</tr>\n");
  }
  if (!result.service.empty()) {
    bool known = true, ok = true;
    std::string figure;
    for (const ServiceSetupResult& s : result.service) {
      const double ratio = ServiceRatio(s, Find(result, s.setup));
      known = known && std::isfinite(ratio);
      ok = ok && std::fabs(ratio - 1) <= 0.10;
      absl::StrAppend(&figure, figure.empty() ? "" : "; ", XmlEscape(s.setup), " ", F(ratio, 3));
    }
    absl::StrAppend(&h,
                    "<tr><td class=\"l\">makespan through <code>loom serve</code> + agent within "
                    "10% of the embedded engine's, per setup</td><td class=\"l\">",
                    figure, "</td>", Verdict(known, ok), "</tr>\n");
  }
  absl::StrAppend(&h, "</table>\n");

  // Setups.
  absl::StrAppend(
      &h,
      "<h2>Setups</h2>\n<table>\n<tr><th class=\"l\">setup</th><th>makespan s</th><th>&divide; "
      "sequential</th><th>lower bound s</th><th>&divide; lower bound</th><th>device "
      "util.</th><th>CPU util.</th><th>distortion (median)</th><th>device-hours</th></tr>\n");
  for (const SetupResult& r : result.setups) {
    const double vs_seq =
        seq != nullptr && seq->makespan_s > 0 ? r.makespan_s / seq->makespan_s : NAN;
    const double vs_lb = r.lower_bound_s > 0 ? r.makespan_s / r.lower_bound_s : NAN;
    absl::StrAppend(&h, "<tr><td class=\"l\">", XmlEscape(r.setup), "</td><td>", F(r.makespan_s, 1),
                    "</td><td>", F(vs_seq, 3), "</td><td>", F(r.lower_bound_s, 1), "</td><td>",
                    F(vs_lb, 3), "</td><td>", Pct(r.device_utilization), "</td><td>",
                    Pct(r.cpu_utilization), "</td><td>", Pct(r.distortion_median, 2), "</td><td>",
                    F(r.device_hours, 4), "</td></tr>\n");
  }
  absl::StrAppend(&h,
                  "</table>\n<p>Lower bound: max(device work, CPU slot-seconds / CPU slots) of the "
                  "setup's own stages. Device-hours: dedicated gives each job its own machine (the "
                  "sum of the jobs' times), the shared setups use one machine for the "
                  "makespan.</p>\n");

  // Jobs.
  absl::StrAppend(&h,
                  "<h2>Jobs</h2>\n<table>\n<tr><th class=\"l\">setup</th><th "
                  "class=\"l\">job</th><th>tuning time s</th><th>final latency ms</th><th>vs "
                  "dedicated</th><th>sum of tuned task costs ms</th><th>distortion "
                  "(median)</th><th>samples</th><th>records</th><th class=\"l\">error</th></tr>\n");
  for (const SetupResult& r : result.setups) {
    for (size_t j = 0; j < r.jobs.size(); ++j) {
      const SetupJobResult& job = r.jobs[j];
      double vs = NAN;
      if (dedicated != nullptr && j < dedicated->jobs.size() &&
          dedicated->jobs[j].final_latency_ms > 0) {
        vs = job.final_latency_ms / dedicated->jobs[j].final_latency_ms - 1;
      }
      int ok_samples = 0;
      for (const DistortionSample& s : job.distortion) ok_samples += std::isfinite(s.distortion);
      std::string error = job.error;
      if (!job.latency_error.empty()) {
        absl::StrAppend(&error, error.empty() ? "" : "; ", "latency: ", job.latency_error);
      }
      absl::StrAppend(&h, "<tr><td class=\"l\">", XmlEscape(r.setup),
                      "</td><td class=\"l\"><span "
                      "class=\"swatch\" style=\"background:",
                      JobColor(static_cast<int>(j)), "\"></span>", XmlEscape(job.name), "</td><td>",
                      F(job.seconds, 1), "</td><td>", F(job.final_latency_ms, 3), "</td><td>",
                      std::isfinite(vs) ? absl::StrFormat("%+.1f%%", vs * 100) : "&ndash;",
                      "</td><td>", F(job.tuned_latency_ms, 4), "</td><td>",
                      Pct(job.distortion_median, 2), "</td><td>", ok_samples, "/",
                      job.distortion.size(), "</td><td>", job.records, "</td><td class=\"l\">",
                      XmlEscape(error), "</td></tr>\n");
    }
  }
  absl::StrAppend(&h,
                  "</table>\n<p>Final latency: the whole model compiled with the job's own "
                  "records (its tuned tasks; the others use their default configs) and timed "
                  "alone on the device cores after the setup, median of many runs. Distortion: "
                  "|cost measured during the setup / cost measured again alone &minus; 1| over a "
                  "seeded sample of the job's candidates.</p>\n");

  // Through the service.
  if (!result.service.empty()) {
    absl::StrAppend(&h,
                    "<h2>Through the service</h2>\n<p>The same jobs and setups through real "
                    "<code>loom serve</code> and <code>loom agent</code> processes on the same "
                    "layout (service.csv; each setup's logs and state under service/). "
                    "<b>dedicated</b> runs the daemon's <code>sequential</code> policy and submits "
                    "one job after the other's end.</p>\n<table>\n<tr><th class=\"l\">setup</th>"
                    "<th class=\"l\">policy</th><th>embedded makespan s</th><th>service makespan "
                    "s</th><th>service &divide; embedded</th><th class=\"l\">jobs (service s / "
                    "embedded s, records)</th><th class=\"l\">error</th></tr>\n");
    for (const ServiceSetupResult& s : result.service) {
      const SetupResult* embedded = Find(result, s.setup);
      std::string jobs, errors = s.error;
      for (size_t i = 0; i < s.jobs.size(); ++i) {
        const ServiceJobResult& job = s.jobs[i];
        const double e =
            embedded != nullptr && i < embedded->jobs.size() ? embedded->jobs[i].seconds : NAN;
        absl::StrAppend(&jobs, jobs.empty() ? "" : "<br>", XmlEscape(job.name), " ",
                        F(job.seconds, 1), " / ", F(e, 1), ", ", job.records,
                        job.state == "succeeded" ? "" : absl::StrCat(" (", job.state, ")"));
        if (!job.error.empty() && job.error != s.error) {
          absl::StrAppend(&errors, errors.empty() ? "" : "; ", job.name, ": ", job.error);
        }
      }
      absl::StrAppend(&h, "<tr><td class=\"l\">", XmlEscape(s.setup), "</td><td class=\"l\">",
                      XmlEscape(s.policy), "</td><td>", F(embedded ? embedded->makespan_s : NAN, 1),
                      "</td><td>", F(s.makespan_s, 1), "</td><td>", F(ServiceRatio(s, embedded), 3),
                      "</td><td class=\"l\">", jobs, "</td><td class=\"l\">", XmlEscape(errors),
                      "</td></tr>\n");
    }
    absl::StrAppend(&h, "</table>\n");
  }

  // Simulator.
  absl::StrAppend(&h, "<h2>Simulator check</h2>\n");
  if (result.simulation.empty()) {
    absl::StrAppend(&h, "<p>Not simulated",
                    result.simulation_error.empty()
                        ? std::string(".")
                        : absl::StrCat(": ", XmlEscape(result.simulation_error)),
                    "</p>\n");
  } else {
    absl::StrAppend(&h, "<p>Stage durations per job and kind from the <b>",
                    XmlEscape(result.simulation_source),
                    "</b> run's traces (sim.yaml; replay with <code>loom simulate "
                    "sim.yaml</code>).</p>\n<table>\n<tr><th class=\"l\">setup</th><th "
                    "class=\"l\">policy</th><th>measured s</th><th>simulated s</th><th>simulated "
                    "&divide; measured</th><th>simulated lower bound s</th></tr>\n");
    for (const SimulationRow& row : result.simulation) {
      absl::StrAppend(&h, "<tr><td class=\"l\">", XmlEscape(row.setup), "</td><td class=\"l\">",
                      XmlEscape(row.policy), "</td><td>", F(row.measured_s, 1), "</td><td>",
                      F(row.simulated_s, 1), "</td><td>", F(row.ratio, 3), "</td><td>",
                      F(row.simulated_lower_bound_s, 1), "</td></tr>\n");
    }
    absl::StrAppend(&h, "</table>\n");
  }

  // Gantt charts.
  absl::StrAppend(&h, "<h2>Gantt charts</h2>\n");
  for (const SetupResult& r : result.setups) {
    GanttOptions go{.title = absl::StrCat(context.name, ": ", r.setup),
                    .device_cores = context.device_cores};
    absl::StrAppend(&h, "<figure id=\"gantt-", XmlEscape(r.setup), "\">\n", GanttSvg(r.run, go),
                    "<figcaption>", XmlEscape(r.setup), " (<a href=\"gantt-", XmlEscape(r.setup),
                    ".svg\">gantt-", XmlEscape(r.setup), ".svg</a>)</figcaption>\n</figure>\n");
  }
  if (!context.spec_text.empty()) {
    absl::StrAppend(&h, "<h2>Spec</h2>\n<pre>", XmlEscape(context.spec_text), "</pre>\n");
  }
  absl::StrAppend(&h, "</body>\n</html>\n");
  return h;
}

}  // namespace loom::experiment
