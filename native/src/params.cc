#include "params.h"

#include <ATen/core/grad_mode.h>

namespace trn {

std::vector<ParamSpec> qwen3Specs(const ModelConfig& c, int tp) {
  TRN_CHECK(tp >= 1, "TRN_ERR_ARG", "tensor-parallel size must be >= 1");
  TRN_CHECK(c.numHeads % tp == 0 && c.numKvHeads % tp == 0 && c.intermediateSize % tp == 0, "TRN_ERR_CONFIG",
            "tensor parallelism over " + std::to_string(tp) + " ranks needs num_attention_heads (" +
                std::to_string(c.numHeads) + "), num_key_value_heads (" + std::to_string(c.numKvHeads) +
                ") and intermediate_size (" + std::to_string(c.intermediateSize) + ") divisible by it");
  std::vector<ParamSpec> out;
  auto add = [&](std::string name, std::vector<int64_t> full, bool decay, bool isNorm = false, int split = -1,
                 bool partial = false) {
    auto shape = full;
    if (split >= 0) shape[split] /= tp;
    int64_t n = 1;
    for (auto d : shape) n *= d;
    ParamSpec sp{std::move(name), shape, n, decay, isNorm};
    sp.splitDim = tp > 1 ? split : -1;
    sp.fullShape = full;
    sp.tpPartialGrad = tp > 1 && partial;
    out.push_back(std::move(sp));
  };
  const int64_t H = c.hiddenSize, hd = c.headDim, q = c.numHeads * hd, kv = c.numKvHeads * hd;
  add("model.embed_tokens.weight", {c.vocabSize, H}, true);
  for (int64_t l = 0; l < c.numLayers; l++) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, false, true);
    add(p + "self_attn.q_proj.weight", {q, H}, true, false, 0);
    if (c.attentionBias) add(p + "self_attn.q_proj.bias", {q}, false, false, 0);
    add(p + "self_attn.k_proj.weight", {kv, H}, true, false, 0);
    if (c.attentionBias) add(p + "self_attn.k_proj.bias", {kv}, false, false, 0);
    add(p + "self_attn.v_proj.weight", {kv, H}, true, false, 0);
    if (c.attentionBias) add(p + "self_attn.v_proj.bias", {kv}, false, false, 0);
    add(p + "self_attn.o_proj.weight", {H, q}, true, false, 1);
    if (c.attentionBias) add(p + "self_attn.o_proj.bias", {H}, false);
    add(p + "self_attn.q_norm.weight", {hd}, false, true, -1, true);
    add(p + "self_attn.k_norm.weight", {hd}, false, true, -1, true);
    add(p + "post_attention_layernorm.weight", {H}, false, true);
    add(p + "mlp.gate_proj.weight", {c.intermediateSize, H}, true, false, 0);
    add(p + "mlp.up_proj.weight", {c.intermediateSize, H}, true, false, 0);
    add(p + "mlp.down_proj.weight", {H, c.intermediateSize}, true, false, 1);
  }
  add("model.norm.weight", {H}, false, true);
  if (!c.tieWordEmbeddings) add("lm_head.weight", {c.vocabSize, H}, true);
  return out;
}

ParamStore::ParamStore(std::vector<ParamSpec> specs, at::ScalarType dtype, std::shared_ptr<Comm> comm, at::Device device,
                       at::ScalarType compute, int tpRank, int tpSize)
    : specs_(std::move(specs)), tpRank_(tpRank), tpSize_(tpSize), dtype_(dtype), compute_(compute == at::ScalarType::Undefined ? dtype : compute),
      device_(device), comm_(std::move(comm)) {
  const int64_t W = worldSize();
  for (auto& s : specs_) {
    int64_t sz = (s.numel + W - 1) / W;
    shardOff_.push_back(shardTotal_);
    fullOff_.push_back(fullTotal_);
    shardSize_.push_back(sz);
    shardTotal_ += sz;
    fullTotal_ += sz * W;
  }
  auto opt = at::TensorOptions().dtype(dtype_).device(device_);
  master_ = at::zeros({shardTotal_}, opt);
  m_ = at::zeros({shardTotal_}, opt);
  v_ = at::zeros({shardTotal_}, opt);
  // W = 1: the shard is the full layout, so the accumulator itself is the shard's gradient (allocated with it).
  if (W > 1) grad_ = at::zeros({shardTotal_}, opt);
  const int64_t r = rank();
  for (size_t i = 0; i < specs_.size(); i++) {
    if (!specs_[i].decay) continue;
    // Only real (unpadded) elements of this rank's shard decay; padding stays exactly zero.
    int64_t lo = r * shardSize_[i], hi = std::min(lo + shardSize_[i], specs_[i].numel);
    if (hi > lo) decayRanges_.emplace_back(shardOff_[i], hi - lo);
  }
}

int ParamStore::indexOf(const std::string& name) const {
  for (size_t i = 0; i < specs_.size(); i++)
    if (specs_[i].name == name) return static_cast<int>(i);
  return -1;
}

int64_t ParamStore::numParams() const {
  int64_t n = 0;  // of the whole model, whatever this rank holds
  for (auto& s : specs_) {
    int64_t f = 1;
    for (auto d : s.fullShape) f *= d;
    n += f;
  }
  return n;
}

void ParamStore::setFull(int i, const at::Tensor& value0) {
  at::NoGradGuard ng;
  auto& s = specs_[i];
  at::Tensor value = value0;
  if (s.splitDim >= 0) {  // this tp rank's slice of the full HF tensor
    int64_t full = 1;
    for (auto d : s.fullShape) full *= d;
    TRN_CHECK(value.numel() == full, "TRN_ERR_ARG",
              s.name + ": expected " + std::to_string(full) + " elements " + shapeStr(s.fullShape) + ", got " +
                  std::to_string(value.numel()));
    const int64_t part = s.shape[s.splitDim];
    value = value.reshape(s.fullShape).narrow(s.splitDim, tpRank_ * part, part).contiguous();
  }
  TRN_CHECK(value.numel() == s.numel, "TRN_ERR_ARG",
            s.name + ": expected " + std::to_string(s.numel) + " elements " + shapeStr(s.shape) + ", got " +
                std::to_string(value.numel()));
  auto flat = value.reshape({-1}).to(dtype_);
  const int64_t lo = rank() * shardSize_[i];
  const int64_t hi = std::min(lo + shardSize_[i], s.numel);
  auto dst = master_.narrow(0, shardOff_[i], shardSize_[i]);
  dst.zero_();
  if (hi > lo) dst.narrow(0, 0, hi - lo).copy_(flat.narrow(0, lo, hi - lo));
}

const std::vector<at::Tensor>& ParamStore::materialize(bool requiresGrad) {
  at::NoGradGuard ng;
  const int W = worldSize();
  full_.clear();
  at::Tensor flat = master_;  // W = 1, one dtype: the full tensors are views of the master copy
  if (W > 1) {
    // Gather in the compute dtype (half the bytes for bf16), then reorder rank-major → per-parameter.
    auto shard = master_.to(compute_);
    auto rm = at::empty({W * shardTotal_}, shard.options());
    comm_->allgatherInto(rm, shard);
    auto out = at::empty({fullTotal_}, shard.options());
    for (size_t i = 0; i < specs_.size(); i++)
      for (int r = 0; r < W; r++)
        out.narrow(0, fullOff_[i] + r * shardSize_[i], shardSize_[i])
            .copy_(rm.narrow(0, r * shardTotal_ + shardOff_[i], shardSize_[i]));
    flat = flatC_ = out;
  } else if (compute_ != dtype_) {
    if (!flatC_.defined()) flatC_ = at::empty({fullTotal_}, master_.options().dtype(compute_));
    flatC_.copy_(master_);
    flat = flatC_;
  }
  const bool separate = compute_ != dtype_;
  if (requiresGrad) {
    if (!separate) {
      // Gradients accumulate in place into one persistent flat buffer (autograd adds into a defined
      // .grad), so a step allocates no parameter-sized gradient tensors and the reduction needs no copy.
      if (!gradC_.defined()) gradC_ = at::zeros({fullTotal_}, master_.options().dtype(compute_));
      else gradC_.zero_();
      gradAcc_ = gradC_;
    } else {
      // Padding between parameters (W > 1) is zeroed once and never written: no per-step clearing.
      if (!gradAcc_.defined()) gradAcc_ = at::zeros({fullTotal_}, master_.options());
      accFresh_ = true;
    }
    if (W == 1) grad_ = gradAcc_;
  }
  for (size_t i = 0; i < specs_.size(); i++) {
    auto t = flat.narrow(0, fullOff_[i], specs_[i].numel).view(specs_[i].shape).detach();
    t.requires_grad_(requiresGrad);
    if (requiresGrad && !separate)
      t.mutable_grad() = gradC_.narrow(0, fullOff_[i], specs_[i].numel).view(specs_[i].shape);
    full_.push_back(t);
  }
  gathered_ = true;
  return full_;
}

void ParamStore::release() {
  full_.clear();
  gathered_ = false;
  if (worldSize() > 1) flatC_ = at::Tensor();  // the gathered copy is the memory sharding saves
}

at::Tensor ParamStore::gatherMaster(int i) {
  at::NoGradGuard ng;
  const auto& sp = specs_[i];
  const int64_t s = shardSize_[i];
  auto shard = master_.narrow(0, shardOff_[i], s);
  if (worldSize() == 1) return shard.narrow(0, 0, sp.numel).view(sp.shape).clone();
  auto in = shard.contiguous();
  auto all = at::empty({worldSize() * s}, in.options());
  comm_->allgatherInto(all, in);  // rank r's shard is elements [r·s, (r+1)·s) of the parameter
  return all.narrow(0, 0, sp.numel).view(sp.shape);
}

void ParamStore::syncGradViews() {
  at::NoGradGuard ng;
  TRN_CHECK(gathered_ && gradAcc_.defined(), "TRN_ERR_TORCH", "gradients without materialized parameters");
  if (compute_ != dtype_) return;
  for (size_t i = 0; i < specs_.size(); i++) {
    // Normally .grad is still the view into gradC_ (accumulated in place); if autograd replaced it
    // (out-of-place accumulation), copy it back so nothing is lost.
    auto g = full_[i].grad();
    auto view = gradC_.narrow(0, fullOff_[i], specs_[i].numel);
    if (g.defined() && g.data_ptr() != view.data_ptr()) {
      view.copy_(g.to_dense().reshape({-1}));
      full_[i].mutable_grad() = view.view(specs_[i].shape);
    }
  }
}

void ParamStore::flushGrads() {
  syncGradViews();
  if (compute_ == dtype_) return;
  at::NoGradGuard ng;
  for (size_t i = 0; i < specs_.size(); i++) {
    auto& g = full_[i].mutable_grad();
    auto acc = gradAcc_.narrow(0, fullOff_[i], specs_[i].numel);
    if (g.defined()) {
      auto gd = g.is_sparse() ? g.to_dense() : g;
      if (accFresh_) acc.copy_(gd.reshape({-1}));
      else acc.add_(gd.reshape({-1}));
      g = at::Tensor();
    } else if (accFresh_) {
      acc.zero_();  // no gradient reached this parameter in this micro-batch
    }
  }
  accFresh_ = false;
}

at::Tensor ParamStore::reduceGrads() {
  at::NoGradGuard ng;
  flushGrads();
  if (worldSize() > 1) comm_->allreduceSum(gradAcc_);
  return gradAcc_;
}

at::Tensor ParamStore::accumulatedGrad(int i) {
  TRN_CHECK(gathered_ && gradAcc_.defined(), "TRN_ERR_TORCH", "gradients without materialized parameters");
  return gradAcc_.narrow(0, fullOff_[i], specs_[i].numel).view(specs_[i].shape);
}

std::pair<int64_t, int64_t> ParamStore::shardRange(int i) const {
  const int64_t lo = rank() * shardSize_[i], hi = std::min(lo + shardSize_[i], specs_[i].numel);
  return {shardOff_[i], std::max<int64_t>(0, hi - lo)};
}

at::Tensor ParamStore::fullGradOf(const at::Tensor& reduced, int i) const {
  return reduced.narrow(0, fullOff_[i], specs_[i].numel).view(specs_[i].shape);
}

at::Tensor ParamStore::toRankMajor(const at::Tensor& full) const {
  const int W = worldSize();
  auto rm = at::empty({W * shardTotal_}, full.options());
  for (size_t i = 0; i < specs_.size(); i++)
    for (int r = 0; r < W; r++)
      rm.narrow(0, r * shardTotal_ + shardOff_[i], shardSize_[i])
          .copy_(full.narrow(0, fullOff_[i] + r * shardSize_[i], shardSize_[i]));
  return rm;
}

void ParamStore::reduceScatterGrads() {
  at::NoGradGuard ng;
  flushGrads();
  if (worldSize() == 1) return;  // grad_ is the accumulator
  auto rm = toRankMajor(gradAcc_);
  comm_->reduceScatterSum(grad_, rm);
}

// ---- streaming ZeRO-3 ------------------------------------------------------------------------------------

void ParamStore::setUnits(const std::vector<int>& first) {
  const int n = static_cast<int>(specs_.size());
  TRN_CHECK(!first.empty() && first[0] == 0, "TRN_ERR_TORCH", "parameter units must start at spec 0");
  units_.clear();
  for (size_t u = 0; u < first.size(); u++) {
    Unit x;
    x.first = first[u];
    x.end = u + 1 < first.size() ? first[u + 1] : n;
    TRN_CHECK(x.end > x.first && x.end <= n, "TRN_ERR_TORCH", "parameter units must be ascending and non-empty");
    x.shardOff = shardOff_[x.first];
    x.shardLen = shardOff_[x.end - 1] + shardSize_[x.end - 1] - x.shardOff;
    units_.push_back(x);
  }
}

void ParamStore::beginStreamedStep() {
  TRN_CHECK(worldSize() > 1 && !units_.empty(), "TRN_ERR_TORCH", "a streamed step needs a sharded store with units");
  at::NoGradGuard ng;
  // anything a failed step left behind: its collectives completed, its gathered copies dropped
  cancelPrefetches();
  held_.clear();
  peakUnits_ = 0;
  for (auto& r : reductions_) r.work->wait();
  reductions_.clear();
  grad_.zero_();
}

void ParamStore::prefetchUnit(int u) {
  if (u < 0 || u >= numUnits() || held_.count(u) || inFlight_.count(u)) return;
  at::NoGradGuard ng;
  const auto& x = units_[u];
  Gather g;
  g.input = master_.narrow(0, x.shardOff, x.shardLen).to(compute_);  // a copy unless the dtypes match
  g.rankMajor = at::empty({worldSize() * x.shardLen}, g.input.options());
  g.work = comm_->allgatherIntoAsync(g.rankMajor, g.input);
  inFlight_.emplace(u, std::move(g));
  notePeak();
}

const std::vector<at::Tensor>& ParamStore::acquireUnit(int u) {
  TRN_CHECK(u >= 0 && u < numUnits(), "TRN_ERR_TORCH", "no parameter unit " + std::to_string(u));
  if (auto h = held_.find(u); h != held_.end()) return h->second;
  prefetchUnit(u);
  at::NoGradGuard ng;
  auto it = inFlight_.find(u);
  auto g = std::move(it->second);
  inFlight_.erase(it);
  g.work->wait();
  // rank-major [W, shardLen] → each parameter's full tensor: one strided copy per parameter
  const auto& x = units_[u];
  const int64_t W = worldSize();
  auto rm = g.rankMajor.view({W, x.shardLen});
  std::vector<at::Tensor> leaves;
  for (int i = x.first; i < x.end; i++) {
    const int64_t s = shardSize_[i], off = shardOff_[i] - x.shardOff, n = specs_[i].numel;
    auto full = at::empty({W * s}, g.rankMajor.options());
    full.view({W, s}).copy_(rm.narrow(1, off, s));
    auto t = full.narrow(0, 0, n).view(specs_[i].shape).detach();
    t.requires_grad_(true);
    leaves.push_back(t);
  }
  auto& out = held_.emplace(u, std::move(leaves)).first->second;
  notePeak();
  return out;
}

const std::vector<at::Tensor>& ParamStore::heldUnit(int u) const {
  auto h = held_.find(u);
  TRN_CHECK(h != held_.end(), "TRN_ERR_TORCH", "parameter unit " + std::to_string(u) + " is not held");
  return h->second;
}

void ParamStore::releaseUnit(int u) { held_.erase(u); }

void ParamStore::reduceUnit(int u) {
  heldUnit(u);
  auto h = held_.find(u);
  at::NoGradGuard ng;
  const auto& x = units_[u];
  const int64_t W = worldSize();
  // this unit's gradients, rank-major in the master dtype (padding zero), as reduce-scatter wants them
  Reduction r;
  r.unit = u;
  r.in = at::zeros({W * x.shardLen}, master_.options());
  auto rm = r.in.view({W, x.shardLen});
  for (int i = x.first; i < x.end; i++) {
    auto g = h->second[i - x.first].grad();
    if (!g.defined()) continue;  // unused in this micro-batch: zero
    if (g.is_sparse()) g = g.to_dense();
    const int64_t s = shardSize_[i], off = shardOff_[i] - x.shardOff, n = specs_[i].numel;
    auto flat = g.reshape({-1});
    if (n == W * s) {
      rm.narrow(1, off, s).copy_(flat.view({W, s}));
    } else {
      for (int64_t k = 0; k < W && k * s < n; k++) rm[k].narrow(0, off, std::min(s, n - k * s)).copy_(flat.narrow(0, k * s, std::min(s, n - k * s)));
    }
  }
  held_.erase(h);  // the parameters and their compute-dtype gradients
  r.out = at::empty({x.shardLen}, master_.options());
  r.work = comm_->reduceScatterSumAsync(r.out, r.in);
  reductions_.push_back(std::move(r));
  // two in flight at most: their float32 buffers are the memory this costs
  while (reductions_.size() > 2) completeOldestReduction();
}

void ParamStore::completeOldestReduction() {
  at::NoGradGuard ng;
  auto r = std::move(reductions_.front());
  reductions_.pop_front();
  r.work->wait();
  const auto& x = units_[r.unit];
  grad_.narrow(0, x.shardOff, x.shardLen).add_(r.out);
}

void ParamStore::cancelPrefetches() {
  for (auto& [u, g] : inFlight_) g.work->wait();
  inFlight_.clear();
}

void ParamStore::finishReductions() {
  while (!reductions_.empty()) completeOldestReduction();
}

}  // namespace trn
