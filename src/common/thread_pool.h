// ThreadPool: a fixed set of threads running posted tasks in FIFO order.
// Post() is thread-safe. Shutdown() (also run by the destructor) runs every task already
// posted and joins; a Post() once no thread is left runs the task inline on the caller, so two
// pools that post to each other can be shut down in either order without stranding a task.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pilotlight {

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : live_(threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Loop(); });
  }
  ~ThreadPool() { Shutdown(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (live_ > 0) {
        tasks_.push_back(std::move(task));
        cv_.notify_one();
        return;
      }
    }
    task();  // every thread has exited: run it here rather than strand it
  }

  void Shutdown() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [this] { return stop_ || !tasks_.empty(); });
        if (tasks_.empty()) {
          // Leaving: the last thread out makes later posts run inline.
          --live_;
          return;
        }
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mu_)
  bool stop_ = false;                        // GUARDED_BY(mu_)
  int live_;                                 // GUARDED_BY(mu_) threads still looping
  std::vector<std::thread> workers_;
};

}  // namespace pilotlight
