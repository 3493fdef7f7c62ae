#include "safetensors.h"

#include <cstdio>
#include <fstream>

#include "common.h"

namespace trn {

namespace {

at::ScalarType fromStDtype(const std::string& d) {
  if (d == "F32") return at::kFloat;
  if (d == "F64") return at::kDouble;
  if (d == "F16") return at::kHalf;
  if (d == "BF16") return at::kBFloat16;
  TRN_FAIL("TRN_ERR_CHECKPOINT", "unsupported safetensors dtype '" + d + "' (F64, F32, F16, BF16 are read)");
}

std::string toStDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kDouble: return "F64";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    default: TRN_FAIL("TRN_ERR_ARG", "cannot save dtype " + dtypeName(t));
  }
}

std::string jsonString(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o + "\"";
}

void writeFile(const std::string& path, const std::string& header, const std::vector<at::Tensor>& parts) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    TRN_CHECK(f.good(), "TRN_ERR_CHECKPOINT", "cannot open " + tmp + " for writing");
    uint64_t n = header.size();
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    f.write(reinterpret_cast<const char*>(len), 8);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (auto& t : parts)
      f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    f.flush();
    TRN_CHECK(f.good(), "TRN_ERR_CHECKPOINT", "write to " + tmp + " failed (disk full?)");
  }
  TRN_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "TRN_ERR_CHECKPOINT", "cannot rename " + tmp + " to " + path);
}

std::string headerFor(const std::vector<std::string>& names, const std::vector<at::Tensor>& parts,
                      const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::string header = "{\"__metadata__\":{";
  for (size_t i = 0; i < metadata.size(); i++)
    header += (i ? "," : "") + jsonString(metadata[i].first) + ":" + jsonString(metadata[i].second);
  header += "}";
  int64_t off = 0;
  for (size_t i = 0; i < parts.size(); i++) {
    const auto& t = parts[i];
    int64_t nb = t.numel() * t.element_size();
    header += "," + jsonString(names[i]) + ":{\"dtype\":\"" + toStDtype(t.scalar_type()) + "\",\"shape\":[";
    for (int64_t d = 0; d < t.dim(); d++) header += (d ? "," : "") + std::to_string(t.size(d));
    header += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + nb) + "]}";
    off += nb;
  }
  header += "}";
  while ((header.size() + 8) % 8 != 0) header += ' ';  // data starts 8-byte aligned
  return header;
}

}  // namespace

void writeSafetensorsFile(const std::string& path, const std::vector<std::string>& names,
                          const std::vector<at::Tensor>& tensors,
                          const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::vector<at::Tensor> parts;
  for (auto& t : tensors) parts.push_back(t.detach().to(at::kCPU).contiguous());
  writeFile(path, headerFor(names, parts, metadata), parts);
}

at::Tensor readTensor(const TensorLocation& loc) {
  auto dt = fromStDtype(loc.dtype);
  int64_t numel = 1;
  for (auto d : loc.shape) numel *= d;
  const int64_t want = numel * static_cast<int64_t>(c10::elementSize(dt));
  TRN_CHECK(want == loc.nbytes, "TRN_ERR_CHECKPOINT",
            loc.name + ": " + std::to_string(loc.nbytes) + " bytes for " + loc.dtype + shapeStr(loc.shape) + " in " + loc.file);
  auto t = at::empty(loc.shape, at::TensorOptions().dtype(dt));
  std::ifstream f(loc.file, std::ios::binary);
  TRN_CHECK(f.good(), "TRN_ERR_CHECKPOINT", "cannot open " + loc.file);
  f.seekg(loc.offset);
  f.read(static_cast<char*>(t.data_ptr()), loc.nbytes);
  TRN_CHECK(f.gcount() == loc.nbytes, "TRN_ERR_CHECKPOINT", loc.name + ": file " + loc.file + " is truncated");
  return t;
}

std::vector<std::string> writeSafetensors(const std::string& dir, const std::vector<std::string>& names,
                                          const std::vector<at::Tensor>& tensors, at::ScalarType dtype,
                                          int64_t maxShardBytes) {
  toStDtype(dtype);  // TRN_ERR_ARG for dtypes safetensors cannot hold
  std::vector<at::Tensor> conv;
  for (auto& t : tensors) conv.push_back(t.detach().to(at::kCPU).to(dtype).contiguous());
  // Greedy shard plan in parameter order.
  std::vector<std::vector<size_t>> shards(1);
  int64_t cur = 0;
  for (size_t i = 0; i < conv.size(); i++) {
    int64_t nb = conv[i].numel() * conv[i].element_size();
    if (maxShardBytes > 0 && cur > 0 && cur + nb > maxShardBytes) shards.emplace_back(), cur = 0;
    shards.back().push_back(i);
    cur += nb;
  }
  const size_t n = shards.size();
  std::vector<std::string> files;
  std::string weightMap;
  int64_t totalSize = 0;
  for (size_t s = 0; s < n; s++) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", s + 1, n);
    std::string fname = n == 1 ? "model.safetensors" : buf;
    std::vector<std::string> shardNames;
    std::vector<at::Tensor> parts;
    for (auto i : shards[s]) {
      totalSize += conv[i].numel() * conv[i].element_size();
      shardNames.push_back(names[i]);
      parts.push_back(conv[i]);
      weightMap += (weightMap.empty() ? "" : ",\n    ") + jsonString(names[i]) + ": " + jsonString(fname);
    }
    std::string header = headerFor(shardNames, parts, {{"format", "pt"}});
    writeFile(dir + "/" + fname, header, parts);
    files.push_back(fname);
  }
  if (n > 1) {
    std::string idx = "{\n  \"metadata\": {\"total_size\": " + std::to_string(totalSize) + "},\n  \"weight_map\": {\n    " +
                      weightMap + "\n  }\n}\n";
    const std::string path = dir + "/model.safetensors.index.json";
    std::ofstream f(path + ".tmp", std::ios::trunc);
    f << idx;
    f.close();
    TRN_CHECK(f.good() && std::rename((path + ".tmp").c_str(), path.c_str()) == 0, "TRN_ERR_CHECKPOINT",
              "cannot write " + path);
    files.push_back("model.safetensors.index.json");
  }
  return files;
}

}  // namespace trn
