// Small POSIX file helpers shared by the store, the cache and the event store.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace pilotlight {

// fsync of a file, or of a directory (to make a rename in it durable). Internal on failure.
Status FsyncPath(const std::string& path, bool directory);
// Writes all of `data` to `fd` (retrying short writes and EINTR). Unavailable naming `what`.
Status WriteAll(int fd, std::string_view data, const std::string& what);

}  // namespace pilotlight
