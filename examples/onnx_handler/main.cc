// onnx_handler: a Lambda handler in C++ that loads an ONNX model once per instance and answers
// events through the AWS Lambda Runtime API — the seeds' handler, without a language runtime.
// It runs unchanged on AWS Lambda (as a custom runtime `bootstrap`) and under pilotlight
// (`runtime: process`).
//
//   _HANDLER            the model file, relative to LAMBDA_TASK_ROOT (e.g. digits.onnx)
//   event               {"inputs": [[...], ...]} (one float32 input, batch first), or an API
//                       Gateway HTTP API 2.0 event whose body is that JSON
//   response            {"outputs": [[...], ...], "model": _HANDLER} (first output), or, for an
//                       API Gateway event, {"statusCode": 200, "headers": {...}, "body": "..."}
//
// Build: cmake --build --preset release --target onnx_handler (→ build/release/examples/).
#include <curl/curl.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <onnxruntime_cxx_api.h>
#include <nlohmann/json.hpp>

namespace {

using nlohmann::json;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

size_t Collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

size_t CollectHeader(char* data, size_t size, size_t n, void* out) {
  std::string line(data, size * n);
  const std::string key = "lambda-runtime-aws-request-id:";
  std::string lower = line;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.rfind(key, 0) == 0) {
    std::string v = line.substr(key.size());
    while (!v.empty() && (v.front() == ' ')) v.erase(0, 1);
    while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
    *static_cast<std::string*>(out) = v;
  }
  return size * n;
}

// One Runtime API call; returns the HTTP status (0 on a transport error).
long Call(const std::string& method, const std::string& url, const std::string& body, std::string* response,
          std::string* request_id = nullptr, const char* extra_header = nullptr) {
  // One handle for the whole process: libcurl keeps its connection to the Runtime API alive.
  static CURL* c = curl_easy_init();
  curl_easy_reset(c);
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Content-Type: application/json");
  if (extra_header) headers = curl_slist_append(headers, extra_header);
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, response);
  if (request_id) {
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, CollectHeader);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, request_id);
  }
  if (method == "POST") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  long status = 0;
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  return status;
}

std::string ErrorDoc(const std::string& type, const std::string& message) {
  return json({{"errorType", type}, {"errorMessage", message}}).dump();
}

class Model {
 public:
  explicit Model(const std::string& path)
      : env_(ORT_LOGGING_LEVEL_WARNING, "onnx_handler"), session_(env_, path.c_str(), Options()) {
    Ort::AllocatorWithDefaultOptions alloc;
    input_ = session_.GetInputNameAllocated(0, alloc).get();
    output_ = session_.GetOutputNameAllocated(0, alloc).get();
    auto shape = session_.GetInputTypeInfo(0).GetTensorTypeAndShapeInfo().GetShape();
    width_ = shape.size() == 2 ? shape[1] : -1;
  }

  json Run(const json& rows) {
    if (!rows.is_array() || rows.empty()) throw std::invalid_argument("\"inputs\" must be a non-empty list of rows");
    std::vector<float> data;
    int64_t width = -1;
    for (const auto& row : rows) {
      if (!row.is_array()) throw std::invalid_argument("each row of \"inputs\" must be a list of numbers");
      if (width < 0) width = static_cast<int64_t>(row.size());
      if (static_cast<int64_t>(row.size()) != width || (width_ > 0 && width != width_)) {
        throw std::invalid_argument("rows must have " + std::to_string(width_ > 0 ? width_ : width) + " values");
      }
      for (const auto& v : row) data.push_back(v.get<float>());
    }
    std::vector<int64_t> shape = {static_cast<int64_t>(rows.size()), width};
    Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value in = Ort::Value::CreateTensor<float>(mem, data.data(), data.size(), shape.data(), shape.size());
    const char* in_names[] = {input_.c_str()};
    const char* out_names[] = {output_.c_str()};
    auto out = session_.Run(Ort::RunOptions{nullptr}, in_names, &in, 1, out_names, 1);
    auto info = out[0].GetTensorTypeAndShapeInfo();
    auto oshape = info.GetShape();
    const float* p = out[0].GetTensorData<float>();
    int64_t cols = oshape.size() == 2 ? oshape[1] : static_cast<int64_t>(info.GetElementCount());
    json result = json::array();
    for (int64_t r = 0; r < static_cast<int64_t>(info.GetElementCount()) / cols; ++r) {
      result.push_back(std::vector<float>(p + r * cols, p + (r + 1) * cols));
    }
    return result;
  }

 private:
  static Ort::SessionOptions Options() {
    Ort::SessionOptions o;
    o.SetIntraOpNumThreads(1);
    return o;
  }
  Ort::Env env_;
  Ort::Session session_;
  std::string input_, output_;
  int64_t width_ = -1;
};

}  // namespace

int main() {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const std::string api = "http://" + Env("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime";
  const std::string handler = Env("_HANDLER");
  const std::string model_path = Env("LAMBDA_TASK_ROOT") + "/" + handler;

  // Init: load the model once per instance. A failure is reported as Lambda expects.
  std::unique_ptr<Model> model;
  try {
    model = std::make_unique<Model>(model_path);
    std::printf("onnx_handler: loaded %s\n", model_path.c_str());
    std::fflush(stdout);
  } catch (const std::exception& e) {
    std::string ignored;
    Call("POST", api + "/init/error", ErrorDoc("Runtime.InitError", e.what()), &ignored, nullptr,
         "Lambda-Runtime-Function-Error-Type: Runtime.InitError");
    return 1;
  }

  while (true) {
    std::string event_text, request_id, ignored;
    if (Call("GET", api + "/invocation/next", "", &event_text, &request_id) != 200 || request_id.empty()) return 2;
    std::string base = api + "/invocation/" + request_id;
    try {
      json event = json::parse(event_text);
      bool http = event.is_object() && event.value("version", "") == "2.0" && event.contains("requestContext");
      json request = http ? json::parse(event.value("body", "{}")) : event;
      json response = {{"model", handler}, {"outputs", model->Run(request.at("inputs"))}};
      if (http) {
        response = {
            {"statusCode", 200}, {"headers", {{"Content-Type", "application/json"}}}, {"body", response.dump()}};
      }
      Call("POST", base + "/response", response.dump(), &ignored);
    } catch (const std::exception& e) {
      std::printf("onnx_handler: request %s failed: %s\n", request_id.c_str(), e.what());
      std::fflush(stdout);
      Call("POST", base + "/error", ErrorDoc("InvalidInput", e.what()), &ignored, nullptr,
           "Lambda-Runtime-Function-Error-Type: InvalidInput");
    }
  }
}
