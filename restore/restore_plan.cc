// Restore planning (restore/restore_plan.h): from manifests to the minimal
// chain of steps for a target.
#include "restore/restore_plan.h"

#include <algorithm>
#include <map>
#include <unordered_map>

#include "disk/clock.h"

namespace snapdisk {

namespace {

bool IsDataSet(const BackupSet& s) { return s.type != BackupType::kLog; }
bool IsPhysical(BackupType t) {
  return t == BackupType::kFull || t == BackupType::kDiff || t == BackupType::kIncr;
}

std::string VolumeLineage(const std::string& volume, uint64_t lineage) {
  return "volume '" + volume + "' lineage " + std::to_string(lineage);
}

uint64_t ReadBytesOf(const BackupSet& s) {
  uint64_t total = 0;
  // Every listing is fetched (a log stream repeating a chunk reads it again).
  for (const ChunkInfo& c : s.chunks) total += c.stored_bytes;
  return total;
}

uint64_t DataBytesOf(const BackupSet& s) {
  if (s.type == BackupType::kLog) return s.data_bytes;
  uint64_t total = 0;
  for (const ChunkExtent& e : s.extents) total += e.length_bytes;
  return total;
}

RestoreStep WholeStep(const BackupSet& s) {
  RestoreStep step;
  step.set = s;
  step.from_lsn = s.first_lsn;
  step.through_lsn = s.last_lsn;
  step.read_bytes = ReadBytesOf(s);
  step.data_bytes = DataBytesOf(s);
  return step;
}

// The sets a data set restores from, oldest (the full or snapshot set) first.
Result<std::vector<const BackupSet*>> DataChain(
    const BackupSet& top, const std::unordered_map<std::string, const BackupSet*>& by_id) {
  std::vector<const BackupSet*> chain = {&top};
  while (chain.back()->type == BackupType::kDiff || chain.back()->type == BackupType::kIncr) {
    const BackupSet& at = *chain.back();
    auto broken = [&](const std::string& why) {
      return Status::Corruption("backup chain of " + top.id + " is broken: " + why);
    };
    auto it = by_id.find(at.base);
    if (at.base.empty() || it == by_id.end()) {
      return broken(at.id + " depends on " + (at.base.empty() ? "no base" : at.base) +
                    ", which is not in the store");
    }
    const BackupSet& base = *it->second;
    if (!IsPhysical(base.type) || base.sequence >= at.sequence) {
      return broken(DescribeBackupSet(at) + " cannot depend on " + DescribeBackupSet(base));
    }
    if (at.type == BackupType::kDiff && base.type != BackupType::kFull) {
      return broken(DescribeBackupSet(at) + " depends on " + DescribeBackupSet(base) +
                    ", not on a full backup");
    }
    if (base.volume_id != at.volume_id || base.lineage != at.lineage) {
      return broken(at.id + " is of volume id " + std::to_string(at.volume_id) + " lineage " +
                    std::to_string(at.lineage) + ", its base " + base.id + " of volume id " +
                    std::to_string(base.volume_id) + " lineage " + std::to_string(base.lineage));
    }
    if (at.first_lsn != base.last_lsn + 1) {
      return broken(at.id + " begins at LSN " + std::to_string(at.first_lsn) + " but its base " +
                    base.id + " ends at LSN " + std::to_string(base.last_lsn));
    }
    chain.push_back(&base);
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

// "12-40", "12", or "none (at 11)" for an empty range (an incremental with
// no write since its base).
std::string LsnRange(uint64_t first, uint64_t last) {
  if (last < first) return "none (at " + std::to_string(last) + ")";
  return first == last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(last);
}

// Everything the planner works on: the source volume's sets.
class Planner {
 public:
  Planner(const std::vector<BackupSet>& sets, const RestoreTarget& target)
      : all_(sets), target_(target) {}

  Result<RestorePlan> Plan();

 private:
  Result<RestorePlan> PlanBackup();
  Result<RestorePlan> PlanPointInTime();
  Result<RestorePlan> PlanLsn();
  // Fills the plan's source fields and data steps from data set `base`.
  Status AddDataChain(const BackupSet& base, RestorePlan* plan);
  // Appends log steps from base.last_lsn + 1 up to the target (kPointInTime
  // or kLsn), or refuses.
  Status AddLogSteps(const BackupSet& base, RestorePlan* plan);
  // Volume-name filtered sets (and lineage, when given).
  Status SelectVolume(const std::string& volume, std::optional<uint64_t> lineage);
  size_t ChainLength(const BackupSet& s) const;
  std::string LineageHint(uint64_t lineage, int64_t after_unix_ns) const;
  static void Finish(RestorePlan* plan);

  const std::vector<BackupSet>& all_;
  const RestoreTarget& target_;
  std::vector<const BackupSet*> volume_sets_;  // of the volume name, by sequence
  std::vector<const BackupSet*> sets_;         // ... and of the lineage, when given
  std::unordered_map<std::string, const BackupSet*> by_id_;
};

Status Planner::SelectVolume(const std::string& volume, std::optional<uint64_t> lineage) {
  for (const BackupSet& s : all_) {
    if (s.volume != volume) continue;
    volume_sets_.push_back(&s);
    by_id_[s.id] = &s;
  }
  std::sort(volume_sets_.begin(), volume_sets_.end(),
            [](const BackupSet* a, const BackupSet* b) { return a->sequence < b->sequence; });
  if (volume_sets_.empty()) {
    return Status::NotFound("no backups of volume '" + volume + "' in the store");
  }
  for (const BackupSet* s : volume_sets_) {
    if (!lineage || s->lineage == *lineage) sets_.push_back(s);
  }
  if (sets_.empty()) {
    std::vector<uint64_t> lineages;
    for (const BackupSet* s : volume_sets_) lineages.push_back(s->lineage);
    std::sort(lineages.begin(), lineages.end());
    lineages.erase(std::unique(lineages.begin(), lineages.end()), lineages.end());
    std::string list;
    for (uint64_t l : lineages) list += (list.empty() ? "" : ", ") + std::to_string(l);
    return Status::NotFound("no backups of " + VolumeLineage(volume, *lineage) +
                            " in the store (its backups are of lineage " + list + ")");
  }
  return Status::OK();
}

size_t Planner::ChainLength(const BackupSet& s) const {
  auto chain = DataChain(s, by_id_);
  return chain.ok() ? chain->size() : SIZE_MAX;
}

std::string Planner::LineageHint(uint64_t lineage, int64_t after_unix_ns) const {
  for (const BackupSet* s : volume_sets_) {
    if (s->lineage == lineage) continue;
    const int64_t at = IsDataSet(*s) ? s->consistent_unix_ns : s->first_record_unix_ns;
    if (at > after_unix_ns) {
      return "; the volume went on in lineage " + std::to_string(s->lineage) +
             " (after a rollback), whose first set after that is " + s->id + " at " +
             FormatRfc3339(at);
    }
  }
  return "";
}

Result<RestorePlan> Planner::Plan() {
  switch (target_.kind) {
    case RestoreTarget::Kind::kBackup:
      return PlanBackup();
    case RestoreTarget::Kind::kPointInTime:
      return PlanPointInTime();
    case RestoreTarget::Kind::kLsn:
      return PlanLsn();
  }
  return Status::InvalidArgument("unknown restore target kind");
}

Status Planner::AddDataChain(const BackupSet& base, RestorePlan* plan) {
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<const BackupSet*> chain, DataChain(base, by_id_));
  plan->volume = base.volume;
  plan->volume_id = base.volume_id;
  plan->lineage = base.lineage;
  plan->block_bytes = chain.front()->block_bytes;
  for (const BackupSet* s : chain) plan->steps.push_back(WholeStep(*s));
  plan->end_lsn = base.last_lsn;
  plan->end_unix_ns = base.consistent_unix_ns;
  plan->end_lsn_exact = true;
  return Status::OK();
}

Result<RestorePlan> Planner::PlanBackup() {
  const BackupSet* set = nullptr;
  for (const BackupSet& s : all_) {
    if (s.id == target_.backup_id) set = &s;
  }
  if (set == nullptr) {
    return Status::NotFound("backup set " + target_.backup_id + " is not in the store");
  }
  if (set->type == BackupType::kLog) {
    // A log set as the target: the volume as of its last record.
    RestoreTarget lsn = RestoreTarget::Lsn(set->volume, set->last_lsn, set->lineage);
    Planner inner(all_, lsn);
    SNAPDISK_ASSIGN_OR_RETURN(RestorePlan plan, inner.Plan());
    plan.target = target_;
    return plan;
  }
  SNAPDISK_RETURN_IF_ERROR(SelectVolume(set->volume, set->lineage));
  RestorePlan plan;
  plan.target = target_;
  SNAPDISK_RETURN_IF_ERROR(AddDataChain(*set, &plan));
  Finish(&plan);
  return plan;
}

Result<RestorePlan> Planner::PlanPointInTime() {
  SNAPDISK_RETURN_IF_ERROR(SelectVolume(target_.volume, target_.lineage));
  const int64_t t = target_.unix_ns;
  const BackupSet* best = nullptr;
  const BackupSet* first = nullptr;
  for (const BackupSet* s : sets_) {
    if (!IsDataSet(*s)) continue;
    if (first == nullptr || s->consistent_unix_ns < first->consistent_unix_ns) first = s;
    if (s->consistent_unix_ns > t) continue;
    if (best == nullptr) {
      best = s;
      continue;
    }
    // The latest; on a tie, the furthest LSN, then the shorter chain.
    auto key = [](const BackupSet* x) {
      return std::make_pair(x->consistent_unix_ns, x->last_lsn);
    };
    if (key(s) > key(best) || (key(s) == key(best) && ChainLength(*s) < ChainLength(*best))) {
      best = s;
    }
  }
  const std::string where = target_.lineage ? VolumeLineage(target_.volume, *target_.lineage)
                                            : "volume '" + target_.volume + "'";
  if (first == nullptr) {
    return Status::NotFound(where +
                            " has no data backup (snapshot, full, differential or incremental) "
                            "to restore from");
  }
  if (best == nullptr) {
    return Status::NotFound("point in time " + FormatRfc3339(t) +
                            " is before the first backup of " + where + " (" + first->id +
                            ", consistent at " + FormatRfc3339(first->consistent_unix_ns) + ")");
  }
  RestorePlan plan;
  plan.target = target_;
  SNAPDISK_RETURN_IF_ERROR(AddDataChain(*best, &plan));
  SNAPDISK_RETURN_IF_ERROR(AddLogSteps(*best, &plan));
  plan.end_unix_ns = t;
  Finish(&plan);
  return plan;
}

Result<RestorePlan> Planner::PlanLsn() {
  std::optional<uint64_t> lineage = target_.lineage;
  if (!lineage) {
    // LSNs count one lineage's writes: by default the volume's newest.
    SNAPDISK_RETURN_IF_ERROR(SelectVolume(target_.volume, std::nullopt));
    lineage = volume_sets_.back()->lineage;
    volume_sets_.clear();
    sets_.clear();
    by_id_.clear();
  }
  SNAPDISK_RETURN_IF_ERROR(SelectVolume(target_.volume, lineage));
  const uint64_t n = target_.lsn;
  const BackupSet* best = nullptr;
  const BackupSet* first = nullptr;
  for (const BackupSet* s : sets_) {
    if (!IsDataSet(*s)) continue;
    if (first == nullptr || s->last_lsn < first->last_lsn) first = s;
    if (s->last_lsn > n) continue;
    if (best == nullptr || s->last_lsn > best->last_lsn ||
        (s->last_lsn == best->last_lsn && ChainLength(*s) < ChainLength(*best))) {
      best = s;
    }
  }
  const std::string where = VolumeLineage(target_.volume, *lineage);
  if (first == nullptr) {
    return Status::NotFound(where +
                            " has no data backup (snapshot, full, differential or incremental) "
                            "to restore from");
  }
  if (best == nullptr) {
    return Status::NotFound("LSN " + std::to_string(n) + " is before the first backup of " + where +
                            " (" + first->id + ", at LSN " + std::to_string(first->last_lsn) + ")");
  }
  RestorePlan plan;
  plan.target = target_;
  SNAPDISK_RETURN_IF_ERROR(AddDataChain(*best, &plan));
  SNAPDISK_RETURN_IF_ERROR(AddLogSteps(*best, &plan));
  Finish(&plan);
  return plan;
}

Status Planner::AddLogSteps(const BackupSet& base, RestorePlan* plan) {
  const bool by_time = target_.kind == RestoreTarget::Kind::kPointInTime;
  const int64_t t = target_.unix_ns;
  const uint64_t n = target_.lsn;
  std::vector<const BackupSet*> logs;
  for (const BackupSet* s : sets_) {
    if (s->type == BackupType::kLog && s->lineage == base.lineage &&
        s->volume_id == base.volume_id) {
      logs.push_back(s);
    }
  }
  std::sort(logs.begin(), logs.end(), [](const BackupSet* a, const BackupSet* b) {
    return a->first_lsn != b->first_lsn ? a->first_lsn < b->first_lsn : a->sequence < b->sequence;
  });
  const std::string where = VolumeLineage(base.volume, base.lineage);
  const BackupSet* prev = &base;  // the set holding LSN next - 1
  int64_t prev_unix_ns = base.consistent_unix_ns;
  uint64_t next = base.last_lsn + 1;
  auto where_prev = [&]() {
    return "LSN " + std::to_string(next - 1) +
           (prev->type == BackupType::kLog ? " at " : ", consistent at ") +
           FormatRfc3339(prev_unix_ns);
  };
  while (true) {
    if (!by_time && next > n) return Status::OK();
    // The segment holding `next` that reaches furthest.
    const BackupSet* seg = nullptr;
    const BackupSet* later = nullptr;
    for (const BackupSet* s : logs) {
      if (s->first_lsn <= next && next <= s->last_lsn) {
        if (seg == nullptr || s->last_lsn > seg->last_lsn) seg = s;
      } else if (s->first_lsn > next && later == nullptr) {
        later = s;
      }
    }
    if (seg == nullptr) {
      if (by_time) {
        if (t == prev_unix_ns) return Status::OK();  // the last known point is T itself
        // A data backup at or after T with the LSN reached so far: nothing
        // was written between.
        for (const BackupSet* s : sets_) {
          if (IsDataSet(*s) && s->volume_id == base.volume_id && s->lineage == base.lineage &&
              s->last_lsn == next - 1 && s->consistent_unix_ns >= t) {
            return Status::OK();
          }
        }
      }
      const std::string target_text =
          by_time ? "point in time " + FormatRfc3339(t) : "LSN " + std::to_string(n);
      if (later != nullptr) {
        return Status::Corruption(
            "log gap: " + where + ": LSN " + LsnRange(next, later->first_lsn - 1) +
            " missing between " + prev->id + " (ends at LSN " + std::to_string(next - 1) +
            ") and " + later->id + " (begins at LSN " + std::to_string(later->first_lsn) +
            "); cannot restore to " + target_text + " past LSN " + std::to_string(next - 1));
      }
      if (prev->type == BackupType::kLog) {
        return Status::NotFound(target_text + " is after the last shipped log record of " + where +
                                " (" + where_prev() + ", in " + prev->id + ")" +
                                (by_time ? LineageHint(base.lineage, prev_unix_ns) : ""));
      }
      return Status::NotFound(target_text + " is after the last shipped log record of " + where +
                              ": no log backup continues after " + DescribeBackupSet(*prev) + " (" +
                              where_prev() + ")" +
                              (by_time ? LineageHint(base.lineage, prev_unix_ns) : ""));
    }
    if (by_time && seg->first_lsn >= next && seg->first_record_unix_ns > t) {
      return Status::OK();  // the next record is after T: covered
    }
    RestoreStep step = WholeStep(*seg);
    step.from_lsn = next;
    step.through_lsn = by_time ? seg->last_lsn : std::min(n, seg->last_lsn);
    const bool stops_inside = by_time && seg->last_record_unix_ns > t;
    if (stops_inside) step.stop_after_unix_ns = t;
    plan->steps.push_back(std::move(step));
    plan->end_lsn = plan->steps.back().through_lsn;
    plan->end_lsn_exact = !stops_inside;
    plan->end_unix_ns =
        plan->steps.back().through_lsn == seg->last_lsn ? seg->last_record_unix_ns : 0;
    if (stops_inside) return Status::OK();
    if (!by_time && seg->last_lsn >= n) return Status::OK();
    prev = seg;
    prev_unix_ns = seg->last_record_unix_ns;
    next = seg->last_lsn + 1;
  }
}

void Planner::Finish(RestorePlan* plan) {
  for (const RestoreStep& s : plan->steps) {
    plan->volume_size_bytes = std::max(plan->volume_size_bytes, s.set.volume_size_bytes);
  }
}

}  // namespace

RestoreTarget RestoreTarget::Backup(std::string_view id) {
  RestoreTarget t;
  t.kind = Kind::kBackup;
  t.backup_id = std::string(id);
  return t;
}

RestoreTarget RestoreTarget::PointInTime(std::string_view volume, int64_t unix_ns,
                                         std::optional<uint64_t> lineage) {
  RestoreTarget t;
  t.kind = Kind::kPointInTime;
  t.volume = std::string(volume);
  t.unix_ns = unix_ns;
  t.lineage = lineage;
  return t;
}

RestoreTarget RestoreTarget::Lsn(std::string_view volume, uint64_t lsn,
                                 std::optional<uint64_t> lineage) {
  RestoreTarget t;
  t.kind = Kind::kLsn;
  t.volume = std::string(volume);
  t.lsn = lsn;
  t.lineage = lineage;
  return t;
}

std::string RestoreTarget::ToString() const {
  const std::string of = " of volume '" + volume + "'" +
                         (lineage ? " lineage " + std::to_string(*lineage) : std::string());
  switch (kind) {
    case Kind::kBackup:
      return "backup " + backup_id;
    case Kind::kPointInTime:
      return "point in time " + FormatRfc3339(unix_ns) + of;
    case Kind::kLsn:
      return "LSN " + std::to_string(lsn) + of;
  }
  return "?";
}

std::string DescribeBackupSet(const BackupSet& set) {
  switch (set.type) {
    case BackupType::kSnapshot:
      return "snapshot backup " + set.id;
    case BackupType::kFull:
      return "full backup " + set.id;
    case BackupType::kDiff:
      return "differential backup " + set.id;
    case BackupType::kIncr:
      return "incremental backup " + set.id;
    case BackupType::kLog:
      return "log backup " + set.id;
  }
  return "backup " + set.id;
}

uint64_t RestorePlan::read_bytes() const {
  uint64_t total = 0;
  for (const RestoreStep& s : steps) total += s.read_bytes;
  return total;
}

uint64_t RestorePlan::data_bytes() const {
  uint64_t total = 0;
  for (const RestoreStep& s : steps) total += s.data_bytes;
  return total;
}

std::string RestorePlan::ToString() const {
  std::string out = "restore plan: " + target.ToString() + "\n";
  out += "source: volume '" + volume + "' (id " + std::to_string(volume_id) + ", lineage " +
         std::to_string(lineage) + "), " + std::to_string(volume_size_bytes) + " bytes\n";
  size_t i = 0;
  for (const RestoreStep& s : steps) {
    out += "  " + std::to_string(++i) + ". " + s.set.id + "  " + BackupTypeName(s.set.type) +
           "  LSN " + LsnRange(s.from_lsn, s.through_lsn);
    if (s.set.type == BackupType::kLog) {
      if (s.from_lsn != s.set.first_lsn || s.through_lsn != s.set.last_lsn) {
        out += " (of " + LsnRange(s.set.first_lsn, s.set.last_lsn) + ")";
      }
      out += "  records " + FormatRfc3339(s.set.first_record_unix_ns) + " to " +
             FormatRfc3339(s.set.last_record_unix_ns);
      if (s.stop_after_unix_ns) out += ", stops after " + FormatRfc3339(*s.stop_after_unix_ns);
    } else {
      out += "  consistent at " + FormatRfc3339(s.set.consistent_unix_ns);
      if (!s.set.base.empty()) out += "  on " + s.set.base;
    }
    out += "  read " + std::to_string(s.read_bytes) + " bytes" +
           (s.stop_after_unix_ns ? " at most" : "") + ", " + std::to_string(s.data_bytes) +
           " bytes of " + (s.set.type == BackupType::kLog ? "records" : "data") + "\n";
  }
  out +=
      "restores to LSN " + std::string(end_lsn_exact ? "" : "at most ") + std::to_string(end_lsn);
  if (end_unix_ns != 0) out += " (" + FormatRfc3339(end_unix_ns) + ")";
  out += "; " + std::to_string(steps.size()) + (steps.size() == 1 ? " step, " : " steps, ") +
         std::to_string(read_bytes()) + " bytes to read\n";
  return out;
}

Result<RestoreTarget> LatestTarget(const std::vector<BackupSet>& sets, std::string_view volume) {
  const BackupSet* newest = nullptr;
  for (const BackupSet& s : sets) {
    if (s.volume == volume && (newest == nullptr || s.sequence > newest->sequence)) newest = &s;
  }
  if (newest == nullptr) {
    return Status::NotFound("no backups of volume '" + std::string(volume) + "' in the store");
  }
  uint64_t lsn = 0;
  for (const BackupSet& s : sets) {
    if (s.volume == volume && s.lineage == newest->lineage) lsn = std::max(lsn, s.last_lsn);
  }
  return RestoreTarget::Lsn(volume, lsn, newest->lineage);
}

Result<RestorePlan> PlanRestoreFromSets(const std::vector<BackupSet>& sets,
                                        const RestoreTarget& target) {
  if (target.kind == RestoreTarget::Kind::kBackup && target.backup_id.empty()) {
    return Status::InvalidArgument("restore target: no backup set id given");
  }
  if (target.kind != RestoreTarget::Kind::kBackup && target.volume.empty()) {
    return Status::InvalidArgument("restore target: no source volume given");
  }
  Planner planner(sets, target);
  return planner.Plan();
}

Result<RestorePlan> PlanRestore(WormStore& store, const RestoreTarget& target) {
  std::string volume = target.volume;
  if (target.kind == RestoreTarget::Kind::kBackup) {
    SNAPDISK_ASSIGN_OR_RETURN(BackupSet set, FindBackupSet(store, target.backup_id));
    volume = set.volume;
  } else if (volume.empty()) {
    return Status::InvalidArgument("restore target: no source volume given");
  }
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupSet> sets, ListBackupSets(store, volume));
  return PlanRestoreFromSets(sets, target);
}

}  // namespace snapdisk
