#include "model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstdlib>

#include "fused.h"

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
#define TRN_HAVE_SDPA 1
#if TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 4
#define TRN_HAVE_FLASH_VARLEN 1
#endif
#endif

namespace trn {

namespace {
// TRN_ATTENTION=reference|sdpa|flash forces an attention implementation (diagnostics); empty = automatic.
std::string attentionOverride() {
  const char* e = std::getenv("TRN_ATTENTION");
  return e ? std::string(e) : std::string();
}
}  // namespace

// ---- packed batches ---------------------------------------------------------------------------------

PackedBatch makePacked(std::vector<int64_t> ids, std::vector<int64_t> cu, int64_t vocab) {
  const int64_t T = static_cast<int64_t>(ids.size());
  TRN_CHECK(T > 0, "TRN_ERR_ARG", "packed batch has no tokens");
  TRN_CHECK(cu.size() >= 2, "TRN_ERR_ARG", "cuSeqlens needs at least 2 entries [0, T]");
  TRN_CHECK(cu.front() == 0, "TRN_ERR_ARG", "cuSeqlens must start at 0");
  TRN_CHECK(cu.back() == T, "TRN_ERR_ARG",
            "cuSeqlens must end at the token count " + std::to_string(T) + ", got " + std::to_string(cu.back()));
  for (size_t i = 1; i < cu.size(); i++)
    TRN_CHECK(cu[i] > cu[i - 1], "TRN_ERR_ARG",
              "cuSeqlens must be strictly increasing (empty sequence at index " + std::to_string(i - 1) + ")");
  for (int64_t i = 0; i < T; i++)
    TRN_CHECK(ids[i] >= 0 && ids[i] < vocab, "TRN_ERR_ARG",
              "token id " + std::to_string(ids[i]) + " at " + std::to_string(i) + " outside [0, " +
                  std::to_string(vocab) + ")");
  PackedBatch b;
  b.ids = at::tensor(ids, at::kLong);
  b.cu = std::move(cu);
  return b;
}

at::Tensor PackedBatch::positions() const {
  std::vector<int64_t> p(tokens());
  for (int64_t s = 0; s < numSeqs(); s++)
    for (int64_t i = cu[s]; i < cu[s + 1]; i++) p[i] = i - cu[s];
  return at::tensor(p, at::kLong);
}

at::Tensor PackedBatch::seqIndex() const {
  std::vector<int64_t> p(tokens());
  for (int64_t s = 0; s < numSeqs(); s++)
    for (int64_t i = cu[s]; i < cu[s + 1]; i++) p[i] = s;
  return at::tensor(p, at::kLong);
}

// ---- building blocks ----------------------------------------------------------------------------------

namespace {

// RMSNorm as HF: normalise in (at least) float32, cast back, then scale by the weight. On CUDA in
// bf16/fp16, libtorch's rms_norm (one fused kernel forward and backward on recent versions; it scales
// before the cast back, a difference within half-precision rounding).
at::Tensor rmsnorm(const at::Tensor& x, const at::Tensor& w, double eps) {
#ifdef TRN_HAVE_FLASH_VARLEN
  if (x.is_cuda() && (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf) && attentionOverride() != "reference")
    return at::rms_norm(x, {x.size(-1)}, w, eps);
#endif
  auto ct = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto xf = x.to(ct);
  auto y = xf * at::rsqrt(xf.pow(2).mean({-1}, true) + eps);
  return w * y.to(x.scalar_type());
}

at::Tensor rotateHalf(const at::Tensor& x) {
  auto half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// cos/sin tables [T, hd] for positions [T]: inv_freq_j = theta^(-2j/hd), emb = cat(freqs, freqs).
std::pair<at::Tensor, at::Tensor> ropeTables(const at::Tensor& pos, int64_t hd, double theta, at::ScalarType dt) {
  auto j = at::arange(0, hd, 2, at::TensorOptions().dtype(at::kDouble).device(pos.device())) / static_cast<double>(hd);
  auto invFreq = at::pow(theta, -j);
  auto freqs = pos.to(at::kDouble).unsqueeze(1) * invFreq.unsqueeze(0);
  auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dt), emb.sin().to(dt)};
}

at::Tensor applyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // x [T, heads, hd]; tables [T, hd]
  return x * cos.unsqueeze(1) + rotateHalf(x) * sin.unsqueeze(1);
}

// RoPE as one linear map with a hand-written backward (GPU path): with tables expanded to x's shape
// [T, heads, hd] (contiguous, so every kernel is a vectorised one) and the sign of rotate_half folded
// into the sine (sinS = cat(−sin₁, sin₂)), y = x·cos + swap(x)·sinS where swap exchanges the halves.
// The map is a rotation per frequency, so its transpose is the same map with −sinS.
at::Tensor swapHalves(const at::Tensor& x) {
  auto half = x.size(-1) / 2;
  return at::cat({x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor ropeMap(const at::Tensor& x, const at::Tensor& cosX, const at::Tensor& sinX) {
  return at::addcmul(x * cosX, swapHalves(x), sinX);
}

struct RopeFn : public torch::autograd::Function<RopeFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cosX,
                            const at::Tensor& sinX, const at::Tensor& negSinX) {
    ctx->save_for_backward({cosX, negSinX});
    return ropeMap(x, cosX, sinX);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto t = ctx->get_saved_variables();
    return {ropeMap(grads[0].contiguous(), t[0], t[1]), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

/** Expanded RoPE tables for `heads` heads, contiguous [T, heads, hd]: cos, the signed sine and its negation. */
struct RopeTables {
  at::Tensor cos, sin, negSin;
};
RopeTables ropeExpanded(const std::pair<at::Tensor, at::Tensor>& t, int64_t heads) {
  const int64_t T = t.first.size(0), hd = t.first.size(1), half = hd / 2;
  auto sinS = at::cat({-t.second.narrow(1, 0, half), t.second.narrow(1, half, half)}, 1);
  auto sinX = sinS.unsqueeze(1).expand({T, heads, hd}).contiguous();
  return {t.first.unsqueeze(1).expand({T, heads, hd}).contiguous(), sinX, -sinX};
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

}  // namespace

at::Tensor attentionPacked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::vector<int64_t>& cu) {
  const int64_t nH = q.size(1), nKV = k.size(1), hd = q.size(2), rep = nH / nKV;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<at::Tensor> outs;
  for (size_t s = 0; s + 1 < cu.size(); s++) {
    const int64_t b = cu[s], L = cu[s + 1] - cu[s];
    auto qs = q.narrow(0, b, L).transpose(0, 1);  // [nH, L, hd]
    auto ks = k.narrow(0, b, L).transpose(0, 1);  // [nKV, L, hd]
    auto vs = v.narrow(0, b, L).transpose(0, 1);
    if (rep > 1) {  // query head h reads kv head h / rep (HF repeat_kv)
      ks = ks.repeat_interleave(rep, 0);
      vs = vs.repeat_interleave(rep, 0);
    }
#ifdef TRN_HAVE_SDPA
    if (q.is_cuda() && attentionOverride() != "reference") {
      auto o = at::scaled_dot_product_attention(qs.unsqueeze(0), ks.unsqueeze(0), vs.unsqueeze(0), {}, 0.0, true);
      outs.push_back(o.squeeze(0).transpose(0, 1));
      continue;
    }
#endif
    auto scores = at::matmul(qs, ks.transpose(1, 2)) * scale;  // [nH, L, L]
    auto future = at::ones({L, L}, q.options().dtype(at::kBool)).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
    auto ct = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    auto probs = at::softmax(scores.to(ct), -1).to(q.scalar_type());
    outs.push_back(at::matmul(probs, vs).transpose(0, 1));  // [L, nH, hd]
  }
  return at::cat(outs, 0);
}

namespace {

#ifdef TRN_HAVE_FLASH_VARLEN
// Causal flash attention over packed variable-length sequences (q [T, nH, hd], k/v [T, nKV, hd], GQA by
// the kernel); autograd differentiates it through libtorch's flash backward.
at::Tensor flashVarlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cu, int64_t maxLen) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(2)));
  auto out = at::_flash_attention_forward(q, k, v, cu, cu, maxLen, maxLen, 0.0, /*is_causal=*/true,
                                          /*return_debug_mask=*/false, scale);
  return std::get<0>(out);
}
#endif

}  // namespace

// ---- the model ----------------------------------------------------------------------------------------

AttentionFn Model::attention(const PackedBatch& b) const {
  const auto forced = attentionOverride();
  const auto ct = store.computeDtype();
  [[maybe_unused]] const bool half = ct == at::kBFloat16 || ct == at::kHalf;
  auto cu = b.cu;
#ifdef TRN_HAVE_FLASH_VARLEN
  if (device().is_cuda() && half && (forced.empty() || forced == "flash")) {
    int64_t maxLen = 0;
    for (size_t s = 0; s + 1 < cu.size(); s++) maxLen = std::max(maxLen, cu[s + 1] - cu[s]);
    auto cuT = at::tensor(std::vector<int32_t>(cu.begin(), cu.end()), at::kInt).to(device());
    return [cuT, maxLen](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int) {
      return flashVarlen(q, k, v, cuT, maxLen);
    };
  }
#endif
  TRN_CHECK(forced.empty() || forced == "reference" || forced == "sdpa" || forced == "flash", "TRN_ERR_ARG",
            "TRN_ATTENTION must be reference, sdpa or flash, got '" + forced + "'");
  TRN_CHECK(forced != "flash", "TRN_ERR_DEVICE", "TRN_ATTENTION=flash needs a CUDA device, bf16/fp16 compute and libtorch >= 2.4");
  return [cu](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int) { return attentionPacked(q, k, v, cu); };
}

namespace {
RunOptions checked(RunOptions r, at::ScalarType dtype) {
  TRN_CHECK(dtype == at::kFloat || dtype == at::kDouble, "TRN_ERR_ARG",
            "master dtype must be float32 or float64, got " + dtypeName(dtype));
  if (r.compute == at::ScalarType::Undefined) r.compute = dtype;
  TRN_CHECK(r.compute == dtype || (dtype == at::kFloat && (r.compute == at::kBFloat16 || r.compute == at::kHalf)),
            "TRN_ERR_ARG",
            "computeDtype " + dtypeName(r.compute) + " needs master dtype float32 (or equal the master dtype " +
                dtypeName(dtype) + ")");
  TRN_CHECK(r.logitsChunk >= 0, "TRN_ERR_ARG", "logitsChunk must be >= 0");
  return r;
}
}  // namespace

Model::Model(ModelConfig c, at::ScalarType dtype, std::shared_ptr<Comm> comm, RunOptions r)
    : cfg(c), run(checked(r, dtype)),
      store(qwen3Specs(c, r.tp ? r.tp->worldSize() : 1), dtype, std::move(comm), run.device, run.compute,
            r.tp ? r.tp->rank() : 0, r.tp ? r.tp->worldSize() : 1) {
  cfg.validate();
  if (run.tp)
    TRN_CHECK(run.tp->device().type() == run.device.type(), "TRN_ERR_ARG",
              "the tensor-parallel group works on " + std::string(run.tp->device().is_cuda() ? "cuda" : "cpu") +
                  " tensors; this model is on " + run.device.str());
  if (auto* cm = store.comm())
    TRN_CHECK(cm->device().type() == run.device.type(), "TRN_ERR_ARG",
              "a " + cm->backend() + " process group works on " + (cm->device().is_cuda() ? "cuda" : "cpu") +
                  " tensors; this model is on " + run.device.str() + " (use nccl for cuda, gloo for cpu)");
  TRN_CHECK(run.checkpointLayers >= -1, "TRN_ERR_ARG", "checkpointLayers must be >= 0 (or -1: every layer)");
  TRN_CHECK(run.checkpointLayers == -1 || run.checkpointing, "TRN_ERR_ARG",
            "checkpointLayers (" + std::to_string(run.checkpointLayers) + ") needs activationCheckpointing");
  // streaming units: the embedding, each decoder layer, the final norm (+ head)
  unitFirst_.push_back(0);
  for (int64_t l = 0; l < cfg.numLayers; l++)
    unitFirst_.push_back(store.indexOf("model.layers." + std::to_string(l) + ".input_layernorm.weight"));
  unitFirst_.push_back(store.indexOf("model.norm.weight"));
  if (store.worldSize() > 1) store.setUnits(unitFirst_);
}

at::ScalarType Model::computeType() const { return store.dtype() == at::kDouble ? at::kDouble : at::kFloat; }

void Model::initRandom(uint64_t seed) {
  at::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto& specs = store.specs();
  for (size_t i = 0; i < specs.size(); i++) {
    const auto& s = specs[i];
    at::Tensor t;
    // Full HF shapes: a tensor-parallel rank keeps its slice of the same draw as a model without tp.
    if (s.isNorm) {
      t = at::ones(s.fullShape, at::kFloat);
    } else if (s.fullShape.size() == 1) {
      t = at::zeros(s.fullShape, at::kFloat);  // biases
    } else {
      // Always drawn in float32 so a float64 model from a seed equals the float32 one, upcast.
      t = at::empty(s.fullShape, at::kFloat);
      t.normal_(0.0, cfg.initializerRange, gen);
    }
    store.setFull(static_cast<int>(i), t);
  }
}

namespace {
// Layer l's weights, in spec order, from `next(expectedName)`.
template <typename Next>
LayerWeights bindLayer(const ModelConfig& cfg, int64_t l, Next&& next) {
  std::string p = "model.layers." + std::to_string(l) + ".";
  LayerWeights L;
  L.inNorm = next(p + "input_layernorm.weight");
  L.q = next(p + "self_attn.q_proj.weight");
  if (cfg.attentionBias) L.qb = next(p + "self_attn.q_proj.bias");
  L.k = next(p + "self_attn.k_proj.weight");
  if (cfg.attentionBias) L.kb = next(p + "self_attn.k_proj.bias");
  L.v = next(p + "self_attn.v_proj.weight");
  if (cfg.attentionBias) L.vb = next(p + "self_attn.v_proj.bias");
  L.o = next(p + "self_attn.o_proj.weight");
  if (cfg.attentionBias) L.ob = next(p + "self_attn.o_proj.bias");
  L.qNorm = next(p + "self_attn.q_norm.weight");
  L.kNorm = next(p + "self_attn.k_norm.weight");
  L.postNorm = next(p + "post_attention_layernorm.weight");
  L.gate = next(p + "mlp.gate_proj.weight");
  L.up = next(p + "mlp.up_proj.weight");
  L.down = next(p + "mlp.down_proj.weight");
  return L;
}

// Binds tensors[k] to specs[first + k] in order, checking names.
struct SpecCursor {
  const std::vector<ParamSpec>& specs;
  const std::vector<at::Tensor>& tensors;
  size_t first = 0, k = 0;
  at::Tensor operator()(const std::string& expect) {
    TRN_CHECK(k < tensors.size() && first + k < specs.size() && specs[first + k].name == expect, "TRN_ERR_TORCH",
              "parameter order mismatch at " + expect);
    return tensors[k++];
  }
};
}  // namespace

Weights Model::weights(const std::vector<at::Tensor>& full) const {
  Weights w;
  SpecCursor next{store.specs(), full};
  w.embed = next("model.embed_tokens.weight");
  for (int64_t l = 0; l < cfg.numLayers; l++) w.layers.push_back(bindLayer(cfg, l, next));
  w.finalNorm = next("model.norm.weight");
  w.lmHeadIndex = cfg.tieWordEmbeddings ? 0 : static_cast<int>(next.k);
  w.lmHead = cfg.tieWordEmbeddings ? w.embed : next("lm_head.weight");
  return w;
}

bool Model::streams() const {
  if (store.worldSize() == 1 || store.numUnits() == 0) return false;
  const char* e = std::getenv("TRN_ZERO3");
  const std::string mode = e ? e : "";
  TRN_CHECK(mode.empty() || mode == "stream" || mode == "whole", "TRN_ERR_ARG",
            "TRN_ZERO3 must be stream or whole, got '" + mode + "'");
  return mode != "whole";
}

Weights Model::beginStreamed() {
  const int last = store.numUnits() - 1;
  Weights w;
  w.streamed = true;
  const auto& head = store.acquireUnit(last);  // final norm (+ head)
  const auto& embed = store.acquireUnit(0);
  store.prefetchUnit(1);
  w.embed = embed[0];
  w.finalNorm = head[0];
  w.lmHead = cfg.tieWordEmbeddings ? w.embed : head[1];
  w.lmHeadIndex = cfg.tieWordEmbeddings ? 0 : store.indexOf("lm_head.weight");
  return w;
}

void Model::endStreamed(bool reduce) {
  const int last = store.numUnits() - 1;
  if (reduce) {
    for (int u = 1; u < last; u++)
      TRN_CHECK(!store.holdsUnit(u), "TRN_ERR_TORCH",
                "decoder layer " + std::to_string(u - 1) + "'s gradients were never reduced (its backward did not run)");
    reduceUnitGrads(last);
    reduceUnitGrads(0);
    store.finishReductions();
  }
  for (int u = 0; u <= last; u++) store.releaseUnit(u);  // any left (an error mid-way)
  store.cancelPrefetches();
}

void Model::reduceUnitGrads(int u) {
  const auto& leaves = store.heldUnit(u);
  if (u > 0 && u < store.numUnits() - 1) {  // a decoder layer uses every parameter it has
    for (size_t k = 0; k < leaves.size(); k++)
      TRN_CHECK(leaves[k].grad().defined(), "TRN_ERR_TORCH",
                store.specs()[unitFirst_[u] + k].name + " has no gradient when its layer's gradients are reduced");
  }
  if (run.tp) {
    at::NoGradGuard ng;
    const int first = unitFirst_[u];
    for (size_t k = 0; k < leaves.size(); k++) {
      if (!store.specs()[first + k].tpPartialGrad) continue;
      auto& g = const_cast<at::Tensor&>(leaves[k]).mutable_grad();
      if (!g.defined()) g = at::zeros_like(leaves[k]);
      run.tp->allreduceSum(g);
    }
  }
  store.reduceUnit(u);
}

LayerWeights Model::streamedLayer(int64_t l) {
  const int u = static_cast<int>(l) + 1;
  const auto& t = store.acquireUnit(u);
  SpecCursor next{store.specs(), t, static_cast<size_t>(unitFirst_[u])};
  return bindLayer(cfg, l, next);
}

bool Model::checkpointsLayer(int64_t l) const {
  return run.checkpointing && at::GradMode::is_enabled() && (run.checkpointLayers < 0 || l < run.checkpointLayers);
}

namespace {

// Tensor parallelism's two conjugate operators over the tp group (the group outlives every graph that
// uses it: the model holds it). Copy: identity forward, all-reduce of the gradient backward (before a
// column-parallel layer). Reduce: all-reduce forward, identity backward (after a row-parallel layer).
struct TpCopy : public torch::autograd::Function<TpCopy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t commAddr) {
    ctx->saved_data["c"] = commAddr;
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* comm = reinterpret_cast<Comm*>(ctx->saved_data["c"].toInt());
    auto g = grads[0].contiguous().clone();
    comm->allreduceSum(g);
    return {g, at::Tensor()};
  }
};

struct TpReduce : public torch::autograd::Function<TpReduce> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& x, int64_t commAddr) {
    auto out = x.contiguous().clone();
    reinterpret_cast<Comm*>(commAddr)->allreduceSum(out);
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list grads) {
    return {grads[0], at::Tensor()};
  }
};

}  // namespace

at::Tensor Model::fullParameter(int i, const at::Tensor& local) const {
  const auto& s = store.specs()[i];
  if (s.splitDim < 0 || !run.tp) return local;
  auto parts = run.tp->allgather(local.contiguous());
  return at::cat(parts, s.splitDim);
}

void Model::reduceTpGrads() {
  if (!run.tp) return;
  at::NoGradGuard ng;
  for (size_t i = 0; i < store.specs().size(); i++) {
    if (!store.specs()[i].tpPartialGrad) continue;
    auto g = store.accumulatedGrad(static_cast<int>(i));
    run.tp->allreduceSum(g);
  }
}

namespace {

using LayerFn = std::function<at::Tensor(const at::Tensor&)>;

// Activation checkpointing of one layer: forward without a graph (keeps only the layer's input), backward
// re-runs the layer with grad on and back-propagates through it; the parameters' gradients accumulate
// into their .grad directly (a reentrant backward, as torch.utils.checkpoint's reentrant variant does).
// Streaming (model given): the layer's unit is gathered again before the recompute (the previous layer's
// prefetched) and its gradients reduce-scattered after.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t fnAddr,
                            int64_t modelAddr, int64_t layer) {
    ctx->saved_data["fn"] = fnAddr;
    ctx->saved_data["model"] = modelAddr;
    ctx->saved_data["l"] = layer;
    ctx->save_for_backward({x});
    const auto* fn = reinterpret_cast<const LayerFn*>(fnAddr);
    return (*fn)(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto* fn = reinterpret_cast<const LayerFn*>(ctx->saved_data["fn"].toInt());
    auto* model = reinterpret_cast<Model*>(ctx->saved_data["model"].toInt());
    const int64_t l = ctx->saved_data["l"].toInt();
    if (model) {
      model->store.acquireUnit(static_cast<int>(l) + 1);
      model->store.prefetchUnit(static_cast<int>(l));  // the layer before (no-op for a held unit)
    }
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      at::AutoGradMode on(true);
      y = (*fn)(x);
    }
    torch::autograd::backward({y}, {grads[0]});
    if (model) model->reduceUnitGrads(static_cast<int>(l) + 1);
    return {x.grad(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Streaming, a layer that keeps its activations: identities that mark its boundaries in the graph, whose
// backward calls `Hook(model, layer)`. Backward reaches LayerExit first (then the previous layer's unit is
// prefetched) and LayerEnter last, once every node of the layer has run — autograd runs a parameter's
// AccumulateGrad as soon as it is ready, ahead of other nodes — so the layer's gradients are complete
// there and go to reduce-scatter (Model::reduceUnitGrads checks that each one is there).
template <void (*Hook)(Model&, int64_t)>
struct LayerMark : public torch::autograd::Function<LayerMark<Hook>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t modelAddr, int64_t layer) {
    ctx->saved_data["model"] = modelAddr;
    ctx->saved_data["l"] = layer;
    return x;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    Hook(*reinterpret_cast<Model*>(ctx->saved_data["model"].toInt()), ctx->saved_data["l"].toInt());
    return {grads[0], at::Tensor(), at::Tensor()};
  }
};
void reduceLayer(Model& m, int64_t l) { m.reduceUnitGrads(static_cast<int>(l) + 1); }
void prefetchLayerBefore(Model& m, int64_t l) { m.store.prefetchUnit(static_cast<int>(l)); }
using LayerEnter = LayerMark<reduceLayer>;
using LayerExit = LayerMark<prefetchLayerBefore>;

using LayerBody = std::function<at::Tensor(const LayerWeights&, const at::Tensor&, int64_t)>;

}  // namespace

at::Tensor Model::hidden(const Weights& w, const at::Tensor& ids0, const at::Tensor& pos0, const AttentionFn& attn) const {
  const int64_t T = ids0.size(0), nH = cfg.numHeads / tpSize(), nKV = cfg.numKvHeads / tpSize(), hd = cfg.headDim;
  auto ids = ids0.to(device()), pos = pos0.to(device());
  const int64_t tpComm = run.tp ? reinterpret_cast<int64_t>(run.tp.get()) : 0;  // heads above are this rank's
  // Sparse embedding gradient on the CPU when training: it adds into the dense .grad in place instead of
  // making a [vocab × hidden] tensor per micro-batch. CUDA's dense embedding backward is fast.
  auto x = at::embedding(w.embed, ids, -1, false, w.embed.requires_grad() && device().is_cpu());  // [T, H]
  auto tables = ropeTables(pos, hd, cfg.ropeTheta, x.scalar_type());
  // RoPE through RopeFn, tables expanded once per batch for q's and k's head counts (TRN_ATTENTION=reference: the plain path).
  // On CUDA the RoPE kernel (fused.h) instead, from float32 half-width tables.
  const bool fastRope = attentionOverride() != "reference";
  const bool kernelRope = fastRope && fusedFor(x.device(), x.scalar_type(), "rope");
  RopeTables ropeQ, ropeK;
  std::pair<at::Tensor, at::Tensor> ropeH;
  if (kernelRope) {
    ropeH = ropeHalfTables(pos, hd, cfg.ropeTheta);
  } else if (fastRope) {
    ropeQ = ropeExpanded(tables, nH);
    ropeK = ropeExpanded(tables, nKV);
  }
  if (at::GradMode::is_enabled()) keepAlive_.clear();  // the previous micro-batch's backward has run
  const double eps = cfg.rmsNormEps;
  // Captures by value: with checkpointing the closure runs again in backward, after hidden() returned.
  auto body = std::make_shared<LayerBody>([tables, ropeQ, ropeK, ropeH, fastRope, kernelRope, attn, eps, T, nH, nKV, hd,
                                           tpComm](const LayerWeights& L, const at::Tensor& xin, int64_t l) {
    const double e = eps;
    auto h = rmsnorm(xin, L.inNorm, e);
    if (tpComm) h = TpCopy::apply(h, tpComm);
    auto q = rmsnorm(linear(h, L.q, L.qb).view({T, nH, hd}), L.qNorm, e);
    auto k = rmsnorm(linear(h, L.k, L.kb).view({T, nKV, hd}), L.kNorm, e);
    auto v = linear(h, L.v, L.vb).view({T, nKV, hd});
    if (kernelRope) {
      q = fusedRopeAutograd(q, ropeH.first, ropeH.second);
      k = fusedRopeAutograd(k, ropeH.first, ropeH.second);
    } else if (fastRope) {
      q = RopeFn::apply(q, ropeQ.cos, ropeQ.sin, ropeQ.negSin);
      k = RopeFn::apply(k, ropeK.cos, ropeK.sin, ropeK.negSin);
    } else {
      q = applyRope(q, tables.first, tables.second);
      k = applyRope(k, tables.first, tables.second);
    }
    auto o = attn(q, k, v, static_cast<int>(l));
    if (!tpComm) {
      auto x1 = xin + linear(o.reshape({T, nH * hd}), L.o, L.ob);
      h = rmsnorm(x1, L.postNorm, e);
      return x1 + at::linear(at::silu(at::linear(h, L.gate)) * at::linear(h, L.up), L.down);
    }
    // row-parallel o_proj: partial sums over this rank's heads, all-reduced; its bias added once after
    auto attnOut = TpReduce::apply(at::linear(o.reshape({T, nH * hd}), L.o), tpComm);
    auto x1 = xin + (L.ob.defined() ? attnOut + L.ob : attnOut);
    h = TpCopy::apply(rmsnorm(x1, L.postNorm, e), tpComm);
    return x1 + TpReduce::apply(at::linear(at::silu(at::linear(h, L.gate)) * at::linear(h, L.up), L.down), tpComm);
  });
  auto* self = const_cast<Model*>(this);  // streaming gathers and releases the store's units
  const int64_t selfAddr = w.streamed ? reinterpret_cast<int64_t>(self) : 0;
  for (int64_t l = 0; l < cfg.numLayers; l++) {
    const int u = static_cast<int>(l) + 1;
    LayerFn layer;
    if (w.streamed) {
      self->store.acquireUnit(u);
      self->store.prefetchUnit(u + 1 < store.numUnits() - 1 ? u + 1 : -1);  // the next layer's
      layer = [body, self, l](const at::Tensor& xin) { return (*body)(self->streamedLayer(l), xin, l); };
    } else {
      layer = [body, L = w.layers[l], l](const at::Tensor& xin) { return (*body)(L, xin, l); };
    }
    if (w.streamed && !at::GradMode::is_enabled()) {  // no backward: the layer's weights go right after it
      x = layer(x);
      self->store.releaseUnit(u);
    } else if (checkpointsLayer(l)) {  // the closure must live until backward: kept by the model until the next hidden()
      auto holder = std::make_shared<LayerFn>(std::move(layer));
      x = CheckpointedLayer::apply(x, reinterpret_cast<int64_t>(holder.get()), selfAddr, l);
      keepAlive_.push_back(holder);
      if (w.streamed) self->store.releaseUnit(u);
    } else if (w.streamed) {
      x = LayerExit::apply(layer(LayerEnter::apply(x, selfAddr, l)), selfAddr, l);
    } else {
      x = layer(x);
    }
  }
  return rmsnorm(x, w.finalNorm, cfg.rmsNormEps);
}

at::Tensor Model::logits(const Weights& w, const at::Tensor& h, double temperature) const {
  // The head's matrix product runs in the compute dtype (bf16 on a GPU, as HF does); the softmax side in
  // float32 (float64 for float64 models).
  auto ct = computeType();
  auto cd = store.computeDtype();
  auto lg = at::linear(h.to(cd), w.lmHead.to(cd)).to(ct);
  return temperature == 1.0 ? lg : lg / temperature;
}

// 2^22 logits (16 MB in float32) per chunk on the CPU: bounded memory, and below glibc's mmap threshold
// (addon.cc). 2^28 (1 GiB) on a GPU, where few large matrix products beat many small ones.
int64_t Model::chunkRows() const {
  const int64_t budget = run.logitsChunk > 0 ? run.logitsChunk : (device().is_cuda() ? int64_t{1} << 28 : int64_t{1} << 22);
  return std::max<int64_t>(1, budget / cfg.vocabSize);
}

namespace {
// Rows of `hidden` that predict a token (every token but the first of its sequence): src = j-1, dst = j.
void scoredRows(const PackedBatch& b, std::vector<int64_t>& src, std::vector<int64_t>& dst) {
  for (int64_t s = 0; s < b.numSeqs(); s++)
    for (int64_t j = b.cu[s] + 1; j < b.cu[s + 1]; j++) {
      src.push_back(j - 1);
      dst.push_back(j);
    }
}
}  // namespace

bool Model::keepsProbs() const {
  const auto cd = store.computeDtype();
  return run.keepSoftmax && device().is_cuda() && (cd == at::kBFloat16 || cd == at::kHalf);
}

Scores Model::score(const Weights& w, const at::Tensor& hidden, const PackedBatch& b, double temperature,
                    at::Tensor* probs) const {
  at::NoGradGuard ng;
  TRN_CHECK(temperature > 0, "TRN_ERR_ARG", "temperature must be > 0 for log-probs");
  std::vector<int64_t> src, dst;
  scoredRows(b, src, dst);
  auto ct = computeType();
  auto opts = at::TensorOptions().dtype(ct).device(device());
  Scores out{at::zeros({b.tokens()}, opts), at::zeros({b.tokens()}, opts)};
  const int64_t n = static_cast<int64_t>(src.size()), C = chunkRows();
  auto srcT = at::tensor(src, at::kLong).to(device()), dstT = at::tensor(dst, at::kLong).to(device());
  auto ids = b.ids.to(device());
  const auto cd = store.computeDtype();
  if (probs) *probs = at::empty({n, cfg.vocabSize}, opts.dtype(cd));
  // CUDA kernels (fused.h): the head's product written once in the compute dtype (straight into the kept
  // probabilities), then one kernel reads each row for its log-sum-exp, target log-prob and entropy (and
  // overwrites it with the probabilities when they are kept).
  const bool kernel = ct == at::kFloat && fusedFor(device(), cd, "softmax");
  at::Tensor Wc = kernel ? w.lmHead.to(cd) : at::Tensor();
  for (int64_t c0 = 0; c0 < n; c0 += C) {
    const int64_t m = std::min(C, n - c0);
    auto rows = srcT.narrow(0, c0, m), dstc = dstT.narrow(0, c0, m);
    if (kernel) {
      auto z = probs ? probs->narrow(0, c0, m) : at::empty({m, cfg.vocabSize}, opts.dtype(cd));
      at::mm_out(z, hidden.index_select(0, rows).to(cd), Wc.t());
      auto lp = at::empty({m}, opts), ent = at::empty({m}, opts);
      fusedSoftmaxRows(z, 1.0 / temperature, ids.index_select(0, dstc), lp, ent, probs != nullptr);
      out.logprobs.index_copy_(0, dstc, lp);
      out.entropy.index_copy_(0, dstc, ent);
      continue;
    }
    at::Tensor lsm;
    if (cd != ct && temperature == 1.0) {  // half-precision logits straight into a float32 log-softmax
      lsm = at::log_softmax(at::linear(hidden.index_select(0, rows).to(cd), w.lmHead.to(cd)), -1, ct);
    } else {
      lsm = at::log_softmax(logits(w, hidden.index_select(0, rows), temperature), -1);
    }
    auto tgt = ids.index_select(0, dstc);
    out.logprobs.index_copy_(0, dstc, lsm.gather(1, tgt.unsqueeze(1)).squeeze(1));
    if (probs) {
      auto p = probs->narrow(0, c0, m);
      at::exp_out(p, lsm);  // float32 math, written in the compute dtype
      // entropy (a statistic) from those half-precision probabilities: −Σ p·ln p, one same-dtype pass
      out.entropy.index_copy_(0, dstc, at::special_entr(p).sum(-1, false, ct));
    } else {
      out.entropy.index_copy_(0, dstc, -(lsm.exp() * lsm).sum(-1));
    }
  }
  return out;
}

void Model::backwardThroughScores(const Weights& w, const at::Tensor& hidden, const PackedBatch& b, double temperature,
                                  const at::Tensor& gradLogprobs, at::Tensor* probs,
                                  const at::Tensor& logprobs, const at::Tensor& gradEntropy) const {
  // By hand rather than through autograd, chunk by chunk: with z = h·Wᵀ/τ and lp = log_softmax(z)[target],
  // d lp / d z = onehot(target) − softmax(z), so for g = d loss / d lp:
  //   dz = g·(onehot − p)/τ,  dh = dz·W,  dW += dzᵀ·h
  // The matrix products run in the compute dtype; dW is added straight into the head's float32 (master
  // dtype) gradient accumulator.
  at::NoGradGuard ng;
  std::vector<int64_t> src, dst;
  scoredRows(b, src, dst);
  const int64_t n = static_cast<int64_t>(src.size()), C = chunkRows();
  auto srcT = at::tensor(src, at::kLong).to(device()), dstT = at::tensor(dst, at::kLong).to(device());
  auto ids = b.ids.to(device());
  const auto ct = computeType();
  const auto cd = store.computeDtype();
  auto g = gradLogprobs.to(device()).to(ct);
  auto hd = hidden.detach();
  auto W = w.lmHead.detach();
  auto dh = at::zeros_like(hd);
  // The head's gradient goes into its .grad in the compute dtype: a view of the persistent gradient buffer
  // when compute = master dtype, else (half precision) undefined until the first product assigns it; the
  // store moves it into the float32 accumulator after the micro-batch (flushGrads).
  auto addHeadGrad = [&](const at::Tensor& dzT, const at::Tensor& h) {
    auto& G = const_cast<at::Tensor&>(w.lmHead).mutable_grad();
    if (G.defined()) G.addmm_(dzT, h);
    else G = at::mm(dzT, h);
  };
  const bool withEntropy = gradEntropy.defined();
  TRN_CHECK(!(withEntropy && probs && probs->defined()), "TRN_ERR_ARG",
            "an entropy term needs the chunked head backward (keepSoftmax off)");
  at::Tensor ge = withEntropy ? gradEntropy.to(device()).to(ct) : at::Tensor();
  if (probs && probs->defined()) {
    // From the kept softmax, in place and whole-batch: dz = −(g/τ)·p, then the target entries — where p is
    // near 1 for a confident model and 1 − p must not cancel in half precision — exactly as
    // (g/τ)·(1 − exp(lp)); dh = dz·W and dW += dzᵀ·h as one matrix product each (float32 accumulation
    // inside the product, one rounding into the compute-dtype gradient).
    auto gs = g.index_select(0, dstT);
    if (temperature != 1.0) gs = gs / temperature;
    auto dz = *probs;
    dz.mul_(gs.neg().to(cd).unsqueeze(1));
    auto tgt = ids.index_select(0, dstT).unsqueeze(1);
    auto lp = logprobs.to(device()).to(ct).index_select(0, dstT);
    dz.scatter_(1, tgt, (gs * -at::expm1(lp)).to(cd).unsqueeze(1));
    auto hs = hd.index_select(0, srcT).to(cd);
    dh.index_copy_(0, srcT, at::mm(dz, W.to(cd)).to(dh.scalar_type()));
    addHeadGrad(dz.t(), hs);
    // free the [rows, V] buffer before the trunk's backward
    dz = at::Tensor();
    hs = at::Tensor();
    *probs = at::Tensor();
    at::AutoGradMode on(true);
    hidden.backward(dh);
    return;
  }
  auto lossRows = withEntropy ? g.ne(0).logical_or(ge.ne(0)) : g.ne(0);
  // CUDA kernels (fused.h): the chunk's logits, then one kernel turns each row into its dz in place.
  const bool kernel = ct == at::kFloat && fusedFor(device(), cd, "softmax");
  at::Tensor Wc = kernel ? W.to(cd) : at::Tensor();
  for (int64_t c0 = 0; c0 < n; c0 += C) {
    const int64_t m = std::min(C, n - c0);
    auto rows = srcT.narrow(0, c0, m), dstc = dstT.narrow(0, c0, m);
    auto gc = g.index_select(0, dstc);
    // Skip chunks without loss tokens (one host sync per chunk; chunks are large).
    if (!lossRows.index_select(0, dstc).any().item<bool>()) continue;
    auto hc = hd.index_select(0, rows);
    auto tgt = ids.index_select(0, dstc).unsqueeze(1);
    at::Tensor dzc;
    if (kernel) {
      dzc = at::empty({m, cfg.vocabSize}, hd.options().dtype(cd));
      at::mm_out(dzc, hc.to(cd), Wc.t());
      fusedSoftmaxRows(dzc, 1.0 / temperature, tgt.squeeze(1), {}, {}, true, gc.to(at::kFloat).contiguous(),
                       withEntropy ? ge.index_select(0, dstc).to(at::kFloat).contiguous() : at::Tensor());
    } else {
      auto lsm = at::log_softmax(logits(w, hc, temperature), -1);            // [m, V], float32
      auto p = lsm.exp();
      at::Tensor ent;
      if (withEntropy) {
        // H = −Σ p·log p, dH/dz_j = −p_j·(log p_j + H): the term e·dH/dz for e = d loss / d H
        auto gec = ge.index_select(0, dstc).unsqueeze(1);
        auto Hc = -(p * lsm).sum(-1, true);
        ent = p * (lsm + Hc) * (-gec);
      }
      auto dz = p.mul_(-gc.unsqueeze(1));                                     // −g·p
      dz.scatter_add_(1, tgt, gc.unsqueeze(1));                               // + g·onehot
      if (withEntropy) dz.add_(ent);
      if (temperature != 1.0) dz.div_(temperature);
      dzc = dz.to(cd);
    }
    dh.index_add_(0, rows, at::matmul(dzc, W.to(cd)).to(dh.scalar_type()));
    addHeadGrad(dzc.t(), hc.to(cd));
  }
  at::AutoGradMode on(true);
  hidden.backward(dh);
}

}  // namespace trn
