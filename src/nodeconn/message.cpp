#include "coffer/nodeconn/message.h"

namespace coffer::nodeconn {

Result<Message> make_message(crypto::SecureBuffer text) {
    auto parsed = SecureJson::parse(text);
    if (!parsed) return make_error(Errc::invalid_argument, "message is not JSON");
    const auto* object = parsed->value().if_object();
    if (object == nullptr)
        return make_error(Errc::invalid_argument, "message is not a JSON object");
    const auto* type = object->if_contains("type");
    if (type == nullptr || !type->is_string() || type->get_string().empty() ||
        type->get_string().size() > max_type_chars)
        return make_error(Errc::invalid_argument, "message has no valid \"type\"");
    return Message{std::string(type->get_string()), std::move(text)};
}

}  // namespace coffer::nodeconn
