#include "bench/comparator/compare_report.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "disk/bytes.h"
#include "disk/clock.h"

namespace snapdisk {

namespace {

using Json = nlohmann::ordered_json;

// Rounded for JSON: figures with more digits than were measured mislead.
double R(double v, int digits = 3) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

std::string F(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string Esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// What drove the backup experiments.
std::string ForegroundDescription(const Scenario& s) {
  if (!s.fio_job.empty()) {
    return "the fio job " + std::filesystem::path(s.fio_job).filename().string() +
           " over NBD (fio's completion latency, from its histogram log)";
  }
  return "open-loop Poisson " + F(s.foreground.iops, 0) + " IOPS, " + F(s.foreground.read_pct, 0) +
         "% reads, " + HumanBytes(s.foreground.block_bytes) + " blocks";
}

Json PhaseJson(const PhaseFigures& p) {
  return Json{{"iops", R(p.iops, 1)},         {"p50_us", R(p.p50_us, 1)}, {"p99_us", R(p.p99_us, 1)},
              {"p999_us", R(p.p999_us, 1)},   {"max_us", R(p.max_us, 1)}, {"requests", p.requests},
              {"seconds", R(p.seconds, 3)}};
}

Json ScenarioJson(const Scenario& s) {
  Json written = Json::array();
  for (uint64_t w : s.written) written.push_back(w);
  Json methods = Json::array();
  for (CompareMethod m : s.methods) methods.push_back(CompareMethodName(m));
  Json freqs = Json::array();
  for (LogFrequencyChoice f : s.log_frequencies) freqs.push_back(LogFrequencyChoiceName(f));
  return Json{{"profile", EssdLevelName(s.profile)},
              {"volume_size", s.volume_size_bytes},
              {"written", written},
              {"foreground",
               {{"iops", s.foreground.iops},
                {"read_pct", s.foreground.read_pct},
                {"block_size", s.foreground.block_bytes},
                {"seconds_before", s.foreground.seconds_before},
                {"seconds_after", s.foreground.seconds_after}}},
              {"methods", methods},
              {"rate", s.rate_mb_per_s},
              {"p99_target", s.p99_target_us},
              {"log_frequencies", freqs},
              {"rpo_hours", s.rpo_hours},
              {"rpo_failures", s.rpo_failures},
              {"seed", s.seed},
              {"workload", s.fio_job.empty() ? Json(nullptr) : Json{{"fio", s.fio_job}}}};
}

// ---- SVG charts ------------------------------------------------------------

struct Axis {
  double lo = 0;
  double hi = 1;
  bool log = false;
};

// Ticks: powers of ten (and 2, 5 between when few) on a log axis; a 1-2-5
// step giving about 5 ticks on a linear one.
std::vector<double> Ticks(const Axis& a) {
  std::vector<double> t;
  if (a.log) {
    for (double p = std::pow(10.0, std::floor(std::log10(a.lo))); p <= a.hi * 1.0001; p *= 10) {
      for (double m : {1.0, 2.0, 5.0}) {
        if (p * m >= a.lo * 0.9999 && p * m <= a.hi * 1.0001) t.push_back(p * m);
      }
    }
    if (t.size() > 8) {
      std::vector<double> decades;
      for (double v : t) {
        if (std::abs(std::log10(v) - std::round(std::log10(v))) < 1e-9) decades.push_back(v);
      }
      t = decades;
    }
    return t;
  }
  const double span = a.hi - a.lo;
  if (span <= 0) return {a.lo};
  const double raw = span / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  }
  for (double v = std::ceil(a.lo / step) * step; v <= a.hi + step * 1e-9; v += step) t.push_back(v);
  return t;
}

std::string TickLabel(double v) {
  if (v == 0) return "0";
  if (std::abs(v) >= 1e6) return F(v / 1e6, std::abs(v) >= 1e7 ? 0 : 1) + "M";
  if (std::abs(v) >= 1e4) return F(v / 1e3, 0) + "k";
  if (std::abs(v) >= 10 || v == std::round(v)) return F(v, 0);
  if (std::abs(v) >= 1) return F(v, 1);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);  // 0.5, 0.01, 0.001
  return buf;
}

class Chart {
 public:
  Chart(std::string title, Axis x, Axis y, std::string x_label, std::string y_label, int width = 640,
        int height = 260)
      : title_(std::move(title)), x_(x), y_(y), x_label_(std::move(x_label)),
        y_label_(std::move(y_label)), w_(width), h_(height) {
    if (x_.log) x_.lo = std::max(x_.lo, 1e-9);
    if (y_.log) y_.lo = std::max(y_.lo, 1e-9);
    if (x_.hi <= x_.lo) x_.hi = x_.lo + 1;
    if (y_.hi <= y_.lo) y_.hi = y_.log ? y_.lo * 10 : y_.lo + 1;
  }
  double X(double v) const { return kLeft + Frac(x_, v) * (w_ - kLeft - kRight); }
  double Y(double v) const { return h_ - kBottom - Frac(y_, v) * (h_ - kTop - kBottom); }

  void Band(double x0, double x1, const std::string& color, const std::string& label) {
    body_ << "<rect class=\"band\" x=\"" << F(X(x0), 1) << "\" y=\"" << kTop << "\" width=\""
          << F(std::max(1.5, X(x1) - X(x0)), 1) << "\" height=\"" << h_ - kTop - kBottom << "\" fill=\""
          << color << "\" opacity=\"0.25\"><title>" << Esc(label) << "</title></rect>\n";
    Legend(color, label, true);
  }
  void Line(const std::vector<std::pair<double, double>>& pts, const std::string& color,
            const std::string& label, bool markers = false) {
    if (pts.empty()) return;
    body_ << "<polyline class=\"series\" data-points=\"" << pts.size() << "\" fill=\"none\" stroke=\""
          << color << "\" stroke-width=\"1.8\" points=\"";
    for (auto [x, y] : pts) body_ << F(X(x), 1) << "," << F(Y(y), 1) << " ";
    body_ << "\"><title>" << Esc(label) << "</title></polyline>\n";
    if (markers) {
      for (auto [x, y] : pts) {
        body_ << "<circle class=\"point\" cx=\"" << F(X(x), 1) << "\" cy=\"" << F(Y(y), 1)
              << "\" r=\"3.5\" fill=\"" << color << "\"><title>" << Esc(label) << ": " << TickLabel(x)
              << ", " << TickLabel(y) << "</title></circle>\n";
      }
    }
    Legend(color, label, false);
  }
  // A bar from the axis floor up to `y`, centered on x, `width` in x units.
  void Bar(double x, double width, double y, const std::string& color, const std::string& label) {
    const double floor_y = y_.log ? y_.lo : std::max(0.0, y_.lo);
    const double top = Y(std::max(y, floor_y));
    body_ << "<rect class=\"bar\" data-value=\"" << R(y) << "\" x=\"" << F(X(x - width / 2), 1)
          << "\" y=\"" << F(top, 1) << "\" width=\"" << F(X(x + width / 2) - X(x - width / 2), 1)
          << "\" height=\"" << F(Y(floor_y) - top, 1) << "\" fill=\"" << color << "\"><title>" << Esc(label)
          << ": " << TickLabel(y) << "</title></rect>\n";
  }
  void HLine(double y, const std::string& color, const std::string& label) {
    body_ << "<line x1=\"" << kLeft << "\" x2=\"" << w_ - kRight << "\" y1=\"" << F(Y(y), 1) << "\" y2=\""
          << F(Y(y), 1) << "\" stroke=\"" << color << "\" stroke-dasharray=\"5,4\"><title>" << Esc(label)
          << "</title></line>\n";
    Legend(color, label, false);
  }
  // Category labels under the x axis instead of numeric ticks.
  void Categories(const std::vector<std::pair<double, std::string>>& labels) { categories_ = labels; }
  void Legend(const std::string& color, const std::string& label, bool box) {
    for (const auto& l : legend_) {
      if (l.label == label) return;
    }
    legend_.push_back({color, label, box});
  }

  std::string Svg() const {
    // Legend: three to a row, or one when a label would not fit a third.
    size_t longest = 0;
    for (const auto& l : legend_) longest = std::max(longest, l.label.size());
    const size_t per_row = longest > 30 ? 1 : 3;
    const size_t legend_rows = (legend_.size() + per_row - 1) / per_row;
    std::ostringstream o;
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"" << w_ << "\" height=\""
      << h_ + 18 * legend_rows << "\" viewBox=\"0 0 " << w_ << " " << h_ + 18 * legend_rows
      << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
    o << "<text x=\"" << kLeft << "\" y=\"14\" font-size=\"13\" font-weight=\"bold\">" << Esc(title_)
      << "</text>\n";
    // Grid and ticks.
    for (double t : Ticks(y_)) {
      o << "<line x1=\"" << kLeft << "\" x2=\"" << w_ - kRight << "\" y1=\"" << F(Y(t), 1) << "\" y2=\""
        << F(Y(t), 1) << "\" stroke=\"#ddd\"/>\n";
      o << "<text x=\"" << kLeft - 4 << "\" y=\"" << F(Y(t) + 4, 1) << "\" text-anchor=\"end\">"
        << TickLabel(t) << "</text>\n";
    }
    if (categories_.empty()) {
      for (double t : Ticks(x_)) {
        o << "<text x=\"" << F(X(t), 1) << "\" y=\"" << h_ - kBottom + 14 << "\" text-anchor=\"middle\">"
          << TickLabel(t) << "</text>\n";
      }
    } else {
      for (const auto& [x, label] : categories_) {
        o << "<text x=\"" << F(X(x), 1) << "\" y=\"" << h_ - kBottom + 14 << "\" text-anchor=\"middle\">"
          << Esc(label) << "</text>\n";
      }
    }
    o << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << w_ - kLeft - kRight
      << "\" height=\"" << h_ - kTop - kBottom << "\" fill=\"none\" stroke=\"#888\"/>\n";
    o << "<text x=\"" << (kLeft + w_ - kRight) / 2 << "\" y=\"" << h_ - 4
      << "\" text-anchor=\"middle\" fill=\"#444\">" << Esc(x_label_) << "</text>\n";
    o << "<text transform=\"translate(12," << (kTop + h_ - kBottom) / 2
      << ") rotate(-90)\" text-anchor=\"middle\" fill=\"#444\">" << Esc(y_label_) << "</text>\n";
    o << body_.str();
    for (size_t i = 0; i < legend_.size(); ++i) {
      const double lx = kLeft + static_cast<double>(i % per_row) * (w_ - kLeft) / static_cast<double>(per_row);
      const double ly = h_ + 6 + 18.0 * static_cast<double>(i / per_row);
      if (legend_[i].box) {
        o << "<rect x=\"" << F(lx, 1) << "\" y=\"" << F(ly, 1) << "\" width=\"14\" height=\"10\" fill=\""
          << legend_[i].color << "\" opacity=\"0.35\"/>\n";
      } else {
        o << "<line x1=\"" << F(lx, 1) << "\" x2=\"" << F(lx + 14, 1) << "\" y1=\"" << F(ly + 5, 1)
          << "\" y2=\"" << F(ly + 5, 1) << "\" stroke=\"" << legend_[i].color << "\" stroke-width=\"3\"/>\n";
      }
      o << "<text x=\"" << F(lx + 18, 1) << "\" y=\"" << F(ly + 9, 1) << "\">" << Esc(legend_[i].label)
        << "</text>\n";
    }
    o << "</svg>\n";
    return o.str();
  }

 private:
  static constexpr int kLeft = 56, kRight = 12, kTop = 24, kBottom = 34;
  static double Frac(const Axis& a, double v) {
    if (a.log) {
      v = std::max(v, a.lo);
      return (std::log10(v) - std::log10(a.lo)) / (std::log10(a.hi) - std::log10(a.lo));
    }
    return (v - a.lo) / (a.hi - a.lo);
  }
  struct LegendItem {
    std::string color, label;
    bool box;
  };
  std::string title_;
  Axis x_, y_;
  std::string x_label_, y_label_;
  int w_, h_;
  std::ostringstream body_;
  std::vector<std::pair<double, std::string>> categories_;
  std::vector<LegendItem> legend_;
};

// A log axis over positive values, padded to whole 1-2-5 steps.
Axis LogAxisFor(double lo, double hi) {
  lo = std::max(lo, 1.0);
  hi = std::max(hi, lo * 2);
  return {std::pow(10.0, std::floor(std::log10(lo))), std::pow(10.0, std::ceil(std::log10(hi))), true};
}


std::string TimelineChart(const BackupRun& b) {
  double lo = 1e18, hi = 0;
  for (const TimelinePoint& p : b.timeline) {
    if (p.p50_us > 0) lo = std::min(lo, p.p50_us);
    hi = std::max(hi, p.p999_us);
  }
  if (hi == 0) lo = 1, hi = 10;
  const double end = std::max<double>(static_cast<double>(b.timeline.size()), b.backup_end_s + 1);
  Chart c(std::string(CompareMethodName(b.method)) + ": foreground latency per second", {0, end},
          LogAxisFor(lo, hi), "seconds", "latency (us)", 640, 220);
  c.Band(b.backup_start_s, b.backup_end_s, "#f2b134", "backup running");
  std::vector<std::pair<double, double>> p50, p99, p999;
  for (const TimelinePoint& p : b.timeline) {
    if (p.p50_us <= 0) continue;
    const double x = p.second + 0.5;
    p50.emplace_back(x, p.p50_us);
    p99.emplace_back(x, p.p99_us);
    p999.emplace_back(x, p.p999_us);
  }
  c.Line(p50, "#2ca02c", "p50");
  c.Line(p99, "#1f77b4", "p99");
  c.Line(p999, "#d62728", "p99.9");
  return c.Svg();
}

std::string ImpactCharts(const ComparisonReport& r) {
  if (r.backups.empty()) return "";
  double lo = 1e18, hi = 0, iops_hi = 0;
  for (const BackupRun& b : r.backups) {
    for (double v : {b.baseline.p99_us, b.during.p99_us, b.after.p99_us}) {
      if (v > 0) lo = std::min(lo, v), hi = std::max(hi, v);
    }
    iops_hi = std::max({iops_hi, b.baseline.iops, b.during.iops, b.after.iops});
  }
  if (hi == 0) lo = 1, hi = 10;
  const double n = static_cast<double>(r.backups.size());
  Chart p99("Foreground p99 latency: before / during / after each backup", {-0.5, n - 0.5},
            LogAxisFor(lo, hi), "", "p99 (us)", 640, 260);
  Chart iops("Foreground IOPS (completions per second): before / during / after", {-0.5, n - 0.5},
             {0, std::max(1.0, iops_hi * 1.15)}, "", "IOPS", 640, 260);
  std::vector<std::pair<double, std::string>> cats;
  for (size_t i = 0; i < r.backups.size(); ++i) {
    const BackupRun& b = r.backups[i];
    const double x = static_cast<double>(i);
    cats.emplace_back(x, CompareMethodName(b.method));
    const PhaseFigures* phases[] = {&b.baseline, &b.during, &b.after};
    const char* names[] = {"before", "during", "after"};
    const char* colors[] = {"#7f7f7f", "#d62728", "#1f77b4"};
    for (int k = 0; k < 3; ++k) {
      const double bx = x + (k - 1) * 0.27;
      p99.Bar(bx, 0.25, phases[k]->p99_us, colors[k], std::string(CompareMethodName(b.method)) + " " + names[k]);
      iops.Bar(bx, 0.25, phases[k]->iops, colors[k], std::string(CompareMethodName(b.method)) + " " + names[k]);
      p99.Legend(colors[k], names[k], true);
      iops.Legend(colors[k], names[k], true);
    }
  }
  p99.Categories(cats);
  iops.Categories(cats);
  return p99.Svg() + iops.Svg();
}

std::string RtoChart(const ComparisonReport& r) {
  if (r.restores.empty()) return "";
  double xmax = 0, ymin = 1e18, ymax = 0;
  for (const RestoreRun& x : r.restores) {
    xmax = std::max(xmax, static_cast<double>(x.written_bytes) / kBytesPerGiB);
    for (double v : {x.usable_seconds, x.complete_seconds}) {
      if (v > 0) ymin = std::min(ymin, v), ymax = std::max(ymax, v);
    }
  }
  if (ymax == 0) ymin = 0.001, ymax = 1;
  // Log seconds: instant restores take milliseconds, copies seconds.
  Chart c("RTO against data size (log scale)", {0, xmax * 1.08},
          {std::pow(10.0, std::floor(std::log10(ymin))), std::pow(10.0, std::ceil(std::log10(ymax))), true},
          "data written (GiB)", "seconds", 640, 280);
  struct Series {
    const char* method;
    const char* target;
    bool usable;
    const char* label;
    const char* color;
  };
  const Series series[] = {
      {"snapshot", "new", true, "snapshot -> new: usable (instant)", "#2ca02c"},
      {"snapshot", "new", false, "snapshot -> new: hydrated", "#98df8a"},
      {"physical", "new", false, "physical -> new: complete (= usable)", "#d62728"},
      {"snapshot", "existing", false, "snapshot -> existing (rollback)", "#1f77b4"},
      {"physical", "existing", false, "physical -> existing (copy)", "#ff7f0e"},
  };
  for (const Series& s : series) {
    std::vector<std::pair<double, double>> pts;
    for (const RestoreRun& x : r.restores) {
      if (x.method != s.method || x.target != s.target) continue;
      pts.emplace_back(static_cast<double>(x.written_bytes) / kBytesPerGiB,
                       s.usable ? x.usable_seconds : x.complete_seconds);
    }
    c.Line(pts, s.color, s.label, true);
  }
  return c.Svg();
}

std::string RpoChart(const ComparisonReport& r) {
  if (r.rpo.empty()) return "";
  double ymin = 1e18, ymax = 0;
  for (const RpoRun& x : r.rpo) {
    for (double v : {x.max_loss_seconds, x.mean_loss_seconds, x.interval_seconds}) {
      if (v > 0) ymin = std::min(ymin, v / 60), ymax = std::max(ymax, v / 60);
    }
  }
  if (ymax == 0) ymin = 0.1, ymax = 10;
  const double n = static_cast<double>(r.rpo.size());
  Chart c("RPO: data lost per disk failure (simulated clock, measured by restore; log scale)", {-0.5, n - 0.5},
          {std::pow(10.0, std::floor(std::log10(ymin))), std::pow(10.0, std::ceil(std::log10(ymax))), true}, "",
          "minutes", 640, 260);
  std::vector<std::pair<double, std::string>> cats;
  for (size_t i = 0; i < r.rpo.size(); ++i) {
    const RpoRun& x = r.rpo[i];
    const double cx = static_cast<double>(i);
    cats.emplace_back(cx, std::string("logs: ") + LogFrequencyChoiceName(x.log_frequency));
    c.Bar(cx - 0.15, 0.28, x.max_loss_seconds / 60, "#d62728", "max loss");
    c.Bar(cx + 0.15, 0.28, x.mean_loss_seconds / 60, "#ff9896", "mean loss");
    c.Line({{cx - 0.4, x.interval_seconds / 60}, {cx + 0.4, x.interval_seconds / 60}}, "#333",
           "log interval (data: longest gap between data backups)");
  }
  c.Legend("#d62728", "max loss", true);
  c.Legend("#ff9896", "mean loss", true);
  c.Categories(cats);
  return c.Svg();
}

std::string PhaseCell(const PhaseFigures& p) {
  return "<td>" + F(p.iops, 0) + "</td><td>" + F(p.p50_us, 0) + "</td><td>" + F(p.p99_us, 0) + "</td><td>" +
         F(p.p999_us, 0) + "</td>";
}

std::string Pct(double v) { return (v >= 0 ? "+" : "") + F(v, 1) + "%"; }

}  // namespace

Json ReportJson(const ComparisonReport& r) {
  Json backups = Json::array();
  for (const BackupRun& b : r.backups) {
    backups.push_back(Json{{"method", CompareMethodName(b.method)},
                           {"seconds", R(b.seconds)},
                           {"start_seconds", R(b.start_seconds, 4)},
                           {"max_step_seconds", R(b.max_step_seconds, 4)},
                           {"max_loop_gap_seconds", R(b.max_loop_gap_seconds, 4)},
                           {"bytes_read", b.bytes_read},
                           {"bytes_stored", b.bytes_stored},
                           {"bytes_to_copy", b.bytes_to_copy},
                           {"read_mb_per_s", R(b.read_mb_per_s, 1)},
                           {"through_qos", b.through_qos},
                           {"set_id", b.set_id},
                           {"nothing_to_ship", b.nothing_to_ship},
                           {"baseline", PhaseJson(b.baseline)},
                           {"during", PhaseJson(b.during)},
                           {"after", PhaseJson(b.after)},
                           {"p99_impact_pct", R(b.p99_impact_pct, 1)},
                           {"iops_impact_pct", R(b.iops_impact_pct, 1)},
                           {"backup_start_s", R(b.backup_start_s)},
                           {"backup_end_s", R(b.backup_end_s)},
                           {"rate_cap_mb_per_s", R(b.rate_cap_mb_per_s, 1)},
                           {"p99_target_us", R(b.p99_target_us, 1)},
                           {"headroom_mb_per_s", R(b.headroom_mb_per_s, 1)},
                           {"foreground_errors", b.errors}});
  }
  Json restores = Json::array();
  for (const RestoreRun& x : r.restores) {
    restores.push_back(Json{{"method", x.method},
                            {"target", x.target},
                            {"how", x.how},
                            {"written_bytes", x.written_bytes},
                            {"usable_seconds", R(x.usable_seconds, 4)},
                            {"complete_seconds", R(x.complete_seconds, 4)},
                            {"read_bytes", x.read_bytes},
                            {"hydrating_read_p99_us", R(x.hydrating_read_p99_us, 1)},
                            {"after_read_p99_us", R(x.after_read_p99_us, 1)}});
  }
  Json rpo = Json::array();
  for (const RpoRun& x : r.rpo) {
    Json losses = Json::array();
    for (double l : x.loss_seconds) losses.push_back(R(l, 1));
    rpo.push_back(Json{{"log_frequency", LogFrequencyChoiceName(x.log_frequency)},
                       {"policy", x.policy},
                       {"interval_seconds", R(x.interval_seconds, 1)},
                       {"failures", x.failures},
                       {"max_loss_seconds", R(x.max_loss_seconds, 1)},
                       {"mean_loss_seconds", R(x.mean_loss_seconds, 1)},
                       {"max_loss_bytes", x.max_loss_bytes},
                       {"loss_seconds", losses},
                       {"simulated_hours", x.simulated_hours},
                       {"real_seconds", R(x.real_seconds, 2)}});
  }
  Json claims = Json::array();
  for (const Claim& c : r.claims) claims.push_back(Json{{"claim", c.claim}, {"holds", c.holds}, {"evidence", c.evidence}});
  return Json{{"format", "snapdisk-compare"},
              {"version", 1},
              {"started", FormatRfc3339(r.started_unix_ns / 1'000'000'000 * 1'000'000'000)},
              {"real_seconds", R(r.real_seconds, 1)},
              {"scenario", ScenarioJson(r.scenario)},
              {"profile",
               {{"level", EssdLevelName(r.profile.level)},
                {"capacity_bytes", r.profile.capacity_bytes},
                {"iops_max", r.profile.iops_max},
                {"throughput_mb_per_s", R(static_cast<double>(r.profile.throughput_bytes_per_s) / 1e6, 1)},
                {"latency_us", R(static_cast<double>(r.profile.write_latency_ns) / 1e3, 1)},
                {"describe", r.profile.Describe()}}},
              {"backups", backups},
              {"restores", restores},
              {"physical_restore_fit",
               {{"seconds_per_gib", R(r.physical_restore_fit.slope, 3)},
                {"intercept_seconds", R(r.physical_restore_fit.intercept, 3)},
                {"r2", R(r.physical_restore_fit.r2, 4)}}},
              {"rpo", rpo},
              {"claims", claims},
              {"assumptions", r.assumptions}};
}

std::string TimelineCsv(const ComparisonReport& r) {
  std::string out = "method,second,phase,iops,p50_us,p99_us,p999_us\n";
  for (const BackupRun& b : r.backups) {
    for (const TimelinePoint& p : b.timeline) {
      out += std::string(CompareMethodName(b.method)) + "," + std::to_string(p.second) + "," + p.phase + "," +
             std::to_string(p.completed) + "," + F(p.p50_us, 1) + "," + F(p.p99_us, 1) + "," + F(p.p999_us, 1) +
             "\n";
    }
  }
  return out;
}

std::string ReportHtml(const ComparisonReport& r) {
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
       "<title>snapdisk compare: backup methods side by side</title>\n"
       "<style>body{font-family:sans-serif;max-width:1320px;margin:1em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;"
       "text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}.holds{color:#1a7f37;"
       "font-weight:bold}.fails{color:#c62828;font-weight:bold}.grid{display:flex;flex-wrap:wrap;gap:8px}"
       "h2{margin-top:1.6em;border-bottom:1px solid #ddd}small{color:#666}</style></head><body>\n";
  o << "<h1>snapdisk compare</h1>\n<p>" << Esc(r.profile.Describe()) << "; foreground: "
    << Esc(ForegroundDescription(r.scenario)) << "; data for the backups: "
    << HumanBytes(r.scenario.written.front()) << "; seed " << r.scenario.seed << ". Run "
    << Esc(FormatRfc3339(r.started_unix_ns / 1'000'000'000 * 1'000'000'000)) << ", " << F(r.real_seconds, 0) << " s.</p>\n";

  o << "<h2>The seed's claims, measured</h2>\n<table><tr><th class=l>claim</th><th>holds</th>"
       "<th class=l>evidence</th></tr>\n";
  for (const Claim& c : r.claims) {
    o << "<tr><td class=l>" << Esc(c.claim) << "</td><td class=\"" << (c.holds ? "holds\">holds" : "fails\">does not hold")
      << "</td><td class=l>" << Esc(c.evidence) << "</td></tr>\n";
  }
  o << "</table>\n";

  if (!r.backups.empty()) {
    o << "<h2>Backups: what each costs the workload</h2>\n<div class=grid>" << ImpactCharts(r) << "</div>\n";
    o << "<table><tr><th class=l rowspan=2>method</th><th rowspan=2>backup s</th><th rowspan=2>read</th>"
         "<th rowspan=2>stored</th><th rowspan=2>MB/s</th><th rowspan=2>through QoS</th>"
         "<th colspan=4>before: IOPS, p50/p99/p99.9 us</th><th colspan=4>during</th><th colspan=4>after</th>"
         "<th rowspan=2>p99 impact</th><th rowspan=2>IOPS impact</th></tr><tr>";
    for (int i = 0; i < 3; ++i) o << "<th>IOPS</th><th>p50</th><th>p99</th><th>p99.9</th>";
    o << "</tr>\n";
    for (const BackupRun& b : r.backups) {
      o << "<tr><td class=l>" << CompareMethodName(b.method) << "</td><td>" << F(b.seconds, 2) << "</td><td>"
        << HumanBytes(b.bytes_read) << "</td><td>" << HumanBytes(b.bytes_stored) << "</td><td>"
        << F(b.read_mb_per_s, 1) << "</td><td>" << (b.through_qos ? "yes" : "no") << "</td>" << PhaseCell(b.baseline)
        << PhaseCell(b.during) << PhaseCell(b.after) << "<td>" << Pct(b.p99_impact_pct) << "</td><td>"
        << Pct(b.iops_impact_pct) << "</td></tr>\n";
    }
    o << "</table>\n<h2>Latency timelines (the backup window shaded)</h2>\n<div class=grid>";
    for (const BackupRun& b : r.backups) o << TimelineChart(b);
    o << "</div>\n";
  }
  if (!r.restores.empty()) {
    o << "<h2>Restores: time to get the disk back (RTO)</h2>\n" << RtoChart(r);
    o << "<p>Physical copy restore to a new volume: " << F(r.physical_restore_fit.intercept, 2) << " s + "
      << F(r.physical_restore_fit.slope, 2) << " s/GiB (r&sup2; = " << F(r.physical_restore_fit.r2, 3)
      << ").</p>\n<table><tr><th class=l>restore</th><th class=l>target</th><th class=l>how</th><th>data</th>"
         "<th>usable s</th><th>complete s</th><th>read from store</th><th>read p99 while hydrating us</th>"
         "<th>after us</th></tr>\n";
    for (const RestoreRun& x : r.restores) {
      o << "<tr><td class=l>" << x.method << "</td><td class=l>" << x.target << "</td><td class=l>" << x.how
        << "</td><td>" << HumanBytes(x.written_bytes) << "</td><td>" << F(x.usable_seconds, 4) << "</td><td>"
        << F(x.complete_seconds, 3) << "</td><td>" << HumanBytes(x.read_bytes) << "</td><td>"
        << (x.how == "instant" ? F(x.hydrating_read_p99_us, 0) : "") << "</td><td>"
        << (x.how == "instant" ? F(x.after_read_p99_us, 0) : "") << "</td></tr>\n";
    }
    o << "</table>\n";
  }
  if (!r.rpo.empty()) {
    o << "<h2>Recovery point (RPO): data lost when the disk fails</h2>\n" << RpoChart(r);
    o << "<table><tr><th class=l>policy</th><th>simulated h</th><th>failures</th><th>max loss s</th>"
         "<th>mean loss s</th><th>max loss bytes</th><th class=l>each loss s</th></tr>\n";
    for (const RpoRun& x : r.rpo) {
      std::string losses;
      for (double l : x.loss_seconds) losses += (losses.empty() ? "" : ", ") + F(l, 0);
      o << "<tr><td class=l>" << Esc(x.policy) << "</td><td>" << F(x.simulated_hours, 0) << "</td><td>" << x.failures
        << "</td><td>" << F(x.max_loss_seconds, 0) << "</td><td>" << F(x.mean_loss_seconds, 0) << "</td><td>"
        << x.max_loss_bytes << "</td><td class=l>" << losses << "</td></tr>\n";
    }
    o << "</table>\n";
  }
  o << "<h2>What the simulation assumes</h2>\n<ul>";
  for (const std::string& a : r.assumptions) o << "<li>" << Esc(a) << "</li>\n";
  o << "</ul>\n<p><small>report.json holds every figure; timeline.csv the per-second series.</small></p>\n"
       "</body></html>\n";
  return o.str();
}

std::string ReportText(const ComparisonReport& r) {
  std::ostringstream o;
  char line[512];
  o << r.profile.Describe() << "; foreground: " << ForegroundDescription(r.scenario) << "; data "
    << HumanBytes(r.scenario.written.front()) << "\n\n";
  if (!r.backups.empty()) {
    std::snprintf(line, sizeof line, "%-15s %8s %10s %10s %4s | %9s %9s %8s | %9s %9s %8s\n", "backup", "seconds",
                  "read", "stored", "QoS", "p99 before", "during", "impact", "IOPS bef.", "during", "impact");
    o << line;
    for (const BackupRun& b : r.backups) {
      std::snprintf(line, sizeof line, "%-15s %8.2f %10s %10s %4s | %7.0fus %7.0fus %8s | %9.0f %9.0f %8s\n",
                    CompareMethodName(b.method), b.seconds, HumanBytes(b.bytes_read).c_str(),
                    HumanBytes(b.bytes_stored).c_str(), b.through_qos ? "yes" : "no", b.baseline.p99_us,
                    b.during.p99_us, Pct(b.p99_impact_pct).c_str(), b.baseline.iops, b.during.iops,
                    Pct(b.iops_impact_pct).c_str());
      o << line;
    }
    o << "\n";
  }
  if (!r.restores.empty()) {
    std::snprintf(line, sizeof line, "%-9s %-9s %-9s %10s %11s %12s %14s\n", "restore", "target", "how", "data",
                  "usable s", "complete s", "read p99 hyd.");
    o << line;
    for (const RestoreRun& x : r.restores) {
      std::snprintf(line, sizeof line, "%-9s %-9s %-9s %10s %11.4f %12.3f %14s\n", x.method.c_str(),
                    x.target.c_str(), x.how.c_str(), HumanBytes(x.written_bytes).c_str(), x.usable_seconds,
                    x.complete_seconds, x.how == "instant" ? (F(x.hydrating_read_p99_us, 0) + "us").c_str() : "");
      o << line;
    }
    o << "physical copy restore: " << F(r.physical_restore_fit.intercept, 2) << " s + "
      << F(r.physical_restore_fit.slope, 2) << " s/GiB (r^2 " << F(r.physical_restore_fit.r2, 3) << ")\n\n";
  }
  for (const RpoRun& x : r.rpo) {
    std::snprintf(line, sizeof line, "RPO logs %-5s max loss %7.0f s, mean %7.0f s over %u failures (%s)\n",
                  LogFrequencyChoiceName(x.log_frequency), x.max_loss_seconds, x.mean_loss_seconds, x.failures,
                  x.policy.c_str());
    o << line;
  }
  if (!r.rpo.empty()) o << "\n";
  for (const Claim& c : r.claims) {
    o << (c.holds ? "  HOLDS  " : "  FAILS  ") << c.claim << "\n           " << c.evidence << "\n";
  }
  return o.str();
}

Status WriteReport(const ComparisonReport& r, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot make the report directory " + dir + ": " + ec.message());
  std::vector<std::pair<std::string, std::string>> files = {
      {"report.json", ReportJson(r).dump(2) + "\n"},
      {"timeline.csv", TimelineCsv(r)},
      {"report.html", ReportHtml(r)},
  };
  // A fio workload's own report of each experiment, to hold ours against.
  for (const BackupRun& b : r.backups) {
    if (!b.fio_output.empty()) files.emplace_back(std::string("fio-") + CompareMethodName(b.method) + ".txt", b.fio_output);
  }
  for (const auto& [name, text] : files) {
    const std::string path = dir + "/" + name;
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f << text;
      f.flush();
      if (!f) return Status::IOError("cannot write " + tmp);
    }
    std::filesystem::rename(tmp, path, ec);
    if (ec) return Status::IOError("cannot rename " + tmp + " to " + path + ": " + ec.message());
  }
  return Status::OK();
}

}  // namespace snapdisk
