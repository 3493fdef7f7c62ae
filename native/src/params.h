// Parameters of a model: their HF names and shapes, the master copy (sharded across ranks when a
// process group is given, ZeRO-3/FSDP style), gradients and AdamW state, all as flat buffers.
//
// Layout: each parameter p of numel n_p is padded to a multiple of the world size W and split into W
// equal shards of s_p = ceil(n_p / W) elements; rank r owns elements [r·s_p, (r+1)·s_p) of every
// parameter, stored back to back in `master` (so every rank's flat shard has the same length).
// `materialize()` all-gathers the shards into full tensors before use; `reduceGrads()` all-reduces the
// full gradients and keeps this rank's shard (Gloo has no reduce_scatter in libtorch 1.13).
// With W = 1 the full tensors are views of `master` (no copy, no collective).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "dist.h"

namespace trn {

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  bool decay = false;  // weight decay applies to matrices only (not norms, biases)
  bool isNorm = false;
};

/** HF Qwen3 tensor names and shapes, in a fixed order (also the seeded init order). */
std::vector<ParamSpec> qwen3Specs(const ModelConfig& c);

class ParamStore {
 public:
  ParamStore(std::vector<ParamSpec> specs, at::ScalarType dtype, std::shared_ptr<Comm> comm);

  const std::vector<ParamSpec>& specs() const { return specs_; }
  int indexOf(const std::string& name) const;  // -1 when absent
  int rank() const { return comm_ ? comm_->rank() : 0; }
  int worldSize() const { return comm_ ? comm_->worldSize() : 1; }
  Comm* comm() const { return comm_.get(); }
  at::ScalarType dtype() const { return dtype_; }
  int64_t numParams() const;

  /** Keep this rank's shard of a full parameter value (same on every rank). */
  void setFull(int i, const at::Tensor& value);

  /** Full tensors for compute (collective when W > 1). Leaves with requires_grad as asked. */
  const std::vector<at::Tensor>& materialize(bool requiresGrad);
  /** Drop gathered copies (W > 1); W = 1 keeps its views. */
  void release();

  /** The full-layout gradient buffer summed over ranks (collective when W > 1); valid until the next
   * materialize(true). */
  at::Tensor reduceGrads();
  /** Full gradient of parameter i from a buffer returned by reduceGrads(). */
  at::Tensor fullGradOf(const at::Tensor& reduced, int i) const;
  /** This rank's shard of the reduced gradient buffer, into grad(). */
  void keepGradShard(const at::Tensor& reduced);

  at::Tensor& master() { return master_; }
  at::Tensor& grad() { return grad_; }
  at::Tensor& expAvg() { return m_; }
  at::Tensor& expAvgSq() { return v_; }
  const at::Tensor& decayMask() const { return decayMask_; }
  int64_t step = 0;

 private:
  std::vector<ParamSpec> specs_;
  at::ScalarType dtype_;
  std::shared_ptr<Comm> comm_;
  std::vector<int64_t> shardSize_, shardOff_, fullOff_;
  int64_t shardTotal_ = 0, fullTotal_ = 0;
  at::Tensor master_, grad_, m_, v_, decayMask_;
  at::Tensor gradFull_;  // full-layout gradients of the materialized parameters (persistent)
  std::vector<at::Tensor> full_;
  bool gathered_ = false;
};

}  // namespace trn
