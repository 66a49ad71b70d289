#include "json_document.h"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parser.hpp>

#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace coffer::model::detail {

namespace json = boost::json;
using json::error_code;
using json::string_view;

namespace {

// Counts the members the text gives each object, in the order the objects begin, and keeps
// nothing of the text. The object Boost.JSON builds from n members holds fewer when a key came
// twice (the last value replaces the first), which is how duplicates are found without a copy
// of any key or value. A pass of its own after the parse, so that a secure document is parsed
// straight into its own value (SecureJson::parse): one parsed elsewhere and moved in left
// delivered secrets in the agent's memory after they were dropped.
class Counter {
  public:
    static constexpr std::size_t max_object_size = json::object::max_size();
    static constexpr std::size_t max_array_size = json::array::max_size();
    static constexpr std::size_t max_key_size = json::string::max_size();
    static constexpr std::size_t max_string_size = json::string::max_size();

    Counter() {
        members.reserve(64);
        open.reserve(16);
    }

    std::vector<std::size_t> members;  // per object, in document order
    std::vector<std::size_t> open;     // indices into members of the objects not yet closed

    bool on_document_begin(error_code&) { return true; }
    bool on_document_end(error_code&) { return true; }
    bool on_object_begin(error_code&) {
        open.push_back(members.size());
        members.push_back(0);
        return true;
    }
    bool on_object_end(std::size_t n, error_code&) {
        members[open.back()] = n;
        open.pop_back();
        return true;
    }
    bool on_array_begin(error_code&) { return true; }
    bool on_array_end(std::size_t, error_code&) { return true; }
    bool on_key_part(string_view, std::size_t, error_code&) { return true; }
    bool on_key(string_view, std::size_t, error_code&) { return true; }
    bool on_string_part(string_view, std::size_t, error_code&) { return true; }
    bool on_string(string_view, std::size_t, error_code&) { return true; }
    bool on_number_part(string_view, error_code&) { return true; }
    bool on_int64(std::int64_t, string_view, error_code&) { return true; }
    bool on_uint64(std::uint64_t, string_view, error_code&) { return true; }
    bool on_double(double, string_view, error_code&) { return true; }
    bool on_bool(bool, error_code&) { return true; }
    bool on_null(error_code&) { return true; }
    bool on_comment_part(string_view, error_code&) { return true; }
    bool on_comment(string_view, error_code&) { return true; }
};

// A second reading of a refused document, to name the key that came twice in the given object
// (the index of Builder::members). Stops at that key.
class KeyFinder {
  public:
    static constexpr std::size_t max_object_size = json::object::max_size();
    static constexpr std::size_t max_array_size = json::array::max_size();
    static constexpr std::size_t max_key_size = json::string::max_size();
    static constexpr std::size_t max_string_size = json::string::max_size();

    explicit KeyFinder(std::size_t object) : object_(object) {}

    std::optional<std::string> duplicate;

    bool on_document_begin(error_code&) { return true; }
    bool on_document_end(error_code&) { return true; }
    bool on_object_begin(error_code&) {
        open_.push_back(objects_++);
        return true;
    }
    bool on_object_end(std::size_t, error_code&) {
        open_.pop_back();
        return true;
    }
    bool on_array_begin(error_code&) { return true; }
    bool on_array_end(std::size_t, error_code&) { return true; }
    bool on_key_part(string_view s, std::size_t, error_code&) {
        if (open_.back() == object_) key_.append(s.data(), s.size());
        return true;
    }
    bool on_key(string_view s, std::size_t, error_code& ec) {
        if (open_.back() != object_) return true;
        key_.append(s.data(), s.size());
        for (const auto& k : keys_)
            if (k == key_) {
                duplicate = std::move(key_);
                ec = json::make_error_code(json::error::syntax);  // stop here
                return false;
            }
        keys_.push_back(std::move(key_));
        key_.clear();
        return true;
    }
    bool on_string_part(string_view, std::size_t, error_code&) { return true; }
    bool on_string(string_view, std::size_t, error_code&) { return true; }
    bool on_number_part(string_view, error_code&) { return true; }
    bool on_int64(std::int64_t, string_view, error_code&) { return true; }
    bool on_uint64(std::uint64_t, string_view, error_code&) { return true; }
    bool on_double(double, string_view, error_code&) { return true; }
    bool on_bool(bool, error_code&) { return true; }
    bool on_null(error_code&) { return true; }
    bool on_comment_part(string_view, error_code&) { return true; }
    bool on_comment(string_view, error_code&) { return true; }

  private:
    std::size_t object_;
    std::size_t objects_ = 0;
    std::vector<std::size_t> open_;
    std::vector<std::string> keys_;
    std::string key_;
};

// The first object, in document order, that holds fewer members than the text gave it. Objects
// before it kept every member in order, so the walk and the parse count objects alike up to it.
std::optional<std::size_t> first_merged(const json::value& v,
                                        const std::vector<std::size_t>& members,
                                        std::size_t& next) {
    if (v.is_object()) {
        auto index = next++;
        if (index >= members.size() || v.get_object().size() != members[index]) return index;
        for (const auto& member : v.get_object())
            if (member.value().is_structured())
                if (auto found = first_merged(member.value(), members, next)) return found;
    } else if (v.is_array()) {
        for (const auto& element : v.get_array())
            if (element.is_structured())
                if (auto found = first_merged(element, members, next)) return found;
    }
    return std::nullopt;
}

// A key as it may appear in a message: printable ASCII, at most 64 characters.
std::string printable(std::string_view key) {
    std::string out;
    for (unsigned char c : key.substr(0, 64)) {
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            out.push_back(static_cast<char>(c));
        else
            out += fmt::format("\\x{:02x}", c);
    }
    if (key.size() > 64) out += "...";
    return out;
}

Error duplicate_error(std::string_view text, std::size_t object, unsigned max_depth) {
    json::parse_options opts;
    opts.max_depth = max_depth;
    json::basic_parser<KeyFinder> finder(opts, object);
    error_code ec;
    finder.write_some(false, text.data(), text.size(), ec);
    auto& found = finder.handler().duplicate;
    if (!found)
        return make_error(Errc::invalid_argument,
                          "malformed JSON: a key appears twice in an object");
    return make_error(
        Errc::invalid_argument,
        fmt::format("malformed JSON: key \"{}\" appears twice in an object", printable(*found)));
}

}  // namespace

Result<void> check_keys_once(std::string_view text, const json::value& value, unsigned max_depth) {
    json::parse_options opts;
    opts.max_depth = max_depth;
    json::basic_parser<Counter> counter(opts);
    error_code ec;
    counter.write_some(false, text.data(), text.size(), ec);
    if (ec)
        return make_error(Errc::invalid_argument, fmt::format("malformed JSON: {}", ec.message()));
    std::size_t next = 0;
    if (auto merged = first_merged(value, counter.handler().members, next))
        return duplicate_error(text, *merged, max_depth);
    return {};
}

Result<json::value> parse_document(std::string_view text, json::storage_ptr result,
                                   std::optional<json::storage_ptr> temporaries,
                                   unsigned max_depth) {
    json::parse_options opts;
    opts.max_depth = max_depth;
    // Without a storage for the temporaries, they start on the stack (as json::parse does).
    unsigned char stack[BOOST_JSON_STACK_BUFFER_SIZE];
    std::optional<json::parser> parser;
    if (temporaries)
        parser.emplace(std::move(*temporaries), opts);
    else
        parser.emplace(json::storage_ptr(), opts, stack, sizeof(stack));
    parser->reset(std::move(result));
    error_code ec;
    parser->write(text.data(), text.size(), ec);
    if (ec)
        return make_error(Errc::invalid_argument, fmt::format("malformed JSON: {}", ec.message()));
    auto value = parser->release();
    if (auto ok = check_keys_once(text, value, max_depth); !ok) return std::move(ok).error();
    return value;
}

}  // namespace coffer::model::detail
