// safetensors: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}, then the
// data. Header JSON is parsed on the TS side (native/safetensors.ts); here we read and write the bytes.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace trn {

struct TensorLocation {
  std::string name;
  std::string file;
  std::string dtype;  // safetensors dtype: F64 F32 F16 BF16
  std::vector<int64_t> shape;
  int64_t offset = 0;  // absolute byte offset in the file
  int64_t nbytes = 0;
};

/** Read one tensor (CPU, its file dtype). TRN_ERR_CHECKPOINT on short reads or size mismatch. */
at::Tensor readTensor(const TensorLocation& loc);

/**
 * Write tensors (CPU) as `dtype` into dir: one model.safetensors, or model-0000i-of-0000n.safetensors plus
 * model.safetensors.index.json when the total exceeds maxShardBytes (> 0). Files are written under a temp
 * name and renamed, so a crash never leaves a truncated checkpoint. Returns the file names written.
 */
std::vector<std::string> writeSafetensors(const std::string& dir, const std::vector<std::string>& names,
                                          const std::vector<at::Tensor>& tensors, at::ScalarType dtype,
                                          int64_t maxShardBytes);

/** Write one file: tensors as they are (CPU, contiguous), with string metadata. Temp file + rename. */
void writeSafetensorsFile(const std::string& path, const std::vector<std::string>& names,
                          const std::vector<at::Tensor>& tensors,
                          const std::vector<std::pair<std::string, std::string>>& metadata);

}  // namespace trn
