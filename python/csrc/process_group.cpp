// process_group.cpp -- ProcessGroupStarling: c10d collectives as libstarling calls on a
// worker thread. See process_group.hpp for the threading and rank-map rules.
#include <Python.h> // first, as Python's headers require

#include "process_group.hpp"

#include <starling.h>

#include <ATen/core/ivalue.h>
#include <ATen/ATen.h>

#include <chrono>
#include <memory>

namespace starling_torch {
namespace {

// Tag of the group's own all-gather of torch ranks, apart from the user's tag-0 traffic.
constexpr uint64_t kRankMapTag = 0x5354524b4d4150ull; // "STRKMAP"
constexpr int kTopologyAttempts = 16;

starling_dtype dtypeOf(const at::Tensor &t) {
    switch (t.scalar_type()) {
    case at::kFloat: return STARLING_F32;
    case at::kDouble: return STARLING_F64;
    case at::kHalf: return STARLING_F16;
    case at::kBFloat16: return STARLING_BF16;
    case at::kInt: return STARLING_I32;
    case at::kLong: return STARLING_I64;
    case at::kByte: return STARLING_U8;
    default:
        throw Error(STARLING_E_UNSUPPORTED, std::string("starling: tensors of dtype ") +
                                                c10::toString(t.scalar_type()) +
                                                " are not supported (float32, float64, "
                                                "float16, bfloat16, int32, int64, uint8)");
    }
}

starling_op opOf(const c10d::ReduceOp &op) {
    switch (op.op_) {
    case c10d::ReduceOp::SUM: return STARLING_SUM;
    case c10d::ReduceOp::AVG: return STARLING_AVG;
    case c10d::ReduceOp::MIN: return STARLING_MIN;
    case c10d::ReduceOp::MAX: return STARLING_MAX;
    default:
        throw Error(STARLING_E_UNSUPPORTED,
                    "starling: reduce op not supported (SUM, AVG, MIN, MAX)");
    }
}

void checkTensor(const at::Tensor &t, const char *what) {
    if (!t.defined())
        throw Error(STARLING_E_INVALID, std::string("starling ") + what + ": undefined tensor");
    if (!t.device().is_cpu())
        throw Error(STARLING_E_INVALID, std::string("starling ") + what +
                                            ": tensor is on device " + t.device().str() +
                                            "; the starling backend takes CPU tensors");
    if (t.layout() != at::kStrided)
        throw Error(STARLING_E_INVALID,
                    std::string("starling ") + what + ": only dense (strided) tensors");
    (void)dtypeOf(t);
}

void checkOne(const std::vector<at::Tensor> &tensors, const char *what) {
    if (tensors.size() != 1)
        throw Error(STARLING_E_INVALID, std::string("starling ") + what +
                                            ": takes exactly one tensor per call (got " +
                                            std::to_string(tensors.size()) + ")");
    checkTensor(tensors[0], what);
}

void checkSame(const at::Tensor &t, const at::Tensor &ref, const char *what) {
    checkTensor(t, what);
    if (t.scalar_type() != ref.scalar_type() || t.numel() != ref.numel())
        throw Error(STARLING_E_INVALID,
                    std::string("starling ") + what +
                        ": every tensor must have the input's dtype and element count");
}

// A dense buffer for `t`: `t` itself when contiguous, else a contiguous copy that
// copyBack() writes into `t` once the call succeeded.
struct Dense {
    at::Tensor orig, buf;
    explicit Dense(const at::Tensor &t) : orig(t), buf(t.is_contiguous() ? t : t.contiguous()) {}
    void *ptr() { return buf.data_ptr(); }
    size_t count() const { return static_cast<size_t>(buf.numel()); }
    void copyBack() {
        if (!buf.is_same(orig))
            orig.copy_(buf);
    }
};

} // namespace

// ---------------------------------------------------------------- Work

class ProcessGroupStarling::Work : public c10d::Work {
  public:
    Work(int rank, c10d::OpType type, std::vector<at::Tensor> outputs)
        : c10d::Work(rank, type), outputs_(std::move(outputs)),
          future_(c10::make_intrusive<c10::ivalue::Future>(
              c10::ListType::create(c10::TensorType::get()))) {}

    bool isCompleted() override { return future_->completed(); }
    bool isSuccess() const override { return future_->completed() && !future_->hasError(); }
    std::exception_ptr exception() const override { return future_->exception_ptr(); }
    std::vector<at::Tensor> result() override { return outputs_; }
    c10::intrusive_ptr<c10::ivalue::Future> getFuture() override { return future_; }

    // Every collective is bounded by the library's op timeout, so wait() cannot hang;
    // torch's per-call timeout is not used.
    bool wait(std::chrono::milliseconds) override {
        future_->wait();
        if (future_->hasError())
            std::rethrow_exception(future_->exception_ptr());
        return true;
    }

    void complete() {
        finish();
        future_->markCompleted(c10::IValue(outputs_));
    }
    void fail(std::exception_ptr e) {
        finish(e);
        future_->setError(e);
    }

  private:
    std::vector<at::Tensor> outputs_;
    c10::intrusive_ptr<c10::ivalue::Future> future_;
};

// ---------------------------------------------------------------- life cycle

ProcessGroupStarling::ProcessGroupStarling(int rank, int size, const StarlingOptions &opts)
    : c10d::ProcessGroup(rank, size), opts_(opts), root_fallback_(opts.root_fallback) {
    init();
    starling_config *cfg = nullptr;
    check(starling_config_create(&cfg), "config");
    std::unique_ptr<starling_config, void (*)(starling_config *)> cfg_guard(
        cfg, starling_config_destroy);
    if (opts.timeout_ms > 0)
        check(starling_config_set_timeout_ms(cfg, opts.timeout_ms), "timeout");
    if (opts.op_timeout_ms > 0)
        check(starling_config_set_op_timeout_ms(cfg, opts.op_timeout_ms), "op timeout");
    if (opts.streams > 0)
        check(starling_config_set_streams(cfg, opts.streams), "streams");
    if (!opts.name.empty())
        check(starling_config_set_name(cfg, opts.name.c_str()), "name");
    if (!opts.listen.empty())
        check(starling_config_set_listen(cfg, opts.listen.c_str()), "listen address");
    if (!opts.advertise.empty())
        check(starling_config_set_advertise(cfg, opts.advertise.c_str()), "advertise host");
    if (opts.inbound >= 0)
        check(starling_config_set_inbound(cfg, opts.inbound), "inbound (0 or 1)");
    if (opts.shm >= 0)
        check(starling_config_set_shm(cfg, opts.shm), "shm (0 or 1)");
    if (!opts.security.empty()) {
        int src = starling_config_set_security(cfg, opts.security.c_str());
        if (src != STARLING_OK)
            throw Error(src, "starling: security mode '" + opts.security + "': " +
                                 starling_strerror(src) +
                                 " (expected aead, chacha20 or none)");
    }
    starling_comm *comm = nullptr;
    int rc = starling_comm_create(&comm, opts.coordinator.c_str(), opts.run.c_str(),
                                  opts.secret.data(), opts.secret.size(), cfg);
    if (rc != STARLING_OK)
        throw Error(rc, std::string("starling: connect to the coordinator at ") +
                            opts.coordinator + ": " + starling_strerror(rc) + " (" +
                            starling_last_error() + ")");
    comm_ = comm;
    try {
        // The first epoch holds every rank once the coordinator has seen them all; a
        // smaller one (a coordinator started with fewer min_peers) is waited out.
        int op_timeout = opts.op_timeout_ms > 0 ? opts.op_timeout_ms : 60000;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(op_timeout);
        for (;;) {
            rc = starling_update_topology(comm_);
            if (rc != STARLING_E_PEER_LOST)
                check(rc, "join");
            int n = starling_comm_size(comm_);
            if (rc == STARLING_OK && n == size)
                break;
            if (n > size)
                throw Error(STARLING_E_MISMATCH,
                            "starling: the run has " + std::to_string(n) +
                                " members but the process group's world size is " +
                                std::to_string(size) + " (another job uses run '" + opts.run +
                                "' on this coordinator?)");
            if (std::chrono::steady_clock::now() > deadline)
                throw Error(STARLING_E_TIMEOUT,
                            "starling: " + std::to_string(n) + " of " + std::to_string(size) +
                                " members joined within the op timeout");
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        rebuildMap();
    } catch (...) {
        starling_comm_destroy(comm_);
        comm_ = nullptr;
        throw;
    }
    worker_ = std::thread([this] { runWorker(); });
}

ProcessGroupStarling::~ProcessGroupStarling() {
    // The last reference usually goes from Python, with the GIL held. The threads joined
    // here may need it: the worker drops the last reference to a Work whose tensors have
    // Python objects, and the library's threads log through Python's logging. So the GIL
    // is released while they finish (taken back before returning to Python).
    PyThreadState *saved = nullptr;
    if (Py_IsInitialized() && PyGILState_Check())
        saved = PyEval_SaveThread();
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable())
        worker_.join();
    starling_comm_destroy(comm_);
    if (saved)
        PyEval_RestoreThread(saved);
}

void ProcessGroupStarling::runWorker() {
    for (;;) {
        std::function<void()> task;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
            if (queue_.empty())
                return; // stop_ and nothing left: every Work issued has completed
            task = std::move(queue_.front());
            queue_.pop_front();
            busy_ = true;
        }
        task();
        {
            std::lock_guard<std::mutex> lock(mu_);
            busy_ = false;
        }
        idle_cv_.notify_all();
    }
}

c10::intrusive_ptr<c10d::Work> ProcessGroupStarling::enqueue(c10d::OpType type,
                                                             std::vector<at::Tensor> outputs,
                                                             Body body) {
    auto work = c10::make_intrusive<Work>(rank_, type, std::move(outputs));
    auto task = [work, body = std::move(body)]() {
        try {
            body();
        } catch (...) {
            work->fail(std::current_exception());
            return;
        }
        work->complete();
    };
    {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(task));
    }
    cv_.notify_one();
    return work;
}

void ProcessGroupStarling::drain() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
}

void ProcessGroupStarling::check(int rc, const char *what) const {
    if (rc == STARLING_OK)
        return;
    std::string msg = std::string("starling ") + what + ": " + starling_strerror(rc);
    const char *detail = comm_ ? starling_comm_errmsg(comm_) : "";
    if (detail && *detail)
        msg += std::string(" (") + detail + ")";
    throw Error(rc, msg);
}

// ---------------------------------------------------------------- membership

void ProcessGroupStarling::rebuildMap() {
    int n = starling_comm_size(comm_);
    std::vector<int32_t> all(static_cast<size_t>(n));
    int32_t mine = rank_;
    starling_callopts *co = nullptr;
    check(starling_callopts_create(&co), "rank map");
    std::unique_ptr<starling_callopts, void (*)(starling_callopts *)> guard(
        co, starling_callopts_destroy);
    check(starling_callopts_set_tag(co, kRankMapTag), "rank map");
    check(starling_allgather(comm_, &mine, all.data(), 1, STARLING_I32, co), "rank map");
    std::vector<int> ring_of_torch(static_cast<size_t>(size_), -1);
    for (int r = 0; r < n; r++) {
        int t = all[static_cast<size_t>(r)];
        if (t < 0 || t >= size_ || ring_of_torch[static_cast<size_t>(t)] != -1)
            throw Error(STARLING_E_MISMATCH,
                        "starling: two members claim torch rank " + std::to_string(t) +
                            " (or it is outside 0.." + std::to_string(size_ - 1) + ")");
        ring_of_torch[static_cast<size_t>(t)] = r;
    }
    ring_of_torch_ = std::move(ring_of_torch);
    torch_of_ring_.assign(all.begin(), all.end());
}

void ProcessGroupStarling::updateTopology() {
    drain();
    auto work = enqueue(c10d::OpType::UNKNOWN, {}, [this] {
        int rc = STARLING_E_PEER_LOST;
        for (int attempt = 0; attempt < kTopologyAttempts && rc == STARLING_E_PEER_LOST;
             attempt++) {
            rc = starling_update_topology(comm_);
            if (rc == STARLING_OK) {
                try {
                    rebuildMap();
                } catch (const Error &e) {
                    if (e.code() != STARLING_E_PEER_LOST)
                        throw;
                    rc = STARLING_E_PEER_LOST;
                }
            }
        }
        check(rc, "update_topology");
    });
    work->wait();
}

int ProcessGroupStarling::liveSize() {
    drain();
    return static_cast<int>(torch_of_ring_.size());
}

int ProcessGroupStarling::liveRank() {
    drain();
    return starling_comm_rank(comm_);
}

std::vector<int> ProcessGroupStarling::liveRanks() {
    drain();
    std::vector<int> ranks;
    for (int t = 0; t < size_; t++)
        if (ring_of_torch_[static_cast<size_t>(t)] >= 0)
            ranks.push_back(t);
    return ranks;
}

uint64_t ProcessGroupStarling::epoch() {
    drain();
    return starling_comm_epoch(comm_);
}

uint64_t ProcessGroupStarling::bytesSent() {
    drain();
    return starling_comm_bytes_sent(comm_);
}

int ProcessGroupStarling::ringRankOf(int torch_rank, const char *what) const {
    if (torch_rank < 0 || torch_rank >= size_)
        throw Error(STARLING_E_INVALID, std::string("starling ") + what + ": rank " +
                                            std::to_string(torch_rank) + " is outside 0.." +
                                            std::to_string(size_ - 1));
    int r = ring_of_torch_[static_cast<size_t>(torch_rank)];
    if (r >= 0)
        return r;
    if (root_fallback_)
        return 0; // a live member: under root_fallback the members hold equal state
    throw Error(STARLING_E_PEER_LOST, std::string("starling ") + what + ": rank " +
                                          std::to_string(torch_rank) +
                                          " has left the group");
}

// ---------------------------------------------------------------- collectives

c10::intrusive_ptr<c10d::Work>
ProcessGroupStarling::allreduce(std::vector<at::Tensor> &tensors,
                                const c10d::AllreduceOptions &opts) {
    checkOne(tensors, "allreduce");
    starling_op op = opOf(opts.reduceOp);
    at::Tensor t = tensors[0];
    return enqueue(c10d::OpType::ALLREDUCE, tensors, [this, t, op] {
        Dense d(t);
        check(starling_allreduce(comm_, d.ptr(), d.ptr(), d.count(), dtypeOf(t), op, nullptr),
              "allreduce");
        d.copyBack();
    });
}

c10::intrusive_ptr<c10d::Work>
ProcessGroupStarling::allreduce_coalesced(std::vector<at::Tensor> &tensors,
                                          const c10d::AllreduceCoalescedOptions &opts) {
    for (const auto &t : tensors)
        checkTensor(t, "allreduce_coalesced");
    starling_op op = opOf(opts.reduceOp);
    return enqueue(c10d::OpType::ALLREDUCE_COALESCED, tensors, [this, tensors, op] {
        std::vector<Dense> ds(tensors.begin(), tensors.end());
        for (size_t i = 0; i < ds.size(); i++)
            check(starling_allreduce(comm_, ds[i].ptr(), ds[i].ptr(), ds[i].count(),
                                     dtypeOf(tensors[i]), op, nullptr),
                  "allreduce_coalesced");
        for (auto &d : ds)
            d.copyBack();
    });
}

c10::intrusive_ptr<c10d::Work>
ProcessGroupStarling::broadcast(std::vector<at::Tensor> &tensors,
                                const c10d::BroadcastOptions &opts) {
    checkOne(tensors, "broadcast");
    if (opts.rootTensor != 0)
        throw Error(STARLING_E_INVALID, "starling broadcast: rootTensor must be 0");
    int root = static_cast<int>(opts.rootRank);
    if (root < 0 || root >= size_)
        (void)ringRankOf(root, "broadcast"); // throws the range error
    at::Tensor t = tensors[0];
    return enqueue(c10d::OpType::BROADCAST, tensors, [this, t, root] {
        Dense d(t);
        int ring_root = ringRankOf(root, "broadcast");
        check(starling_broadcast(comm_, d.ptr(), d.count(), dtypeOf(t), ring_root, nullptr),
              "broadcast");
        d.copyBack();
    });
}

c10::intrusive_ptr<c10d::Work>
ProcessGroupStarling::_allgather_base(at::Tensor &output, at::Tensor &input,
                                      const c10d::AllgatherOptions &) {
    checkTensor(input, "allgather");
    checkTensor(output, "allgather");
    if (output.scalar_type() != input.scalar_type() ||
        output.numel() != input.numel() * size_)
        throw Error(STARLING_E_INVALID, "starling allgather: the output must hold world size "
                                        "times the input's elements, in the input's dtype");
    at::Tensor in = input, out = output;
    return enqueue(c10d::OpType::_ALLGATHER_BASE, {output}, [this, in, out] {
        int n = static_cast<int>(torch_of_ring_.size());
        if (n != size_)
            throw Error(STARLING_E_PEER_LOST,
                        "starling allgather: " + std::to_string(size_ - n) + " of " +
                            std::to_string(size_) + " ranks have left the group");
        Dense src(in);
        at::Tensor gathered = at::empty({static_cast<int64_t>(n) * in.numel()}, in.options());
        check(starling_allgather(comm_, src.ptr(), gathered.data_ptr(), src.count(), dtypeOf(in),
                                 nullptr),
              "allgather");
        // Block r of `gathered` came from ring rank r; torch wants it by torch rank.
        at::Tensor flat = out.view({-1});
        int64_t k = in.numel();
        for (int r = 0; r < n; r++)
            flat.narrow(0, torch_of_ring_[static_cast<size_t>(r)] * k, k)
                .copy_(gathered.narrow(0, r * k, k));
    });
}

c10::intrusive_ptr<c10d::Work>
ProcessGroupStarling::allgather(std::vector<std::vector<at::Tensor>> &outputs,
                                std::vector<at::Tensor> &inputs,
                                const c10d::AllgatherOptions &) {
    checkOne(inputs, "allgather");
    if (outputs.size() != 1 || static_cast<int>(outputs[0].size()) != size_)
        throw Error(STARLING_E_INVALID,
                    "starling allgather: expects one output list of world-size tensors");
    for (const auto &o : outputs[0])
        checkSame(o, inputs[0], "allgather");
    at::Tensor in = inputs[0];
    std::vector<at::Tensor> outs = outputs[0];
    return enqueue(c10d::OpType::ALLGATHER, outs, [this, in, outs] {
        int n = static_cast<int>(torch_of_ring_.size());
        if (n != size_)
            throw Error(STARLING_E_PEER_LOST,
                        "starling allgather: " + std::to_string(size_ - n) + " of " +
                            std::to_string(size_) + " ranks have left the group");
        Dense src(in);
        at::Tensor gathered = at::empty({static_cast<int64_t>(n) * in.numel()}, in.options());
        check(starling_allgather(comm_, src.ptr(), gathered.data_ptr(), src.count(), dtypeOf(in),
                                 nullptr),
              "allgather");
        int64_t k = in.numel();
        for (int r = 0; r < n; r++)
            outs[static_cast<size_t>(torch_of_ring_[static_cast<size_t>(r)])].copy_(
                gathered.narrow(0, r * k, k).view(in.sizes()));
    });
}

c10::intrusive_ptr<c10d::Work>
ProcessGroupStarling::_reduce_scatter_base(at::Tensor &output, at::Tensor &input,
                                           const c10d::ReduceScatterOptions &opts) {
    checkTensor(input, "reduce_scatter");
    checkTensor(output, "reduce_scatter");
    if (output.scalar_type() != input.scalar_type() ||
        input.numel() != output.numel() * size_)
        throw Error(STARLING_E_INVALID, "starling reduce_scatter: the input must hold world "
                                        "size times the output's elements, in its dtype");
    starling_op op = opOf(opts.reduceOp);
    at::Tensor in = input, out = output;
    return enqueue(c10d::OpType::_REDUCE_SCATTER_BASE, {output}, [this, in, out, op] {
        int n = static_cast<int>(torch_of_ring_.size());
        if (n != size_)
            throw Error(STARLING_E_PEER_LOST,
                        "starling reduce_scatter: " + std::to_string(size_ - n) + " of " +
                            std::to_string(size_) + " ranks have left the group");
        // Block t of the input (torch rank t's share) goes to ring rank ring_of_torch_[t].
        int64_t k = out.numel();
        at::Tensor flat = in.reshape({-1});
        at::Tensor ordered = at::empty({static_cast<int64_t>(n) * k}, in.options());
        for (int r = 0; r < n; r++)
            ordered.narrow(0, r * k, k)
                .copy_(flat.narrow(0, torch_of_ring_[static_cast<size_t>(r)] * k, k));
        Dense dst(out);
        check(starling_reduce_scatter(comm_, ordered.data_ptr(), dst.ptr(), dst.count(),
                                      dtypeOf(in), op, nullptr),
              "reduce_scatter");
        dst.copyBack();
    });
}

c10::intrusive_ptr<c10d::Work>
ProcessGroupStarling::reduce_scatter(std::vector<at::Tensor> &outputs,
                                     std::vector<std::vector<at::Tensor>> &inputs,
                                     const c10d::ReduceScatterOptions &opts) {
    checkOne(outputs, "reduce_scatter");
    if (inputs.size() != 1 || static_cast<int>(inputs[0].size()) != size_)
        throw Error(STARLING_E_INVALID,
                    "starling reduce_scatter: expects one input list of world-size tensors");
    for (const auto &i : inputs[0])
        checkSame(i, outputs[0], "reduce_scatter");
    starling_op op = opOf(opts.reduceOp);
    at::Tensor out = outputs[0];
    std::vector<at::Tensor> ins = inputs[0];
    return enqueue(c10d::OpType::REDUCE_SCATTER, outputs, [this, out, ins, op] {
        int n = static_cast<int>(torch_of_ring_.size());
        if (n != size_)
            throw Error(STARLING_E_PEER_LOST,
                        "starling reduce_scatter: " + std::to_string(size_ - n) + " of " +
                            std::to_string(size_) + " ranks have left the group");
        int64_t k = out.numel();
        at::Tensor ordered = at::empty({static_cast<int64_t>(n) * k}, out.options());
        for (int r = 0; r < n; r++)
            ordered.narrow(0, r * k, k)
                .copy_(ins[static_cast<size_t>(torch_of_ring_[static_cast<size_t>(r)])]
                           .reshape({-1}));
        Dense dst(out);
        check(starling_reduce_scatter(comm_, ordered.data_ptr(), dst.ptr(), dst.count(),
                                      dtypeOf(out), op, nullptr),
              "reduce_scatter");
        dst.copyBack();
    });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupStarling::barrier(const c10d::BarrierOptions &) {
    return enqueue(c10d::OpType::BARRIER, {}, [this] {
        int32_t dummy = 0;
        check(starling_allreduce(comm_, &dummy, &dummy, 0, STARLING_I32, STARLING_SUM, nullptr),
              "barrier");
    });
}

} // namespace starling_torch
