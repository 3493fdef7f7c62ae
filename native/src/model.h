// Qwen3 decoder-only transformer as Hugging Face defines it (RMSNorm, RoPE with rope_theta, grouped-query
// attention with per-head q/k RMSNorm, SwiGLU MLP, optional tied embeddings), over packed sequences.
//
// Packed batch convention (shared with native/index.ts): T tokens of S sequences back to back, sequence s
// is tokens [cu[s], cu[s+1]); no attention across sequences; positions restart at 0 in each sequence.
// Per-token outputs are aligned with the token they score: out[i] = log p(ids[i] | ids[cu[s]..i-1]), and
// out[cu[s]] = 0 (the first token of a sequence has no prediction).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "params.h"

namespace trn {

struct PackedBatch {
  at::Tensor ids;                // int64 [T]
  std::vector<int64_t> cu;       // S+1 offsets, cu[0] = 0, cu[S] = T
  at::Tensor positions() const;  // int64 [T], restarting at 0 per sequence
  at::Tensor seqIndex() const;   // int64 [T], sequence number of each token
  int64_t tokens() const { return cu.back(); }
  int64_t numSeqs() const { return static_cast<int64_t>(cu.size()) - 1; }
};

/** Validates cu_seqlens against T (TRN_ERR_ARG) and builds the batch. */
PackedBatch makePacked(std::vector<int64_t> ids, std::vector<int64_t> cu, int64_t vocab);

/** Named references into the materialized parameter list. */
struct LayerWeights {
  at::Tensor inNorm, q, k, v, o, qb, kb, vb, ob, qNorm, kNorm, postNorm, gate, up, down;
};
struct Weights {
  at::Tensor embed, finalNorm, lmHead;
  int lmHeadIndex = -1;  // parameter index of the head (the embedding when tied)
  std::vector<LayerWeights> layers;
  // Streaming ZeRO-3 (Model::beginStreamed): `layers` is empty; each layer's weights are gathered when it
  // runs (and again for its backward when checkpointed) and its gradients reduce-scattered after.
  bool streamed = false;
};

/** Where and how a model computes (the master weights and optimizer state are float32/float64 always). */
struct RunOptions {
  at::Device device = at::Device(at::kCPU);
  /** Forward/backward dtype: the master dtype (default), or bfloat16/float16 over float32 master weights. */
  at::ScalarType compute = at::ScalarType::Undefined;
  /** Recompute each decoder layer in the backward pass instead of keeping its activations. */
  bool checkpointing = false;
  /** With checkpointing: only the first this many decoder layers are recomputed (-1: all of them). */
  int64_t checkpointLayers = -1;
  /** Logits per chunk of the log-prob computation (0: 2^22 on the CPU, 2^28 on a GPU). */
  int64_t logitsChunk = 0;
  /**
   * Training on CUDA in half precision: keep the scoring pass's softmax ([loss rows × vocab] in the compute
   * dtype, e.g. 5 GB for 16k tokens of Qwen3's vocabulary) so the head's backward needs no second pass and
   * runs as two whole-batch products. Off (default): the logits exist one chunk at a time, also backward.
   */
  bool keepSoftmax = false;
  /**
   * Tensor-parallel group (Megatron-style): attention heads and MLP columns split over its ranks —
   * q/k/v/gate/up by rows (column-parallel), o/down by columns (row-parallel, one all-reduce after each),
   * the rest replicated. Every rank of it gets the same batches. Null: no tensor parallelism.
   */
  std::shared_ptr<Comm> tp;
};

/** Attention over one layer: q [T, nH, hd], k/v [T, nKV, hd] (after RoPE) → [T, nH, hd]. */
using AttentionFn = std::function<at::Tensor(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int layer)>;

/** Reference causal attention per packed sequence (plain matmul + mask + softmax, GQA by repetition). */
at::Tensor attentionPacked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::vector<int64_t>& cu);

/** Per-token scores of a packed batch (aligned as described above). */
struct Scores {
  at::Tensor logprobs;  // [T], model dtype or float32 (whichever is wider)
  at::Tensor entropy;   // [T]
};

class Model {
 public:
  Model(ModelConfig cfg, at::ScalarType dtype, std::shared_ptr<Comm> comm, RunOptions run = {});

  const ModelConfig cfg;
  const RunOptions run;
  ParamStore store;

  at::Device device() const { return run.device; }
  int tpSize() const { return run.tp ? run.tp->worldSize() : 1; }
  int tpRank() const { return run.tp ? run.tp->rank() : 0; }
  /** Writes files for the whole model (data-parallel rank 0 of tensor-parallel rank 0). */
  bool isWriter() const { return store.rank() == 0 && tpRank() == 0; }
  /** The full HF tensor of parameter i from this rank's tensor-parallel part (all-gather over tp; collective). */
  at::Tensor fullParameter(int i, const at::Tensor& local) const;
  /** Sums over the tp ranks the gradients that each holds only a share of (q/k norms); collective. */
  void reduceTpGrads();

  /**
   * The attention for a packed batch on this model's device: flash attention over the packed
   * variable-length sequences on CUDA in bf16/fp16 (libtorch's varlen kernel; GQA native), per-sequence
   * SDPA on CUDA otherwise, the reference attentionPacked on the CPU. TRN_ATTENTION=reference|sdpa|flash
   * forces one (diagnostics).
   */
  AttentionFn attention(const PackedBatch& b) const;

  /** Seeded init as HF's _init_weights: normal(0, initializer_range) matrices, ones for norms, zero biases. */
  void initRandom(uint64_t seed);

  /** Bind named weights to the currently materialized parameters. */
  Weights weights(const std::vector<at::Tensor>& full) const;

  /**
   * Streaming ZeRO-3 (a store sharded over W > 1 ranks; ParamStore's units: the embedding, each decoder
   * layer, the final norm with the head; training steps and log-probs): whether a step streams (TRN_ZERO3=whole gathers the
   * whole model instead, the earlier scheme), the micro-batch's start — the embedding and head units
   * gathered, the first layer's prefetched — and its end after backward: their gradients reduced.
   */
  bool streams() const;
  Weights beginStreamed();
  /** `reduce`: after a backward, reduce-scatter the embedding/head gradients; without (no grad), drop the units. */
  void endStreamed(bool reduce = true);
  /** tp-sums unit u's partial gradients (q/k norms), then starts its reduce-scatter (ParamStore::reduceUnit). */
  void reduceUnitGrads(int u);
  /** Layer l's weights from its (held) unit. */
  LayerWeights streamedLayer(int64_t l);
  /** Whether decoder layer l is recomputed in backward (grad mode on, run.checkpointing/checkpointLayers). */
  bool checkpointsLayer(int64_t l) const;

  /** Final-norm hidden states [T, H] for token ids [T] at positions [T] (any device: moved to the
   * model's), attention given. With run.checkpointing and grad mode on, each layer is recomputed in backward. */
  at::Tensor hidden(const Weights& w, const at::Tensor& ids, const at::Tensor& pos, const AttentionFn& attn) const;

  /** Logits rows [N, V] from hidden rows [N, H] at a temperature (float32 or float64). */
  at::Tensor logits(const Weights& w, const at::Tensor& h, double temperature) const;

  /**
   * Per-token log-probs and entropies from hidden states, `chunkRows` rows of logits at a time. With
   * `probs`, the softmax of every scored row is kept there ([rows, V] in the compute dtype) for
   * backwardThroughScores, which then needs no second pass through the head and does the head's backward
   * as two whole-batch matrix products (used for half-precision compute on CUDA).
   */
  Scores score(const Weights& w, const at::Tensor& hidden, const PackedBatch& b, double temperature,
               at::Tensor* probs = nullptr) const;

  /**
   * Backward of a loss that depends on the per-token log-probs only through `gradLogprobs` ([T], d loss /
   * d logprob[i]) and, when `gradEntropy` is given, on the per-token entropies ([T], d loss / d H[i]; not
   * with `probs`): recomputes logits chunk by chunk so the [T × V] logits never exist at once, adds the
   * head's gradient in place into its .grad, and back-propagates d loss / d hidden through `hidden`'s graph.
   */
  void backwardThroughScores(const Weights& w, const at::Tensor& hidden, const PackedBatch& b, double temperature,
                             const at::Tensor& gradLogprobs, at::Tensor* probs = nullptr,
                             const at::Tensor& logprobs = at::Tensor(),
                             const at::Tensor& gradEntropy = at::Tensor()) const;

  /** Whether training keeps the score pass's probabilities (run.keepSoftmax, half precision on CUDA). */
  bool keepsProbs() const;

  /** Number of logits rows per chunk (bounded memory: about 2^22 logits per chunk). */
  int64_t chunkRows() const;

  at::ScalarType computeType() const;  // of logits/scores: float64 for f64 models, else float32

  /** Drops the checkpointed layers' closures (and the tables they hold) once their backward has run. */
  void releaseCheckpoints() const { keepAlive_.clear(); }

 private:
  // Checkpointed layers' closures, alive until the next hidden() (their backward runs in between).
  mutable std::vector<std::shared_ptr<std::function<at::Tensor(const at::Tensor&)>>> keepAlive_;
  std::vector<int> unitFirst_;  // first spec of each streaming unit
};

}  // namespace trn
