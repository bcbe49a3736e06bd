// Authenticator: quotas and rate limits hold under concurrent requests, revocation is seen by
// the server's reload, and the token bucket refills at its rate.
#include "auth/authenticator.h"

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace pilotlight::auth {
namespace {
namespace fs = std::filesystem;

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pl-auth-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Authenticator> Make(config::UsagePlan plan) {
    Authenticator::Options o;
    o.key_db = (dir_ / "auth.db").string();
    o.plans[plan.name] = plan;
    o.policies["f"].mode = "api_key";
    auto a = Authenticator::Create(o);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return std::move(a).value();
  }

  fs::path dir_;
};

TEST_F(AuthenticatorTest, DailyQuotaHoldsUnderConcurrentRequests) {
  config::UsagePlan plan;
  plan.name = "basic";
  plan.quota_per_day = 50;
  auto auth = Make(plan);
  auto key = auth->CreateKey("basic", {}, "");
  ASSERT_TRUE(key.ok());
  Credentials c;
  c.api_key = key->key;
  std::atomic<int> ok{0}, quota{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        Decision d = auth->Function("f", c);
        if (d.ok()) ok++;
        if (d.error_type == "quota_exceeded") quota++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 50);
  EXPECT_EQ(quota.load(), 160 - 50);
}

TEST_F(AuthenticatorTest, RevokedKeyIsRefusedAfterAnotherProcessRevokesIt) {
  config::UsagePlan plan;
  plan.name = "basic";
  auto auth = Make(plan);
  auto key = auth->CreateKey("basic", {}, "");
  ASSERT_TRUE(key.ok());
  Credentials c;
  c.api_key = key->key;
  ASSERT_TRUE(auth->Function("f", c).ok());
  // The CLI's connection (another connection to the same file) revokes it.
  auto cli = KeyStore::Open((dir_ / "auth.db").string());
  ASSERT_TRUE(cli.ok());
  ASSERT_TRUE((*cli)->Revoke(key->record.id).ok());
  auth->Refresh();
  Decision d = auth->Function("f", c);
  EXPECT_EQ(d.status.code(), StatusCode::kUnauthenticated) << d.status.ToString();
}

TEST(TokenBucketTest, BurstThenRefillAtRate) {
  TokenBucket b(10, 3);
  auto t0 = std::chrono::steady_clock::now();
  RateInfo info;
  int retry = 0;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.Take(t0, &info, &retry)) << i;
  EXPECT_EQ(info.remaining, 0);
  EXPECT_FALSE(b.Take(t0, &info, &retry));
  EXPECT_GE(retry, 1);
  EXPECT_TRUE(b.Take(t0 + std::chrono::milliseconds(110), &info, &retry));  // 0.1 s at 10/s: one token
  EXPECT_FALSE(b.Take(t0 + std::chrono::milliseconds(110), &info, &retry));
}

}  // namespace
}  // namespace pilotlight::auth
