// What coffer does with every field of a service spec (the Docker Engine API's ServiceSpec): acts
// on it, refuses it, or accepts it with a warning. The API checks each request against this table
// before anything else, so a field cannot be accepted and silently ignored, and a field the table
// does not know is refused.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/fwd.hpp>

#include "coffer/base/error.h"

namespace coffer::model {

enum class FieldUse {
    acted,    // coffer does what the field asks
    refused,  // a request that sets it is refused (400), naming the field and why
    warned,   // accepted; the answer's Warnings name the field and what coffer does instead
};

struct SpecField {
    // Dotted path from the spec's root; "[]" stands for every item of an array:
    // "TaskTemplate.ContainerSpec.Mounts[].TmpfsOptions.SizeBytes". A field whose value is an
    // object with free keys (Labels, Sysctls, ...) is one entry: its keys are not walked.
    std::string_view path;
    FieldUse use;
    // refused or warned: why, and what coffer does instead. acted: empty, or how it differs.
    std::string_view note = {};
    // A value, as compact JSON, that asks for nothing beyond the default (for example "vip" for
    // EndpointSpec.Mode): it is accepted whatever use says. null, false, 0, "", [] and {} always
    // ask for nothing.
    std::string_view inert = {};
};

// Every field, in the order of Docker's ServiceSpec.
std::span<const SpecField> service_spec_fields() noexcept;
// coffer's own fields of a service spec (CofferRegistryAuth), which Docker's clients never send.
std::span<const SpecField> coffer_spec_fields() noexcept;
// Docker's or coffer's.
const SpecField* find_spec_field(std::string_view path) noexcept;

// Walks a service spec as a request gave it. invalid_argument naming the first field that is
// refused or unknown; otherwise the warnings for the warned fields it sets (one per field).
Result<std::vector<std::string>> check_service_spec_fields(const boost::json::value& spec);

}  // namespace coffer::model
