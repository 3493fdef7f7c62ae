// Parameters of a model: their HF names and shapes, the master copy (sharded across ranks when a
// process group is given, ZeRO-3/FSDP style), gradients and AdamW state, all as flat buffers.
//
// Layout: each parameter p of numel n_p is padded to a multiple of the world size W and split into W
// equal shards of s_p = ceil(n_p / W) elements; rank r owns elements [r·s_p, (r+1)·s_p) of every
// parameter, stored back to back in `master` (so every rank's flat shard has the same length).
// `materialize()` all-gathers the shards (in the compute dtype) into full tensors before use;
// `reduceScatterGrads()` sums the full gradients over ranks and keeps this rank's shard.
// With W = 1 and one dtype the full tensors are views of `master` (no copy, no collective).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config.h"
#include "dist.h"

namespace trn {

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;  // this tensor-parallel rank's part (the full HF shape when tp = 1)
  int64_t numel = 0;
  bool decay = false;  // weight decay applies to matrices only (not norms, biases)
  bool isNorm = false;
  // Tensor parallelism: the dim split over the tp ranks (0: rows — q/k/v/gate/up and their biases,
  // column-parallel; 1: columns — o/down, row-parallel; -1: replicated), the full HF shape, and whether
  // each tp rank's gradient is only its heads' share (q/k norms) and must be summed over tp ranks.
  int splitDim = -1;
  std::vector<int64_t> fullShape;
  bool tpPartialGrad = false;
};

/** HF Qwen3 tensor names and shapes (local to tp rank of `tpSize`), in a fixed order (also the seeded init order). */
std::vector<ParamSpec> qwen3Specs(const ModelConfig& c, int tpSize = 1);

class ParamStore {
 public:
  /**
   * `dtype`: master weights, gradients' accumulator and AdamW state (float32 or float64); `compute`: the
   * dtype of the materialized parameters the forward/backward runs in (the same, or bfloat16/float16 with
   * float32 master weights); `device`: where every buffer lives.
   */
  ParamStore(std::vector<ParamSpec> specs, at::ScalarType dtype, std::shared_ptr<Comm> comm,
             at::Device device = at::Device(at::kCPU), at::ScalarType compute = at::ScalarType::Undefined,
             int tpRank = 0, int tpSize = 1);

  const std::vector<ParamSpec>& specs() const { return specs_; }
  int indexOf(const std::string& name) const;  // -1 when absent
  int rank() const { return comm_ ? comm_->rank() : 0; }
  int worldSize() const { return comm_ ? comm_->worldSize() : 1; }
  Comm* comm() const { return comm_.get(); }
  at::ScalarType dtype() const { return dtype_; }
  at::ScalarType computeDtype() const { return compute_; }
  at::Device device() const { return device_; }
  int64_t numParams() const;

  /** Keep this rank's shard of a full HF parameter value (same on every rank; any device/dtype): its
   * tensor-parallel slice, then its data-parallel shard of that. */
  void setFull(int i, const at::Tensor& value);
  int tpRank() const { return tpRank_; }
  int tpSize() const { return tpSize_; }

  /**
   * Full tensors in the compute dtype on the device (collective when W > 1). Leaves with requires_grad as
   * asked. (Master-dtype values, one parameter at a time: gatherMaster.)
   */
  const std::vector<at::Tensor>& materialize(bool requiresGrad);
  /** Drop gathered copies (W > 1); W = 1 keeps its views. */
  void release();
  /**
   * Parameter i's tensor (this tp rank's part) in the master dtype on the device: gathered from every
   * rank's shard when W > 1 (collective: every rank calls it for the same i, in the same order), a copy
   * otherwise. For reading the weights one at a time (save, publish, parameters) without a whole-model copy.
   */
  at::Tensor gatherMaster(int i);

  /**
   * Moves what backward left in the materialized parameters' .grad (compute dtype) into the master-dtype
   * accumulator and resets them: called after every micro-batch, so gradients accumulate in float32
   * however they were computed. In half precision the leaves start each micro-batch without a .grad, so
   * autograd hands over its result tensors (no in-place adds) and the first micro-batch copies instead of
   * adding. A no-op when compute and master dtypes are the same (.grad is the accumulator then).
   */
  void flushGrads();

  /** Parameter i's gradient in the accumulator (master dtype, full local shape; contiguous). */
  at::Tensor accumulatedGrad(int i);
  /** (offset, length) of parameter i's real elements in this rank's flat shard (length 0: none here). */
  std::pair<int64_t, int64_t> shardRange(int i) const;

  /** The full-layout gradient accumulator summed over ranks (allreduce when W > 1); valid until the next
   * materialize(true). */
  at::Tensor reduceGrads();
  /** Full gradient of parameter i from a buffer returned by reduceGrads(). */
  at::Tensor fullGradOf(const at::Tensor& reduced, int i) const;
  /** This rank's shard of the gradients summed over ranks, into grad() (reduce-scatter; none when W = 1). */
  void reduceScatterGrads();

  // ---- streaming ZeRO-3 (W > 1, training) --------------------------------------------------------------
  // Parameters in units of consecutive specs (the model's: embedding, each decoder layer, final norm +
  // head). A unit is all-gathered just before use — prefetchUnit() starts it early, overlapping the
  // compute before it on NCCL — and dropped after; after its backward, its gradients are reduce-scattered
  // in float32 (master dtype) straight into this rank's grad() shard, again without waiting for the
  // collective. No full-model gathered copy or gradient buffer exists: what a rank holds beyond its shards
  // is the units in use (and one in flight each way).

  /** Unit u is specs [first[u], first[u+1]); first[0] = 0, ascending; the last unit ends at the last spec. */
  void setUnits(const std::vector<int>& first);
  int numUnits() const { return static_cast<int>(units_.size()); }
  /** Clears grad() for a step whose micro-batches stream (their reductions add into it). */
  void beginStreamedStep();
  /** Starts gathering unit u (no-op if already gathered or in flight). */
  void prefetchUnit(int u);
  /** Unit u's parameters as full leaves in the compute dtype that require grad (gathers if needed). */
  const std::vector<at::Tensor>& acquireUnit(int u);
  bool holdsUnit(int u) const { return held_.count(u) > 0; }
  /** The leaves of a held unit (TRN_ERR_TORCH when it is not held: no gather here). */
  const std::vector<at::Tensor>& heldUnit(int u) const;
  /** Drops unit u's gathered parameters (no gradient taken). */
  void releaseUnit(int u);
  /** Unit u's leaves' .grad (all of them set by backward; missing ones count as zero) → reduce-scatter into
   * grad(), started now and completed by a later call; drops the unit. */
  void reduceUnit(int u);
  /** Completes every reduction in flight (grad() holds the sums afterwards). */
  void finishReductions();
  /** Completes and drops gathers started but never used. */
  void cancelPrefetches();
  /** Most units gathered or in flight at once since beginStreamedStep(). */
  int peakUnits() const { return peakUnits_; }

  at::Tensor& master() { return master_; }
  at::Tensor& grad() { return grad_; }
  at::Tensor& expAvg() { return m_; }
  at::Tensor& expAvgSq() { return v_; }
  /** (offset, length) in this rank's flat shard of every element that weight decay applies to. */
  const std::vector<std::pair<int64_t, int64_t>>& decayRanges() const { return decayRanges_; }
  int64_t step = 0;

 private:
  void syncGradViews();
  at::Tensor toRankMajor(const at::Tensor& full) const;

  std::vector<ParamSpec> specs_;
  int tpRank_ = 0, tpSize_ = 1;
  at::ScalarType dtype_;
  at::ScalarType compute_;
  at::Device device_;
  std::shared_ptr<Comm> comm_;
  std::vector<int64_t> shardSize_, shardOff_, fullOff_;
  int64_t shardTotal_ = 0, fullTotal_ = 0;
  at::Tensor master_, grad_, m_, v_;
  std::vector<std::pair<int64_t, int64_t>> decayRanges_;
  at::Tensor gradC_;    // full layout, compute dtype: the materialized parameters' .grad (persistent)
  at::Tensor gradAcc_;  // full layout, master dtype: the accumulator (gradC_ itself when the dtypes match)
  at::Tensor flatC_;    // full layout, compute dtype: gathered/cast parameters (W > 1 or compute ≠ master)
  bool accFresh_ = false;  // compute ≠ master: gradAcc_ holds nothing of this step yet
  std::vector<at::Tensor> full_;
  bool gathered_ = false;

  struct Unit {
    int first = 0, end = 0;           // specs [first, end)
    int64_t shardOff = 0, shardLen = 0;  // in this rank's flat shard
  };
  struct Gather {  // in flight
    std::unique_ptr<Pending> work;
    at::Tensor input, rankMajor;  // this rank's [shardLen] and everyone's [W · shardLen], compute dtype
  };
  struct Reduction {
    std::unique_ptr<Pending> work;
    at::Tensor in, out;  // [W · shardLen] float32 rank-major sums; [shardLen] this rank's part
    int unit;
  };
  void completeOldestReduction();
  std::vector<Unit> units_;
  std::map<int, Gather> inFlight_;
  std::map<int, std::vector<at::Tensor>> held_;
  std::deque<Reduction> reductions_;
  int peakUnits_ = 0;
  void notePeak() { peakUnits_ = std::max(peakUnits_, static_cast<int>(held_.size() + inFlight_.size())); }
};

}  // namespace trn
