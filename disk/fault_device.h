// FaultDevice: a BlockDevice decorator that injects faults, deterministically.
//
// FaultDevice wraps an inner BlockDevice and forwards every request to it
// asynchronously, through its own fixed pool of inner requests (one per queue
// slot, allocated by the constructor; queue depth = the inner device's). On the
// way it can inject, per rules and a seed:
//
//   - I/O errors (IOError) on reads, writes, flushes and discards,
//   - NoSpace on writes once a byte budget of written data is used up,
//   - latency spikes (completion held back, timed on a Clock),
//   - bit rot: a flipped bit in the buffer a read returns (stored data stays
//     good), or a flipped bit in the stored data itself (FlipBitAtRest),
//   - whole-disk failure from an op count, a clock time or FailNow(),
//   - power loss: Crash() rebuilds the inner device's contents as a real disk
//     could have left them (see "Power loss" below).
//
// Determinism: every decision is a hash of (seed, rule id, op index) or, for a
// crash, of (crash seed, op index), never of time or of a shared random
// stream. The same seed, rules and sequence of Submit/Poll calls therefore give
// the same faults, and adding a rule does not change what other rules do.
//
// Op index: every request that gets past argument checks, the "crashed" check
// and the queue-full check is numbered 0, 1, 2, ... in Submit order, across all
// op types (ops_submitted() is the next number). Requests refused for a
// whole-disk failure consume a number; other synchronous refusals (Busy,
// InvalidArgument, the record bound, a refusal by the inner device) don't.
//
// How faults reach the caller:
//   - Rule IOError and write-budget NoSpace are delivered through the
//     request's callback (after any latency added to the same op). The request
//     is not sent to the inner device, so a failed write or discard changes
//     no stored data, and a failed read leaves its buffer untouched.
//   - Whole-disk failure and a crashed device refuse Submit synchronously with
//     IOError and no callback, as the BlockDevice contract says for a dead
//     device. Requests accepted before the failure complete normally.
//   Every message names the device, the op and its offset and length.
//
// Power loss (Crash). While model_power_loss is on (the default), each write
// and discard that is forwarded gets a record: the range's old contents, read
// synchronously from the inner device at Submit just before the request is
// sent on, and (for a write) a copy of the new data. A write or discard is
// *covered* once a flush submitted after its completion (callback) has
// completed successfully through this device; covered records at the front of
// the log are freed. Crash(seed) then:
//   1. polls the inner device until nothing of ours is in flight there; every
//      request not yet delivered to its caller will complete with IOError
//      "device crashed" at the next Poll() and counts as not covered;
//   2. undoes every record, newest first (restoring the state before the
//      oldest record still held);
//   3. replays the records in submission order: covered ones in full, each
//      uncovered write kept, dropped or torn (a seeded subset of its sectors
//      kept), each uncovered discard kept or dropped, as CrashMix and the
//      seed decide. The result is written to the inner device, which can then
//      be used directly or wrapped again.
//   Every uncovered write's and discard's fate is logged (kCrashKept,
//   kCrashDropped, kCrashTorn with the kept sectors).
//
// Overlapping writes. Replay is in submission order, so for two writes to the
// same sector the later-submitted one wins when both survive, and a surviving
// covered write is overwritten only by a later-submitted surviving write. To
// make that true on any inner device (and to make each record's old contents
// exact), Submit of a write or discard first waits, by polling the inner
// device, until no write or discard overlapping its range is still in flight
// on the inner device; only then does it read the old contents and forward the
// request. So overlapping writes reach the inner device one at a time, in
// submission order. (With MemoryDevice, which applies requests at Submit, this
// never waits.) Reads are not ordered against writes: a read overlapping an
// in-flight write sees whatever the inner device gives it.
//
// Memory bound. Records take (old + new) bytes per write and old bytes per
// discard. When adding one would exceed max_unflushed_record_bytes, Submit
// returns Busy ("... flush the device ...") without numbering the request;
// only a completed flush frees records, so a caller that retries Busy by
// polling alone will spin forever: it must flush (and let in-flight writes
// complete) first. A single request whose record alone exceeds the bound gets
// NoSpace. With model_power_loss off there are no records, no old-content
// reads, and Crash() leaves the inner device's contents as they are.
//
// Inner-device errors. A forwarded request that the inner device fails keeps
// the inner device's status. If it was a write or discard, its record's new
// contents are replaced by what the inner device holds afterwards (read back),
// so a crash replays what actually landed. A synchronous refusal by the inner
// device's Submit is returned from this Submit as is.
//
// Bit rot at rest and crashes. FlipBitAtRest changes the inner device's
// current contents and is not part of the crash model: if the sector has a
// record (an uncovered write or discard, or one held behind it), a later Crash
// rewrites the sector from the record and the flip is lost. Flip after the
// covering flush, or after Crash, for rot that must survive.
//
// Ownership: the inner device and the clock are borrowed and must outlive the
// FaultDevice. While wrapped, the inner device must be driven only through the
// FaultDevice (it must be idle at construction). Destroying a FaultDevice
// waits for its requests still on the inner device; their callbacks never run.
//
// Thread safety: as BlockDevice (one driving thread at a time); stats() from
// any thread. Rules, failure settings, the event log and FlipBitAtRest/Crash
// belong to the driving thread and may be changed between ops, or from a
// completion callback (except Crash, which must not run from a callback).
// No reads beside the driving thread (ReadConcurrent is Unsupported): they
// would bypass the rules, the unflushed-write model and the event log, so
// callers read through Submit and every read meets the faults.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "disk/block_device.h"
#include "disk/clock.h"

namespace snapdisk {

// What a rule does to the ops it fires on.
enum class FaultAction : uint8_t {
  kIOError = 0,      // the op fails with IOError; nothing reaches the inner device
  kLatency = 1,      // the completion is held until latency_ns after Submit
  kReadBitFlip = 2,  // reads only: one seeded bit of the returned buffer is flipped
};
// "io_error", "latency", "read_bit_flip".
const char* FaultActionName(FaultAction action);

// [offset_bytes, offset_bytes + length_bytes); length_bytes > 0.
struct ByteRange {
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
};

// One fault rule. An op matches when every trigger that is set holds; a
// matching op then fires the rule with `probability` (a seeded draw per
// rule and op). A rule that is not `persistent` fires once and is then spent.
struct FaultRule {
  FaultAction action = FaultAction::kIOError;
  // Only ops of this type (any type when unset). kReadBitFlip only ever fires
  // on reads.
  std::optional<IoOp> op = {};
  // Only ops whose index is >= this. The index counts, from 0 since the device
  // was created, the ops of type `op` when `op` is set, all ops otherwise. So
  // {op = kWrite, from_op_index = 2} fires on the third write; with
  // persistent = true, on the third write and every later one.
  std::optional<uint64_t> from_op_index = {};
  // Only ops whose range overlaps this one (never flushes).
  std::optional<ByteRange> range = {};
  // 0..1: the chance that a matching op fires the rule.
  double probability = 1.0;
  // false: fires on the first op it fires on, then never again.
  bool persistent = false;
  // kLatency only: > 0; the op completes no earlier than this after Submit
  // (the inner device's own time runs within it, not after it). Latencies
  // of several rules firing on one op add up.
  int64_t latency_ns = 0;
};

// What happens to writes and discards not covered by a flush when the power
// fails. Weights are relative (>= 0, at least one > 0); probabilities 0..1.
struct CrashMix {
  double keep_weight = 1.0;  // the whole write survives
  double drop_weight = 1.0;  // none of it does
  double tear_weight = 1.0;  // each sector survives with torn_sector_keep_probability
  double torn_sector_keep_probability = 0.5;
  double discard_keep_probability = 0.5;  // an uncovered discard survives

  // Every uncovered write and discard survives: the image is the final one.
  static CrashMix KeepAll() { return {1, 0, 0, 0.5, 1.0}; }
  // None survives: the image is the one at the last completed flush.
  static CrashMix DropAll() { return {0, 1, 0, 0.5, 0.0}; }
};

struct FaultDeviceOptions {
  // Seeds every rule's decisions (probability draws, which bit a read flips).
  uint64_t seed = 0;
  // Writes that would take the bytes written through the device (by writes
  // accepted so far that no fault failed) past this fail with NoSpace.
  uint64_t write_budget_bytes = UINT64_MAX;
  // Keep the records Crash() needs (see "Power loss" above).
  bool model_power_loss = true;
  // Bound on the bytes held in those records (see "Memory bound" above).
  uint64_t max_unflushed_record_bytes = uint64_t{256} << 20;
};

// What the event log records.
enum class FaultKind : uint8_t {
  kIOError = 0,        // an op failed by a kIOError rule
  kNoSpace = 1,        // a write failed: past the write budget
  kLatency = 2,        // an op's completion was held (detail: how long)
  kReadBitFlip = 3,    // a read's buffer got a bit flipped (detail: which)
  kBitFlipAtRest = 4,  // FlipBitAtRest changed a stored bit
  kDiskFailure = 5,    // an op was refused: whole-disk failure
  kCrash = 6,          // Crash() ran
  kCrashKept = 7,      // an uncovered write or discard survived the crash
  kCrashDropped = 8,   // ... did not survive
  kCrashTorn = 9,      // ... survived in part (detail: "kept sectors 0-1,3 of 8")
};
// "io_error", "no_space", "latency", ... (stable: for logs and harnesses).
const char* FaultKindName(FaultKind kind);

struct FaultEvent {
  // The op's index (see above). For kCrash and kBitFlipAtRest, which belong to
  // no op: ops_submitted() at the time.
  uint64_t op_index = 0;
  FaultKind kind = FaultKind::kIOError;
  std::optional<IoOp> op = {};  // unset for kCrash and kBitFlipAtRest
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;  // 0 for flushes and kCrash; 1 for kBitFlipAtRest
  uint32_t rule_id = 0;       // the rule that fired; 0 when no rule did
  std::string detail = {};    // for humans; formats are given at FaultKind
};

class FaultDevice final : public BlockDevice {
 public:
  // `inner` and `clock` must outlive the FaultDevice; `inner` must have
  // nothing in flight (checked).
  explicit FaultDevice(BlockDevice& inner, const FaultDeviceOptions& options = {},
                       Clock& clock = SystemClock::Get());
  // Stacking: wraps another FaultDevice (without this, `FaultDevice(other)`
  // would name the deleted copy constructor).
  explicit FaultDevice(FaultDevice& inner, const FaultDeviceOptions& options = {},
                       Clock& clock = SystemClock::Get())
      : FaultDevice(static_cast<BlockDevice&>(inner), options, clock) {}
  ~FaultDevice() override;

  uint64_t size_bytes() const override { return size_bytes_; }
  uint32_t sector_size_bytes() const override { return sector_size_bytes_; }
  uint32_t queue_depth() const override { return queue_depth_; }
  uint32_t in_flight() const override { return in_flight_; }
  // "fault(<inner device's name>)".
  std::string name() const override { return name_; }
  // As BlockDevice, plus: IOError when crashed or failed (whole disk), Busy
  // when the crash-model record is full, NoSpace when one request's record
  // would exceed the bound. May block polling the inner device (overlapping
  // writes, see above) but never runs callbacks of this device.
  Status Submit(IoRequest& request) override;
  // As BlockDevice. Held (latency) completions are waited for by sleeping on
  // the clock, so with a ManualClock a blocking Poll advances time.
  uint32_t Poll(uint32_t min_completions) override;
  // Requests completed through this device (latency measured on the clock,
  // from Submit to callback, including injected latency; injected errors count
  // as errors). Synchronous refusals are not counted.
  IoStats& stats() override { return stats_; }

  // ---- Rules --------------------------------------------------------------
  // Adds a rule; returns its id (1, 2, ... in order of adding).
  // InvalidArgument for a probability outside 0..1, an empty range, a latency
  // rule without a positive latency, or a read bit flip on a non-read op.
  Result<uint32_t> AddRule(const FaultRule& rule);
  // NotFound when no rule has this id.
  Status RemoveRule(uint32_t rule_id);
  void ClearRules();
  // Writes past this (see FaultDeviceOptions::write_budget_bytes).
  void set_write_budget_bytes(uint64_t budget_bytes) { write_budget_bytes_ = budget_bytes; }
  uint64_t bytes_written() const { return bytes_written_; }

  // ---- Whole-disk failure ------------------------------------------------
  // Ops with index >= op_index are refused with IOError.
  void FailAtOpIndex(uint64_t op_index) { fail_at_op_index_ = op_index; }
  // Ops submitted when the clock reads >= time_ns are refused with IOError.
  void FailAtTimeNs(int64_t time_ns) { fail_at_ns_ = time_ns; }
  // Every op from now on is refused with IOError.
  void FailNow() { fail_now_ = true; }
  // Undoes the three above.
  void ClearDiskFailure();

  // ---- Bit rot at rest -----------------------------------------------------
  // Flips bit `bit_index` (0..7, 0 = least significant) of the stored byte at
  // `offset_bytes` on the inner device, by reading and rewriting its sector
  // with the inner device's synchronous helpers. InvalidArgument for an offset
  // past the end or a bit index > 7; Busy while requests are in flight; the
  // inner device's error if its read or write fails. Works after Crash too.
  // Not part of the crash model (see above).
  Status FlipBitAtRest(uint64_t offset_bytes, uint32_t bit_index);

  // ---- Power loss ----------------------------------------------------------
  // Ends the device's life as described under "Power loss" above; later
  // Submits return IOError "device crashed", Poll still delivers the pending
  // callbacks (with IOError). InvalidArgument for a bad mix or a second
  // Crash; the inner device's error if rebuilding the image fails (the image
  // is then undefined, the device crashed all the same). Must not be called
  // from a completion callback of this device (checked).
  Status Crash(uint64_t seed, const CrashMix& mix = CrashMix());
  bool crashed() const { return crashed_; }
  // Bytes now held in crash-model records.
  uint64_t unflushed_record_bytes() const { return record_bytes_; }

  // ---- Event log -----------------------------------------------------------
  // Every injected fault and crash decision, in the order they happened.
  const std::vector<FaultEvent>& events() const { return events_; }
  void ClearEvents() { events_.clear(); }

  // The index the next numbered op will get (= ops numbered so far).
  uint64_t ops_submitted() const { return ops_submitted_; }

 private:
  // A write or discard as Crash() needs it.
  struct Record {
    uint64_t op_index = 0;
    IoOp op = IoOp::kWrite;
    uint64_t offset_bytes = 0;
    uint64_t length_bytes = 0;
    std::vector<std::byte> old_data = {};
    // A write's data; for a discard, empty (zeros) unless replaced by the
    // read-back contents after an inner-device failure.
    std::vector<std::byte> new_data = {};
    // Set when its callback ran: 1, 2, ... in completion order; 0 until then.
    uint64_t completion_seq = 0;
  };

  enum class SlotState : uint8_t {
    kFree,     // in free_slots_
    kOnInner,  // `inner` submitted to the inner device, not completed there
    kHeld,     // outcome known, callback waits for not_before_ns and Poll
  };

  struct Slot {
    IoRequest inner;  // on_complete set once by the constructor
    IoRequest* outer = nullptr;
    SlotState state = SlotState::kFree;
    uint64_t op_index = 0;
    int64_t submit_ns = 0;
    int64_t not_before_ns = 0;
    Status status;
    std::vector<uint64_t> flip_bits;  // read bit flips: bit index in the buffer
    uint64_t flush_covers_through = 0;  // flush: completion_counter_ at Submit
    Record* record = nullptr;           // write/discard with a record
    bool needs_readback = false;        // inner failed it; re-read the record's range
  };

  struct StoredRule {
    uint32_t id = 0;
    FaultRule rule = {};
    bool spent = false;
  };

  // The rules firing on one op (reused between ops).
  struct Plan {
    uint32_t io_error_rule = 0;
    int64_t latency_ns = 0;
    std::vector<size_t> fired;  // indexes into rules_ that take effect
    std::vector<uint64_t> flip_bits;
  };

  std::string Describe(const IoRequest& request) const;
  bool DiskFailed(uint64_t op_index, int64_t now_ns, std::string* reason) const;
  void EvaluateRules(const IoRequest& request, uint64_t op_index, uint64_t type_index);
  void OnInnerComplete(uint32_t slot_index, const Status& status);
  void ResolveReadbacks();
  void WaitForOverlappingInner(uint64_t offset_bytes, uint64_t length_bytes);
  uint32_t DeliverDue();
  void Complete(uint32_t slot_index);
  bool Covered(const Record& record) const;
  void TrimLog();
  Status RebuildImage(uint64_t seed, const CrashMix& mix);
  Status ApplyRecord(const Record& record, const std::vector<bool>* kept_sectors);
  void LogEvent(uint64_t op_index, FaultKind kind, std::optional<IoOp> op, uint64_t offset_bytes,
                uint64_t length_bytes, uint32_t rule_id, std::string detail);

  BlockDevice& inner_;
  Clock& clock_;
  const FaultDeviceOptions options_;
  const std::string name_;
  const uint64_t size_bytes_;
  const uint32_t sector_size_bytes_;
  const uint32_t queue_depth_;

  std::vector<Slot> slots_;            // queue_depth_ of them, never reallocated
  std::vector<uint32_t> free_slots_;   // capacity queue_depth_
  std::vector<uint32_t> deliver_;      // scratch for DeliverDue, capacity queue_depth_
  uint32_t in_flight_ = 0;
  uint32_t on_inner_ = 0;              // slots in kOnInner
  uint32_t pending_readbacks_ = 0;
  bool polling_ = false;

  std::vector<StoredRule> rules_;
  uint32_t next_rule_id_ = 1;
  Plan plan_;

  uint64_t ops_submitted_ = 0;
  uint64_t ops_submitted_by_type_[kIoOpCount] = {};
  uint64_t write_budget_bytes_;
  uint64_t bytes_written_ = 0;

  bool fail_now_ = false;
  std::optional<uint64_t> fail_at_op_index_;
  std::optional<int64_t> fail_at_ns_;

  std::deque<Record> log_;  // submission order; references stay valid at push_back/pop_front
  uint64_t record_bytes_ = 0;
  uint64_t completion_counter_ = 0;
  uint64_t covered_through_ = 0;  // records with completion_seq <= this are covered
  bool crashed_ = false;

  std::vector<FaultEvent> events_;
  IoStats stats_;
};

}  // namespace snapdisk
