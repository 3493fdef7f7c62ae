// Batched sampling with a KV cache (the embedded engine's core), plus the no-cache reference path that
// recomputes every step from scratch (the fast path is tested against it).
//
// Sampling is reproducible and resumable: the uniform draw for the token at absolute position p of a
// request (prompt + output so far) is a hash of (request seed, p). Aborting after k tokens and resuming
// with prompt' = prompt ++ those k tokens (same seed, budget − k) continues exactly as if never stopped.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "model.h"

namespace trn {

struct GenRequest {
  std::vector<int64_t> prompt;  // at least one token
  int64_t maxNewTokens = 0;
  uint64_t seed = 0;
};

struct Sampling {
  double temperature = 1.0;  // 0 = greedy (log-probs then at temperature 1)
  double topP = 1.0;         // (0, 1]
  int64_t topK = 0;          // 0 = off
  std::vector<int64_t> stopIds;
  bool kvCache = true;       // false: recompute from scratch each step (reference)
  void validate(int64_t vocab) const;
};

struct GenResult {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // log p(token) under softmax(logits / temperature), before top-k/top-p
  std::string finish;           // "stop" | "length" | "abort"
};

/**
 * `abortFlag` (may be null) is read between decode steps: non-zero stops every unfinished request with
 * finish "abort" and returns what it has. `progress(steps)` is called after each decode step.
 */
std::vector<GenResult> generate(Model& model, const std::vector<GenRequest>& reqs, const Sampling& s,
                                const int32_t* abortFlag, const std::function<void(int64_t)>& progress);

}  // namespace trn
