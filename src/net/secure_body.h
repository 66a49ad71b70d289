// Beast glue: an HTTP body stored in secure memory (read into for requests, written from for
// responses), and a connection read buffer allocated there.
// Internal to net: includes Beast.
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/optional.hpp>

#include <cstring>
#include <utility>

#include "coffer/crypto/secure_allocator.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::net::detail {

using SecureFlatBuffer = boost::beast::basic_flat_buffer<crypto::SecureAllocator<char>>;

struct SecureBody {
    struct value_type {
        crypto::SecureBuffer buffer;  // capacity
        std::size_t size = 0;         // bytes used
    };

    static std::uint64_t size(const value_type& v) { return v.size; }

    class reader {
      public:
        template <bool isRequest, class Fields>
        reader(boost::beast::http::header<isRequest, Fields>&, value_type& body) : body_(body) {}

        void init(const boost::optional<std::uint64_t>& length, boost::system::error_code& ec) {
            ec = {};
            body_.size = 0;
            // The parser has already refused lengths over its body limit.
            body_.buffer = crypto::SecureBuffer(length ? static_cast<std::size_t>(*length) : 4096);
        }

        template <class ConstBufferSequence>
        std::size_t put(const ConstBufferSequence& buffers, boost::system::error_code& ec) {
            ec = {};
            std::size_t n = boost::asio::buffer_size(buffers);
            if (body_.size + n > body_.buffer.size()) {
                // Chunked: grow into a fresh secure buffer; the old one is wiped when freed.
                std::size_t cap = std::max(body_.buffer.size() * 2, body_.size + n);
                crypto::SecureBuffer bigger(cap);
                if (body_.size) std::memcpy(bigger.data(), body_.buffer.data(), body_.size);
                body_.buffer = std::move(bigger);
            }
            body_.size += boost::asio::buffer_copy(
                boost::asio::buffer(body_.buffer.data() + body_.size, n), buffers);
            return n;
        }

        void finish(boost::system::error_code& ec) {
            ec = {};
            body_.buffer.truncate(body_.size);
        }

      private:
        value_type& body_;
    };

    // Hands the serializer the secure buffer itself: the bytes go from it to the socket with no
    // copy in user space (the header is serialised apart from the body).
    class writer {
      public:
        using const_buffers_type = boost::asio::const_buffer;

        template <bool isRequest, class Fields>
        writer(const boost::beast::http::header<isRequest, Fields>&, const value_type& body)
            : body_(body) {}

        void init(boost::system::error_code& ec) { ec = {}; }

        boost::optional<std::pair<const_buffers_type, bool>> get(boost::system::error_code& ec) {
            ec = {};
            if (sent_ || body_.size == 0) return boost::none;
            sent_ = true;
            return std::pair{const_buffers_type(body_.buffer.data(), body_.size), false};
        }

      private:
        const value_type& body_;
        bool sent_ = false;
    };
};

}  // namespace coffer::net::detail
