// Errors. Expected outcomes (not found, invalid input, conflicts) travel as values in Result<T>;
// failures of the system (a syscall, a corrupted store) are thrown as SystemError/Error and carry
// what was being done. Each layer adds context on the way up; one place maps codes to HTTP.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace coffer {

enum class Errc {
    invalid_argument,   // 400
    unauthenticated,    // 401
    permission_denied,  // 403
    not_found,          // 404
    already_exists,     // 409
    conflict,           // 409: optimistic concurrency, state does not allow it
    too_large,          // 413
    locked,             // 503: the store is sealed until unlocked
    unavailable,        // 503
    internal,           // 500
};

// HTTP status a code maps to in the API.
int http_status(Errc code) noexcept;

struct Error {
    Errc code = Errc::internal;
    std::string message;

    // Prefixes context ("open store: <message>") and returns *this.
    Error& context(std::string_view what) {
        message = fmt::format("{}: {}", what, message);
        return *this;
    }
};

inline Error make_error(Errc code, std::string message) {
    return Error{code, std::move(message)};
}

// The error as an exception, for failures that are not expected outcomes.
class ErrorException : public std::runtime_error {
  public:
    explicit ErrorException(Error e) : std::runtime_error(e.message), error_(std::move(e)) {}
    const Error& error() const noexcept { return error_; }

  private:
    Error error_;
};

// A failed syscall: "what: strerror(errno)".
class SystemError : public std::runtime_error {
  public:
    SystemError(int err, std::string_view what);
    int code() const noexcept { return errno_; }

  private:
    int errno_;
};

// Throws SystemError with the current errno.
[[noreturn]] void throw_errno(std::string_view what);

template <typename T>
class [[nodiscard]] Result {
  public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error error) : v_(std::move(error)) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & { return checked(); }
    const T& value() const& { return const_cast<Result*>(this)->checked(); }
    T&& value() && { return std::move(checked()); }
    T* operator->() { return &checked(); }
    const T* operator->() const { return &const_cast<Result*>(this)->checked(); }
    T& operator*() & { return checked(); }
    const T& operator*() const& { return const_cast<Result*>(this)->checked(); }

    const Error& error() const& { return std::get<1>(v_); }
    Error&& error() && { return std::get<1>(std::move(v_)); }

  private:
    T& checked() {
        if (!ok()) throw ErrorException(std::get<1>(v_));
        return std::get<0>(v_);
    }
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
  public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), ok_(false) {}

    bool ok() const noexcept { return ok_; }
    explicit operator bool() const noexcept { return ok_; }
    void value() const {
        if (!ok_) throw ErrorException(error_);
    }
    const Error& error() const& { return error_; }
    Error&& error() && { return std::move(error_); }

  private:
    Error error_;
    bool ok_ = true;
};

}  // namespace coffer
