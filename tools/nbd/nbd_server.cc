// The NBD server's event loop. See nbd_server.h for the contract.
//
// Shape of one loop turn:
//   epoll_wait -> accept / read sockets (parse requests, submit volume
//   requests) -> Pool::Poll(0) (callbacks only queue the finished slot) ->
//   encode replies (one commit for every FUA write of the turn) -> one
//   sendmsg per connection with output -> parse input that waited for a free
//   slot.
// Control commands that run as steps (backups, cli::ControlSession) get one
// Step() per turn, before the engine is driven (so the reads a step submits
// go to the device in the same turn); while one runs, epoll sleeps at most
// kJobTurnNs, since the job's worker threads have no fd to wake the loop.
// The fills the server resumed itself (cli::ServerFills) are stepped the
// same way.
//
// Every request owns a Slot from its header until its reply is on the wire;
// a connection has a fixed number of slots, so a client can never have more
// than that in flight, and input stops being read while all are busy.
// Buffers live in the slots and are reused, so the I/O path allocates
// nothing once a connection has seen its request sizes.
#include "tools/nbd/nbd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "engine/aligned_buffer.h"
#include "engine/pool.h"
#include "engine/pool_file.h"
#include "engine/volume.h"
#include "restore/lazy_restore.h"
#include "restore/restore_apply.h"
#include "tools/cli/control.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/hydration_resume.h"
#include "tools/cli/policy_tick.h"
#include "tools/cli/progress.h"
#include "tools/cli/store_util.h"
#include "tools/nbd/nbd_protocol.h"

namespace snapdisk::nbd {
namespace {

constexpr size_t kReadBufferBytes = size_t{256} << 10;
// Option data beyond this is treated as a denial of service (names are at
// most 4096 bytes by the spec; a meta-context request with a few queries
// fits easily).
constexpr uint32_t kMaxOptionBytes = 64 << 10;
constexpr uint32_t kMaxOptionsPerConnection = 4096;
// Write payloads above this are received straight into the slot's buffer;
// smaller ones are gathered whole in the read buffer first.
constexpr uint32_t kDirectPayloadBytes = 64 << 10;
static_assert(kReadBufferBytes >= kRequestBytes + kDirectPayloadBytes);
static_assert(kReadBufferBytes >= kOptionHeaderBytes + kMaxOptionBytes);
// A slot keeps a buffer up to this size for the next request; larger ones are
// freed when the request is done.
constexpr size_t kKeepBufferBytes = size_t{1} << 20;
// READ/WRITE payload bytes one connection may hold at once.
constexpr uint64_t kMaxBytesInFlightPerConnection = uint64_t{64} << 20;
// A BLOCK_STATUS reply describes at most this many blocks and descriptors
// (the spec lets a server answer less than asked; clients ask again from
// where the answer ended).
constexpr uint64_t kMaxBlockStatusBlocks = 32768;
constexpr size_t kMaxBlockStatusDescriptors = 4096;
constexpr uint32_t kBaseAllocationContextId = 1;
constexpr size_t kMaxErrorMessageBytes = 1024;
constexpr int kMaxIov = 256;
constexpr int kMaxEvents = 64;
// Longest epoll sleep while a stepped control command (a backup) runs.
constexpr int64_t kJobTurnNs = 1'000'000;

std::string Hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

class Server;
class Connection;

// One request, from its header until its reply has been sent.
struct Slot {
  Connection* conn = nullptr;
  Slot* next = nullptr;  // free list, or the connection's output queue
  Request req;
  // Up to three volume requests: an unaligned head, the block-aligned middle
  // and an unaligned tail, so that no part of a large unaligned request goes
  // through the engine's read-modify-write bounce buffer.
  VolumeRequest parts[3];
  uint32_t parts_pending = 0;   // engine callbacks still to come
  AlignedBuffer buffer;         // read destination / write source
  uint32_t payload_have = 0;    // write payload received so far
  uint64_t bytes_charged = 0;   // counted in the connection's bytes in flight
  bool fua = false;             // commit before replying
  Status status;                // first failure among the parts
  uint32_t error = 0;           // NBD error of the reply (0: success)
  std::string message;          // for a structured error chunk
  std::vector<Extent> extents;  // BLOCK_STATUS answer
  // The encoded reply: header bytes, then `data`, then `extra`.
  std::byte header[40];
  uint32_t header_bytes = 0;
  const std::byte* data = nullptr;
  uint32_t data_bytes = 0;
  std::vector<std::byte> extra;
  size_t sent = 0;
  size_t total() const { return header_bytes + data_bytes + extra.size(); }
};

// What an export name resolves to.
struct ExportTarget {
  Volume* volume = nullptr;
  std::string name;  // canonical
  bool read_only = false;
  uint64_t size_bytes = 0;
};

// Tags for epoll_event.data.ptr.
struct Handler {
  enum class Kind { kListen, kControl, kSignal, kDeviceEvent, kPoolEvent, kConnection } kind;
};

class Server {
 public:
  explicit Server(const ServerOptions& options) : options_(options) {}
  ~Server();
  int Run();

  // ---- for connections ----
  Pool& pool() { return *pool_; }
  const ServerOptions& options() const { return options_; }
  int epoll_fd() const { return epoll_fd_; }
  void SlotDone(Slot* slot) { completed_.push_back(slot); }
  void MarkDirty(Connection* conn);
  Result<ExportTarget> FindExport(std::string_view name);
  std::vector<std::string> ExportNames();
  void QosExports(int delta) { qos_exports_ += delta; }
  bool stopping() const { return stop_; }

 private:
  int Setup();
  int Listen();
  int ListenControl();
  void Loop();
  void Shutdown();
  void AcceptClients();
  void AcceptControl();
  void DriveEngine();
  void StepControlJobs();
  void ProcessCompleted();
  void FlushDirty();
  void Reap();
  int64_t TimeoutNs() const;

  ServerOptions options_;
  std::unique_ptr<PoolFile> pool_file_;
  Pool* pool_ = nullptr;
  int epoll_fd_ = -1;
  int listen_fd_ = -1;
  int control_fd_ = -1;
  int signal_fd_ = -1;
  int event_fd_ = -1;
  std::string listen_description_;
  Handler listen_tag_{Handler::Kind::kListen};
  Handler control_tag_{Handler::Kind::kControl};
  Handler signal_tag_{Handler::Kind::kSignal};
  Handler event_tag_{Handler::Kind::kDeviceEvent};
  // The pool's work off its thread (hydration fetches): Poll takes it.
  Handler pool_event_tag_{Handler::Kind::kPoolEvent};
  std::vector<std::unique_ptr<Connection>> connections_;
  // Control commands still running as steps (at most cli::kMaxServerJobs).
  std::vector<std::unique_ptr<cli::ControlSession>> control_jobs_;
  // Fills of instantly restored volumes the server resumed when it opened the
  // pool; stepped like control_jobs_. Gone before the pool closes.
  std::unique_ptr<cli::ServerFills> fills_;
  std::unique_ptr<cli::ServerPolicies> policies_;  // the pool's policies, run by the server
  std::vector<Slot*> completed_;   // slots whose requests finished (or failed at once)
  std::vector<Slot*> processing_;  // completed_, swapped out while replies are encoded
  std::vector<Slot*> fua_;
  std::vector<Connection*> dirty_;  // connections with replies to send
  uint64_t next_connection_id_ = 1;
  int qos_exports_ = 0;
  bool device_event_read_ = false;
  bool stop_ = false;
  bool warned_full_ = false;
};

class Connection : public Handler {
 public:
  Connection(Server& server, int fd, uint64_t id)
      : Handler{Kind::kConnection}, server_(server), fd_(fd), id_(id), rbuf_(kReadBufferBytes) {}
  ~Connection() { SNAPDISK_CHECK(fd_ < 0 && parts_in_engine_ == 0, "live connection destroyed"); }

  void Start();
  void OnReadable();
  void OnWritable() { Flush(); }
  // Sends what is queued; frees sent slots; parses input that waited for one.
  void Flush();
  // Builds the reply of a finished slot and queues it.
  void Finish(Slot* slot);
  // The engine finished one part of `slot`.
  void PartDone(Slot* slot, const Status& status);
  // Hard disconnect: no more socket I/O; the object lives until the engine
  // has called back for every request.
  void Close(const char* why);
  // A failed recv/send: the client going away is not worth a log line.
  void PeerError(int err) { Close(err == EPIPE || err == ECONNRESET ? "" : std::strerror(err)); }
  bool reading() const { return !stalled_ && !disconnecting_; }
  bool reapable() const { return fd_ < 0 && parts_in_engine_ == 0; }
  bool dirty = false;
  uint64_t id() const { return id_; }
  bool closed() const { return fd_ < 0; }
  // Server shutdown: stop taking requests.
  void StopReading() {
    disconnecting_ = true;
    UpdateInterest();
  }
  bool idle() const { return parts_in_engine_ == 0 && out_head_ == nullptr && hs_out_.empty(); }

 private:
  enum class Phase { kClientFlags, kOptions, kTransmission };

  void Log(const std::string& what) {
    std::fprintf(stderr, "snapdisk: serve: client %llu: %s\n", static_cast<unsigned long long>(id_),
                 what.c_str());
  }
  void UpdateInterest();
  size_t available() const { return rend_ - rbegin_; }
  const std::byte* input() const { return rbuf_.data() + rbegin_; }
  void Consume(size_t n) {
    rbegin_ += n;
    if (rbegin_ == rend_) rbegin_ = rend_ = 0;
  }
  // Moves unparsed input to the front so `need` bytes fit.
  void MakeRoom(size_t need) {
    if (rbuf_.size() - rbegin_ >= need) return;
    std::memmove(rbuf_.data(), rbuf_.data() + rbegin_, available());
    rend_ -= rbegin_;
    rbegin_ = 0;
  }
  void Parse();
  bool ParseHandshake();  // false: wait for more input (or closed)
  bool ParseRequest();    // false: wait for more input or a free slot (or closed)
  void HandleOption(uint32_t option, std::span<const std::byte> data);
  void OptionReply(uint32_t option, uint32_t type, std::string_view payload = {});
  void OptionError(uint32_t option, uint32_t type, const std::string& message);
  void InfoReplies(uint32_t option, const ExportTarget& target, const std::vector<uint16_t>& asked);
  void EnterTransmission(const ExportTarget& target);
  static uint16_t TransmissionFlags(bool read_only);

  Slot* TakeSlot();
  void ReleaseSlot(Slot* slot);
  void Reject(Slot* slot, uint32_t error, std::string message);
  void Submit(Slot* slot, VolumeOp op, uint64_t offset, uint64_t length, std::byte* data);
  void StartRequest(Slot* slot);
  void BlockStatus(Slot* slot);
  void EnsureBuffer(Slot* slot, size_t bytes);
  void Enqueue(Slot* slot);
  void MaybeFinishDisconnect();

  Server& server_;
  int fd_;
  const uint64_t id_;
  Phase phase_ = Phase::kClientFlags;
  bool no_zeroes_ = false;
  bool structured_ = false;
  bool base_allocation_ = false;  // selected by SET_META_CONTEXT ...
  std::string meta_export_;       // ... for this export name
  uint32_t options_seen_ = 0;

  ExportTarget export_;
  bool in_use_ = false;  // SetInUse(true) done
  uint32_t block_bytes_ = 4096;

  // Input.
  std::vector<std::byte> rbuf_;
  size_t rbegin_ = 0, rend_ = 0;
  Slot* payload_slot_ = nullptr;  // large write payload going straight into the slot
  uint64_t skip_bytes_ = 0;       // payload of a refused write, to drop
  bool stalled_ = false;          // a complete request waits for a slot or budget
  bool disconnecting_ = false;    // NBD_CMD_DISC / NBD_OPT_ABORT / shutdown: read no more

  // Output: handshake bytes first, then slots in completion order.
  std::vector<std::byte> hs_out_;
  size_t hs_sent_ = 0;
  Slot* out_head_ = nullptr;
  Slot* out_tail_ = nullptr;
  bool want_out_ = false;

  uint32_t epoll_events_ = 0;  // as registered

  // Slots.
  std::unique_ptr<Slot[]> slots_;
  uint32_t slot_count_ = 0;
  Slot* free_slots_ = nullptr;
  uint64_t bytes_in_flight_ = 0;
  uint32_t parts_in_engine_ = 0;

  friend class Server;
};

// ---- Connection: lifecycle and socket I/O --------------------------------------

void Connection::Start() {
  MessageWriter w(hs_out_);
  w.U64(kNbdMagic);
  w.U64(kOptMagic);
  w.U16(kFlagFixedNewstyle | kFlagNoZeroes);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = static_cast<Handler*>(this);
  if (epoll_ctl(server_.epoll_fd(), EPOLL_CTL_ADD, fd_, &ev) != 0) {
    Close(("epoll_ctl: " + std::string(std::strerror(errno))).c_str());
    return;
  }
  epoll_events_ = EPOLLIN;
  if (server_.options().verbose) Log("connected");
  Flush();
}

void Connection::UpdateInterest() {
  if (fd_ < 0) return;
  uint32_t want = 0;
  if (!stalled_ && !disconnecting_) want |= EPOLLIN;
  if (want_out_) want |= EPOLLOUT;
  if (want == epoll_events_) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.ptr = static_cast<Handler*>(this);
  if (epoll_ctl(server_.epoll_fd(), EPOLL_CTL_MOD, fd_, &ev) != 0) {
    Close(("epoll_ctl: " + std::string(std::strerror(errno))).c_str());
    return;
  }
  epoll_events_ = want;
}

void Connection::Close(const char* why) {
  if (fd_ < 0) return;
  if (why != nullptr && *why != '\0') {
    Log(std::string(why) + "; disconnecting");
  } else if (server_.options().verbose) {
    Log("disconnected");
  }
  epoll_ctl(server_.epoll_fd(), EPOLL_CTL_DEL, fd_, nullptr);
  ::close(fd_);
  fd_ = -1;
  // Slots not waiting for the engine go back now; the others when it calls.
  while (out_head_ != nullptr) {
    Slot* s = out_head_;
    out_head_ = s->next;
    ReleaseSlot(s);
  }
  out_tail_ = nullptr;
  if (payload_slot_ != nullptr) {
    ReleaseSlot(payload_slot_);
    payload_slot_ = nullptr;
  }
  hs_out_.clear();
  if (in_use_) {
    export_.volume->SetInUse(false);
    if (export_.volume->qos() != nullptr) server_.QosExports(-1);
    in_use_ = false;
  }
}

void Connection::OnReadable() {
  for (int round = 0; round < 4 && fd_ >= 0; ++round) {
    if (payload_slot_ != nullptr) {
      Slot* s = payload_slot_;
      const ssize_t n =
          ::recv(fd_, s->buffer.data() + s->payload_have, s->req.length - s->payload_have, 0);
      if (n == 0) return Close("");
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return PeerError(errno);
      }
      s->payload_have += static_cast<uint32_t>(n);
      if (s->payload_have < s->req.length) continue;
      payload_slot_ = nullptr;
      StartRequest(s);
      Parse();  // nothing buffered, but a stall may clear
      continue;
    }
    if (stalled_ || disconnecting_) return;
    MakeRoom(rbuf_.size());  // whatever is left is a partial message: move it to the front
    const size_t space = rbuf_.size() - rend_;
    if (space == 0) return;  // cannot happen: every message fits the buffer
    const ssize_t n = ::recv(fd_, rbuf_.data() + rend_, space, 0);
    if (n == 0) return Close("");
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      return PeerError(errno);
    }
    rend_ += static_cast<size_t>(n);
    Parse();
    if (static_cast<size_t>(n) < space) return;  // drained the socket for now
  }
}

void Connection::Parse() {
  while (fd_ >= 0) {
    if (phase_ != Phase::kTransmission) {
      if (!ParseHandshake()) break;
    } else {
      if (!ParseRequest()) break;
    }
  }
  UpdateInterest();
}

void Connection::Enqueue(Slot* slot) {
  slot->next = nullptr;
  slot->sent = 0;
  if (out_tail_ != nullptr) {
    out_tail_->next = slot;
  } else {
    out_head_ = slot;
  }
  out_tail_ = slot;
  server_.MarkDirty(this);
}

void Connection::Flush() {
  for (int round = 0; round < 8 && fd_ >= 0; ++round) {
    iovec iov[kMaxIov];
    int n_iov = 0;
    size_t want = 0;
    if (hs_sent_ < hs_out_.size()) {
      iov[n_iov++] = {hs_out_.data() + hs_sent_, hs_out_.size() - hs_sent_};
      want += hs_out_.size() - hs_sent_;
    }
    for (Slot* s = out_head_; s != nullptr && n_iov + 3 <= kMaxIov; s = s->next) {
      size_t skip = s->sent;
      auto add = [&](const void* p, size_t len) {
        if (len == 0) return;
        if (skip >= len) {
          skip -= len;
          return;
        }
        iov[n_iov++] = {const_cast<std::byte*>(static_cast<const std::byte*>(p)) + skip,
                        len - skip};
        want += len - skip;
        skip = 0;
      };
      add(s->header, s->header_bytes);
      add(s->data, s->data_bytes);
      add(s->extra.data(), s->extra.size());
    }
    if (n_iov == 0) {
      want_out_ = false;
      break;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(n_iov);
    ssize_t sent = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        want_out_ = true;
        break;
      }
      PeerError(errno);
      return;
    }
    size_t left = static_cast<size_t>(sent);
    if (hs_sent_ < hs_out_.size()) {
      const size_t take = std::min(left, hs_out_.size() - hs_sent_);
      hs_sent_ += take;
      left -= take;
      if (hs_sent_ == hs_out_.size()) {
        hs_out_.clear();
        hs_sent_ = 0;
      }
    }
    while (left > 0 && out_head_ != nullptr) {
      Slot* s = out_head_;
      const size_t take = std::min(left, s->total() - s->sent);
      s->sent += take;
      left -= take;
      if (s->sent < s->total()) break;
      out_head_ = s->next;
      if (out_head_ == nullptr) out_tail_ = nullptr;
      ReleaseSlot(s);
    }
    if (static_cast<size_t>(sent) < want) {
      want_out_ = true;  // the socket is full: wait for EPOLLOUT
      break;
    }
    want_out_ = false;
  }
  if (fd_ < 0) return;
  if (stalled_ && phase_ == Phase::kTransmission) {
    stalled_ = false;
    Parse();  // requests that waited for a slot
  }
  UpdateInterest();
  MaybeFinishDisconnect();
}

void Connection::MaybeFinishDisconnect() {
  if (fd_ >= 0 && disconnecting_ && !server_.stopping() && idle()) Close("");
}

// ---- Connection: handshake ------------------------------------------------------

void Connection::OptionReply(uint32_t option, uint32_t type, std::string_view payload) {
  MessageWriter w(hs_out_);
  w.U64(kOptReplyMagic);
  w.U32(option);
  w.U32(type);
  w.U32(static_cast<uint32_t>(payload.size()));
  w.Bytes(payload);
}

void Connection::OptionError(uint32_t option, uint32_t type, const std::string& message) {
  if (server_.options().verbose) Log(std::string(OptionName(option)) + ": " + message);
  OptionReply(option, type, std::string_view(message).substr(0, kMaxErrorMessageBytes));
}

uint16_t Connection::TransmissionFlags(bool read_only) {
  const uint16_t flags = kFlagHasFlags | kFlagSendFlush | kFlagCanMultiConn;
  if (read_only) return flags | kFlagReadOnly;
  return flags | kFlagSendFua | kFlagSendTrim | kFlagSendWriteZeroes | kFlagSendFastZero;
}

void Connection::InfoReplies(uint32_t option, const ExportTarget& target,
                             const std::vector<uint16_t>& asked) {
  const uint16_t flags = TransmissionFlags(target.read_only);
  std::vector<std::byte> info;
  auto send_info = [&] {
    OptionReply(option, kRepInfo, {reinterpret_cast<const char*>(info.data()), info.size()});
    info.clear();
  };
  MessageWriter w(info);
  w.U16(kInfoExport);
  w.U64(target.size_bytes);
  w.U16(flags);
  send_info();
  // Always sent: our maximum is not the protocol's default.
  w.U16(kInfoBlockSize);
  w.U32(1);
  w.U32(server_.pool().block_bytes());
  w.U32(server_.options().max_request_bytes);
  send_info();
  for (uint16_t type : asked) {
    if (type == kInfoName) {
      w.U16(kInfoName);
      w.Bytes(target.name);
      send_info();
    } else if (type == kInfoDescription) {
      w.U16(kInfoDescription);
      w.Bytes(target.read_only ? "snapdisk snapshot (read-only)" : "snapdisk volume");
      send_info();
    }
  }
}

void Connection::EnterTransmission(const ExportTarget& target) {
  export_ = target;
  export_.volume->SetInUse(true);
  in_use_ = true;
  if (export_.volume->qos() != nullptr) server_.QosExports(1);
  // Contexts chosen for another export do not carry over (names compared
  // canonically, so "" and the only volume's name match).
  if (meta_export_ != target.name) base_allocation_ = false;
  block_bytes_ = server_.pool().block_bytes();
  slot_count_ = server_.options().max_requests_per_client;
  slots_ = std::make_unique<Slot[]>(slot_count_);
  for (uint32_t i = slot_count_; i > 0; --i) {
    Slot* s = &slots_[i - 1];
    s->conn = this;
    s->buffer = AlignedBuffer(block_bytes_);
    for (VolumeRequest& part : s->parts) {
      part.on_complete = [s](VolumeRequest&, const Status& status) {
        s->conn->PartDone(s, status);
      };
    }
    s->next = free_slots_;
    free_slots_ = s;
  }
  phase_ = Phase::kTransmission;
  if (server_.options().verbose) {
    Log("export '" + export_.name + "'" + (export_.read_only ? " (read-only)" : "") +
        (structured_ ? ", structured replies" : "") +
        (base_allocation_ ? ", base:allocation" : ""));
  }
}

bool Connection::ParseHandshake() {
  if (disconnecting_) return false;
  if (phase_ == Phase::kClientFlags) {
    if (available() < 4) return false;
    const uint32_t flags = Load32(input());
    Consume(4);
    if ((flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) != 0) {
      Close(("unknown client flags " + Hex(flags)).c_str());
      return false;
    }
    no_zeroes_ = (flags & kClientFlagNoZeroes) != 0;
    phase_ = Phase::kOptions;
    return true;
  }
  if (available() < kOptionHeaderBytes) return false;
  const OptionHeader h = DecodeOptionHeader(input());
  if (h.magic != kOptMagic) {
    Close(("bad option magic " + Hex(h.magic)).c_str());
    return false;
  }
  if (h.length > kMaxOptionBytes) {
    Close(("option " + std::to_string(h.option) + " has " + std::to_string(h.length) +
           " bytes of data (the limit is " + std::to_string(kMaxOptionBytes) + ")")
              .c_str());
    return false;
  }
  if (available() < kOptionHeaderBytes + h.length) {
    MakeRoom(kOptionHeaderBytes + h.length);
    return false;
  }
  if (++options_seen_ > kMaxOptionsPerConnection) {
    Close("too many options");
    return false;
  }
  // Handlers write only to hs_out_, so the span stays valid until Consume.
  std::span<const std::byte> data(input() + kOptionHeaderBytes, h.length);
  HandleOption(h.option, data);
  Consume(kOptionHeaderBytes + h.length);
  server_.MarkDirty(this);
  return fd_ >= 0;
}

void Connection::HandleOption(uint32_t option, std::span<const std::byte> data) {
  switch (option) {
    case kOptExportName: {
      const std::string name(reinterpret_cast<const char*>(data.data()), data.size());
      auto target = server_.FindExport(name);
      if (!target.ok()) {
        // This option cannot return an error: the spec says hang up.
        Close(("NBD_OPT_EXPORT_NAME: " + target.status().message()).c_str());
        return;
      }
      MessageWriter w(hs_out_);
      w.U64(target->size_bytes);
      w.U16(TransmissionFlags(target->read_only));
      if (!no_zeroes_) w.Zeroes(124);
      EnterTransmission(*target);
      return;
    }
    case kOptAbort:
      OptionReply(option, kRepAck);
      disconnecting_ = true;
      return;
    case kOptList: {
      if (!data.empty()) return OptionError(option, kRepErrInvalid, "NBD_OPT_LIST takes no data");
      for (const std::string& name : server_.ExportNames()) {
        std::vector<std::byte> payload;
        MessageWriter w(payload);
        w.U32(static_cast<uint32_t>(name.size()));
        w.Bytes(name);
        OptionReply(option, kRepServer,
                    {reinterpret_cast<const char*>(payload.data()), payload.size()});
      }
      OptionReply(option, kRepAck);
      return;
    }
    case kOptStartTls:
      return OptionError(option, kRepErrUnsup, "TLS is not supported by snapdisk serve");
    case kOptInfo:
    case kOptGo: {
      auto request = DecodeInfoRequest(data);
      if (!request.ok()) return OptionError(option, kRepErrInvalid, request.status().message());
      if (server_.stopping())
        return OptionError(option, kRepErrShutdown, "server is shutting down");
      auto target = server_.FindExport(request->name);
      if (!target.ok()) return OptionError(option, kRepErrUnknown, target.status().message());
      InfoReplies(option, *target, request->info_types);
      OptionReply(option, kRepAck);
      if (option == kOptGo) EnterTransmission(*target);
      return;
    }
    case kOptStructuredReply:
      if (!data.empty()) {
        return OptionError(option, kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
      }
      structured_ = true;
      OptionReply(option, kRepAck);
      return;
    case kOptListMetaContext:
    case kOptSetMetaContext: {
      const bool set = option == kOptSetMetaContext;
      if (set) {
        base_allocation_ = false;  // replaced even when this one fails
        meta_export_.clear();
      }
      if (!structured_) {
        return OptionError(option, kRepErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first");
      }
      auto request = DecodeMetaContextRequest(data);
      if (!request.ok()) return OptionError(option, kRepErrInvalid, request.status().message());
      auto target = server_.FindExport(request->name);
      if (!target.ok()) return OptionError(option, kRepErrUnknown, target.status().message());
      bool match = !set && request->queries.empty();  // LIST with no query: everything
      for (const std::string& q : request->queries) {
        if (q == kBaseAllocation || (!set && q == "base:")) match = true;
      }
      if (match) {
        std::vector<std::byte> payload;
        MessageWriter w(payload);
        w.U32(set ? kBaseAllocationContextId : 0);
        w.Bytes(kBaseAllocation);
        OptionReply(option, kRepMetaContext,
                    {reinterpret_cast<const char*>(payload.data()), payload.size()});
      }
      if (set) {
        base_allocation_ = match;
        meta_export_ = target->name;
      }
      OptionReply(option, kRepAck);
      return;
    }
    default:
      return OptionError(option, kRepErrUnsup,
                         "option " + std::to_string(option) + " is not supported");
  }
}

// ---- Connection: transmission -----------------------------------------------------

Slot* Connection::TakeSlot() {
  Slot* s = free_slots_;
  if (s == nullptr) return nullptr;
  free_slots_ = s->next;
  s->next = nullptr;
  return s;
}

void Connection::ReleaseSlot(Slot* s) {
  SNAPDISK_CHECK(s->parts_pending == 0, "slot released with engine work pending");
  bytes_in_flight_ -= s->bytes_charged;
  s->bytes_charged = 0;
  if (s->buffer.size() > kKeepBufferBytes) s->buffer = AlignedBuffer(block_bytes_);
  s->status = Status::OK();
  s->error = 0;
  s->message.clear();
  s->extents.clear();
  s->extra.clear();
  s->data = nullptr;
  s->data_bytes = 0;
  s->header_bytes = 0;
  s->sent = 0;
  s->payload_have = 0;
  s->fua = false;
  s->next = free_slots_;
  free_slots_ = s;
}

void Connection::EnsureBuffer(Slot* s, size_t bytes) {
  if (s->buffer.size() >= bytes) return;
  size_t size = block_bytes_;
  while (size < bytes) size *= 2;
  s->buffer = AlignedBuffer(size);
}

void Connection::Reject(Slot* slot, uint32_t error, std::string message) {
  slot->error = error;
  slot->message = std::move(message);
  server_.SlotDone(slot);
}

bool Connection::ParseRequest() {
  if (disconnecting_) return false;
  if (skip_bytes_ > 0) {
    const size_t take = static_cast<size_t>(std::min<uint64_t>(skip_bytes_, available()));
    Consume(take);
    skip_bytes_ -= take;
    return skip_bytes_ == 0;
  }
  if (available() < kRequestBytes) {
    MakeRoom(kRequestBytes);
    return false;
  }
  const Request r = DecodeRequest(input());
  if (r.magic != kRequestMagic) {
    Close(("bad request magic " + Hex(r.magic)).c_str());
    return false;
  }
  const bool has_payload = r.type == kCmdWrite;
  const uint64_t max = server_.options().max_request_bytes;
  const bool too_long = (r.type == kCmdRead || r.type == kCmdWrite) && r.length > max;
  const bool payload_ok =
      has_payload && !too_long && !export_.read_only && r.offset <= export_.size_bytes &&
      r.length <= export_.size_bytes - r.offset && r.flags == (r.flags & kCmdFlagFua);
  // A whole small write is gathered in the read buffer before it is taken.
  if (payload_ok && r.length <= kDirectPayloadBytes && available() < kRequestBytes + r.length) {
    MakeRoom(kRequestBytes + r.length);
    return false;
  }
  const uint64_t charge = (r.type == kCmdRead && !too_long) || payload_ok ? r.length : 0;
  if (charge > 0 && bytes_in_flight_ > 0 &&
      bytes_in_flight_ + charge > kMaxBytesInFlightPerConnection) {
    stalled_ = true;
    return false;
  }
  Slot* slot = TakeSlot();
  if (slot == nullptr) {
    stalled_ = true;
    return false;
  }
  slot->req = r;
  Consume(kRequestBytes);
  if (r.type == kCmdDisc) {
    ReleaseSlot(slot);
    disconnecting_ = true;
    MaybeFinishDisconnect();
    return false;
  }
  if (has_payload && !payload_ok) {
    // Refused: drop the payload that follows, answer with an error.
    skip_bytes_ = r.length;
  }
  slot->bytes_charged = charge;
  bytes_in_flight_ += charge;
  if (payload_ok) {
    EnsureBuffer(slot, r.length);
    const uint32_t have = static_cast<uint32_t>(std::min<size_t>(available(), r.length));
    std::memcpy(slot->buffer.data(), input(), have);
    Consume(have);
    slot->payload_have = have;
    if (have < r.length) {
      payload_slot_ = slot;  // the rest is received straight into the slot
      return false;
    }
  }
  StartRequest(slot);
  return fd_ >= 0;
}

void Connection::StartRequest(Slot* slot) {
  const Request& r = slot->req;
  const uint64_t size = export_.size_bytes;
  const bool in_range = r.offset <= size && r.length <= size - r.offset;
  const uint64_t max = server_.options().max_request_bytes;
  auto flags_ok = [&](uint16_t allowed) { return (r.flags & ~(allowed | kCmdFlagFua)) == 0; };
  const bool mutation = r.type == kCmdWrite || r.type == kCmdTrim || r.type == kCmdWriteZeroes;
  if (mutation && export_.read_only) {
    return Reject(slot, kEperm, "export '" + export_.name + "' is a read-only snapshot");
  }
  slot->fua = mutation && (r.flags & kCmdFlagFua) != 0;
  // Only a rejected request needs its description: build it then, not on
  // every request.
  auto where = [&] {
    return std::string(CommandName(r.type)) + " at offset " + std::to_string(r.offset) +
           " length " + std::to_string(r.length);
  };
  switch (r.type) {
    case kCmdRead:
    case kCmdWrite: {
      const bool read = r.type == kCmdRead;
      if (!flags_ok(0))
        return Reject(slot, kEinval, where() + ": unsupported flags " + Hex(r.flags));
      if (r.length > max) {
        return Reject(slot, kEinval,
                      where() + ": longer than the " + std::to_string(max) + "-byte limit");
      }
      if (!in_range) {
        // proto.md: a read past the end is EINVAL, a write past the end ENOSPC.
        return Reject(
            slot, read ? kEinval : kEnospc,
            where() + ": beyond the end of the export (" + std::to_string(size) + " bytes)");
      }
      if (r.length == 0) return server_.SlotDone(slot);
      if (read) EnsureBuffer(slot, r.length);  // a write's payload is already in the buffer
      return Submit(slot, read ? VolumeOp::kRead : VolumeOp::kWrite, r.offset, r.length,
                    slot->buffer.data());
    }
    case kCmdFlush:
      if (!flags_ok(0))
        return Reject(slot, kEinval, where() + ": unsupported flags " + Hex(r.flags));
      return Submit(slot, VolumeOp::kFlush, 0, 0, nullptr);
    case kCmdTrim: {
      if (!flags_ok(0))
        return Reject(slot, kEinval, where() + ": unsupported flags " + Hex(r.flags));
      if (!in_range) {
        return Reject(
            slot, kEinval,
            where() + ": beyond the end of the export (" + std::to_string(size) + " bytes)");
      }
      // A trim is a hint: only whole blocks are given back.
      const uint64_t first = (r.offset + block_bytes_ - 1) / block_bytes_ * block_bytes_;
      const uint64_t end = (r.offset + r.length) / block_bytes_ * block_bytes_;
      if (first >= end) return server_.SlotDone(slot);
      return Submit(slot, VolumeOp::kTrim, first, end - first, nullptr);
    }
    case kCmdWriteZeroes: {
      if (!flags_ok(kCmdFlagNoHole | kCmdFlagFastZero)) {
        return Reject(slot, kEinval, where() + ": unsupported flags " + Hex(r.flags));
      }
      if (!in_range) {
        return Reject(
            slot, kEnospc,
            where() + ": beyond the end of the export (" + std::to_string(size) + " bytes)");
      }
      const bool aligned = r.offset % block_bytes_ == 0 && r.length % block_bytes_ == 0;
      // Aligned zeroing only unmaps (fast whatever the length); unaligned
      // edges are a read-modify-write of one block each.
      if ((r.flags & kCmdFlagFastZero) != 0 && !aligned) {
        return Reject(slot, kEnotsup, where() + ": not block-aligned, so not faster than a write");
      }
      if (r.length == 0) return server_.SlotDone(slot);
      return Submit(slot, VolumeOp::kWriteZeroes, r.offset, r.length, nullptr);
    }
    case kCmdCache:
      if (!flags_ok(0))
        return Reject(slot, kEinval, where() + ": unsupported flags " + Hex(r.flags));
      if (!in_range) {
        return Reject(
            slot, kEinval,
            where() + ": beyond the end of the export (" + std::to_string(size) + " bytes)");
      }
      return server_.SlotDone(slot);  // a hint; the page cache does the rest
    case kCmdBlockStatus:
      if (!flags_ok(kCmdFlagReqOne)) {
        return Reject(slot, kEinval, where() + ": unsupported flags " + Hex(r.flags));
      }
      if (!structured_ || !base_allocation_) {
        return Reject(slot, kEinval, where() + ": no metadata context was negotiated");
      }
      if (!in_range || r.length == 0) {
        return Reject(
            slot, kEinval,
            where() + ": beyond the end of the export (" + std::to_string(size) + " bytes)");
      }
      return BlockStatus(slot);
    default:
      return Reject(slot, kEinval, "unknown command " + std::to_string(r.type));
  }
}

void Connection::Submit(Slot* slot, VolumeOp op, uint64_t offset, uint64_t length,
                        std::byte* data) {
  // Split into an unaligned head, an aligned middle and an unaligned tail.
  uint64_t cut[4] = {offset, offset, offset + length, offset + length};
  if (op != VolumeOp::kFlush) {
    const uint64_t b = block_bytes_;
    const uint64_t head_end = std::min((offset + b - 1) / b * b, offset + length);
    const uint64_t tail_start = std::max((offset + length) / b * b, head_end);
    cut[1] = head_end;
    cut[2] = tail_start;
  }
  for (int i = 0; i < 3; ++i) {
    const uint64_t len = cut[i + 1] - cut[i];
    if (op != VolumeOp::kFlush && len == 0) continue;
    if (op == VolumeOp::kFlush && i > 0) break;
    VolumeRequest& part = slot->parts[i];
    part.op = op;
    part.offset_bytes = cut[i];
    part.length_bytes = len;
    part.data = data == nullptr ? nullptr : data + (cut[i] - offset);
    ++slot->parts_pending;
    ++parts_in_engine_;
    Status s = export_.volume->Submit(part);
    if (!s.ok()) {
      --slot->parts_pending;
      --parts_in_engine_;
      if (slot->status.ok()) slot->status = std::move(s);
      break;
    }
  }
  if (slot->parts_pending == 0) server_.SlotDone(slot);  // nothing went to the engine
}

void Connection::PartDone(Slot* slot, const Status& status) {
  if (!status.ok() && slot->status.ok()) slot->status = status;
  --parts_in_engine_;
  if (--slot->parts_pending == 0) server_.SlotDone(slot);
}

void Connection::BlockStatus(Slot* slot) {
  const Request& r = slot->req;
  // Describe at most kMaxBlockStatusBlocks blocks per reply (cost is
  // O(mapped blocks in the range)).
  const uint64_t limit = kMaxBlockStatusBlocks * block_bytes_;
  const uint64_t first_block_end = (r.offset / block_bytes_ + 1) * block_bytes_;
  const uint64_t end = std::min<uint64_t>(r.offset + r.length, first_block_end + limit);
  auto extents = export_.volume->MapExtents(r.offset, end - r.offset);
  if (!extents.ok()) {
    slot->status = extents.status();
  } else {
    slot->extents = std::move(extents).value();
    if ((r.flags & kCmdFlagReqOne) != 0 && slot->extents.size() > 1) slot->extents.resize(1);
    if (slot->extents.size() > kMaxBlockStatusDescriptors) {
      slot->extents.resize(kMaxBlockStatusDescriptors);
    }
  }
  server_.SlotDone(slot);
}

void Connection::Finish(Slot* slot) {
  if (slot->error == 0 && !slot->status.ok()) {
    slot->error = ErrnoFor(slot->status);
    slot->message = slot->status.message();
  }
  const Request& r = slot->req;
  std::byte* h = slot->header;
  auto structured_header = [&](uint16_t flags, uint16_t type, uint32_t length) {
    Store32(h, kStructuredReplyMagic);
    Store16(h + 4, flags);
    Store16(h + 6, type);
    Store64(h + 8, r.cookie);
    Store32(h + 16, length);
    slot->header_bytes = kStructuredReplyBytes;
  };
  auto simple_header = [&](uint32_t error) {
    Store32(h, kSimpleReplyMagic);
    Store32(h + 4, error);
    Store64(h + 8, r.cookie);
    slot->header_bytes = kSimpleReplyBytes;
  };
  if (slot->error != 0) {
    // The client's mistakes are its to report; the server's own failures
    // (I/O errors, corruption) are logged here too.
    if (slot->error == kEio || server_.options().verbose) {
      Log(std::string(CommandName(r.type)) + " failed: " + slot->message);
    }
    if (structured_) {
      const size_t n = std::min(slot->message.size(), kMaxErrorMessageBytes);
      structured_header(kReplyFlagDone, kReplyTypeError, static_cast<uint32_t>(6 + n));
      Store32(h + 20, slot->error);
      Store16(h + 24, static_cast<uint16_t>(n));
      slot->header_bytes += 6;
      const auto* m = reinterpret_cast<const std::byte*>(slot->message.data());
      slot->extra.assign(m, m + n);
    } else {
      simple_header(slot->error);
    }
  } else if (r.type == kCmdRead) {
    if (structured_ && r.length == 0) {
      structured_header(kReplyFlagDone, kReplyTypeNone, 0);
    } else if (structured_) {
      structured_header(kReplyFlagDone, kReplyTypeOffsetData, 8 + r.length);
      Store64(h + 20, r.offset);
      slot->header_bytes += 8;
    } else {
      simple_header(0);
    }
    slot->data = slot->buffer.data();
    slot->data_bytes = r.length;
  } else if (r.type == kCmdBlockStatus) {
    const size_t n = slot->extents.size();
    structured_header(kReplyFlagDone, kReplyTypeBlockStatus, static_cast<uint32_t>(4 + 8 * n));
    Store32(h + 20, kBaseAllocationContextId);
    slot->header_bytes += 4;
    slot->extra.resize(8 * n);
    for (size_t i = 0; i < n; ++i) {
      const Extent& e = slot->extents[i];
      Store32(slot->extra.data() + 8 * i, static_cast<uint32_t>(e.length_bytes));
      Store32(slot->extra.data() + 8 * i + 4, e.zero ? (kStateHole | kStateZero) : 0);
    }
  } else {
    simple_header(0);
  }
  if (fd_ < 0) {
    ReleaseSlot(slot);
    return;
  }
  Enqueue(slot);
}

// ---- Server ------------------------------------------------------------------------

Server::~Server() {
  for (auto& c : connections_) {
    if (!c->closed()) c->Close("");
  }
  // Only set up and failed part way (Shutdown closes these otherwise).
  if (listen_fd_ >= 0 && !options_.socket_path.empty()) ::unlink(options_.socket_path.c_str());
  if (control_fd_ >= 0) cli::RemoveControlSocket(options_.pool_path);
  for (int fd : {listen_fd_, control_fd_, signal_fd_, epoll_fd_}) {
    if (fd >= 0) ::close(fd);
  }
}

void Server::MarkDirty(Connection* conn) {
  if (conn->dirty) return;
  conn->dirty = true;
  dirty_.push_back(conn);
}

Result<ExportTarget> Server::FindExport(std::string_view name) {
  std::string wanted(name);
  if (wanted.empty()) {
    // The default export: the pool's only volume, if it has exactly one.
    auto volumes = pool_->ListVolumes();
    if (volumes.size() != 1) {
      return Status::NotFound("no default export: the pool has " + std::to_string(volumes.size()) +
                              " volumes; name one (VOL or VOL@SNAP)");
    }
    wanted = volumes[0].name;
  }
  const ExportName parsed = ParseExportName(wanted);
  Result<Volume*> handle = parsed.snapshot.empty() && wanted.find('@') == std::string::npos
                               ? pool_->OpenVolume(parsed.volume)
                               : pool_->OpenSnapshot(parsed.volume, parsed.snapshot);
  if (!handle.ok()) {
    return Status::NotFound("no export '" + wanted + "' (" + handle.status().message() + ")");
  }
  // A volume being restored (and its snapshots: the restore's undo points)
  // is not for use until `restore open`.
  SNAPDISK_RETURN_IF_ERROR(CheckNotRestoring(*pool_, parsed.volume, "exported over NBD"));
  ExportTarget t;
  t.volume = *handle;
  t.name = wanted;
  t.read_only = t.volume->read_only();
  t.size_bytes = t.volume->size_bytes();
  return t;
}

std::vector<std::string> Server::ExportNames() {
  std::vector<std::string> names;
  for (const VolumeInfo& v : pool_->ListVolumes()) {
    if (!CheckNotRestoring(*pool_, v.name, "listed").ok()) continue;  // not exported (FindExport)
    names.push_back(v.name);
    auto snaps = pool_->ListSnapshots(v.name);
    if (!snaps.ok()) continue;
    for (const SnapshotInfo& s : *snaps) names.push_back(v.name + "@" + s.name);
  }
  return names;
}

namespace {

// A socket path that exists: a live server answers (Busy), a stale one is
// removed, anything that is not a socket is left alone (error).
Status ClaimSocketPath(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidArgument("socket path " + path + " is too long (" +
                                   std::to_string(path.size()) + " bytes; the limit is " +
                                   std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + ")");
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::OK();
    return Status::FromErrno(errno, "stat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Status::AlreadyExists(path + " exists and is not a socket; not replacing it");
  }
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return Status::FromErrno(errno, "socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  const int rc = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::close(probe);
  if (rc == 0) return Status::Busy(path + " is in use by a running server");
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "remove stale socket " + path);
  }
  return Status::OK();
}

Result<int> ListenUnix(const std::string& path) {
  SNAPDISK_RETURN_IF_ERROR(ClaimSocketPath(path));
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 128) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::FromErrno(err, "listen on " + path);
  }
  return fd;
}

}  // namespace

int Server::Listen() {
  if (!options_.socket_path.empty()) {
    auto fd = ListenUnix(options_.socket_path);
    if (!fd.ok()) {
      std::fprintf(stderr, "snapdisk: serve: %s\n", fd.status().ToString().c_str());
      return cli::ExitCodeFor(fd.status());
    }
    listen_fd_ = *fd;
    listen_description_ = "unix:" + options_.socket_path;
    return cli::kExitOk;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(options_.tcp_port);
  const int gai = ::getaddrinfo(options_.bind_address.c_str(), port.c_str(), &hints, &res);
  if (gai != 0) {
    std::fprintf(stderr, "snapdisk: serve: cannot resolve bind address '%s': %s\n",
                 options_.bind_address.c_str(), gai_strerror(gai));
    return cli::kExitUsage;
  }
  int err = 0;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = errno;
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      err = errno;
      ::close(fd);
      continue;
    }
    listen_fd_ = fd;
    break;
  }
  ::freeaddrinfo(res);
  if (listen_fd_ < 0) {
    std::fprintf(stderr, "snapdisk: serve: cannot listen on %s port %d: %s\n",
                 options_.bind_address.c_str(), options_.tcp_port, std::strerror(err));
    return err == EADDRINUSE ? cli::kExitBusy : cli::kExitIoError;
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
  ::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, serv, sizeof serv,
                NI_NUMERICHOST | NI_NUMERICSERV);
  const bool v6 = ss.ss_family == AF_INET6;
  listen_description_ = std::string("tcp:") + (v6 ? "[" : "") + host + (v6 ? "]" : "") + ":" + serv;
  return cli::kExitOk;
}

int Server::ListenControl() {
  cli::SetStoreHolderRole("snapdisk serve of pool " + options_.pool_path);
  auto fd = cli::ListenControlSocket(options_.pool_path);
  if (!fd.ok()) {
    std::fprintf(stderr, "snapdisk: serve: control socket: %s\n", fd.status().ToString().c_str());
    return cli::ExitCodeFor(fd.status());
  }
  control_fd_ = *fd;
  // Accepted in a loop until EAGAIN; the accepted sockets stay blocking.
  ::fcntl(control_fd_, F_SETFL, ::fcntl(control_fd_, F_GETFL) | O_NONBLOCK);
  return cli::kExitOk;
}

int Server::Setup() {
  // Signals first, so a SIGTERM during setup is not lost.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  signal_fd_ = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

  PoolOptions pool_options;
  pool_options.max_requests = options_.max_clients * options_.max_requests_per_client * 3 + 256;
  pool_options.hydration_source_resolver = RecordedHydrationSourceResolver();
  FileDeviceOptions device_options;
  device_options.queue_depth = 256;
  device_options.completion_batch = 0;  // Poll(0) reaps everything finished
  auto pf = PoolFile::Open(options_.pool_path, pool_options, device_options);
  if (!pf.ok()) {
    std::fprintf(stderr, "snapdisk: serve: %s\n", pf.status().ToString().c_str());
    return cli::ExitCodeFor(pf.status());
  }
  pool_file_ = std::move(pf).value();
  pool_ = &pool_file_->pool();

  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0 || signal_fd_ < 0) {
    std::fprintf(stderr, "snapdisk: serve: epoll/signalfd: %s\n", std::strerror(errno));
    return cli::kExitIoError;
  }
  if (int rc = ListenControl(); rc != cli::kExitOk) return rc;
  if (int rc = Listen(); rc != cli::kExitOk) return rc;
  event_fd_ = pool_file_->device().completion_event_fd();
  auto add = [&](int fd, Handler* tag) {
    if (fd < 0) return;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = tag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  };
  add(listen_fd_, &listen_tag_);
  add(control_fd_, &control_tag_);
  add(signal_fd_, &signal_tag_);
  add(event_fd_, &event_tag_);
  add(pool_->background_event_fd(), &pool_event_tag_);
  const size_t total_slots = size_t{options_.max_clients} * options_.max_requests_per_client;
  completed_.reserve(total_slots);
  processing_.reserve(total_slots);
  fua_.reserve(total_slots);
  dirty_.reserve(options_.max_clients);
  connections_.reserve(options_.max_clients);
  return cli::kExitOk;
}

void Server::AcceptClients() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        std::fprintf(stderr, "snapdisk: serve: accept: %s\n", std::strerror(errno));
      }
      return;
    }
    if (connections_.size() >= options_.max_clients) {
      if (!warned_full_) {
        std::fprintf(stderr, "snapdisk: serve: %u clients connected (the limit); refusing more\n",
                     options_.max_clients);
        warned_full_ = true;
      }
      ::close(fd);
      continue;
    }
    warned_full_ = false;
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on Unix
    connections_.push_back(std::make_unique<Connection>(*this, fd, next_connection_id_++));
    connections_.back()->Start();
  }
}

void Server::AcceptControl() {
  for (;;) {
    const int fd = ::accept4(control_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return;
    }
    // Reading the request and running the command are synchronous on this
    // thread (control.h bounds how long a peer may take to send its
    // request); NBD clients wait meanwhile. A backup is left running as
    // steps, driven by StepControlJobs.
    auto session = cli::ControlSession::Start(fd, *pool_, options_.pool_path,
                                              control_jobs_.size() < cli::kMaxServerJobs);
    if (!session->done()) control_jobs_.push_back(std::move(session));
  }
}

void Server::StepControlJobs() {
  for (size_t i = 0; i < control_jobs_.size();) {
    if (control_jobs_[i]->Step()) {
      control_jobs_.erase(control_jobs_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

void Server::DriveEngine() {
  // After the device's eventfd was read, Poll even with nothing in flight:
  // the device signals once between Polls (file_device.h).
  // And while the pool has background work (a snapshot deletion's slices).
  if (pool_->in_flight() > 0 || device_event_read_ || pool_->NextTimerNs() != INT64_MAX) {
    (void)pool_->Poll(0);
  }
  device_event_read_ = false;
}

void Server::ProcessCompleted() {
  while (!completed_.empty()) {
    processing_.swap(completed_);
    // One commit covers every FUA request of this batch.
    fua_.clear();
    for (Slot* s : processing_) {
      if (s->fua && s->status.ok() && s->error == 0) fua_.push_back(s);
    }
    if (!fua_.empty()) {
      Status commit = pool_->Commit();
      if (!commit.ok()) {
        for (Slot* s : fua_) s->status = commit;
      }
    }
    for (Slot* s : processing_) s->conn->Finish(s);
    processing_.clear();
  }
}

void Server::FlushDirty() {
  // Flushing frees slots, which may let stalled input be parsed, which may
  // queue more replies: go round until nothing new is queued.
  for (int round = 0; round < 4 && !dirty_.empty(); ++round) {
    std::vector<Connection*> batch;
    batch.swap(dirty_);
    for (Connection* c : batch) {
      c->dirty = false;
      c->Flush();
    }
    ProcessCompleted();
    if (!batch.empty() && dirty_.empty()) {
      dirty_.swap(batch);  // keep the capacity
      dirty_.clear();
    }
  }
}

void Server::Reap() {
  if (!completed_.empty()) return;  // slots in there still point at their connections
  for (size_t i = 0; i < connections_.size();) {
    if (connections_[i]->reapable() && !connections_[i]->dirty) {
      connections_[i] = std::move(connections_.back());
      connections_.pop_back();
    } else {
      ++i;
    }
  }
}

// How long epoll may sleep: forever when idle; with requests in flight the
// device's eventfd wakes us, and a timer covers QoS admissions and held
// completions (the pool has no fd for those).
int64_t Server::TimeoutNs() const {
  if (!completed_.empty() || !dirty_.empty()) return 0;
  // Background work of the pool (due now when nothing is in flight).
  if (pool_ != nullptr && pool_->in_flight() == 0 && pool_->NextTimerNs() != INT64_MAX) return 0;
  const bool jobs = !control_jobs_.empty() || (fills_ != nullptr && !fills_->idle()) ||
                    (policies_ != nullptr && policies_->running());
  int64_t job_ns = jobs ? kJobTurnNs : -1;
  if (!jobs && policies_ != nullptr) {  // wake for the next policy check
    job_ns = std::max<int64_t>(0, policies_->next_check_ns() - cli::MonotonicNs());
  }
  if (pool_->in_flight() == 0) return job_ns;
  if (qos_exports_ > 0) return 50'000;
  if (event_fd_ >= 0) return job_ns >= 0 ? job_ns : 10'000'000;
  return 200'000;
}

void Server::Loop() {
  epoll_event events[kMaxEvents];
  while (!stop_) {
    const int64_t timeout_ns = TimeoutNs();
    timespec ts{};
    timespec* tsp = nullptr;
    if (timeout_ns >= 0) {
      ts.tv_sec = timeout_ns / 1'000'000'000;
      ts.tv_nsec = timeout_ns % 1'000'000'000;
      tsp = &ts;
    }
    const int n = ::epoll_pwait2(epoll_fd_, events, kMaxEvents, tsp, nullptr);
    if (n < 0 && errno != EINTR) {
      std::fprintf(stderr, "snapdisk: serve: epoll_wait: %s\n", std::strerror(errno));
      stop_ = true;
      break;
    }
    for (int i = 0; i < n; ++i) {
      Handler* h = static_cast<Handler*>(events[i].data.ptr);
      switch (h->kind) {
        case Handler::Kind::kListen:
          AcceptClients();
          break;
        case Handler::Kind::kControl:
          AcceptControl();
          break;
        case Handler::Kind::kSignal: {
          signalfd_siginfo si;
          while (::read(signal_fd_, &si, sizeof si) == sizeof si) {
            std::fprintf(stderr,
                         "snapdisk: serve: %s: finishing requests in flight and committing\n",
                         si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
            stop_ = true;
          }
          break;
        }
        case Handler::Kind::kDeviceEvent: {
          eventfd_t value;
          (void)eventfd_read(event_fd_, &value);
          device_event_read_ = true;
          break;
        }
        case Handler::Kind::kPoolEvent:
          device_event_read_ = true;  // Poll(0) takes the results (and resets the fd)
          break;
        case Handler::Kind::kConnection: {
          auto* c = static_cast<Connection*>(h);
          if (c->closed()) break;
          if (events[i].events & EPOLLOUT) c->OnWritable();
          if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) c->OnReadable();
          // Hung up while not reading (all slots busy, or after NBD_CMD_DISC):
          // nobody will read the replies; without this, level-triggered
          // EPOLLHUP would wake the loop until the engine finishes.
          if (!c->closed() && (events[i].events & (EPOLLHUP | EPOLLERR)) && !c->reading()) {
            c->Close("");
          }
          break;
        }
      }
    }
    StepControlJobs();
    fills_->Step();
    if (policies_) policies_->Step();
    DriveEngine();
    ProcessCompleted();
    FlushDirty();
    Reap();
  }
}

void Server::Shutdown() {
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    if (!options_.socket_path.empty()) ::unlink(options_.socket_path.c_str());
  }
  if (control_fd_ >= 0) {
    ::close(control_fd_);
    control_fd_ = -1;
    cli::RemoveControlSocket(options_.pool_path);
  }
  for (auto& c : connections_) c->StopReading();
  // Running backups are cancelled; their clients get their answer.
  for (auto& job : control_jobs_) job->Cancel();
  while (!control_jobs_.empty()) {
    StepControlJobs();
    if (!control_jobs_.empty()) cli::WaitForPoolWork(*pool_);
    ProcessCompleted();
  }
  // The resumed fills stop where they are: their volumes stay hydrating (the
  // commit at close keeps what they filled), and the next start resumes them.
  fills_.reset();
  policies_.reset();  // a running policy backup is cancelled
  // Finish what the engine holds, send what replies can be sent without
  // waiting on slow clients, then hang up.
  while (pool_->in_flight() > 0) {
    (void)pool_->Poll(1);
    ProcessCompleted();
  }
  ProcessCompleted();
  for (auto& c : connections_) {
    if (!c->closed()) c->Flush();
  }
  ProcessCompleted();
  for (auto& c : connections_) c->Close("");
  dirty_.clear();
  connections_.clear();
}

int Server::Run() {
  if (int rc = Setup(); rc != cli::kExitOk) return rc;
  cli::ServerFillOptions fill_options;
  fill_options.pool_path = options_.pool_path;
  fill_options.rate_mb_per_s = options_.hydrate_rate_mb_per_s;
  fill_options.log = [](const std::string& line) {
    std::fprintf(stderr, "snapdisk: serve: %s\n", line.c_str());
  };
  fills_ = std::make_unique<cli::ServerFills>(*pool_, std::move(fill_options));
  fills_->ResumeAll();
  if (options_.policy_check_interval_s > 0) {
    policies_ = std::make_unique<cli::ServerPolicies>(
        *pool_, static_cast<int64_t>(options_.policy_check_interval_s * 1e9),
        [](const std::string& line) {
          std::fprintf(stderr, "snapdisk: serve: %s\n", line.c_str());
          std::fflush(stderr);
        });
  }
  uint64_t snapshots = 0;
  const auto volumes = pool_->ListVolumes();
  for (const VolumeInfo& v : volumes) snapshots += v.snapshots;
  std::fprintf(stderr, "snapdisk: serving %s on %s (%zu volumes, %llu snapshots)\n",
               options_.pool_path.c_str(), listen_description_.c_str(), volumes.size(),
               static_cast<unsigned long long>(snapshots));
  std::fflush(stderr);
  Loop();
  Shutdown();
  Status closed = pool_file_->Close();
  pool_ = nullptr;
  if (!closed.ok()) {
    std::fprintf(stderr, "snapdisk: serve: closing the pool: %s\n", closed.ToString().c_str());
    return cli::ExitCodeFor(closed);
  }
  std::fprintf(stderr, "snapdisk: serve: pool committed and closed\n");
  return cli::kExitOk;
}

}  // namespace

int Serve(const ServerOptions& options) {
  if (options.socket_path.empty() == (options.tcp_port < 0)) {
    std::fprintf(stderr, "snapdisk: serve: give exactly one of --socket PATH or --port N\n");
    return cli::kExitUsage;
  }
  if (options.max_clients == 0 || options.max_requests_per_client == 0 ||
      options.max_request_bytes < 4096) {
    std::fprintf(stderr, "snapdisk: serve: limits must be positive (request bytes >= 4096)\n");
    return cli::kExitUsage;
  }
  Server server(options);
  return server.Run();
}

}  // namespace snapdisk::nbd
