// SHA-256 of files and buffers (OpenSSL EVP), as lowercase hex.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace pilotlight {

std::string Sha256Hex(std::string_view data);
// Streams the file; NotFound if it cannot be opened, DataLoss on a read error.
StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace pilotlight
