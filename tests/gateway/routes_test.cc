// The route table and the OpenAPI document agree: every route the gateway answers is documented
// (with its method), and every documented operation is a route. (The integration test
// test_openapi.py checks that each documented operation answers over HTTP.)
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "gateway/gateway.h"

namespace pilotlight::gateway {
extern const char kOpenApiJson[];
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// OpenAPI cannot spell a greedy segment: {proxy+} is documented as {proxy}.
std::string DocPath(std::string_view pattern) {
  std::string p(pattern);
  if (auto i = p.find("+}"); i != std::string::npos) p.erase(i, 1);
  return p;
}

TEST(Routes, EveryRouteIsDocumentedWithItsMethod) {
  auto doc = nlohmann::json::parse(kOpenApiJson);
  ASSERT_TRUE(doc.contains("paths"));
  for (const auto& r : Gateway::Routes()) {
    std::string path = DocPath(r.pattern);
    ASSERT_TRUE(doc["paths"].contains(path)) << "route " << r.pattern << " is not in openapi.json";
    const auto& item = doc["paths"][path];
    if (r.method == "*") {
      EXPECT_TRUE(item.contains("post") || item.contains("get")) << path;
    } else {
      EXPECT_TRUE(item.contains(Lower(r.method))) << r.method << " " << path << " is not documented";
    }
  }
}

TEST(Routes, EveryDocumentedOperationIsARoute) {
  auto doc = nlohmann::json::parse(kOpenApiJson);
  static const std::set<std::string> kMethods = {"get", "put", "post", "delete", "patch", "head", "options"};
  int operations = 0;
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      if (!kMethods.count(method)) continue;
      ++operations;
      bool found = false;
      for (const auto& r : Gateway::Routes()) {
        if (DocPath(r.pattern) == path && (r.method == "*" || Lower(r.method) == method)) found = true;
      }
      EXPECT_TRUE(found) << method << " " << path << " is documented but the gateway has no such route";
    }
  }
  EXPECT_GT(operations, 30);
}

TEST(Routes, AdminRoutesNeedTheAdminToken) {
  for (const auto& r : Gateway::Routes()) {
    std::string_view p = r.pattern;
    bool admin_path =
        p.substr(0, 7) == "/admin/" || p == "/v1/jobs" || (p.substr(0, 10) == "/v1/events" && p != "/v1/events/s3");
    EXPECT_EQ(admin_path, r.access == RouteAccess::kAdmin) << r.pattern;
  }
}

}  // namespace
}  // namespace pilotlight::gateway
