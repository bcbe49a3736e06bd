#include "store/manifest.h"

#include <nlohmann/json.hpp>

namespace pilotlight::store {
namespace {
using nlohmann::json;

json TensorsToJson(const std::vector<TensorInfo>& ts) {
  json arr = json::array();
  for (const auto& t : ts) arr.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}});
  return arr;
}

std::vector<TensorInfo> TensorsFromJson(const json& arr) {
  std::vector<TensorInfo> out;
  for (const auto& t : arr) {
    out.push_back(
        {t.at("name").get<std::string>(), t.at("dtype").get<std::string>(), t.at("shape").get<std::vector<int64_t>>()});
  }
  return out;
}
}  // namespace

std::string ManifestToJson(const Manifest& m) {
  json files = json::array();
  for (const auto& f : m.files) {
    json e = {{"path", f.path}, {"sha256", f.sha256}, {"size", f.size_bytes}};
    if (!f.url.empty()) e["url"] = f.url;
    files.push_back(e);
  }
  json j = {{"name", m.name},
            {"version", m.version},
            {"framework", m.framework},
            {"created_at", m.created_at},
            {"files", files},
            {"inputs", TensorsToJson(m.inputs)},
            {"outputs", TensorsToJson(m.outputs)}};
  return j.dump(2) + "\n";
}

StatusOr<Manifest> ManifestFromJson(std::string_view text) {
  try {
    json j = json::parse(text);
    Manifest m;
    m.name = j.at("name").get<std::string>();
    m.version = j.at("version").get<std::string>();
    m.framework = j.value("framework", "onnx");
    m.created_at = j.value("created_at", "");
    for (const auto& f : j.at("files")) {
      m.files.push_back({f.at("path").get<std::string>(), f.at("sha256").get<std::string>(),
                         f.at("size").get<uint64_t>(), f.value("url", "")});
    }
    if (j.contains("inputs")) m.inputs = TensorsFromJson(j["inputs"]);
    if (j.contains("outputs")) m.outputs = TensorsFromJson(j["outputs"]);
    if (m.files.empty()) return DataLossError("manifest lists no files");
    for (const auto& f : m.files) {
      if (f.path.empty() || f.path.find("..") != std::string::npos || f.path.front() == '/') {
        return DataLossError("manifest file path '" + f.path + "' escapes the version folder");
      }
      if (!f.url.empty() && f.url.rfind("https://", 0) != 0 && f.url.rfind("http://", 0) != 0) {
        return DataLossError("manifest file url '" + f.url + "' must be http:// or https://");
      }
    }
    return m;
  } catch (const std::exception& e) {
    return DataLossError(std::string("invalid manifest.json: ") + e.what());
  }
}

std::string CurrentToJson(const CurrentPointer& c) {
  json hist = json::array();
  for (const auto& h : c.history) hist.push_back({{"version", h.version}, {"promoted_at", h.promoted_at}});
  json j = {{"version", c.version}, {"sha256", c.sha256}, {"promoted_at", c.promoted_at}, {"history", hist}};
  return j.dump(2) + "\n";
}

StatusOr<CurrentPointer> CurrentFromJson(std::string_view text) {
  try {
    json j = json::parse(text);
    CurrentPointer c;
    c.version = j.at("version").get<std::string>();
    c.sha256 = j.value("sha256", "");
    c.promoted_at = j.value("promoted_at", "");
    if (j.contains("history")) {
      for (const auto& h : j["history"]) {
        c.history.push_back({h.at("version").get<std::string>(), h.value("promoted_at", "")});
      }
    }
    return c;
  } catch (const std::exception& e) {
    return DataLossError(std::string("invalid current.json: ") + e.what());
  }
}

Status ValidateName(std::string_view v, std::string_view what) {
  if (v.empty() || v.size() > 128 || v.front() == '.' || v == "." || v == "..") {
    return InvalidArgumentError(std::string(what) + " '" + std::string(v) +
                                "' is invalid: use 1-128 characters of A-Z a-z 0-9 . _ - not starting with '.'");
  }
  for (char c : v) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgumentError(std::string(what) + " '" + std::string(v) +
                                  "' is invalid: use only A-Z a-z 0-9 . _ -");
    }
  }
  return OkStatus();
}

}  // namespace pilotlight::store
