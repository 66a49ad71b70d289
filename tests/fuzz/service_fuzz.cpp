// Parsers of untrusted service, node and task JSON (API bodies and stored records), and the
// constraint and duration parsers behind them.
#include <cstdint>
#include <string_view>

#include "coffer/model/json.h"
#include "coffer/model/service_json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    if (auto v = coffer::model::parse_json(text); v.ok()) {
        if (auto s = coffer::model::service_spec_from_json(*v); s.ok()) {
            (void)coffer::model::validate_service_spec(*s);
            (void)coffer::model::spec_json(*s, true);
        }
        (void)coffer::model::service_from_json(*v);
        (void)coffer::model::task_from_json(*v);
        (void)coffer::model::node_from_json(*v);
        (void)coffer::model::node_spec_from_json(*v);
    }
    (void)coffer::model::parse_constraint(text);
    (void)coffer::model::parse_go_duration(text);
    return 0;
}
