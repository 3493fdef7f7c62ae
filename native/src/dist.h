// Process groups for sharded data parallel over c10d: Gloo (CPU tensors; what CI runs) and NCCL (CUDA
// tensors; built when the libtorch has CUDA and NCCL headers are found, see native/build.ts).
// Collectives the trainer needs: allreduce, allgather, broadcast, and the flat-buffer pair
// allgatherInto / reduceScatterSum that ZeRO-3 sharding is made of. Gloo on Debian's libtorch 1.13 has
// no reduce_scatter: there reduceScatterSum is an allreduce whose caller keeps its own shard (correct,
// not fast); NCCL runs the real ones.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace trn {

struct CommOptions {
  int rank = 0;
  int worldSize = 1;
  std::string storePath;  // FileStore rendezvous (a fresh file per group), or
  std::string host;       // TCPStore host:port (rank 0 serves)
  int port = 0;
  std::string glooHostname;  // local address for Gloo's transport; empty = libtorch's default device
  int64_t timeoutMs = 300000;
  std::string backend = "gloo";  // "gloo" | "nccl"
  std::string device;            // NCCL: this rank's CUDA device ("cuda:N"); default cuda:(rank % count)
  std::string storePrefix;       // keys of this group in the store live under this prefix (c10d PrefixStore)
  // NCCL: a one-element all-reduce at creation (so a bad rendezvous fails there, not mid-step); off for a
  // group whose peers run no such collective (SGLang's weight-update group, built by torch.distributed).
  bool eagerConnect = true;
};

/** A collective in flight (see Comm's *Async calls): wait() before reading its output or freeing its input. */
class Pending {
 public:
  virtual ~Pending() = default;
  /** NCCL: the caller's current CUDA stream waits for the collective (the host does not); Gloo: done already. */
  virtual void wait() = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int worldSize() const = 0;
  virtual std::string backend() const = 0;
  /** Where this group's collectives run (CPU for Gloo, the rank's GPU for NCCL). */
  virtual at::Device device() const = 0;
  /** In-place sum over ranks (blocking). Any device: tensors elsewhere are staged through device(). */
  virtual void allreduceSum(at::Tensor& t) = 0;
  /** Every rank's `t` (same shape on every rank), in rank order (blocking). */
  virtual std::vector<at::Tensor> allgather(const at::Tensor& t) = 0;
  /** `out` [W·n] ← the ranks' `in` [n] back to back, in rank order (contiguous, on device()). */
  virtual void allgatherInto(at::Tensor& out, const at::Tensor& in);
  /** `out` [n] ← this rank's n-slice of the sum over ranks of `in` [W·n] (`in` may be overwritten). */
  virtual void reduceScatterSum(at::Tensor& out, at::Tensor& in);
  /**
   * The same two, left in flight so compute can overlap them (NCCL runs them on its own stream, ordered
   * after the work already queued on the caller's stream); the default runs them to completion here.
   * Collectives of one group start in the same order on every rank.
   */
  virtual std::unique_ptr<Pending> allgatherIntoAsync(at::Tensor& out, const at::Tensor& in);
  virtual std::unique_ptr<Pending> reduceScatterSumAsync(at::Tensor& out, at::Tensor& in);
  /** Root's `t` to every rank, in place. */
  virtual void broadcast(at::Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  /** One collective sequence at a time per group: set while a call that uses the group runs. */
  std::atomic<bool> busy{false};
};

/** Rendezvous and create a group of `opts.backend` (blocks until every rank has joined or the timeout passes). */
std::shared_ptr<Comm> createComm(const CommOptions& opts);

/** True when compiled with c10d Gloo (USE_C10D_GLOO). */
bool haveGloo();
/** True when compiled with c10d NCCL (USE_C10D_NCCL). */
bool haveNccl();

}  // namespace trn
