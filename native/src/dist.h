// Process groups for sharded data parallel: c10d Gloo on CPU (NCCL is the GPU issue's job).
// Only the collectives that Debian's libtorch 1.13 Gloo supports are used: list-form allgather and
// allreduce (a reduce-scatter is an allreduce whose caller keeps its own shard — correct, not fast).
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
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int worldSize() const = 0;
  /** In-place sum over ranks (blocking). */
  virtual void allreduceSum(at::Tensor& t) = 0;
  /** Every rank's `t` (same shape on every rank), in rank order (blocking). */
  virtual std::vector<at::Tensor> allgather(const at::Tensor& t) = 0;
  virtual void barrier() = 0;

  /** One collective sequence at a time per group: set while a call that uses the group runs. */
  std::atomic<bool> busy{false};
};

/** Rendezvous and create a Gloo group (blocks until every rank has joined or the timeout passes). */
std::shared_ptr<Comm> createGlooComm(const CommOptions& opts);

/** True when compiled with c10d Gloo (USE_C10D_GLOO). */
bool haveGloo();

}  // namespace trn
