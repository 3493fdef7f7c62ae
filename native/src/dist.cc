#include "dist.h"

#include "common.h"

#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace trn {

#ifdef USE_C10D_GLOO

namespace {

class GlooComm : public Comm {
 public:
  GlooComm(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg, int rank, int world)
      : pg_(std::move(pg)), rank_(rank), world_(world) {}
  int rank() const override { return rank_; }
  int worldSize() const override { return world_; }

  void allreduceSum(at::Tensor& t) override {
    TRN_CHECK(t.is_contiguous(), "TRN_ERR_DIST", "allreduce needs a contiguous tensor");
    std::vector<at::Tensor> ts{t};
    run([&] { return pg_->allreduce(ts); }, "allreduce");
  }

  std::vector<at::Tensor> allgather(const at::Tensor& t) override {
    std::vector<at::Tensor> in{t.contiguous()};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < world_; r++) out[0].push_back(at::empty_like(in[0]));
    run([&] { return pg_->allgather(out, in); }, "allgather");
    return out[0];
  }

  void barrier() override {
    // A one-element allreduce is a barrier every Gloo version supports.
    auto t = at::zeros({1}, at::kFloat);
    allreduceSum(t);
  }

 private:
  template <typename F>
  void run(F&& start, const char* what) {
    try {
      auto work = start();
      work->wait();
    } catch (const TrnError&) {
      throw;
    } catch (const std::exception& e) {
      TRN_FAIL("TRN_ERR_DIST", std::string(what) + " failed on rank " + std::to_string(rank_) + ": " + e.what());
    }
  }

  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  int rank_;
  int world_;
};

}  // namespace

std::shared_ptr<Comm> createGlooComm(const CommOptions& o) {
  TRN_CHECK(o.worldSize >= 1, "TRN_ERR_ARG", "worldSize must be >= 1");
  TRN_CHECK(o.rank >= 0 && o.rank < o.worldSize, "TRN_ERR_ARG",
            "rank " + std::to_string(o.rank) + " is outside [0, " + std::to_string(o.worldSize) + ")");
  auto timeout = std::chrono::milliseconds(o.timeoutMs);
  try {
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
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    if (!o.glooHostname.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.glooHostname));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.worldSize, opts);
    return std::make_shared<GlooComm>(pg, o.rank, o.worldSize);
  } catch (const TrnError&) {
    throw;
  } catch (const std::exception& e) {
    TRN_FAIL("TRN_ERR_DIST", std::string("rendezvous failed on rank ") + std::to_string(o.rank) + ": " + e.what());
  }
}

bool haveGloo() { return true; }

#else

std::shared_ptr<Comm> createGlooComm(const CommOptions&) {
  TRN_FAIL("TRN_ERR_DIST", "this addon was built without c10d Gloo (no gloo headers found at build time)");
}

bool haveGloo() { return false; }

#endif

}  // namespace trn
