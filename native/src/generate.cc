#include "generate.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace trn {

void Sampling::validate(int64_t vocab) const {
  TRN_CHECK(temperature >= 0, "TRN_ERR_ARG", "temperature must be >= 0");
  TRN_CHECK(topP > 0 && topP <= 1, "TRN_ERR_ARG", "topP must be in (0, 1]");
  TRN_CHECK(topK >= 0, "TRN_ERR_ARG", "topK must be >= 0");
  for (auto id : stopIds)
    TRN_CHECK(id >= 0 && id < vocab, "TRN_ERR_ARG", "stop id " + std::to_string(id) + " outside the vocabulary");
}

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

double uniformAt(uint64_t seed, int64_t position) {
  uint64_t h = splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(position));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
}

// Pick one token from a row of logits [V]; returns (token, its log-prob at the sampling temperature).
std::pair<int64_t, double> sampleRow(const at::Tensor& logitsRow, const Sampling& s, uint64_t seed, int64_t position) {
  auto row = logitsRow.to(at::kDouble).contiguous();
  const int64_t V = row.size(0);
  if (s.temperature == 0) {
    auto lsm = at::log_softmax(row, -1);
    int64_t tok = row.argmax().item<int64_t>();
    return {tok, lsm[tok].item<double>()};
  }
  auto lsm = at::log_softmax(row / s.temperature, -1);
  const double* lp = lsm.data_ptr<double>();
  std::vector<int64_t> order;
  const bool filter = s.topK > 0 || s.topP < 1.0;
  if (filter) {
    // Candidates in descending probability (ties by id). Top-p alone usually needs only the head of the
    // distribution: partially sort a growing prefix until it holds topP of the mass, instead of sorting V.
    order.resize(V);
    std::iota(order.begin(), order.end(), 0);
    auto cmp = [&](int64_t a, int64_t b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); };
    const int64_t kmax = s.topK > 0 ? std::min(s.topK, V) : V;
    int64_t k = s.topP < 1.0 ? std::min<int64_t>(kmax, 64) : kmax;
    while (true) {
      std::partial_sort(order.begin(), order.begin() + k, order.end(), cmp);
      if (k == kmax || s.topP >= 1.0) break;
      double mass = 0;
      for (int64_t i = 0; i < k; i++) mass += std::exp(lp[order[i]]);
      if (mass >= s.topP) break;
      // a flat distribution (mass far from topP) needs most of V: sort it all at once
      k = mass < 0.1 * s.topP ? kmax : std::min(kmax, k * 8);
    }
    order.resize(k);
    if (s.topP < 1.0) {  // smallest prefix whose mass reaches topP (always at least one token)
      double cum = 0;
      size_t keep = 0;
      while (keep < order.size() && (keep == 0 || cum < s.topP)) cum += std::exp(lp[order[keep++]]);
      order.resize(keep);
    }
  }
  const double u = uniformAt(seed, position);
  double total = 0;
  if (filter) {
    for (auto t : order) total += std::exp(lp[t]);
    double acc = 0, target = u * total;
    for (auto t : order) {
      acc += std::exp(lp[t]);
      if (acc > target) return {t, lp[t]};
    }
    return {order.back(), lp[order.back()]};
  }
  for (int64_t t = 0; t < V; t++) total += std::exp(lp[t]);
  double acc = 0, target = u * total;
  for (int64_t t = 0; t < V; t++) {
    acc += std::exp(lp[t]);
    if (acc > target) return {t, lp[t]};
  }
  return {V - 1, lp[V - 1]};
}

struct Active {
  size_t req;              // index into reqs
  std::vector<int64_t> seq;  // prompt ++ output so far
};

}  // namespace

std::vector<GenResult> generate(Model& model, const std::vector<GenRequest>& reqs, const Sampling& s,
                                const int32_t* abortFlag, const std::function<void(int64_t)>& progress) {
  at::NoGradGuard ng;
  const auto& cfg = model.cfg;
  s.validate(cfg.vocabSize);
  for (size_t i = 0; i < reqs.size(); i++) {
    TRN_CHECK(!reqs[i].prompt.empty(), "TRN_ERR_ARG", "request " + std::to_string(i) + " has an empty prompt");
    TRN_CHECK(reqs[i].maxNewTokens >= 0, "TRN_ERR_ARG", "maxNewTokens must be >= 0");
    for (auto id : reqs[i].prompt)
      TRN_CHECK(id >= 0 && id < cfg.vocabSize, "TRN_ERR_ARG",
                "request " + std::to_string(i) + ": token id " + std::to_string(id) + " outside the vocabulary");
  }
  std::vector<GenResult> out(reqs.size());
  std::vector<Active> act;
  for (size_t i = 0; i < reqs.size(); i++) {
    if (reqs[i].maxNewTokens == 0) out[i].finish = "length";
    else act.push_back({i, reqs[i].prompt});
  }
  if (act.empty()) return out;
  if (abortFlag && __atomic_load_n(abortFlag, __ATOMIC_SEQ_CST) != 0) {
    for (auto& a : act) out[a.req].finish = "abort";
    return out;
  }

  const auto& full = model.store.materialize(false);
  auto w = model.weights(full);
  const int64_t nL = cfg.numLayers, nKV = cfg.numKvHeads, hd = cfg.headDim, nH = cfg.numHeads, rep = nH / nKV;
  const auto dev = model.device();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  auto aborted = [&] { return abortFlag && __atomic_load_n(abortFlag, __ATOMIC_SEQ_CST) != 0; };

  // Per active row: KV cache [nKV, capacity, hd] per layer, and filled length.
  std::vector<std::vector<at::Tensor>> K(act.size()), Vc(act.size());
  std::vector<int64_t> len(act.size(), 0);

  // Logits of the next token for every active row, either from scratch or from the cache.
  auto prefillOrRecompute = [&](bool fillCache) {
    std::vector<int64_t> ids, cu{0};
    for (auto& a : act) {
      ids.insert(ids.end(), a.seq.begin(), a.seq.end());
      cu.push_back(static_cast<int64_t>(ids.size()));
    }
    auto b = makePacked(ids, cu, cfg.vocabSize);
    auto prefillAttn = model.attention(b);
    auto h = model.hidden(w, b.ids, b.positions(), [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int l) {
      if (fillCache) {
        for (size_t r = 0; r < act.size(); r++) {
          const int64_t L = cu[r + 1] - cu[r];
          const int64_t cap = L + reqs[act[r].req].maxNewTokens;
          if (l == 0) K[r].assign(nL, at::Tensor()), Vc[r].assign(nL, at::Tensor());
          K[r][l] = at::zeros({nKV, cap, hd}, k.options());
          Vc[r][l] = at::zeros({nKV, cap, hd}, v.options());
          K[r][l].narrow(1, 0, L).copy_(k.narrow(0, cu[r], L).transpose(0, 1));
          Vc[r][l].narrow(1, 0, L).copy_(v.narrow(0, cu[r], L).transpose(0, 1));
          len[r] = L;
        }
      }
      return prefillAttn(q, k, v, l);
    });
    std::vector<int64_t> last;
    for (size_t r = 0; r < act.size(); r++) last.push_back(cu[r + 1] - 1);
    return model.logits(w, h.index_select(0, at::tensor(last, at::kLong).to(dev)), 1.0).to(at::kCPU);
  };

  auto decode = [&](const std::vector<int64_t>& tokens) {
    const int64_t B = static_cast<int64_t>(act.size());
    std::vector<int64_t> pos(len.begin(), len.end());
    auto ids = at::tensor(tokens, at::kLong);
    const int64_t Lmax = *std::max_element(len.begin(), len.end()) + 1;
    auto lensT = at::tensor(pos, at::kLong).to(dev);
    auto h = model.hidden(w, ids, at::tensor(pos, at::kLong), [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int l) {
      std::vector<at::Tensor> ks, vs;
      for (int64_t r = 0; r < B; r++) {
        K[r][l].select(1, len[r]).copy_(k[r]);
        Vc[r][l].select(1, len[r]).copy_(v[r]);
        const int64_t cap = K[r][l].size(1);
        const int64_t n = std::min(Lmax, cap);
        auto kr = K[r][l].narrow(1, 0, n), vr = Vc[r][l].narrow(1, 0, n);
        if (n < Lmax) {  // pad to a common length; masked below
          kr = at::cat({kr, at::zeros({nKV, Lmax - n, hd}, kr.options())}, 1);
          vr = at::cat({vr, at::zeros({nKV, Lmax - n, hd}, vr.options())}, 1);
        }
        ks.push_back(kr);
        vs.push_back(vr);
      }
      auto Kb = at::stack(ks), Vb = at::stack(vs);                      // [B, nKV, Lmax, hd]
      auto qb = q.view({B, nKV, rep, hd});                              // head h → kv head h / rep
      auto scores = at::matmul(qb, Kb.transpose(-1, -2)) * scale;       // [B, nKV, rep, Lmax]
      auto future = at::arange(Lmax, at::TensorOptions().dtype(at::kLong).device(dev)).view({1, 1, 1, Lmax}) >
                    lensT.view({B, 1, 1, 1});
      scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
      const auto dt = q.scalar_type();
      auto ct = dt == at::kDouble ? at::kDouble : at::kFloat;
      auto probs = at::softmax(scores.to(ct), -1).to(dt);
      return at::matmul(probs, Vb).reshape({B, nH, hd});
    });
    for (auto& l : len) l++;
    return model.logits(w, h, 1.0).to(at::kCPU);
  };

  at::Tensor logits = prefillOrRecompute(s.kvCache);
  int64_t steps = 0;
  while (true) {
    // 1. sample one token per active row
    std::vector<int64_t> next;
    std::vector<size_t> keep;
    for (size_t r = 0; r < act.size(); r++) {
      auto& a = act[r];
      const auto& rq = reqs[a.req];
      auto [tok, lp] = sampleRow(logits[r], s, rq.seed, static_cast<int64_t>(a.seq.size()));
      a.seq.push_back(tok);
      auto& o = out[a.req];
      o.tokens.push_back(static_cast<int32_t>(tok));
      o.logprobs.push_back(static_cast<float>(lp));
      if (std::find(s.stopIds.begin(), s.stopIds.end(), tok) != s.stopIds.end()) o.finish = "stop";
      else if (static_cast<int64_t>(o.tokens.size()) >= rq.maxNewTokens) o.finish = "length";
      else {
        keep.push_back(r);
        next.push_back(tok);
      }
    }
    steps++;
    if (progress) progress(steps);
    // 2. drop finished rows (their caches go with them)
    if (keep.size() != act.size()) {
      std::vector<Active> a2;
      std::vector<std::vector<at::Tensor>> K2, V2;
      std::vector<int64_t> l2;
      for (auto r : keep) {
        a2.push_back(std::move(act[r]));
        if (s.kvCache) K2.push_back(std::move(K[r])), V2.push_back(std::move(Vc[r])), l2.push_back(len[r]);
      }
      act = std::move(a2);
      K = std::move(K2), Vc = std::move(V2), len = std::move(l2);
    }
    if (act.empty()) break;
    if (aborted()) {
      for (auto& a : act) out[a.req].finish = "abort";
      break;
    }
    // 3. next logits
    logits = s.kvCache ? decode(next) : prefillOrRecompute(false);
  }
  model.store.release();
  return out;
}

}  // namespace trn
