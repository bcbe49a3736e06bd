// FUZZ_CHECK: a property a fuzz target asserts about the code under test. A failure prints the
// condition and a message and aborts, which libFuzzer reports as a crash (with the input saved)
// and the corpus replay reports as a failed test. Independent of NDEBUG.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#define FUZZ_CHECK(cond, msg)                                                                                          \
  do {                                                                                                                 \
    if (!(cond)) {                                                                                                     \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", __FILE__, __LINE__, #cond, std::string(msg).c_str()); \
      std::abort();                                                                                                    \
    }                                                                                                                  \
  } while (0)
