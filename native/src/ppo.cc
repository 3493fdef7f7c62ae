#include "ppo.h"

#include <ATen/core/grad_mode.h>

#include "common.h"

namespace trn {

void PpoLossConfig::validate() const {
  TRN_CHECK(epsClip > 0, "TRN_ERR_ARG", "epsClip must be > 0");
  TRN_CHECK(dualClip == 0 || dualClip > 1, "TRN_ERR_ARG", "dualClip must be 0 (off) or > 1");
  TRN_CHECK(behavImpWeightCap >= 0, "TRN_ERR_ARG", "behavImpWeightCap must be >= 0 (0 = off)");
  TRN_CHECK(behavImpWeightMode == "mask" || behavImpWeightMode == "clamp", "TRN_ERR_ARG",
            "behavImpWeightMode must be 'mask' or 'clamp'");
  TRN_CHECK(entropyCoef >= 0, "TRN_ERR_ARG", "entropyCoef must be >= 0 (0 = off)");
}

at::Tensor ppoLoss(const at::Tensor& logprobs, const at::Tensor& prox, const at::Tensor& behave, const at::Tensor& adv,
                   const at::Tensor& mask, const at::Tensor& seq, int64_t numSeqs, double denom,
                   const PpoLossConfig& cfg, PpoSums& sums) {
  cfg.validate();
  const double epsLo = cfg.epsClip, epsHi = cfg.epsClipHigher < 0 ? cfg.epsClip : cfg.epsClipHigher;
  auto lp = logprobs.to(at::kDouble);
  auto m = mask.to(at::kDouble);
  auto tokLogRatio = lp - prox;
  auto logRatio = tokLogRatio;
  if (cfg.sequenceLevel) {
    auto z = at::zeros({numSeqs}, lp.options());
    auto seqSum = z.index_add(0, seq, tokLogRatio * m);
    auto seqCnt = z.detach().index_add(0, seq, m.detach()).clamp_min(1.0);
    logRatio = (seqSum / seqCnt).index_select(0, seq);
  }
  auto ratio = at::exp(logRatio);
  auto l1 = -adv * ratio;
  auto l2 = -adv * at::clamp(ratio, 1.0 - epsLo, 1.0 + epsHi);
  auto takeClip = l2 > l1;
  auto L = at::where(takeClip, l2, l1);
  at::Tensor takeDual;
  if (cfg.dualClip > 0) {
    auto l3 = cfg.dualClip * adv.abs();
    takeDual = l3 < L;
    L = at::where(takeDual, l3, L);
  }
  at::Tensor dropped;
  if (behave.defined()) {
    auto w = at::exp(prox - behave);
    if (cfg.behavImpWeightCap > 0) {
      dropped = w > cfg.behavImpWeightCap;
      w = cfg.behavImpWeightMode == "mask" ? at::where(dropped, at::zeros_like(w), w) : at::clamp_max(w, cfg.behavImpWeightCap);
    }
    L = L * w;
  }
  auto loss = (L * m).sum() / denom;

  at::NoGradGuard ng;
  auto mb = mask.to(at::kBool);
  sums.loss += loss.item<double>();
  sums.tokens += m.sum().item<double>();
  sums.clipped += (takeClip & mb).sum().item<double>();
  if (takeDual.defined()) sums.dualClipped += (takeDual & mb).sum().item<double>();
  if (dropped.defined()) sums.behavDropped += (dropped & mb).sum().item<double>();
  auto r = ratio.detach();
  sums.ratioSum += (r * m).sum().item<double>();
  if (mb.any().item<bool>()) sums.ratioMax = std::max(sums.ratioMax, r.masked_select(mb).max().item<double>());
  auto tr = tokLogRatio.detach();
  sums.approxKlSum += (((tr.exp() - 1) - tr) * m).sum().item<double>();
  return loss;
}

}  // namespace trn
