// The model configuration the native side needs, already normalised from an HF config.json by
// native/config.ts (which names the HF keys). Validation of ranges happens in validate().
#pragma once

#include <cstdint>
#include <string>

#include "common.h"

namespace trn {

struct ModelConfig {
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t numKvHeads = 0;
  int64_t headDim = 0;
  double rmsNormEps = 1e-6;
  double ropeTheta = 1e6;
  double initializerRange = 0.02;
  bool tieWordEmbeddings = false;
  bool attentionBias = false;
  int64_t maxPositionEmbeddings = 0;

  void validate() const {
    auto pos = [](int64_t v, const char* k) {
      TRN_CHECK(v > 0, "TRN_ERR_CONFIG", std::string(k) + " must be > 0, got " + std::to_string(v));
    };
    pos(vocabSize, "vocab_size");
    pos(hiddenSize, "hidden_size");
    pos(intermediateSize, "intermediate_size");
    pos(numLayers, "num_hidden_layers");
    pos(numHeads, "num_attention_heads");
    pos(numKvHeads, "num_key_value_heads");
    pos(headDim, "head_dim");
    pos(maxPositionEmbeddings, "max_position_embeddings");
    TRN_CHECK(numHeads % numKvHeads == 0, "TRN_ERR_CONFIG",
              "num_attention_heads (" + std::to_string(numHeads) + ") must be a multiple of num_key_value_heads (" +
                  std::to_string(numKvHeads) + ")");
    TRN_CHECK(headDim % 2 == 0, "TRN_ERR_CONFIG", "head_dim must be even for RoPE");
    TRN_CHECK(rmsNormEps > 0, "TRN_ERR_CONFIG", "rms_norm_eps must be > 0");
    TRN_CHECK(ropeTheta > 0, "TRN_ERR_CONFIG", "rope_theta must be > 0");
  }
};

}  // namespace trn
