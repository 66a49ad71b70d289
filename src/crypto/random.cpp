#include "coffer/crypto/random.h"

#include <pthread.h>
#include <sodium.h>

#include <array>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "coffer/crypto/encoding.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::crypto {

void random_bytes(std::span<std::uint8_t> out) {
    init();
    ::randombytes_buf(out.data(), out.size());
}

namespace {

// A thread's store of public randomness: one getrandom call fills it, each use takes (and wipes)
// the next bytes.
struct PublicPool {
    std::array<std::uint8_t, 512> bytes{};
    std::size_t used = bytes.size();

    ~PublicPool() { drop(); }

    void drop() noexcept {
        ::sodium_memzero(bytes.data(), bytes.size());
        used = bytes.size();
    }
};

thread_local PublicPool public_pool;

// A forked child would hand out its parent's next bytes again: it starts with an empty pool.
void drop_in_child() noexcept {
    public_pool.drop();
}

std::once_flag fork_handler_once;

}  // namespace

void public_random_bytes(std::span<std::uint8_t> out) {
    auto& pool = public_pool;
    if (out.size() > pool.bytes.size() / 8) return random_bytes(out);
    std::call_once(fork_handler_once, [] {
        if (::pthread_atfork(nullptr, nullptr, drop_in_child) != 0)
            throw std::runtime_error("public_random_bytes: pthread_atfork failed");
    });
    if (pool.bytes.size() - pool.used < out.size()) {
        random_bytes(pool.bytes);
        pool.used = 0;
    }
    std::memcpy(out.data(), pool.bytes.data() + pool.used, out.size());
    ::sodium_memzero(pool.bytes.data() + pool.used, out.size());
    pool.used += out.size();
}

std::uint32_t random_uniform(std::uint32_t upper) {
    init();
    return ::randombytes_uniform(upper);
}

std::string random_base36(std::size_t bytes, std::size_t width) {
    std::vector<std::uint8_t> n(bytes);
    public_random_bytes(n);
    return base36_encode(n, width);
}

std::string random_id() {
    // 17 bytes (136 bits) rendered in base 36 need 27 digits; keep the low 25 (about 129 bits).
    return random_base36(17, 25);
}

std::string derived_id(std::string_view context, std::string_view value) {
    if (context.size() < crypto_generichash_KEYBYTES_MIN ||
        context.size() > crypto_generichash_KEYBYTES_MAX)
        throw std::invalid_argument("derived_id: the context must be 16 to 64 bytes");
    init();
    std::array<std::uint8_t, 17> out{};
    ::crypto_generichash(out.data(), out.size(),
                         reinterpret_cast<const unsigned char*>(value.data()), value.size(),
                         reinterpret_cast<const unsigned char*>(context.data()), context.size());
    return base36_encode(out, 25);
}

}  // namespace coffer::crypto
