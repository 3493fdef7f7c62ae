// One PPO optimizer step over micro-batches (gradient accumulation weighted by token count), grad-norm
// clipping, AdamW and the learning-rate schedule; all ranks of a process group call it together.
#pragma once

#include <string>
#include <vector>

#include "model.h"
#include "ppo.h"

namespace trn {

struct Schedule {
  std::string kind = "constant";  // "constant" | "linear" | "cosine"
  int64_t warmupSteps = 0;        // linear warm-up from lr/warmup to lr over this many steps
  int64_t totalSteps = 0;         // linear/cosine decay ends here (required for them)
  double minLrRatio = 0;          // decay floor as a fraction of lr
};

struct OptimConfig {
  double lr = 1e-5;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weightDecay = 0.0;  // decoupled (AdamW); matrices only
  double maxGradNorm = 1.0;  // 0: no clipping
  Schedule schedule;
  void validate() const;
};

/** Learning rate of the update with 0-based index `step`. */
double lrAt(const OptimConfig& cfg, int64_t step);

struct MicroBatch {
  PackedBatch batch;
  at::Tensor mask;    // bool [T]
  at::Tensor adv;     // float64 [T]
  at::Tensor prox;    // float64 [T]
  at::Tensor behave;  // float64 [T] or undefined
};

struct StepStats {
  PpoSums sums;  // global over ranks
  double gradNorm = 0;
  double lr = 0;
  bool skipped = false;  // non-finite gradient: no update
  int64_t step = 0;      // optimizer steps taken so far
  // Wall-clock milliseconds of the step's phases, device-synchronised at each boundary; only with
  // TRN_STEP_TIMINGS=1 (the syncs cost a little), else empty: gather (materialize), forward+backward of
  // every micro-batch, gradient reduction (tp sums, reduce-scatter), optimizer (norm, clip, AdamW).
  std::vector<std::pair<const char*, double>> timings;
  // Streamed ZeRO-3 (Model::streams): the most parameter units (embedding, layers, norm + head) gathered or
  // in flight at once during the step — what a rank held beyond its shards; 0 when not streamed.
  int peakUnits = 0;
};

/** Forward + backward of every micro-batch into the materialized parameters' .grad (`whole`), or, streamed
 * (Model::streams), into the store's gradient shard a unit at a time. */
PpoSums accumulateGrads(Model& model, const Weights& whole, std::vector<MicroBatch>& mbs, const PpoLossConfig& loss,
                        double temperature, bool streamed = false);

StepStats ppoStep(Model& model, std::vector<MicroBatch>& mbs, const PpoLossConfig& loss, double temperature,
                  const OptimConfig& opt);

/** Gradients of the same loss without updating anything: full tensors, summed over ranks. */
std::vector<at::Tensor> lossGradients(Model& model, std::vector<MicroBatch>& mbs, const PpoLossConfig& loss,
                                      double temperature, PpoSums& sums);

}  // namespace trn
