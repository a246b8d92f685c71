#include "snapshot/policy.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "snapshot/backup_set.h"

namespace snapdisk {

namespace {

using Json = nlohmann::ordered_json;

constexpr int64_t kNsPerMinute = int64_t{60} * 1'000'000'000;
constexpr int64_t kNsPerDay = 1440 * kNsPerMinute;
constexpr uint32_t kMinutesPerDay = 24 * 60;
constexpr uint32_t kMinWindowMin = 60;
constexpr uint64_t kPolicyVersion = 1;
constexpr const char* kDayNames[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
constexpr const char* kDayFullNames[7] = {"monday", "tuesday",  "wednesday", "thursday",
                                          "friday", "saturday", "sunday"};
constexpr uint8_t kAllDays = 0x7f;
constexpr int64_t kNsPer5Min = 5 * kNsPerMinute;
constexpr int64_t kNsPer30Min = 30 * kNsPerMinute;
// Occurrences are looked for this many days around a time: a week and a bit.
constexpr int kSearchDays = 9;

std::string Quoted(std::string_view text) { return "'" + std::string(text) + "'"; }

std::string_view Trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}

// 1-1440: a window whose end equals its start is the whole day.
uint32_t WindowLengthMin(uint32_t start_min, uint32_t end_min) {
  const uint32_t length = (end_min + kMinutesPerDay - start_min) % kMinutesPerDay;
  return length == 0 ? kMinutesPerDay : length;
}

std::string FormatClock(uint32_t minutes) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%02u:%02u", minutes / 60, minutes % 60);
  return buf;
}

Status CheckWindow(uint32_t start_min, uint32_t end_min) {
  if (start_min >= kMinutesPerDay) {
    return Status::InvalidArgument("window start must be 0-1439 minutes after 00:00 (got " +
                                   std::to_string(start_min) + ")");
  }
  if (end_min >= kMinutesPerDay) {
    return Status::InvalidArgument("window end must be 0-1439 minutes after 00:00 (got " +
                                   std::to_string(end_min) + ")");
  }
  const uint32_t length = WindowLengthMin(start_min, end_min);
  if (length < kMinWindowMin) {
    return Status::InvalidArgument("window must be 1 to 24 hours long (got " +
                                   std::to_string(length) +
                                   " minutes: " + FormatWindow(start_min, end_min) + ")");
  }
  return Status::OK();
}

// "HH:MM" (H or HH, MM); `allow_24`: "24:00" too (as 1440).
bool ParseClock(std::string_view text, bool allow_24, uint32_t* minutes, std::string* error) {
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 2 || text.size() != colon + 3) {
    return false;
  }
  uint32_t hour = 0;
  for (size_t i = 0; i < colon; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
    hour = hour * 10 + static_cast<uint32_t>(text[i] - '0');
  }
  uint32_t minute = 0;
  for (size_t i = colon + 1; i < text.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
    minute = minute * 10 + static_cast<uint32_t>(text[i] - '0');
  }
  if (minute > 59) {
    *error = "minutes must be 00-59 (got " + std::to_string(minute) + ")";
    return false;
  }
  if (hour > 23 && !(allow_24 && hour == 24 && minute == 0)) {
    *error = "hours must be 00-23 (got " + std::to_string(hour) + ")";
    return false;
  }
  *minutes = hour * 60 + minute;
  return true;
}

// The start of the occurrence on day `day` (whether or not it is a cycle day).
int64_t OccurrenceStart(const BackupPolicy& policy, int64_t day) {
  return day * kNsPerDay + static_cast<int64_t>(policy.window_start_min) * kNsPerMinute;
}

bool IsCycleDay(const BackupPolicy& policy, int64_t day) {
  return (policy.cycle_days >> WeekdayOfDay(day)) & 1;
}

// The first occurrence starting at or after `t`.
int64_t FirstOccurrenceAtOrAfter(const BackupPolicy& policy, int64_t t) {
  const int64_t first_day = UnixDay(t) - 1;
  for (int64_t day = first_day; day < first_day + kSearchDays; ++day) {
    if (IsCycleDay(policy, day) && OccurrenceStart(policy, day) >= t) {
      return OccurrenceStart(policy, day);
    }
  }
  SNAPDISK_CHECK(false, "a valid policy has an occurrence every week");
  return 0;
}

// The last occurrence starting at or before `t`.
int64_t LastOccurrenceAtOrBefore(const BackupPolicy& policy, int64_t t) {
  const int64_t last_day = UnixDay(t);
  for (int64_t day = last_day; day > last_day - kSearchDays; --day) {
    if (IsCycleDay(policy, day) && OccurrenceStart(policy, day) <= t) {
      return OccurrenceStart(policy, day);
    }
  }
  SNAPDISK_CHECK(false, "a valid policy has an occurrence every week");
  return 0;
}

int64_t LogPeriodNs(LogFrequency frequency) {
  return frequency == LogFrequency::kEvery5Min ? kNsPer5Min : kNsPer30Min;
}

bool InMethodFamily(PolicyMethod method, BackupType type) {
  if (method == PolicyMethod::kSnapshot) return type == BackupType::kSnapshot;
  return type == BackupType::kFull || type == BackupType::kDiff || type == BackupType::kIncr;
}

// JSON field readers for DecodePolicy: InvalidArgument naming the field.
Status FieldError(std::string_view field, std::string_view want, const Json& value) {
  return Status::InvalidArgument("backup policy: field '" + std::string(field) + "' must be " +
                                 std::string(want) + " (got " + value.dump() + ")");
}

Status ReadString(const Json& object, std::string_view field, std::string* out) {
  const Json& value = object.at(std::string(field));
  if (!value.is_string()) return FieldError(field, "a string", value);
  *out = value.get<std::string>();
  return Status::OK();
}

Status ReadUint32(const Json& object, std::string_view field, std::string_view range,
                  uint32_t* out) {
  const Json& value = object.at(std::string(field));
  if (!value.is_number_unsigned() || value.get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
    return FieldError(field, "a whole number " + std::string(range), value);
  }
  *out = static_cast<uint32_t>(value.get<uint64_t>());
  return Status::OK();
}

Result<BackupPolicy> DecodePolicyObject(const Json& object) {
  if (!object.is_object()) {
    return Status::InvalidArgument("backup policy must be a JSON object (got " +
                                   std::string(object.type_name()) + ")");
  }
  static constexpr const char* kFields[] = {"version",     "store_dir",      "method",
                                            "incremental", "retention_days", "cycle",
                                            "window",      "log_frequency",  "log_retention_days"};
  for (const auto& [key, value] : object.items()) {
    if (std::find(std::begin(kFields), std::end(kFields), key) == std::end(kFields)) {
      return Status::InvalidArgument("backup policy: unknown field " + Quoted(key));
    }
  }
  for (const char* field : kFields) {
    if (!object.contains(field)) {
      return Status::InvalidArgument("backup policy: field '" + std::string(field) +
                                     "' is missing");
    }
  }
  const Json& version = object.at("version");
  if (!version.is_number_unsigned() || version.get<uint64_t>() == 0) {
    return FieldError("version", "a positive whole number", version);
  }
  if (version.get<uint64_t>() > kPolicyVersion) {
    return Status::Unsupported("backup policy version " + version.dump() +
                               " is newer than this snapdisk understands (" +
                               std::to_string(kPolicyVersion) + ")");
  }

  BackupPolicy policy;
  SNAPDISK_RETURN_IF_ERROR(ReadString(object, "store_dir", &policy.store_dir));
  std::string text;
  SNAPDISK_RETURN_IF_ERROR(ReadString(object, "method", &text));
  Result<PolicyMethod> method = ParsePolicyMethod(text);
  if (!method.ok()) return method.status().WithContext("backup policy");
  policy.method = *method;
  const Json& incremental = object.at("incremental");
  if (!incremental.is_boolean()) return FieldError("incremental", "true or false", incremental);
  policy.incremental = incremental.get<bool>();
  SNAPDISK_RETURN_IF_ERROR(
      ReadUint32(object, "retention_days", "of days, 7-730", &policy.retention_days));
  SNAPDISK_RETURN_IF_ERROR(ReadString(object, "cycle", &text));
  Result<uint8_t> cycle = ParseCycle(text);
  if (!cycle.ok()) return cycle.status().WithContext("backup policy");
  policy.cycle_days = *cycle;
  SNAPDISK_RETURN_IF_ERROR(ReadString(object, "window", &text));
  Status window = ParseWindow(text, &policy.window_start_min, &policy.window_end_min);
  if (!window.ok()) return window.WithContext("backup policy");
  SNAPDISK_RETURN_IF_ERROR(ReadString(object, "log_frequency", &text));
  Result<LogFrequency> frequency = ParseLogFrequency(text);
  if (!frequency.ok()) return frequency.status().WithContext("backup policy");
  policy.log_frequency = *frequency;
  SNAPDISK_RETURN_IF_ERROR(ReadUint32(object, "log_retention_days",
                                      "of days, 7 to the data retention",
                                      &policy.log_retention_days));
  SNAPDISK_RETURN_IF_ERROR(ValidatePolicy(policy).WithContext("backup policy"));
  return policy;
}

}  // namespace

// ---- Names -------------------------------------------------------------------

const char* PolicyMethodName(PolicyMethod method) {
  switch (method) {
    case PolicyMethod::kSnapshot:
      return "snapshot";
    case PolicyMethod::kPhysical:
      return "physical";
  }
  return "unknown";
}

const char* LogFrequencyName(LogFrequency frequency) {
  switch (frequency) {
    case LogFrequency::kEvery5Min:
      return "5m";
    case LogFrequency::kEvery30Min:
      return "30m";
    case LogFrequency::kWithData:
      return "data";
  }
  return "unknown";
}

Result<PolicyMethod> ParsePolicyMethod(std::string_view name) {
  if (name == "snapshot") return PolicyMethod::kSnapshot;
  if (name == "physical") return PolicyMethod::kPhysical;
  return Status::InvalidArgument("backup method must be snapshot or physical (got " + Quoted(name) +
                                 ")");
}

Result<LogFrequency> ParseLogFrequency(std::string_view name) {
  if (name == "5m") return LogFrequency::kEvery5Min;
  if (name == "30m") return LogFrequency::kEvery30Min;
  if (name == "data") return LogFrequency::kWithData;
  return Status::InvalidArgument(
      "log frequency must be 5m, 30m or data (with each data backup) (got " + Quoted(name) + ")");
}

// ---- Cycle and window --------------------------------------------------------

Result<uint8_t> ParseCycle(std::string_view text) {
  const std::string_view all = Trim(text);
  if (all.empty()) {
    return Status::InvalidArgument("cycle is empty: give at least two days, e.g. mon,thu");
  }
  uint8_t bits = 0;
  std::string_view rest = all;
  while (true) {
    const size_t comma = rest.find(',');
    const std::string name = Lower(Trim(rest.substr(0, comma)));
    if (name.empty()) {
      return Status::InvalidArgument("cycle has an empty day in " + Quoted(all) +
                                     " (days: mon,tue,wed,thu,fri,sat,sun)");
    }
    int day = -1;
    for (int i = 0; i < 7; ++i) {
      if (name == kDayNames[i] || name == kDayFullNames[i]) day = i;
    }
    if (day < 0) {
      return Status::InvalidArgument("cycle: unknown day " + Quoted(name) + " in " + Quoted(all) +
                                     " (days: mon,tue,wed,thu,fri,sat,sun)");
    }
    if ((bits >> day) & 1) {
      return Status::InvalidArgument("cycle names " + std::string(kDayNames[day]) + " twice in " +
                                     Quoted(all));
    }
    bits = static_cast<uint8_t>(bits | (1u << day));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return bits;
}

std::string FormatCycle(uint8_t cycle_days) {
  std::string out;
  for (int day = 0; day < 7; ++day) {
    if (!((cycle_days >> day) & 1)) continue;
    if (!out.empty()) out += ',';
    out += kDayNames[day];
  }
  return out;
}

Status ParseWindow(std::string_view text, uint32_t* start_min, uint32_t* end_min) {
  const std::string_view all = Trim(text);
  const std::string bad_form =
      "window must be HH:MM-HH:MM (UTC), e.g. 02:00-03:00 (got " + Quoted(all) + ")";
  const size_t dash = all.find('-');
  if (dash == std::string_view::npos) return Status::InvalidArgument(bad_form);
  std::string error;
  uint32_t start = 0;
  uint32_t end = 0;
  if (!ParseClock(Trim(all.substr(0, dash)), /*allow_24=*/false, &start, &error) ||
      !ParseClock(Trim(all.substr(dash + 1)), /*allow_24=*/true, &end, &error)) {
    if (error.empty()) return Status::InvalidArgument(bad_form);
    return Status::InvalidArgument("window: " + error + " in " + Quoted(all));
  }
  end %= kMinutesPerDay;  // 24:00 is midnight
  SNAPDISK_RETURN_IF_ERROR(CheckWindow(start, end));
  *start_min = start;
  *end_min = end;
  return Status::OK();
}

Status ParseNewWindow(std::string_view text, uint32_t* start_min, uint32_t* end_min) {
  uint32_t start = 0, end = 0;
  SNAPDISK_RETURN_IF_ERROR(ParseWindow(text, &start, &end));
  const std::string_view all = Trim(text);
  const std::string_view written_end = Trim(all.substr(all.find('-') + 1));
  if (start == end && !(start == 0 && written_end.substr(0, 2) == "24")) {
    // Only 00:00-24:00 names the whole day; 02:00-02:00 as typed names no time.
    return Status::InvalidArgument("window " + Quoted(all) +
                                   " starts and ends at the same time: it is empty (the whole "
                                   "day is 00:00-24:00)");
  }
  *start_min = start;
  *end_min = end;
  return Status::OK();
}

std::string FormatWindow(uint32_t start_min, uint32_t end_min) {
  if (start_min == 0 && end_min == 0) return "00:00-24:00";
  return FormatClock(start_min) + "-" + FormatClock(end_min);
}

// ---- Validation and JSON -----------------------------------------------------

Status ValidatePolicy(const BackupPolicy& policy) {
  if (policy.store_dir.empty()) {
    return Status::InvalidArgument("store_dir must name the backup store's directory (got '')");
  }
  if (policy.method != PolicyMethod::kSnapshot && policy.method != PolicyMethod::kPhysical) {
    return Status::InvalidArgument("backup method must be snapshot or physical (got " +
                                   std::to_string(static_cast<int>(policy.method)) + ")");
  }
  if (policy.retention_days < kMinRetentionDays || policy.retention_days > kMaxRetentionDays) {
    return Status::InvalidArgument("retention must be " + std::to_string(kMinRetentionDays) + "-" +
                                   std::to_string(kMaxRetentionDays) + " days (got " +
                                   std::to_string(policy.retention_days) + ")");
  }
  if ((policy.cycle_days & ~kAllDays) != 0) {
    char bits[8];
    std::snprintf(bits, sizeof bits, "0x%02x", policy.cycle_days);
    return Status::InvalidArgument("cycle days must be bits 0 (mon) to 6 (sun) (got " +
                                   std::string(bits) + ")");
  }
  if (std::popcount(policy.cycle_days) < 2) {
    const std::string got = policy.cycle_days == 0 ? "none" : FormatCycle(policy.cycle_days);
    return Status::InvalidArgument("cycle needs at least two days a week (got " + got + ")");
  }
  SNAPDISK_RETURN_IF_ERROR(CheckWindow(policy.window_start_min, policy.window_end_min));
  if (policy.incremental && policy.method == PolicyMethod::kSnapshot) {
    return Status::InvalidArgument(
        "incremental backup is not available with method snapshot (every snapshot backup is a "
        "complete image); use method physical or turn incremental off");
  }
  if (policy.log_frequency != LogFrequency::kEvery5Min &&
      policy.log_frequency != LogFrequency::kEvery30Min &&
      policy.log_frequency != LogFrequency::kWithData) {
    return Status::InvalidArgument("log frequency must be 5m, 30m or data (got " +
                                   std::to_string(static_cast<int>(policy.log_frequency)) + ")");
  }
  if (policy.log_frequency == LogFrequency::kWithData && policy.method == PolicyMethod::kSnapshot) {
    return Status::InvalidArgument(
        "log frequency data (with each data backup) is not available with method snapshot "
        "(allowed: 5m, 30m)");
  }
  if (policy.log_retention_days < kMinRetentionDays ||
      policy.log_retention_days > policy.retention_days) {
    return Status::InvalidArgument("log retention must be " + std::to_string(kMinRetentionDays) +
                                   "-" + std::to_string(policy.retention_days) +
                                   " days, at most the data retention (got " +
                                   std::to_string(policy.log_retention_days) + ")");
  }
  return Status::OK();
}

std::string EncodePolicy(const BackupPolicy& policy) {
  Json object;
  object["version"] = kPolicyVersion;
  object["store_dir"] = policy.store_dir;
  object["method"] = PolicyMethodName(policy.method);
  object["incremental"] = policy.incremental;
  object["retention_days"] = policy.retention_days;
  object["cycle"] = FormatCycle(policy.cycle_days);
  object["window"] = FormatWindow(policy.window_start_min, policy.window_end_min);
  object["log_frequency"] = LogFrequencyName(policy.log_frequency);
  object["log_retention_days"] = policy.log_retention_days;
  // A store_dir that is not UTF-8 is written with replacement characters
  // rather than throwing.
  return object.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<BackupPolicy> DecodePolicy(std::string_view json) {
  try {
    const Json object = Json::parse(json.begin(), json.end());
    return DecodePolicyObject(object);
  } catch (const Json::exception& e) {
    return Status::InvalidArgument(std::string("backup policy is not valid JSON: ") + e.what());
  }
}

// ---- Keeping the policy with the volume -------------------------------------

Status SetPolicy(Pool& pool, std::string_view volume, const BackupPolicy& policy) {
  const std::string context = "backup policy of volume " + Quoted(volume);
  SNAPDISK_RETURN_IF_ERROR(ValidatePolicy(policy).WithContext(context));
  SNAPDISK_ASSIGN_OR_RETURN(const VolumeInfo info, pool.GetVolume(volume));
  (void)info;
  Result<std::string> previous = pool.GetAttribute(volume, kPolicyAttribute);
  if (!previous.ok() && !previous.status().IsNotFound()) return previous.status();
  SNAPDISK_ASSIGN_OR_RETURN(const Pool::LogInfo log, pool.GetLogInfo(volume));
  if (!log.enabled) SNAPDISK_RETURN_IF_ERROR(pool.SetLogEnabled(volume, true));
  SNAPDISK_RETURN_IF_ERROR(pool.SetLogRequired(volume, true));
  Status stored = pool.SetAttribute(volume, kPolicyAttribute, EncodePolicy(policy));
  if (!stored.ok()) {
    if (!previous.ok()) {
      // Undo what this call changed; the error that matters is `stored`.
      Status undo = pool.SetLogRequired(volume, false);
      if (undo.ok() && !log.enabled) undo = pool.SetLogEnabled(volume, false);
      (void)undo;
    }
    return stored.WithContext(context);
  }
  return Status::OK();
}

Result<std::optional<BackupPolicy>> GetPolicy(Pool& pool, std::string_view volume) {
  SNAPDISK_ASSIGN_OR_RETURN(const VolumeInfo info, pool.GetVolume(volume));
  (void)info;
  Result<std::string> value = pool.GetAttribute(volume, kPolicyAttribute);
  if (!value.ok()) {
    if (value.status().IsNotFound()) return std::optional<BackupPolicy>();
    return value.status();
  }
  Result<BackupPolicy> policy = DecodePolicy(*value);
  if (!policy.ok()) {
    return Status::Corruption("the backup policy of volume " + Quoted(volume) + " (attribute " +
                              std::string(kPolicyAttribute) +
                              ") is unreadable: " + policy.status().ToString());
  }
  return std::optional<BackupPolicy>(std::move(policy).value());
}

Status RemovePolicy(Pool& pool, std::string_view volume) {
  SNAPDISK_ASSIGN_OR_RETURN(const VolumeInfo info, pool.GetVolume(volume));
  (void)info;
  Result<std::string> value = pool.GetAttribute(volume, kPolicyAttribute);
  if (!value.ok()) {
    if (value.status().IsNotFound()) {
      return Status::NotFound("volume " + Quoted(volume) + " has no backup policy");
    }
    return value.status();
  }
  SNAPDISK_RETURN_IF_ERROR(pool.RemoveAttribute(volume, kPolicyAttribute));
  return pool.SetLogRequired(volume, false);
}

// ---- Planning ----------------------------------------------------------------

int64_t UnixDay(int64_t unix_ns) { return FloorDiv(unix_ns, kNsPerDay); }

int WeekdayOfDay(int64_t unix_day) {
  // 1970-01-01 was a Thursday (3 with Monday 0).
  return static_cast<int>(((unix_day % 7) + 7 + 3) % 7);
}

ScheduleDecision PlanSchedule(const BackupPolicy& policy, const ScheduleFacts& facts,
                              int64_t now_unix_ns) {
  SNAPDISK_CHECK((policy.cycle_days & kAllDays) != 0, "PlanSchedule needs a valid policy");
  ScheduleDecision decision;
  int64_t next_ns = std::numeric_limits<int64_t>::max();

  // Data: the earliest occurrence not served by a set of the method.
  const int64_t served_before = facts.last_data_unix_ns
                                    ? *facts.last_data_unix_ns + 1
                                    : UnixDay(facts.watch_from_unix_ns) * kNsPerDay;
  const int64_t first_unserved = FirstOccurrenceAtOrAfter(policy, served_before);
  if (first_unserved > now_unix_ns) {
    next_ns = first_unserved;
  } else if (now_unix_ns < facts.retry_data_at_unix_ns) {
    next_ns = facts.retry_data_at_unix_ns;
  } else {
    decision.data_due_unix_ns = first_unserved;
    if (policy.method == PolicyMethod::kSnapshot) {
      decision.data_method = BackupMethod::kSnapshot;
    } else {
      const int64_t latest_day = UnixDay(LastOccurrenceAtOrBefore(policy, now_unix_ns));
      const int64_t week_start_ns = (latest_day - WeekdayOfDay(latest_day)) * kNsPerDay;
      const bool full_this_week =
          facts.last_full_unix_ns && *facts.last_full_unix_ns >= week_start_ns;
      decision.data_method =
          full_this_week && policy.incremental ? BackupMethod::kIncr : BackupMethod::kFull;
    }
  }

  // Log.
  if (policy.log_frequency == LogFrequency::kWithData) {
    if (decision.data_method) {
      decision.log_due = true;
      decision.log_due_unix_ns = decision.data_due_unix_ns;
    }
  } else {
    const int64_t period_ns = LogPeriodNs(policy.log_frequency);
    // The first period boundary after the last cut; with no cut yet, the
    // boundary the first sight falls in (the writes so far are due at once).
    const int64_t first_boundary =
        facts.last_log_unix_ns ? (FloorDiv(*facts.last_log_unix_ns, period_ns) + 1) * period_ns
                               : FloorDiv(facts.watch_from_unix_ns, period_ns) * period_ns;
    if (first_boundary <= now_unix_ns) {
      decision.log_due = true;
      decision.log_due_unix_ns = first_boundary;
    } else {
      next_ns = std::min(next_ns, first_boundary);
    }
  }

  decision.next_due_unix_ns = decision.data_method || decision.log_due ? now_unix_ns : next_ns;
  return decision;
}

// ---- Scheduler ---------------------------------------------------------------

namespace {

// What the scheduler keeps of a set.
struct SetSummary {
  std::string id;
  BackupType type = BackupType::kFull;
  uint64_t volume_id = 0;
  uint64_t lineage = 0;
  int64_t started_unix_ns = 0;
};

SetSummary Summarize(const BackupSet& set) {
  return SetSummary{set.id, set.type, set.volume_id, set.lineage, set.started_unix_ns};
}

std::string CanonicalDir(const std::string& dir) {
  std::error_code error;
  std::filesystem::path path = std::filesystem::weakly_canonical(dir, error);
  if (error) return std::filesystem::path(dir).lexically_normal().string();
  std::string out = path.string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

}  // namespace

struct Scheduler::VolumeState {
  std::string volume;
  uint64_t volume_id = 0;
  std::string policy_json;  // as last seen: a change restarts `watch_from_unix_ns`
  int64_t watch_from_unix_ns = 0;
  bool loaded = false;
  std::map<std::string, SetSummary> sets;  // by manifest key
  int64_t retry_data_at_unix_ns = 0;
  std::optional<int64_t> last_log_attempt_unix_ns;
  bool problem_reported = false;  // a store mismatch or a bad policy, for this policy
  bool seen = false;              // has a policy at this tick
};

Scheduler::Scheduler(Pool& pool, WormStore& store, SchedulerOptions options)
    : pool_(pool), store_(store), options_(std::move(options)) {
  SNAPDISK_CHECK(options_.expire_interval_ns > 0, "expire_interval_ns must be positive");
  SNAPDISK_CHECK(options_.retry_interval_ns > 0, "retry_interval_ns must be positive");
  SNAPDISK_CHECK(options_.worker_threads >= 1, "worker_threads must be at least 1");
  if (!options_.store_dir.empty()) canonical_store_dir_ = CanonicalDir(options_.store_dir);
}

Scheduler::~Scheduler() = default;

bool Scheduler::StoreMatches(const BackupPolicy& policy) const {
  return canonical_store_dir_.empty() || CanonicalDir(policy.store_dir) == canonical_store_dir_;
}

Scheduler::VolumeState& Scheduler::StateFor(const VolumeInfo& volume,
                                            const std::string& policy_json, int64_t now_ns) {
  auto it = std::find_if(volumes_.begin(), volumes_.end(),
                         [&](const auto& state) { return state->volume == volume.name; });
  if (it == volumes_.end() || (*it)->volume_id != volume.id) {
    auto state = std::make_unique<VolumeState>();
    state->volume = volume.name;
    state->volume_id = volume.id;
    state->policy_json = policy_json;
    state->watch_from_unix_ns = now_ns;
    if (it == volumes_.end()) {
      volumes_.push_back(std::move(state));
      it = volumes_.end() - 1;
    } else {
      *it = std::move(state);
    }
  } else if ((*it)->policy_json != policy_json) {
    (*it)->policy_json = policy_json;
    (*it)->watch_from_unix_ns = now_ns;
    (*it)->retry_data_at_unix_ns = 0;
    (*it)->problem_reported = false;
  }
  (*it)->seen = true;
  return **it;
}

Status Scheduler::Refresh(VolumeState& state) {
  if (!state.loaded) {
    SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupSet> sets, ListBackupSets(store_, state.volume));
    state.sets.clear();
    for (const BackupSet& set : sets) {
      state.sets[set.key.empty() ? ManifestKey(set) : set.key] = Summarize(set);
    }
    state.loaded = true;
    return Status::OK();
  }
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<WormObjectInfo> objects,
                            store_.List("sets/" + state.volume + "/"));
  std::map<std::string, SetSummary> sets;
  for (const WormObjectInfo& object : objects) {
    if (!object.key.ends_with(".json")) continue;  // only manifests live here
    auto known = state.sets.find(object.key);
    if (known != state.sets.end()) {
      sets.insert(*known);
      continue;
    }
    Result<std::vector<std::byte>> bytes = store_.Get(object.key);
    if (!bytes.ok()) {
      if (bytes.status().IsNotFound()) continue;  // expired since the listing
      return bytes.status();
    }
    const std::string_view json(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    SNAPDISK_ASSIGN_OR_RETURN(const BackupSet set, DecodeManifest(json, object.key));
    if (set.volume != state.volume) continue;
    sets[object.key] = Summarize(set);
  }
  state.sets = std::move(sets);
  return Status::OK();
}

ScheduleFacts Scheduler::FactsOf(const VolumeState& state, const BackupPolicy& policy,
                                 uint64_t lineage) const {
  ScheduleFacts facts;
  facts.watch_from_unix_ns = state.watch_from_unix_ns;
  facts.retry_data_at_unix_ns = state.retry_data_at_unix_ns;
  const auto later = [](std::optional<int64_t>* slot, int64_t value) {
    if (!*slot || **slot < value) *slot = value;
  };
  for (const auto& [key, set] : state.sets) {
    if (set.volume_id != state.volume_id) continue;  // an earlier volume of the same name
    if (set.type == BackupType::kLog) {
      later(&facts.last_log_unix_ns, set.started_unix_ns);
      continue;
    }
    if (InMethodFamily(policy.method, set.type)) {
      later(&facts.last_data_unix_ns, set.started_unix_ns);
    }
    if (set.type == BackupType::kFull && set.lineage == lineage) {
      later(&facts.last_full_unix_ns, set.started_unix_ns);
    }
  }
  if (state.last_log_attempt_unix_ns) {
    later(&facts.last_log_unix_ns, *state.last_log_attempt_unix_ns);
  }
  return facts;
}

ScheduledRun Scheduler::RunJob(VolumeState& state, const BackupPolicy& policy, BackupMethod method,
                               int64_t due_unix_ns) {
  ScheduledRun run;
  run.volume = state.volume;
  run.method = method;
  run.due_unix_ns = due_unix_ns;
  run.ran_unix_ns = store_.NowUnixNs();
  BackupOptions options;
  options.trigger = "policy";
  options.method = method;
  options.retain_days =
      method == BackupMethod::kLog ? policy.log_retention_days : policy.retention_days;
  options.worker_threads = options_.worker_threads;
  Result<std::unique_ptr<BackupJob>> job = BackupJob::Start(pool_, store_, state.volume, options);
  if (!job.ok()) {
    run.status = job.status();
    return run;
  }
  Result<BackupSet> set = (*job)->Run();
  if (!set.ok()) {
    run.status = set.status();
    return run;
  }
  run.set_id = set->id;
  run.type = set->type;
  run.first_lsn = set->first_lsn;
  run.last_lsn = set->last_lsn;
  run.retain_until_unix_ns = set->retain_until_unix_ns;
  state.sets[set->key.empty() ? ManifestKey(*set) : set->key] = Summarize(*set);
  return run;
}

void Scheduler::RunVolume(const VolumeInfo& volume, const BackupPolicy& policy, int64_t now_ns,
                          std::vector<ScheduledRun>* runs, bool* ran_job) {
  VolumeState& state = StateFor(volume, EncodePolicy(policy), now_ns);
  const auto error_run = [&](BackupMethod method, int64_t due_ns, Status status) {
    ScheduledRun run;
    run.volume = volume.name;
    run.method = method;
    run.due_unix_ns = due_ns;
    run.ran_unix_ns = now_ns;
    run.status = std::move(status);
    runs->push_back(std::move(run));
  };
  if (!StoreMatches(policy)) {
    if (!state.problem_reported) {
      state.problem_reported = true;
      error_run(BackupMethod::kAuto, now_ns,
                Status::InvalidArgument("the backup policy of volume " + Quoted(volume.name) +
                                        " names store " + Quoted(policy.store_dir) +
                                        "; this scheduler runs store " +
                                        Quoted(options_.store_dir) + ": skipped"));
    }
    return;
  }
  if (!state.loaded) {
    Status loaded = Refresh(state);
    if (!loaded.ok()) {
      state.retry_data_at_unix_ns = now_ns + options_.retry_interval_ns;
      state.last_log_attempt_unix_ns = now_ns;
      error_run(BackupMethod::kAuto, now_ns, loaded.WithContext("reading the store's sets"));
      return;
    }
  }
  ScheduleDecision plan = PlanSchedule(policy, FactsOf(state, policy, volume.lineage), now_ns);
  if (!plan.data_method && !plan.log_due) return;
  // Something looks due: make sure with the store's listing (a manual backup
  // may have served it; expiry may have removed sets).
  Status refreshed = Refresh(state);
  if (!refreshed.ok()) {
    state.retry_data_at_unix_ns = now_ns + options_.retry_interval_ns;
    state.last_log_attempt_unix_ns = now_ns;
    error_run(plan.data_method.value_or(BackupMethod::kLog), now_ns,
              refreshed.WithContext("reading the store's sets"));
    return;
  }
  plan = PlanSchedule(policy, FactsOf(state, policy, volume.lineage), now_ns);

  if (plan.log_due) {
    state.last_log_attempt_unix_ns = now_ns;
    Result<Pool::LogInfo> log = pool_.GetLogInfo(volume.name);
    if (!log.ok()) {
      error_run(BackupMethod::kLog, plan.log_due_unix_ns, log.status());
    } else if (log->records > 0) {  // else nothing to ship
      ScheduledRun run = RunJob(state, policy, BackupMethod::kLog, plan.log_due_unix_ns);
      *ran_job = true;
      // NotFound from a log job on a volume that exists: "no writes to ship"
      // (records kept only because a crash came between shipping and dropping
      // them). Nothing to report.
      if (!run.status.IsNotFound()) runs->push_back(std::move(run));
    }
  }
  if (plan.data_method) {
    ScheduledRun run = RunJob(state, policy, *plan.data_method, plan.data_due_unix_ns);
    *ran_job = true;
    const bool fall_back = !run.status.ok() && *plan.data_method == BackupMethod::kIncr &&
                           (run.status.IsNotFound() || run.status.IsInvalidArgument());
    runs->push_back(std::move(run));
    if (fall_back) {
      // No base to be incremental from (e.g. its snapshot is gone): a full
      // keeps the volume protected; the failed run above says why.
      runs->push_back(RunJob(state, policy, BackupMethod::kFull, plan.data_due_unix_ns));
    }
    if (!runs->back().status.ok()) {
      state.retry_data_at_unix_ns = now_ns + options_.retry_interval_ns;
    }
  }
}

Result<std::vector<ScheduledRun>> Scheduler::Tick() {
  SNAPDISK_RETURN_IF_ERROR(pool_.health());
  const int64_t now_ns = store_.NowUnixNs();
  std::vector<ScheduledRun> runs;

  if (now_ns >= next_expire_unix_ns_) {
    next_expire_unix_ns_ = now_ns + options_.expire_interval_ns;
    Result<WormExpireReport> expired = store_.Expire();
    expire_status_ = expired.status();
    if (expired.ok()) expired_objects_ += expired->objects;
  }

  for (auto& state : volumes_) state->seen = false;
  bool ran_job = false;
  for (const VolumeInfo& volume : pool_.ListVolumes()) {
    Result<std::optional<BackupPolicy>> policy = GetPolicy(pool_, volume.name);
    if (!policy.ok()) {
      if (policy.status().IsNotFound()) continue;  // deleted meanwhile
      VolumeState& state = StateFor(volume, "(unreadable)", now_ns);
      if (!state.problem_reported) {
        state.problem_reported = true;
        ScheduledRun run;
        run.volume = volume.name;
        run.method = BackupMethod::kAuto;
        run.due_unix_ns = now_ns;
        run.ran_unix_ns = now_ns;
        run.status = policy.status();
        runs.push_back(std::move(run));
      }
      continue;
    }
    if (!policy->has_value()) continue;
    RunVolume(volume, **policy, now_ns, &runs, &ran_job);
  }
  // Forget volumes that lost their policy (or were deleted).
  std::erase_if(volumes_, [](const auto& state) { return !state->seen; });

  if (ran_job) SNAPDISK_RETURN_IF_ERROR(pool_.Commit());
  return runs;
}

Result<int64_t> Scheduler::NextDueUnixNs() {
  SNAPDISK_RETURN_IF_ERROR(pool_.health());
  const int64_t now_ns = store_.NowUnixNs();
  int64_t next_ns = next_expire_unix_ns_;  // 0 before the first pass: due
  for (const VolumeInfo& volume : pool_.ListVolumes()) {
    Result<std::optional<BackupPolicy>> policy = GetPolicy(pool_, volume.name);
    if (!policy.ok() || !policy->has_value()) continue;  // Tick reports bad policies
    const BackupPolicy& p = **policy;
    if (!StoreMatches(p)) continue;
    VolumeState& state = StateFor(volume, EncodePolicy(p), now_ns);
    if (!state.loaded) SNAPDISK_RETURN_IF_ERROR(Refresh(state));
    const ScheduleDecision plan = PlanSchedule(p, FactsOf(state, p, volume.lineage), now_ns);
    next_ns = std::min(next_ns, plan.next_due_unix_ns);
  }
  return next_ns;
}

}  // namespace snapdisk
