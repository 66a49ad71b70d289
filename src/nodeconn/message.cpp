#include "coffer/nodeconn/message.h"

#include <boost/json/parser.hpp>
#include <boost/json/serializer.hpp>

#include "secure_memory.h"

namespace coffer::nodeconn {
namespace json = boost::json;

namespace {

std::string_view view(const crypto::SecureBuffer& b) noexcept {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace

json::storage_ptr secure_storage() {
    static SecureMemoryResource upstream;
    return json::make_shared_resource<json::monotonic_resource>(std::size_t{1024},
                                                                json::storage_ptr(&upstream));
}

SecureJson::SecureJson() : storage_(secure_storage()), value_(storage_) {}

Result<SecureJson> SecureJson::parse(const crypto::SecureBuffer& text) {
    SecureJson out;
    // The parser's temporary storage (partial strings, the value stack) is secure memory too.
    json::parser parser(out.storage_);
    parser.reset(out.storage_);
    json::error_code ec;
    parser.write(view(text), ec);
    if (ec) return make_error(Errc::invalid_argument, "message is not JSON");
    out.value_ = parser.release();
    return out;
}

Result<Message> make_message(crypto::SecureBuffer text) {
    auto parsed = SecureJson::parse(text);
    if (!parsed) return std::move(parsed).error();
    const auto* object = parsed->value().if_object();
    if (object == nullptr)
        return make_error(Errc::invalid_argument, "message is not a JSON object");
    const auto* type = object->if_contains("type");
    if (type == nullptr || !type->is_string() || type->get_string().empty() ||
        type->get_string().size() > max_type_chars)
        return make_error(Errc::invalid_argument, "message has no valid \"type\"");
    return Message{std::string(type->get_string()), std::move(text)};
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

}  // namespace coffer::nodeconn
