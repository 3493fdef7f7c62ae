#include "model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
#define TRN_HAVE_SDPA 1
#endif

namespace trn {

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

// RMSNorm as HF: normalise in (at least) float32, cast back, then scale by the weight.
at::Tensor rmsnorm(const at::Tensor& x, const at::Tensor& w, double eps) {
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
  auto j = at::arange(0, hd, 2, at::kDouble) / static_cast<double>(hd);
  auto invFreq = at::pow(theta, -j);
  auto freqs = pos.to(at::kDouble).unsqueeze(1) * invFreq.unsqueeze(0);
  auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dt), emb.sin().to(dt)};
}

at::Tensor applyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // x [T, heads, hd]; tables [T, hd]
  return x * cos.unsqueeze(1) + rotateHalf(x) * sin.unsqueeze(1);
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
    if (q.is_cuda()) {
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

// ---- the model ----------------------------------------------------------------------------------------

Model::Model(ModelConfig c, at::ScalarType dtype, std::shared_ptr<Comm> comm)
    : cfg(c), store(qwen3Specs(c), dtype, std::move(comm)) {
  cfg.validate();
  TRN_CHECK(dtype == at::kFloat || dtype == at::kDouble, "TRN_ERR_ARG",
            "model dtype must be float32 or float64 on the CPU path, got " + dtypeName(dtype));
}

at::ScalarType Model::computeType() const { return store.dtype() == at::kDouble ? at::kDouble : at::kFloat; }

void Model::initRandom(uint64_t seed) {
  at::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto& specs = store.specs();
  for (size_t i = 0; i < specs.size(); i++) {
    const auto& s = specs[i];
    at::Tensor t;
    if (s.isNorm) {
      t = at::ones(s.shape, at::kFloat);
    } else if (s.shape.size() == 1) {
      t = at::zeros(s.shape, at::kFloat);  // biases
    } else {
      // Always drawn in float32 so a float64 model from a seed equals the float32 one, upcast.
      t = at::empty(s.shape, at::kFloat);
      t.normal_(0.0, cfg.initializerRange, gen);
    }
    store.setFull(static_cast<int>(i), t);
  }
}

Weights Model::weights(const std::vector<at::Tensor>& full) const {
  Weights w;
  const auto& specs = store.specs();
  size_t i = 0;
  auto next = [&](const std::string& expect) -> at::Tensor {
    TRN_CHECK(i < specs.size() && specs[i].name == expect, "TRN_ERR_TORCH", "parameter order mismatch at " + expect);
    return full[i++];
  };
  w.embed = next("model.embed_tokens.weight");
  for (int64_t l = 0; l < cfg.numLayers; l++) {
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
    w.layers.push_back(L);
  }
  w.finalNorm = next("model.norm.weight");
  w.lmHead = cfg.tieWordEmbeddings ? w.embed : next("lm_head.weight");
  return w;
}

at::Tensor Model::hidden(const Weights& w, const at::Tensor& ids, const at::Tensor& pos, const AttentionFn& attn) const {
  const int64_t T = ids.size(0), nH = cfg.numHeads, nKV = cfg.numKvHeads, hd = cfg.headDim;
  // Sparse embedding gradient when training: it adds into the dense .grad in place instead of making a
  // [vocab × hidden] tensor per micro-batch.
  auto x = at::embedding(w.embed, ids, -1, false, w.embed.requires_grad());  // [T, H]
  auto tables = ropeTables(pos, hd, cfg.ropeTheta, x.scalar_type());
  for (int64_t l = 0; l < cfg.numLayers; l++) {
    const auto& L = w.layers[l];
    auto h = rmsnorm(x, L.inNorm, cfg.rmsNormEps);
    auto q = rmsnorm(linear(h, L.q, L.qb).view({T, nH, hd}), L.qNorm, cfg.rmsNormEps);
    auto k = rmsnorm(linear(h, L.k, L.kb).view({T, nKV, hd}), L.kNorm, cfg.rmsNormEps);
    auto v = linear(h, L.v, L.vb).view({T, nKV, hd});
    q = applyRope(q, tables.first, tables.second);
    k = applyRope(k, tables.first, tables.second);
    auto o = attn(q, k, v, static_cast<int>(l));
    x = x + linear(o.reshape({T, nH * hd}), L.o, L.ob);
    h = rmsnorm(x, L.postNorm, cfg.rmsNormEps);
    x = x + at::linear(at::silu(at::linear(h, L.gate)) * at::linear(h, L.up), L.down);
  }
  return rmsnorm(x, w.finalNorm, cfg.rmsNormEps);
}

at::Tensor Model::logits(const Weights& w, const at::Tensor& h, double temperature) const {
  auto ct = computeType();
  auto lg = at::linear(h.to(ct), w.lmHead.to(ct));
  return temperature == 1.0 ? lg : lg / temperature;
}

// 2^22 logits (16 MB in float32) per chunk: bounded memory, and below glibc's mmap threshold (addon.cc).
int64_t Model::chunkRows() const { return std::max<int64_t>(1, (int64_t{1} << 22) / cfg.vocabSize); }

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

Scores Model::score(const Weights& w, const at::Tensor& hidden, const PackedBatch& b, double temperature) const {
  at::NoGradGuard ng;
  TRN_CHECK(temperature > 0, "TRN_ERR_ARG", "temperature must be > 0 for log-probs");
  std::vector<int64_t> src, dst;
  scoredRows(b, src, dst);
  auto ct = computeType();
  Scores out{at::zeros({b.tokens()}, ct), at::zeros({b.tokens()}, ct)};
  const int64_t n = static_cast<int64_t>(src.size()), C = chunkRows();
  auto srcT = at::tensor(src, at::kLong), dstT = at::tensor(dst, at::kLong);
  for (int64_t c0 = 0; c0 < n; c0 += C) {
    const int64_t m = std::min(C, n - c0);
    auto rows = srcT.narrow(0, c0, m), dstc = dstT.narrow(0, c0, m);
    auto lsm = at::log_softmax(logits(w, hidden.index_select(0, rows), temperature), -1);
    auto tgt = b.ids.index_select(0, dstc);
    out.logprobs.index_copy_(0, dstc, lsm.gather(1, tgt.unsqueeze(1)).squeeze(1));
    out.entropy.index_copy_(0, dstc, -(lsm.exp() * lsm).sum(-1));
  }
  return out;
}

void Model::backwardThroughScores(const Weights& w, const at::Tensor& hidden, const PackedBatch& b, double temperature,
                                  const at::Tensor& gradLogprobs) const {
  // By hand rather than through autograd, chunk by chunk: with z = h·Wᵀ/τ and lp = log_softmax(z)[target],
  // d lp / d z = onehot(target) − softmax(z), so for g = d loss / d lp:
  //   dz = g·(onehot − p)/τ,  dh = dz·W,  dW += dzᵀ·h   (added in place into W's .grad).
  at::NoGradGuard ng;
  std::vector<int64_t> src, dst;
  scoredRows(b, src, dst);
  const int64_t n = static_cast<int64_t>(src.size()), C = chunkRows();
  auto srcT = at::tensor(src, at::kLong), dstT = at::tensor(dst, at::kLong);
  const auto ct = computeType();
  auto g = gradLogprobs.to(ct);
  auto hd = hidden.detach();
  auto W = w.lmHead.detach().to(ct);
  auto dh = at::zeros_like(hd);
  at::Tensor dW = w.lmHead.grad();
  if (!dW.defined()) dW = w.lmHead.mutable_grad() = at::zeros_like(w.lmHead);
  bool any = false;
  for (int64_t c0 = 0; c0 < n; c0 += C) {
    const int64_t m = std::min(C, n - c0);
    auto rows = srcT.narrow(0, c0, m), dstc = dstT.narrow(0, c0, m);
    auto gc = g.index_select(0, dstc);
    if (!gc.ne(0).any().item<bool>()) continue;  // no loss token in this chunk
    any = true;
    auto hc = hd.index_select(0, rows).to(ct);
    auto p = at::softmax(logits(w, hc, temperature), -1);                    // [m, V]
    auto dz = p.mul_(-gc.unsqueeze(1));                                       // −g·p
    auto tgt = b.ids.index_select(0, dstc).unsqueeze(1);
    dz.scatter_add_(1, tgt, gc.unsqueeze(1));                                 // + g·onehot
    if (temperature != 1.0) dz.div_(temperature);
    dh.index_add_(0, rows, at::matmul(dz, W).to(dh.scalar_type()));
    dW.addmm_(dz.t().to(dW.scalar_type()), hc.to(dW.scalar_type()));
  }
  if (!any) return;
  at::AutoGradMode on(true);
  hidden.backward(dh);
}

}  // namespace trn
