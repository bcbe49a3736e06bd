// SHA-256 of files and buffers (OpenSSL EVP), as lowercase hex.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace pilotlight {

std::string Sha256Hex(std::string_view data);
// Streams the file; NotFound if it cannot be opened, DataLoss on a read error.
StatusOr<std::string> Sha256File(const std::string& path);

// Incremental SHA-256 (for hashing a download while it streams). Not thread-safe.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;
  void Update(std::string_view data);
  void Reset();
  // Lowercase hex of everything since construction or the last Reset(); then resets.
  std::string HexDigest();

 private:
  void* ctx_;  // EVP_MD_CTX
};

}  // namespace pilotlight
