// The comparator's outputs (compare.h's ComparisonReport, written down):
//  - report.json: the public contract (names below never change meaning;
//    more may be added):
//      backups:  [{method, seconds, bytes_read, bytes_stored, baseline,
//                  during, after (each {iops, p50_us, p99_us, p999_us}),
//                  p99_impact_pct, iops_impact_pct, ...}]
//      restores: [{method ("snapshot"|"physical"), target ("new"|"existing"),
//                  written_bytes, usable_seconds, complete_seconds,
//                  hydrating_read_p99_us, ...}]
//      rpo:      [{log_frequency ("5m"|"30m"|"data"), failures,
//                  max_loss_seconds, mean_loss_seconds, max_loss_bytes, ...}]
//      claims:   [{claim, holds, evidence}]
//    plus scenario, profile, physical_restore_fit, assumptions, real_seconds.
//  - timeline.csv: one row per second per backup experiment: method,
//    second, phase, iops, p50_us, p99_us, p999_us.
//  - report.html: one self-contained file (inline SVG and CSS, no script,
//    no network): latency timelines with the backup window shaded, p99 and
//    IOPS impact side by side, RTO against data size, RPO loss per log
//    frequency, the claims table, and what the simulation assumes.
//  - ReportText: the compact table printed on a terminal.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "bench/comparator/compare.h"
#include "disk/status.h"

namespace snapdisk {

nlohmann::ordered_json ReportJson(const ComparisonReport& report);
std::string TimelineCsv(const ComparisonReport& report);
std::string ReportHtml(const ComparisonReport& report);
std::string ReportText(const ComparisonReport& report);

// Writes report.json, timeline.csv and report.html into `dir` (made if
// missing), each through a temporary file renamed into place.
Status WriteReport(const ComparisonReport& report, const std::string& dir);

}  // namespace snapdisk
