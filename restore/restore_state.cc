// The restore state attribute and the apply rules (restore/restore_state.h).
#include "restore/restore_state.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "restore/restore_plan.h"

namespace snapdisk {

namespace {

using Json = nlohmann::json;

constexpr char kStateFormat[] = "snapdisk-restore-state";
constexpr uint64_t kStateVersion = 1;

bool IsFullLike(BackupType t) { return t == BackupType::kFull || t == BackupType::kSnapshot; }

// Field access that reports a bad field instead of throwing.
class Fields {
 public:
  Fields(const Json& j, std::string_view volume) : j_(j), volume_(volume) {}
  Status Bad(const char* field, const std::string& why) const {
    return Status::InvalidArgument("restore state of volume '" + std::string(volume_) +
                                   "': field '" + field + "' " + why);
  }
  Status U64(const char* field, uint64_t* out) const {
    auto it = j_.find(field);
    if (it == j_.end()) return Bad(field, "is missing");
    if (!it->is_number_unsigned()) return Bad(field, "is not an unsigned integer");
    *out = it->get<uint64_t>();
    return Status::OK();
  }
  Status I64(const char* field, int64_t* out) const {
    auto it = j_.find(field);
    if (it == j_.end()) return Bad(field, "is missing");
    if (!it->is_number_integer()) return Bad(field, "is not an integer");
    if (it->is_number_unsigned() &&
        it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return Bad(field, "is out of range");
    }
    *out = it->get<int64_t>();
    return Status::OK();
  }
  Status Str(const char* field, std::string* out) const {
    auto it = j_.find(field);
    if (it == j_.end()) return Bad(field, "is missing");
    if (!it->is_string()) return Bad(field, "is not a string");
    *out = it->get<std::string>();
    return Status::OK();
  }
  Status Bool(const char* field, bool* out) const {
    auto it = j_.find(field);
    if (it == j_.end()) return Bad(field, "is missing");
    if (!it->is_boolean()) return Bad(field, "is not a boolean");
    *out = it->get<bool>();
    return Status::OK();
  }

 private:
  const Json& j_;
  std::string_view volume_;
};

// The rules without the suggestion of what to apply instead (used to find
// those suggestions too). `suggest`: fills the "too recent" hint.
Status Check(const std::optional<RestoreState>& state, std::string_view volume,
             const BackupSet& set, const std::vector<BackupSet>* source_sets,
             const ApplyStop& stop) {
  const std::string what = DescribeBackupSet(set);
  const std::string vol = "volume '" + std::string(volume) + "'";
  if (set.type != BackupType::kLog && (stop.after_lsn || stop.after_unix_ns)) {
    return Status::InvalidArgument(what + ": a stop LSN or time applies to log backups only");
  }
  if (!state || !state->has_chain()) {
    if (IsFullLike(set.type)) return Status::OK();
    return Status::InvalidArgument(what + " cannot be applied to " + vol +
                                   ": it holds no restored backup; apply a full backup first");
  }
  const RestoreState& st = *state;
  if (st.phase == RestorePhase::kOpen) {
    return Status::InvalidArgument(vol + " is open (its restore was finished at LSN " +
                                   std::to_string(st.lsn) + " with " + st.last_set +
                                   "); backups can no longer be applied to it: restore onto it "
                                   "again to start over");
  }
  if (set.volume_id != st.source_volume_id || set.lineage != st.lineage) {
    return Status::InvalidArgument(
        what + " is of volume '" + set.volume + "' (id " + std::to_string(set.volume_id) +
        ") lineage " + std::to_string(set.lineage) + ", but " + vol +
        " is being restored from volume '" + st.source_volume + "' (id " +
        std::to_string(st.source_volume_id) + ") lineage " + std::to_string(st.lineage));
  }
  if (IsFullLike(set.type)) {
    return Status::InvalidArgument("backup " + set.id + " is a " +
                                   (set.type == BackupType::kFull ? "full" : "snapshot") +
                                   " backup; only differential, incremental or log backups can "
                                   "be applied now");
  }
  if (set.id == st.last_set || set.id == st.last_data_set) {
    return Status::InvalidArgument(what + " is already applied to " + vol + " (it is at LSN " +
                                   std::to_string(st.lsn) + ")");
  }
  if (set.type == BackupType::kDiff && set.base != st.full) {
    return Status::InvalidArgument(what + " is based on " + set.base + ", but " + vol +
                                   " was restored from " + st.full);
  }
  if (set.type == BackupType::kDiff && st.last_set != st.full) {
    // A diff lists what changed between its full and itself; a block that
    // was a hole at both ends is in neither list, so the diff is exact only
    // on the full's own image.
    return Status::InvalidArgument(what + " applies only directly onto its full backup " +
                                   st.full + ", but " + vol + " has moved on from it (it is at LSN " +
                                   std::to_string(st.lsn) + ", after " + st.last_set +
                                   "); restore " + st.full + " again to apply " + set.id);
  }
  if (set.type == BackupType::kIncr && set.base != st.last_set) {
    // Further down the chain than the volume is: name, by LSN, the sets
    // between the last one applied and this one (SQL Server's 4305).
    std::vector<const BackupSet*> missing;
    std::string at = set.base;
    // Bounded: a damaged store could hold a cycle of bases.
    while (source_sets != nullptr && !at.empty() && at != st.last_set &&
           missing.size() < source_sets->size()) {
      auto it = std::find_if(source_sets->begin(), source_sets->end(),
                             [&](const BackupSet& s) { return s.id == at; });
      if (it == source_sets->end()) break;
      missing.push_back(&*it);
      at = it->base;
    }
    if (at == st.last_set && !missing.empty()) {
      std::string sets;
      for (auto m = missing.rbegin(); m != missing.rend(); ++m) {
        sets += (sets.empty() ? "" : ", then ") + (*m)->id + " (LSN " +
                std::to_string((*m)->first_lsn) + "-" + std::to_string((*m)->last_lsn) + ")";
      }
      return Status::InvalidArgument(what + " begins at LSN " + std::to_string(set.first_lsn) +
                                     ", which is too recent to apply: the volume is at LSN " +
                                     std::to_string(st.lsn) + "; apply " + sets + " first");
    }
    return Status::InvalidArgument(what + " is based on " + set.base +
                                   ", but the last backup applied to " + vol + " is " +
                                   st.last_set);
  }
  const bool too_early =
      set.type == BackupType::kLog ? set.last_lsn <= st.lsn : set.last_lsn < st.lsn;
  if (too_early) {
    return Status::InvalidArgument(what + " ends at LSN " + std::to_string(set.last_lsn) +
                                   ", which is too early to apply: the volume is at LSN " +
                                   std::to_string(st.lsn));
  }
  if (set.first_lsn > st.lsn + 1) {
    const uint64_t next = st.lsn + 1;
    std::string covering;
    if (source_sets != nullptr) {
      for (const BackupSet& other : *source_sets) {
        if (other.id == set.id || other.first_lsn > next || other.last_lsn < next) continue;
        if (!Check(state, volume, other, nullptr, {}).ok()) continue;
        covering += (covering.empty() ? "" : " or ") + other.id + " (LSN " +
                    std::to_string(other.first_lsn) + "-" + std::to_string(other.last_lsn) + ")";
      }
    }
    return Status::InvalidArgument(
        what + " begins at LSN " + std::to_string(set.first_lsn) +
        ", which is too recent to apply: the volume is at LSN " + std::to_string(st.lsn) +
        (covering.empty() ? "; no backup in the store covers LSN " + std::to_string(next)
                          : "; apply " + covering + " first"));
  }
  if (stop.after_lsn && *stop.after_lsn <= st.lsn) {
    return Status::InvalidArgument("stop at LSN " + std::to_string(*stop.after_lsn) + ": " + vol +
                                   " is already at LSN " + std::to_string(st.lsn));
  }
  return Status::OK();
}

}  // namespace

const char* RestorePhaseName(RestorePhase phase) {
  return phase == RestorePhase::kOpen ? "open" : "restoring";
}

const char* RestoreCheckModeName(RestoreCheckMode mode) {
  return mode == RestoreCheckMode::kAsync ? "async" : "sync";
}

const char* RestoreCheckStateName(RestoreCheckState state) {
  switch (state) {
    case RestoreCheckState::kRunning:
      return "running";
    case RestoreCheckState::kClean:
      return "clean";
    case RestoreCheckState::kProblems:
      return "problems";
    case RestoreCheckState::kInterrupted:
      return "interrupted";
    case RestoreCheckState::kCancelled:
      return "cancelled";
    case RestoreCheckState::kFailed:
      return "failed";
  }
  return "unknown";
}

std::string EncodeRestoreState(const RestoreState& s) {
  Json j = {{"format", kStateFormat},
            {"version", kStateVersion},
            {"state", RestorePhaseName(s.phase)},
            {"source_volume", s.source_volume},
            {"source_volume_id", s.source_volume_id},
            {"lineage", s.lineage},
            {"lsn", s.lsn},
            {"unix_ns", s.unix_ns},
            {"full", s.full},
            {"last_set", s.last_set},
            {"last_data_set", s.last_data_set},
            {"volume_lsn", s.volume_lsn},
            {"log_paused", s.log_paused}};
  if (s.pending()) j["pending"] = {{"set", s.pending_set}, {"undo_snapshot", s.undo_snapshot}};
  if (s.instant) j["instant"] = true;
  if (s.applied_omitted > 0) j["applied_omitted"] = s.applied_omitted;
  if (!s.applied.empty()) {
    Json applied = Json::array();
    for (const AppliedSet& a : s.applied) {
      applied.push_back(Json::array({a.id, BackupTypeName(a.type), a.first_lsn, a.last_lsn}));
    }
    j["applied"] = std::move(applied);
  }
  if (s.check) {
    const RestoreCheck& c = *s.check;
    j["check"] = {{"mode", RestoreCheckModeName(c.mode)},
                  {"state", RestoreCheckStateName(c.state)},
                  {"checked_bytes", c.checked_bytes},
                  {"problems", c.problems},
                  {"first_problem", c.first_problem},
                  {"error", c.error},
                  {"started_unix_ns", c.started_unix_ns},
                  {"finished_unix_ns", c.finished_unix_ns}};
  }
  return j.dump();
}

Result<RestoreState> DecodeRestoreState(std::string_view json, std::string_view volume) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("restore state of volume '" + std::string(volume) +
                                   "' is not a JSON object");
  }
  Fields f(j, volume);
  std::string format, phase;
  uint64_t version = 0;
  SNAPDISK_RETURN_IF_ERROR(f.Str("format", &format));
  if (format != kStateFormat) return f.Bad("format", "is not \"" + std::string(kStateFormat) + "\"");
  SNAPDISK_RETURN_IF_ERROR(f.U64("version", &version));
  if (version != kStateVersion) {
    return Status::Unsupported("restore state of volume '" + std::string(volume) + "': version " +
                               std::to_string(version) + " (this build reads version 1)");
  }
  RestoreState s;
  SNAPDISK_RETURN_IF_ERROR(f.Str("state", &phase));
  if (phase == "restoring") {
    s.phase = RestorePhase::kRestoring;
  } else if (phase == "open") {
    s.phase = RestorePhase::kOpen;
  } else {
    return f.Bad("state", "is not \"restoring\" or \"open\"");
  }
  SNAPDISK_RETURN_IF_ERROR(f.Str("source_volume", &s.source_volume));
  SNAPDISK_RETURN_IF_ERROR(f.U64("source_volume_id", &s.source_volume_id));
  SNAPDISK_RETURN_IF_ERROR(f.U64("lineage", &s.lineage));
  SNAPDISK_RETURN_IF_ERROR(f.U64("lsn", &s.lsn));
  SNAPDISK_RETURN_IF_ERROR(f.I64("unix_ns", &s.unix_ns));
  SNAPDISK_RETURN_IF_ERROR(f.Str("full", &s.full));
  SNAPDISK_RETURN_IF_ERROR(f.Str("last_set", &s.last_set));
  SNAPDISK_RETURN_IF_ERROR(f.Str("last_data_set", &s.last_data_set));
  SNAPDISK_RETURN_IF_ERROR(f.U64("volume_lsn", &s.volume_lsn));
  SNAPDISK_RETURN_IF_ERROR(f.Bool("log_paused", &s.log_paused));
  if (auto it = j.find("pending"); it != j.end()) {
    if (!it->is_object()) return f.Bad("pending", "is not an object");
    Fields p(*it, volume);
    SNAPDISK_RETURN_IF_ERROR(p.Str("set", &s.pending_set));
    SNAPDISK_RETURN_IF_ERROR(p.Str("undo_snapshot", &s.undo_snapshot));
    if (s.pending_set.empty() || s.undo_snapshot.empty()) return f.Bad("pending", "has an empty field");
  }
  if (auto it = j.find("instant"); it != j.end()) {  // optional
    if (!it->is_boolean()) return f.Bad("instant", "is not a boolean");
    s.instant = it->get<bool>();
  }
  if (auto it = j.find("applied_omitted"); it != j.end()) {  // optional
    if (!it->is_number_unsigned()) return f.Bad("applied_omitted", "is not a count");
    s.applied_omitted = it->get<uint64_t>();
  }
  if (auto it = j.find("applied"); it != j.end()) {  // optional: older states lack it
    if (!it->is_array()) return f.Bad("applied", "is not an array");
    for (const Json& a : *it) {
      if (!a.is_array() || a.size() != 4 || !a[0].is_string() || !a[1].is_string() ||
          !a[2].is_number_unsigned() || !a[3].is_number_unsigned()) {
        return f.Bad("applied", "holds an entry that is not [id, type, first_lsn, last_lsn]");
      }
      Result<BackupType> type = ParseBackupType(a[1].get<std::string>());
      if (!type.ok()) return f.Bad("applied", "names an unknown backup type");
      s.applied.push_back(
          {a[0].get<std::string>(), *type, a[2].get<uint64_t>(), a[3].get<uint64_t>()});
    }
  }
  if (auto it = j.find("check"); it != j.end()) {
    if (!it->is_object()) return f.Bad("check", "is not an object");
    Fields c(*it, volume);
    RestoreCheck check;
    std::string mode, state;
    SNAPDISK_RETURN_IF_ERROR(c.Str("mode", &mode));
    if (mode == "sync") {
      check.mode = RestoreCheckMode::kSync;
    } else if (mode == "async") {
      check.mode = RestoreCheckMode::kAsync;
    } else {
      return f.Bad("check", "has mode \"" + mode + "\", not \"sync\" or \"async\"");
    }
    SNAPDISK_RETURN_IF_ERROR(c.Str("state", &state));
    bool known = false;
    for (RestoreCheckState st :
         {RestoreCheckState::kRunning, RestoreCheckState::kClean, RestoreCheckState::kProblems,
          RestoreCheckState::kCancelled, RestoreCheckState::kFailed}) {
      if (state == RestoreCheckStateName(st)) {
        check.state = st;
        known = true;
      }
    }
    if (!known) return f.Bad("check", "has an unknown state \"" + state + "\"");
    SNAPDISK_RETURN_IF_ERROR(c.U64("checked_bytes", &check.checked_bytes));
    SNAPDISK_RETURN_IF_ERROR(c.U64("problems", &check.problems));
    SNAPDISK_RETURN_IF_ERROR(c.Str("first_problem", &check.first_problem));
    SNAPDISK_RETURN_IF_ERROR(c.Str("error", &check.error));
    SNAPDISK_RETURN_IF_ERROR(c.I64("started_unix_ns", &check.started_unix_ns));
    SNAPDISK_RETURN_IF_ERROR(c.I64("finished_unix_ns", &check.finished_unix_ns));
    s.check = std::move(check);
  }
  if (!s.has_chain() && !s.pending()) return f.Bad("full", "is empty without a pending step");
  if (s.has_chain() && (s.last_set.empty() || s.last_data_set.empty())) {
    return f.Bad("last_set", "or last_data_set is empty in a chain");
  }
  return s;
}

Status CheckApplicable(const std::optional<RestoreState>& state, std::string_view volume,
                       const BackupSet& set, const std::vector<BackupSet>& source_sets,
                       const ApplyStop& stop) {
  return Check(state, volume, set, &source_sets, stop);
}

}  // namespace snapdisk
