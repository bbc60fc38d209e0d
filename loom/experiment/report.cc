#include "loom/experiment/report.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "loom/base/chart.h"
#include "loom/experiment/claims.h"
#include "loom/experiment/gantt.h"

namespace loom::experiment {
namespace {

using base::XmlEscape;

const SetupResult* Find(const ExperimentResult& r, const std::string& setup) {
  return FindSetup(r, setup, 0);
}

std::string F(double v, int digits) {
  return std::isfinite(v) ? absl::StrFormat("%.*f", digits, v) : "&ndash;";
}

std::string Pct(double v, int digits = 1) {
  return std::isfinite(v) ? absl::StrFormat("%.*f%%", digits, v * 100) : "&ndash;";
}

std::string GoalCell(bool known, bool ok) {
  if (!known) return "<td class=\"na\">not measured</td>";
  return ok ? "<td class=\"ok\">met</td>" : "<td class=\"bad\">not met</td>";
}

constexpr char kStyle[] = R"(<style>
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; }
td.l, th.l { text-align: left; }
td.job { white-space: nowrap; }
td.ok { color: #176317; font-weight: bold; } td.bad { color: #b01c1c; font-weight: bold; }
td.na { color: #777; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
figure { margin: 0 0 24px; overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 8px; }
td.noise { color: #8a6d00; font-weight: bold; }
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

namespace {

std::string VerdictCell(Verdict v) {
  const char* cls = v == Verdict::kMet      ? "ok"
                    : v == Verdict::kNotMet ? "bad"
                    : v == Verdict::kNoise  ? "noise"
                                            : "na";
  return absl::StrCat("<td class=\"", cls, "\">", std::string(VerdictName(v)), "</td>");
}

// What each setup does, exactly (issue 24): written next to the figures it explains.
std::string SetupDescription(const std::string& setup) {
  if (setup == "dedicated") {
    return "each job alone on the machine, one after another, under <code>interleaved</code>: "
           "its time is what it takes on a dedicated server, and the sum is running the jobs in "
           "sequence. Builds use the spec's build slots (the CPU cores, plus the device's cores "
           "while no measurement holds them); the measurer is pinned to the device cores.";
  }
  if (setup == "uncontrolled") {
    return "all jobs at once with no scheduler, as N independent tuners on one server: every "
           "stage starts as soon as its job's previous one ends, CPU stages are not pinned, each "
           "job's builds compile on every core of the machine (as a tuner that believes it owns "
           "the server does), and each job has its own measure worker pinned where a tuner "
           "configured for this machine pins it, the device cores, so measurements share them "
           "with each other and with builds and model updates.";
  }
  if (setup == "interleaved") {
    return "all jobs at once under the load-aware scheduler: the device is leased to one "
           "measurement at a time and vacated by CPU stages before it starts; CPU stages take "
           "the free CPU slots (FIFO within priority) and the device's cores while it is idle.";
  }
  if (setup == "predictive") {
    return "as interleaved, but ordered by learned stage durations (Johnson-like: CPU stages by "
           "the CPU work left before their job's next measurement, measurements by their job's "
           "CPU cycle, with aging).";
  }
  if (setup == "sequential") {
    return "the scheduler admits one job at a time (the jobs in sequence on one machine).";
  }
  return "";
}

// A job's task's best GFLOPS so far against trials (x = 1, 2, ...) or against seconds since the
// job's run started; failed trials as markers at the best so far.
base::LineSeries Curve(const std::string& name, const std::string& color,
                       const std::vector<CurvePoint>& trials, bool by_time) {
  // A dot per successful trial, a cross per failed one: every measured trial is seen.
  base::LineSeries s{.name = name, .color = color, .dots = true};
  double best = 0;
  for (size_t i = 0; i < trials.size(); ++i) {
    const double x = by_time ? trials[i].seconds : static_cast<double>(i + 1);
    if (trials[i].gflops <= 0) {
      s.markers.emplace_back(x, best);
      continue;
    }
    best = std::max(best, trials[i].gflops);
    s.points.emplace_back(x, best);
  }
  return s;
}

}  // namespace

std::string ReportHtml(const ExperimentResult& result, const ReportContext& context) {
  const SetupResult* dedicated = Find(result, "dedicated");
  const ClaimsSummary claims = SummarizeClaims(result);
  auto summary = [&](const std::string& setup) -> const SetupSummary* {
    for (const SetupSummary& s : claims.setups) {
      if (s.setup == setup) return &s;
    }
    return nullptr;
  };
  const SetupSummary* seq = summary(claims.reference);
  const SetupSummary* interleaved = summary("interleaved");
  const SetupSummary* predictive = summary("predictive");
  const SetupSummary* uncontrolled = summary("uncontrolled");
  const int reps = std::max(1, result.repetitions);
  size_t njobs = 0;
  for (const SetupResult& r : result.setups) njobs = std::max(njobs, r.jobs.size());
  const int ncolors = static_cast<int>(njobs);

  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  absl::StrAppend(&h, "<title>", XmlEscape(context.name), ": Loom experiment</title>\n", kStyle,
                  "</head>\n<body>\n");
  absl::StrAppend(&h, "<h1>", XmlEscape(context.name), "</h1>\n<p>");
  if (!context.machine.empty()) absl::StrAppend(&h, "Machine: ", XmlEscape(context.machine), ". ");
  if (!context.command.empty()) {
    absl::StrAppend(&h, "Command: <code>", XmlEscape(context.command), "</code>.");
  }
  absl::StrAppend(&h, " Repetitions: ", reps,
                  reps > 1 ? " (each repeats every setup; intervals are 95% confidence intervals "
                             "over the repetitions)."
                           : " (no confidence intervals: verdicts on a single run say only that "
                             "the difference cannot be told from noise).",
                  "</p>\n<h2>Setups</h2>\n<ul>\n");
  std::vector<std::string> seen;
  for (const SetupResult& r : result.setups) {
    if (std::find(seen.begin(), seen.end(), r.setup) != seen.end()) continue;
    seen.push_back(r.setup);
    absl::StrAppend(&h, "<li><b>", XmlEscape(r.setup), "</b>: ", SetupDescription(r.setup),
                    "</li>\n");
  }
  absl::StrAppend(&h, "</ul>\n");

  // Claims: generated verdicts.
  absl::StrAppend(&h,
                  "<h2>The claims</h2>\n<p>A load-aware scheduler makes shared autotuning better "
                  "in tuning time, hardware and the resulting inference performance. Each row is "
                  "a ratio per repetition (geometric mean, 95% interval); <b>met</b> when the "
                  "whole interval is on the claimed side, <b>not met</b> when it is wholly on the "
                  "other, else <b>not distinguishable from noise</b>.</p>\n<table>\n<tr><th "
                  "class=\"l\">claim</th><th class=\"l\">setup</th><th class=\"l\">statement</th>"
                  "<th class=\"l\">figure (change, interval, repetitions)</th><th>verdict</th>"
                  "</tr>\n");
  for (const ClaimVerdict& v : claims.verdicts) {
    absl::StrAppend(&h, "<tr><td class=\"l\">", XmlEscape(v.claim), "</td><td class=\"l\">",
                    XmlEscape(v.setup), "</td><td class=\"l\">", XmlEscape(v.statement),
                    "</td><td class=\"l\">", XmlEscape(v.figure), "</td>", VerdictCell(v.verdict),
                    "</tr>\n");
  }
  if (claims.verdicts.empty()) {
    absl::StrAppend(&h,
                    "<tr><td class=\"na\" colspan=\"5\">no scheduled setup or no reference "
                    "was run</td></tr>\n");
  }
  absl::StrAppend(&h, "</table>\n");

  // Goals of the thesis experiment (means over the repetitions).
  absl::StrAppend(&h,
                  "<h2>Goals</h2>\n<table>\n<tr><th class=\"l\">goal</th><th "
                  "class=\"l\">figure</th><th>verdict</th></tr>\n");
  {
    const bool known = seq != nullptr && interleaved != nullptr && seq->makespan_s.mean > 0;
    const double ratio = known ? interleaved->makespan_s.mean / seq->makespan_s.mean : NAN;
    absl::StrAppend(&h,
                    "<tr><td class=\"l\">interleaved makespan &le; 0.75 &times; sequential</td>"
                    "<td class=\"l\">",
                    known ? absl::StrFormat("%.1f s / %.1f s = %.3f", interleaved->makespan_s.mean,
                                            seq->makespan_s.mean, ratio)
                          : "&ndash;",
                    "</td>", GoalCell(known, ratio <= 0.75), "</tr>\n");
  }
  {
    const bool known = interleaved != nullptr && predictive != nullptr;
    absl::StrAppend(
        &h, "<tr><td class=\"l\">predictive makespan &le; interleaved</td><td class=\"l\">",
        known ? absl::StrFormat("%.1f s vs %.1f s", predictive->makespan_s.mean,
                                interleaved->makespan_s.mean)
              : "&ndash;",
        "</td>",
        GoalCell(known, known && predictive->makespan_s.mean <= interleaved->makespan_s.mean),
        "</tr>\n");
  }
  {
    const bool known = interleaved != nullptr && std::isfinite(interleaved->distortion.mean);
    absl::StrAppend(&h,
                    "<tr><td class=\"l\">median measurement distortion under interleaved &le; "
                    "3%</td><td class=\"l\">interleaved ",
                    interleaved ? Pct(interleaved->distortion.mean, 2) : "&ndash;",
                    ", uncontrolled ",
                    uncontrolled ? Pct(uncontrolled->distortion.mean, 2) : "&ndash;", "</td>",
                    GoalCell(known, known && interleaved->distortion.mean <= 0.03), "</tr>\n");
  }
  {
    const SetupResult* il = Find(result, "interleaved");
    bool known = dedicated != nullptr && il != nullptr && interleaved != nullptr;
    bool ok = true;
    std::string figure;
    for (size_t j = 0; known && j < interleaved->job_latency_vs_dedicated.size(); ++j) {
      const Interval& v = interleaved->job_latency_vs_dedicated[j];
      if (!std::isfinite(v.mean) || j >= il->jobs.size() || j >= dedicated->jobs.size()) {
        known = false;
        break;
      }
      ok = ok && v.mean <= 1.05;
      const std::string name = XmlEscape(il->jobs[j].name);
      if (reps == 1) {
        const double a = il->jobs[j].final_latency_ms, b = dedicated->jobs[j].final_latency_ms;
        absl::StrAppend(&figure, figure.empty() ? "" : "; ", name,
                        absl::StrFormat(" %.3f ms vs %.3f ms (%+.1f%%)", a, b, (a / b - 1) * 100));
      } else {
        absl::StrAppend(&figure, figure.empty() ? "" : "; ", name, " ",
                        XmlEscape(FormatRatioPercent(v)));
      }
    }
    absl::StrAppend(&h,
                    "<tr><td class=\"l\">final latency tuned under interleaved within 5% of the "
                    "same job tuned alone</td><td class=\"l\">",
                    known ? figure : "&ndash;", "</td>", GoalCell(known, ok), "</tr>\n");
  }
  {
    const bool known = !result.simulation.empty();
    bool ok = true;
    std::string figure;
    for (const SimulationRow& row : result.simulation) {
      ok = ok && std::fabs(row.ratio - 1) <= 0.15;
      absl::StrAppend(&figure, figure.empty() ? "" : "; ", XmlEscape(row.policy),
                      reps > 1 ? absl::StrCat(" (", row.repetition + 1, ")") : "",
                      absl::StrFormat(" %.3f", row.ratio));
    }
    absl::StrAppend(&h,
                    "<tr><td class=\"l\">simulated makespan within 15% of measured, per "
                    "policy</td><td class=\"l\">",
                    known ? figure : XmlEscape(result.simulation_error), "</td>",
                    GoalCell(known, ok), "</tr>\n");
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
                    figure, "</td>", GoalCell(known, ok), "</tr>\n");
  }
  absl::StrAppend(&h, "</table>\n");

  // Ranking fidelity and inference performance, per setup over the repetitions.
  int top_k = 0;
  for (const SetupResult& r : result.setups) top_k = std::max(top_k, r.ranking.top_k);
  const std::string top_k_text = top_k > 0 ? absl::StrCat(top_k) : "k";
  absl::StrAppend(
      &h,
      "<h2>Ranking fidelity and inference performance</h2>\n<table>\n<tr><th "
      "class=\"l\">setup</th><th>distortion (median)</th><th>Kendall's &tau;</th><th>regret</th>"
      "<th>top-",
      top_k_text, " overlap</th><th>final latency vs ", XmlEscape(claims.reference),
      "</th><th>tuned kernels alone vs ", XmlEscape(claims.reference), "</th></tr>\n");
  for (const SetupSummary& s : claims.setups) {
    absl::StrAppend(&h, "<tr><td class=\"l\">", XmlEscape(s.setup), "</td><td>",
                    Pct(s.distortion.mean, 2), "</td><td>",
                    XmlEscape(FormatInterval(s.kendall_tau, 3)), "</td><td>",
                    XmlEscape(FormatInterval(s.regret, 3)), "</td><td>",
                    XmlEscape(FormatInterval(s.top_k_overlap, 2)), "</td><td>",
                    XmlEscape(FormatRatioPercent(s.latency_vs_dedicated)), "</td><td>",
                    XmlEscape(FormatRatioPercent(s.kernels_vs_dedicated)), "</td></tr>\n");
  }
  absl::StrAppend(
      &h,
      "</table>\n<p>After each setup, each task's best candidates in the run and a seeded sample "
      "of its others are measured again alone on the idle device. Distortion: |in-run / alone "
      "&minus; 1|. Kendall's &tau;: rank agreement of in-run and alone times between candidates "
      "of the same task (1: the run ordered them as alone; the dedicated setup's &tau; is the "
      "noise floor). Regret: how much slower (alone) the configs the run chose are than the best "
      "re-measured ones, weighted by the task's occurrences. Top-k overlap: share of the k "
      "fastest in the run that are among the k fastest alone. Final latency: the whole model "
      "compiled with the job's records, every setup's and repetition's models timed side by side "
      "after the last setup. Tuned kernels alone: the chosen configs' re-measured times, summed "
      "over the job's tuned tasks.</p>\n");
  // The final-latency table as a chart: change against the reference with intervals.
  if (seq != nullptr && njobs > 0) {
    for (int pass = 0; pass < 2; ++pass) {
      base::BarChart chart{
          .title = pass == 0 ? absl::StrCat("Final latency vs ", claims.reference)
                             : absl::StrCat("Tuned kernels (alone) vs ", claims.reference),
          .y_label = "change (%)",
          .value_format = "%+.1f"};
      std::vector<const SetupSummary*> others;
      for (const SetupSummary& s : claims.setups) {
        if (s.setup == claims.reference) continue;
        others.push_back(&s);
        chart.series.push_back(s.setup);
      }
      bool any = false;
      for (size_t j = 0; j < njobs; ++j) {
        base::BarGroup g;
        for (const SetupResult& r : result.setups) {
          if (j < r.jobs.size()) g.label = r.jobs[j].name;
        }
        for (const SetupSummary* s : others) {
          const auto& list = pass == 0 ? s->job_latency_vs_dedicated : s->job_kernels_vs_dedicated;
          const Interval v = j < list.size() ? list[j] : Interval{};
          auto pct = [](double x) { return std::isfinite(x) ? (x - 1) * 100 : NAN; };
          g.values.push_back(pct(v.mean));
          g.low.push_back(pct(v.low));
          g.high.push_back(pct(v.high));
          any = any || std::isfinite(v.mean);
        }
        chart.groups.push_back(std::move(g));
      }
      if (!any) continue;
      absl::StrAppend(&h, "<figure class=\"bars\">\n", base::BarChartSvg(chart), "</figure>\n");
    }
  }

  // Runs.
  absl::StrAppend(
      &h,
      "<h2>Runs</h2>\n<table>\n<tr><th class=\"l\">setup</th><th>rep.</th><th>makespan s</th>"
      "<th>&divide; sequential</th><th>lower bound s</th><th>&divide; lower bound</th><th>device "
      "util.</th><th>CPU util.</th><th>distortion (median)</th><th>&tau;</th><th>regret</th>"
      "<th>device-hours</th></tr>\n");
  for (const SetupResult& r : result.setups) {
    const SetupResult* ref = FindSetup(result, claims.reference, r.repetition);
    const double vs_seq =
        ref != nullptr && ref->makespan_s > 0 ? r.makespan_s / ref->makespan_s : NAN;
    const double vs_lb = r.lower_bound_s > 0 ? r.makespan_s / r.lower_bound_s : NAN;
    absl::StrAppend(&h, "<tr><td class=\"l\">", XmlEscape(r.setup), "</td><td>", r.repetition + 1,
                    "</td><td>", F(r.makespan_s, 1), "</td><td>", F(vs_seq, 3), "</td><td>",
                    F(r.lower_bound_s, 1), "</td><td>", F(vs_lb, 3), "</td><td>",
                    Pct(r.device_utilization), "</td><td>", Pct(r.cpu_utilization), "</td><td>",
                    Pct(r.distortion_median, 2), "</td><td>", F(r.ranking.kendall_tau, 3),
                    "</td><td>", Pct(r.ranking.regret, 1), "</td><td>", F(r.device_hours, 4),
                    "</td></tr>\n");
  }
  absl::StrAppend(&h,
                  "</table>\n<p>Lower bound: max(device work, CPU slot-seconds / CPU slots) of the "
                  "setup's own stages. Device-hours: dedicated gives each job its own machine (the "
                  "sum of the jobs' times), the shared setups use one machine for the "
                  "makespan.</p>\n");

  // Jobs.
  absl::StrAppend(&h,
                  "<h2>Jobs</h2>\n<table>\n<tr><th class=\"l\">setup</th><th>rep.</th><th "
                  "class=\"l\">job</th><th>tuning time s</th><th>final latency ms</th><th>vs "
                  "dedicated</th><th>sum of tuned task costs ms</th><th>tuned kernels alone "
                  "ms</th><th>distortion (median)</th><th>&tau;</th><th>regret</th><th>samples"
                  "</th><th>records</th><th class=\"l\">error</th></tr>\n");
  for (const SetupResult& r : result.setups) {
    const SetupResult* ref = FindSetup(result, "dedicated", r.repetition);
    for (size_t j = 0; j < r.jobs.size(); ++j) {
      const SetupJobResult& job = r.jobs[j];
      double vs = NAN;
      if (ref != nullptr && j < ref->jobs.size() && ref->jobs[j].final_latency_ms > 0) {
        vs = job.final_latency_ms / ref->jobs[j].final_latency_ms - 1;
      }
      int ok_samples = 0;
      for (const DistortionSample& s : job.distortion) ok_samples += std::isfinite(s.distortion);
      std::string error = job.error;
      if (!job.latency_error.empty()) {
        absl::StrAppend(&error, error.empty() ? "" : "; ", "latency: ", job.latency_error);
      }
      absl::StrAppend(
          &h, "<tr><td class=\"l\">", XmlEscape(r.setup), "</td><td>", r.repetition + 1,
          "</td><td class=\"l job\"><span class=\"swatch\" style=\"background:",
          base::SeriesColor(static_cast<int>(j), ncolors), "\"></span>", XmlEscape(job.name),
          "</td><td>", F(job.seconds, 1), "</td><td>", F(job.final_latency_ms, 3), "</td><td>",
          std::isfinite(vs) ? absl::StrFormat("%+.1f%%", vs * 100) : "&ndash;", "</td><td>",
          F(job.tuned_latency_ms, 4), "</td><td>", F(job.ranking.chosen_alone_ms, 4), "</td><td>",
          Pct(job.distortion_median, 2), "</td><td>", F(job.ranking.kendall_tau, 3), "</td><td>",
          Pct(job.ranking.regret, 1), "</td><td>", ok_samples, "/", job.distortion.size(),
          "</td><td>", job.records, "</td><td class=\"l\">", XmlEscape(error), "</td></tr>\n");
    }
  }
  absl::StrAppend(&h,
                  "</table>\n<p>Final latency: the whole model compiled with the job's own "
                  "records (its tuned tasks; the others use their default configs) and timed "
                  "alone on the device cores, median of many runs.</p>\n");

  // Tuning curves: per job and task, every setup's first repetition.
  {
    std::vector<std::string> setups;
    for (const SetupResult& r : result.setups) {
      if (r.repetition == 0) setups.push_back(r.setup);
    }
    std::string curves;
    for (size_t j = 0; j < njobs; ++j) {
      std::vector<std::string> tasks;
      std::string job_name;
      for (const SetupResult& r : result.setups) {
        if (j >= r.jobs.size()) continue;
        job_name = r.jobs[j].name;
        for (const TaskCurve& c : r.jobs[j].curves) {
          if (std::find(tasks.begin(), tasks.end(), c.task_key) == tasks.end()) {
            tasks.push_back(c.task_key);
          }
        }
      }
      for (const std::string& task : tasks) {
        base::LineChart by_trials{.title = absl::StrCat(job_name, ": against trials"),
                                  .subtitle = task,
                                  .x_label = "trials",
                                  .y_label = "best GFLOPS so far"};
        base::LineChart by_time{.title = absl::StrCat(job_name, ": against time"),
                                .subtitle = task,
                                .x_label = "seconds since the job's run started",
                                .y_label = "best GFLOPS so far"};
        for (size_t k = 0; k < setups.size(); ++k) {
          const SetupResult* r = Find(result, setups[k]);
          if (r == nullptr || j >= r->jobs.size()) continue;
          const std::string color =
              base::SeriesColor(static_cast<int>(k), static_cast<int>(setups.size()));
          for (const TaskCurve& c : r->jobs[j].curves) {
            if (c.task_key != task) continue;
            by_trials.series.push_back(Curve(setups[k], color, c.trials, false));
            by_time.series.push_back(Curve(setups[k], color, c.trials, true));
          }
        }
        absl::StrAppend(&curves, "<div class=\"charts\">\n", base::LineChartSvg(by_trials),
                        base::LineChartSvg(by_time), "</div>\n");
      }
    }
    if (!curves.empty()) {
      absl::StrAppend(&h,
                      "<h2>Tuning curves</h2>\n<p>Best GFLOPS so far of each tuned task against "
                      "trials and against time, one line per setup (first repetition; failed "
                      "candidates as crosses). Times under a shared setup include waiting for "
                      "the other jobs.</p>\n",
                      curves);
    }
  }

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
      absl::StrAppend(&h, "<tr><td class=\"l\">", XmlEscape(row.setup),
                      reps > 1 ? absl::StrCat(" (", row.repetition + 1, ")") : "",
                      "</td><td class=\"l\">", XmlEscape(row.policy), "</td><td>",
                      F(row.measured_s, 1), "</td><td>", F(row.simulated_s, 1), "</td><td>",
                      F(row.ratio, 3), "</td><td>", F(row.simulated_lower_bound_s, 1),
                      "</td></tr>\n");
    }
    absl::StrAppend(&h, "</table>\n");
  }

  // Gantt charts: the first repetition's, on one time axis.
  absl::StrAppend(&h,
                  "<h2>Gantt charts</h2>\n<p>One time axis for every chart: equal durations "
                  "are equally wide. <a href=\"trace.json\">trace.json</a> holds every stage "
                  "of every setup",
                  reps > 1 ? " and repetition" : "",
                  " as a Chrome trace (open it in Perfetto, ui.perfetto.dev).</p>\n");
  const double axis_end = GanttAxisEnd(result);
  for (const SetupResult& r : result.setups) {
    const std::string file = GanttFileName(r);
    if (r.repetition > 0) continue;
    GanttOptions go{.title = GanttTitle(context.name, r, reps),
                    .device_cores = context.device_cores,
                    .axis_end = axis_end};
    absl::StrAppend(&h, "<figure id=\"gantt-", XmlEscape(r.setup), "\">\n", GanttSvg(r.run, go),
                    "<figcaption>", XmlEscape(r.setup), " (<a href=\"", XmlEscape(file), "\">",
                    XmlEscape(file), "</a>)</figcaption>\n</figure>\n");
  }
  if (!context.spec_text.empty()) {
    absl::StrAppend(&h, "<h2>Spec</h2>\n<pre>", XmlEscape(context.spec_text), "</pre>\n");
  }
  absl::StrAppend(&h, "</body>\n</html>\n");
  return h;
}

std::string ScaleReportHtml(const std::vector<ScaleRun>& runs, const ReportContext& context) {
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  absl::StrAppend(&h, "<title>", XmlEscape(context.name), ": Loom scale experiment</title>\n",
                  kStyle, "</head>\n<body>\n<h1>", XmlEscape(context.name), "</h1>\n<p>");
  if (!context.machine.empty()) absl::StrAppend(&h, "Machine: ", XmlEscape(context.machine), ". ");
  if (!context.command.empty()) {
    absl::StrAppend(&h, "Command: <code>", XmlEscape(context.command), "</code>.");
  }
  absl::StrAppend(&h,
                  " The same experiment with the first N jobs of the spec, for each N; every "
                  "count's full report is linked below.</p>\n<ul>\n");
  for (const ScaleRun& run : runs) {
    absl::StrAppend(&h, "<li><a href=\"", XmlEscape(run.dir), "/report.html\">", run.jobs,
                    run.jobs == 1 ? " job" : " jobs", "</a> (", run.result.repetitions,
                    " repetition", run.result.repetitions == 1 ? "" : "s", ")</li>\n");
  }
  absl::StrAppend(&h, "</ul>\n");
  std::vector<ClaimsSummary> claims;
  for (const ScaleRun& run : runs) claims.push_back(SummarizeClaims(run.result));

  // Verdicts side by side: one row per (claim, setup, statement), one column per count.
  std::vector<std::string> keys;
  std::map<std::string, std::vector<const ClaimVerdict*>> by_key;
  for (size_t k = 0; k < claims.size(); ++k) {
    for (const ClaimVerdict& v : claims[k].verdicts) {
      const std::string key = absl::StrCat(v.claim, "\t", v.setup, "\t", v.statement);
      auto [it, fresh] = by_key.try_emplace(key, std::vector<const ClaimVerdict*>(runs.size()));
      if (fresh) keys.push_back(key);
      it->second[k] = &v;
    }
  }
  absl::StrAppend(&h,
                  "<h2>The claims at each scale</h2>\n<table>\n<tr><th class=\"l\">claim</th>"
                  "<th class=\"l\">setup</th><th class=\"l\">statement</th>");
  for (const ScaleRun& run : runs) {
    absl::StrAppend(&h, "<th class=\"l\">", run.jobs, run.jobs == 1 ? " job" : " jobs",
                    "</th><th>verdict</th>");
  }
  absl::StrAppend(&h, "</tr>\n");
  for (const std::string& key : keys) {
    const std::vector<const ClaimVerdict*>& row = by_key[key];
    const ClaimVerdict* first = nullptr;
    for (const ClaimVerdict* v : row) first = first ? first : v;
    absl::StrAppend(&h, "<tr><td class=\"l\">", XmlEscape(first->claim), "</td><td class=\"l\">",
                    XmlEscape(first->setup), "</td><td class=\"l\">", XmlEscape(first->statement),
                    "</td>");
    for (const ClaimVerdict* v : row) {
      if (v == nullptr) {
        absl::StrAppend(&h, "<td class=\"l\">&ndash;</td><td class=\"na\">not run</td>");
        continue;
      }
      absl::StrAppend(&h, "<td class=\"l\">", XmlEscape(v->figure), "</td>",
                      VerdictCell(v->verdict));
    }
    absl::StrAppend(&h, "</tr>\n");
  }
  absl::StrAppend(&h, "</table>\n");

  // Per count, the setups' figures.
  absl::StrAppend(&h,
                  "<h2>Setups at each scale</h2>\n<table>\n<tr><th>jobs</th><th "
                  "class=\"l\">setup</th><th>makespan s</th><th>&divide; sequential</th><th>"
                  "distortion (median)</th><th>&tau;</th><th>regret</th><th>final latency vs "
                  "dedicated</th><th>tuned kernels alone vs dedicated</th></tr>\n");
  for (size_t k = 0; k < runs.size(); ++k) {
    for (const SetupSummary& s : claims[k].setups) {
      absl::StrAppend(&h, "<tr><td>", runs[k].jobs, "</td><td class=\"l\">", XmlEscape(s.setup),
                      "</td><td>", XmlEscape(FormatInterval(s.makespan_s, 1)), "</td><td>",
                      XmlEscape(FormatInterval(s.vs_sequence, 3)), "</td><td>",
                      Pct(s.distortion.mean, 2), "</td><td>",
                      XmlEscape(FormatInterval(s.kendall_tau, 3)), "</td><td>",
                      XmlEscape(FormatInterval(s.regret, 3)), "</td><td>",
                      XmlEscape(FormatRatioPercent(s.latency_vs_dedicated)), "</td><td>",
                      XmlEscape(FormatRatioPercent(s.kernels_vs_dedicated)), "</td></tr>\n");
    }
  }
  absl::StrAppend(&h, "</table>\n");

  // Charts against the job count, one line per setup.
  std::vector<std::string> setups;
  for (const ClaimsSummary& c : claims) {
    for (const SetupSummary& s : c.setups) {
      if (std::find(setups.begin(), setups.end(), s.setup) == setups.end()) {
        setups.push_back(s.setup);
      }
    }
  }
  auto chart = [&](const std::string& title, const std::string& y_label,
                   double (*value)(const SetupSummary&)) {
    base::LineChart c{.title = title, .x_label = "jobs", .y_label = y_label};
    double lo = 0;
    for (size_t i = 0; i < setups.size(); ++i) {
      base::LineSeries line{
          .name = setups[i],
          .color = base::SeriesColor(static_cast<int>(i), static_cast<int>(setups.size())),
          .step = false};
      for (size_t k = 0; k < runs.size(); ++k) {
        for (const SetupSummary& s : claims[k].setups) {
          const double v = s.setup == setups[i] ? value(s) : NAN;
          if (!std::isfinite(v)) continue;
          line.points.emplace_back(runs[k].jobs, v);
          line.markers.emplace_back(runs[k].jobs, v);
          lo = std::min(lo, v);
        }
      }
      c.series.push_back(std::move(line));
    }
    c.y_min = lo < 0 ? std::floor(lo) : 0;
    return base::LineChartSvg(c);
  };
  absl::StrAppend(
      &h, "<h2>Against the number of jobs</h2>\n<div class=\"charts\">\n",
      chart("Makespan / the jobs in sequence", "ratio (mean)",
            [](const SetupSummary& s) { return s.vs_sequence.mean; }),
      chart("Tuned kernels (alone) vs dedicated", "change (%, mean)",
            [](const SetupSummary& s) { return (s.kernels_vs_dedicated.mean - 1) * 100; }),
      chart("Kendall's tau, in-run vs alone", "tau (mean)",
            [](const SetupSummary& s) { return s.kendall_tau.mean; }),
      "</div>\n");
  if (!context.spec_text.empty()) {
    absl::StrAppend(&h, "<h2>Spec</h2>\n<pre>", XmlEscape(context.spec_text), "</pre>\n");
  }
  absl::StrAppend(&h, "</body>\n</html>\n");
  return h;
}

}  // namespace loom::experiment
