// process_group.hpp -- a torch.distributed (c10d) ProcessGroup over libstarling.
//
// Every collective runs on one worker thread per group, in the order the caller issued
// them (the order every member must agree on): the communicator is used by one thread at
// a time, as starling.h requires, and DistributedDataParallel's bucket all-reduces
// overlap its backward pass. A Work completes its Future when the worker has finished
// the call; a failure (a member died: STARLING_E_PEER_LOST) completes it with a
// starling_torch::Error that the Python module turns into starling.errors.PeerLost.
//
// torch ranks are fixed for the group's life (c10d's rank and size are const); the
// library's ring ranks are decided by the coordinator at every epoch. The group keeps
// the map between the two, rebuilt by an all-gather after every topology update. After a
// member has left, only the live members take part: size() stays the torch world size,
// liveSize() is the member count the library divides by for ReduceOp.AVG.
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

struct starling_comm;

namespace starling_torch {

// A library error: `code` is the starling_error value (negative), what() the detail.
class Error : public std::runtime_error {
  public:
    Error(int code, const std::string &msg) : std::runtime_error(msg), code_(code) {}
    int code() const { return code_; }

  private:
    int code_;
};

struct StarlingOptions {
    std::string coordinator; // "HOST:PORT"
    std::string run;
    std::string secret;
    std::string name;       // member name for the coordinator's logs ("" = none)
    int timeout_ms = 0;     // failure-detection timeout (0 = library default)
    int op_timeout_ms = 0;  // per-call deadline (0 = library default)
    int streams = 0;        // TCP streams per ring link (0 = library default)
    std::string listen;     // data plane "HOST:PORT" ("" = library default, loopback)
    std::string advertise;  // the host the others connect to ("" = library default)
    std::string security;   // "aead", "chacha20" or "none" ("" = library default, aead)
    int inbound = -1;       // accepts inbound connections: 0 or 1 (-1 = library default, 1)
    int shm = -1;           // same-host links over shared memory: 0 or 1 (-1 = default, 1)
    bool root_fallback = false; // broadcast from a departed rank: lowest live rank instead
};

class ProcessGroupStarling : public c10d::ProcessGroup {
  public:
    // Connects, waits until the epoch holds `size` members (bounded by op_timeout) and
    // builds the rank map. Throws Error.
    ProcessGroupStarling(int rank, int size, const StarlingOptions &opts);
    ~ProcessGroupStarling() override;

    const std::string getBackendName() const override { return "starling"; }

    c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor> &tensors,
                                             const c10d::BroadcastOptions &opts) override;
    c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor> &tensors,
                                             const c10d::AllreduceOptions &opts) override;
    c10::intrusive_ptr<c10d::Work>
    allreduce_coalesced(std::vector<at::Tensor> &tensors,
                        const c10d::AllreduceCoalescedOptions &opts) override;
    c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>> &outputs,
                                             std::vector<at::Tensor> &inputs,
                                             const c10d::AllgatherOptions &opts) override;
    c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor &output, at::Tensor &input,
                                                   const c10d::AllgatherOptions &opts) override;
    c10::intrusive_ptr<c10d::Work>
    reduce_scatter(std::vector<at::Tensor> &outputs,
                   std::vector<std::vector<at::Tensor>> &inputs,
                   const c10d::ReduceScatterOptions &opts) override;
    c10::intrusive_ptr<c10d::Work>
    _reduce_scatter_base(at::Tensor &output, at::Tensor &input,
                         const c10d::ReduceScatterOptions &opts) override;
    c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions &opts) override;

    // starling's own: applies membership changes (retrying while a member of the new
    // epoch dies during linking), then rebuilds the rank map. Waits for the queue first.
    void updateTopology();
    // Waits until every collective issued so far has completed.
    void drain();
    int liveSize();
    int liveRank();
    std::vector<int> liveRanks(); // torch ranks of the live members, ascending
    uint64_t epoch();
    uint64_t bytesSent();
    // The library handle, for Python's borrowed Communicator (state sync between steps,
    // after drain(): the communicator is then idle).
    uintptr_t commHandle() const { return reinterpret_cast<uintptr_t>(comm_); }
    bool rootFallback() const { return root_fallback_; }
    void setRootFallback(bool on) { root_fallback_ = on; }

  private:
    class Work;
    using Body = std::function<void()>;

    c10::intrusive_ptr<c10d::Work> enqueue(c10d::OpType type, std::vector<at::Tensor> outputs,
                                           Body body);
    void runWorker();
    void rebuildMap(); // worker thread (or constructor): all-gather of torch ranks
    void check(int rc, const char *what) const;
    int ringRankOf(int torch_rank, const char *what) const;

    StarlingOptions opts_;
    std::atomic<bool> root_fallback_;
    starling_comm *comm_ = nullptr;

    std::mutex mu_;
    std::condition_variable cv_;
    std::condition_variable idle_cv_;
    std::deque<std::function<void()>> queue_;
    bool busy_ = false;
    bool stop_ = false;
    std::thread worker_;

    // Written by the worker only while it runs a task; read by tasks (same thread) and
    // by the accessors under mu_ once the queue is drained.
    std::vector<int> ring_of_torch_; // -1: that torch rank has left
    std::vector<int> torch_of_ring_;
};

} // namespace starling_torch
