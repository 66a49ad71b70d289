#include "request_json.h"

namespace coffer::manager {

namespace json = boost::json;

Result<std::unique_ptr<SecureJson>> SecureJson::parse(std::string_view body) {
    if (body.empty()) return make_error(Errc::invalid_argument, "request body is empty");
    std::unique_ptr<SecureJson> out(new SecureJson());
    // A parsed tree is never larger than a few times its text; beyond the arena, allocation
    // fails (null upstream) rather than spilling onto the ordinary heap.
    std::size_t temp = 4096;
    out->arena_ = crypto::SecureBuffer(body.size() * 3 + 16384 + temp);
    out->resource_ = std::make_unique<json::monotonic_resource>(
        out->arena_.data() + temp, out->arena_.size() - temp, json::get_null_resource());
    json::parse_options opts;
    opts.max_depth = 32;
    try {
        json::parser p(json::storage_ptr(out->resource_.get()), opts, out->arena_.data(), temp);
        boost::system::error_code ec;
        p.write(body.data(), body.size(), ec);
        if (ec)
            return make_error(Errc::invalid_argument,
                              fmt::format("malformed request body: {}", ec.message()));
        out->value_ = p.release();
    } catch (const std::bad_alloc&) {
        return make_error(Errc::invalid_argument, "request body is too complex");
    }
    if (!out->value_.is_object())
        return make_error(Errc::invalid_argument, "request body must be a JSON object");
    return out;
}

}  // namespace coffer::manager
