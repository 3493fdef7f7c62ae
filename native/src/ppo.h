// The decoupled PPO loss of DESIGN §5 (AReaL/Archon), per token, in float64:
//   ρ = exp(logπθ − logπprox)                  (sequence-level option: ρ_s = exp(mean over the sequence's
//                                               loss tokens of logπθ − logπprox), shared by its tokens)
//   L = max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε_high))   (ties take the unclipped branch)
//   dual clip (c > 1): L = min(L, c·|A|)
//   w = πprox/πbehave; cap: "mask" drops tokens with w > cap (w = 0), "clamp" uses min(w, cap); no cap: w
//   loss = Σ_mask w·L / denom  (denom = loss tokens of the whole global batch: micro-batches and ranks
//   are weighted by their token counts)
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace trn {

struct PpoLossConfig {
  double epsClip = 0.2;
  double epsClipHigher = -1;  // < 0: same as epsClip
  double dualClip = 0;        // 0: off; else must be > 1
  double behavImpWeightCap = 0;  // 0: no cap
  std::string behavImpWeightMode = "mask";  // "mask" | "clamp"
  bool sequenceLevel = false;
  // Entropy bonus: loss −= entropyCoef · Σ_mask H / denom, H the entropy of the distribution that predicted
  // each loss token (at the loss temperature). 0: off. Applied by the model's training step (ppoLoss itself
  // sees only log-probs).
  double entropyCoef = 0;
  void validate() const;
};

/** Sums over loss tokens (divide by `tokens` for means); exact counts as doubles. */
struct PpoSums {
  double loss = 0;          // Σ w·L / denom (i.e. this part's share of the loss)
  double tokens = 0;        // loss tokens
  double clipped = 0;       // tokens where the clipped branch was taken
  double dualClipped = 0;   // tokens where the dual clip was taken
  double behavDropped = 0;  // tokens dropped by the behaviour-weight mask (or clamped)
  double ratioSum = 0;
  double ratioMax = 0;
  double approxKlSum = 0;   // k3 = (ρ−1) − log ρ, token-level ρ
  double entropySum = 0;
};

/**
 * logprobs [T] (any float dtype; autograd flows through it), prox/behave/adv [T] float64, mask [T] bool,
 * seq [T] int64 sequence index (for the sequence-level ratio). `behave` may be undefined (w = 1).
 * Returns the loss (float64 scalar, differentiable w.r.t. logprobs) and fills `sums` (no grad).
 */
at::Tensor ppoLoss(const at::Tensor& logprobs, const at::Tensor& prox, const at::Tensor& behave, const at::Tensor& adv,
                   const at::Tensor& mask, const at::Tensor& seq, int64_t numSeqs, double denom,
                   const PpoLossConfig& cfg, PpoSums& sums);

}  // namespace trn
