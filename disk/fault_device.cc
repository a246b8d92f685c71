#include "disk/fault_device.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <span>
#include <utility>

namespace snapdisk {
namespace {

// Salts keep the hash streams of different decisions apart.
enum Salt : uint64_t {
  kSaltFire = 0x6669726521,
  kSaltFlipBit = 0x666c6970,
  kSaltFate = 0x66617465,
  kSaltTornSector = 0x746f726e,
};

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t Hash(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x736e6170646973ULL;  // "snapdis"
  for (uint64_t v : values) h = SplitMix64(h ^ v);
  return h;
}

// A uniform double in [0, 1).
double Unit(uint64_t h) { return static_cast<double>(h >> 11) * 0x1.0p-53; }

bool Overlaps(uint64_t a_offset, uint64_t a_length, uint64_t b_offset, uint64_t b_length) {
  return a_offset < b_offset + b_length && b_offset < a_offset + a_length;
}

bool IsProbability(double p) { return p >= 0.0 && p <= 1.0; }  // false for NaN

// "0-1,3" for kept = {1,1,0,1}; "none" when nothing is kept.
std::string DescribeSectors(const std::vector<bool>& kept) {
  std::string out;
  size_t i = 0;
  while (i < kept.size()) {
    if (!kept[i]) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j + 1 < kept.size() && kept[j + 1]) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(i);
    if (j > i) out += '-' + std::to_string(j);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

}  // namespace

const char* FaultActionName(FaultAction action) {
  switch (action) {
    case FaultAction::kIOError: return "io_error";
    case FaultAction::kLatency: return "latency";
    case FaultAction::kReadBitFlip: return "read_bit_flip";
  }
  return "unknown";
}

const char* FaultKindName(FaultKind kind) {
  switch (kind) {
    case FaultKind::kIOError: return "io_error";
    case FaultKind::kNoSpace: return "no_space";
    case FaultKind::kLatency: return "latency";
    case FaultKind::kReadBitFlip: return "read_bit_flip";
    case FaultKind::kBitFlipAtRest: return "bit_flip_at_rest";
    case FaultKind::kDiskFailure: return "disk_failure";
    case FaultKind::kCrash: return "crash";
    case FaultKind::kCrashKept: return "crash_kept";
    case FaultKind::kCrashDropped: return "crash_dropped";
    case FaultKind::kCrashTorn: return "crash_torn";
  }
  return "unknown";
}

FaultDevice::FaultDevice(BlockDevice& inner, const FaultDeviceOptions& options, Clock& clock)
    : inner_(inner),
      clock_(clock),
      options_(options),
      name_("fault(" + inner.name() + ")"),
      size_bytes_(inner.size_bytes()),
      sector_size_bytes_(inner.sector_size_bytes()),
      queue_depth_(inner.queue_depth()),
      write_budget_bytes_(options.write_budget_bytes) {
  SNAPDISK_CHECK(inner.in_flight() == 0, "FaultDevice: the inner device has requests in flight");
  SNAPDISK_CHECK(queue_depth_ > 0, "FaultDevice: the inner device has queue depth zero");
  slots_.resize(queue_depth_);
  free_slots_.reserve(queue_depth_);
  deliver_.reserve(queue_depth_);
  for (uint32_t i = 0; i < queue_depth_; ++i) {
    slots_[i].inner.on_complete = [this, i](IoRequest&, const Status& status) {
      OnInnerComplete(i, status);
    };
    free_slots_.push_back(queue_depth_ - 1 - i);  // hand out slot 0 first
  }
}

FaultDevice::~FaultDevice() {
  // The inner device still holds our requests; its callbacks point at us.
  while (on_inner_ > 0) inner_.Poll(1);
}

std::string FaultDevice::Describe(const IoRequest& request) const {
  if (request.op == IoOp::kFlush) return name_ + ": flush";
  return name_ + ": " + IoOpName(request.op) + " at offset " +
         std::to_string(request.offset_bytes) + " length " + std::to_string(request.length_bytes);
}

// ---- Rules ------------------------------------------------------------------

Result<uint32_t> FaultDevice::AddRule(const FaultRule& rule) {
  const std::string what = name_ + ": rule " + FaultActionName(rule.action);
  if (!IsProbability(rule.probability)) {
    return Status::InvalidArgument(what + ": probability " + std::to_string(rule.probability) +
                                   " is not in 0..1");
  }
  if (rule.range && rule.range->length_bytes == 0) {
    return Status::InvalidArgument(what + ": empty range");
  }
  if (rule.action == FaultAction::kLatency && rule.latency_ns <= 0) {
    return Status::InvalidArgument(what + ": latency_ns must be > 0");
  }
  if (rule.action != FaultAction::kLatency && rule.latency_ns != 0) {
    return Status::InvalidArgument(what + ": latency_ns is only for latency rules");
  }
  if (rule.action == FaultAction::kReadBitFlip && rule.op && *rule.op != IoOp::kRead) {
    return Status::InvalidArgument(what + ": a read bit flip applies to reads only, not " +
                                   IoOpName(*rule.op));
  }
  const uint32_t id = next_rule_id_++;
  rules_.push_back({id, rule, false});
  return id;
}

Status FaultDevice::RemoveRule(uint32_t rule_id) {
  auto it = std::find_if(rules_.begin(), rules_.end(),
                         [&](const StoredRule& r) { return r.id == rule_id; });
  if (it == rules_.end()) {
    return Status::NotFound(name_ + ": no rule with id " + std::to_string(rule_id));
  }
  rules_.erase(it);
  return Status::OK();
}

void FaultDevice::ClearRules() { rules_.clear(); }

void FaultDevice::ClearDiskFailure() {
  fail_now_ = false;
  fail_at_op_index_.reset();
  fail_at_ns_.reset();
}

bool FaultDevice::DiskFailed(uint64_t op_index, int64_t now_ns, std::string* reason) const {
  if (fail_now_) {
    *reason = "FailNow";
  } else if (fail_at_op_index_ && op_index >= *fail_at_op_index_) {
    *reason = "failed from op " + std::to_string(*fail_at_op_index_);
  } else if (fail_at_ns_ && now_ns >= *fail_at_ns_) {
    *reason = "failed from time " + std::to_string(*fail_at_ns_) + " ns";
  } else {
    return false;
  }
  return true;
}

void FaultDevice::EvaluateRules(const IoRequest& request, uint64_t op_index, uint64_t type_index) {
  plan_.io_error_rule = 0;
  plan_.latency_ns = 0;
  plan_.fired.clear();
  plan_.flip_bits.clear();
  std::vector<size_t> flips;  // rule indexes; applied only if the op does not fail
  for (size_t i = 0; i < rules_.size(); ++i) {
    const StoredRule& stored = rules_[i];
    const FaultRule& rule = stored.rule;
    if (stored.spent) continue;
    if (rule.op && *rule.op != request.op) continue;
    if (rule.action == FaultAction::kReadBitFlip && request.op != IoOp::kRead) continue;
    if (rule.from_op_index && (rule.op ? type_index : op_index) < *rule.from_op_index) continue;
    if (rule.range) {
      if (request.op == IoOp::kFlush) continue;
      if (!Overlaps(request.offset_bytes, request.length_bytes, rule.range->offset_bytes,
                    rule.range->length_bytes)) {
        continue;
      }
    }
    if (rule.probability < 1.0 &&
        Unit(Hash({options_.seed, kSaltFire, stored.id, op_index})) >= rule.probability) {
      continue;
    }
    switch (rule.action) {
      case FaultAction::kIOError:
        if (plan_.io_error_rule == 0) {  // the first one decides; later ones stay unspent
          plan_.io_error_rule = stored.id;
          plan_.fired.push_back(i);
        }
        break;
      case FaultAction::kLatency:
        plan_.latency_ns += rule.latency_ns;
        plan_.fired.push_back(i);
        break;
      case FaultAction::kReadBitFlip:
        flips.push_back(i);
        break;
    }
  }
  if (plan_.io_error_rule != 0) return;  // a failed read returns no data to flip
  for (size_t i : flips) {
    plan_.fired.push_back(i);
    plan_.flip_bits.push_back(Hash({options_.seed, kSaltFlipBit, rules_[i].id, op_index}) %
                              (request.length_bytes * 8));
  }
}

// ---- Submit -----------------------------------------------------------------

Status FaultDevice::Submit(IoRequest& request) {
  SNAPDISK_RETURN_IF_ERROR(ValidateRequest(request));
  if (crashed_) return Status::IOError(Describe(request) + ": device crashed");
  if (in_flight_ >= queue_depth_) {
    return Status::Busy(name_ + ": queue full (" + std::to_string(queue_depth_) + " requests)");
  }
  const uint64_t op_index = ops_submitted_;
  const int op_type = static_cast<int>(request.op);
  const int64_t now_ns = clock_.NowNs();

  if (std::string reason; DiskFailed(op_index, now_ns, &reason)) {
    ++ops_submitted_;
    ++ops_submitted_by_type_[op_type];
    LogEvent(op_index, FaultKind::kDiskFailure, request.op,
             request.op == IoOp::kFlush ? 0 : request.offset_bytes, request.length_bytes, 0,
             "whole-disk failure (" + reason + ")");
    return Status::IOError(Describe(request) + ": injected whole-disk failure (" + reason + ")");
  }

  const bool modifies = request.op == IoOp::kWrite || request.op == IoOp::kDiscard;
  const bool keep_record = modifies && options_.model_power_loss;
  const uint64_t record_cost = request.length_bytes * (request.op == IoOp::kWrite ? 2 : 1);
  if (keep_record) {
    const uint64_t bound = options_.max_unflushed_record_bytes;
    if (record_cost > bound) {
      return Status::NoSpace(Describe(request) + ": its crash-model record (" +
                             std::to_string(record_cost) + " bytes) exceeds the bound of " +
                             std::to_string(bound) +
                             " bytes; raise FaultDeviceOptions::max_unflushed_record_bytes or "
                             "split the request");
    }
    if (record_bytes_ + record_cost > bound) {
      return Status::Busy(Describe(request) + ": crash-model record full (" +
                          std::to_string(record_bytes_) + " of " + std::to_string(bound) +
                          " bytes held for writes and discards not yet covered by a flush); "
                          "flush the device (a flush submitted after those writes completed) "
                          "before submitting more, or raise "
                          "FaultDeviceOptions::max_unflushed_record_bytes");
    }
  }

  EvaluateRules(request, op_index, ops_submitted_by_type_[op_type]);
  const bool no_space = plan_.io_error_rule == 0 && request.op == IoOp::kWrite &&
                        request.length_bytes > write_budget_bytes_ - std::min(write_budget_bytes_,
                                                                              bytes_written_);
  bool forward = plan_.io_error_rule == 0 && !no_space;

  const uint32_t slot_index = free_slots_.back();
  Slot& slot = slots_[slot_index];
  Status early_failure;  // set when preparing a forwarded request failed
  Record* record = nullptr;
  if (forward) {
    if (keep_record) {
      WaitForOverlappingInner(request.offset_bytes, request.length_bytes);
      Record r{.op_index = op_index, .op = request.op, .offset_bytes = request.offset_bytes,
               .length_bytes = request.length_bytes};
      r.old_data.resize(request.length_bytes);
      Status read = inner_.Read(request.offset_bytes, r.old_data);
      // Completions seen during the read are of non-overlapping requests.
      ResolveReadbacks();
      if (read.ok()) {
        if (request.op == IoOp::kWrite) {
          r.new_data.assign(request.data, request.data + request.length_bytes);
        }
        log_.push_back(std::move(r));
        record = &log_.back();
        record_bytes_ += record_cost;
      } else {
        early_failure = read.WithContext(Describe(request) +
                                         ": reading the old contents for the crash model");
        forward = false;
      }
    }
    if (forward) {
      slot.inner.op = request.op;
      slot.inner.offset_bytes = request.offset_bytes;
      slot.inner.length_bytes = request.length_bytes;
      slot.inner.data = request.data;
      slot.state = SlotState::kOnInner;
      Status submitted = inner_.Submit(slot.inner);
      if (!submitted.ok()) {
        // Refused synchronously: undo the bookkeeping; the op is not numbered.
        slot.state = SlotState::kFree;
        if (record != nullptr) {
          record_bytes_ -= record_cost;
          log_.pop_back();
        }
        return submitted;
      }
    }
  }

  // Accepted: number the op, spend the rules, log what fired.
  free_slots_.pop_back();
  ++ops_submitted_;
  ++ops_submitted_by_type_[op_type];
  ++in_flight_;
  const uint64_t event_offset = request.op == IoOp::kFlush ? 0 : request.offset_bytes;
  size_t flip_number = 0;
  for (size_t i : plan_.fired) {
    StoredRule& stored = rules_[i];
    if (!stored.rule.persistent) stored.spent = true;
    switch (stored.rule.action) {
      case FaultAction::kIOError:
        LogEvent(op_index, FaultKind::kIOError, request.op, event_offset, request.length_bytes,
                 stored.id, "injected I/O error");
        break;
      case FaultAction::kLatency:
        LogEvent(op_index, FaultKind::kLatency, request.op, event_offset, request.length_bytes,
                 stored.id, "completion held " + std::to_string(stored.rule.latency_ns) + " ns");
        break;
      case FaultAction::kReadBitFlip: {
        const uint64_t bit = plan_.flip_bits[flip_number++];
        LogEvent(op_index, FaultKind::kReadBitFlip, request.op, event_offset,
                 request.length_bytes, stored.id,
                 "flipped bit " + std::to_string(bit % 8) + " of byte " +
                     std::to_string(bit / 8) + " of the returned buffer (device offset " +
                     std::to_string(request.offset_bytes + bit / 8) + ")");
        break;
      }
    }
  }
  if (no_space) {
    LogEvent(op_index, FaultKind::kNoSpace, request.op, event_offset, request.length_bytes, 0,
             "write budget of " + std::to_string(write_budget_bytes_) + " bytes used up (" +
                 std::to_string(bytes_written_) + " bytes written)");
  }
  if (forward && request.op == IoOp::kWrite) bytes_written_ += request.length_bytes;

  slot.outer = &request;
  slot.op_index = op_index;
  slot.submit_ns = now_ns;
  slot.not_before_ns = now_ns + plan_.latency_ns;
  slot.flip_bits.assign(plan_.flip_bits.begin(), plan_.flip_bits.end());
  slot.flush_covers_through = completion_counter_;
  slot.record = record;
  slot.needs_readback = false;
  if (forward) {
    ++on_inner_;  // state already kOnInner
  } else {
    slot.state = SlotState::kHeld;
    if (!early_failure.ok()) {
      slot.status = std::move(early_failure);
    } else if (no_space) {
      slot.status = Status::NoSpace(Describe(request) + ": write budget of " +
                                    std::to_string(write_budget_bytes_) + " bytes used up (" +
                                    std::to_string(bytes_written_) + " bytes written)");
    } else {
      slot.status = Status::IOError(Describe(request) + ": injected I/O error (rule " +
                                    std::to_string(plan_.io_error_rule) + ")");
    }
  }
  return Status::OK();
}

void FaultDevice::WaitForOverlappingInner(uint64_t offset_bytes, uint64_t length_bytes) {
  while (true) {
    ResolveReadbacks();
    bool overlapping = false;
    for (const Slot& slot : slots_) {
      if (slot.state == SlotState::kOnInner &&
          (slot.inner.op == IoOp::kWrite || slot.inner.op == IoOp::kDiscard) &&
          Overlaps(slot.inner.offset_bytes, slot.inner.length_bytes, offset_bytes, length_bytes)) {
        overlapping = true;
        break;
      }
    }
    if (!overlapping) return;
    inner_.Poll(1);
  }
}

// ---- Completion ---------------------------------------------------------------

void FaultDevice::OnInnerComplete(uint32_t slot_index, const Status& status) {
  Slot& slot = slots_[slot_index];
  SNAPDISK_CHECK(slot.state == SlotState::kOnInner, "FaultDevice: unexpected inner completion");
  slot.state = SlotState::kHeld;
  --on_inner_;
  slot.status = status;
  if (!status.ok() && slot.record != nullptr) {
    // Part of it may have landed: learn what did before anything overwrites it.
    slot.needs_readback = true;
    ++pending_readbacks_;
  }
}

void FaultDevice::ResolveReadbacks() {
  while (pending_readbacks_ > 0) {
    for (Slot& slot : slots_) {
      if (!slot.needs_readback) continue;
      slot.needs_readback = false;
      --pending_readbacks_;
      if (slot.record == nullptr) continue;
      Record& record = *slot.record;
      std::vector<std::byte> now(record.length_bytes);
      if (inner_.Read(record.offset_bytes, now).ok()) {
        record_bytes_ += record.length_bytes - record.new_data.size();
        record.new_data = std::move(now);
      }  // else: keep assuming it landed as requested
    }
  }
}

uint32_t FaultDevice::Poll(uint32_t min_completions) {
  SNAPDISK_CHECK(!polling_, "Poll called from inside a completion callback");
  polling_ = true;
  const uint32_t target = std::min(min_completions, in_flight_);
  uint32_t ran = 0;
  while (true) {
    if (on_inner_ > 0) inner_.Poll(0);
    ResolveReadbacks();
    ran += DeliverDue();
    if (ran >= target || in_flight_ == 0) break;
    // Something must finish before we may return: a held completion falling
    // due, or the inner device completing one of ours.
    int64_t earliest_ns = std::numeric_limits<int64_t>::max();
    for (const Slot& slot : slots_) {
      if (slot.state == SlotState::kHeld) earliest_ns = std::min(earliest_ns, slot.not_before_ns);
    }
    if (earliest_ns != std::numeric_limits<int64_t>::max()) {
      clock_.SleepUntilNs(earliest_ns);
    } else if (on_inner_ > 0) {
      inner_.Poll(1);
    }
  }
  polling_ = false;
  return ran;
}

uint32_t FaultDevice::DeliverDue() {
  const int64_t now_ns = clock_.NowNs();
  deliver_.clear();
  for (uint32_t i = 0; i < queue_depth_; ++i) {
    if (slots_[i].state == SlotState::kHeld && slots_[i].not_before_ns <= now_ns) {
      deliver_.push_back(i);
    }
  }
  std::sort(deliver_.begin(), deliver_.end(),
            [&](uint32_t a, uint32_t b) { return slots_[a].op_index < slots_[b].op_index; });
  uint32_t ran = 0;
  for (uint32_t i : deliver_) {
    // Callbacks only submit (into free slots), so listed slots stay held.
    Complete(i);
    ++ran;
  }
  return ran;
}

void FaultDevice::Complete(uint32_t slot_index) {
  Slot& slot = slots_[slot_index];
  IoRequest& request = *slot.outer;
  Status status = std::move(slot.status);
  slot.status = Status::OK();
  if (status.ok() && request.op == IoOp::kRead) {
    for (uint64_t bit : slot.flip_bits) request.data[bit / 8] ^= std::byte{1} << (bit % 8);
  }
  if (slot.record != nullptr) slot.record->completion_seq = ++completion_counter_;
  if (request.op == IoOp::kFlush && status.ok()) {
    covered_through_ = std::max(covered_through_, slot.flush_covers_through);
    TrimLog();
  }
  const int64_t latency_ns = std::max<int64_t>(0, clock_.NowNs() - slot.submit_ns);
  stats_.Record(request.op, request.op == IoOp::kFlush ? 0 : request.length_bytes,
                static_cast<uint64_t>(latency_ns), status.ok());
  slot.state = SlotState::kFree;
  slot.outer = nullptr;
  slot.record = nullptr;
  slot.flip_bits.clear();
  free_slots_.push_back(slot_index);
  --in_flight_;
  request.on_complete(request, status);
}

bool FaultDevice::Covered(const Record& record) const {
  return record.completion_seq != 0 && record.completion_seq <= covered_through_;
}

void FaultDevice::TrimLog() {
  while (!log_.empty() && Covered(log_.front())) {
    record_bytes_ -= log_.front().old_data.size() + log_.front().new_data.size();
    log_.pop_front();
  }
}

// ---- Bit rot at rest ------------------------------------------------------------

Status FaultDevice::FlipBitAtRest(uint64_t offset_bytes, uint32_t bit_index) {
  if (offset_bytes >= size_bytes_ || bit_index > 7) {
    return Status::InvalidArgument(name_ + ": flip bit " + std::to_string(bit_index) +
                                   " at offset " + std::to_string(offset_bytes) +
                                   ": offset past the end or bit index > 7");
  }
  if (in_flight_ != 0) {
    return Status::Busy(name_ + ": flip bit at offset " + std::to_string(offset_bytes) + ": " +
                        std::to_string(in_flight_) + " requests in flight; poll them first");
  }
  const uint64_t sector_offset = offset_bytes - offset_bytes % sector_size_bytes_;
  std::vector<std::byte> sector(sector_size_bytes_);
  SNAPDISK_RETURN_IF_ERROR(inner_.Read(sector_offset, sector).WithContext(name_ + ": flip bit"));
  sector[offset_bytes - sector_offset] ^= std::byte{1} << bit_index;
  SNAPDISK_RETURN_IF_ERROR(inner_.Write(sector_offset, sector).WithContext(name_ + ": flip bit"));
  LogEvent(ops_submitted_, FaultKind::kBitFlipAtRest, std::nullopt, offset_bytes, 1, 0,
           "flipped bit " + std::to_string(bit_index) + " of the stored byte at offset " +
               std::to_string(offset_bytes));
  return Status::OK();
}

// ---- Power loss -----------------------------------------------------------------

Status FaultDevice::Crash(uint64_t seed, const CrashMix& mix) {
  SNAPDISK_CHECK(!polling_, "Crash called from inside a completion callback");
  const double weights = mix.keep_weight + mix.drop_weight + mix.tear_weight;
  if (!(mix.keep_weight >= 0 && mix.drop_weight >= 0 && mix.tear_weight >= 0) ||
      !(weights > 0) || !std::isfinite(weights) ||
      !IsProbability(mix.torn_sector_keep_probability) ||
      !IsProbability(mix.discard_keep_probability)) {
    return Status::InvalidArgument(name_ + ": crash: weights must be >= 0 with a positive sum, "
                                   "probabilities in 0..1");
  }
  if (crashed_) return Status::InvalidArgument(name_ + ": crash: the device already crashed");

  // Let the inner device finish what it has of ours; none of it is covered.
  while (on_inner_ > 0) {
    inner_.Poll(1);
    ResolveReadbacks();
  }
  ResolveReadbacks();
  crashed_ = true;
  size_t uncovered = 0;
  for (const Record& record : log_) uncovered += Covered(record) ? 0 : 1;
  LogEvent(ops_submitted_, FaultKind::kCrash, std::nullopt, 0, 0, 0,
           "crash seed " + std::to_string(seed) + ": " + std::to_string(uncovered) +
               " uncovered writes/discards, " + std::to_string(in_flight_) +
               " requests in flight" +
               (options_.model_power_loss ? "" : " (power loss not modelled: image kept)"));
  for (Slot& slot : slots_) {
    if (slot.state != SlotState::kHeld) continue;
    slot.status = Status::IOError(Describe(*slot.outer) + ": device crashed before completion");
    slot.not_before_ns = std::numeric_limits<int64_t>::min();
    slot.flip_bits.clear();
    slot.record = nullptr;
  }
  Status result = options_.model_power_loss ? RebuildImage(seed, mix) : Status::OK();
  log_.clear();
  record_bytes_ = 0;
  return result;
}

Status FaultDevice::ApplyRecord(const Record& record, const std::vector<bool>* kept_sectors) {
  if (record.new_data.empty()) {  // a discard
    return inner_.Discard(record.offset_bytes, record.length_bytes);
  }
  if (kept_sectors == nullptr) return inner_.Write(record.offset_bytes, record.new_data);
  const std::span<const std::byte> data(record.new_data);
  size_t i = 0;
  while (i < kept_sectors->size()) {
    if (!(*kept_sectors)[i]) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < kept_sectors->size() && (*kept_sectors)[j]) ++j;
    SNAPDISK_RETURN_IF_ERROR(inner_.Write(record.offset_bytes + i * sector_size_bytes_,
                                          data.subspan(i * sector_size_bytes_,
                                                       (j - i) * sector_size_bytes_)));
    i = j;
  }
  return Status::OK();
}

Status FaultDevice::RebuildImage(uint64_t seed, const CrashMix& mix) {
  const std::string context = name_ + ": crash: rebuilding the image";
  // Undo, newest first: back to the state before the oldest record.
  for (auto it = log_.rbegin(); it != log_.rend(); ++it) {
    SNAPDISK_RETURN_IF_ERROR(inner_.Write(it->offset_bytes, it->old_data).WithContext(context));
  }
  // Redo in submission order.
  std::vector<bool> kept;
  for (const Record& record : log_) {
    if (Covered(record)) {
      SNAPDISK_RETURN_IF_ERROR(ApplyRecord(record, nullptr).WithContext(context));
      continue;
    }
    const uint64_t fate = Hash({seed, kSaltFate, record.op_index});
    FaultKind kind;
    std::string detail;
    if (record.op == IoOp::kDiscard) {
      kind = Unit(fate) < mix.discard_keep_probability ? FaultKind::kCrashKept
                                                        : FaultKind::kCrashDropped;
    } else {
      const double pick =
          Unit(fate) * (mix.keep_weight + mix.drop_weight + mix.tear_weight);
      kind = pick < mix.keep_weight                     ? FaultKind::kCrashKept
             : pick < mix.keep_weight + mix.drop_weight ? FaultKind::kCrashDropped
                                                        : FaultKind::kCrashTorn;
    }
    const char* what = IoOpName(record.op);
    switch (kind) {
      case FaultKind::kCrashKept:
        SNAPDISK_RETURN_IF_ERROR(ApplyRecord(record, nullptr).WithContext(context));
        detail = std::string("uncovered ") + what + " kept";
        break;
      case FaultKind::kCrashDropped:
        detail = std::string("uncovered ") + what + " dropped";
        break;
      default: {
        const uint64_t sectors = record.length_bytes / sector_size_bytes_;
        kept.assign(sectors, false);
        for (uint64_t s = 0; s < sectors; ++s) {
          kept[s] = Unit(Hash({seed, kSaltTornSector, record.op_index, s})) <
                    mix.torn_sector_keep_probability;
        }
        SNAPDISK_RETURN_IF_ERROR(ApplyRecord(record, &kept).WithContext(context));
        detail = std::string("uncovered ") + what + " torn: kept sectors " +
                 DescribeSectors(kept) + " of " + std::to_string(sectors);
        break;
      }
    }
    LogEvent(record.op_index, kind, record.op, record.offset_bytes, record.length_bytes, 0,
             std::move(detail));
  }
  return Status::OK();
}

void FaultDevice::LogEvent(uint64_t op_index, FaultKind kind, std::optional<IoOp> op,
                           uint64_t offset_bytes, uint64_t length_bytes, uint32_t rule_id,
                           std::string detail) {
  events_.push_back(FaultEvent{.op_index = op_index, .kind = kind, .op = op,
                               .offset_bytes = offset_bytes, .length_bytes = length_bytes,
                               .rule_id = rule_id, .detail = std::move(detail)});
}

}  // namespace snapdisk
