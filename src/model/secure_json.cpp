#include "coffer/model/secure_json.h"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parser.hpp>
#include <boost/json/serializer.hpp>

#include <algorithm>

#include <fmt/format.h>

#include "coffer/crypto/secure_allocator.h"
#include "json_document.h"

namespace coffer::model {

namespace json = boost::json;

namespace {

// The upstream of each document's monotonic storage, so few (large) blocks are requested.
// Sizes are rounded up to the alignment the pool gives (its blocks are powers of two).
class SecureMemoryResource final : public json::memory_resource {
    static std::size_t rounded(std::size_t bytes, std::size_t align) noexcept {
        if (align < alignof(std::max_align_t)) align = alignof(std::max_align_t);
        return (bytes + align - 1) / align * align;
    }
    void* do_allocate(std::size_t bytes, std::size_t align) override {
        return crypto::secure_allocate(rounded(bytes, align));
    }
    void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
        crypto::secure_deallocate(p, rounded(bytes, align));
    }
    bool do_is_equal(const memory_resource& other) const noexcept override {
        return this == &other;
    }
};

}  // namespace

json::storage_ptr secure_storage() {
    static SecureMemoryResource upstream;
    return json::make_shared_resource<json::monotonic_resource>(std::size_t{1024},
                                                                json::storage_ptr(&upstream));
}

SecureJson::SecureJson() : storage_(secure_storage()), value_(storage_) {}

Result<SecureJson> SecureJson::parse(std::string_view text) {
    SecureJson out;
    // The parser's temporary storage (partial strings, the value stack) is secure memory too.
    json::parse_options opts;
    opts.max_depth = 32;
    json::parser parser(out.storage_, opts);
    parser.reset(out.storage_);
    json::error_code ec;
    parser.write(text.data(), text.size(), ec);
    if (ec)
        return make_error(Errc::invalid_argument, fmt::format("malformed JSON: {}", ec.message()));
    out.value_ = parser.release();
    if (auto ok = detail::check_keys_once(text, out.value_, 32); !ok) return std::move(ok).error();
    return out;
}

Result<SecureJson> SecureJson::parse(const crypto::SecureBuffer& text) {
    return parse(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()));
}

crypto::SecureBuffer serialize_secure(const json::value& value) {
    json::serializer sr;
    sr.reset(&value);
    crypto::SecureBuffer out(256);
    std::size_t used = 0;
    while (!sr.done()) {
        if (used == out.size()) {
            crypto::SecureBuffer bigger(out.size() * 2);
            std::copy(out.data(), out.data() + used, bigger.data());
            out = std::move(bigger);
        }
        auto chunk = sr.read(reinterpret_cast<char*>(out.data()) + used, out.size() - used);
        used += chunk.size();
    }
    out.truncate(used);
    return out;
}

}  // namespace coffer::model
