// Every decoder of the node protocol, on the same bytes: whatever a node or a manager (or
// someone posing as one) sends must decode or be refused cleanly, never crash. A message that
// decodes is encoded again and must decode to the same thing.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "coffer/nodeproto/assignments.h"
#include "coffer/nodeproto/join.h"
#include "coffer/nodeproto/networks.h"
#include "coffer/nodeproto/session.h"
#include "coffer/nodeproto/status.h"
#include "coffer/nodeproto/version.h"
#include "coffer/nodeproto/volumes.h"

using namespace coffer;

namespace {

void require(bool ok) {
    if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto bytes = crypto::SecureBuffer::copy_of(text);

    if (auto a = nodeproto::decode_assignments(bytes)) {
        // The valid changes survive a second trip; the invalid ones are not sent again.
        nodeproto::Assignments again{a->complete, a->sequence, {}};
        for (auto& c : a->changes)
            if (!c.invalid) again.changes.push_back(std::move(c));
        auto b = nodeproto::decode_assignments(nodeproto::encode(again));
        require(b && b->changes.size() == again.changes.size());
        for (std::size_t i = 0; i < again.changes.size(); ++i) {
            const auto& x = again.changes[i];
            const auto& y = b->changes[i];
            require(!y.invalid && y.id == x.id && y.is_secret == x.is_secret &&
                    y.action == x.action);
            require(y.task == x.task);
            require(x.secret.has_value() == y.secret.has_value());
            if (x.secret) require(y.secret->data.equals(x.secret->data.span()));
        }
    }
    if (auto s = nodeproto::decode_status(bytes)) {
        auto again = nodeproto::decode_status(nodeproto::encode(*s));
        require(again && again->statuses.size() == s->statuses.size() &&
                again->volumes == s->volumes);
    }
    if (auto m = nodeproto::decode_certificate(bytes))
        require(nodeproto::decode_certificate(nodeproto::encode(*m)).value() == *m);
    if (auto m = nodeproto::decode_renew_request(bytes))
        require(nodeproto::decode_renew_request(nodeproto::encode(*m)).value() == *m);
    if (auto m = nodeproto::decode_renew(bytes))
        require(nodeproto::decode_renew(nodeproto::encode(*m)).value() == *m);
    if (auto m = nodeproto::decode_error(bytes))
        require(nodeproto::decode_error(nodeproto::encode(*m)).value() == *m);
    if (auto m = nodeproto::decode_logs_request(bytes)) (void)nodeproto::encode(*m);
    if (auto m = nodeproto::decode_logs_reply(bytes))
        require(nodeproto::decode_logs_reply(nodeproto::encode(*m)).value() == *m);
    if (auto m = nodeproto::decode_description(bytes))
        require(nodeproto::decode_description(nodeproto::encode(*m)).value() == *m);
    if (auto m = nodeproto::decode_managers(bytes))
        require(nodeproto::decode_managers(nodeproto::encode(*m)).value() == *m);
    if (auto m = nodeproto::decode_networks(bytes))
        require(nodeproto::decode_networks(nodeproto::encode(*m)).value() == *m);
    if (auto m = nodeproto::decode_volume_remove(bytes))
        require(nodeproto::decode_volume_remove(nodeproto::encode(*m)).value() == *m);
    if (auto m = nodeproto::decode_volume_removed(bytes)) {
        // A removal answer without an error carries no code.
        auto again = nodeproto::decode_volume_removed(nodeproto::encode(*m)).value();
        require(again.request == m->request && again.name == m->name && again.error == m->error);
    }
    if (auto j = nodeproto::decode_join_request(bytes)) {
        auto again = nodeproto::decode_join_request(nodeproto::encode(*j));
        require(again && again->csr == j->csr && again->hostname == j->hostname &&
                again->token.equals(j->token.span()));
    }
    if (auto m = nodeproto::decode_join_answer(text))
        require(nodeproto::decode_join_answer(nodeproto::encode(*m)).value() == *m);
    (void)nodeproto::check_version_header(text);
    return 0;
}
