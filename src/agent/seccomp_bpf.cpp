#include "seccomp_bpf.h"

#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <span>

#include <boost/json.hpp>

#include "coffer/base/unique_fd.h"
#include "coffer/crypto/encoding.h"

namespace coffer::agent {

namespace json = boost::json;

namespace {

Error bad(std::string what) {
    return Error{Errc::invalid_argument, std::move(what)};
}

std::string string_of(const json::object& o, std::string_view key) {
    auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// An errno value given with an action ("defaultErrnoRet", "errnoRet"), or fallback.
int errno_of(const json::object& o, std::string_view key, int fallback) {
    auto* v = o.if_contains(key);
    if (!v || v->is_null()) return fallback;
    if (v->is_int64()) return static_cast<int>(v->as_int64());
    if (v->is_uint64()) return static_cast<int>(v->as_uint64());
    return fallback;
}

std::uint64_t u64_of(const json::object& o, std::string_view key) {
    auto* v = o.if_contains(key);
    if (!v) return 0;
    if (v->is_uint64()) return v->as_uint64();
    if (v->is_int64()) return static_cast<std::uint64_t>(v->as_int64());
    return 0;
}

// The libseccomp action for an OCI action name; 0 with ok false when unknown.
std::uint32_t action_of(std::string_view name, int errno_ret, bool& ok) {
    ok = true;
    if (!name.starts_with("SCMP_ACT_")) {
        ok = false;
        return 0;
    }
    name.remove_prefix(9);
    if (name == "ALLOW") return SCMP_ACT_ALLOW;
    if (name == "ERRNO") return SCMP_ACT_ERRNO(static_cast<std::uint32_t>(errno_ret));
    if (name == "KILL") return SCMP_ACT_KILL;
    if (name == "LOG") return SCMP_ACT_LOG;
    if (name == "TRAP") return SCMP_ACT_TRAP;
    if (name == "TRACE") return SCMP_ACT_TRACE(static_cast<std::uint32_t>(errno_ret));
    if (name == "KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
    if (name == "KILL_THREAD") return SCMP_ACT_KILL_THREAD;
    ok = false;
    return 0;
}

std::optional<scmp_compare> operator_of(std::string_view name) {
    static constexpr std::pair<std::string_view, scmp_compare> ops[] = {
        {"SCMP_CMP_NE", SCMP_CMP_NE},
        {"SCMP_CMP_LT", SCMP_CMP_LT},
        {"SCMP_CMP_LE", SCMP_CMP_LE},
        {"SCMP_CMP_EQ", SCMP_CMP_EQ},
        {"SCMP_CMP_GE", SCMP_CMP_GE},
        {"SCMP_CMP_GT", SCMP_CMP_GT},
        {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ}};
    for (const auto& [n, op] : ops)
        if (n == name) return op;
    return std::nullopt;
}

struct ReleaseFilter {
    void operator()(void* ctx) const noexcept { seccomp_release(ctx); }
};

// Adds one rule list entry, as crun does: an argument index given twice becomes one rule per
// comparison, otherwise the comparisons go into one rule.
Result<void> add_rule(scmp_filter_ctx ctx, std::uint32_t action, int syscall,
                      const json::array& args) {
    std::array<scmp_arg_cmp, 6> cmp{};
    std::size_t n = std::min<std::size_t>(args.size(), 6);
    std::array<unsigned, 6> count{};
    bool repeated = false;
    for (std::size_t k = 0; k < n; ++k) {
        if (!args[k].is_object()) return bad("seccomp argument rule must be an object");
        auto index = u64_of(args[k].as_object(), "index");
        if (index >= 6) return bad("seccomp argument index must be below 6");
        if (++count[index] > 1) {
            repeated = true;
            break;
        }
    }
    for (std::size_t k = 0; k < n; ++k) {
        const auto& a = args[k].as_object();
        auto op = operator_of(string_of(a, "op"));
        if (!op) return bad(fmt::format("unknown seccomp operator {}", string_of(a, "op")));
        cmp[k] = scmp_arg_cmp{static_cast<unsigned>(u64_of(a, "index")), *op, u64_of(a, "value"),
                              u64_of(a, "valueTwo")};
    }
    int rc = 0;
    if (!repeated) {
        rc = seccomp_rule_add_array(ctx, action, syscall, static_cast<unsigned>(n), cmp.data());
    } else {
        for (std::size_t k = 0; k < n && rc == 0; ++k)
            rc = seccomp_rule_add_array(ctx, action, syscall, 1, &cmp[k]);
    }
    if (rc < 0)
        return make_error(Errc::internal, fmt::format("seccomp rule: {}", std::strerror(-rc)));
    return {};
}

}  // namespace

Result<std::string> compile_seccomp_bpf(const json::object& seccomp) {
    bool ok = false;
    auto default_name = string_of(seccomp, "defaultAction");
    auto default_action = action_of(default_name, errno_of(seccomp, "defaultErrnoRet", EPERM), ok);
    if (!ok) return bad(fmt::format("unknown seccomp action {}", default_name));
    std::unique_ptr<void, ReleaseFilter> ctx(seccomp_init(default_action));
    if (!ctx) return make_error(Errc::internal, "seccomp_init failed");

    if (auto* arches = seccomp.if_contains("architectures"); arches && arches->is_array()) {
        for (const auto& a : arches->as_array()) {
            if (!a.is_string()) return bad("seccomp architecture must be a string");
            std::string name(a.as_string());
            if (name.starts_with("SCMP_ARCH_")) name.erase(0, 10);
            std::transform(name.begin(), name.end(), name.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            auto token = seccomp_arch_resolve_name(name.c_str());
            if (token == 0) return bad(fmt::format("unknown seccomp architecture {}", name));
            int rc = seccomp_arch_add(ctx.get(), token);
            if (rc < 0 && rc != -EEXIST)
                return make_error(Errc::internal,
                                  fmt::format("seccomp architecture: {}", std::strerror(-rc)));
        }
    }

    if (auto* rules = seccomp.if_contains("syscalls"); rules && rules->is_array()) {
        for (const auto& r : rules->as_array()) {
            if (!r.is_object()) return bad("seccomp rule must be an object");
            const auto& rule = r.as_object();
            auto name = string_of(rule, "action");
            auto action = action_of(name, errno_of(rule, "errnoRet", EPERM), ok);
            if (!ok) return bad(fmt::format("unknown seccomp action {}", name));
            if (action == default_action) continue;
            auto* names = rule.if_contains("names");
            if (!names || !names->is_array()) continue;
            const json::array* args = nullptr;
            if (auto* a = rule.if_contains("args"); a && a->is_array()) args = &a->as_array();
            for (const auto& n : names->as_array()) {
                if (!n.is_string()) return bad("seccomp syscall name must be a string");
                std::string syscall_name(n.as_string());
                int syscall = seccomp_syscall_resolve_name(syscall_name.c_str());
                if (syscall == __NR_SCMP_ERROR)
                    continue;  // unknown to this libseccomp: as crun, ignored
                if (!args) {
                    if (int rc = seccomp_rule_add(ctx.get(), action, syscall, 0); rc < 0)
                        return make_error(
                            Errc::internal,
                            fmt::format("seccomp rule {}: {}", syscall_name, std::strerror(-rc)));
                } else if (auto added = add_rule(ctx.get(), action, syscall, *args); !added) {
                    return std::move(added).error();
                }
            }
        }
    }

    UniqueFd out(::memfd_create("coffer-seccomp", MFD_CLOEXEC));
    if (!out)
        return make_error(Errc::internal, fmt::format("memfd_create: {}", std::strerror(errno)));
    if (int rc = seccomp_export_bpf(ctx.get(), out.get()); rc < 0)
        return make_error(Errc::internal,
                          fmt::format("seccomp_export_bpf: {}", std::strerror(-rc)));
    auto size = ::lseek(out.get(), 0, SEEK_END);
    if (size < 0) return make_error(Errc::internal, "seccomp program: cannot size it");
    std::string program(static_cast<std::size_t>(size), '\0');
    if (::pread(out.get(), program.data(), program.size(), 0) != size)
        return make_error(Errc::internal, "seccomp program: short read");
    return program;
}

Result<std::string> SeccompPrograms::base64_for(const json::object& seccomp) {
    auto key = json::serialize(seccomp);
    {
        std::lock_guard g(mu_);
        if (auto it = by_section_.find(key); it != by_section_.end()) return it->second;
    }
    auto program = compile_seccomp_bpf(seccomp);
    if (!program) return std::move(program).error();
    auto encoded = crypto::base64_encode(
        std::span(reinterpret_cast<const std::uint8_t*>(program->data()), program->size()));
    std::lock_guard g(mu_);
    return by_section_.emplace(std::move(key), std::move(encoded)).first->second;
}

}  // namespace coffer::agent
