// Shared helpers of the native trainer: coded errors that carry file:line (llm.c habit, but thrown as
// exceptions that the N-API layer turns into coded JS errors — never exit/abort), dtype names.
#pragma once

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace trn {

/** An error with a catalogue code (runtime/errors.ts, prefix TRN_ERR_) and the C++ place it came from. */
struct TrnError : std::runtime_error {
  std::string code;
  std::string file;
  int line;
  TrnError(std::string code_, const std::string& msg, std::string file_ = "", int line_ = 0)
      : std::runtime_error(msg), code(std::move(code_)), file(std::move(file_)), line(line_) {}
};

[[noreturn]] inline void raise(const char* code, const std::string& msg, const char* file, int line) {
  std::string f(file);
  auto slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  throw TrnError(code, msg, f, line);
}

#define TRN_FAIL(code, msg) ::trn::raise(code, (msg), __FILE__, __LINE__)
#define TRN_CHECK(cond, code, msg) \
  do {                             \
    if (!(cond)) TRN_FAIL(code, msg); \
  } while (0)

/** "float32" | "float64" | "bfloat16" | "float16" → ScalarType (TRN_ERR_ARG otherwise). */
inline at::ScalarType dtypeFromName(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "float64") return at::kDouble;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  TRN_FAIL("TRN_ERR_ARG", "unknown dtype '" + name + "' (expected float32, float64, bfloat16 or float16)");
}

inline std::string dtypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return "other";
  }
}

/** CUDA devices this process can use (0 in a CPU-only build or without a GPU). */
inline int cudaDeviceCount() {
  try {
    return at::detail::getCUDAHooks().hasCUDA() ? static_cast<int>(at::detail::getCUDAHooks().getNumGPUs()) : 0;
  } catch (...) {
    return 0;
  }
}

/** Waits for the work queued on `d`'s current stream (a blocking one-element copy to the host: portable
 * across libtorch versions; collectives' streams are joined into the current one by their waits). */
inline void deviceSynchronize(const at::Device& d) { at::empty({1}, at::TensorOptions().device(d)).to(at::kCPU); }

/** "cpu" | "cuda" | "cuda:N" → Device; TRN_ERR_DEVICE when that CUDA device does not exist here. */
inline at::Device deviceFromName(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  int index = 0;
  if (name == "cuda") index = 0;
  else if (name.rfind("cuda:", 0) == 0 && name.size() > 5 && name.find_first_not_of("0123456789", 5) == std::string::npos)
    index = std::stoi(name.substr(5));
  else TRN_FAIL("TRN_ERR_ARG", "unknown device '" + name + "' (expected cpu, cuda or cuda:N)");
  const int n = cudaDeviceCount();
  TRN_CHECK(index < n, "TRN_ERR_DEVICE",
            "device " + name + " requested but this process sees " + std::to_string(n) + " CUDA device(s)" +
                (n == 0 ? " (CPU-only libtorch build, or no GPU)" : ""));
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

inline std::string shapeStr(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); i++) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace trn
