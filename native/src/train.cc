#include "train.h"

#include <chrono>
#include <cstdlib>
#include <string>

#include <ATen/core/grad_mode.h>

#include "profile.h"

#include <cmath>

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
#define TRN_HAVE_FUSED_ADAMW 1
#endif

namespace trn {

void OptimConfig::validate() const {
  TRN_CHECK(lr >= 0, "TRN_ERR_ARG", "lr must be >= 0");
  TRN_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "TRN_ERR_ARG", "betas must be in [0, 1)");
  TRN_CHECK(eps > 0, "TRN_ERR_ARG", "eps must be > 0");
  TRN_CHECK(weightDecay >= 0, "TRN_ERR_ARG", "weightDecay must be >= 0");
  TRN_CHECK(maxGradNorm >= 0, "TRN_ERR_ARG", "maxGradNorm must be >= 0 (0 = off)");
  const auto& s = schedule;
  TRN_CHECK(s.kind == "constant" || s.kind == "linear" || s.kind == "cosine", "TRN_ERR_ARG",
            "schedule.kind must be constant, linear or cosine, got '" + s.kind + "'");
  TRN_CHECK(s.warmupSteps >= 0, "TRN_ERR_ARG", "schedule.warmupSteps must be >= 0");
  TRN_CHECK(s.kind == "constant" || s.totalSteps > s.warmupSteps, "TRN_ERR_ARG",
            "schedule.totalSteps must be > warmupSteps for a " + s.kind + " schedule");
  TRN_CHECK(s.minLrRatio >= 0 && s.minLrRatio <= 1, "TRN_ERR_ARG", "schedule.minLrRatio must be in [0, 1]");
}

double lrAt(const OptimConfig& cfg, int64_t step) {
  const auto& s = cfg.schedule;
  if (s.warmupSteps > 0 && step < s.warmupSteps) return cfg.lr * static_cast<double>(step + 1) / s.warmupSteps;
  if (s.kind == "constant") return cfg.lr;
  double p = static_cast<double>(step - s.warmupSteps) / static_cast<double>(s.totalSteps - s.warmupSteps);
  p = std::min(1.0, std::max(0.0, p));
  double f = s.kind == "linear" ? 1.0 - (1.0 - s.minLrRatio) * p
                                : s.minLrRatio + (1.0 - s.minLrRatio) * 0.5 * (1.0 + std::cos(M_PI * p));
  return cfg.lr * f;
}

namespace {

#ifdef TRN_HAVE_FUSED_ADAMW
// libtorch's fused AdamW (one kernel over a list of tensors; same update as the slice loop below): two
// groups, the decayed matrices and the rest, as per-parameter views of the flat shard. Clipping enters as
// grad_scale = 1/coef (the kernel divides the gradients by it).
void fusedAdamw(ParamStore& st, const OptimConfig& opt, double lr, double coef, int64_t t) {
  auto& g = st.grad();
  std::vector<at::Tensor> P[2], G[2], M[2], V[2], none;
  int64_t covered = 0;
  auto add = [&](int k, int64_t off, int64_t len) {
    P[k].push_back(st.master().narrow(0, off, len));
    G[k].push_back(g.narrow(0, off, len));
    M[k].push_back(st.expAvg().narrow(0, off, len));
    V[k].push_back(st.expAvgSq().narrow(0, off, len));
  };
  // decayed ranges, and the gaps between them (norms, biases, padding)
  for (auto [off, len] : st.decayRanges()) {
    if (off > covered) add(0, covered, off - covered);
    add(1, off, len);
    covered = off + len;
  }
  if (covered < g.numel()) add(0, covered, g.numel() - covered);
  auto scale = coef != 1.0 ? c10::optional<at::Tensor>(at::full({1}, 1.0 / coef, g.options().dtype(at::kFloat)))
                           : c10::optional<at::Tensor>();
  for (int k = 0; k < 2; k++) {
    if (P[k].empty()) continue;
    auto steps = at::full({static_cast<int64_t>(P[k].size())}, static_cast<double>(t), g.options().dtype(at::kFloat));
    std::vector<at::Tensor> S;
    for (int64_t i = 0; i < steps.numel(); i++) S.push_back(steps.narrow(0, i, 1));
    at::_fused_adamw_(P[k], G[k], M[k], V[k], none, S, lr, opt.beta1, opt.beta2, k == 1 ? opt.weightDecay : 0.0,
                      opt.eps, /*amsgrad=*/false, /*maximize=*/false, scale, c10::nullopt);
  }
}
#endif

void reduceSums(Comm* comm, PpoSums& s) {
  if (!comm || comm->worldSize() == 1) return;
  auto t = at::tensor(std::vector<double>{s.loss, s.tokens, s.clipped, s.dualClipped, s.behavDropped, s.ratioSum,
                                          s.approxKlSum, s.entropySum},
                      at::kDouble);
  comm->allreduceSum(t);
  auto a = t.accessor<double, 1>();
  s.loss = a[0], s.tokens = a[1], s.clipped = a[2], s.dualClipped = a[3], s.behavDropped = a[4], s.ratioSum = a[5],
  s.approxKlSum = a[6], s.entropySum = a[7];
  auto maxes = comm->allgather(at::tensor(std::vector<double>{s.ratioMax}, at::kDouble));
  for (auto& m : maxes) s.ratioMax = std::max(s.ratioMax, m.item<double>());
}

}  // namespace

PpoSums accumulateGrads(Model& model, const Weights& whole, std::vector<MicroBatch>& mbs, const PpoLossConfig& loss,
                        double temperature, bool streamed) {
  loss.validate();
  TRN_CHECK(temperature > 0, "TRN_ERR_ARG", "temperature must be > 0");
  // Token-count weighting: every micro-batch divides by the loss tokens of the whole global batch.
  double localTokens = 0;
  for (auto& mb : mbs) localTokens += mb.mask.sum().item<double>();
  double denom = localTokens;
  Comm* comm = model.store.comm();
  if (comm && comm->worldSize() > 1) {
    auto t = at::tensor(std::vector<double>{localTokens}, at::kDouble);
    comm->allreduceSum(t);
    denom = t.item<double>();
  }
  TRN_CHECK(denom > 0, "TRN_ERR_ARG", "the batch has no loss tokens (every lossMask is 0)");
  PpoSums sums;
  for (auto& mb : mbs) {
    // Streaming ZeRO-3: this micro-batch's embedding/head units now, the layers' as they run.
    Weights streamedW;  // (a conditional of an lvalue and a prvalue would copy `whole` every micro-batch)
    if (streamed) streamedW = model.beginStreamed();
    const Weights& w = streamed ? streamedW : whole;
    auto pos = mb.batch.positions();
    auto h = model.hidden(w, mb.batch.ids, pos, model.attention(mb.batch));
    at::Tensor probs;
    const bool keep = model.keepsProbs() && loss.entropyCoef == 0;
    auto sc = model.score(w, h.detach(), mb.batch, temperature, keep ? &probs : nullptr);
    // The loss itself is tiny ([T] values): float64 on the CPU, on every device.
    auto lpLeaf = sc.logprobs.to(at::kCPU).to(at::kDouble).detach().requires_grad_(true);
    auto l = ppoLoss(lpLeaf, mb.prox, mb.behave, mb.adv, mb.mask, mb.batch.seqIndex(), mb.batch.numSeqs(), denom, loss,
                     sums);
    at::Tensor gradEntropy;
    {
      at::NoGradGuard ng;
      auto maskD = mb.mask.to(at::kDouble);
      const double entSum = (sc.entropy.to(at::kCPU).to(at::kDouble) * maskD).sum().item<double>();
      sums.entropySum += entSum;
      if (loss.entropyCoef > 0) {
        // the entropy bonus: loss −= c · Σ_mask H / denom
        sums.loss -= loss.entropyCoef * entSum / denom;
        gradEntropy = maskD * (-loss.entropyCoef / denom);
      }
    }
    l.backward();
    model.backwardThroughScores(w, h, mb.batch, temperature, lpLeaf.grad(), keep ? &probs : nullptr, sc.logprobs,
                                gradEntropy);
    model.releaseCheckpoints();
    if (streamed) model.endStreamed();  // the embedding/head gradients reduced; every layer's already was
    else model.store.flushGrads();      // compute-dtype gradients → the float32 accumulator, per micro-batch
  }
  reduceSums(comm, sums);
  return sums;
}

std::vector<at::Tensor> lossGradients(Model& model, std::vector<MicroBatch>& mbs, const PpoLossConfig& loss,
                                      double temperature, PpoSums& sums) {
  const auto& full = model.store.materialize(true);
  auto w = model.weights(full);
  sums = accumulateGrads(model, w, mbs, loss, temperature);
  model.reduceTpGrads();
  auto reduced = model.store.reduceGrads();
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < model.store.specs().size(); i++) {
    auto g = model.fullParameter(static_cast<int>(i), model.store.fullGradOf(reduced, static_cast<int>(i)));
    out.push_back(g.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true));
  }
  model.store.release();
  return out;
}

namespace {
// TRN_STEP_TIMINGS=1: phase boundaries wait for the device, then record the wall-clock time since the last.
class PhaseClock {
 public:
  PhaseClock(const at::Device& device, std::vector<std::pair<const char*, double>>& out)
      : device_(device), out_(out), on_(stepTimingsOn()) {
    if (on_) last_ = now();
  }
  void mark(const char* phase) {
    if (!on_) return;
    const double t = now();
    out_.emplace_back(phase, t - last_);
    last_ = t;
  }

 private:
  static bool stepTimingsOn() {
    const char* e = std::getenv("TRN_STEP_TIMINGS");
    return e && std::string(e) == "1";
  }
  double now() const {
    if (device_.is_cuda()) deviceSynchronize(device_);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  at::Device device_;
  std::vector<std::pair<const char*, double>>& out_;
  bool on_;
  double last_ = 0;
};
}  // namespace

StepStats ppoStep(Model& model, std::vector<MicroBatch>& mbs, const PpoLossConfig& loss, double temperature,
                  const OptimConfig& opt) {
  opt.validate();
  TraceScope trace;
  auto& st = model.store;
  StepStats out;
  PhaseClock clock(st.device(), out.timings);
  if (model.streams()) {
    // ZeRO-3 a unit at a time: gathers and reduce-scatters run inside the forward/backward, overlapped
    st.beginStreamedStep();
    clock.mark("gather");
    out.sums = accumulateGrads(model, Weights{}, mbs, loss, temperature, true);
    out.peakUnits = st.peakUnits();
    clock.mark("forwardBackward");
    clock.mark("reduce");
  } else {
    const auto& full = st.materialize(true);
    clock.mark("gather");
    auto w = model.weights(full);
    out.sums = accumulateGrads(model, w, mbs, loss, temperature);
    clock.mark("forwardBackward");
    model.reduceTpGrads();
    st.reduceScatterGrads();
    st.release();
    clock.mark("reduce");
  }
  struct OptimizerMark {  // every return below ends the optimizer phase
    PhaseClock& c;
    ~OptimizerMark() { c.mark("optimizer"); }
  } optimizerMark{clock};
  at::NoGradGuard ng;
  // Optimizer math in slices: temporaries stay small (on the CPU 2^20 elements, in glibc's heap, see
  // addon.cc) however large the model. On CUDA: one norm kernel and libtorch's fused AdamW.
  auto& g = st.grad();
  const int64_t N = g.numel(), S = int64_t{1} << 20;
  const bool cuda = st.device().is_cuda();
  // Σ g² in float64 on g's device: one reduction kernel on CUDA, slices of S elements on the CPU.
  auto sumSquares = [&](const at::Tensor& x) {
    if (cuda) return at::linalg_vector_norm(x, 2, c10::nullopt, false, at::kDouble).pow(2);
    auto acc = at::zeros({}, at::kDouble);
    for (int64_t o = 0; o < x.numel(); o += S) acc.add_(x.narrow(0, o, std::min(S, x.numel() - o)).to(at::kDouble).pow(2).sum());
    return acc;
  };
  at::Tensor sq;
  if (model.tpSize() > 1) {
    // Split parameters' shards differ across tp ranks (summed over tp and dp); replicated ones are equal on
    // every tp rank (summed over dp only). Sums stay on the device, one host read at the end.
    auto acc = at::zeros({2}, at::TensorOptions().dtype(at::kDouble).device(st.device()));
    for (size_t i = 0; i < st.specs().size(); i++) {
      auto [off, len] = st.shardRange(static_cast<int>(i));
      if (len == 0) continue;
      acc[st.specs()[i].splitDim >= 0 ? 0 : 1].add_(sumSquares(g.narrow(0, off, len)));
    }
    auto a = acc.to(at::kCPU);
    if (st.worldSize() > 1) st.comm()->allreduceSum(a);
    auto sp = a.narrow(0, 0, 1).clone();
    model.run.tp->allreduceSum(sp);
    sq = at::tensor(std::vector<double>{sp.item<double>() + a[1].item<double>()}, at::kDouble);
  } else {
    sq = sumSquares(g).reshape({1}).to(at::kCPU);
  }
  if (st.worldSize() > 1 && model.tpSize() == 1) st.comm()->allreduceSum(sq);
  out.gradNorm = std::sqrt(sq.item<double>());
  out.lr = lrAt(opt, st.step);
  if (!std::isfinite(out.gradNorm)) {
    out.skipped = true;
    out.step = st.step;
    return out;
  }
  const double coef = opt.maxGradNorm > 0 ? std::min(1.0, opt.maxGradNorm / (out.gradNorm + 1e-6)) : 1.0;
  const int64_t t = ++st.step;
#ifdef TRN_HAVE_FUSED_ADAMW
  if (cuda) {
    fusedAdamw(st, opt, out.lr, coef, t);
    out.step = t;
    return out;
  }
#endif
  const double bc1 = 1.0 - std::pow(opt.beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(opt.beta2, static_cast<double>(t));
  // Decoupled weight decay on matrices (this rank's elements of them), before the Adam update; each
  // element's update does not depend on the order.
  if (opt.weightDecay > 0) {
    for (auto [off, len] : st.decayRanges()) {
      auto p = st.master().narrow(0, off, len);
      p.sub_(p * (out.lr * opt.weightDecay));
    }
  }
  for (int64_t o = 0; o < N; o += S) {
    const int64_t n = std::min(S, N - o);
    auto gs = g.narrow(0, o, n);
    auto p = st.master().narrow(0, o, n);
    auto m = st.expAvg().narrow(0, o, n);
    auto v = st.expAvgSq().narrow(0, o, n);
    if (coef != 1.0) gs.mul_(coef);
    m.mul_(opt.beta1).add_(gs, 1.0 - opt.beta1);
    v.mul_(opt.beta2).addcmul_(gs, gs, 1.0 - opt.beta2);
    auto denom = (v.sqrt() / std::sqrt(bc2)).add_(opt.eps);
    p.addcdiv_(m, denom, -out.lr / bc1);
  }
  out.step = t;
  return out;
}

}  // namespace trn
