#include "config/config.h"

#include <gtest/gtest.h>

namespace pilotlight::config {
namespace {

TEST(Config, IssueExample_ParsesWithEveryKey) {
  auto c = ParseConfig(R"(
server: {listen: 127.0.0.1:8080, max_body_bytes: 6291456}
store: file://./models
default_function: digits
functions:
  digits:
    model: digits
    version: current
    min_instances: 1
    max_instances: 2
    concurrency: 4
    idle_timeout: 60s
    max_queue: 64
    queue_timeout: 2s
)",
                       "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const auto& f = c->functions.at("digits");
  EXPECT_EQ(f.min_instances, 1);
  EXPECT_EQ(f.max_instances, 2);
  EXPECT_EQ(f.concurrency, 4);
  EXPECT_EQ(f.idle_timeout, std::chrono::seconds(60));
  EXPECT_EQ(f.queue_timeout, std::chrono::seconds(2));
  EXPECT_EQ(c->server.max_body_bytes, 6291456u);
  EXPECT_TRUE(c->functions_listed);
}

TEST(Config, EmptyFunctionEntry_TakesDefaults) {
  auto c = ParseConfig("functions:\n  tiny:\n", "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->functions.at("tiny").model, "tiny");
  EXPECT_EQ(c->functions.at("tiny").version, "current");
}

struct BadCase {
  const char* yaml;
  const char* must_mention;
};

class ConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrors, NameTheKeyAndProblem) {
  auto c = ParseConfig(GetParam().yaml, "bad.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(GetParam().must_mention), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("bad.yaml"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    All, ConfigErrors,
    ::testing::Values(BadCase{"functions:\n  d:\n    max_instance: 2\n", "functions.d.max_instance: unknown key"},
                      BadCase{"functions:\n  d:\n    max_instances: -1\n", "functions.d.max_instances"},
                      BadCase{"functions:\n  d:\n    idle_timeout: banana\n", "functions.d.idle_timeout"},
                      BadCase{"functions:\n  d:\n    concurrency: lots\n", "must be an integer"},
                      BadCase{"functions:\n  d:\n    min_instances: 3\n    max_instances: 2\n", "must not exceed"},
                      BadCase{"server:\n  max_body_bytes: 0\n", "server.max_body_bytes"},
                      BadCase{"serverr: {}\n", "serverr: unknown key"},
                      BadCase{"default_function: x\nfunctions:\n  d: {}\n", "default_function"},
                      BadCase{"functions:\n  d:\n    routes: [nope]\n", "functions.d.routes"},
                      BadCase{"functions:\n  d:\n    version: ../x\n", "functions.d.version"},
                      BadCase{"functions:\n  d:\n    model: a/b\n", "functions.d.model"},
                      BadCase{"functions: [a, b]\n", "functions"}, BadCase{"server: {listen: 8080}\n", "server.listen"},
                      BadCase{"a: [\n", "not valid YAML"}));

}  // namespace
}  // namespace pilotlight::config
