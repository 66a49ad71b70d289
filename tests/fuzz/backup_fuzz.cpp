// Backup files as a restore reads them: any bytes must be refused cleanly or parse into views
// that stay inside the input, never crash.
#include <cstdint>
#include <span>

#include "coffer/store/backup.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::span<const std::uint8_t> file(data, size);
    auto parsed = coffer::store::parse_backup(file);
    if (!parsed) return 0;
    auto inside = [&](std::string_view v) {
        auto* p = reinterpret_cast<const std::uint8_t*>(v.data());
        if (p < data || p + v.size() > data + size) __builtin_trap();
    };
    for (const auto& r : parsed->key_records) inside(r.sealed);
    for (const auto& r : parsed->records) {
        inside(r.key);
        inside(r.sealed);
    }
    if (parsed->authenticated.size() + parsed->mac.size() != size) __builtin_trap();
    return 0;
}
