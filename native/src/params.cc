#include "params.h"

#include <ATen/core/grad_mode.h>

namespace trn {

std::vector<ParamSpec> qwen3Specs(const ModelConfig& c) {
  std::vector<ParamSpec> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay, bool isNorm = false) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    out.push_back({std::move(name), std::move(shape), n, decay, isNorm});
  };
  const int64_t H = c.hiddenSize, hd = c.headDim, q = c.numHeads * hd, kv = c.numKvHeads * hd;
  add("model.embed_tokens.weight", {c.vocabSize, H}, true);
  for (int64_t l = 0; l < c.numLayers; l++) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, false, true);
    add(p + "self_attn.q_proj.weight", {q, H}, true);
    if (c.attentionBias) add(p + "self_attn.q_proj.bias", {q}, false);
    add(p + "self_attn.k_proj.weight", {kv, H}, true);
    if (c.attentionBias) add(p + "self_attn.k_proj.bias", {kv}, false);
    add(p + "self_attn.v_proj.weight", {kv, H}, true);
    if (c.attentionBias) add(p + "self_attn.v_proj.bias", {kv}, false);
    add(p + "self_attn.o_proj.weight", {H, q}, true);
    if (c.attentionBias) add(p + "self_attn.o_proj.bias", {H}, false);
    add(p + "self_attn.q_norm.weight", {hd}, false, true);
    add(p + "self_attn.k_norm.weight", {hd}, false, true);
    add(p + "post_attention_layernorm.weight", {H}, false, true);
    add(p + "mlp.gate_proj.weight", {c.intermediateSize, H}, true);
    add(p + "mlp.up_proj.weight", {c.intermediateSize, H}, true);
    add(p + "mlp.down_proj.weight", {H, c.intermediateSize}, true);
  }
  add("model.norm.weight", {H}, false, true);
  if (!c.tieWordEmbeddings) add("lm_head.weight", {c.vocabSize, H}, true);
  return out;
}

ParamStore::ParamStore(std::vector<ParamSpec> specs, at::ScalarType dtype, std::shared_ptr<Comm> comm)
    : specs_(std::move(specs)), dtype_(dtype), comm_(std::move(comm)) {
  const int64_t W = worldSize();
  for (auto& s : specs_) {
    int64_t sz = (s.numel + W - 1) / W;
    shardOff_.push_back(shardTotal_);
    fullOff_.push_back(fullTotal_);
    shardSize_.push_back(sz);
    shardTotal_ += sz;
    fullTotal_ += sz * W;
  }
  auto opt = at::TensorOptions().dtype(dtype_);
  master_ = at::zeros({shardTotal_}, opt);
  grad_ = at::zeros({shardTotal_}, opt);
  m_ = at::zeros({shardTotal_}, opt);
  v_ = at::zeros({shardTotal_}, opt);
  decayMask_ = at::zeros({shardTotal_}, opt);
  const int64_t r = rank();
  for (size_t i = 0; i < specs_.size(); i++) {
    if (!specs_[i].decay) continue;
    // Only real (unpadded) elements of this rank's shard decay; padding stays exactly zero.
    int64_t lo = r * shardSize_[i], hi = std::min(lo + shardSize_[i], specs_[i].numel);
    if (hi > lo) decayMask_.narrow(0, shardOff_[i], hi - lo).fill_(1);
  }
}

int ParamStore::indexOf(const std::string& name) const {
  for (size_t i = 0; i < specs_.size(); i++)
    if (specs_[i].name == name) return static_cast<int>(i);
  return -1;
}

int64_t ParamStore::numParams() const {
  int64_t n = 0;
  for (auto& s : specs_) n += s.numel;
  return n;
}

void ParamStore::setFull(int i, const at::Tensor& value) {
  at::NoGradGuard ng;
  auto& s = specs_[i];
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
  at::Tensor flat = master_;  // W = 1: the full tensors are views of the master copy
  if (W > 1) {
    auto shards = comm_->allgather(master_);
    flat = at::empty({fullTotal_}, master_.options());
    for (size_t i = 0; i < specs_.size(); i++) {
      for (int r = 0; r < W; r++)
        flat.narrow(0, fullOff_[i] + r * shardSize_[i], shardSize_[i])
            .copy_(shards[r].narrow(0, shardOff_[i], shardSize_[i]));
    }
  }
  if (requiresGrad) {
    // Gradients accumulate in place into one persistent flat buffer (autograd adds into a defined .grad),
    // so a step allocates no parameter-sized gradient tensors and the reduction needs no packing copy.
    if (!gradFull_.defined()) gradFull_ = at::zeros({fullTotal_}, master_.options());
    else gradFull_.zero_();
  }
  for (size_t i = 0; i < specs_.size(); i++) {
    auto t = flat.narrow(0, fullOff_[i], specs_[i].numel).view(specs_[i].shape).detach();
    t.requires_grad_(requiresGrad);
    if (requiresGrad) t.mutable_grad() = gradFull_.narrow(0, fullOff_[i], specs_[i].numel).view(specs_[i].shape);
    full_.push_back(t);
  }
  gathered_ = true;
  return full_;
}

void ParamStore::release() {
  full_.clear();
  gathered_ = false;
}

at::Tensor ParamStore::reduceGrads() {
  at::NoGradGuard ng;
  TRN_CHECK(gathered_ && gradFull_.defined(), "TRN_ERR_TORCH", "reduceGrads without materialized parameters");
  for (size_t i = 0; i < specs_.size(); i++) {
    // Normally .grad is still the view into gradFull_ (accumulated in place); if autograd replaced it
    // (out-of-place accumulation), copy it back so nothing is lost.
    auto g = full_[i].grad();
    auto view = gradFull_.narrow(0, fullOff_[i], specs_[i].numel);
    if (g.defined() && g.data_ptr() != view.data_ptr()) view.copy_(g.to_dense().reshape({-1}));
  }
  if (worldSize() > 1) comm_->allreduceSum(gradFull_);
  return gradFull_;
}

at::Tensor ParamStore::fullGradOf(const at::Tensor& reduced, int i) const {
  return reduced.narrow(0, fullOff_[i], specs_[i].numel).view(specs_[i].shape);
}

void ParamStore::keepGradShard(const at::Tensor& reduced) {
  at::NoGradGuard ng;
  const int64_t r = rank();
  for (size_t i = 0; i < specs_.size(); i++)
    grad_.narrow(0, shardOff_[i], shardSize_[i]).copy_(reduced.narrow(0, fullOff_[i] + r * shardSize_[i], shardSize_[i]));
}

}  // namespace trn
