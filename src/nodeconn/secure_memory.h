// Secure memory for the node port: connection buffers, and JSON storage for join requests.
#pragma once

#include "coffer/crypto/secure_allocator.h"
#include "coffer/model/secure_json.h"

namespace coffer::nodeconn {

template <typename T>
using SecureAllocator = crypto::SecureAllocator<T>;

using model::secure_storage;

}  // namespace coffer::nodeconn
