#include "dist.h"

#include "common.h"

#if defined(USE_C10D_GLOO) || defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace trn {

// Portable fallbacks, in terms of allgather / allreduce.
void Comm::allgatherInto(at::Tensor& out, const at::Tensor& in) {
  auto parts = allgather(in);
  const int64_t n = in.numel();
  for (int r = 0; r < worldSize(); r++) out.narrow(0, r * n, n).copy_(parts[r].reshape({-1}));
}

void Comm::reduceScatterSum(at::Tensor& out, at::Tensor& in) {
  allreduceSum(in);
  const int64_t n = out.numel();
  out.copy_(in.narrow(0, rank() * n, n));
}

namespace {
struct Done : Pending {
  void wait() override {}
};
}  // namespace

std::unique_ptr<Pending> Comm::allgatherIntoAsync(at::Tensor& out, const at::Tensor& in) {
  allgatherInto(out, in);
  return std::make_unique<Done>();
}

std::unique_ptr<Pending> Comm::reduceScatterSumAsync(at::Tensor& out, at::Tensor& in) {
  reduceScatterSum(out, in);
  return std::make_unique<Done>();
}

#if defined(USE_C10D_GLOO) || defined(USE_C10D_NCCL)

namespace {

// Runs `op` on t itself, or, when t is not on `dev` (or, with `contiguous`, is not contiguous), on a
// contiguous copy there that is copied back into t afterwards (collectives on off-device tensors).
template <typename Op>
void staged(at::Tensor& t, const at::Device& dev, bool contiguous, Op&& op) {
  if (t.device() == dev && (!contiguous || t.is_contiguous())) {
    op(t);
    return;
  }
  auto c = t.to(dev).contiguous();
  op(c);
  t.copy_(c);
}

// A c10d failure as TRN_ERR_DIST (c10 errors carry a C++ backtrace after their message: keep the message).
[[noreturn]] void distFailure(const std::exception& e, const char* what, int rank) {
  std::string msg = e.what();
  auto cut = msg.find("\nException raised from");
  if (cut != std::string::npos) msg.resize(cut);
  TRN_FAIL("TRN_ERR_DIST", std::string(what) + " failed on rank " + std::to_string(rank) + ": " + msg);
}

template <typename F>
c10::intrusive_ptr<c10d::Work> startWork(F&& start, const char* what, int rank) {
  try {
    return start();
  } catch (const TrnError&) {
    throw;
  } catch (const std::exception& e) {
    distFailure(e, what, rank);
  }
}

void waitWork(const c10::intrusive_ptr<c10d::Work>& work, const char* what, int rank) {
  try {
    work->wait();
  } catch (const TrnError&) {
    throw;
  } catch (const std::exception& e) {
    distFailure(e, what, rank);
  }
}

template <typename F>
void runWork(F&& start, const char* what, int rank) {
  waitWork(startWork(std::forward<F>(start), what, rank), what, rank);
}

// A c10d work item in flight; waits once (also when dropped unwaited, so no collective outlives its buffers).
class WorkPending : public Pending {
 public:
  WorkPending(c10::intrusive_ptr<c10d::Work> w, const char* what, int rank) : work_(std::move(w)), what_(what), rank_(rank) {}
  ~WorkPending() override {
    try {
      wait();
    } catch (...) {  // the failure was (or will be) reported by the group's next call
    }
  }
  void wait() override {
    if (!work_) return;
    auto w = std::move(work_);
    work_.reset();
    waitWork(w, what_, rank_);
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  const char* what_;
  int rank_;
};

c10::intrusive_ptr<c10d::Store> makeStore(const CommOptions& o) {
  auto timeout = std::chrono::milliseconds(o.timeoutMs);
  c10::intrusive_ptr<c10d::Store> store;
  if (!o.storePath.empty()) {
    store = c10::make_intrusive<c10d::FileStore>(o.storePath, o.worldSize);
  } else {
    TRN_CHECK(!o.host.empty() && o.port > 0 && o.port < 65536, "TRN_ERR_ARG",
              "give either storePath or host and port for the rendezvous");
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(o.port);
    so.isServer = o.rank == 0;
    so.numWorkers = static_cast<std::size_t>(o.worldSize);
    so.waitWorkers = true;
    so.timeout = timeout;
    store = c10::make_intrusive<c10d::TCPStore>(o.host, so);
  }
  store->setTimeout(timeout);
  if (!o.storePrefix.empty()) store = c10::make_intrusive<c10d::PrefixStore>(o.storePrefix, store);
  return store;
}

}  // namespace

#endif

#ifdef USE_C10D_GLOO

namespace {

class GlooComm : public Comm {
 public:
  GlooComm(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg, int rank, int world)
      : pg_(std::move(pg)), rank_(rank), world_(world) {}
  int rank() const override { return rank_; }
  int worldSize() const override { return world_; }
  std::string backend() const override { return "gloo"; }
  at::Device device() const override { return at::Device(at::kCPU); }

  // Off-CPU tensors are staged through the CPU; a CPU tensor must be contiguous already.
  void allreduceSum(at::Tensor& t) override {
    staged(t, at::Device(at::kCPU), false, [&](at::Tensor& x) {
      TRN_CHECK(x.is_contiguous(), "TRN_ERR_DIST", "allreduce needs a contiguous tensor");
      std::vector<at::Tensor> ts{x};
      runWork([&] { return pg_->allreduce(ts); }, "allreduce", rank_);
    });
  }

  std::vector<at::Tensor> allgather(const at::Tensor& t) override {
    std::vector<at::Tensor> in{t.to(at::kCPU).contiguous()};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < world_; r++) out[0].push_back(at::empty_like(in[0]));
    runWork([&] { return pg_->allgather(out, in); }, "allgather", rank_);
    if (!t.is_cpu())
      for (auto& x : out[0]) x = x.to(t.device());
    return out[0];
  }

  void broadcast(at::Tensor& t, int root) override {
    staged(t, at::Device(at::kCPU), false, [&](at::Tensor& x) {
      TRN_CHECK(x.is_contiguous(), "TRN_ERR_DIST", "broadcast needs a contiguous tensor");
      // Gloo (1.13) has no bf16/fp16 (nor int16) collectives: a broadcast only copies, so move the raw bytes.
      const bool half = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
      std::vector<at::Tensor> ts{half ? x.reshape({-1}).view(at::kByte) : x};
      c10d::BroadcastOptions bo;
      bo.rootRank = root;
      runWork([&] { return pg_->broadcast(ts, bo); }, "broadcast", rank_);
    });
  }

  void barrier() override {
    // A one-element allreduce is a barrier every Gloo version supports.
    auto t = at::zeros({1}, at::kFloat);
    allreduceSum(t);
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  int rank_;
  int world_;
};

std::shared_ptr<Comm> createGloo(const CommOptions& o) {
  auto timeout = std::chrono::milliseconds(o.timeoutMs);
  auto store = makeStore(o);
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  if (!o.glooHostname.empty()) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.glooHostname));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.worldSize, opts);
  return std::make_shared<GlooComm>(pg, o.rank, o.worldSize);
}

}  // namespace

bool haveGloo() { return true; }

#else

bool haveGloo() { return false; }

#endif

#ifdef USE_C10D_NCCL

namespace {

class NcclComm : public Comm {
 public:
  NcclComm(c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg, int rank, int world, at::Device dev)
      : pg_(std::move(pg)), rank_(rank), world_(world), dev_(dev) {}
  int rank() const override { return rank_; }
  int worldSize() const override { return world_; }
  std::string backend() const override { return "nccl"; }
  at::Device device() const override { return dev_; }

  // Tensors elsewhere or not contiguous are staged through this rank's GPU.
  void allreduceSum(at::Tensor& t) override {
    staged(t, dev_, true, [&](at::Tensor& x) {
      std::vector<at::Tensor> ts{x};
      runWork([&] { return pg_->allreduce(ts); }, "allreduce", rank_);
    });
  }

  std::vector<at::Tensor> allgather(const at::Tensor& t) override {
    auto in = t.to(dev_).contiguous();
    auto flat = at::empty({world_ * in.numel()}, in.options());
    allgatherInto(flat, in.reshape({-1}));
    std::vector<at::Tensor> out;
    for (int r = 0; r < world_; r++) out.push_back(flat.narrow(0, r * in.numel(), in.numel()).view(t.sizes()).to(t.device()));
    return out;
  }

  void allgatherInto(at::Tensor& out, const at::Tensor& in) override {
    TRN_CHECK(out.device() == dev_ && in.device() == dev_ && out.is_contiguous() && in.is_contiguous(), "TRN_ERR_DIST",
              "allgatherInto needs contiguous tensors on the group's device");
    auto i = in;
    runWork([&] { return pg_->_allgather_base(out, i); }, "allgather", rank_);
  }

  void reduceScatterSum(at::Tensor& out, at::Tensor& in) override {
    TRN_CHECK(out.device() == dev_ && in.device() == dev_ && out.is_contiguous() && in.is_contiguous(), "TRN_ERR_DIST",
              "reduceScatterSum needs contiguous tensors on the group's device");
    runWork([&] { return pg_->_reduce_scatter_base(out, in); }, "reduce_scatter", rank_);
  }

  std::unique_ptr<Pending> allgatherIntoAsync(at::Tensor& out, const at::Tensor& in) override {
    TRN_CHECK(out.device() == dev_ && in.device() == dev_ && out.is_contiguous() && in.is_contiguous(), "TRN_ERR_DIST",
              "allgatherInto needs contiguous tensors on the group's device");
    auto i = in;
    return std::make_unique<WorkPending>(startWork([&] { return pg_->_allgather_base(out, i); }, "allgather", rank_),
                                         "allgather", rank_);
  }

  std::unique_ptr<Pending> reduceScatterSumAsync(at::Tensor& out, at::Tensor& in) override {
    TRN_CHECK(out.device() == dev_ && in.device() == dev_ && out.is_contiguous() && in.is_contiguous(), "TRN_ERR_DIST",
              "reduceScatterSum needs contiguous tensors on the group's device");
    return std::make_unique<WorkPending>(
        startWork([&] { return pg_->_reduce_scatter_base(out, in); }, "reduce_scatter", rank_), "reduce_scatter", rank_);
  }

  void broadcast(at::Tensor& t, int root) override {
    staged(t, dev_, true, [&](at::Tensor& x) {
      std::vector<at::Tensor> ts{x};
      c10d::BroadcastOptions bo;
      bo.rootRank = root;
      runWork([&] { return pg_->broadcast(ts, bo); }, "broadcast", rank_);
    });
  }

  void barrier() override {
    auto t = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(dev_));
    allreduceSum(t);
    (void)t.item<float>();  // host waits for the device
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg_;
  int rank_;
  int world_;
  at::Device dev_;
};

std::shared_ptr<Comm> createNccl(const CommOptions& o) {
  const int n = cudaDeviceCount();
  TRN_CHECK(n > 0, "TRN_ERR_DEVICE", "an NCCL group needs a CUDA device; this process sees none");
  at::Device dev = o.device.empty() ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(o.rank % n))
                                    : deviceFromName(o.device);
  TRN_CHECK(dev.is_cuda(), "TRN_ERR_ARG", "an NCCL group's device must be cuda or cuda:N");
  auto store = makeStore(o);
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = std::chrono::milliseconds(o.timeoutMs);
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.worldSize, opts);
  auto comm = std::make_shared<NcclComm>(pg, o.rank, o.worldSize, dev);
  if (o.eagerConnect) comm->barrier();  // creates the communicator now, so a bad rendezvous fails here, not mid-step
  return comm;
}

}  // namespace

bool haveNccl() { return true; }

#else

bool haveNccl() { return false; }

#endif

std::shared_ptr<Comm> createComm(const CommOptions& o) {
  TRN_CHECK(o.worldSize >= 1, "TRN_ERR_ARG", "worldSize must be >= 1");
  TRN_CHECK(o.rank >= 0 && o.rank < o.worldSize, "TRN_ERR_ARG",
            "rank " + std::to_string(o.rank) + " is outside [0, " + std::to_string(o.worldSize) + ")");
  TRN_CHECK(o.backend == "gloo" || o.backend == "nccl", "TRN_ERR_ARG",
            "backend must be gloo or nccl, got '" + o.backend + "'");
  try {
    if (o.backend == "nccl") {
#ifdef USE_C10D_NCCL
      return createNccl(o);
#else
      TRN_FAIL("TRN_ERR_DEVICE", "this addon was built without c10d NCCL (needs a CUDA libtorch and NCCL headers at build time)");
#endif
    }
#ifdef USE_C10D_GLOO
    return createGloo(o);
#else
    TRN_FAIL("TRN_ERR_DIST", "this addon was built without c10d Gloo (no gloo headers found at build time)");
#endif
  } catch (const TrnError&) {
    throw;
  } catch (const std::exception& e) {
    TRN_FAIL("TRN_ERR_DIST", std::string("rendezvous failed on rank ") + std::to_string(o.rank) + ": " + e.what());
  }
}

}  // namespace trn
